//! Unit tests of the push and pull logic.

use serde_json::{Map, Value, json};

use super::*;
use crate::rules::{RuleUser, Rules};

fn user(id: &str) -> RuleUser {
    RuleUser { id: id.into(), roles: vec![], attributes: Map::new() }
}

fn op(kind: &str, base: u64, body: Option<Value>) -> PushOp {
    let mut v = json!({ "idempotency_key": "0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5f", "collection": "visits", "id": "v1",
        "op": kind, "base_version": base });
    if let Some(b) = body {
        v["body"] = b;
    }
    check_op(&v).expect("valid op").op
}

fn stored(owner: &str, version: u64, deleted: bool, body: Value) -> StoredDoc {
    StoredDoc { owner: owner.into(), version, deleted, body, attachments: vec![] }
}

#[test]
fn the_fingerprint_ignores_key_order_spacing_number_spelling_and_the_key_itself() {
    let a: Value = serde_json::from_str(
        r#"{"idempotency_key":"0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5f","collection":"c","id":"x","op":"put","body":{"n":1,"s":"é"},"base_version":0}"#,
    )
    .expect("json");
    let b: Value = serde_json::from_str(
        r#"{ "base_version": 0, "body": {"s": "\u00e9", "n": 1.0e0}, "op": "put", "id": "x", "collection": "c", "idempotency_key": "0190f3c2-7b1e-7000-8000-000000000000" }"#,
    )
    .expect("json");
    assert_eq!(check_op(&a).expect("a").fingerprint, check_op(&b).expect("b").fingerprint);
    let mut c = a.clone();
    c["body"]["n"] = json!(2);
    assert_ne!(check_op(&a).expect("a").fingerprint, check_op(&c).expect("c").fingerprint);
}

#[test]
fn malformed_ops_are_refused_with_the_reason() {
    let base = json!({ "idempotency_key": "0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5f", "collection": "visits", "id": "v1",
        "op": "put", "body": {}, "base_version": 0 });
    let cases: [(&str, Value); 11] = [
        ("idempotency_key", json!("short")),
        ("idempotency_key", json!("k-0123456789abcdef with spaces")),
        ("idempotency_key", json!("k-0123456789abcdef")),
        ("idempotency_key", json!("0190f3c2-7b1e-4c3a-9f00-5a1b2c3d4e5f")),
        ("idempotency_key", json!("0190f3c27b1e7c3a9f005a1b2c3d4e5f")),
        ("collection", json!(".hidden")),
        ("id", json!("a\u{0}b")),
        ("op", json!("patch")),
        ("body", json!([1])),
        ("base_version", json!(-1)),
        ("extra", json!(true)),
    ];
    for (field, value) in cases {
        let mut v = base.clone();
        v[field] = value;
        assert!(check_op(&v).is_err(), "{field}");
    }
    let mut leaky = base.clone();
    leaky["base_version"] = json!("patient Jane Roe, HIV+");
    let err = check_op(&leaky).expect_err("a string base_version");
    assert!(!err.0.contains("Jane"), "the value is not echoed: {err}");
    let mut unknown = base.clone();
    unknown["extra"] = json!(1);
    assert_eq!(check_op(&unknown).expect_err("unknown").0, "malformed op: unknown field \"extra\"");
    let mut del = base.clone();
    del["op"] = json!("delete");
    assert!(check_op(&del).is_err(), "a delete with a body");
    del["body"] = Value::Null;
    assert!(check_op(&del).is_ok());
    assert!(check_op(&json!([])).is_err());
}

#[test]
fn uuid_v7_keys_carry_their_time_and_other_keys_none() {
    assert_eq!(uuid_v7_time("0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5f"), Some(0x0190_f3c2_7b1e / 1000));
    assert_eq!(uuid_v7_time("0190f3c2-7b1e-4c3a-9f00-5a1b2c3d4e5f"), None, "version 4");
    assert_eq!(uuid_v7_time("0190f3c2-7b1e-7c3a-cf00-5a1b2c3d4e5f"), None, "wrong variant");
    assert_eq!(uuid_v7_time("0190f3c27b1e7c3a9f005a1b2c3d4e5f"), None, "no dashes");
    assert_eq!(uuid_v7_time("0190f3c2-7b1e-7c3a-9f00-5a1b2c3d4e5g"), None);
}

#[test]
fn decisions_follow_the_table_and_never_reveal_an_unreadable_document() {
    let rules = Rules::owner_only();
    let (alice, bob) = (user("alice"), user("bob"));
    let live = stored("alice", 3, false, json!({"owner": "alice", "x": 1}));
    let gone = stored("alice", 4, true, tombstone_body("alice"));
    // Creates.
    match decide(&rules, &alice, &op("put", 0, Some(json!({"x": 1}))), None) {
        Decision::Apply { version: 1, owner, body, deleted: false, .. } => {
            assert_eq!((owner.as_str(), body), ("alice", json!({"x": 1, "owner": "alice"})));
        }
        d => panic!("{d:?}"),
    }
    assert!(matches!(
        decide(&rules, &bob, &op("put", 0, Some(json!({}))), Some(&gone)),
        Decision::Apply { version: 5, .. }
    ));
    // Another user's document: forbidden whatever the base or the op.
    for o in [
        op("put", 3, Some(json!({}))),
        op("put", 9, Some(json!({}))),
        op("put", 0, Some(json!({}))),
        op("delete", 3, None),
    ] {
        assert_eq!(decide(&rules, &bob, &o, Some(&live)), Decision::Forbidden, "{o:?}");
    }
    // Absent with a base, or a delete of nothing: forbidden too.
    assert_eq!(decide(&rules, &alice, &op("put", 2, Some(json!({}))), None), Decision::Forbidden);
    assert_eq!(decide(&rules, &alice, &op("delete", 0, None), None), Decision::Forbidden);
    // Own document: conflict shows the stored version projected; a tombstone as deleted.
    match decide(&rules, &alice, &op("put", 2, Some(json!({"x": 2}))), Some(&live)) {
        Decision::Conflict(r) => {
            assert_eq!((r.version, r.body, r.deleted), (Some(3), Some(json!({"owner": "alice", "x": 1})), false))
        }
        d => panic!("{d:?}"),
    }
    match decide(&rules, &alice, &op("delete", 3, None), Some(&gone)) {
        Decision::Conflict(r) => assert_eq!((r.version, r.body, r.deleted), (Some(4), None, true)),
        d => panic!("{d:?}"),
    }
    // Right base: applied; a delete leaves only the owner.
    assert!(matches!(
        decide(&rules, &alice, &op("put", 3, Some(json!({"x": 2}))), Some(&live)),
        Decision::Apply { version: 4, deleted: false, .. }
    ));
    match decide(&rules, &alice, &op("delete", 3, None), Some(&live)) {
        Decision::Apply { version: 4, deleted: true, body, .. } => assert_eq!(body, json!({"owner": "alice"})),
        d => panic!("{d:?}"),
    }
    // The owner is the server's.
    assert_eq!(decide(&rules, &alice, &op("put", 3, Some(json!({"owner": "bob"}))), Some(&live)), Decision::Forbidden);
    assert!(matches!(
        decide(&rules, &alice, &op("put", 3, Some(json!({"owner": "alice"}))), Some(&live)),
        Decision::Apply { .. }
    ));
}

/// A UUIDv7 key dated 2023-11-14, told apart by `n`.
fn key(n: u8) -> String {
    uuid_v7(1_700_000_000_000, [n; 10])
}

fn checked(key: &str, id: &str, kind: &str, base: u64, body: Option<Value>) -> CheckedOp {
    let mut v = json!({ "idempotency_key": key, "collection": "visits", "id": id, "op": kind, "base_version": base });
    if let Some(b) = body {
        v["body"] = b;
    }
    check_op(&v).expect("valid op")
}

#[test]
fn a_plan_sees_earlier_ops_of_its_own_push_and_writes_each_document_once() {
    use std::collections::HashMap;
    let rules = Rules::owner_only();
    let alice = user("alice");
    let ops = [
        checked(&key(1), "a", "put", 0, Some(json!({"n": 1}))),
        checked(&key(2), "a", "put", 1, Some(json!({"n": 2}))),
        checked(&key(1), "a", "put", 0, Some(json!({"n": 1}))),
        checked(&key(3), "b", "delete", 4, None),
        checked(&key(4), "a", "put", 1, Some(json!({"n": 3}))),
        checked(&key(5), "c", "put", 0, Some(json!({"owner": "bob"}))),
    ];
    let mut documents = HashMap::new();
    documents.insert(("visits".into(), "b".into()), stored("alice", 4, false, json!({"owner": "alice"})));
    let mut records = HashMap::new();
    let old =
        IdempotencyRecord { fingerprint: [9; 32], first: FirstResult { status: OpStatus::Applied, version: Some(1) } };
    records.insert(key(4), old);
    let plan = plan_push(&rules, &alice, &ops, &documents, &records, 0, 100);
    let statuses: Vec<OpStatus> = plan.results.iter().map(|r| r.status).collect();
    use OpStatus::*;
    assert_eq!(statuses, [Applied, Applied, Duplicate, Applied, IdempotencyMismatch, Forbidden]);
    assert_eq!(plan.results[1].version, Some(2));
    assert_eq!(plan.results[2].first, Some(FirstResult { status: Applied, version: Some(1) }));
    // "a" is written once, at its last state and the number of its last change.
    let a = plan.documents.iter().find(|d| d.id == "a").expect("a");
    assert_eq!((a.version, a.seq, &a.body), (2, 101, &json!({"n": 2, "owner": "alice"})));
    let b = plan.documents.iter().find(|d| d.id == "b").expect("b");
    assert_eq!((b.version, b.deleted, b.seq), (5, true, 102));
    assert_eq!(plan.documents.len(), 2);
    assert_eq!(plan.next_seq, 103);
    assert_eq!(plan.held, [("visits".to_owned(), "a".to_owned())]);
    assert_eq!(plan.dropped, [("visits".to_owned(), "b".to_owned())]);
    assert_eq!(plan.drop_attachments, [AttachmentDrop::Document { collection: "visits".into(), id: "b".into() }]);
    // Recorded: the three applied and the forbidden, each key once; not the mismatch.
    let keys: Vec<&str> = plan.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, [key(1), key(2), key(3), key(5)]);
}

/// The changes of a planned page, as the device reads them.
fn answer_changes(plan: PullPlan) -> Vec<Change> {
    let bytes = plan.answer.finish("c1", false);
    let page: PullResponse = serde_json::from_slice(&bytes).expect("the answer is a pull response");
    assert_eq!((page.cursor.as_str(), page.has_more), ("c1", false));
    page.changes
}

fn pull_row(id: &str, seq: u64, owner: &str, deleted: bool, body: Value) -> PullRow {
    let body = if deleted { tombstone_body(owner) } else { body };
    PullRow { collection: "visits".into(), id: id.into(), seq, doc: stored(owner, 2, deleted, body) }
}

#[test]
fn a_pull_plan_sends_what_is_readable_and_tombstones_only_what_the_device_holds() {
    use std::collections::HashSet;
    let rules = Rules::owner_only();
    let alice = user("alice");
    let row = |id: &str, seq: u64, owner: &str, deleted: bool| {
        pull_row(id, seq, owner, deleted, json!({"owner": owner, "n": 1}))
    };
    let rows = vec![
        row("mine", 1, "alice", false),
        row("mine-held", 2, "alice", false),
        row("gone-held", 3, "alice", true),
        row("gone-never-held", 4, "alice", true),
        row("bobs-held", 5, "bob", false),
        row("bobs-never-held", 6, "bob", false),
    ];
    let held: HashSet<(String, String)> =
        ["mine-held", "gone-held", "bobs-held"].iter().map(|id| ("visits".to_owned(), (*id).to_owned())).collect();
    let plan = plan_pull(&rules, &alice, rows, &held, MAX_PULL_CHANGE_BYTES);
    assert_eq!(plan.hold, [("visits".to_owned(), "mine".to_owned())], "only what was not held yet");
    let released: Vec<(&str, u64)> = plan.release.iter().map(|(_, id, seq)| (id.as_str(), *seq)).collect();
    assert_eq!(released, [("gone-held", 3), ("bobs-held", 5)]);
    assert_eq!((plan.cut_after, plan.answer.count()), (None, 4));
    let changes = answer_changes(plan);
    let shown: Vec<(&str, OpKind)> = changes.iter().map(|c| (c.id.as_str(), c.op)).collect();
    assert_eq!(
        shown,
        [
            ("mine", OpKind::Put),
            ("mine-held", OpKind::Put),
            ("gone-held", OpKind::Delete),
            ("bobs-held", OpKind::Delete)
        ]
    );
    assert_eq!(changes[0].body, Some(json!({"owner": "alice", "n": 1})));
    assert_eq!(changes[0].version, Some(2));
}

#[test]
fn a_pull_page_stops_before_the_change_past_its_budget_but_always_carries_one() {
    use std::collections::HashSet;
    let rules = Rules::owner_only();
    let alice = user("alice");
    let big = |id: &str, seq: u64, owner: &str| {
        pull_row(id, seq, owner, false, json!({"owner": owner, "data": "x".repeat(1000)}))
    };
    let held: HashSet<(String, String)> = HashSet::new();
    // Bob's row costs nothing (never held: not sent) and is covered; the budget takes two
    // documents of about 1 kB, and the third is left for the next page.
    let rows = vec![big("a", 10, "alice"), big("b", 11, "bob"), big("c", 12, "alice"), big("d", 13, "alice")];
    let plan = plan_pull(&rules, &alice, rows, &held, 2200);
    assert_eq!(plan.cut_after, Some(12));
    assert!(plan.answer.changes_len() <= 2200, "{}", plan.answer.changes_len());
    let held_now: Vec<&str> = plan.hold.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(held_now, ["a", "c"], "what is not sent is not held");
    let ids: Vec<String> = answer_changes(plan).into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["a", "c"]);
    // A first change past the whole budget still goes, alone.
    let rows = vec![big("a", 10, "alice"), big("c", 12, "alice")];
    let plan = plan_pull(&rules, &alice, rows, &held, 10);
    assert_eq!((plan.cut_after, plan.answer.count()), (Some(10), 1));
}

#[test]
fn a_put_or_create_whose_stored_document_would_pass_one_mebibyte_is_too_large() {
    use std::collections::HashMap;
    let rules = Rules::owner_only();
    let alice = user("alice");
    let limit = crate::names::MAX_DOCUMENT_BYTES;
    // {"data":"..."} is 11 bytes around the string; the server adds ,"owner":"alice".
    let fits = "y".repeat(limit - 11 - r#","owner":"alice""#.len());
    let over = "y".repeat(fits.len() + 1);
    let ops = [
        checked(&key(1), "a", "put", 0, Some(json!({"data": over}))),
        checked(&key(2), "a", "put", 0, Some(json!({"data": fits}))),
        checked(&key(3), "a", "put", 1, Some(json!({"data": over}))),
    ];
    let plan = plan_push(&rules, &alice, &ops, &HashMap::new(), &HashMap::new(), 0, 1);
    let statuses: Vec<OpStatus> = plan.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [OpStatus::TooLarge, OpStatus::Applied, OpStatus::TooLarge]);
    assert_eq!(json_len(&plan.documents[0].body), limit);
    let keys: Vec<&str> = plan.records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, [key(2)], "too_large is not recorded");
    assert_eq!(serde_json::to_value(OpStatus::TooLarge).expect("json"), json!("too_large"));
    assert_eq!(OpStatus::from_name("too_large"), Some(OpStatus::TooLarge));
}

#[test]
fn a_create_over_a_tombstone_is_a_new_incarnation_owned_by_its_creator() {
    use std::collections::HashMap;
    let rules = Rules::owner_only();
    let bob = user("bob");
    let mut documents = HashMap::new();
    documents.insert(("visits".into(), "a".into()), stored("alice", 3, true, tombstone_body("alice")));
    let ops = [
        checked(&key(1), "a", "put", 0, Some(json!({"n": 1}))),
        checked(&key(2), "a", "put", 4, Some(json!({"n": 2}))),
    ];
    let plan = plan_push(&rules, &bob, &ops, &documents, &HashMap::new(), 0, 1);
    assert_eq!(plan.results[0], OpResult { version: Some(4), ..OpResult::bare(OpStatus::Applied) });
    assert_eq!(plan.results[1], OpResult { version: Some(5), ..OpResult::bare(OpStatus::Applied) });
    let a = &plan.documents[0];
    assert_eq!((a.owner.as_str(), a.version, &a.body), ("bob", 5, &json!({"n": 2, "owner": "bob"})));
    assert_eq!(
        plan.drop_attachments,
        [AttachmentDrop::Document { collection: "visits".into(), id: "a".into() }],
        "none of the old one's"
    );
    // Alice's stale base of the old incarnation never matches: she cannot read Bob's.
    let stale = [checked(&key(3), "a", "put", 3, Some(json!({"n": 9})))];
    let mut now = HashMap::new();
    now.insert(("visits".into(), "a".into()), stored("bob", 5, false, json!({"n": 2, "owner": "bob"})));
    let plan = plan_push(&rules, &user("alice"), &stale, &now, &HashMap::new(), 0, 9);
    assert_eq!(plan.results[0].status, OpStatus::Forbidden);
}

#[test]
fn cursors_are_bound_to_their_user_and_refuse_any_change() {
    let key = CursorKey::new(&[7; 32]);
    let c = Cursor { seq: 42, epoch: [1; 8] };
    let text = key.encode("alice", c);
    assert_eq!(key.decode("alice", &text), Ok(c));
    assert!(key.decode("bob", &text).is_err());
    assert!(CursorKey::new(&[8; 32]).decode("alice", &text).is_err());
    for i in 0..text.len() {
        let mut b = text.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        if let Ok(t) = String::from_utf8(b)
            && t != text
        {
            assert!(key.decode("alice", &t).is_err(), "changed at {i}");
        }
    }
    assert!(key.decode("alice", "").is_err());
    assert!(key.decode("alice", "not base64 at all!").is_err());
}

#[test]
fn the_access_epoch_changes_with_roles_attributes_and_rules() {
    let rules = Rules::owner_only();
    let a = user("alice");
    let mut b = a.clone();
    b.roles.push("supervisor".into());
    let mut c = a.clone();
    c.attributes.insert("region".into(), json!("north"));
    let other = Rules::from_toml("version = 1\n[collections.v]\nread = \"true\"\nwrite = \"true\"\n").expect("rules");
    let epochs =
        [access_epoch(&rules, &a), access_epoch(&rules, &b), access_epoch(&rules, &c), access_epoch(&other, &a)];
    for i in 0..epochs.len() {
        for j in i + 1..epochs.len() {
            assert_ne!(epochs[i], epochs[j], "{i} vs {j}");
        }
    }
    assert_eq!(access_epoch(&rules, &a), access_epoch(&Rules::owner_only(), &a.clone()));
}

#[test]
fn a_uuid_v7_key_is_well_formed_accepted_and_dated() {
    let key = uuid_v7(1_700_000_123_456, [0xFF; 10]);
    assert_eq!(key.len(), 36);
    assert_eq!(&key[14..15], "7", "{key}");
    assert!(matches!(&key[19..20], "8" | "9" | "a" | "b"), "{key}");
    assert_eq!(check_idempotency_key(&key), Ok(1_700_000_123));
    assert_eq!(uuid_v7_time(&key), Some(1_700_000_123));
    // RFC 9562 appendix A.6: 2022-02-22 19:22:22 UTC is 0x017F22E279B0 ms.
    assert!(uuid_v7(0x017F_22E2_79B0, [0; 10]).starts_with("017f22e2-79b0-7000-8000-"));
}

/// Attachment id `n` as it travels: 32 lowercase hex digits.
fn att(n: u32) -> String {
    format!("{n:032x}")
}

/// An op on `visits/{id}` with `extra` fields merged in (`attachments`, say).
fn checked_with(key: &str, id: &str, kind: &str, base: u64, body: Option<Value>, extra: Value) -> CheckedOp {
    let mut v = json!({ "idempotency_key": key, "collection": "visits", "id": id, "op": kind, "base_version": base });
    if let Some(b) = body {
        v["body"] = b;
    }
    for (k, x) in extra.as_object().expect("an object") {
        v[k] = x.clone();
    }
    check_op(&v).unwrap_or_else(|e| panic!("valid op: {e}"))
}

#[test]
fn a_put_carries_a_well_formed_attachment_list_and_a_delete_none() {
    let base = json!({ "idempotency_key": key(1), "collection": "visits", "id": "v1", "op": "put", "body": {},
        "base_version": 0 });
    let with = |list: Value| {
        let mut v = base.clone();
        v["attachments"] = list;
        check_op(&v)
    };
    let ok = with(json!([att(1), att(2)])).expect("sorted, distinct, well formed");
    assert_eq!(ok.op.attachments, Some(vec![att(1), att(2)]));
    assert_eq!(with(json!([])).expect("empty").op.attachments, Some(vec![]));
    assert_eq!(with(Value::Null).expect("null reads as absent").op.attachments, None);
    assert_eq!(check_op(&base).expect("absent").op.attachments, None);
    let secret = "5ec2e7".repeat(5) + "ab";
    for (bad, why) in [
        (json!([att(2), att(1)]), "unsorted"),
        (json!([att(1), att(1)]), "twice"),
        (json!([secret.to_uppercase()]), "upper case"),
        (json!([secret.clone() + "0"]), "33 digits"),
        (json!(att(1)), "not a list"),
        (json!([1]), "not a string"),
    ] {
        let err = with(bad).expect_err(why);
        assert!(!err.0.contains("5ec2e7"), "{why}: the id is not echoed: {err}");
    }
    let many: Vec<String> = (0..=1000).map(att).collect();
    assert!(with(json!(many)).is_err(), "more than 1000");
    let mut del = base.clone();
    del["op"] = json!("delete");
    del.as_object_mut().expect("object").remove("body");
    assert!(check_op(&del).is_ok());
    for list in [json!([att(1)]), json!([])] {
        del["attachments"] = list;
        assert!(check_op(&del).expect_err("a delete with a list").0.contains("no attachments"));
    }
}

#[test]
fn the_same_key_with_another_attachment_list_is_an_idempotency_mismatch() {
    use std::collections::HashMap;
    let rules = Rules::owner_only();
    let alice = user("alice");
    let k = key(1);
    let first = checked_with(&k, "a", "put", 0, Some(json!({"n": 1})), json!({"attachments": [att(1)]}));
    let plan = plan_push(&rules, &alice, std::slice::from_ref(&first), &HashMap::new(), &HashMap::new(), 0, 1);
    assert_eq!(plan.results[0].status, OpStatus::Applied);
    let records: HashMap<String, IdempotencyRecord> = plan.records.into_iter().collect();
    let mut stored = HashMap::new();
    let d = &plan.documents[0];
    stored.insert(
        ("visits".to_owned(), "a".to_owned()),
        StoredDoc {
            owner: d.owner.clone(),
            version: d.version,
            deleted: false,
            body: d.body.clone(),
            attachments: d.attachments.clone(),
        },
    );
    let retries = [
        checked_with(&k, "a", "put", 0, Some(json!({"n": 1})), json!({"attachments": [att(1), att(2)]})),
        checked_with(&k, "a", "put", 0, Some(json!({"n": 1})), json!({"attachments": []})),
        checked_with(&k, "a", "put", 0, Some(json!({"n": 1})), json!({})),
        first.clone(),
    ];
    let plan = plan_push(&rules, &alice, &retries, &stored, &records, 0, 2);
    let statuses: Vec<OpStatus> = plan.results.iter().map(|r| r.status).collect();
    use OpStatus::*;
    assert_eq!(statuses, [IdempotencyMismatch, IdempotencyMismatch, IdempotencyMismatch, Duplicate]);
    assert!(plan.documents.is_empty() && plan.drop_attachments.is_empty(), "nothing applied again");
}

#[test]
fn a_put_stores_its_list_keeps_the_stored_one_without_and_names_the_ids_that_leave() {
    use std::collections::HashMap;
    let rules = Rules::owner_only();
    let alice = user("alice");
    let mut documents = HashMap::new();
    let mut listed = stored("alice", 1, false, json!({"owner": "alice"}));
    listed.attachments = vec![att(1), att(2), att(3)];
    documents.insert(("visits".to_owned(), "a".to_owned()), listed);
    let ops = [
        // 2 leaves, 4 arrives.
        checked_with(&key(1), "a", "put", 1, Some(json!({"n": 1})), json!({"attachments": [att(1), att(3), att(4)]})),
        // Without a list: the list stays.
        checked_with(&key(2), "a", "put", 2, Some(json!({"n": 2})), json!({})),
        // Creates: without a list, empty; with one, that one (nothing to drop).
        checked_with(&key(3), "new", "put", 0, Some(json!({})), json!({})),
        checked_with(&key(4), "listed", "put", 0, Some(json!({})), json!({"attachments": [att(9)]})),
    ];
    let plan = plan_push(&rules, &alice, &ops, &documents, &HashMap::new(), 0, 10);
    let statuses: Vec<OpStatus> = plan.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [OpStatus::Applied; 4]);
    let doc = |id: &str| plan.documents.iter().find(|d| d.id == id).expect(id);
    assert_eq!(
        (doc("a").version, &doc("a").attachments, doc("a").attachments_changed),
        (3, &vec![att(1), att(3), att(4)], true)
    );
    assert_eq!((doc("new").attachments.len(), doc("new").attachments_changed), (0, false));
    assert_eq!((&doc("listed").attachments, doc("listed").attachments_changed), (&vec![att(9)], true));
    assert_eq!(
        plan.drop_attachments,
        [AttachmentDrop::Ids { collection: "visits".into(), id: "a".into(), ids: vec![att(2)] }]
    );

    // An id taken off by one op and listed again by a later one stays; the others go once.
    let ops = [
        checked_with(&key(5), "a", "put", 1, Some(json!({})), json!({"attachments": [att(1)]})),
        checked_with(&key(6), "a", "put", 2, Some(json!({})), json!({"attachments": [att(3)]})),
    ];
    let plan = plan_push(&rules, &alice, &ops, &documents, &HashMap::new(), 0, 20);
    assert_eq!(
        plan.drop_attachments,
        [AttachmentDrop::Ids { collection: "visits".into(), id: "a".into(), ids: vec![att(1), att(2)] }]
    );
    // The same list again changes nothing: no drop, no change of the list.
    let same =
        [checked_with(&key(7), "a", "put", 1, Some(json!({})), json!({"attachments": [att(1), att(2), att(3)]}))];
    let plan = plan_push(&rules, &alice, &same, &documents, &HashMap::new(), 0, 30);
    assert!(plan.drop_attachments.is_empty());
    assert!(!plan.documents[0].attachments_changed);

    // A delete empties the list and drops the document's attachments, all of them, even
    // when a later op of the push re-creates it with a list (a new incarnation).
    let ops = [
        checked_with(&key(8), "a", "put", 1, Some(json!({})), json!({"attachments": [att(1)]})),
        checked_with(&key(9), "a", "delete", 2, None, json!({})),
        checked_with(&key(10), "a", "put", 0, Some(json!({})), json!({"attachments": [att(1)]})),
    ];
    let plan = plan_push(&rules, &alice, &ops, &documents, &HashMap::new(), 0, 40);
    assert_eq!(plan.results.iter().filter(|r| r.status == OpStatus::Applied).count(), 3);
    assert_eq!(plan.drop_attachments, [AttachmentDrop::Document { collection: "visits".into(), id: "a".into() }]);
    assert_eq!((plan.documents[0].version, &plan.documents[0].attachments), (4, &vec![att(1)]));
    let del = [checked_with(&key(11), "a", "delete", 1, None, json!({}))];
    let plan = plan_push(&rules, &alice, &del, &documents, &HashMap::new(), 0, 50);
    assert_eq!((plan.documents[0].attachments.len(), plan.documents[0].attachments_changed), (0, true));
    assert_eq!(plan.drop_attachments, [AttachmentDrop::Document { collection: "visits".into(), id: "a".into() }]);
}

#[test]
fn a_conflict_carries_the_stored_list_and_a_tombstone_none() {
    let rules = Rules::owner_only();
    let alice = user("alice");
    let mut live = stored("alice", 3, false, json!({"owner": "alice", "x": 1}));
    live.attachments = vec![att(1), att(2)];
    let stale = op("put", 2, Some(json!({"x": 2})));
    let Decision::Conflict(r) = decide(&rules, &alice, &stale, Some(&live)) else { panic!("a conflict") };
    assert_eq!(r.attachments, [att(1), att(2)]);
    assert_eq!(serde_json::to_value(&r).expect("json")["attachments"], json!([att(1), att(2)]));
    let gone = stored("alice", 4, true, tombstone_body("alice"));
    let Decision::Conflict(r) = decide(&rules, &alice, &stale, Some(&gone)) else { panic!("a conflict") };
    assert!(r.attachments.is_empty());
    assert!(serde_json::to_value(&r).expect("json").get("attachments").is_none(), "absent when empty");
    // Another user's document answers forbidden: its list is not shown either.
    assert_eq!(decide(&rules, &user("bob"), &stale, Some(&live)), Decision::Forbidden);
}

#[test]
fn a_pull_put_carries_the_documents_list_and_a_tombstone_none() {
    use std::collections::HashSet;
    let rules = Rules::owner_only();
    let alice = user("alice");
    let mut listed = pull_row("listed", 1, "alice", false, json!({"owner": "alice"}));
    listed.doc.attachments = vec![att(7)];
    let bare = pull_row("bare", 2, "alice", false, json!({"owner": "alice"}));
    let gone = pull_row("gone", 3, "alice", true, json!({}));
    let held: HashSet<(String, String)> = HashSet::from([("visits".to_owned(), "gone".to_owned())]);
    let plan = plan_pull(&rules, &alice, vec![listed, bare, gone], &held, MAX_PULL_CHANGE_BYTES);
    let bytes = plan.answer.finish("c", false);
    let raw: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(raw["changes"][0]["attachments"], json!([att(7)]));
    assert!(raw["changes"][1].get("attachments").is_none(), "absent when empty");
    assert_eq!(raw["changes"][2], json!({"collection": "visits", "id": "gone", "op": "delete"}));
}
