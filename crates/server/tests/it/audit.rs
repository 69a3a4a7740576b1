//! The tamper-evident audit log on every backend: appends under concurrency (on PostgreSQL
//! from two instances), records written only with the action they record, the retention cut,
//! and `fieldvault-server audit verify | export` against real admin actions and logins over
//! TLS, before and after a hand-edited row.

use std::process::{Command, Output};
use std::sync::Arc;

use fieldvault_core::audit::{AuditRecord, verify};
use fieldvault_server::{AuditCheck, AuditEvent, Store, accounts, verify_audit};

use crate::harness::{Backend, Harness, PASSWORD, Signed, backends, now, postgres};
use crate::text;

/// Every record of the store, read through its pages.
async fn all_records(store: &dyn Store) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    fieldvault_server::audit_records::<fieldvault_server::StoreError>(store, 0, |r| {
        out.push(r.clone());
        Ok(())
    })
    .await
    .expect("reads");
    out
}

fn intact(check: AuditCheck) -> fieldvault_core::audit::ChainSummary {
    match check {
        AuditCheck::Intact(summary) => summary,
        AuditCheck::Broken(link) => panic!("expected an intact chain, got {link}"),
    }
}

fn broken(check: AuditCheck) -> fieldvault_core::audit::BrokenLink {
    match check {
        AuditCheck::Broken(link) => link,
        AuditCheck::Intact(s) => panic!("expected a broken chain, got {s:?}"),
    }
}

/// `n` tasks on each store, each appending `each` records and adding a user, all at once.
async fn append_at_once(stores: &[Arc<dyn Store>], n: usize, each: usize) {
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..n {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    let e = AuditEvent::new(now(), "system", "test.append", format!("{s}-{t}-{i}"));
                    store.audit_append(&e).await.expect("appends");
                }
                let user = fieldvault_server::UserRecord {
                    name: format!("u{s}x{t}"),
                    password_hash: "h".into(),
                    roles: vec![],
                    disabled: false,
                    attributes: Default::default(),
                };
                let e = AuditEvent::new(now(), "cli:test", "user.add", user.name.as_str());
                store.add_user(&user, now(), &e).await.expect("adds");
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_at_once_give_a_gapless_chain_that_verifies_across_pages() {
    for b in backends() {
        let h = Harness::start_bare(b).await;
        // 8 tasks of 130 appends and one audited action each: 1048 records, past one page.
        append_at_once(std::slice::from_ref(&h.app.store), 8, 130).await;
        let summary = intact(verify_audit(h.app.store.as_ref()).await.expect("verifies"));
        assert_eq!(summary.count, 8 * 131);
        let records = all_records(h.app.store.as_ref()).await;
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=8 * 131).collect::<Vec<u64>>(), "gapless, in order");
        assert_eq!(records.iter().filter(|r| r.action == "user.add").count(), 8);
        let head = h.app.store.audit_head().await.expect("head").expect("a head");
        assert_eq!(head, (8 * 131, records.last().expect("last").hash));
        let page = h.app.store.audit_page(1000, 10).await.expect("page");
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), (1001..=1010).collect::<Vec<u64>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgresql_append_to_one_chain() {
    let Some(pg) = postgres() else { return };
    let h = Harness::start_bare(pg).await;
    let sibling = h.sibling().await;
    assert!(!Arc::ptr_eq(&h.app.store, &sibling.app.store), "two store handles, two pools");
    append_at_once(&[h.app.store.clone(), sibling.app.store.clone()], 6, 20).await;
    let summary = intact(verify_audit(sibling.app.store.as_ref()).await.expect("verifies"));
    assert_eq!(summary.count, 2 * 6 * 21);
    let seqs: Vec<u64> = all_records(h.app.store.as_ref()).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=2 * 6 * 21).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_that_changes_nothing_records_nothing() {
    for b in backends() {
        let h = Harness::start(b).await;
        let head = h.app.store.audit_head().await.expect("head");
        assert_eq!(head.map(|(seq, _)| seq), Some(2), "alice and bob were added, each recorded");
        let e = accounts::disable_user(&h.app.store, "cli:test", "nobody", now()).await.expect_err("no such user");
        assert!(e.to_string().contains("no user named"), "{e}");
        let e = accounts::remove_user(&h.app.store, "cli:test", "nobody", now()).await.expect_err("no such user");
        assert!(e.to_string().contains("no user named"), "{e}");
        assert_eq!(h.app.store.audit_head().await.expect("head"), head);
        assert_eq!(all_records(h.app.store.as_ref()).await.len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_cut_is_recorded_and_the_rest_still_verifies_from_the_first_kept_record() {
    for b in backends() {
        let h = Harness::start_bare(b).await;
        let store = h.app.store.as_ref();
        for at in [1_000, 2_000, 3_000, 4_000, 5_000] {
            store.audit_append(&AuditEvent::new(at, "system", "test.old", "")).await.expect("appends");
        }
        let cut = AuditEvent::new(9_000, "cli:root", "", "");
        assert_eq!(store.audit_prune(1_000, &cut).await.expect("prunes"), None, "nothing is older: nothing changes");
        let done = store.audit_prune(3_000, &cut).await.expect("prunes").expect("a cut");
        assert_eq!((done.deleted, done.first_kept_seq, done.record.seq), (2, 3, 6));
        assert_eq!(done.record.action, "audit.retention_cut");
        assert_eq!(done.record.actor, "cli:root");
        let records = all_records(store).await;
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
        assert_eq!(records[3].cut_anchor(), Some((3, records[0].prev_hash)));
        assert_eq!(intact(verify_audit(store).await.expect("verifies")).count, 4);
        // A record deleted from the front by hand has no cut naming the new start.
        h.raw_sql("DELETE FROM audit WHERE seq = 3").await.expect("delete");
        let link = broken(verify_audit(store).await.expect("reads"));
        assert_eq!(link.seq, 4, "{link}");
        assert!(link.why.contains("no retention cut"), "{link}");
        // Cutting everything leaves the cut record alone, still verifying.
        let all = store.audit_prune(u64::from(u32::MAX), &cut).await.expect("prunes").expect("a cut");
        assert_eq!(all.first_kept_seq, all.record.seq);
        assert_eq!(intact(verify_audit(store).await.expect("verifies")).count, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_append_only_and_a_record_deleted_from_the_end_is_named() {
    for b in backends() {
        let h = Harness::start(b.clone()).await;
        let refused = h.raw_sql("UPDATE audit SET target = 'mallory' WHERE seq = 1").await.expect_err("refused");
        assert!(refused.contains("append-only"), "{refused}");
        h.raw_sql("DELETE FROM audit WHERE seq = 2").await.expect("delete");
        let link = broken(verify_audit(h.app.store.as_ref()).await.expect("reads"));
        assert_eq!(link.seq, 2, "{link}");
        assert!(link.why.contains("deleted from the end"), "{link}");
    }
}

/// `fieldvault-server` with these arguments against the harness's data, key directory and
/// database, as an operator runs it beside the server.
pub(crate) fn cli(h: &Harness, args: &[&str]) -> Output {
    let data = h.data_dir();
    let mut c = Command::new(env!("CARGO_BIN_EXE_fieldvault-server"));
    c.env_clear().env("FIELDVAULT_PASSWORD", "a long enough password").arg("--data").arg(&data).args(args);
    if let Some(url) = h.database_url() {
        c.arg("--database-url").arg(url);
    }
    c.output().expect("run fieldvault-server")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Drops the append-only guard and changes one record's detail: a database administrator's edit.
pub(crate) async fn edit_detail(h: &Harness, seq: u64) {
    let guard = match h.backend {
        Backend::Sqlite => "DROP TRIGGER audit_append_only",
        Backend::Postgres { .. } => "ALTER TABLE audit DISABLE TRIGGER audit_append_only",
    };
    h.raw_sql(guard).await.expect("drop the guard");
    h.raw_sql(&format!("UPDATE audit SET detail = '{{\"roles\":[\"admin\"]}}' WHERE seq = {seq}")).await.expect("edit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_and_logins_are_recorded_and_verify_names_a_hand_edited_record() {
    for b in backends() {
        let h = Harness::start(b).await;
        // Admin actions through the real binary, beside the running server.
        ok(cli(&h, &["user", "add", "carol", "--role", "inspector"]));
        ok(cli(&h, &["user", "disable", "carol"]));
        ok(cli(&h, &["user", "enable", "carol"]));
        // Logins over TLS: one refused, one that makes a device, then a refresh token reused.
        assert_eq!(h.login("alice", "not the password at all").await.status, 401);
        let d = h.device("alice").await;
        let refresh = |token: &str, attempt: &str| {
            let body = serde_json::json!({ "refresh_token": token, "attempt_id": attempt }).to_string();
            let mut s = Signed::new(&d, "POST", "/v1/auth/refresh", body.as_bytes(), now());
            s.bearer = None;
            s
        };
        assert_eq!(h.send(&refresh(&d.refresh_token, "a1").raw()).await.status, 200);
        assert_eq!(h.send(&refresh(&d.refresh_token, "a2").raw()).await.status, 401, "reuse");
        // A remote wipe from the command line, acknowledged by the device.
        let wipe = ok(cli(&h, &["--json", "device", "wipe", &d.device_id]));
        let jti = serde_json::from_str::<serde_json::Value>(&wipe).expect("JSON")["directive"]
            .as_str()
            .expect("jti")
            .to_owned();
        let ack = serde_json::json!({ "jtis": [jti] }).to_string();
        let mut req = Signed::new(&d, "POST", "/v1/devices/ack", ack.as_bytes(), now());
        req.bearer = None;
        assert_eq!(h.send(&req.raw()).await.json()["acknowledged"], 1);

        let verified = ok(cli(&h, &["audit", "verify"]));
        let records = all_records(h.app.store.as_ref()).await;
        let last = records.last().expect("records").seq;
        assert_eq!(verified.trim(), format!("OK: {} records, last seq {last}", records.len()));
        let actions: Vec<(&str, &str, &str)> =
            records.iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.target.as_str())).collect();
        let me = records[2].actor.clone();
        assert!(me.starts_with("cli:") && me.len() > 4, "{me}");
        for expected in [
            (me.as_str(), "user.add", "carol"),
            (me.as_str(), "user.disable", "carol"),
            (me.as_str(), "user.enable", "carol"),
            ("user:alice", "login.failed", "alice"),
            ("user:alice", "login", "alice"),
            (&*format!("device:{}", d.device_id), "refresh.reuse_detected", "alice"),
            (me.as_str(), "directive.issued", d.device_id.as_str()),
            (&*format!("device:{}", d.device_id), "directive.acknowledged", d.device_id.as_str()),
        ] {
            assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
        }
        let failed = records.iter().find(|r| r.action == "login.failed").expect("a failed login");
        assert_eq!(failed.detail["address"], "127.0.0.1");
        assert_eq!(failed.detail["reason"], "invalid_grant");

        // The export: one JSON line per record, the same records, verifying on their own.
        let export = ok(cli(&h, &["audit", "export"]));
        assert!(!export.contains(PASSWORD) && !export.contains("not the password"), "no password in the log");
        assert!(!export.contains(&d.refresh_token), "no token in the log");
        let lines: Vec<AuditRecord> = export
            .lines()
            .map(|l| AuditRecord::from_export_json(&serde_json::from_str(l).expect("JSON line")).expect("a record"))
            .collect();
        assert_eq!(lines, records);
        assert_eq!(verify(&lines).expect("verifies").count, records.len() as u64);
        let after = ok(cli(&h, &["audit", "export", "--after", "3"]));
        assert_eq!(after.lines().count(), records.len() - 3);
        assert!(after.starts_with(&lines[3].to_export_json().to_string()), "{after}");

        // A hand-edited record is named, and verify fails.
        edit_detail(&h, 3).await;
        let out = cli(&h, &["audit", "verify"]);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("breaks at seq 3") && err.contains("was changed"), "{err}");
        let out = cli(&h, &["--json", "audit", "verify"]);
        assert!(!out.status.success());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!((json["ok"].as_bool(), json["seq"].as_u64()), (Some(false), Some(3)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_grow_the_log_no_faster_than_the_throttle_lets_them_through() {
    for b in backends() {
        let h = Harness::start(b).await;
        let mut refused = 0;
        for _ in 0..8 {
            let r = h.login("alice", "a wrong password guess").await;
            match r.status {
                401 => refused += 1,
                429 => {}
                other => panic!("unexpected {other}: {}", r.text()),
            }
        }
        assert!(refused < 8, "the throttle answered some attempts 429");
        let failed = all_records(h.app.store.as_ref()).await.into_iter().filter(|r| r.action == "login.failed").count();
        assert_eq!(failed, refused, "one record per attempt let through, none per throttled one");
        intact(verify_audit(h.app.store.as_ref()).await.expect("verifies"));
    }
}
