use serde_json::Value;

use crate::{Env, GOOD, assert_fails_with, assert_ok, text};

const PASS: (&str, &str) = ("FIELDVAULT_PASSPHRASE", GOOD);

#[test]
fn put_get_list_delete_round_trip_through_the_cli() {
    let env = Env::new();
    env.init();
    let put = env.json(&["put", "visits", "v1", r#"{"patient":"Ada","bp":[120,80]}"#], &[PASS]);
    assert_eq!(put["version"], 1);
    let out = env.run_with_stdin(&["put", "visits", "v2", "-"], &[PASS], Some(r#"{"patient":"Grace"}"#));
    assert_ok(&out);
    assert_eq!(text(&out.stdout).trim(), "visits/v2 v1");
    let out = env.run_with_stdin(&["put", "visits", "v2"], &[PASS], Some(r#"{"patient":"Grace","done":true}"#));
    assert_ok(&out);
    let got = env.json(&["get", "visits", "v2"], &[PASS]);
    assert_eq!((got["version"].clone(), got["body"]["done"].clone()), (2.into(), true.into()));
    let human = env.run(&["get", "visits", "v1"], &[PASS]);
    assert_ok(&human);
    assert!(text(&human.stdout).contains("\"patient\": \"Ada\""));
    for i in 3..=12 {
        assert_ok(&env.run(&["put", "visits", &format!("v{i:02}"), "{}"], &[PASS]));
    }
    let all = env.json(&["list", "visits"], &[PASS]);
    assert_eq!(all["documents"].as_array().expect("list").len(), 12, "list prints everything without --limit");
    assert_eq!(all["next"], serde_json::Value::Null);
    let page = env.json(&["list", "visits", "--limit", "5"], &[PASS]);
    assert_eq!(page["documents"].as_array().expect("list").len(), 5);
    let next = page["next"].as_str().expect("more").to_owned();
    let rest = env.json(&["list", "visits", "--after", &next], &[PASS]);
    assert_eq!(rest["documents"].as_array().expect("list").len(), 7);
    // A page that holds exactly what is left is the last: no `next` leading nowhere.
    let exact = env.json(&["list", "visits", "--after", &next, "--limit", "7"], &[PASS]);
    assert_eq!((exact["documents"].as_array().expect("list").len(), exact["next"].clone()), (7, Value::Null));
    let human = env.run(&["list", "visits", "--limit", "12"], &[PASS]);
    assert_ok(&human);
    assert!(!text(&human.stdout).contains("more:"), "{}", text(&human.stdout));
    for huge in ["9223372036854775807", "18446744073709551615"] {
        let all = env.json(&["list", "visits", "--limit", huge], &[PASS]);
        assert_eq!((all["documents"].as_array().expect("list").len(), all["next"].clone()), (12, Value::Null));
    }
    // An empty collection prints nothing at all.
    let empty = env.run(&["list", "nothing-here"], &[PASS]);
    assert_ok(&empty);
    assert_eq!(text(&empty.stdout), "");
    assert_ok(&env.run(&["delete", "visits", "v1"], &[PASS]));
    assert_fails_with(&env.run(&["get", "visits", "v1"], &[PASS]), "no document \"v1\" in visits");
    assert_fails_with(&env.run(&["delete", "visits", "v1"], &[PASS]), "no document");
}

#[test]
fn bad_documents_are_refused_in_one_line_and_nothing_is_written() {
    let env = Env::new();
    env.init();
    assert_fails_with(&env.run(&["put", "c", "x", "{not json"], &[PASS]), "malformed JSON");
    assert_fails_with(&env.run(&["put", "c", "x", "[1,2]"], &[PASS]), "must be a JSON object");
    assert_fails_with(&env.run(&["put", "bad/name", "x", "{}"], &[PASS]), "collection name");
    let long_id = "i".repeat(10 * 1024);
    assert_fails_with(&env.run(&["put", "c", &long_id, "{}"], &[PASS]), "1 to 256 bytes");
    let huge = format!("{{\"blob\":\"{}\"}}", "x".repeat(100 << 20));
    let out = env.run_with_stdin(&["put", "c", "big", "-"], &[PASS], Some(&huge));
    assert_fails_with(&out, "the limit is 1048576");
    let listed = env.json(&["list", "c"], &[PASS]);
    assert!(listed["documents"].as_array().expect("list").is_empty());
}

#[test]
fn a_document_naming_a_key_twice_is_refused_and_key_order_is_not_kept() {
    let env = Env::new();
    env.init();
    for twice in [r#"{"a":1,"a":2}"#, r#"{"a":{"b":1,"b":1}}"#, r#"{"l":[{"x":1,"\u0078":2}]}"#] {
        assert_fails_with(&env.run(&["put", "c", "x", twice], &[PASS]), "appears twice in one object");
        let out = env.run_with_stdin(&["put", "c", "x", "-"], &[PASS], Some(twice));
        assert_fails_with(&out, "appears twice in one object");
    }
    assert!(env.json(&["list", "c"], &[PASS])["documents"].as_array().expect("list").is_empty());
    // The same key in two objects is fine; keys come back sorted.
    assert_ok(&env.run(&["put", "c", "y", r#"{"b":{"a":1},"a":{"a":2}}"#], &[PASS]));
    let got = env.run(&["get", "c", "y", "--json"], &[PASS]);
    assert_ok(&got);
    let body = serde_json::from_slice::<serde_json::Value>(&got.stdout).expect("JSON")["body"].to_string();
    assert_eq!(body, r#"{"a":{"a":2},"b":{"a":1}}"#);
    let help = text(&env.run(&["put", "--help"], &[]).stdout);
    assert!(help.contains("naming a key twice") && help.contains("Key order is not kept"), "{help}");
}

#[test]
fn rotate_re_keys_the_database_and_verify_checks_every_page() {
    let env = Env::new();
    env.init();
    for i in 0..20 {
        assert_ok(&env.run(&["put", "c", &format!("d{i}"), r#"{"x":1}"#], &[PASS]));
    }
    let rotated = env.json(&["rotate"], &[PASS]);
    assert_eq!(rotated["rotated"][0]["key"], "default/database");
    assert_eq!(rotated["rotated"][0]["version"], 2);
    assert_eq!(env.json(&["list", "c"], &[PASS])["documents"].as_array().expect("list").len(), 20);
    let report = env.json(&["verify"], &[PASS]);
    assert_eq!(report["ok"], true);
    assert!(
        report["checked"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c.as_str().expect("str").contains("every page authenticates"))
    );
    // Damage a page: verify reports it and exits non-zero.
    let db = env.path("accounts/default/documents.db");
    let mut bytes = std::fs::read(&db).expect("read");
    let at = bytes.len() - 3000;
    bytes[at..at + 8].fill(0);
    std::fs::write(&db, bytes).expect("write");
    let out = env.run(&["verify", "--json"], &[PASS]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["ok"], false);
    assert!(!report["findings"].as_array().expect("list").is_empty());
}

#[test]
fn migrate_imports_a_plaintext_database_and_removes_it() {
    let env = Env::new();
    env.init();
    let plain = env.vault.parent().expect("parent").join("legacy.sqlite");
    let status = std::process::Command::new("sqlite3")
        .arg(&plain)
        .arg("CREATE TABLE jobs (id INTEGER PRIMARY KEY, site TEXT, meta TEXT); INSERT INTO jobs VALUES (1, 'north', '{\"crew\": 3}'), (2, 'south', NULL), (3, 'east', '{\"n\":123456789012345678901234,\"a\":1,\"a\":2}');")
        .status()
        .expect("sqlite3 (installed by scripts/setup.sh)");
    assert!(status.success());
    let out = env.json(&["migrate", "--from", plain.to_str().expect("utf-8 path")], &[PASS]);
    assert_eq!(out["imported"]["jobs"], 3);
    assert_eq!(out["kept_as_text"], serde_json::json!([{"collection": "jobs", "id": "3", "column": "meta"}]));
    assert!(!plain.exists());
    let job = env.json(&["get", "jobs", "1"], &[PASS]);
    assert_eq!(job["body"]["meta"]["crew"], 3);
    // A JSON object that parsing would change (an integer past 64 bits, a key twice) stays its text.
    let job = env.json(&["get", "jobs", "3"], &[PASS]);
    assert_eq!(job["body"]["meta"], r#"{"n":123456789012345678901234,"a":1,"a":2}"#);
    // A file that is not importable is refused in one line and stays.
    std::fs::write(&plain, b"not a database at all, just text").expect("write");
    assert_fails_with(
        &env.run(&["migrate", "--from", plain.to_str().expect("utf-8")], &[PASS]),
        "not a plaintext SQLite database",
    );
    assert!(plain.exists());
}

#[test]
fn attach_and_get_through_the_cli() {
    let env = Env::new();
    env.init();
    assert_ok(&env.run(&["put", "visits", "v1", "{}"], &[PASS]));
    let src = env.vault.parent().expect("parent").join("photo.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&src, &bytes).expect("write");
    let out = env.run(&["attach", "visits", "v1", src.to_str().expect("utf-8")], &[PASS]);
    assert_ok(&out);
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 32);
    let dest = env.vault.parent().expect("parent").join("back.bin");
    assert_ok(&env.run(&["attachment", "get", &id, "--out", dest.to_str().expect("utf-8")], &[PASS]));
    assert_eq!(std::fs::read(&dest).expect("read"), bytes);
    let listed = env.json(&["attachment", "list", "visits", "v1"], &[PASS]);
    assert_eq!(listed["attachments"][0]["size"], 200_000);
    // Bad input: clear one-line errors, no partial output.
    assert_fails_with(&env.run(&["attach", "visits", "nope", src.to_str().expect("utf-8")], &[PASS]), "no document");
    assert_fails_with(&env.run(&["attach", "visits", "v1", "/nonexistent/file"], &[PASS]), "cannot read");
    let missing_dir = env.vault.parent().expect("parent").join("no/dir/out.bin");
    assert_fails_with(
        &env.run(&["attachment", "get", &id, "--out", missing_dir.to_str().expect("utf-8")], &[PASS]),
        "does not exist",
    );
    assert_fails_with(&env.run(&["attachment", "get", "deadbeef", "--out", "x"], &[PASS]), "no attachment");
    // Tamper with the stored file: get fails, verify reports it.
    let stored = env.path(&format!("accounts/default/files/{id}.fva"));
    let mut enc = std::fs::read(&stored).expect("read");
    enc[1000] ^= 1;
    std::fs::write(&stored, enc).expect("write");
    let dest2 = env.vault.parent().expect("parent").join("back2.bin");
    assert_fails_with(
        &env.run(&["attachment", "get", &id, "--out", dest2.to_str().expect("utf-8")], &[PASS]),
        "chunk 0 differs from the manifest's hash",
    );
    assert!(!dest2.exists());
    let out = env.run(&["verify", "--json"], &[PASS]);
    assert!(!out.status.success());
}

#[test]
fn a_malformed_command_line_gets_one_line_and_exit_code_2() {
    let env = Env::new();
    env.init();
    for args in [
        &["list", "visits", "--limit", "-1"][..],
        &["list", "visits", "--limit", "0"],
        &["migrate"],
        &["attachment", "get", "0123"],
        &["no-such-command"],
        &[],
        &["attachment"],
    ] {
        let out = env.run(args, &[PASS]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line on stderr, got {err:?}");
        assert!(err.starts_with("fieldvault: ") && err.trim_end().ends_with("(see --help)"), "{args:?}: {err:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let help = env.run(&["--help"], &[]);
    assert_ok(&help);
    assert!(text(&help.stdout).contains("Usage: fieldvault"));
}

#[test]
fn verify_vouches_for_every_file_under_the_vault_and_a_lost_database_loses_nothing_more() {
    let env = Env::new();
    env.init();
    assert_ok(&env.run(&["put", "visits", "v1", "{}"], &[PASS]));
    let src = env.vault.parent().expect("parent").join("photo.bin");
    std::fs::write(&src, vec![7u8; 100_000]).expect("write");
    let out = env.run(&["attach", "visits", "v1", src.to_str().expect("utf-8")], &[PASS]);
    assert_ok(&out);
    let stored = env.path(&format!("accounts/default/files/{}.fva", text(&out.stdout).trim()));
    let verified = env.json(&["verify"], &[PASS]);
    assert_eq!(verified["ok"], true);
    assert!(verified["checked"].to_string().contains("no other file lies under the vault directory"));
    let findings = |env: &Env| -> Vec<(String, String)> {
        let out = env.run(&["verify", "--json"], &[PASS]);
        assert_eq!(out.status.code(), Some(1), "verify must fail: {}", text(&out.stdout));
        let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        assert_eq!(report["ok"], false);
        let list = report["findings"].as_array().expect("findings").iter();
        list.map(|f| (f["path"].as_str().expect("path").to_owned(), f["problem"].to_string())).collect()
    };
    // A file Fieldvault never writes, wherever it lies, may hold plaintext: a finding. (A
    // directory named like an account whose keys are gone is an interrupted wipe, finished
    // on open; one that no account could have made is left alone, and reported.)
    for stray in ["leak.txt", "accounts/default/plain.db", "accounts/default/files/notes.txt", "accounts/Ghost/x"] {
        let path = env.path(stray);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, b"patient: Ada").expect("write");
        let found = findings(&env);
        let top = if stray.starts_with("accounts/Ghost") { env.path("accounts/Ghost") } else { path.clone() };
        assert_eq!(found.len(), 1, "{stray}: {found:?}");
        assert_eq!(found[0].0, top.display().to_string(), "{stray}");
        std::fs::remove_file(&path).expect("remove");
        if stray.starts_with("accounts/Ghost") {
            std::fs::remove_dir(&top).expect("rmdir");
        }
    }
    assert_eq!(env.json(&["verify"], &[PASS])["ok"], true);
    // A database deleted outside Fieldvault: verify says so, and opening the account is
    // refused instead of starting an empty database and sweeping the attachments away.
    std::fs::remove_file(env.path("accounts/default/documents.db")).expect("remove");
    let found = findings(&env);
    assert!(found.iter().any(|(_, p)| p.contains("missing or empty, but 1 attachment file(s)")), "{found:?}");
    assert_fails_with(&env.run(&["list", "visits"], &[PASS]), "the vault is damaged; nothing was changed");
    assert!(stored.exists(), "the attachment file was swept away");
    assert!(!env.path("accounts/default/documents.db").exists(), "an empty database was created");
}
