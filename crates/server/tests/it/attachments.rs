//! Attachments over TLS on both backends: a resumable upload checked chunk by chunk against
//! the manifest, a download that decrypts to the original, access that follows the document.

use std::io::{Cursor, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fieldvault_core::attachment::{Algorithm, Binding, Decryptor, Encryptor, Header, Owner, check_without_key};
use fieldvault_core::{AccountName, ContentKey};
use serde_json::json;
use zeroize::Zeroizing;

use crate::harness::{Device, Harness, backends};
use crate::sync::key;

const CHUNK: usize = 4096;

struct File {
    id: String,
    header: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    plain: Vec<u8>,
    cek: ContentKey,
}

fn encrypted(len: usize, account: &str) -> File {
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).expect("random");
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut()).expect("random");
    let cek = ContentKey::from_bytes(key);
    let header = Header {
        algorithm: Algorithm::Aes256Gcm,
        chunk_log2: 12,
        attachment: id,
        binding: Binding::Account(AccountName::new(account).expect("account")),
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

fn metadata(f: &File, doc: &str) -> Vec<u8> {
    json!({ "collection": "visits", "doc_id": doc, "header": STANDARD.encode(&f.header),
        "manifest": STANDARD.encode(&f.manifest), "wrapped_cek": STANDARD.encode([5u8; 60]) })
    .to_string()
    .into_bytes()
}

async fn put_chunk(h: &Harness, d: &Device, f: &File, n: usize, bytes: &[u8]) -> crate::harness::Response {
    h.signed(d, "PUT", &format!("/v1/attachments/{}/chunks/{n}", f.id), bytes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_is_checked_against_the_manifest_and_downloads_only_to_readers() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (alice, bob) = (h.device("alice").await, h.device("bob").await);
        let op = json!([{ "idempotency_key": key(), "collection": "visits", "id": "v1", "op": "put",
            "body": {"site": "north"}, "base_version": 0 }]);
        assert_eq!(h.push(&alice, op, 1).await.status, 200);
        let f = encrypted(3 * CHUNK + 100, "alice");
        assert_eq!(f.chunks.len(), 4);
        let path = format!("/v1/attachments/{}", f.id);

        // Bob may not attach to Alice's document, nor to one that does not exist: the same answer.
        for doc in ["v1", "nothing-here"] {
            let r = h.signed(&bob, "PUT", &path, &metadata(&f, doc)).await;
            assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{doc}");
        }
        // A header naming another id, or a manifest whose root is off, is refused.
        let other = encrypted(10, "alice");
        let r = h.signed(&alice, "PUT", &format!("/v1/attachments/{}", other.id), &metadata(&f, "v1")).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let mut bent = File { manifest: f.manifest.clone(), ..encrypted(0, "alice") };
        bent.id = f.id.clone();
        bent.header = f.header.clone();
        bent.manifest[30] ^= 1;
        let r = h.signed(&alice, "PUT", &path, &metadata(&bent, "v1")).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));

        let r = h.signed(&alice, "PUT", &path, &metadata(&f, "v1")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!((r.json()["missing"].clone(), r.json()["complete"].clone()), (json!([0, 1, 2, 3]), json!(false)));
        // The same metadata again resumes; other metadata under the same id is refused.
        assert_eq!(h.signed(&alice, "PUT", &path, &metadata(&f, "v1")).await.status, 200);
        let other_doc = json!({ "idempotency_key": key(), "collection": "visits", "id": "v2",
            "op": "put", "body": {}, "base_version": 0 });
        assert_eq!(h.push(&alice, json!([other_doc]), 1).await.status, 200);
        let r = h.signed(&alice, "PUT", &path, &metadata(&f, "v2")).await;
        assert_eq!(r.status, 409);

        // Two chunks, then the connection "drops": the server says what is missing.
        for n in [0, 1] {
            let r = put_chunk(&h, &alice, &f, n, &f.chunks[n]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = h.signed(&alice, "GET", &path, b"").await;
        assert_eq!((r.json()["received"].clone(), r.json()["missing"].clone()), (json!(2), json!([2, 3])));
        // Not downloadable before it is complete.
        let r = h.signed(&alice, "GET", &format!("{path}/chunks/0"), b"").await;
        assert_eq!(r.status, 409);
        // A tampered chunk, a chunk at the wrong index, a truncated chunk, an index past the end.
        let mut bad = f.chunks[2].clone();
        bad[17] ^= 0x40;
        for (n, bytes) in [(2, bad.as_slice()), (2, &f.chunks[1][..]), (3, &f.chunks[3][..10]), (4, &f.chunks[3][..])] {
            let r = put_chunk(&h, &alice, &f, n, bytes).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "chunk {n}");
        }
        // Bob cannot upload into it either (he cannot even see it).
        assert_eq!(put_chunk(&h, &bob, &f, 2, &f.chunks[2]).await.status, 404);
        for n in [2, 3, 0] {
            let r = put_chunk(&h, &alice, &f, n, &f.chunks[n]).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = h.signed(&alice, "GET", &path, b"").await;
        assert_eq!((r.json()["received"].clone(), r.json()["complete"].clone()), (json!(4), json!(true)));
        assert_eq!(r.json()["wrapped_cek"], STANDARD.encode([5u8; 60]));

        // Download chunk by chunk; the reassembled file checks out and decrypts to the original.
        let mut file = f.header.clone();
        for n in 0..f.chunks.len() {
            let r = h.signed(&alice, "GET", &format!("{path}/chunks/{n}"), b"").await;
            assert_eq!(r.header("content-type"), Some("application/octet-stream"));
            file.extend_from_slice(&r.body);
        }
        file.extend_from_slice(&f.manifest);
        check_without_key(Cursor::new(&file)).expect("the server's copy checks out");
        let id: [u8; 16] = f.header[8..24].try_into().expect("id");
        let account = AccountName::new("alice").expect("a");
        let owner = Owner { account: &account, collection: "visits", doc_id: "v1" };
        let d = Decryptor::open(Cursor::new(&file), &f.cek, &id, &owner).expect("opens");
        let mut out = Vec::new();
        d.decrypt_to(&mut out).expect("decrypts");
        assert_eq!(out, f.plain);

        // Bob learns nothing: metadata and chunks are 404, as for an id that does not exist.
        for target in
            [path.clone(), format!("{path}/chunks/0"), "/v1/attachments/00000000000000000000000000000000".into()]
        {
            let r = h.signed(&bob, "GET", &target, b"").await;
            assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{target}");
        }
        // Deleting the document deletes its attachments.
        let del = json!([{ "idempotency_key": key(), "collection": "visits", "id": "v1",
            "op": "delete", "base_version": 1 }]);
        assert_eq!(h.push(&alice, del, 2).await.json()["results"][0]["status"], "applied");
        assert_eq!(h.signed(&alice, "GET", &path, b"").await.status, 404);
        assert!(h.app.store.attachment(&f.id).await.expect("store").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_is_never_stored_for_a_document_deleted_after_it_was_checked() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let alice = h.device("alice").await;
        let op = json!([{ "idempotency_key": key(), "collection": "visits", "id": "v1", "op": "put",
            "body": {"site": "north"}, "base_version": 0 }]);
        assert_eq!(h.push(&alice, op, 1).await.json()["results"][0]["status"], "applied");
        // The route has checked the document at version 1 (live, readable, writable) ...
        let checked = h.app.store.document("visits", "v1").await.expect("store").expect("stored");
        assert_eq!((checked.version, checked.deleted), (1, false));
        // ... and a push deletes it before the attachment's insert runs.
        let del = json!([{ "idempotency_key": key(), "collection": "visits", "id": "v1", "op": "delete",
            "base_version": 1 }]);
        assert_eq!(h.push(&alice, del, 2).await.json()["results"][0]["status"], "applied");
        let f = encrypted(100, "alice");
        let record = fieldvault_server::AttachmentRecord {
            id: f.id.clone(),
            user: "alice".into(),
            collection: "visits".into(),
            doc_id: "v1".into(),
            header: f.header.clone(),
            manifest: f.manifest.clone(),
            wrapped_cek: vec![5; 60],
            chunk_count: f.chunks.len() as u64,
            length: 100,
            complete: false,
            created_at: h.app.now(),
        };
        let stored = h.app.store.create_attachment(&record, checked.version).await.expect("store");
        assert!(stored.is_none(), "{:?}: attached to a deleted document", h.backend);
        assert!(h.app.store.attachment(&f.id).await.expect("store").is_none(), "{:?}", h.backend);
        // Re-created (version 3), it is not the document that was checked either.
        let again = json!([{ "idempotency_key": key(), "collection": "visits", "id": "v1", "op": "put",
            "body": {"site": "south"}, "base_version": 0 }]);
        assert_eq!(h.push(&alice, again, 3).await.json()["results"][0]["status"], "applied");
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
