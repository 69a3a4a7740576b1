//! The size bounds of sync (SPEC section 5), each on SQLite and PostgreSQL: a push body of up
//! to 4 MiB goes through and a larger one is refused whole; a document past 1 MiB once merged
//! gets the op status `too_large` while the rest of its push applies; a pull answer stays
//! under 4 MiB of changes whatever `limit` asked, and a document near 1 MiB still comes back.

use fieldvault_core::names::MAX_DOCUMENT_BYTES;
use serde_json::{Value, json};

use crate::harness::{Device, Harness, Signed, backends, now};
use crate::sync::{key, push_ok, put};

/// What a pull answer may hold of changes.
const FOUR_MIB: usize = 4 << 20;

/// Pulls every page with `limit`; each answer's body length and its changes.
async fn pages(h: &Harness, d: &Device, limit: u32) -> Vec<(usize, Vec<Value>)> {
    let mut since: Option<String> = None;
    let mut out = Vec::new();
    for _ in 0..100 {
        let r = h.pull(d, since.as_deref(), Some(limit), 1).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        out.push((r.body.len(), v["changes"].as_array().expect("changes").clone()));
        since = Some(v["cursor"].as_str().expect("cursor").to_owned());
        if !v["has_more"].as_bool().expect("has_more") {
            return out;
        }
    }
    panic!("pull did not finish");
}

/// Pushes `docs` (id, body) in pushes of `per_push`, asserting each applied.
async fn push_all(h: &Harness, d: &Device, docs: Vec<(String, Value)>, per_push: usize) {
    for (n, chunk) in docs.chunks(per_push).enumerate() {
        let ops: Vec<Value> = chunk.iter().map(|(id, body)| put(&key(), "scans", id, body.clone(), 0)).collect();
        let results = push_ok(h, d, json!(ops), n as u64 + 1).await;
        assert!(results.iter().all(|r| r["status"] == "applied"), "{results:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_documents_of_900_kb_come_back_over_several_pages_each_under_4_mib() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (one, two) = (h.device("alice").await, h.device("alice").await);
        let docs: Vec<(String, Value)> =
            (0..40).map(|i| (format!("s{i:02}"), json!({"data": "z".repeat(900_000)}))).collect();
        push_all(&h, &one, docs, 1).await;
        // Whatever the limit asked for, no answer carries 4 MiB of changes.
        let got = pages(&h, &two, 5000).await;
        assert!(got.len() >= 10, "40 documents of 900 KB take at least 10 pages, not {}", got.len());
        let mut ids: Vec<String> = Vec::new();
        for (len, changes) in &got {
            assert!(*len < FOUR_MIB + 1024, "an answer of {len} bytes");
            assert!(!changes.is_empty(), "a page cut by size carries at least one change");
            ids.extend(changes.iter().map(|c| c["id"].as_str().expect("id").to_owned()));
        }
        let expected: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
        assert_eq!(ids, expected, "every document once, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_near_one_mebibyte_comes_back_alone_after_a_page_it_would_overfill() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (one, two) = (h.device("alice").await, h.device("alice").await);
        let near = "n".repeat(MAX_DOCUMENT_BYTES - 100);
        let mut docs: Vec<(String, Value)> =
            (0..4).map(|i| (format!("a{i}"), json!({"data": "z".repeat(900_000)}))).collect();
        docs.push(("big".to_owned(), json!({"data": near})));
        // Two documents of 900 KB make a push body of 1.8 MB: past 1 MiB, under 4 MiB.
        push_all(&h, &one, docs, 2).await;
        let got = pages(&h, &two, 500).await;
        let shape: Vec<usize> = got.iter().map(|(_, c)| c.len()).collect();
        assert_eq!(shape, [4, 1], "3.6 MB, then the document near 1 MiB alone");
        assert_eq!(got[1].1[0]["id"], "big");
        assert_eq!(got[1].1[0]["body"]["data"].as_str().map(str::len), Some(MAX_DOCUMENT_BYTES - 100));
        // Asked one at a time, it comes back alone too (then an empty last page: a full page
        // cannot know it was the last).
        let single = pages(&h, &two, 1).await;
        assert_eq!(single.len(), 6);
        assert_eq!(single[4].1[0]["id"], "big");
    }
}

const WIDE: &str = r#"
version = 1

[collections.sites]
read  = "doc.owner == user.id"
write = "doc.owner == user.id"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_past_one_mebibyte_once_merged_is_too_large_and_the_rest_of_the_push_applies() {
    for backend in backends() {
        // Written where every field syncs; then served where `scan` stays on the server, so a
        // device's put is merged with it.
        let wide = Harness::start_with_rules(backend, WIDE).await;
        let d = wide.device("alice").await;
        let scan = "s".repeat(600_000);
        push_ok(&wide, &d, json!([put(&key(), "sites", "s1", json!({"name": "Mill", "scan": scan}), 0)]), 1).await;
        let narrow = wide.sibling_with_rules(Some(format!("{WIDE}fields = [\"name\"]\n"))).await;
        let too_big = "n".repeat(600_000);
        let ok_key = key();
        let results = push_ok(
            &narrow,
            &d,
            json!([
                put(&key(), "sites", "s1", json!({"name": too_big}), 1),
                put(&ok_key, "sites", "s2", json!({"name": "Dock"}), 0),
                put(&key(), "sites", "s3", json!({"name": "x".repeat(MAX_DOCUMENT_BYTES)}), 0),
            ]),
            2,
        )
        .await;
        assert_eq!(results[0], json!({"status": "too_large"}));
        assert_eq!(results[1], json!({"status": "applied", "version": 1}));
        assert_eq!(results[2], json!({"status": "too_large"}));
        let s1 = narrow.app.store.document("sites", "s1").await.expect("read").expect("s1");
        assert_eq!((s1.version, s1.body["name"].as_str()), (1, Some("Mill")), "nothing of it applied");
        assert!(narrow.app.store.document("sites", "s3").await.expect("read").is_none());
        // A smaller edit of the same document goes through.
        let small = push_ok(&narrow, &d, json!([put(&key(), "sites", "s1", json!({"name": "Mill II"}), 1)]), 3).await;
        assert_eq!(small[0], json!({"status": "applied", "version": 2}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_body_past_4_mib_is_refused_whole() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let d = h.device("alice").await;
        let ops: Vec<Value> =
            (0..5).map(|i| put(&key(), "scans", &format!("p{i}"), json!({"data": "q".repeat(900_000)}), 0)).collect();
        let body = json!({ "ops": ops, "device_seq": 1 }).to_string();
        assert!(body.len() > 4 << 20);
        // Refused before the body is read whole, so before its signature is checked: unsigned.
        let r = h.send(&Signed::new(&d, "POST", "/v1/sync/push", body.as_bytes(), now()).raw()).await;
        assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
        assert!(h.app.store.document("scans", "p0").await.expect("read").is_none());
    }
}
