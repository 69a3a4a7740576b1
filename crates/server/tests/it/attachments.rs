//! Attachments over TLS on both backends (ADR 0008): a resumable upload checked chunk by chunk
//! against the manifest, the content key passed through the server to every reader of the
//! document and to no one else, the document's attachment list deciding what may be uploaded
//! and what is kept, and the key sealed at rest.

use std::io::{Cursor, Write};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use fieldvault_core::attachment::{Algorithm, Binding, Decryptor, Encryptor, Header, Owner, check_without_key};
use fieldvault_core::{AccountName, ContentKey};
use fieldvault_server::seal::Purpose;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::harness::{Backend, Device, Harness, Response, backends};
use crate::sync::{delete, key, push_ok, put};

const CHUNK: usize = 4096;

struct File {
    id: String,
    header: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    plain: Vec<u8>,
    cek: ContentKey,
}

impl File {
    /// The CEK as it travels: standard base64.
    fn cek_text(&self) -> String {
        STANDARD.encode(self.cek.expose_secret())
    }
}

/// `len` bytes encrypted as an attachment of `visits/{doc}` (format version 2).
fn encrypted(len: usize, doc: &str) -> File {
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).expect("random");
    encrypted_with(len, id, Binding::Document { collection: "visits".into(), id: doc.into() })
}

/// `len` bytes encrypted as attachment `id`, its header binding `binding`.
fn encrypted_with(len: usize, id: [u8; 16], binding: Binding) -> File {
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut()).expect("random");
    let cek = ContentKey::from_bytes(key);
    let header = Header {
        algorithm: Algorithm::Aes256Gcm,
        chunk_log2: 12,
        attachment: id,
        binding,
        salt: [7; 32],
        nonce_prefix: [9; 7],
    };
    let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let mut e = Encryptor::new(Vec::new(), &cek, header).expect("encryptor");
    e.write_all(&plain).expect("write");
    let (file, _) = e.finish().expect("finish");
    let (_, hlen) = Header::parse(&file).expect("header");
    let mlen = u64::from_be_bytes(file[file.len() - 8..].try_into().expect("8")) as usize;
    let chunks = file[hlen..file.len() - mlen].chunks(CHUNK + 16).map(<[u8]>::to_vec).collect();
    File {
        id: id.iter().map(|b| format!("{b:02x}")).collect(),
        header: file[..hlen].to_vec(),
        chunks,
        manifest: file[file.len() - mlen..].to_vec(),
        plain,
        cek,
    }
}

/// A random attachment id that nothing was ever uploaded under.
fn random_id() -> String {
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).expect("random");
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn metadata_with_cek(f: &File, doc: &str, cek: &str) -> Vec<u8> {
    json!({ "collection": "visits", "doc_id": doc, "header": STANDARD.encode(&f.header),
        "manifest": STANDARD.encode(&f.manifest), "cek": cek })
    .to_string()
    .into_bytes()
}

fn metadata(f: &File, doc: &str) -> Vec<u8> {
    metadata_with_cek(f, doc, &f.cek_text())
}

/// `op` with its attachment list: these ids, sorted.
fn listing(mut op: Value, ids: &[&str]) -> Value {
    let mut ids: Vec<&str> = ids.to_vec();
    ids.sort_unstable();
    op["attachments"] = json!(ids);
    op
}

async fn put_chunk(h: &Harness, d: &Device, f: &File, n: usize, bytes: &[u8]) -> Response {
    h.signed(d, "PUT", &format!("/v1/attachments/{}/chunks/{n}", f.id), bytes).await
}

/// Uploads `f` whole as `d`, for `visits/{doc}`: its metadata, then every chunk.
async fn upload(h: &Harness, d: &Device, f: &File, doc: &str) {
    let r = h.signed(d, "PUT", &format!("/v1/attachments/{}", f.id), &metadata(f, doc)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (n, chunk) in f.chunks.iter().enumerate() {
        let r = put_chunk(h, d, f, n, chunk).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(r_json(h.signed(d, "GET", &format!("/v1/attachments/{}", f.id), b"").await)["complete"], true);
}

fn r_json(r: Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Downloads `f` as `d` chunk by chunk, with the CEK the server's metadata gives, and
/// decrypts it (the header binds `visits/{doc}`).
async fn download(h: &Harness, d: &Device, f: &File, doc: &str) -> Vec<u8> {
    let path = format!("/v1/attachments/{}", f.id);
    let meta = r_json(h.signed(d, "GET", &path, b"").await);
    let key: [u8; 32] =
        STANDARD.decode(meta["cek"].as_str().expect("cek")).expect("base64").try_into().expect("32 bytes");
    let cek = ContentKey::from_bytes(Zeroizing::new(key));
    let mut file = STANDARD.decode(meta["header"].as_str().expect("header")).expect("base64");
    for n in 0..meta["chunk_count"].as_u64().expect("count") {
        let r = h.signed(d, "GET", &format!("{path}/chunks/{n}"), b"").await;
        assert_eq!((r.status, r.header("content-type")), (200, Some("application/octet-stream")), "{}", r.text());
        file.extend_from_slice(&r.body);
    }
    file.extend_from_slice(&STANDARD.decode(meta["manifest"].as_str().expect("manifest")).expect("base64"));
    check_without_key(Cursor::new(&file)).expect("the server's copy checks out");
    let id: [u8; 16] = f.header[8..24].try_into().expect("id");
    let account = AccountName::new("any").expect("account");
    let owner = Owner { account: &account, collection: "visits", doc_id: doc };
    let reader = Decryptor::open(Cursor::new(&file), &cek, &id, &owner).expect("opens with the CEK from the server");
    let mut out = Vec::new();
    reader.decrypt_to(&mut out).expect("decrypts");
    out
}

/// A 403 `forbidden` answer's body (to compare answers whole).
fn forbidden_body(r: &Response) -> Value {
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_is_checked_against_the_manifest_and_downloads_only_to_readers() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (alice, bob) = (h.device("alice").await, h.device("bob").await);
        let f = encrypted(3 * CHUNK + 100, "v1");
        assert_eq!(f.chunks.len(), 4);
        let op = listing(put(&key(), "visits", "v1", json!({"site": "north"}), 0), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 1).await[0]["status"], "applied");
        let path = format!("/v1/attachments/{}", f.id);

        // Bob may not attach to Alice's document, nor to one that does not exist: the same answer.
        for doc in ["v1", "nothing-here"] {
            let r = h.signed(&bob, "PUT", &path, &metadata(&f, doc)).await;
            assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{doc}");
        }
        // A header naming another id, or a manifest whose root is off, is refused.
        let other = encrypted(10, "v1");
        let r = h.signed(&alice, "PUT", &format!("/v1/attachments/{}", other.id), &metadata(&f, "v1")).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let mut bent = File { manifest: f.manifest.clone(), ..encrypted(0, "v1") };
        bent.id = f.id.clone();
        bent.header = f.header.clone();
        bent.manifest[30] ^= 1;
        let r = h.signed(&alice, "PUT", &path, &metadata(&bent, "v1")).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));

        let r = h.signed(&alice, "PUT", &path, &metadata(&f, "v1")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!((r.json()["missing"].clone(), r.json()["complete"].clone()), (json!([0, 1, 2, 3]), json!(false)));
        assert_eq!(r.json()["cek"], f.cek_text());
        // The same metadata again resumes; other metadata under the same id is refused, also
        // from another document that lists it.
        assert_eq!(h.signed(&alice, "PUT", &path, &metadata(&f, "v1")).await.status, 200);
        let other_doc = listing(put(&key(), "visits", "v2", json!({}), 0), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([other_doc]), 1).await[0]["status"], "applied");
        let f_id: [u8; 16] = f.header[8..24].try_into().expect("id");
        let same_id = encrypted_with(10, f_id, Binding::Document { collection: "visits".into(), id: "v2".into() });
        let r = h.signed(&alice, "PUT", &path, &metadata(&same_id, "v2")).await;
        assert_eq!((r.status, r.code().as_str()), (409, "bad_request"));

        // Two chunks, then the connection "drops": the server says what is missing.
        for n in [0, 1] {
            let r = put_chunk(&h, &alice, &f, n, &f.chunks[n]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = h.signed(&alice, "GET", &path, b"").await;
        assert_eq!((r.json()["received"].clone(), r.json()["missing"].clone()), (json!(2), json!([2, 3])));
        // Not downloadable before it is complete.
        let r = h.signed(&alice, "GET", &format!("{path}/chunks/0"), b"").await;
        assert_eq!((r.status, r.code().as_str()), (409, "bad_request"));
        // A tampered chunk, a chunk at the wrong index, a truncated chunk, an index past the end.
        let mut bad = f.chunks[2].clone();
        bad[17] ^= 0x40;
        for (n, bytes) in [(2, bad.as_slice()), (2, &f.chunks[1][..]), (3, &f.chunks[3][..10]), (4, &f.chunks[3][..])] {
            let r = put_chunk(&h, &alice, &f, n, bytes).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "chunk {n}");
        }
        // Bob cannot upload into it either (he cannot even see it).
        forbidden_body(&put_chunk(&h, &bob, &f, 2, &f.chunks[2]).await);
        for n in [2, 3, 0] {
            let r = put_chunk(&h, &alice, &f, n, &f.chunks[n]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = h.signed(&alice, "GET", &path, b"").await;
        assert_eq!((r.json()["received"].clone(), r.json()["complete"].clone()), (json!(4), json!(true)));
        assert_eq!(r.json()["cek"], f.cek_text());
        assert_eq!(r.header("cache-control"), Some("no-store"));

        // Download chunk by chunk; the reassembled file checks out and decrypts to the original.
        assert_eq!(download(&h, &alice, &f, "v1").await, f.plain);

        // Bob learns nothing: metadata and chunks answer exactly as for an id that does not exist.
        let nothing = forbidden_body(&h.signed(&bob, "GET", &format!("/v1/attachments/{}", random_id()), b"").await);
        for target in [path.clone(), format!("{path}/chunks/0")] {
            let r = h.signed(&bob, "GET", &target, b"").await;
            assert_eq!(forbidden_body(&r), nothing, "{target}");
        }
        // Deleting the document deletes its attachments. v2 still lists the id, which is free
        // now: for v2's readers, not uploaded yet; for Bob, still nothing.
        let del = json!([delete(&key(), "visits", "v1", 1)]);
        assert_eq!(push_ok(&h, &alice, del, 2).await[0]["status"], "applied");
        assert!(h.app.store.attachment(&f.id).await.expect("store").is_none());
        assert!(h.app.store.chunk(&f.id, 0).await.expect("store").is_none());
        let r = h.signed(&alice, "GET", &path, b"").await;
        assert_eq!((r.status, r.code().as_str()), (409, "bad_request"), "{}", r.text());
        assert_eq!(forbidden_body(&h.signed(&bob, "GET", &path, b"").await), nothing);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_needs_the_id_on_the_documents_list_and_a_cek_of_32_bytes() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let alice = h.device("alice").await;
        let (f, g) = (encrypted(CHUNK + 1, "v1"), encrypted(10, "v1"));
        let op = listing(put(&key(), "visits", "v1", json!({}), 0), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 1).await[0]["status"], "applied");

        // g is not on v1's list: refused, as for a document Alice may not write.
        let r = h.signed(&alice, "PUT", &format!("/v1/attachments/{}", g.id), &metadata(&g, "v1")).await;
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{}", r.text());
        assert!(h.app.store.attachment(&g.id).await.expect("store").is_none());

        // f is listed, nothing has arrived: a reader is told to come back later (409), for the
        // metadata and the chunks alike; an id nothing lists is 403.
        let path = format!("/v1/attachments/{}", f.id);
        for (method, target, body) in [
            ("GET", path.clone(), &[][..]),
            ("GET", format!("{path}/chunks/0"), &[][..]),
            ("PUT", format!("{path}/chunks/0"), &f.chunks[0][..]),
        ] {
            let r = h.signed(&alice, method, &target, body).await;
            assert_eq!((r.status, r.code().as_str()), (409, "bad_request"), "{method} {target}: {}", r.text());
        }
        let r = h.signed(&alice, "GET", &format!("/v1/attachments/{}", g.id), b"").await;
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));

        // The file must be format version 2 naming this very document: a file bound to
        // another document, or a version-1 file bound to a device's account, is refused.
        let f_id: [u8; 16] = f.header[8..24].try_into().expect("id");
        let elsewhere =
            encrypted_with(CHUNK + 1, f_id, Binding::Document { collection: "visits".into(), id: "v2".into() });
        let v1 = encrypted_with(CHUNK + 1, f_id, Binding::Account(AccountName::new("alice").expect("account")));
        for (bad, why) in [(&elsewhere, "another document"), (&v1, "format version 2")] {
            let r = h.signed(&alice, "PUT", &path, &metadata(bad, "v1")).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{}", r.text());
            assert!(r.text().contains(why), "{}", r.text());
        }
        assert!(h.app.store.attachment(&f.id).await.expect("store").is_none());

        // The CEK is exactly 32 bytes of standard base64.
        let key = f.cek.expose_secret();
        let mut long = key.to_vec();
        long.push(0);
        // A key whose standard encoding has '+' and '/', sent in the URL-safe alphabet.
        let url_safe = URL_SAFE.encode([0xfb; 32]);
        for (cek, why) in [
            (STANDARD.encode(&key[..31]), "31 bytes"),
            (STANDARD.encode(&long), "33 bytes"),
            (String::new(), "empty"),
            (f.cek_text().trim_end_matches('=').to_owned(), "no padding"),
            (url_safe, "URL-safe alphabet"),
            ("not base64 at all".to_owned(), "not base64"),
        ] {
            let r = h.signed(&alice, "PUT", &path, &metadata_with_cek(&f, "v1", &cek)).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{why}: {}", r.text());
            if !cek.is_empty() {
                assert!(!r.text().contains(&cek), "{why}: the key is not echoed");
            }
        }
        // The device-wrapped key of the previous protocol is an unknown field now.
        let old = json!({ "collection": "visits", "doc_id": "v1", "header": STANDARD.encode(&f.header),
            "manifest": STANDARD.encode(&f.manifest), "wrapped_cek": STANDARD.encode([5u8; 60]) });
        let r = h.signed(&alice, "PUT", &path, old.to_string().as_bytes()).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
        assert!(h.app.store.attachment(&f.id).await.expect("store").is_none(), "nothing stored");

        let r = h.signed(&alice, "PUT", &path, &metadata(&f, "v1")).await;
        assert_eq!((r.status, r.json()["cek"].clone()), (200, json!(f.cek_text())), "{}", r.text());
        // The same upload with another key is other metadata under a taken id.
        let r = h.signed(&alice, "PUT", &path, &metadata_with_cek(&f, "v1", &STANDARD.encode([1u8; 32]))).await;
        assert_eq!((r.status, r.code().as_str()), (409, "bad_request"));
        let r = h.signed(&alice, "GET", &path, b"").await;
        assert_eq!(r.json()["cek"], f.cek_text(), "the first key stays");
    }
}

/// Owners write their visits; supervisors read everyone's.
const SUPERVISED: &str = r#"
version = 1

[collections.visits]
read  = "doc.owner == user.id || 'supervisor' in user.roles"
write = "doc.owner == user.id"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cek_reaches_every_reader_the_rules_name_now_and_no_one_else() {
    for backend in backends() {
        let h = Harness::start_with_rules(backend, SUPERVISED).await;
        h.add_user("sue", &["supervisor"]).await;
        let (alice, bob, sue) = (h.device("alice").await, h.device("bob").await, h.device("sue").await);
        let f = encrypted(2 * CHUNK + 5, "v1");
        let waiting = random_id();
        let op = listing(put(&key(), "visits", "v1", json!({"site": "north"}), 0), &[&f.id, &waiting]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 1).await[0]["status"], "applied");
        upload(&h, &alice, &f, "v1").await;

        // The supervisor gets Alice's key from the server and opens the file with it.
        assert_eq!(download(&h, &sue, &f, "v1").await, f.plain);
        let path = format!("/v1/attachments/{}", f.id);
        assert_eq!(r_json(h.signed(&sue, "GET", &path, b"").await)["cek"], f.cek_text());
        // Reading is not writing: she uploads nothing into it.
        forbidden_body(&put_chunk(&h, &sue, &f, 0, &f.chunks[0]).await);
        // Listed and not uploaded yet: she is told to come back later.
        let r = h.signed(&sue, "GET", &format!("/v1/attachments/{waiting}"), b"").await;
        assert_eq!((r.status, r.code().as_str()), (409, "bad_request"));

        // Bob, whom the rules exclude, gets for every route the answer an unknown id gets.
        let nothing = forbidden_body(&h.signed(&bob, "GET", &format!("/v1/attachments/{}", random_id()), b"").await);
        for (method, target, body) in [
            ("GET", path.clone(), &[][..]),
            ("GET", format!("{path}/chunks/0"), &[][..]),
            ("PUT", format!("{path}/chunks/0"), &f.chunks[0][..]),
            ("GET", format!("/v1/attachments/{waiting}"), &[][..]),
            ("PUT", format!("/v1/attachments/{waiting}/chunks/0"), &f.chunks[0][..]),
        ] {
            let r = h.signed(&bob, method, &target, body).await;
            assert_eq!(forbidden_body(&r), nothing, "{method} {target}");
        }

        // Access is judged now: without the role, Sue gets that same answer.
        assert!(
            h.app
                .store
                .set_user_access(
                    "sue",
                    &[],
                    &serde_json::Map::new(),
                    &fieldvault_server::AuditEvent::new(0, "test", "test", "")
                )
                .await
                .expect("store")
        );
        for target in [path.clone(), format!("{path}/chunks/0"), format!("/v1/attachments/{waiting}")] {
            assert_eq!(forbidden_body(&h.signed(&sue, "GET", &target, b"").await), nothing, "{target}");
        }
        assert!(
            h.app
                .store
                .set_user_access(
                    "sue",
                    &["supervisor".into()],
                    &serde_json::Map::new(),
                    &fieldvault_server::AuditEvent::new(0, "test", "test", "")
                )
                .await
                .expect("store")
        );
        assert_eq!(download(&h, &sue, &f, "v1").await, f.plain, "and with it again, the key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_taken_off_the_list_is_deleted_and_a_deleted_document_takes_all_of_them() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let alice = h.device("alice").await;
        let (f, g) = (encrypted(CHUNK + 7, "v1"), encrypted(2 * CHUNK, "v1"));
        let op = listing(put(&key(), "visits", "v1", json!({"n": 1}), 0), &[&f.id, &g.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 1).await[0]["status"], "applied");
        upload(&h, &alice, &f, "v1").await;
        upload(&h, &alice, &g, "v1").await;

        // g leaves the list: its metadata and chunks go in the push's transaction; f stays.
        let op = listing(put(&key(), "visits", "v1", json!({"n": 1}), 1), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 2).await[0], json!({"status": "applied", "version": 2}));
        assert!(h.app.store.attachment(&g.id).await.expect("store").is_none(), "{:?}", h.backend);
        for n in 0..g.chunks.len() as u64 {
            assert!(h.app.store.chunk(&g.id, n).await.expect("store").is_none(), "chunk {n}");
        }
        let (stored_f, received) = h.app.store.attachment(&f.id).await.expect("store").expect("f stays");
        assert_eq!((stored_f.complete, received.len()), (true, f.chunks.len()));
        forbidden_body(&h.signed(&alice, "GET", &format!("/v1/attachments/{}", g.id), b"").await);

        // Listed again, its id is free: not uploaded yet, then uploaded anew.
        let op = listing(put(&key(), "visits", "v1", json!({"n": 1}), 2), &[&f.id, &g.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 3).await[0]["status"], "applied");
        let r = h.signed(&alice, "GET", &format!("/v1/attachments/{}", g.id), b"").await;
        assert_eq!((r.status, r.code().as_str()), (409, "bad_request"));
        upload(&h, &alice, &g, "v1").await;
        // A put without a list keeps it, and both attachments.
        let op = put(&key(), "visits", "v1", json!({"n": 2}), 3);
        assert_eq!(push_ok(&h, &alice, json!([op]), 4).await[0]["status"], "applied");
        assert_eq!(download(&h, &alice, &g, "v1").await, g.plain);

        // Deleting the document deletes every attachment it had, chunks and all.
        assert_eq!(push_ok(&h, &alice, json!([delete(&key(), "visits", "v1", 4)]), 5).await[0]["status"], "applied");
        for a in [&f, &g] {
            assert!(h.app.store.attachment(&a.id).await.expect("store").is_none(), "{:?}", h.backend);
            assert!(h.app.store.chunk(&a.id, 0).await.expect("store").is_none());
            assert!(h.app.store.documents_listing(&a.id).await.expect("store").is_empty(), "no document lists it");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cek_is_kept_sealed_never_in_the_clear() {
    for backend in backends() {
        let h = Harness::start(backend.clone()).await;
        let alice = h.device("alice").await;
        let f = encrypted(100, "v1");
        let op = listing(put(&key(), "visits", "v1", json!({}), 0), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 1).await[0]["status"], "applied");
        upload(&h, &alice, &f, "v1").await;
        let key = f.cek.expose_secret();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let text = f.cek_text();
        let clear = |bytes: &[u8]| {
            bytes.windows(32).any(|w| w == key)
                || bytes.windows(hex.len()).any(|w| w.eq_ignore_ascii_case(hex.as_bytes()))
                || bytes.windows(text.len()).any(|w| w == text.as_bytes())
        };
        // Every column of the attachment's row, as the database holds it.
        let (sealed, row): (Vec<u8>, Vec<u8>) = match &backend {
            Backend::Sqlite => {
                let path = h.data_dir().join("server.db");
                for file in ["server.db", "server.db-wal"] {
                    let bytes = std::fs::read(h.data_dir().join(file)).unwrap_or_default();
                    assert!(!clear(&bytes), "{file} holds the key in the clear");
                }
                let conn = rusqlite::Connection::open(&path).expect("open");
                let sqlite_key = fieldvault_server::seal::sqlite_key(&h.store_key());
                conn.execute_batch(&fieldvault_core::sqlcipher::key_pragma("main", &sqlite_key)).expect("key");
                conn.execute_batch(&fieldvault_core::sqlcipher::cipher_settings_sql("main")).expect("settings");
                conn.query_row(
                    "SELECT cek_sealed, id, user_name, collection, doc_id, header, manifest FROM attachments
                     WHERE id = ?1",
                    [&f.id],
                    |r| {
                        let sealed: Vec<u8> = r.get(0)?;
                        let mut row = sealed.clone();
                        for i in 1..5 {
                            row.extend_from_slice(r.get::<_, String>(i)?.as_bytes());
                        }
                        for i in 5..7 {
                            row.extend_from_slice(&r.get::<_, Vec<u8>>(i)?);
                        }
                        Ok((sealed, row))
                    },
                )
                .expect("the row")
            }
            Backend::Postgres { url, schema } => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("schema");
                let sealed: Vec<u8> = sqlx::query_scalar("SELECT cek_sealed FROM attachments WHERE id = $1")
                    .bind(&f.id)
                    .fetch_one(&mut conn)
                    .await
                    .expect("the row");
                let row: String = sqlx::query_scalar("SELECT a::text FROM attachments a WHERE id = $1")
                    .bind(&f.id)
                    .fetch_one(&mut conn)
                    .await
                    .expect("the row");
                (sealed, row.into_bytes())
            }
        };
        assert!(!clear(&sealed) && !clear(&row), "{:?}: the key is in the table in the clear", h.backend);
        // It is the key, sealed: nonce, ciphertext, tag; bound to this attachment's id.
        assert_eq!(sealed.len(), 12 + 32 + 16);
        let opened = h.app.sealer.open(Purpose::AttachmentCek, &f.id, &sealed).expect("opens");
        assert_eq!(opened.as_slice(), key);
        assert!(h.app.sealer.open(Purpose::AttachmentCek, &random_id(), &sealed).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_cek_that_does_not_open_is_a_server_error_never_a_key() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let alice = h.device("alice").await;
        let f = encrypted(100, "v1");
        let op = listing(put(&key(), "visits", "v1", json!({}), 0), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 1).await[0]["status"], "applied");
        // Stored with a key sealed for another attachment (a row moved, or damaged).
        let record = fieldvault_server::AttachmentRecord {
            id: f.id.clone(),
            user: "alice".into(),
            collection: "visits".into(),
            doc_id: "v1".into(),
            header: f.header.clone(),
            manifest: f.manifest.clone(),
            cek_sealed: h.app.sealer.seal(Purpose::AttachmentCek, &random_id(), f.cek.expose_secret()),
            chunk_count: f.chunks.len() as u64,
            length: 100,
            complete: false,
            created_at: h.app.now(),
        };
        h.app.store.create_attachment(&record, 1).await.expect("store").expect("stored");
        let path = format!("/v1/attachments/{}", f.id);
        let r = h.signed(&alice, "GET", &path, b"").await;
        assert_eq!((r.status, r.code().as_str()), (500, "internal"), "{}", r.text());
        assert!(!r.text().contains(&f.cek_text()));
        // The upload that would resume it is refused the same way: no key is compared or sent.
        let r = h.signed(&alice, "PUT", &path, &metadata(&f, "v1")).await;
        assert_eq!((r.status, r.code().as_str()), (500, "internal"), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_is_never_stored_for_a_document_deleted_after_it_was_checked() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let alice = h.device("alice").await;
        let f = encrypted(100, "v1");
        let op = listing(put(&key(), "visits", "v1", json!({"site": "north"}), 0), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([op]), 1).await[0]["status"], "applied");
        // The route has checked the document at version 1 (live, readable, writable) ...
        let checked = h.app.store.document("visits", "v1").await.expect("store").expect("stored");
        assert_eq!((checked.version, checked.deleted, checked.attachments.clone()), (1, false, vec![f.id.clone()]));
        // ... and a push deletes it before the attachment's insert runs.
        let del = json!([delete(&key(), "visits", "v1", 1)]);
        assert_eq!(push_ok(&h, &alice, del, 2).await[0]["status"], "applied");
        let record = fieldvault_server::AttachmentRecord {
            id: f.id.clone(),
            user: "alice".into(),
            collection: "visits".into(),
            doc_id: "v1".into(),
            header: f.header.clone(),
            manifest: f.manifest.clone(),
            cek_sealed: h.app.sealer.seal(Purpose::AttachmentCek, &f.id, f.cek.expose_secret()),
            chunk_count: f.chunks.len() as u64,
            length: 100,
            complete: false,
            created_at: h.app.now(),
        };
        let stored = h.app.store.create_attachment(&record, checked.version).await.expect("store");
        assert!(stored.is_none(), "{:?}: attached to a deleted document", h.backend);
        assert!(h.app.store.attachment(&f.id).await.expect("store").is_none(), "{:?}", h.backend);
        // Re-created (version 3), it is not the document that was checked either.
        let again = listing(put(&key(), "visits", "v1", json!({"site": "south"}), 0), &[&f.id]);
        assert_eq!(push_ok(&h, &alice, json!([again]), 3).await[0]["status"], "applied");
        assert!(h.app.store.create_attachment(&record, checked.version).await.expect("store").is_none());
        assert!(h.app.store.attachment(&f.id).await.expect("store").is_none(), "{:?}", h.backend);
        // At the version it has now, it is stored.
        let now = h.app.store.document("visits", "v1").await.expect("store").expect("stored");
        let stored = h.app.store.create_attachment(&record, now.version).await.expect("store").expect("stored");
        assert_eq!((stored.id.as_str(), stored.doc_id.as_str()), (f.id.as_str(), "v1"));
        // The upload over HTTP resumes it.
        let r = h.signed(&alice, "PUT", &format!("/v1/attachments/{}", f.id), &metadata(&f, "v1")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}
