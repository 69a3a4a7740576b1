//! Push and pull over real TLS, each scenario on SQLite and PostgreSQL: idempotency, optimistic
//! concurrency, access rules and the leaks SPEC section 5 names, cursors, tombstones, purges
//! after a change of access, rollback detection.

use serde_json::{Value, json};

use crate::harness::{Backend, Device, Harness, access, backends, postgres};

/// A fresh idempotency key (a UUIDv7 made now, as the client makes them).
pub(crate) fn key() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    uuid7_at(ms)
}

fn uuid7_at(ms: u64) -> String {
    let mut r = [0u8; 10];
    aws_lc_rs::rand::fill(&mut r).expect("random");
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let variant = format!("{:x}", 0x8 | (r[2] & 0x3));
    format!("{:08x}-{:04x}-7{}-{}{}-{}", ms >> 16, ms & 0xffff, &hex[..3], variant, &hex[4..7], &hex[8..20])
}

pub(crate) fn put(key: &str, coll: &str, id: &str, body: Value, base: u64) -> Value {
    json!({ "idempotency_key": key, "collection": coll, "id": id, "op": "put", "body": body, "base_version": base })
}

pub(crate) fn delete(key: &str, coll: &str, id: &str, base: u64) -> Value {
    json!({ "idempotency_key": key, "collection": coll, "id": id, "op": "delete", "base_version": base })
}

/// Pushes and returns the results (asserting 200).
pub(crate) async fn push_ok(h: &Harness, d: &Device, ops: Value, seq: u64) -> Vec<Value> {
    let r = h.push(d, ops, seq).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"].as_array().expect("results").clone()
}

/// Pulls every page from `since`; (changes, final cursor).
pub(crate) async fn pull_all(h: &Harness, d: &Device, since: Option<String>, seq: u64) -> (Vec<Value>, String) {
    let mut since = since;
    let mut all = Vec::new();
    for _ in 0..100 {
        let r = h.pull(d, since.as_deref(), Some(2), seq).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        all.extend(v["changes"].as_array().expect("changes").iter().cloned());
        since = Some(v["cursor"].as_str().expect("cursor").to_owned());
        if !v["has_more"].as_bool().expect("has_more") {
            return (all, since.expect("cursor"));
        }
    }
    panic!("pull did not finish");
}

fn ids(changes: &[Value], op: &str) -> Vec<String> {
    let mut v: Vec<String> =
        changes.iter().filter(|c| c["op"] == op).map(|c| c["id"].as_str().expect("id").to_owned()).collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_applies_once_and_answers_retries_with_the_first_result() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let d = h.device("alice").await;
        let (k1, k2) = (key(), key());
        let ops = json!([
            put(&k1, "visits", "v1", json!({"site": "north"}), 0),
            put(&k2, "visits", "v2", json!({"n": 1}), 0)
        ]);
        let first = push_ok(&h, &d, ops.clone(), 1).await;
        assert_eq!(first[0], json!({"status": "applied", "version": 1}));
        assert_eq!(first[1], json!({"status": "applied", "version": 1}));
        // The same push again (a lost response): duplicates with the first results, nothing twice.
        let again = push_ok(&h, &d, ops, 1).await;
        assert_eq!(again[0], json!({"status": "duplicate", "first": {"status": "applied", "version": 1}}));
        // The same key with another op: mismatch, nothing applied.
        let other = push_ok(&h, &d, json!([put(&k1, "visits", "v1", json!({"site": "south"}), 1)]), 1).await;
        assert_eq!(other[0], json!({"status": "idempotency_mismatch"}));
        // The same op spelled differently (key order, whitespace, number form) is the same op.
        let raw = format!(
            r#"{{"device_seq": 1, "ops": [{{"base_version":0, "body": {{"n": 1.0e0}}, "op":"put", "id":"v2", "collection":"visits", "idempotency_key":"{k2}"}}]}}"#
        );
        let r = h.signed(&d, "POST", "/v1/sync/push", raw.as_bytes()).await;
        assert_eq!(r.json()["results"][0]["status"], "duplicate", "{}", r.text());
        // An update on the right base applies; a stale base conflicts with the stored version.
        let up = push_ok(&h, &d, json!([put(&key(), "visits", "v1", json!({"site": "east"}), 1)]), 2).await;
        assert_eq!(up[0], json!({"status": "applied", "version": 2}));
        let stale_key = key();
        let stale = push_ok(&h, &d, json!([put(&stale_key, "visits", "v1", json!({"site": "west"}), 1)]), 2).await;
        assert_eq!(stale[0], json!({"status": "conflict", "version": 2, "body": {"site": "east", "owner": "alice"}}));
        // A conflict is not recorded: the same key may be used once the op is rebased...
        // ...but SPEC says a resolution is a new op with a new key; the old key stays unused.
        let retry = push_ok(&h, &d, json!([put(&stale_key, "visits", "v1", json!({"site": "west"}), 1)]), 2).await;
        assert_eq!(retry[0]["status"], "conflict");
        // The owner is the server's: a body claiming another owner is forbidden.
        let claim = push_ok(&h, &d, json!([put(&key(), "visits", "v9", json!({"owner": "bob"}), 0)]), 2).await;
        assert_eq!(claim[0], json!({"status": "forbidden"}));
        // Delete with the right base leaves a tombstone at the next version.
        let del = push_ok(&h, &d, json!([delete(&key(), "visits", "v2", 1)]), 3).await;
        assert_eq!(del[0], json!({"status": "applied", "version": 2}));
        let (changes, _) = pull_all(&h, &d, None, 3).await;
        assert_eq!(ids(&changes, "put"), vec!["v1".to_owned()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_oversized_push_changes_nothing() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let d = h.device("alice").await;
        let good = put(&key(), "visits", "a", json!({"x": 1}), 0);
        for (ops, why) in [
            (json!([good.clone(), put("short", "visits", "b", json!({}), 0)]), "short key"),
            (json!([good.clone(), put(&key(), "bad name!", "b", json!({}), 0)]), "bad collection"),
            (json!([good.clone(), put(&key(), "visits", "b", json!([1, 2]), 0)]), "array body"),
            (
                json!([good.clone(), {"idempotency_key": key(), "collection": "visits", "id": "c", "op": "put", "body": {}, "base_version": 0, "extra": 1}]),
                "unknown field",
            ),
            (json!([good.clone(), put(&key(), "visits", &"x".repeat(300), json!({}), 0)]), "long id"),
        ] {
            let r = h.push(&d, ops, 1).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{why}");
        }
        let many: Vec<Value> = (0..501).map(|i| put(&key(), "visits", &format!("m{i}"), json!({}), 0)).collect();
        let r = h.push(&d, Value::Array(many), 1).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{}", r.text());
        let (changes, _) = pull_all(&h, &d, None, 1).await;
        assert!(changes.is_empty(), "nothing of a refused push was applied: {changes:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_only_without_rules_and_no_conflict_reveals_another_users_document() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (a, b) = (h.device("alice").await, h.device("bob").await);
        push_ok(&h, &a, json!([put(&key(), "visits", "secret", json!({"diagnosis": "x"}), 0)]), 1).await;
        // Bob updating Alice's document with a stale base must not learn its version or body.
        for op in [
            put(&key(), "visits", "secret", json!({"diagnosis": "y"}), 7),
            put(&key(), "visits", "secret", json!({"diagnosis": "y"}), 0),
            delete(&key(), "visits", "secret", 1),
            delete(&key(), "visits", "never-existed", 1),
            put(&key(), "visits", "never-existed", json!({}), 3),
        ] {
            let res = push_ok(&h, &b, json!([op]), 1).await;
            assert_eq!(res[0], json!({"status": "forbidden"}), "{op}");
        }
        // Bob pulls nothing of Alice's; Alice pulls her document, projected with its owner.
        let (bob_sees, _) = pull_all(&h, &b, None, 1).await;
        assert!(bob_sees.is_empty(), "{bob_sees:?}");
        let (alice_sees, _) = pull_all(&h, &a, None, 1).await;
        assert_eq!(
            alice_sees,
            vec![json!({"collection": "visits", "id": "secret", "op": "put", "version": 1,
            "body": {"diagnosis": "x", "owner": "alice"}})]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_pages_in_a_stable_order_with_per_user_cursors_and_tombstones() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (a, b) = (h.device("alice").await, h.device("bob").await);
        let ops: Vec<Value> = (0..5).map(|i| put(&key(), "notes", &format!("n{i}"), json!({"i": i}), 0)).collect();
        push_ok(&h, &a, Value::Array(ops), 1).await;
        let (first, cursor) = pull_all(&h, &a, None, 1).await;
        let order: Vec<&str> = first.iter().map(|c| c["id"].as_str().expect("id")).collect();
        assert_eq!(order, ["n0", "n1", "n2", "n3", "n4"]);
        // Nothing new: an empty page, same position.
        let r = h.pull(&a, Some(&cursor), None, 1).await;
        assert_eq!(r.json()["changes"], json!([]));
        // A delete reaches a second device of Alice's that holds the document, as a tombstone.
        let a2 = h.device("alice").await;
        let (_, c2) = pull_all(&h, &a2, None, 1).await;
        push_ok(&h, &a, json!([delete(&key(), "notes", "n3", 1)]), 2).await;
        let (after, _) = pull_all(&h, &a2, Some(c2), 2).await;
        assert_eq!(after, vec![json!({"collection": "notes", "id": "n3", "op": "delete"})]);
        // A device that never held it gets no tombstone (it never knew the document).
        let a3 = h.device("alice").await;
        let (fresh, _) = pull_all(&h, &a3, None, 1).await;
        assert_eq!(ids(&fresh, "put").len(), 4);
        assert!(ids(&fresh, "delete").is_empty());
        // Cursors are per user and authenticated.
        let r = h.pull(&b, Some(&cursor), None, 1).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
        let mut forged = cursor.clone().into_bytes();
        forged[3] ^= 1;
        let r = h.pull(&a, Some(std::str::from_utf8(&forged).expect("ascii")), None, 1).await;
        assert_eq!(r.status, 400);
        for bad in [
            "/v1/sync/pull",
            "/v1/sync/pull?device_seq=1&limit=0",
            "/v1/sync/pull?device_seq=1&limit=5001",
            "/v1/sync/pull?device_seq=1&device_seq=2",
            "/v1/sync/pull?device_seq=x",
            "/v1/sync/pull?device_seq=1&other=2",
        ] {
            let r = h.signed(&a, "GET", bad, b"").await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{bad}");
        }
    }
}

const REGION_RULES: &str = r#"
version = 1

[collections.sites]
read  = "doc.region == user.attributes.region || 'auditor' in user.roles"
write = "doc.region == user.attributes.region"
fields = ["name", "region", "status"]

[collections.audit]
server_only = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_refuse_moving_a_document_out_of_or_into_someones_scope() {
    for backend in backends() {
        let h = Harness::start_with_rules(backend, REGION_RULES).await;
        h.add_user_with("nina", &[], &["region=north"]).await;
        h.add_user_with("sam", &[], &["region=south"]).await;
        let (nina, sam) = (h.device("nina").await, h.device("sam").await);
        let made =
            push_ok(&h, &nina, json!([put(&key(), "sites", "s1", json!({"name": "Mill", "region": "north"}), 0)]), 1)
                .await;
        assert_eq!(made[0]["status"], "applied");
        // Out of her scope (north -> south): refused, the document stays north.
        let out =
            push_ok(&h, &nina, json!([put(&key(), "sites", "s1", json!({"name": "Mill", "region": "south"}), 1)]), 1)
                .await;
        assert_eq!(out[0], json!({"status": "forbidden"}));
        // Into someone else's scope from the start: refused.
        let into =
            push_ok(&h, &nina, json!([put(&key(), "sites", "s2", json!({"name": "Dock", "region": "south"}), 0)]), 1)
                .await;
        assert_eq!(into[0], json!({"status": "forbidden"}));
        // Sam (south) sees nothing of north and cannot touch it; a user without the attribute
        // is denied (the rule errors), never let through.
        let (sam_sees, _) = pull_all(&h, &sam, None, 1).await;
        assert!(sam_sees.is_empty(), "{sam_sees:?}");
        let bob = h.device("bob").await;
        let (bob_sees, _) = pull_all(&h, &bob, None, 1).await;
        assert!(bob_sees.is_empty());
        let res =
            push_ok(&h, &bob, json!([put(&key(), "sites", "s3", json!({"name": "x", "region": "north"}), 0)]), 1).await;
        assert_eq!(res[0]["status"], "forbidden");
        // Server-only collections and unknown collections: forbidden, never synced.
        let res = push_ok(
            &h,
            &nina,
            json!([
                put(&key(), "audit", "a1", json!({"region": "north"}), 0),
                put(&key(), "unnamed", "u1", json!({"region": "north"}), 0)
            ]),
            1,
        )
        .await;
        assert_eq!((res[0]["status"].clone(), res[1]["status"].clone()), (json!("forbidden"), json!("forbidden")));
        // A field outside the projection cannot be written by a device.
        let res = push_ok(
            &h,
            &nina,
            json!([put(&key(), "sites", "s1", json!({"name": "Mill", "region": "north", "cost": 5}), 1)]),
            1,
        )
        .await;
        assert_eq!(res[0]["status"], "forbidden");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projected_put_keeps_the_fields_devices_do_not_hold() {
    for backend in backends() {
        // Written under rules where every field syncs, then served under rules that hide `cost`.
        let open = REGION_RULES.replace("fields = [\"name\", \"region\", \"status\"]\n", "");
        let wide = Harness::start_with_rules(backend, &open).await;
        wide.add_user_with("nina", &[], &["region=north"]).await;
        let d = wide.device("nina").await;
        push_ok(
            &wide,
            &d,
            json!([put(&key(), "sites", "s1", json!({"name": "Mill", "region": "north", "cost": 900}), 0)]),
            1,
        )
        .await;
        let narrow = wide.sibling_with_rules(Some(REGION_RULES.to_owned())).await;
        let (seen, _) = pull_all(&narrow, &d, None, 1).await;
        assert_eq!(
            seen[0]["body"],
            json!({"name": "Mill", "region": "north", "owner": "nina"}),
            "cost is not projected"
        );
        let res = push_ok(
            &narrow,
            &d,
            json!([put(&key(), "sites", "s1", json!({"name": "Mill II", "region": "north"}), 1)]),
            1,
        )
        .await;
        assert_eq!(res[0], json!({"status": "applied", "version": 2}));
        let (seen, _) = pull_all(&wide, &d, None, 1).await;
        let last = seen.iter().rev().find(|c| c["id"] == "s1").expect("s1");
        assert_eq!(last["body"], json!({"name": "Mill II", "region": "north", "cost": 900, "owner": "nina"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_attributes_or_rules_purges_what_the_device_may_no_longer_hold() {
    for backend in backends() {
        let h = Harness::start_with_rules(backend, REGION_RULES).await;
        h.add_user_with("nina", &[], &["region=north"]).await;
        h.add_user_with("sam", &[], &["region=south"]).await;
        let (nina, sam) = (h.device("nina").await, h.device("sam").await);
        push_ok(&h, &nina, json!([put(&key(), "sites", "n1", json!({"name": "A", "region": "north"}), 0)]), 1).await;
        push_ok(&h, &sam, json!([put(&key(), "sites", "s1", json!({"name": "B", "region": "south"}), 0)]), 1).await;
        let (held, cursor) = pull_all(&h, &nina, None, 1).await;
        assert_eq!(ids(&held, "put"), vec!["n1".to_owned()]);
        // Nina moves to the south: her next pull drops n1 and brings s1, from her old cursor.
        let access = access(&[], &["region=south"]);
        fieldvault_server::accounts::set_access(&h.app.store, "cli:test", "nina", &access, 0)
            .await
            .expect("set access");
        let (after, cursor) = pull_all(&h, &nina, Some(cursor), 2).await;
        assert_eq!(ids(&after, "delete"), vec!["n1".to_owned()]);
        assert_eq!(ids(&after, "put"), vec!["s1".to_owned()]);
        // Nothing more to say at the new position.
        let (quiet, _) = pull_all(&h, &nina, Some(cursor.clone()), 2).await;
        assert!(quiet.is_empty(), "{quiet:?}");
        // A new rules file in which sites are server-only purges s1 from her device.
        let locked = REGION_RULES.replace("[collections.sites]\nread", "[collections.sitez]\nread");
        let h2 = h.sibling_with_rules(Some(locked)).await;
        let (purged, _) = pull_all(&h2, &nina, Some(cursor), 3).await;
        assert_eq!(ids(&purged, "delete"), vec!["s1".to_owned()]);
        assert!(ids(&purged, "put").is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_taken_away_purges_a_document_changed_after_the_cursor() {
    // The old cursor's scan must not release what the device holds and then be thrown
    // away for the restart from the beginning, which would then find nothing held.
    for backend in backends() {
        let h = Harness::start_with_rules(backend, REGION_RULES).await;
        h.add_user_with("nina", &[], &["region=north"]).await;
        h.add_user_with("ann", &["auditor"], &["region=south"]).await;
        let (nina, ann) = (h.device("nina").await, h.device("ann").await);
        push_ok(&h, &nina, json!([put(&key(), "sites", "n1", json!({"name": "A", "region": "north"}), 0)]), 1).await;
        let (held, cursor) = pull_all(&h, &ann, None, 1).await;
        assert_eq!(ids(&held, "put"), vec!["n1".to_owned()]);
        fieldvault_server::accounts::set_access(&h.app.store, "cli:test", "ann", &access(&[], &["region=south"]), 0)
            .await
            .expect("set access");
        push_ok(&h, &nina, json!([put(&key(), "sites", "n1", json!({"name": "A2", "region": "north"}), 1)]), 2).await;
        let (after, _) = pull_all(&h, &ann, Some(cursor), 2).await;
        assert_eq!(ids(&after, "delete"), vec!["n1".to_owned()], "{after:?}");
        assert!(ids(&after, "put").is_empty(), "{after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_carries_up_to_500_ops_as_the_protocol_says() {
    let h = Harness::start(backends().remove(0)).await;
    let d = h.device("alice").await;
    let ops = |n: usize, from: usize| -> Value {
        (from..from + n).map(|i| put(&key(), "bulk", &format!("b{i}"), json!({"i": i}), 0)).collect()
    };
    let r = h.push(&d, ops(501, 0), 1).await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{}", r.text());
    let res = push_ok(&h, &d, ops(500, 0), 1).await;
    assert_eq!(res.len(), 500);
    assert!(res.iter().all(|r| r["status"] == "applied"), "{res:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_seq_going_backwards_is_rollback_detected_and_changes_nothing() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let (d, e) = (h.device("alice").await, h.device("alice").await);
        push_ok(&h, &d, json!([put(&key(), "visits", "v1", json!({"x": 1}), 0)]), 5).await;
        push_ok(&h, &e, json!([]), 5).await;
        // The same counter again is fine (several requests of one sync).
        assert_eq!(h.pull(&d, None, None, 5).await.status, 200);
        let r = h.pull(&d, None, None, 4).await;
        assert_eq!((r.status, r.code().as_str()), (409, "rollback_detected"));
        let k = key();
        let r = h.push(&e, json!([put(&k, "visits", "v2", json!({"x": 2}), 0)]), 4).await;
        assert_eq!((r.status, r.code().as_str()), (409, "rollback_detected"));
        // Both devices are retired: their sessions end (a rolled-back copy stops syncing).
        for x in [&d, &e] {
            let r = h.pull(x, None, None, 5).await;
            assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
        }
        // The refused op was not recorded: from the device that took over, it applies.
        let next = h.device_again("alice", &e).await;
        let res = push_ok(&h, &next, json!([put(&k, "visits", "v2", json!({"x": 2}), 0)]), 1).await;
        assert_eq!(res[0]["status"], "applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_older_than_the_idempotency_retention_is_expired() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let d = h.device("alice").await;
        let retention_ms = h.app.config.idempotency_retention() * 1000;
        let now_ms = crate::harness::now() * 1000;
        let old = uuid7_at(now_ms - retention_ms - 86_400_000);
        let res = push_ok(&h, &d, json!([put(&old, "visits", "old", json!({}), 0)]), 1).await;
        assert_eq!(res[0], json!({"status": "expired"}));
        // Just inside the retention it applies.
        let recent = uuid7_at(now_ms - retention_ms + 86_400_000);
        let res = push_ok(&h, &d, json!([put(&recent, "visits", "old", json!({}), 0)]), 1).await;
        assert_eq!(res[0]["status"], "applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_that_is_not_a_uuid_v7_is_refused_and_nothing_applied() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let d = h.device("alice").await;
        let v7 = key();
        for (bad, why) in [
            ("k-0123456789abcdef".to_owned(), "no date"),
            (format!("{}4{}", &v7[..14], &v7[15..]), "version 4"),
            (format!("{}c{}", &v7[..19], &v7[20..]), "wrong variant"),
            (v7.replace('-', ""), "no dashes"),
        ] {
            let ops = json!([put(&key(), "visits", "a", json!({}), 0), put(&bad, "visits", "b", json!({}), 0)]);
            let r = h.push(&d, ops, 1).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{why}: {}", r.text());
            assert!(r.json()["detail"].as_str().expect("detail").contains("UUIDv7"), "{}", r.text());
        }
        let (changes, _) = pull_all(&h, &d, None, 1).await;
        assert!(changes.is_empty(), "{changes:?}");
    }
}

/// Pushes at `at` by the server's clock (frozen there), signed at that time; the results.
async fn push_at(h: &Harness, d: &Device, ops: Value, seq: u64, at: u64) -> Vec<Value> {
    h.frozen.store(at, std::sync::atomic::Ordering::SeqCst);
    let body = json!({ "ops": ops, "device_seq": seq }).to_string();
    let req = crate::harness::Signed::new(d, "POST", "/v1/sync/push", body.as_bytes(), at);
    let r = h.send(&req.raw()).await;
    r.verify(&d.secret, &req.nonce).expect("a signed response");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["results"].as_array().expect("results").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_dated_ahead_keeps_its_record_until_a_retry_is_expired() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let t0 = crate::harness::now();
        let retention = h.app.config.idempotency_retention();
        h.frozen.store(t0, std::sync::atomic::Ordering::SeqCst);
        let d = h.device("alice").await;
        // A key dated an hour after the server receives it (a device clock that jumped back).
        let ahead = uuid7_at((t0 + 3_600) * 1000);
        let op = json!([put(&ahead, "visits", "v1", json!({"n": 1}), 0)]);
        assert_eq!(push_at(&h, &d, op.clone(), 1, t0).await[0], json!({"status": "applied", "version": 1}));
        // Past the retention counted from receipt, but not from the key's date: the purge
        // `serve` runs keeps the record, so a late retry is answered, not applied again.
        let late = t0 + retention + 1_800;
        h.frozen.store(late, std::sync::atomic::Ordering::SeqCst);
        h.app.purge().await.expect("purge");
        let d = h.device("alice").await;
        assert_eq!(
            push_at(&h, &d, op.clone(), 1, late).await[0],
            json!({"status": "duplicate", "first": {"status": "applied", "version": 1}})
        );
        // Once the record is gone, the key's date is past the retention: expired.
        let later = t0 + retention + 86_400 + 3_600 + 120;
        h.frozen.store(later, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(h.app.purge().await.expect("purge").1, 1, "the record's life is bounded");
        let d = h.device("alice").await;
        assert_eq!(push_at(&h, &d, op, 1, later).await[0], json!({"status": "expired"}));
        // A key dated more than a day ahead of the server is refused: it would outlive its record.
        let far = uuid7_at((later + 86_400 + 60) * 1000);
        let body = json!({ "ops": [put(&far, "visits", "v2", json!({}), 0)], "device_seq": 2 }).to_string();
        let req = crate::harness::Signed::new(&d, "POST", "/v1/sync/push", body.as_bytes(), later);
        let r = h.send(&req.raw()).await;
        assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{}", r.text());
        assert!(r.json()["detail"].as_str().expect("detail").contains("ahead"), "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_idempotency_and_rollback_state() {
    let Some(pg) = postgres() else { return };
    let a = Harness::start(pg).await;
    let b = a.sibling().await;
    let d = a.device("alice").await;
    let k = key();
    let op = json!([put(&k, "visits", "v1", json!({"x": 1}), 0)]);
    assert_eq!(push_ok(&a, &d, op.clone(), 3).await[0]["status"], "applied");
    // The retry lands on the other instance: a duplicate, not a second write.
    assert_eq!(push_ok(&b, &d, op, 3).await[0]["status"], "duplicate");
    // Concurrent pushes of one key from both instances: exactly one applies.
    let k2 = key();
    let op2 = json!([put(&k2, "visits", "v2", json!({"x": 2}), 0)]);
    let (r1, r2) = tokio::join!(a.push(&d, op2.clone(), 4), b.push(&d, op2, 4));
    let mut applied = 0;
    for r in [r1, r2] {
        match r.status {
            200 => {
                let status = r.json()["results"][0]["status"].clone();
                assert!(status == "applied" || status == "duplicate", "{status}");
                applied += usize::from(status == "applied");
            }
            409 => assert_eq!(r.code(), "rate_limited"),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert_eq!(applied, 1);
    // A rollback seen by one instance retires the device for both.
    let r = b.pull(&d, None, None, 2).await;
    assert_eq!((r.status, r.code().as_str()), (409, "rollback_detected"));
    let r = a.pull(&d, None, None, 4).await;
    assert_eq!((r.status, r.code().as_str()), (401, "invalid_token"));
    let r = a.relogin("alice", &d).await;
    assert_eq!((r.status, r.json()["device_reason"].as_str()), (200, Some("rollback")), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_use_by_another_request_is_409_and_nothing_applies() {
    let Some(Backend::Postgres { url, schema }) = postgres() else { return };
    let h = Harness::start(Backend::Postgres { url: url.clone(), schema }).await;
    let d = h.device("alice").await;
    let k = key();
    // Another instance's transaction is using the key: it holds the advisory lock.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
    let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(fieldvault_server::idempotency_lock_id("alice", &k))
        .execute(&mut *tx)
        .await
        .expect("lock");
    let op = json!([put(&k, "visits", "v1", json!({"x": 1}), 0)]);
    let r = h.push(&d, op.clone(), 1).await;
    assert_eq!((r.status, r.code().as_str()), (409, "rate_limited"));
    assert_eq!(r.header("retry-after"), Some("1"));
    tx.rollback().await.expect("rollback");
    assert_eq!(push_ok(&h, &d, op, 1).await[0], json!({"status": "applied", "version": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_owner_only_rules_devices_drop_what_others_own_and_skip_it_afterwards() {
    for backend in backends() {
        let shared = "version = 1\n[collections.notes]\nread = \"true\"\nwrite = \"doc.owner == user.id\"\n";
        let h = Harness::start_with_rules(backend, shared).await;
        let (alice, bob) = (h.device("alice").await, h.device("bob").await);
        let ops: Vec<Value> = (0..3).map(|i| put(&key(), "notes", &format!("a{i}"), json!({"i": i}), 0)).collect();
        push_ok(&h, &alice, Value::Array(ops), 1).await;
        push_ok(&h, &bob, json!([put(&key(), "notes", "b0", json!({}), 0)]), 1).await;
        let (held, cursor) = pull_all(&h, &bob, None, 1).await;
        assert_eq!(ids(&held, "put"), ["a0", "a1", "a2", "b0"]);
        // The same store without a rules file: Bob's device drops Alice's notes, keeps his.
        let own = h.sibling_with_rules(None).await;
        let (after, cursor) = pull_all(&own, &bob, Some(cursor), 2).await;
        assert_eq!(ids(&after, "delete"), ["a0", "a1", "a2"]);
        assert_eq!(ids(&after, "put"), ["b0"]);
        // Alice keeps writing; Bob's pulls skip it and end at once.
        push_ok(&own, &alice, json!([put(&key(), "notes", "a9", json!({}), 0)]), 2).await;
        let r = own.pull(&bob, Some(&cursor), Some(1), 3).await;
        assert_eq!((r.json()["changes"].clone(), r.json()["has_more"].clone()), (json!([]), json!(false)));
        let (alice_sees, _) = pull_all(&own, &alice, None, 3).await;
        assert_eq!(ids(&alice_sees, "put"), ["a0", "a1", "a2", "a9"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_changed_out_of_a_users_reach_is_dropped_from_their_device() {
    for backend in backends() {
        let rules = "version = 1\n[collections.sites]\n\
            read = \"'supervisor' in user.roles || doc.region == user.attributes.region\"\n\
            write = \"'supervisor' in user.roles\"\n";
        let h = Harness::start_with_rules(backend, rules).await;
        h.add_user_with("nina", &[], &["region=north"]).await;
        h.add_user_with("sue", &["supervisor"], &[]).await;
        let (nina, sue) = (h.device("nina").await, h.device("sue").await);
        push_ok(
            &h,
            &sue,
            json!([
                put(&key(), "sites", "s1", json!({"region": "north"}), 0),
                put(&key(), "sites", "s2", json!({"region": "north"}), 0)
            ]),
            1,
        )
        .await;
        let (held, cursor) = pull_all(&h, &nina, None, 1).await;
        assert_eq!(ids(&held, "put"), ["s1", "s2"]);
        // The supervisor moves s1 to the south: Nina's device is told to drop it, and keeps s2.
        let moved = push_ok(&h, &sue, json!([put(&key(), "sites", "s1", json!({"region": "south"}), 1)]), 2).await;
        assert_eq!(moved[0], json!({"status": "applied", "version": 2}));
        let (after, cursor) = pull_all(&h, &nina, Some(cursor), 2).await;
        assert_eq!(after, vec![json!({"collection": "sites", "id": "s1", "op": "delete"})]);
        // Moved back, it comes back.
        push_ok(&h, &sue, json!([put(&key(), "sites", "s1", json!({"region": "north"}), 2)]), 3).await;
        let (back, _) = pull_all(&h, &nina, Some(cursor), 3).await;
        assert_eq!(ids(&back, "put"), ["s1"]);
        assert_eq!(back[0]["version"], 3);
    }
}

/// Rules under which anyone reads and writes any note: the write rule does not pin the owner.
const OPEN_NOTES: &str = r#"
version = 1

[collections.notes]
read  = "true"
write = "true"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_recreated_over_a_tombstone_is_a_new_incarnation_owned_by_its_creator() {
    for rules in [None, Some(OPEN_NOTES)] {
        for backend in backends() {
            let h = match rules {
                Some(r) => Harness::start_with_rules(backend, r).await,
                None => Harness::start(backend).await,
            };
            let (alice, alice2) = (h.device("alice").await, h.device("alice").await);
            let (bob, bob2) = (h.device("bob").await, h.device("bob").await);
            push_ok(&h, &alice, json!([put(&key(), "notes", "x", json!({"text": "alice's"}), 0)]), 1).await;
            let (_, alice2_cursor) = pull_all(&h, &alice2, None, 1).await;
            let del = push_ok(&h, &alice, json!([delete(&key(), "notes", "x", 1)]), 2).await;
            assert_eq!(del[0], json!({"status": "applied", "version": 2}));
            // Bob creates notes/x anew: its versions continue from the tombstone's.
            let made = push_ok(&h, &bob, json!([put(&key(), "notes", "x", json!({"text": "bob's"}), 0)]), 1).await;
            assert_eq!(made[0], json!({"status": "applied", "version": 3}), "{rules:?}");
            let stored = h.app.store.document("notes", "x").await.expect("read").expect("stored");
            assert_eq!((stored.owner.as_str(), &stored.body), ("bob", &json!({"text": "bob's", "owner": "bob"})));
            // It is Bob's: he updates it, and his other device receives it.
            let up = push_ok(&h, &bob, json!([put(&key(), "notes", "x", json!({"text": "bob's, again"}), 3)]), 2).await;
            assert_eq!(up[0], json!({"status": "applied", "version": 4}), "{rules:?}");
            let (seen, _) = pull_all(&h, &bob2, None, 1).await;
            let last = seen.iter().rev().find(|c| c["id"] == "x").expect("x");
            assert_eq!(last["body"], json!({"text": "bob's, again", "owner": "bob"}));
            assert_eq!(last["version"], 4);
            // A base_version of the old incarnation never matches the new one.
            let stale = push_ok(&h, &alice, json!([put(&key(), "notes", "x", json!({"text": "old"}), 1)]), 3).await;
            let (alice_sees, _) = pull_all(&h, &alice2, Some(alice2_cursor), 2).await;
            if rules.is_none() {
                // Owner-only: nothing of Bob's reaches Alice; her device drops her old copy.
                assert_eq!(stale[0], json!({"status": "forbidden"}));
                assert_eq!(ids(&alice_sees, "delete"), vec!["x".to_owned()], "{alice_sees:?}");
                assert!(ids(&alice_sees, "put").is_empty(), "{alice_sees:?}");
            } else {
                assert_eq!(stale[0]["status"], "conflict");
                assert_eq!(stale[0]["version"], 4);
                let last = alice_sees.iter().rev().find(|c| c["id"] == "x").expect("x");
                assert_eq!(last["body"]["owner"], "bob", "{alice_sees:?}");
            }
        }
    }
}

/// Attachment id `n`: 32 lowercase hex digits.
fn att(n: u32) -> String {
    format!("{n:032x}")
}

/// `op` with this attachment list, as sent.
fn with_list(mut op: Value, ids: Value) -> Value {
    op["attachments"] = ids;
    op
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attachment_list_travels_with_the_document_and_a_put_without_one_keeps_it() {
    for backend in backends() {
        let h = Harness::start_with_rules(backend, OPEN_NOTES).await;
        let (a, a2, b) = (h.device("alice").await, h.device("alice").await, h.device("bob").await);
        let k = key();
        let made = with_list(put(&k, "notes", "n1", json!({"text": "x"}), 0), json!([att(1), att(2)]));
        assert_eq!(push_ok(&h, &a, json!([made.clone()]), 1).await[0], json!({"status": "applied", "version": 1}));
        // The list beside the body, never in it; to every reader.
        let (seen, cursor) = pull_all(&h, &a2, None, 1).await;
        assert_eq!(
            seen,
            vec![json!({"collection": "notes", "id": "n1", "op": "put", "version": 1,
                "body": {"text": "x", "owner": "alice"}, "attachments": [att(1), att(2)]})]
        );
        let (bob_sees, _) = pull_all(&h, &b, None, 1).await;
        assert_eq!(bob_sees[0]["attachments"], json!([att(1), att(2)]));
        // The same key with another list is another op.
        let other = with_list(put(&k, "notes", "n1", json!({"text": "x"}), 0), json!([att(1)]));
        assert_eq!(push_ok(&h, &a, json!([other]), 2).await[0], json!({"status": "idempotency_mismatch"}));
        assert_eq!(push_ok(&h, &a, json!([made]), 2).await[0]["status"], "duplicate");

        // A put without a list (a device written before the field) keeps the stored one.
        let up = push_ok(&h, &a, json!([put(&key(), "notes", "n1", json!({"text": "y"}), 1)]), 3).await;
        assert_eq!(up[0], json!({"status": "applied", "version": 2}));
        let (seen, cursor) = pull_all(&h, &a2, Some(cursor), 2).await;
        assert_eq!((seen[0]["version"].clone(), seen[0]["attachments"].clone()), (json!(2), json!([att(1), att(2)])));
        assert_eq!(
            h.app.store.document("notes", "n1").await.expect("read").expect("doc").attachments,
            [att(1), att(2)]
        );

        // A stale base (Bob's, here) is a conflict carrying the server's list.
        let stale = with_list(put(&key(), "notes", "n1", json!({"text": "z"}), 1), json!([att(3)]));
        let res = push_ok(&h, &b, json!([stale]), 1).await;
        assert_eq!(
            res[0],
            json!({"status": "conflict", "version": 2, "body": {"text": "y", "owner": "alice"},
                "attachments": [att(1), att(2)]})
        );
        // An empty list empties it (absent on the wire when empty).
        let emptied = with_list(put(&key(), "notes", "n1", json!({"text": "y"}), 2), json!([]));
        assert_eq!(push_ok(&h, &b, json!([emptied]), 2).await[0]["status"], "applied");
        let (seen, _) = pull_all(&h, &a2, Some(cursor), 3).await;
        assert_eq!(seen[0]["version"], 3);
        assert!(seen[0].get("attachments").is_none(), "{}", seen[0]);

        // A deleted document shows no list in its conflict.
        assert_eq!(push_ok(&h, &a, json!([delete(&key(), "notes", "n1", 3)]), 4).await[0]["status"], "applied");
        let res = push_ok(&h, &b, json!([put(&key(), "notes", "n1", json!({}), 3)]), 3).await;
        assert_eq!(res[0], json!({"status": "conflict", "version": 4, "deleted": true}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_attachment_list_refuses_the_whole_push() {
    for backend in backends() {
        let h = Harness::start(backend).await;
        let d = h.device("alice").await;
        let good = put(&key(), "visits", "a", json!({}), 0);
        for (op, why) in [
            (with_list(put(&key(), "visits", "b", json!({}), 0), json!([att(2), att(1)])), "unsorted"),
            (with_list(put(&key(), "visits", "b", json!({}), 0), json!([att(1), att(1)])), "twice"),
            (with_list(put(&key(), "visits", "b", json!({}), 0), json!(["ABC"])), "not an id"),
            (with_list(put(&key(), "visits", "b", json!({}), 0), json!(att(1))), "not a list"),
            (
                with_list(put(&key(), "visits", "b", json!({}), 0), json!((0..1001).map(att).collect::<Vec<_>>())),
                "too many",
            ),
            (with_list(delete(&key(), "visits", "b", 1), json!([att(1)])), "a delete with a list"),
        ] {
            let r = h.push(&d, json!([good.clone(), op]), 1).await;
            assert_eq!((r.status, r.code().as_str()), (400, "bad_request"), "{why}: {}", r.text());
            assert!(r.json()["detail"].as_str().expect("detail").starts_with("op 1: "), "{why}: {}", r.text());
        }
        let (changes, _) = pull_all(&h, &d, None, 1).await;
        assert!(changes.is_empty(), "nothing of a refused push was applied: {changes:?}");
    }
}
