use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fieldvault_client::{Error, Unlocked};
use fieldvault_core::attachment::{Binding, Header};
use serde_json::json;

use crate::fixture::{Fixture, alice};

/// The shared fixture, plus two documents to attach to.
fn fixture() -> Fixture {
    let f = Fixture::new();
    let mut v = f.unlock();
    let mut docs = v.documents(&alice()).expect("documents");
    for id in ["v1", "v2"] {
        docs.put("visits", id, json!({"n": id}).as_object().cloned().expect("obj")).expect("put");
    }
    f
}

trait AttachmentFiles {
    fn source(&self, name: &str, bytes: &[u8]) -> PathBuf;
    fn files(&self) -> PathBuf;
    fn stored(&self, id: &str) -> PathBuf;
}

impl AttachmentFiles for Fixture {
    fn source(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.tmp.path().join(name);
        fs::write(&p, bytes).expect("write source");
        p
    }
    fn files(&self) -> PathBuf {
        self.vault().join("accounts/alice/files")
    }
    fn stored(&self, id: &str) -> PathBuf {
        self.files().join(format!("{id}.fva"))
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn attach_then_get_round_trips_at_chunk_boundaries_and_stores_no_plaintext() {
    let f = fixture();
    let mut v = f.unlock();
    for len in [0usize, 1, 65535, 65536, 65537, 300_000] {
        let mut bytes = data(len);
        if len > 40 {
            bytes[..24].copy_from_slice(b"ATTACHMENT-CANARY-9b1e7c");
        }
        let src = f.source(&format!("in{len}"), &bytes);
        let a = v.attach(&alice(), "visits", "v1", &src).expect("attach");
        assert_eq!((a.size, a.key_version, a.id.len()), (len as u64, 1, 32));
        let stored = fs::read(f.stored(&a.id)).expect("stored file");
        assert!(!stored.windows(24).any(|w| w == b"ATTACHMENT-CANARY-9b1e7c"), "no plaintext at rest");
        // Format version 2: the file is bound to its document, not to the device's account.
        let (header, _) = Header::parse(&stored).expect("header");
        assert_eq!(header.binding, Binding::Document { collection: "visits".into(), id: "v1".into() });
        assert_eq!(fs::metadata(f.stored(&a.id)).expect("stat").permissions().mode() & 0o777, 0o600);
        let out = f.tmp.path().join(format!("out{len}"));
        v.attachment_get(&alice(), &a.id, &out).expect("get");
        assert_eq!(fs::read(&out).expect("read"), bytes, "length {len}");
        assert_eq!(fs::metadata(&out).expect("stat").permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(v.attachments_of(&alice(), "visits", "v1").expect("list").len(), 6);
}

#[test]
fn bad_sources_and_targets_are_refused_and_leave_nothing_behind() {
    let f = fixture();
    let mut v = f.unlock();
    let src = f.source("in", b"hello");
    assert!(matches!(v.attach(&alice(), "visits", "nope", &src), Err(Error::NoSuchDocument { .. })));
    let err = v.attach(&alice(), "visits", "v1", &f.tmp.path().join("missing")).expect_err("missing source");
    assert!(err.to_string().contains("cannot read"), "{err}");
    let err = v.attach(&alice(), "visits", "v1", f.tmp.path()).expect_err("a directory");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(entries(&f.files()).is_empty(), "no partial files: {:?}", entries(&f.files()));
    let a = v.attach(&alice(), "visits", "v1", &src).expect("attach");
    let err = v.attachment_get(&alice(), &a.id, &f.tmp.path().join("no/such/dir/out")).expect_err("missing dir");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(matches!(
        v.attachment_get(&alice(), "00112233445566778899aabbccddeeff", &f.tmp.path().join("o")),
        Err(Error::NoSuchAttachment(_))
    ));
    assert!(matches!(
        v.attachment_get(&alice(), "../../etc/passwd", &f.tmp.path().join("o")),
        Err(Error::NoSuchAttachment(_))
    ));
    assert!(!f.tmp.path().join("o").exists());
    // Never plaintext under the vault, nor over its own files.
    let keys = fs::read(f.vault().join("keys.fvk")).expect("read");
    for inside in ["accounts/alice/leak.txt", "keys.fvk", "accounts/alice/files/x"] {
        let err = v.attachment_get(&alice(), &a.id, &f.vault().join(inside)).expect_err("inside the vault");
        assert!(matches!(err, Error::InvalidAttachment(_)) && err.to_string().contains("inside the vault"), "{err}");
    }
    assert!(!f.vault().join("accounts/alice/leak.txt").exists());
    assert_eq!(fs::read(f.vault().join("keys.fvk")).expect("read"), keys);
    // A stored file replaced by a symbolic link (to a good copy, even) is never followed.
    let copy = f.tmp.path().join("copy.fva");
    fs::rename(f.stored(&a.id), &copy).expect("move");
    std::os::unix::fs::symlink(&copy, f.stored(&a.id)).expect("symlink");
    let err = v.attachment_get(&alice(), &a.id, &f.tmp.path().join("o")).expect_err("a link");
    assert!(matches!(err, Error::UnexpectedFileType { .. }), "{err:?}");
    assert!(!v.verify().expect("verify").findings.is_empty());
}

#[test]
fn a_tampered_or_swapped_file_fails_and_no_output_appears_or_changes() {
    let f = fixture();
    let mut v = f.unlock();
    let a = v.attach(&alice(), "visits", "v1", &f.source("a", &data(200_000))).expect("attach a");
    let b = v.attach(&alice(), "visits", "v2", &f.source("b", &data(150_000))).expect("attach b");
    let out = f.tmp.path().join("out");
    fs::write(&out, b"previous contents").expect("write");
    // A flipped bit in the middle of a chunk.
    let good = fs::read(f.stored(&a.id)).expect("read");
    let mut bad = good.clone();
    bad[100_000] ^= 0x10;
    fs::write(f.stored(&a.id), &bad).expect("write");
    let err = v.attachment_get(&alice(), &a.id, &out).expect_err("tampered");
    assert!(matches!(err, Error::Attachment { .. }), "{err:?}");
    assert!(err.to_string().contains("chunk 1"), "{err}");
    assert_eq!(fs::read(&out).expect("read"), b"previous contents", "the existing output is untouched");
    assert_eq!(entries(f.tmp.path()).iter().filter(|n| n.contains("fvtmp")).count(), 0, "no temporary file left");
    // B's file presented as A.
    fs::copy(f.stored(&b.id), f.stored(&a.id)).expect("copy");
    let err = v.attachment_get(&alice(), &a.id, &out).expect_err("swapped");
    assert!(err.to_string().contains(&format!("not {}", a.id)), "{err}");
    assert!(err.to_string().contains(r#"of document "v2" in "visits", not"#), "{err}");
    // verify reports it.
    let report = v.verify().expect("verify");
    assert!(report.findings.iter().any(|fd| fd.path == f.stored(&a.id)), "{:?}", report.findings);
    fs::write(f.stored(&a.id), &good).expect("restore");
    assert!(v.verify().expect("verify").findings.is_empty());
}

#[test]
fn attach_and_get_report_progress_up_to_the_size() {
    let f = fixture();
    let mut v = f.unlock();
    // Three 4 MiB batches and a part: progress arrives batch by batch, not all at the end.
    let bytes = data(13 << 20);
    let src = f.source("big", &bytes);
    let mut seen = Vec::new();
    let a = v
        .attach_with_progress(&alice(), "visits", "v1", &src, &mut |done, total| seen.push((done, total)))
        .expect("attach");
    let len = bytes.len() as u64;
    assert!(seen.len() >= 4, "{} reports", seen.len());
    assert!(seen.iter().all(|&(_, total)| total == len));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "never goes back");
    assert_eq!(seen.last().map(|s| s.0), Some(len));
    let out = f.tmp.path().join("big.out");
    let mut seen = Vec::new();
    v.attachment_get_with_progress(&alice(), &a.id, &out, &mut |done, total| seen.push((done, total))).expect("get");
    assert!(seen.len() >= 4, "{} reports", seen.len());
    assert!(seen.iter().all(|&(_, total)| total == len));
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "every report is new bytes");
    assert_eq!(seen.last().map(|s| s.0), Some(len));
    assert!(fs::read(&out).expect("read") == bytes);
}

#[test]
fn deleting_a_document_deletes_its_attachments() {
    let f = fixture();
    let mut v = f.unlock();
    let a = v.attach(&alice(), "visits", "v1", &f.source("a", b"aaa")).expect("attach");
    let b = v.attach(&alice(), "visits", "v2", &f.source("b", b"bbb")).expect("attach");
    assert!(v.documents(&alice()).expect("documents").delete("visits", "v1").expect("delete"));
    assert!(!f.stored(&a.id).exists());
    assert!(matches!(v.attachment(&alice(), &a.id), Err(Error::NoSuchAttachment(_))));
    assert!(f.stored(&b.id).exists(), "another document's attachment stays");
    // The deletion is on disk for good before the file goes: after a power cut the
    // document does not come back with an attachment whose file is gone.
    assert!(v.documents(&alice()).expect("documents").delete("visits", "v2").expect("delete"));
    let durable = f.durable_database();
    drop(v);
    f.power_cut(&durable);
    let mut v = f.unlock();
    assert!(v.documents(&alice()).expect("documents").get("visits", "v2").expect("get").is_none());
    assert!(v.verify().expect("verify").findings.is_empty());
}

#[test]
fn rotating_the_files_key_rewraps_content_keys_and_rewrites_no_file() {
    let f = fixture();
    let mut v = f.unlock();
    let a = v.attach(&alice(), "visits", "v1", &f.source("a", &data(100_000))).expect("attach");
    let before = fs::read(f.stored(&a.id)).expect("read");
    let meta = v.rotate_keys(&alice()).expect("rotate")[1];
    let durable = f.durable_database();
    assert_eq!(meta.version, 2);
    assert_eq!(v.attachment(&alice(), &a.id).expect("meta").key_version, 2);
    assert_eq!(fs::read(f.stored(&a.id)).expect("read"), before, "the blob is not rewritten");
    drop(v);
    let mut v = f.unlock();
    let out = f.tmp.path().join("out");
    v.attachment_get(&alice(), &a.id, &out).expect("get after rotation");
    assert_eq!(fs::read(&out).expect("read"), data(100_000));
    drop(v);
    // The old key was retired only once the re-wrapped rows were on disk for good: a power
    // cut right after the rotation leaves every content key opening under the new one.
    f.power_cut(&durable);
    fs::remove_file(&out).expect("remove");
    f.unlock().attachment_get(&alice(), &a.id, &out).expect("get after a power cut");
    assert_eq!(fs::read(&out).expect("read"), data(100_000));
}

#[test]
fn orphan_files_from_a_crash_are_removed_on_open() {
    let f = fixture();
    let mut v = f.unlock();
    let a = v.attach(&alice(), "visits", "v1", &f.source("a", b"keep")).expect("attach");
    drop(v);
    fs::write(f.files().join("ffffffffffffffffffffffffffffffff.fva"), b"orphan").expect("write");
    fs::write(f.files().join(".x.fva.1234.fvtmp"), b"half").expect("write");
    let mut v = f.unlock();
    v.documents(&alice()).expect("open the database");
    assert_eq!(entries(&f.files()), vec![format!("{}.fva", a.id)]);
    drop(v);
    // Directories by the names the sweeps look for were not made by Fieldvault: they are
    // left alone, do not stop the vault or the account from opening, and verify names them.
    let odd = [
        f.files().join("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.fva"),
        f.files().join(".y.fva.1.fvtmp"),
        f.vault().join("accounts/alice/.documents.db.fvtmp"),
        f.vault().join(".keys.fvk.fvtmp"),
    ];
    for d in &odd {
        fs::create_dir(d).expect("mkdir");
    }
    let mut v = f.unlock();
    v.documents(&alice()).expect("the account still opens");
    let mut found: Vec<PathBuf> = v.verify().expect("verify").findings.into_iter().map(|x| x.path).collect();
    found.sort();
    let mut expect = odd.to_vec();
    expect.sort();
    assert_eq!(found, expect);
}

#[test]
fn a_lost_database_is_refused_and_its_attachments_are_not_swept_as_orphans() {
    let f = fixture();
    let mut v = f.unlock();
    let a = v.attach(&alice(), "visits", "v1", &f.source("a", b"keep me")).expect("attach");
    drop(v);
    let db = f.vault().join("accounts/alice/documents.db");
    // Deleted, truncated to nothing, or to a byte (which SQLite would take for an empty
    // database), outside Fieldvault.
    for lose in [|p: &Path| fs::remove_file(p), |p: &Path| fs::write(p, b""), |p: &Path| fs::write(p, b"x")] {
        let saved = fs::read(&db).expect("read");
        lose(&db).expect("lose the database");
        let len = fs::metadata(&db).map(|m| m.len()).ok();
        let mut v = f.unlock();
        let err = v.documents(&alice()).err().expect("refused");
        assert!(matches!(err, Error::DatabaseLost { attachments: 1, .. }), "{err}");
        let report = v.verify().expect("verify runs");
        assert!(
            report.findings.iter().any(|x| x.path == db && x.problem.contains("the vault is damaged")),
            "{report:?}"
        );
        // A rotation would retire the only key that opens the backup: refused, nothing changes.
        let keys = |v: &Unlocked| format!("{:?}", v.vault().status().expect("status").keys);
        let before = keys(&v);
        let err = v.rotate_keys(&alice()).expect_err("rotation of a lost database");
        assert!(matches!(err, Error::DatabaseLost { .. }), "{err}");
        assert_eq!(keys(&v), before, "no key changed");
        drop(v);
        assert_eq!(entries(&f.files()), vec![format!("{}.fva", a.id)], "the attachment file is kept");
        assert_eq!(fs::metadata(&db).map(|m| m.len()).ok(), len, "no database was created in its place");
        fs::write(&db, saved).expect("restore from the backup");
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).expect("0600");
        let mut v = f.unlock();
        let out = f.tmp.path().join("back");
        let _ = fs::remove_file(&out);
        v.attachment_get(&alice(), &a.id, &out).expect("restored, the attachment is back");
        assert_eq!(fs::read(&out).expect("read"), b"keep me");
    }
}

#[test]
fn a_content_key_moved_to_another_attachment_fails_authentication() {
    let f = fixture();
    let mut v = f.unlock();
    let a = v.attach(&alice(), "visits", "v1", &f.source("a", b"aaaa")).expect("attach");
    let b = v.attach(&alice(), "visits", "v2", &f.source("b", b"bbbb")).expect("attach");
    let key = *v.data_key(&alice(), fieldvault_core::Purpose::Database).expect("key").expose_secret();
    drop(v);
    // Copy A's wrapped content key into B's row with a raw SQLCipher connection.
    let conn = rusqlite::Connection::open(f.vault().join("accounts/alice/documents.db")).expect("open");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{hex}'\"; PRAGMA cipher_page_size = 8192; PRAGMA cipher_hmac_algorithm = HMAC_SHA256;"
    ))
    .expect("key");
    conn.execute(
        "UPDATE attachments SET wrapped_cek = (SELECT wrapped_cek FROM attachments WHERE id = ?1) WHERE id = ?2",
        [&a.id, &b.id],
    )
    .expect("update");
    drop(conn);
    let mut v = f.unlock();
    let err = v.attachment_get(&alice(), &b.id, &f.tmp.path().join("out")).expect_err("moved key");
    assert!(err.to_string().contains("failed authentication"), "{err}");
}
