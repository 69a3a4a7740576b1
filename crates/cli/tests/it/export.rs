//! `export` and `import` through the binary: the `age` tool opens what `export` writes, a
//! fresh vault re-imports it identically, bad input and a full disk leave nothing behind, and
//! an import killed at any point leaves all of it or nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::tmpfs::Tmpfs;
use crate::{Env, GOOD, assert_fails_with, assert_ok, text};

const PASS: (&str, &str) = ("FIELDVAULT_PASSPHRASE", GOOD);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// An identity from `age-keygen` (Debian's age package): (file, recipient).
fn keygen(dir: &Path) -> (PathBuf, String) {
    let path = dir.join(format!("id-{}.txt", fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)));
    let out = Command::new("age-keygen").arg("-o").arg(&path).output().expect("age-keygen runs (apt install age)");
    assert!(out.status.success());
    let recipient = fs::read_to_string(&path)
        .expect("identity")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_owned))
        .expect("public key");
    (path, recipient)
}

/// A vault with `n` documents in two collections and one attachment of `att` bytes.
fn populated(n: usize, att: usize) -> Env {
    let env = Env::new();
    env.init();
    for (coll, id) in [("notes", "a"), ("visits", "b")] {
        assert_ok(&env.run_with_stdin(
            &["put", coll, id, "-"],
            &[PASS],
            Some(r#"{"k":[1,2,{"x":null}],"t":"r\u00e9sum\u00e9"}"#),
        ));
    }
    // The bulk collection through `migrate` (one unlock for all of it).
    let plain = env.vault.parent().expect("parent").join("bulk.sqlite");
    let sql = format!(
        "CREATE TABLE bulk (id TEXT PRIMARY KEY, i INTEGER, pad TEXT);
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {n})
         INSERT INTO bulk SELECT printf('d%05d', i), i, hex(randomblob(100)) FROM n;"
    );
    let st = Command::new("sqlite3").arg(&plain).arg(sql).status().expect("sqlite3 (scripts/setup.sh)");
    assert!(st.success());
    if n > 0 {
        assert_ok(&env.run(&["migrate", "--from", s(&plain)], &[PASS]));
    }
    let src = env.vault.parent().expect("parent").join("photo.bin");
    let bytes: Vec<u8> = (0..att as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    fs::write(&src, &bytes).expect("write");
    assert_ok(&env.run(&["attach", "notes", "a", s(&src)], &[PASS]));
    env
}

fn list(env: &Env, collection: &str) -> Vec<Value> {
    let v = env.json(&["list", collection], &[PASS]);
    v["documents"].as_array().cloned().unwrap_or_default()
}

/// (id, body) of every document in the collections the tests use, bodies as JSON text.
fn bodies(env: &Env) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in ["notes", "visits", "bulk"] {
        for d in list(env, c) {
            out.push((format!("{c}/{}", d["id"].as_str().expect("id")), d["body"].to_string()));
        }
    }
    out
}

fn no_partial_files(dir: &Path) {
    let left: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn export_opens_with_age_and_imports_into_a_fresh_vault_identically() {
    let a = populated(20, 300_000);
    let dir = a.vault.parent().expect("parent").to_path_buf();
    let (id_file, recipient) = keygen(&dir);
    let out = dir.join("all.age");
    let r = a.json(&["export", "--out", s(&out), "--recipient", &recipient, "--with-attachments"], &[PASS]);
    assert_eq!(r["documents"], 22);
    assert_eq!(r["attachments"], 1);
    assert_eq!(r["collections"]["bulk"], 20);
    no_partial_files(&dir);
    let plain = Command::new("age").arg("-d").arg("-i").arg(&id_file).arg(&out).output().expect("age");
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert!(plain.stdout[..512].starts_with(b"manifest.json"), "a tar whose first entry is the manifest");

    let b = Env::new();
    b.init();
    let r = b.json(&["import", s(&out), "--identity", s(&id_file)], &[PASS]);
    assert_eq!((r["added"].as_u64(), r["attachments_added"].as_u64()), (Some(22), Some(1)));
    assert_eq!(bodies(&b), bodies(&a), "documents byte for byte");
    let atts = b.json(&["attachment", "list", "notes", "a"], &[PASS]);
    let new_id = atts["attachments"][0]["id"].as_str().expect("id").to_owned();
    let back = dir.join("back.bin");
    assert_ok(&b.run(&["attachment", "get", &new_id, "--out", s(&back)], &[PASS]));
    let src = fs::read(dir.join("photo.bin")).expect("source");
    assert_eq!(fs::read(&back).expect("read"), src, "the attachment byte for byte");
    let outbox = b.json(&["outbox"], &[PASS]);
    assert_eq!(outbox.as_array().or(outbox["entries"].as_array()).map(Vec::len), Some(22), "{outbox}");

    // Again: all skipped; a second identity or a passphrase does not open it.
    let r = b.json(&["import", s(&out), "--identity", s(&id_file)], &[PASS]);
    assert_eq!((r["added"].as_u64(), r["skipped"].as_array().map(Vec::len)), (Some(0), Some(22)));
    let (other, _) = keygen(&dir);
    assert_fails_with(&b.run(&["import", s(&out), "--identity", s(&other)], &[PASS]), "cannot open the export");
}

#[test]
fn a_passphrase_export_from_a_descriptor_round_trips_and_bad_input_is_refused() {
    let a = populated(3, 1000);
    let dir = a.vault.parent().expect("parent").to_path_buf();
    let out = dir.join("pass.age");
    let secret = "an export passphrase, not the vault's";
    assert_ok(&a.run_with_stdin(
        &["export", "--out", s(&out), "--to-passphrase", "--export-passphrase-fd", "0", "--collection", "bulk"],
        &[PASS],
        Some(&format!("{secret}\n")),
    ));
    let b = Env::new();
    b.init();
    let r = b.run_with_stdin(
        &["import", s(&out), "--from-passphrase", "--export-passphrase-fd", "0", "--json"],
        &[PASS],
        Some(&format!("{secret}\n")),
    );
    assert_ok(&r);
    let r: Value = serde_json::from_slice(&r.stdout).expect("json");
    assert_eq!(r["added"], 3);
    assert_eq!(list(&b, "notes").len(), 0, "only --collection bulk was exported");

    // A wrong passphrase, a truncated file: one line, nothing imported.
    let wrong = b.run_with_stdin(
        &["import", s(&out), "--from-passphrase", "--export-passphrase-fd", "0"],
        &[PASS],
        Some("no\n"),
    );
    assert_fails_with(&wrong, "the passphrase is wrong");
    let bytes = fs::read(&out).expect("read");
    let cut = dir.join("cut.age");
    fs::write(&cut, &bytes[..bytes.len() - 10]).expect("write");
    let c = Env::new();
    c.init();
    let r = c.run_with_stdin(
        &["import", s(&cut), "--from-passphrase", "--export-passphrase-fd", "0"],
        &[PASS],
        Some(&format!("{secret}\n")),
    );
    assert_fails_with(&r, "the export is damaged");
    assert_eq!(list(&c, "bulk").len(), 0);

    // Export refusals write nothing at --out.
    let never = dir.join("never.age");
    assert_fails_with(
        &a.run(&["export", "--out", s(&never), "--recipient", "age1nope"], &[PASS]),
        "not an age recipient",
    );
    assert!(!never.exists());
    no_partial_files(&dir);
    let out = a.run(&["export", "--out", s(&never)], &[PASS]);
    assert_eq!(out.status.code(), Some(2), "a recipient or --to-passphrase is required");
    assert!(!never.exists());
}

#[test]
fn a_full_disk_while_exporting_leaves_nothing_at_out_and_while_importing_leaves_the_vault_untouched() {
    let a = populated(5, 3_000_000);
    let dir = a.vault.parent().expect("parent").to_path_buf();
    let (id_file, recipient) = keygen(&dir);
    let Some(small) = Tmpfs::mount("1m") else { return };
    let out = small.dir.join("export.age");
    let r = a.run(&["export", "--out", s(&out), "--recipient", &recipient, "--with-attachments"], &[PASS]);
    assert_fails_with(&r, "nothing was written there");
    assert!(!out.exists());
    no_partial_files(&small.dir);

    // Importing into a vault on a small file system that the attachment does not fit.
    let good = dir.join("export.age");
    assert_ok(&a.run(&["export", "--out", s(&good), "--recipient", &recipient, "--with-attachments"], &[PASS]));
    let Some(vfs) = Tmpfs::mount("2m") else { return };
    let vault = vfs.dir.join("v");
    let arg = |rest: &[&str]| -> Vec<String> {
        let mut v = vec!["--vault".to_string(), s(&vault).to_owned()];
        v.extend(rest.iter().map(|x| x.to_string()));
        v
    };
    let run = |rest: &[&str]| {
        let args = arg(rest);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        a.run(&refs, &[PASS])
    };
    assert_ok(&run(&["init", "--keystore", "passphrase"]));
    assert_ok(&run(&["put", "keep", "me", "{\"x\":1}"]));
    let before = text(&run(&["list", "keep", "--json"]).stdout);
    let files = |v: &Path| fs::read_dir(v.join("accounts/default/files")).map(|d| d.count()).unwrap_or(0);
    let r = run(&["import", s(&good), "--identity", s(&id_file)]);
    assert!(!r.status.success(), "the import cannot fit: {}", text(&r.stdout));
    assert!(text(&r.stderr).contains("space"), "{}", text(&r.stderr));
    assert_eq!(text(&run(&["list", "keep", "--json"]).stdout), before);
    assert_eq!(text(&run(&["list", "bulk", "--json"]).stdout).matches("\"id\"").count(), 0, "nothing imported");
    assert_eq!(files(&vault), 0, "no attachment file left");
}

#[test]
fn an_import_killed_at_any_point_leaves_all_of_it_or_nothing() {
    let a = populated(300, 4_000_000);
    let dir = a.vault.parent().expect("parent").to_path_buf();
    let (id_file, recipient) = keygen(&dir);
    let out = dir.join("big.age");
    assert_ok(&a.run(&["export", "--out", s(&out), "--recipient", &recipient, "--with-attachments"], &[PASS]));
    let want = bodies(&a);

    // How long a whole import takes here, to spread the kills over it.
    let probe = Env::new();
    probe.init();
    let t = std::time::Instant::now();
    assert_ok(&probe.run(&["import", s(&out), "--identity", s(&id_file)], &[PASS]));
    let whole = t.elapsed();
    let (mut none, mut all) = (0, 0);
    // Kill points from the start to past the end: before the unlock, while documents and
    // attachment files are written, around the commit. Then one kill the moment the first
    // attachment file (temporary or renamed) appears, and one long after the end.
    for i in 0..13u32 {
        let b = Env::new();
        b.init();
        let files_dir = b.path("accounts/default/files");
        let mut child = b
            .command(&["import", s(&out), "--identity", s(&id_file)], &[PASS])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        match i {
            11 => {
                let t = std::time::Instant::now();
                while fs::read_dir(&files_dir).map(|d| d.count()).unwrap_or(0) == 0 && t.elapsed() < whole * 5 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            12 => {
                let _ = child.wait();
            }
            _ => std::thread::sleep(whole.mul_f64(f64::from(i) / 10.0)),
        }
        let _ = child.kill();
        let _ = child.wait();
        // The vault opens (orphans swept), holds nothing of the import or all of it.
        let got = bodies(&b);
        let atts = b.json(&["attachment", "list", "notes", "a"], &[PASS]);
        let n_att = atts["attachments"].as_array().map_or(0, Vec::len);
        let files = fs::read_dir(b.path("accounts/default/files")).map(|d| d.count()).unwrap_or(0);
        if got.is_empty() {
            none += 1;
            assert_eq!((n_att, files), (0, 0), "kill {i}: nothing of the import, no stray file");
        } else {
            all += 1;
            assert_eq!(got, want, "kill {i}: all of it");
            assert_eq!((n_att, files), (1, 1), "kill {i}");
        }
        assert_ok(&b.run(&["verify"], &[PASS]));
    }
    eprintln!("killed imports: {none} left nothing, {all} had finished");
    assert!(none > 0 && all > 0, "kills landed both before and after the commit");
    assert!(none >= 2, "the kill while an attachment file was written left nothing");
}

#[test]
fn help_names_the_export_flags() {
    let env = Env::new();
    let h = text(&env.run(&["export", "--help"], &[]).stdout);
    for flag in
        ["--out", "--collection", "--with-attachments", "--recipient", "--to-passphrase", "--export-passphrase-fd"]
    {
        assert!(h.contains(flag), "export --help lacks {flag}");
    }
    let h = text(&env.run(&["import", "--help"], &[]).stdout);
    for flag in ["--identity", "--from-passphrase", "--export-passphrase-fd"] {
        assert!(h.contains(flag), "import --help lacks {flag}");
    }
}

/// The peak resident memory (VmHWM) of `fieldvault ARGS`, read from /proc while it runs.
fn peak_rss_kib(env: &Env, args: &[&str]) -> u64 {
    let mut child = env
        .command(args, &[PASS])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = fs::read_to_string(&status)
            && let Some(kib) = s.lines().find_map(|l| l.strip_prefix("VmHWM:"))
        {
            peak = peak.max(kib.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap_or(0));
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(child.wait().expect("wait").success());
    peak
}

#[test]
fn export_memory_stays_flat_whatever_the_attachment_size() {
    // The bound (docs/formats/export.md, section 5): fixed buffers of a few MiB plus the
    // manifest. Measured: the peak grows by less than 16 MiB from 2 MiB to 64 MiB of
    // attachment (the unlock's 64 MiB Argon2id is in both).
    let mut peaks = Vec::new();
    for mib in [2usize, 64] {
        let env = populated(0, mib << 20);
        let dir = env.vault.parent().expect("parent").to_path_buf();
        let (_, recipient) = keygen(&dir);
        let out = dir.join("big.age");
        let peak = peak_rss_kib(&env, &["export", "--out", s(&out), "--recipient", &recipient, "--with-attachments"]);
        assert!(fs::metadata(&out).expect("written").len() > (mib as u64) << 20);
        peaks.push(peak);
    }
    eprintln!("figure export_peak_rss_2mib {} KiB; figure export_peak_rss_64mib {} KiB", peaks[0], peaks[1]);
    assert!(peaks[1] < peaks[0] + 16 * 1024, "peak RSS {peaks:?} KiB grows with the size");
}
