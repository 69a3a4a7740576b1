//! The engine's database side on a real vault: outbox rows written with their changes, ops
//! frozen in flight, answers applied, pull pages planned and applied.

use std::collections::HashSet;

use fieldvault_core::AccountName;
use fieldvault_core::protocol::sync::{Change, FirstResult, OpKind, OpResult, OpStatus, PullResponse};
use fieldvault_keystore::MemoryStore;
use serde_json::{Map, Value, json};

use super::conflicts::ConflictPolicy;
use super::outbox;
use super::{engine, pull};
use crate::{Unlocked, Vault};

fn vault() -> (tempfile::TempDir, Unlocked, AccountName) {
    let dir = tempfile::tempdir().expect("tempdir");
    let account = AccountName::new("alice").expect("name");
    let unlocked = Vault::init(&dir.path().join("v"), &MemoryStore::default(), &account).expect("init");
    (dir, unlocked, account)
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

fn outbox_of(u: &mut Unlocked, a: &AccountName) -> Vec<(String, String, bool)> {
    let docs = u.documents(a).expect("documents");
    outbox::entries(&docs.db.conn).expect("entries").into_iter().map(|e| (e.id, e.op, e.in_flight)).collect()
}

fn applied(version: u64) -> OpResult {
    OpResult { version: Some(version), ..OpResult::bare(OpStatus::Applied) }
}

fn server_wins(_: &str) -> ConflictPolicy {
    ConflictPolicy::ServerWins
}

#[test]
fn every_write_enters_the_outbox_with_its_change_and_later_edits_fold() {
    let (_d, mut u, a) = vault();
    let mut docs = u.documents(&a).expect("documents");
    docs.declare_memory_only("scratch").expect("memory-only");
    docs.put("visits", "v1", obj(json!({"n": 1}))).expect("put");
    docs.put("visits", "v1", obj(json!({"n": 2}))).expect("put again");
    docs.put("scratch", "s1", obj(json!({"n": 1}))).expect("memory-only put");
    docs.put("visits", "v2", obj(json!({"n": 1}))).expect("put");
    docs.delete("visits", "v2").expect("delete");
    // One op for v1 (folded); none for the memory-only document; none for v2, created and
    // deleted before the server ever heard of it.
    assert_eq!(outbox_of(&mut u, &a), vec![("v1".into(), "put".into(), false)]);
}

/// An op's body, parsed.
fn body_of(op: &engine::InFlight) -> Option<Value> {
    op.body_text().map(|t| serde_json::from_str(&t).expect("JSON"))
}

/// An op as it travels.
fn wire(op: &engine::InFlight) -> String {
    serde_json::to_string(&op.op).expect("serializes")
}

#[test]
fn an_op_in_flight_is_resent_unchanged_and_a_later_edit_waits_behind_it() {
    let (_d, mut u, a) = vault();
    let docs = u.documents(&a).expect("documents");
    let (mut docs,) = (docs,);
    docs.put("visits", "v1", obj(json!({"n": 1}))).expect("put");
    let db = &mut docs.db;
    let first = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].op.base_version, 0);
    assert_eq!(body_of(&first[0]), Some(json!({"n": 1})));
    // The answer is lost; the user edits again; the retry sends the same op.
    docs.put("visits", "v1", obj(json!({"n": 2}))).expect("edit");
    let db = &mut docs.db;
    let again = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare again");
    assert_eq!(again.len(), 1);
    assert_eq!(wire(&again[0]), wire(&first[0]), "a retry is the same op with the same key");
    // While that batch is with the server, the next batch neither repeats it nor takes the
    // edit queued behind it.
    assert!(engine::prepare_push(&mut db.conn, &db.path, &again).expect("while sending").is_empty());
    // Acknowledged: the queued edit goes next, based on the version the server sent.
    let summary = engine::apply_push(&mut db.conn, &db.path, &again, &[applied(1)], &server_wins).expect("apply");
    assert_eq!(summary.applied, 1);
    let next = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare next");
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].op.base_version, body_of(&next[0])), (1, Some(json!({"n": 2}))));
    assert_ne!(next[0].op.idempotency_key, first[0].op.idempotency_key);
    // A duplicate answer carries the first one: acted on as applied.
    let dup = OpResult {
        first: Some(FirstResult { status: OpStatus::Applied, version: Some(2) }),
        ..OpResult::bare(OpStatus::Duplicate)
    };
    engine::apply_push(&mut db.conn, &db.path, &next, &[dup], &server_wins).expect("apply duplicate");
    assert!(engine::prepare_push(&mut db.conn, &db.path, &[]).expect("nothing left").is_empty());
}

#[test]
fn a_conflict_under_server_wins_keeps_the_servers_version_and_the_local_one_aside() {
    let (_d, mut u, a) = vault();
    let mut docs = u.documents(&a).expect("documents");
    docs.put("visits", "v1", obj(json!({"n": "mine"}))).expect("put");
    let db = &mut docs.db;
    let ops = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare");
    let conflict =
        OpResult { version: Some(3), body: Some(json!({"n": "theirs"})), ..OpResult::bare(OpStatus::Conflict) };
    let s = engine::apply_push(&mut db.conn, &db.path, &ops, &[conflict], &server_wins).expect("apply");
    assert_eq!((s.conflicts, s.changed.len()), (1, 1));
    let doc = docs.get("visits", "v1").expect("get").expect("present");
    assert_eq!(Value::Object(doc.body), json!({"n": "theirs"}));
    let kept: String = docs
        .db
        .conn
        .query_row("SELECT local_body FROM conflicts WHERE id = 'v1'", [], |r| r.get(0))
        .expect("the local version is kept");
    assert_eq!(kept, r#"{"n":"mine"}"#);
    assert!(outbox_of(&mut u, &a).is_empty());
}

#[test]
fn a_refused_change_is_rolled_back_to_the_servers_copy_and_kept() {
    let (_d, mut u, a) = vault();
    let mut docs = u.documents(&a).expect("documents");
    docs.put("visits", "v1", obj(json!({"n": 1}))).expect("put");
    let db = &mut docs.db;
    let ops = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare");
    engine::apply_push(&mut db.conn, &db.path, &ops, &[applied(1)], &server_wins).expect("applied");
    docs.put("visits", "v1", obj(json!({"n": 2, "secret": true}))).expect("edit");
    let db = &mut docs.db;
    let ops = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare");
    let s = engine::apply_push(&mut db.conn, &db.path, &ops, &[OpResult::bare(OpStatus::Forbidden)], &server_wins)
        .expect("apply");
    assert_eq!(s.rejected, 1);
    let doc = docs.get("visits", "v1").expect("get").expect("present");
    assert_eq!(Value::Object(doc.body), json!({"n": 1}), "rolled back to what the server holds");
    let (status, body): (String, String) = docs
        .db
        .conn
        .query_row("SELECT status, body FROM rejected WHERE id = 'v1'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("kept in the rejected list");
    assert_eq!((status.as_str(), body.as_str()), ("forbidden", r#"{"n":2,"secret":true}"#));
    // A refused create is removed.
    docs.put("visits", "v9", obj(json!({"n": 9}))).expect("create");
    let db = &mut docs.db;
    let ops = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare");
    engine::apply_push(&mut db.conn, &db.path, &ops, &[OpResult::bare(OpStatus::Expired)], &server_wins)
        .expect("apply");
    assert!(docs.get("visits", "v9").expect("get").is_none());
}

/// A page as the device reads it off the wire.
fn page(changes: Vec<Change>) -> pull::RawPage {
    let page = PullResponse { changes, cursor: "c1".into(), has_more: false };
    serde_json::from_str(&serde_json::to_string(&page).expect("serializes")).expect("reads")
}

fn put_change(id: &str, version: u64, body: Value) -> Change {
    Change {
        collection: "visits".into(),
        id: id.into(),
        op: OpKind::Put,
        version: Some(version),
        body: Some(body),
        attachments: vec![],
    }
}

#[test]
fn a_pull_page_never_overwrites_a_pending_change_and_applies_the_rest() {
    let (_d, mut u, a) = vault();
    let mut docs = u.documents(&a).expect("documents");
    docs.put("visits", "mine", obj(json!({"n": "local"}))).expect("put");
    let p = page(vec![
        put_change("mine", 4, json!({"n": "server"})),
        put_change("other", 2, json!({"n": "new"})),
        Change {
            collection: "visits".into(),
            id: "gone".into(),
            op: OpKind::Delete,
            version: None,
            body: None,
            attachments: vec![],
        },
    ]);
    let pending = pull::pending_among(&docs.db.conn, &p).expect("pending");
    assert_eq!(pending, HashSet::from([("visits".to_owned(), "mine".to_owned())]));
    let plan = pull::plan_pull_page(&p, 100, &pending).expect("plan");
    assert_eq!((plan.puts.len(), plan.deletes.len(), plan.skipped), (1, 1, 1));
    let db = &mut docs.db;
    pull::apply_pull(&mut db.conn, &db.path, &plan, &p.cursor, false).expect("apply");
    let mine = docs.get("visits", "mine").expect("get").expect("present");
    assert_eq!(Value::Object(mine.body), json!({"n": "local"}));
    let other = docs.get("visits", "other").expect("get").expect("present");
    assert_eq!(Value::Object(other.body), json!({"n": "new"}));
    // What came from the server is not owed back to it.
    assert_eq!(outbox_of(&mut u, &a), vec![("mine".into(), "put".into(), false)]);
}

#[test]
fn a_cursor_goes_back_to_the_server_only_when_it_needs_no_escaping() {
    assert!(pull::check_cursor("AbC-_.~09").is_ok());
    for bad in ["", "a&limit=1", "a b", "a/b", "%41", "é", &"a".repeat(513)] {
        assert!(pull::check_cursor(bad).is_err(), "{bad:?}");
    }
    let mut p = page(vec![]);
    p.cursor = "c1&since=0".into();
    assert!(pull::plan_pull_page(&p, 1, &HashSet::new()).is_err());
}

#[test]
fn a_malformed_pull_page_is_refused_whole() {
    let none = HashSet::new();
    let bad_pages = [
        page(vec![Change {
            collection: "visits".into(),
            id: "x".into(),
            op: OpKind::Put,
            version: None,
            body: Some(json!({})),
            attachments: vec![],
        }]),
        page(vec![put_change("x", 1, json!([1, 2]))]),
        page(vec![Change {
            collection: "no/slash".into(),
            id: "x".into(),
            op: OpKind::Delete,
            version: None,
            body: None,
            attachments: vec![],
        }]),
        page(vec![put_change("", 1, json!({}))]),
        page(vec![put_change("x", 1, json!({"big": "a".repeat(1 << 20)}))]),
        page(vec![put_change("a", 1, json!({})), put_change("b", 1, json!({}))]),
    ];
    for p in &bad_pages {
        assert!(
            matches!(pull::plan_pull_page(p, 1, &none), Err(crate::Error::MalformedAnswer(_))),
            "{:?}",
            p.changes.len()
        );
    }
}

#[test]
fn subscribers_hear_of_the_changes_they_watch_after_each_write() {
    use std::sync::{Arc, Mutex};

    use crate::{ChangeKind, DocumentChange, Watch};
    let (_d, mut u, a) = vault();
    let heard: Arc<Mutex<Vec<DocumentChange>>> = Arc::default();
    let one: Arc<Mutex<Vec<DocumentChange>>> = Arc::default();
    let (h, o) = (heard.clone(), one.clone());
    let id = u
        .subscribe(&a, Watch::Collection("visits".into()), move |c| h.lock().expect("lock").extend_from_slice(c))
        .expect("subscribe");
    u.subscribe(&a, Watch::Document { collection: "visits".into(), id: "v2".into() }, move |c| {
        o.lock().expect("lock").extend_from_slice(c)
    })
    .expect("subscribe");
    let mut docs = u.documents(&a).expect("documents");
    docs.put("visits", "v1", obj(json!({"n": 1}))).expect("put");
    docs.put("notes", "n1", obj(json!({"n": 1}))).expect("another collection");
    docs.put_many("visits", vec![("v2".to_owned(), obj(json!({"n": 2})))]).expect("put_many");
    docs.delete("visits", "v1").expect("delete");
    docs.delete("visits", "never").expect("nothing to delete");
    let kinds: Vec<(String, ChangeKind)> = heard.lock().expect("lock").iter().map(|c| (c.id.clone(), c.kind)).collect();
    assert_eq!(
        kinds,
        vec![("v1".into(), ChangeKind::Put), ("v2".into(), ChangeKind::Put), ("v1".into(), ChangeKind::Delete)]
    );
    assert_eq!(one.lock().expect("lock").len(), 1, "the document watch hears only v2");
    assert!(u.unsubscribe(&a, id).expect("unsubscribe"));
    u.documents(&a).expect("documents").put("visits", "v3", obj(json!({}))).expect("put");
    assert_eq!(heard.lock().expect("lock").len(), 3, "an ended subscription hears nothing");
}

fn conflict_with(version: u64, body: Value) -> OpResult {
    OpResult { version: Some(version), body: Some(body), ..OpResult::bare(OpStatus::Conflict) }
}

#[test]
fn client_wins_and_merge_send_a_rebased_op_and_keep_the_servers_version_aside() {
    fn merge(local: &Map<String, Value>, server: &Map<String, Value>) -> Map<String, Value> {
        let mut out = server.clone();
        for (k, v) in local {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
        out
    }
    let (_d, mut u, a) = vault();
    let mut docs = u.documents(&a).expect("documents");
    for (id, policy) in [("cw", ConflictPolicy::ClientWins), ("mg", ConflictPolicy::Merge(merge))] {
        docs.put("notes", id, obj(json!({"mine": 1}))).expect("put");
        let db = &mut docs.db;
        let ops = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare");
        let s =
            engine::apply_push(&mut db.conn, &db.path, &ops, &[conflict_with(4, json!({"theirs": 2}))], &move |_| {
                policy
            })
            .expect("apply");
        assert_eq!(s.conflicts, 1);
        let next = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("the rebased op");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].op.base_version, 4, "rebased on the server's version");
        assert_ne!(next[0].op.idempotency_key, ops[0].op.idempotency_key, "a new op with a new key");
        let expected = if id == "cw" { json!({"mine": 1}) } else { json!({"mine": 1, "theirs": 2}) };
        assert_eq!(body_of(&next[0]), Some(expected.clone()));
        assert_eq!(docs.get("notes", id).expect("get").map(|d| Value::Object(d.body)), Some(expected));
        // The rebased op refused: back to the server's version, kept aside in the conflict.
        let db = &mut docs.db;
        engine::apply_push(&mut db.conn, &db.path, &next, &[OpResult::bare(OpStatus::Forbidden)], &server_wins)
            .expect("refused");
        assert_eq!(docs.get("notes", id).expect("get").map(|d| Value::Object(d.body)), Some(json!({"theirs": 2})));
    }
    let kept = u.conflicts(&a).expect("conflicts");
    assert_eq!(kept.len(), 2);
    assert!(kept.iter().all(|c| c.server_version == 4 && c.local == Some(json!({"theirs": 2}))));
}

#[test]
fn resolving_a_conflict_keeping_the_local_version_queues_it_again() {
    use crate::Keep;
    let (_d, mut u, a) = vault();
    let mut docs = u.documents(&a).expect("documents");
    docs.put("visits", "v1", obj(json!({"n": "mine"}))).expect("put");
    let db = &mut docs.db;
    let ops = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("prepare");
    engine::apply_push(&mut db.conn, &db.path, &ops, &[conflict_with(3, json!({"n": "theirs"}))], &server_wins)
        .expect("apply");
    assert!(matches!(u.resolve_conflict(&a, "visits", "nope", Keep::Local), Err(crate::Error::NoSuchDocument { .. })));
    u.resolve_conflict(&a, "visits", "v1", Keep::Local).expect("resolve");
    assert!(u.conflicts(&a).expect("conflicts").is_empty());
    let docs = u.documents(&a).expect("documents");
    assert_eq!(docs.get("visits", "v1").expect("get").map(|d| Value::Object(d.body)), Some(json!({"n": "mine"})));
    let db = docs.db;
    let next = engine::prepare_push(&mut db.conn, &db.path, &[]).expect("queued again");
    assert_eq!((next.len(), next[0].op.base_version), (1, 3));
}
