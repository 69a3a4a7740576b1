//! The same document workload on SQLCipher (the vault's settings) and on plain SQLite (the
//! same code and pragmas, no key), in one run. Prints `figure NAME VALUE UNIT` lines; ratios
//! are SQLCipher's time over plain SQLite's (1.00x = free).
//!
//! Run through `bench/database.sh`. FV_BENCH_DOCS sets the document count (default 100000).

use std::path::Path;
use std::time::{Duration, Instant};

use fieldvault_client::Vault;
use fieldvault_client::bench_baseline::BenchDb;
use fieldvault_core::{AccountName, DataKey};
use fieldvault_keystore::OsStore;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// A deterministic ~1 KiB document.
fn doc(i: u64) -> Map<String, Value> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let payload: String = (0..118)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:08x}", x as u32)
        })
        .collect::<Vec<_>>()
        .join("")
        .chars()
        .take(940)
        .collect();
    json!({"i": i, "site": format!("site-{}", i % 97), "payload": payload}).as_object().cloned().expect("object")
}

fn id(i: u64) -> String {
    format!("doc-{i:08}")
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct Figures {
    insert: Duration,
    warm: Duration,
    cold: Duration,
    list: Duration,
    size: u64,
}

fn file_size(path: &Path) -> u64 {
    let wal = format!("{}-wal", path.display());
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

fn workload(dir: &Path, key: Option<&DataKey>, n: u64, reads: u64, cold_reads: u64, commits: u64) -> Figures {
    let path = dir.join("bench.db");
    let mut db = BenchDb::open(&path, key).expect("open");
    let t = Instant::now();
    for batch in 0..n / 1000 {
        let rows = (batch * 1000..(batch + 1) * 1000).map(|i| (id(i), doc(i)));
        db.documents().put_many("bench", rows).expect("insert batch");
    }
    let insert = t.elapsed();

    let mut rng = Lcg(7);
    let docs = db.documents();
    let t = Instant::now();
    for _ in 0..reads {
        let d = docs.get("bench", &id(rng.next(n))).expect("read").expect("present");
        std::hint::black_box(d);
    }
    let warm = t.elapsed();

    let t = Instant::now();
    let all = docs.list("bench", None, None).expect("list");
    assert_eq!(all.documents.len() as u64, n);
    let list = t.elapsed();
    drop(all);
    drop(db);

    let t = Instant::now();
    for _ in 0..cold_reads {
        let mut db = BenchDb::open(&path, key).expect("open");
        std::hint::black_box(db.documents().get("bench", &id(rng.next(n))).expect("read"));
    }
    let cold = t.elapsed();

    let small = dir.join("commits.db");
    {
        let mut db = BenchDb::open(&small, key).expect("open");
        let mut docs = db.documents();
        for i in 0..commits {
            docs.put("single", &id(i), doc(i)).expect("put");
        }
    }
    Figures { insert, warm, cold, list, size: file_size(&small) }
}

fn unlock_to_first_read_ms() -> f64 {
    // keyring-core's in-process store stands in for the OS keystore (no D-Bus here): this
    // measures Fieldvault's own path (open, unwrap, SQLCipher open, first read), not the IPC.
    let store = OsStore::with_store(keyring_core::mock::Store::new().expect("mock store"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    let alice = AccountName::new("alice").expect("valid");
    {
        let mut v = Vault::init(&dir, &store, &alice).expect("init");
        let rows = (0..1000).map(|i| (id(i), doc(i)));
        v.documents(&alice).expect("documents").put_many("bench", rows).expect("fill");
    }
    let mut times: Vec<f64> = (0..51)
        .map(|i| {
            let t = Instant::now();
            let mut v = Vault::open(&dir).expect("open").unlock(&store).expect("unlock");
            let d = v.documents(&alice).expect("documents").get("bench", &id(i * 7 % 1000)).expect("read");
            assert!(d.is_some());
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(v);
            ms
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn figure(name: &str, value: f64, unit: &str) {
    println!("figure {name} {value:.3} {unit}");
}

fn main() {
    let n: u64 = std::env::var("FV_BENCH_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let (reads, cold_reads, commits) = (n, (n / 50).max(100), (n * 3 / 10).max(100));
    let key = DataKey::from_bytes(Zeroizing::new([0x5a; 32]));
    let tmp = tempfile::tempdir_in(std::env::var("FV_BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).expect("tempdir");
    let (pdir, edir) = (tmp.path().join("plain"), tmp.path().join("sqlcipher"));
    std::fs::create_dir_all(&pdir).expect("mkdir");
    std::fs::create_dir_all(&edir).expect("mkdir");
    // Interleave: plain, encrypted, and again, keeping the faster of each pair of runs.
    let mut best: [Option<Figures>; 2] = [None, None];
    for round in 0..2 {
        for (slot, (dir, key)) in [(&pdir, None), (&edir, Some(&key))].into_iter().enumerate() {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).expect("mkdir");
            let f = workload(dir, key, n, reads, cold_reads, commits);
            eprintln!(
                "round {round} {}: insert {:?} warm {:?} cold {:?} list {:?}",
                ["plain", "sqlcipher"][slot],
                f.insert,
                f.warm,
                f.cold,
                f.list
            );
            best[slot] = Some(match best[slot].take() {
                None => f,
                Some(b) => Figures {
                    insert: b.insert.min(f.insert),
                    warm: b.warm.min(f.warm),
                    cold: b.cold.min(f.cold),
                    list: b.list.min(f.list),
                    size: f.size,
                },
            });
        }
    }
    let [Some(p), Some(e)] = best else { unreachable!("both ran") };
    let per_s = |count: u64, d: Duration| count as f64 / d.as_secs_f64();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    figure("db_docs", n as f64, "docs");
    figure("db_insert_plain", per_s(n, p.insert), "docs/s");
    figure("db_insert_sqlcipher", per_s(n, e.insert), "docs/s");
    figure("db_insert_ratio", ratio(e.insert, p.insert), "x");
    figure("db_warm_read_plain", per_s(reads, p.warm), "reads/s");
    figure("db_warm_read_sqlcipher", per_s(reads, e.warm), "reads/s");
    figure("db_warm_read_ratio", ratio(e.warm, p.warm), "x");
    figure("db_cold_read_plain", per_s(cold_reads, p.cold), "reads/s");
    figure("db_cold_read_sqlcipher", per_s(cold_reads, e.cold), "reads/s");
    figure("db_cold_read_ratio", ratio(e.cold, p.cold), "x");
    figure("db_full_list_plain", p.list.as_secs_f64() * 1e3, "ms");
    figure("db_full_list_sqlcipher", e.list.as_secs_f64() * 1e3, "ms");
    figure("db_full_list_ratio", ratio(e.list, p.list), "x");
    figure("db_size_plain", p.size as f64 / 1048576.0, "MiB");
    figure("db_size_sqlcipher", e.size as f64 / 1048576.0, "MiB");
    figure("db_size_ratio", e.size as f64 / p.size as f64, "x");
    figure("unlock_to_first_read", unlock_to_first_read_ms(), "ms");
}
