//! Attachment sync end to end (issue 16, ADR 0008): the real client library on several
//! devices against the real server over TLS on loopback, on SQLite and PostgreSQL. A photo
//! taken on one device opens byte for byte on the user's other device and for a supervisor
//! the rules let read its document, and for nobody else; uploads resume after a cut; a chunk
//! changed on the server is refused; deletion and lost access reach every device.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fieldvault_client::{Attachment, ConflictPolicy, Error};
use serde_json::json;

use crate::harness::{Harness, backends};
use crate::phone::Phone;
use crate::tmpfs::Tmpfs;

/// Alice and Bob own their visits; a supervisor reads every visit and writes none.
const RULES: &str = r#"
version = 1

[collections.visits]
read  = "doc.owner == user.id || 'supervisor' in user.roles"
write = "doc.owner == user.id"
"#;

async fn start(backend: crate::harness::Backend) -> Harness {
    let h = Harness::start_with_rules(backend, RULES).await;
    h.add_user("sue", &["supervisor"]).await;
    h
}

/// `len` bytes that differ from any other run's, written to a file in `dir`.
fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0u8; len];
    for piece in bytes.chunks_mut(1 << 20) {
        aws_lc_rs::rand::fill(piece).expect("random");
    }
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write");
    (path, bytes)
}

impl Phone {
    async fn attach(&self, collection: &str, id: &str, file: &Path) -> Attachment {
        let (c, i, f) = (collection.to_owned(), id.to_owned(), file.to_owned());
        self.with(move |v, a| v.attach(a, &c, &i, &f)).await.expect("attach")
    }

    async fn attachment_get(&self, id: &str, out: &Path) -> Result<Attachment, Error> {
        let (i, o) = (id.to_owned(), out.to_owned());
        self.with(move |v, a| v.attachment_get(a, &i, &o)).await
    }

    async fn attachments_of(&self, collection: &str, id: &str) -> Vec<Attachment> {
        let (c, i) = (collection.to_owned(), id.to_owned());
        self.with(move |v, a| v.attachments_of(a, &c, &i)).await.expect("list")
    }

    async fn attachment_delete(&self, id: &str) {
        let i = id.to_owned();
        self.with(move |v, a| v.attachment_delete(a, &i)).await.expect("delete");
    }

    /// The attachment files in the account's `files/` directory (temporary ones included).
    fn files(&self) -> Vec<String> {
        let dir = self.path.join("accounts").join(self.account.as_str()).join("files");
        let mut names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

fn ids(list: &[Attachment]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|a| a.id.clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_opens_on_the_users_other_device_and_for_a_supervisor_and_for_nobody_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (photo, bytes) = random_file(tmp.path(), "photo.jpg", 50 << 20);
    for backend in backends() {
        let h = start(backend).await;
        let (a1, a2, sue, bob) = (Phone::new(), Phone::new(), Phone::new(), Phone::new());
        for (p, u) in [(&a1, "alice"), (&a2, "alice"), (&sue, "sue"), (&bob, "bob")] {
            p.login(&h, u).await;
        }
        a1.put("visits", "v1", json!({"patient": "Ada"})).await;
        let made = a1.attach("visits", "v1", &photo).await;
        assert!(made.downloaded && made.upload_pending, "{made:?}");
        let r = a1.sync().await.expect("a1 syncs");
        assert_eq!((r.pushed, r.attachments.uploaded), (1, 1), "{r:?}");
        let after = a1.attachments_of("visits", "v1").await;
        assert!(!after[0].upload_pending, "{after:?}");

        for (p, who) in [(&a2, "alice's second device"), (&sue, "the supervisor")] {
            let r = p.sync().await.expect("sync");
            assert_eq!(r.attachments.keyed, 1, "{who}: {r:?}");
            let listed = p.attachments_of("visits", "v1").await;
            assert_eq!(ids(&listed), std::slice::from_ref(&made.id), "{who}: the same id everywhere");
            assert_eq!((listed[0].size, listed[0].downloaded), (50 << 20, false), "{who}");
            assert_eq!(listed[0].root, made.root, "{who}: the same file");
            let out = tmp.path().join(format!("out-{}", p.path.display().to_string().len()));
            let got = p.attachment_get(&made.id, &out).await.expect("downloaded and decrypted");
            assert!(got.downloaded, "{who}");
            assert!(std::fs::read(&out).expect("read") == bytes, "{who}: byte for byte");
            std::fs::remove_file(&out).expect("rm");
            // Kept under the device's own keys: a second get needs no server.
            assert!(p.files().iter().any(|f| f.starts_with(&made.id)), "{who}: {:?}", p.files());
        }

        // Bob's rules exclude the visit: he gets nothing, and the same answer as for an id
        // that does not exist.
        bob.sync().await.expect("bob syncs");
        assert!(bob.attachments_of("visits", "v1").await.is_empty());
        let device = h.device("bob").await;
        let theirs = h.signed(&device, "GET", &format!("/v1/attachments/{}", made.id), b"").await;
        let nothing = h.signed(&device, "GET", &format!("/v1/attachments/{}", "0".repeat(32)), b"").await;
        assert_eq!((theirs.status, theirs.code()), (403, "forbidden".to_owned()));
        assert_eq!((nothing.status, nothing.code()), (theirs.status, theirs.code()));
        let chunk = h.signed(&device, "GET", &format!("/v1/attachments/{}/chunks/0", made.id), b"").await;
        assert_eq!((chunk.status, chunk.code()), (403, "forbidden".to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_and_lost_access_reach_every_device() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (photo, _) = random_file(tmp.path(), "p", 200_000);
    for backend in backends() {
        let h = start(backend).await;
        let (a1, a2, sue) = (Phone::new(), Phone::new(), Phone::new());
        for (p, u) in [(&a1, "alice"), (&a2, "alice"), (&sue, "sue")] {
            p.login(&h, u).await;
        }
        a1.put("visits", "v1", json!({"n": 1})).await;
        a1.put("visits", "v2", json!({"n": 2})).await;
        let x = a1.attach("visits", "v1", &photo).await;
        let y = a1.attach("visits", "v2", &photo).await;
        a1.sync().await.expect("a1");
        for p in [&a2, &sue] {
            p.sync().await.expect("pull");
            for att in [&x, &y] {
                p.attachment_get(&att.id, &tmp.path().join("o")).await.expect("get");
            }
            assert_eq!(p.files().len(), 2, "{:?}", p.files());
        }

        // A device that asked for a collection's attachments gets their bytes with the sync.
        let a3 = Phone::new();
        a3.login(&h, "alice").await;
        a3.with(|v, a| v.set_prefetch(a, "visits", true)).await.expect("prefetch");
        let r = a3.sync().await.expect("a3");
        assert_eq!((r.attachments.keyed, r.attachments.downloaded), (2, 2), "{r:?}");
        assert!(a3.attachments_of("visits", "v1").await[0].downloaded);
        assert_eq!(a3.files().len(), 2, "{:?}", a3.files());

        // An attachment deleted on one device goes from the server and the others.
        a1.attachment_delete(&x.id).await;
        assert_eq!(a1.files().len(), 1);
        a1.sync().await.expect("a1 pushes the deletion");
        let device = h.device("alice").await;
        let gone = h.signed(&device, "GET", &format!("/v1/attachments/{}", x.id), b"").await;
        assert_eq!(gone.status, 403, "deleted on the server");
        a2.sync().await.expect("a2");
        assert!(a2.attachments_of("visits", "v1").await.is_empty());
        assert!(!a2.files().iter().any(|f| f.starts_with(&x.id)), "{:?}", a2.files());

        // A document deleted takes its attachments with it everywhere.
        a1.delete("visits", "v2").await;
        a1.sync().await.expect("a1 deletes v2");
        a2.sync().await.expect("a2");
        assert!(a2.files().is_empty(), "{:?}", a2.files());

        // The supervisor loses the role: the next pull purges what she may no longer read.
        fieldvault_server::accounts::set_access(&h.app.store, "cli:test", "sue", &crate::harness::access(&[], &[]), 0)
            .await
            .expect("roles");
        sue.sync().await.expect("sue");
        assert_eq!(sue.get("visits", "v1").await, None);
        assert!(sue.files().is_empty(), "{:?}", sue.files());
    }
}

/// A loopback TCP relay to `upstream` that closes a connection once it has carried more than
/// `up` bytes to the server or `down` bytes back (each counted per connection); `sent`
/// counts every byte it carried to the server.
async fn cutting_relay(
    upstream: std::net::SocketAddr,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
            let (mut cr, mut cw) = tcp.into_split();
            let (mut sr, mut sw) = server.into_split();
            let (up, down, sent) = (up.clone(), down.clone(), sent.clone());
            let to_server = async move {
                let (mut buf, mut n) = (vec![0u8; 16 << 10], 0u64);
                while let Ok(k) = cr.read(&mut buf).await {
                    if k == 0 || n + k as u64 > up.load(Ordering::SeqCst) {
                        break;
                    }
                    n += k as u64;
                    sent.fetch_add(k as u64, Ordering::SeqCst);
                    if sw.write_all(&buf[..k]).await.is_err() {
                        break;
                    }
                }
            };
            let to_client = async move {
                let (mut buf, mut n) = (vec![0u8; 16 << 10], 0u64);
                while let Ok(k) = sr.read(&mut buf).await {
                    if k == 0 || n + k as u64 > down.load(Ordering::SeqCst) {
                        break;
                    }
                    n += k as u64;
                    if cw.write_all(&buf[..k]).await.is_err() {
                        break;
                    }
                }
            };
            // Either direction ending ends the connection.
            tokio::spawn(async move {
                tokio::select! {
                    _ = to_server => {}
                    _ = to_client => {}
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_half_way_resumes_where_the_servers_receipts_say() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (photo, bytes) = random_file(tmp.path(), "p", 4 << 20);
    for backend in backends() {
        let h = start(backend).await;
        let (up, down, sent) =
            (Arc::new(AtomicU64::new(u64::MAX)), Arc::new(AtomicU64::new(u64::MAX)), Arc::new(AtomicU64::new(0)));
        let port = cutting_relay(h.addr, up.clone(), down.clone(), sent.clone()).await;
        let (a1, a2) = (Phone::new(), Phone::new());
        a1.login_to(&h, &format!("https://127.0.0.1:{port}"), "alice").await.expect("login through the relay");
        a2.login(&h, "alice").await;
        a1.put("visits", "v1", json!({})).await;
        let made = a1.attach("visits", "v1", &photo).await;
        // Every connection is cut after 2 MiB to the server: half the file gets through.
        up.store(2 << 20, Ordering::SeqCst);
        let cut = a1.sync().await;
        assert!(cut.as_ref().is_err_and(|e| e.is_transient()), "{cut:?}");
        let device = h.device("alice").await;
        let meta = h.signed(&device, "GET", &format!("/v1/attachments/{}", made.id), b"").await;
        let (received, count) = (meta.json()["received"].as_u64().expect("received"), 4 * 16 + 1);
        assert!(received > 0 && received < count, "the server holds part of it: {received} of {count}");
        assert!(a1.attachments_of("visits", "v1").await[0].upload_pending);
        // The network is back: only what is missing is sent.
        up.store(u64::MAX, Ordering::SeqCst);
        sent.store(0, Ordering::SeqCst);
        let r = a1.sync().await.expect("resumed");
        assert_eq!(r.attachments.uploaded, 1, "{r:?}");
        let resent = sent.load(Ordering::SeqCst);
        assert!(resent < bytes.len() as u64 * 3 / 4, "resumed, not sent again whole: {resent} bytes");
        a2.sync().await.expect("a2");
        let out = tmp.path().join("o");
        a2.attachment_get(&made.id, &out).await.expect("get");
        assert!(std::fs::read(&out).expect("read") == bytes);
        std::fs::remove_file(&out).expect("rm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_at_every_chunk_leaves_nothing_then_completes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (photo, bytes) = random_file(tmp.path(), "p", 5 * 65536 + 100);
    for backend in backends() {
        let h = start(backend).await;
        let (up, down, sent) =
            (Arc::new(AtomicU64::new(u64::MAX)), Arc::new(AtomicU64::new(u64::MAX)), Arc::new(AtomicU64::new(0)));
        let port = cutting_relay(h.addr, up, down.clone(), sent).await;
        let (a1, a2) = (Phone::new(), Phone::new());
        a1.login(&h, "alice").await;
        a2.login_to(&h, &format!("https://127.0.0.1:{port}"), "alice").await.expect("login through the relay");
        a1.put("visits", "v1", json!({})).await;
        let made = a1.attach("visits", "v1", &photo).await;
        a1.sync().await.expect("a1");
        a2.sync().await.expect("a2 learns of it and its key");
        let out = tmp.path().join("o");
        // Cut at points inside each chunk's answer but the last (the file is 6 chunks).
        for limit in (0..5u64).map(|k| 20_000 + k * 65_536) {
            down.store(limit, Ordering::SeqCst);
            let r = a2.attachment_get(&made.id, &out).await;
            assert!(r.is_err(), "cut after {limit} bytes: {r:?}");
            assert!(!out.exists(), "nothing released");
            assert!(a2.files().is_empty(), "no file and no temporary file in the vault: {:?}", a2.files());
            assert!(!a2.attachments_of("visits", "v1").await[0].downloaded);
        }
        down.store(u64::MAX, Ordering::SeqCst);
        a2.attachment_get(&made.id, &out).await.expect("completes");
        assert!(std::fs::read(&out).expect("read") == bytes);
        std::fs::remove_file(&out).expect("rm");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_changed_on_the_server_is_refused_and_nothing_is_released() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (photo, _) = random_file(tmp.path(), "p", 3 * 65536);
    for backend in backends() {
        let h = start(backend).await;
        let (a1, a2) = (Phone::new(), Phone::new());
        a1.login(&h, "alice").await;
        a2.login(&h, "alice").await;
        a1.put("visits", "v1", json!({})).await;
        let made = a1.attach("visits", "v1", &photo).await;
        a1.sync().await.expect("a1");
        a2.sync().await.expect("a2");
        h.tamper_chunk(&made.id, 1).await;
        let out = tmp.path().join("o");
        let refused = a2.attachment_get(&made.id, &out).await;
        match refused {
            Err(Error::Attachment { ref id, .. }) => assert_eq!(id, &made.id),
            other => panic!("expected the chunk to be refused, got {other:?}"),
        }
        assert!(!out.exists(), "nothing released");
        assert!(a2.files().is_empty(), "{:?}", a2.files());

        // A manifest that lies (its MAC edited where the server keeps it): the key does not
        // verify it, so a third device never keeps the key, and gets nothing.
        let a3 = Phone::new();
        a3.login(&h, "alice").await;
        h.tamper_manifest(&made.id).await;
        let r = a3.sync().await.expect("the sync itself completes");
        assert_eq!(r.attachments.keyed, 0, "{r:?}");
        let listed = a3.attachments_of("visits", "v1").await;
        assert_eq!((listed.len(), listed[0].size, listed[0].downloaded), (1, 0, false), "{listed:?}");
        let refused = a3.attachment_get(&made.id, &out).await;
        assert!(matches!(refused, Err(Error::Attachment { .. })), "{refused:?}");
        assert!(!out.exists() && a3.files().is_empty(), "{:?}", a3.files());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_added_on_two_devices_at_once_both_survive_the_conflict() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (one, b1) = random_file(tmp.path(), "1", 70_000);
    let (two, b2) = random_file(tmp.path(), "2", 90_000);
    for backend in backends() {
        let h = start(backend).await;
        let (a1, a2) = (Phone::new(), Phone::new());
        a1.login(&h, "alice").await;
        a2.login(&h, "alice").await;
        a1.put("visits", "v1", json!({"n": 0})).await;
        a1.sync().await.expect("a1");
        a2.sync().await.expect("a2");
        let x = a1.attach("visits", "v1", &one).await;
        let y = a2.attach("visits", "v1", &two).await;
        a1.sync().await.expect("a1 first");
        let r = a2.with(|v, a| v.sync(a, &|_| ConflictPolicy::ServerWins)).await.expect("a2 conflicts");
        assert_eq!(r.conflicts, 1, "{r:?}");
        assert_eq!(r.attachments.uploaded, 1, "{r:?}");
        a1.sync().await.expect("a1 again");
        let both = ids(&[x.clone(), y.clone()]);
        for (p, who) in [(&a1, "a1"), (&a2, "a2")] {
            assert_eq!(ids(&p.attachments_of("visits", "v1").await), both, "{who}");
            for (att, bytes) in [(&x, &b1), (&y, &b2)] {
                let out = tmp.path().join("o");
                p.attachment_get(&att.id, &out).await.expect("get");
                assert!(&std::fs::read(&out).expect("read") == bytes, "{who}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_onto_a_full_disk_is_refused_and_the_vault_is_untouched() {
    let Some(fs) = Tmpfs::mount("24m") else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let (photo, bytes) = random_file(tmp.path(), "p", 8 << 20);
    let h = start(crate::harness::Backend::Sqlite).await;
    let (a1, a2) = (Phone::new(), Phone::in_dir(Some(&fs.dir)));
    a1.login(&h, "alice").await;
    a2.login(&h, "alice").await;
    a1.put("visits", "v1", json!({"n": 1})).await;
    let made = a1.attach("visits", "v1", &photo).await;
    a1.sync().await.expect("a1");
    a2.sync().await.expect("a2 gets the document and the key");
    // Leave about 2 MiB free on the vault's file system.
    let st = rustix::fs::statvfs(&fs.dir).expect("statvfs");
    let free = st.f_bavail * st.f_frsize;
    std::fs::write(fs.dir.join("filler"), vec![7u8; (free - (2 << 20)) as usize]).expect("fill");
    let out = tmp.path().join("o");
    let r = a2.attachment_get(&made.id, &out).await;
    assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
    assert!(!out.exists() && a2.files().is_empty(), "{:?}", a2.files());
    assert_eq!(a2.get("visits", "v1").await.map(|d| d["n"].clone()), Some(json!(1)), "the vault is untouched");
    // Room again: it comes.
    std::fs::remove_file(fs.dir.join("filler")).expect("rm");
    a2.attachment_get(&made.id, &out).await.expect("get");
    assert!(std::fs::read(&out).expect("read") == bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_made_before_attachment_sync_uploads_as_version_2() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures");
    let photo = std::fs::read(fixtures.join("vault-v1-attachment.photo")).expect("fixture");
    let id = "964c8a811d7683d9b6382bd91b767d5f";
    for backend in backends() {
        let h = start(backend).await;
        // The vault as the build before made it: schema 3, a version-1 file bound to the
        // account, nothing ever sent.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vault");
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(fixtures.join("vault-v1-attachment"))
            .arg(&path)
            .status()
            .expect("cp");
        assert!(copied.success());
        // Git keeps no directory modes (a fresh clone has 0755), and a vault refuses loose
        // permissions: set them as the build that made it left them.
        let modes = std::process::Command::new("sh")
            .arg("-c")
            .arg("find \"$1\" -type d -exec chmod 700 {} + && find \"$1\" -type f -exec chmod 600 {} +")
            .arg("sh")
            .arg(&path)
            .status()
            .expect("chmod");
        assert!(modes.success());
        let store = fieldvault_keystore::PassphraseStore::new(fieldvault_core::Passphrase::new(
            zeroize::Zeroizing::new("amber falcon drifts over quiet harbour 1998".to_owned()),
        ));
        let old = tokio::task::spawn_blocking(move || {
            fieldvault_client::Vault::open(&path).expect("opens").unlock(&store).map(|v| (v, path))
        })
        .await
        .expect("join")
        .expect("unlocks");
        let a1 = Phone::adopt(old.0, old.1, dir);
        let before = a1.attachments_of("visits", "v1").await;
        assert_eq!(ids(&before), [id], "{before:?}");
        assert!(before[0].upload_pending && before[0].downloaded, "owed an upload since the upgrade: {before:?}");
        let header = |p: &Phone| {
            let f = p.path.join("accounts/default/files").join(format!("{id}.fva"));
            std::fs::read(f).expect("file")[4]
        };
        assert_eq!(header(&a1), 1, "format version 1 before");

        a1.login(&h, "alice").await;
        let r = a1.sync().await.expect("sync");
        assert_eq!((r.pushed, r.attachments.uploaded), (1, 1), "{r:?}");
        assert_eq!(header(&a1), 2, "re-encrypted to version 2 to travel");
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = tmp.path().join("o");
        a1.attachment_get(id, &out).await.expect("still opens here");
        assert!(std::fs::read(&out).expect("read") == photo);

        let a2 = Phone::new();
        a2.login(&h, "alice").await;
        a2.sync().await.expect("a2");
        std::fs::remove_file(&out).expect("rm");
        a2.attachment_get(id, &out).await.expect("opens on the second device");
        assert!(std::fs::read(&out).expect("read") == photo);
    }
}
