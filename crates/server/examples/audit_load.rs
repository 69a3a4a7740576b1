//! What one audit chain costs on PostgreSQL under the login load: two store handles (two
//! instances' pools) on one fresh schema, `FV_BENCH_CLIENTS` tasks split between them, each
//! recording logins through the store (`Store::login`, the login's own transaction with its
//! audit record, the chain head locked first) in a closed loop for `FV_BENCH_SECS`; then the
//! same with bare `audit_append` (the head alone); then the Argon2id password check every
//! password login pays first, at the server's settings on this machine's cores. Prints
//! `figure NAME VALUE UNIT` lines.
//!
//! ```text
//! audit_load [URL]        # URL defaults to FIELDVAULT_TEST_POSTGRES; fresh schema, dropped after
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fieldvault_server::auth::{Password, Passwords};
use fieldvault_server::{AuditEvent, LeaseRecord, LoginDevice, NewLogin, PgStore, Store, UserRecord};
use zeroize::Zeroizing;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn login(n: u64) -> NewLogin {
    NewLogin {
        session_id: format!("s{n}"),
        key_id: format!("k{n}"),
        user: "alice".into(),
        secret_sealed: vec![1; 60],
        refresh_hash: {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&n.to_be_bytes());
            h
        },
        device_name: "bench".into(),
        device: LoginDevice::New {
            id: format!("d{n}"),
            secret_sealed: vec![2; 61],
            lease: LeaseRecord { id: format!("l{n}"), key_sealed: vec![3; 48], expires_at: now() + 3_600 },
        },
        totp: None,
        now: now(),
    }
}

/// Runs `op` from `clients` tasks over the stores for `secs`; returns operations per second.
async fn closed_loop<F, Fut>(stores: &[Arc<dyn Store>], clients: u64, secs: u64, op: F) -> Result<f64>
where
    F: Fn(Arc<dyn Store>, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let (done, next) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(1_000_000 * now())));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (store, op, done, next) =
            (stores[(c as usize) % stores.len()].clone(), op.clone(), done.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                op(store.clone(), next.fetch_add(1, Ordering::Relaxed)).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / secs as f64)
}

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("FIELDVAULT_TEST_POSTGRES").ok())
        .context("give a PostgreSQL URL or set FIELDVAULT_TEST_POSTGRES")?;
    let (clients, secs) = (env("FV_BENCH_CLIENTS", 32), env("FV_BENCH_SECS", 5));
    let schema = format!("fv_audit_bench_{}", std::process::id());
    let a: Arc<dyn Store> = Arc::new(PgStore::connect_in_schema(&url, &schema, 16).await?);
    let b: Arc<dyn Store> = Arc::new(PgStore::connect_in_schema(&url, &schema, 16).await?);
    let user = UserRecord {
        name: "alice".into(),
        password_hash: String::new(),
        roles: vec![],
        disabled: false,
        attributes: Default::default(),
    };
    a.add_user(&user, now(), &AuditEvent::new(now(), "cli:bench", "user.add", "alice")).await?;
    let stores = [a.clone(), b.clone()];
    let logins = closed_loop(&stores, clients, secs, |store, n| async move {
        let l = login(n);
        let e = AuditEvent::new(l.now, "user:alice", "login", "alice").with("device", l.device.id());
        anyhow::ensure!(store.login(&l, &e).await? == fieldvault_server::LoginOutcome::Recorded, "recorded");
        Ok(())
    })
    .await?;
    println!("figure pg_audited_logins_two_instances {logins:.0} per_s");
    let appends = closed_loop(&stores, clients, secs, |store, n| async move {
        store.audit_append(&AuditEvent::new(now(), "system", "bench", n.to_string())).await?;
        Ok(())
    })
    .await?;
    println!("figure pg_audit_appends_two_instances {appends:.0} per_s");
    let check = fieldvault_server::verify_audit(a.as_ref()).await?;
    anyhow::ensure!(matches!(check, fieldvault_server::AuditCheck::Intact(_)), "the chain does not verify: {check:?}");
    // The Argon2id check each password login pays before its transaction, on every core.
    let passwords = Arc::new(
        Passwords::new(std::thread::available_parallelism().map_or(1, usize::from)).map_err(anyhow::Error::msg)?,
    );
    let hash = passwords
        .hash(Password::new(Zeroizing::new("a long enough password".into())))
        .await
        .map_err(anyhow::Error::msg)?;
    let start = Instant::now();
    let mut checks = Vec::new();
    for _ in 0..16 {
        let (p, h) = (passwords.clone(), hash.clone());
        checks.push(tokio::spawn(async move {
            p.verify(Password::new(Zeroizing::new("a long enough password".into())), Some(h)).await
        }));
    }
    for c in checks {
        anyhow::ensure!(c.await?, "the password verifies");
    }
    println!("figure argon2id_checks {:.1} per_s", 16.0 / start.elapsed().as_secs_f64());
    drop((a, b));
    PgStore::drop_schema(&url, &schema).await?;
    Ok(())
}
