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
        .arg("CREATE TABLE jobs (id INTEGER PRIMARY KEY, site TEXT, meta TEXT); INSERT INTO jobs VALUES (1, 'north', '{\"crew\": 3}'), (2, 'south', NULL);")
        .status()
        .expect("sqlite3 (installed by scripts/setup.sh)");
    assert!(status.success());
    let out = env.json(&["migrate", "--from", plain.to_str().expect("utf-8 path")], &[PASS]);
    assert_eq!(out["imported"]["jobs"], 2);
    assert!(!plain.exists());
    let job = env.json(&["get", "jobs", "1"], &[PASS]);
    assert_eq!(job["body"]["meta"]["crew"], 3);
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
