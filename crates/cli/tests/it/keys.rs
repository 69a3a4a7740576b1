use crate::{Env, GOOD, assert_fails_with, assert_ok, exists, text};

const PASS: (&str, &str) = ("FIELDVAULT_PASSPHRASE", GOOD);

#[test]
fn init_then_status_shows_the_key_hierarchy() {
    let env = Env::new();
    let created = env.json(&["init", "--keystore", "passphrase"], &[PASS]);
    assert_eq!(created["created"], true);
    let st = env.json(&["status"], &[]);
    assert_eq!(st["keystore"]["kind"], "passphrase");
    assert_eq!(st["keystore"]["kdf"]["algorithm"], "argon2id");
    assert!(st["keystore"]["kdf"]["m_cost_kib"].as_u64().expect("number") >= 65536);
    assert_eq!(st["master"]["version"], 1);
    assert_eq!(st["master"]["key_id"].as_str().expect("hex").len(), 32);
    let keys = st["accounts"][0]["keys"].as_array().expect("keys");
    assert_eq!(st["accounts"][0]["name"], "default");
    let purposes: Vec<&str> = keys.iter().map(|k| k["purpose"].as_str().expect("str")).collect();
    assert_eq!(purposes, ["database", "files", "sync"]);
    assert!(keys.iter().all(|k| k["version"] == 1 && k["state"] == "live"));
    assert_eq!(st["process"]["core_dumps_disabled"], true);
    let human = env.run(&["status"], &[]);
    assert_ok(&human);
    assert!(text(&human.stdout).contains("keystore  passphrase (Argon2id, 64 MiB"));
}

/// The uid of `nobody`, for a process that must not run as root.
const NOBODY: u32 = 65534;

#[test]
fn a_running_fieldvault_has_core_dumps_off_and_is_not_dumpable() {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let env = Env::new();
    let dir = env.vault.parent().expect("parent").to_owned();
    // `init` notes that it falls back to the passphrase keystore, then waits for the
    // passphrase on a FIFO that this test writes once it has looked at the process.
    let fifo = dir.join("passphrase");
    let mode = rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR;
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, mode, 0).expect("mkfifo");
    let mut cmd = env.command(&["init", "--passphrase-fd", "0", "--json"], &[]);
    if rustix::process::geteuid().is_root() {
        // A root process's entries under /proc belong to root whether it is dumpable or not.
        for p in [&dir, &fifo] {
            std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).expect("chown");
        }
        cmd.uid(NOBODY).gid(NOBODY);
    }
    // Opened for reading and writing, a FIFO waits for no other end, and the binary's own
    // open of it (`/proc/self/fd/0`) finds a writer.
    let mut passphrase = std::fs::File::options().read(true).write(true).open(&fifo).expect("open the FIFO");
    let mut child = cmd
        .stdin(passphrase.try_clone().expect("dup"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fieldvault");
    let mut note = String::new();
    std::io::BufReader::new(child.stderr.take().expect("stderr")).read_line(&mut note).expect("stderr");
    assert!(note.contains("using the passphrase keystore instead"), "{note}");
    // `main` is past its first step and the process waits for the passphrase.
    let seen = fieldvault_hygiene::observe(child.id());
    writeln!(passphrase, "{GOOD}").expect("write the passphrase");
    let out = child.wait_with_output().expect("wait");
    assert_ok(&out);
    let seen = seen.expect("/proc");
    assert_eq!((seen.core_soft_limit, seen.core_hard_limit), (Some(0), Some(0)), "RLIMIT_CORE in /proc/PID/limits");
    assert_eq!(seen.dumpable, Some(false), "/proc/PID/fd belongs to root");
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(created["status"]["process"]["core_dumps_disabled"], true, "the binary's own report");
}

#[test]
fn init_without_a_keystore_choice_says_it_falls_back_to_the_passphrase() {
    let env = Env::new();
    let out = env.run(&["init"], &[PASS]);
    assert_ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("OS keystore is not available") && err.contains("using the passphrase keystore instead"),
        "{err}"
    );
    assert_eq!(env.json(&["status"], &[])["keystore"]["kind"], "passphrase");
}

#[test]
fn a_weak_passphrase_is_refused_and_nothing_is_created() {
    let env = Env::new();
    let out = env.run(&["init", "--keystore", "passphrase"], &[("FIELDVAULT_PASSPHRASE", "password1")]);
    assert_fails_with(&out, "passphrase too weak");
    assert!(!exists(&env.vault));
}

#[test]
fn no_passphrase_source_is_a_clear_error() {
    let env = Env::new();
    let out = env.run(&["init", "--keystore", "passphrase"], &[]);
    assert_fails_with(&out, "no passphrase: run on a terminal, pass --passphrase-fd N, or set FIELDVAULT_PASSPHRASE");
}

#[test]
fn the_passphrase_can_come_from_a_file_descriptor() {
    let env = Env::new();
    let out = env.run_with_stdin(
        &["init", "--keystore", "passphrase", "--passphrase-fd", "0"],
        &[],
        Some(&format!("{GOOD}\n")),
    );
    assert_ok(&out);
    let out = env.run_with_stdin(&["verify", "--passphrase-fd", "0"], &[], Some(GOOD));
    assert_ok(&out);
}

#[test]
fn a_wrong_passphrase_fails_in_one_line_and_is_counted() {
    let env = Env::new();
    env.init();
    let keys = std::fs::read(env.path("keys.fvk")).expect("read");
    let out = env.run(&["verify"], &[("FIELDVAULT_PASSPHRASE", "marble quokka seventy umbrellb")]);
    let line = assert_fails_with(&out, "wrong passphrase (1 failed attempt(s))");
    assert!(!line.contains("umbrell"), "the passphrase never appears in output");
    assert_eq!(std::fs::read(env.path("keys.fvk")).expect("read"), keys);
    assert_eq!(env.json(&["status"], &[])["failed_unlocks"], 1);
    assert_ok(&env.run(&["verify"], &[PASS]));
    assert_eq!(env.json(&["status"], &[])["failed_unlocks"], 0);
}

#[test]
fn rotate_raises_versions_and_changes_ids() {
    let env = Env::new();
    env.init();
    let before = env.json(&["status"], &[]);
    let rotated = env.json(&["rotate"], &[PASS]);
    assert_eq!(rotated["rotated"].as_array().expect("list").len(), 3);
    let master = env.json(&["rotate", "--master"], &[PASS]);
    assert_eq!(master["rotated"][0]["version"], 2);
    let after = env.json(&["status"], &[]);
    assert_eq!(after["master"]["version"], 2);
    assert_ne!(after["master"]["key_id"], before["master"]["key_id"]);
    for (a, b) in after["accounts"][0]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .zip(before["accounts"][0]["keys"].as_array().expect("keys"))
    {
        assert_eq!(a["version"], 2);
        assert_ne!(a["key_id"], b["key_id"]);
    }
    let verified = env.json(&["verify"], &[PASS]);
    assert_eq!(verified["ok"], true);
}

#[test]
fn passwd_changes_the_passphrase() {
    let env = Env::new();
    env.init();
    let new = "lilac tractor nineteen oceans";
    assert_ok(&env.run(&["passwd"], &[PASS, ("FIELDVAULT_NEW_PASSPHRASE", new)]));
    assert_fails_with(&env.run(&["verify"], &[PASS]), "wrong passphrase");
    assert_ok(&env.run(&["verify"], &[("FIELDVAULT_PASSPHRASE", new)]));
    let weak = env.run(&["passwd"], &[("FIELDVAULT_PASSPHRASE", new), ("FIELDVAULT_NEW_PASSPHRASE", "abc123")]);
    assert_fails_with(&weak, "passphrase too weak");
    // zxcvbn gives it 3 as typed; without the space it is a repeat.
    let repeated = [("FIELDVAULT_PASSPHRASE", new), ("FIELDVAULT_NEW_PASSPHRASE", "password password")];
    assert_fails_with(&env.run(&["passwd"], &repeated), "passphrase too weak");
    // The passphrase in use is refused, and the key file stays as it was.
    let keys = std::fs::read(env.path("keys.fvk")).expect("read");
    let same = env.run(&["passwd"], &[("FIELDVAULT_PASSPHRASE", new), ("FIELDVAULT_NEW_PASSPHRASE", new)]);
    assert_fails_with(&same, "the new passphrase is the one in use; nothing was changed");
    assert_eq!(std::fs::read(env.path("keys.fvk")).expect("read"), keys);
    let none = env.run(&["passwd"], &[("FIELDVAULT_PASSPHRASE", new)]);
    assert_fails_with(&none, "pass --new-passphrase-fd N, or set FIELDVAULT_NEW_PASSPHRASE");
    // The new passphrase from a descriptor, as scripts should pass it.
    let third = "copper violin eleven meadows";
    let out = env.run_with_stdin(
        &["passwd", "--new-passphrase-fd", "0"],
        &[("FIELDVAULT_PASSPHRASE", new)],
        Some(&format!("{third}\n")),
    );
    assert_ok(&out);
    assert_ok(&env.run(&["verify"], &[("FIELDVAULT_PASSPHRASE", third)]));
}

#[test]
fn init_on_an_existing_vault_is_refused() {
    let env = Env::new();
    env.init();
    let keys = std::fs::read(env.path("keys.fvk")).expect("read");
    let out = env.run(&["init", "--keystore", "passphrase"], &[PASS]);
    assert_fails_with(&out, "already holds a vault; nothing was changed");
    // Refused before any keystore note or passphrase prompt: one line, no passphrase needed.
    let out = env.run(&["init"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("already holds a vault; nothing was changed"), "{err}");
    assert_eq!(std::fs::read(env.path("keys.fvk")).expect("read"), keys);
}

#[test]
fn wipe_needs_confirmation_then_removes_the_account_or_the_vault() {
    let env = Env::new();
    env.init();
    assert_fails_with(&env.run(&["wipe"], &[]), "without confirmation: pass --yes");
    assert!(exists(&env.path("keys.fvk")));
    // An exported FIELDVAULT_ACCOUNT never decides what a wipe destroys.
    let keys = std::fs::read(env.path("keys.fvk")).expect("read");
    let out = env.run(&["wipe", "--yes"], &[("FIELDVAULT_ACCOUNT", "default")]);
    assert_fails_with(&out, "FIELDVAULT_ACCOUNT is set (default)");
    assert_eq!(std::fs::read(env.path("keys.fvk")).expect("read"), keys);
    assert!(exists(&env.path("accounts/default")));
    let acct = env.json(&["wipe", "--account", "default", "--yes"], &[]);
    assert_eq!(acct["wiped"]["account"], "default");
    assert_eq!(acct["accounts_left"], serde_json::json!([]));
    assert!(!exists(&env.path("accounts/default")));
    assert_eq!(env.json(&["status"], &[])["accounts"].as_array().expect("list").len(), 0);
    let all = env.json(&["wipe", "--yes"], &[]);
    assert_eq!(all["wiped"]["keystore_entry_removed"], true);
    assert!(!exists(&env.vault));
}

#[test]
fn wiping_the_last_account_says_how_to_make_a_new_one() {
    let env = Env::new();
    env.init();
    assert_ok(&env.run(&["account", "add", "field"], &[PASS]));
    let first = env.run(&["wipe", "--account", "field", "--yes"], &[]);
    assert_ok(&first);
    assert_eq!(text(&first.stdout).trim(), "wiped account 'field'");
    let last = env.run(&["wipe", "--account", "default", "--yes"], &[]);
    assert_ok(&last);
    let said = text(&last.stdout);
    assert!(said.contains("the vault has no account now: `fieldvault account add NAME` makes a new one"), "{said}");
    // As it says: the vault takes a new account and works again.
    assert_ok(&env.run(&["account", "add", "default"], &[PASS]));
    assert_ok(&env.run(&["put", "c", "x", "{}"], &[PASS]));
    let help = text(&env.run(&["wipe", "--help"], &[]).stdout);
    assert!(help.contains("`fieldvault account add NAME` makes a new one"), "{help}");
}

#[test]
fn a_vault_directory_that_does_not_exist_says_so_and_suggests_init() {
    let env = Env::new();
    for args in [&["status"][..], &["get", "c", "x"], &["account", "list"], &["wipe", "--yes"]] {
        let out = env.run(args, &[PASS]);
        let line = assert_fails_with(&out, "(the directory does not exist); `fieldvault init` makes one");
        let said = format!("fieldvault: there is no vault at {} (the directory", env.vault.display());
        assert!(line.starts_with(&said), "{line}");
    }
    assert!(!exists(&env.vault), "nothing was created");
    // A directory that exists but holds no vault says that instead.
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&env.vault).expect("mkdir");
    assert_fails_with(&env.run(&["status"], &[]), "is not a Fieldvault vault");
}

#[test]
fn a_passphrase_descriptor_that_is_not_open_says_so() {
    let env = Env::new();
    env.init();
    let out = env.run(&["verify", "--passphrase-fd", "9"], &[]);
    let line = assert_fails_with(&out, "--passphrase-fd 9: descriptor 9 is not open");
    assert!(!line.contains("No such file or directory"), "{line}");
    let out = env.run(&["passwd", "--new-passphrase-fd", "57"], &[PASS]);
    assert_fails_with(&out, "--new-passphrase-fd 57: descriptor 57 is not open");
}

#[test]
fn a_vault_with_loose_permissions_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.init();
    std::fs::set_permissions(&env.vault, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_fails_with(&env.run(&["status"], &[]), "requires 0700");
}

#[test]
fn bad_account_names_are_refused_before_anything_happens() {
    let env = Env::new();
    let out = env.run(&["init", "--keystore", "passphrase", "--account", "../escape"], &[PASS]);
    assert_fails_with(&out, "invalid account name");
    assert!(!exists(&env.vault));
}

#[test]
fn a_closed_standard_output_is_a_one_line_error_not_a_panic() {
    let env = Env::new();
    env.init();
    // A pipe whose reading end is closed before the program even starts.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fieldvault"))
        .args(["status"])
        .env_clear()
        .env("FIELDVAULT_VAULT", &env.vault)
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_fails_with(&out, "cannot write to standard output");
}

#[test]
fn a_forgotten_passphrase_is_recovered_with_the_recovery_key_and_nothing_is_lost() {
    const NEW: &str = "lantern otter ninety glacier";
    let env = Env::new();
    let created = env.json(&["init", "--keystore", "passphrase"], &[PASS]);
    let first = created["recovery_key"].as_str().expect("init prints the recovery key once").to_owned();
    assert_ok(&env.run_with_stdin(&["put", "visits", "v1", "-"], &[PASS], Some(r#"{"patient": "Ada"}"#)));
    let st = env.json(&["status"], &[]);
    assert!(st["recovery_key"]["created_at"].as_u64().is_some(), "{st}");

    // A typo is caught by the checksum before anything is tried.
    let mut typo = first.clone().into_bytes();
    typo[0] = if typo[0] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    let bad =
        env.run_with_stdin(&["recover", "--recovery-key-fd", "0"], &[("FIELDVAULT_NEW_PASSPHRASE", NEW)], Some(&typo));
    assert_fails_with(&bad, "checksum");

    // The right key: a new passphrase, a new recovery key, every document kept.
    let out = env.run_with_stdin(
        &["recover", "--recovery-key-fd", "0", "--json"],
        &[("FIELDVAULT_NEW_PASSPHRASE", NEW)],
        Some(&first),
    );
    assert_ok(&out);
    let fresh: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let second = fresh["recovery_key"].as_str().expect("a new recovery key").to_owned();
    assert_ne!(second, first);
    let got = env.json(&["get", "visits", "v1"], &[("FIELDVAULT_PASSPHRASE", NEW)]);
    assert_eq!(got["body"]["patient"], "Ada", "{got}");
    assert!(!env.run(&["get", "visits", "v1"], &[PASS]).status.success(), "the old passphrase no longer unlocks");
    // The used key opens nothing any more.
    let again = env.run_with_stdin(
        &["recover", "--recovery-key-fd", "0"],
        &[("FIELDVAULT_NEW_PASSPHRASE", GOOD)],
        Some(&first),
    );
    assert!(!again.status.success());
    // A new key replaces the second one.
    let third = env.json(&["recovery-key", "new"], &[("FIELDVAULT_PASSPHRASE", NEW)]);
    assert_ne!(third["recovery_key"].as_str(), Some(second.as_str()));
    assert!(!exists(&env.path("keys.fvk.tmp")), "nothing half-written");
}
