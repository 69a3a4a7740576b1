//! The same document workload on SQLCipher (the vault's settings) and on plain SQLite (the
//! same code and pragmas, no key), in one run, the two sides in alternating blocks. Prints
//! `figure NAME VALUE UNIT` lines; ratios are SQLCipher's time over plain SQLite's (1.00x =
//! free).
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
    doc_sized(i, 940)
}

/// A deterministic document with a `payload` string of `len` hex characters.
fn doc_sized(i: u64, len: usize) -> Map<String, Value> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let payload: String = (0..len.div_ceil(8))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{:08x}", x as u32)
        })
        .collect::<Vec<_>>()
        .join("")
        .chars()
        .take(len)
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

/// Runs `f` on each side in turn and adds its time to that side's total: the two sides of
/// every figure are measured in alternating blocks a fraction of a second apart, so the
/// drift of this machine's speed (up to 2x within a minute) falls on both alike.
fn alternate<T>(sides: &mut [T; 2], totals: &mut [Duration; 2], mut f: impl FnMut(usize, &mut T)) {
    for (s, side) in sides.iter_mut().enumerate() {
        let t = Instant::now();
        f(s, side);
        totals[s] += t.elapsed();
    }
}

/// The workload on plain SQLite (side 0) and SQLCipher (side 1), block by block.
fn workload(dirs: [&Path; 2], key: &DataKey, n: u64, reads: u64, cold_reads: u64, commits: u64) -> [Figures; 2] {
    let keys = [None, Some(key)];
    let paths = dirs.map(|d| d.join("bench.db"));
    let mut dbs = [0, 1].map(|s| BenchDb::open(&paths[s], keys[s]).expect("open"));
    let mut t = [Duration::ZERO; 2];
    for batch in 0..n / 1000 {
        alternate(&mut dbs, &mut t, |_, db| {
            let rows = (batch * 1000..(batch + 1) * 1000).map(|i| (id(i), doc(i)));
            db.documents().put_many("bench", rows).expect("insert batch");
        });
    }
    let insert = t;

    // The same random ids on both sides, 1000 per block.
    let mut t = [Duration::ZERO; 2];
    for block in 0..reads.div_ceil(1000) {
        alternate(&mut dbs, &mut t, |_, db| {
            let mut rng = Lcg(7 + block);
            let docs = db.documents();
            for _ in 0..1000.min(reads - block * 1000) {
                let d = docs.get("bench", &id(rng.next(n))).expect("read").expect("present");
                std::hint::black_box(d);
            }
        });
    }
    let warm = t;

    let mut t = [Duration::ZERO; 2];
    for _ in 0..3 {
        alternate(&mut dbs, &mut t, |_, db| {
            let all = db.documents().list("bench", None, None).expect("list");
            assert_eq!(all.documents.len() as u64, n);
        });
    }
    let list = t.map(|d| d / 3);
    drop(dbs);

    // Each read on a fresh connection (open, key, first read), 50 per block.
    let mut t = [Duration::ZERO; 2];
    for block in 0..cold_reads.div_ceil(50) {
        alternate(&mut [0usize, 1], &mut t, |_, s| {
            let mut rng = Lcg(1000 + block);
            for _ in 0..50.min(cold_reads - block * 50) {
                let mut db = BenchDb::open(&paths[*s], keys[*s]).expect("open");
                std::hint::black_box(db.documents().get("bench", &id(rng.next(n))).expect("read"));
            }
        });
    }
    let cold = t;

    let small = dirs.map(|d| d.join("commits.db"));
    {
        let mut dbs = [0, 1].map(|s| BenchDb::open(&small[s], keys[s]).expect("open"));
        for i in 0..commits {
            for db in &mut dbs {
                db.documents().put("single", &id(i), doc(i)).expect("put");
            }
        }
    }
    [0, 1].map(|s| Figures {
        insert: insert[s],
        warm: warm[s],
        cold: cold[s],
        list: list[s],
        size: file_size(&small[s]),
    })
}

/// File size, SQLCipher over plain, of 3000 documents of each payload size (numbered from
/// 10000, so `i` has five digits as in most of the 30k-commit workload), inserted in batches
/// of 500: how the 48 bytes each encrypted page reserves (IV and HMAC) fall against the
/// number of rows that fit a page.
fn size_sweep(dirs: [&Path; 2], key: &DataKey) -> Vec<(usize, f64)> {
    [100, 200, 500, 940, 1500, 2000, 3000, 4000, 6000]
        .into_iter()
        .map(|len| {
            let paths = dirs.map(|d| d.join(format!("sweep-{len}.db")));
            for (s, k) in [None, Some(key)].into_iter().enumerate() {
                let mut db = BenchDb::open(&paths[s], k).expect("open");
                for batch in 0..6 {
                    let rows = (10_000 + batch * 500..10_000 + (batch + 1) * 500).map(|i| (id(i), doc_sized(i, len)));
                    db.documents().put_many("bench", rows).expect("insert batch");
                }
            }
            (len, file_size(&paths[1]) as f64 / file_size(&paths[0]) as f64)
        })
        .collect()
}

/// Median of 51 unlocks, each followed by one read: vault open, KEK from `store`, key
/// unwraps, SQLCipher open, first read. With keyring-core's in-process store this is
/// Fieldvault's own path; with the platform store (a real Secret Service over D-Bus,
/// `bench/database.sh` starts one) it includes the keystore's IPC.
fn unlock_to_first_read_ms(store: &OsStore) -> f64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v");
    let alice = AccountName::new("alice").expect("valid");
    {
        let mut v = Vault::init(&dir, store, &alice).expect("init");
        let rows = (0..1000).map(|i| (id(i), doc(i)));
        v.documents(&alice).expect("documents").put_many("bench", rows).expect("fill");
    }
    let mut times: Vec<f64> = (0..51)
        .map(|i| {
            let t = Instant::now();
            let mut v = Vault::open(&dir).expect("open").unlock(store).expect("unlock");
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

/// Distinct pages a point read on a fresh connection must decrypt and authenticate: page 1
/// (the schema), then every level of the `(collection, id)` index and of the table, counted
/// with SQLite's `dbstat` on the plain file (the same b-trees as the encrypted one). SQLite
/// reads page 1 a second time when it opens the WAL; that read is left out, so the floor
/// below stays a floor.
fn pages_per_cold_read(plain: &Path) -> u64 {
    let conn = rusqlite::Connection::open(plain).expect("open the plain file");
    let levels = |name: &str| -> u32 {
        conn.query_row(
            "SELECT max(length(path) - length(replace(path, '/', ''))) FROM dbstat \
             WHERE name = ?1 AND pagetype != 'overflow'",
            [name],
            |r| r.get(0),
        )
        .expect("dbstat")
    };
    1 + u64::from(levels("documents") + levels("sqlite_autoindex_documents_1"))
}

/// Microseconds this machine needs, at the least, to authenticate and decrypt one 8 KiB
/// SQLCipher page: HMAC-SHA256 over its ciphertext, IV and page number, and AES-256-CBC
/// over its ciphertext, with aws-lc-rs (SHA-NI and AES-NI, no per-call provider lookups:
/// no slower than SQLCipher's OpenSSL calls). Median of 9 runs of 2000 pages.
fn page_crypto_us() -> f64 {
    use aws_lc_rs::cipher::{AES_256, DecryptingKey, DecryptionContext, UnboundCipherKey};
    use aws_lc_rs::{hmac, iv::FixedLength};
    let mac = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
    let aes = DecryptingKey::cbc(UnboundCipherKey::new(&AES_256, &[9; 32]).expect("key")).expect("cbc");
    let mut page = vec![0x5au8; 8192];
    let mut runs: Vec<f64> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for n in 0..2000u32 {
                page[8168..8172].copy_from_slice(&n.to_le_bytes());
                std::hint::black_box(hmac::sign(&mac, &page[..8192 - 48 + 16 + 4]));
                let iv = FixedLength::from([n as u8; 16]);
                std::hint::black_box(aes.decrypt(&mut page[..8192 - 48], DecryptionContext::Iv128(iv)).expect("cbc"));
            }
            t.elapsed().as_secs_f64() * 1e6 / 2000.0
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn figure(name: &str, value: f64, unit: &str) {
    println!("figure {name} {value:.3} {unit}");
}

fn main() {
    if std::env::var("FV_BENCH_ONLY").as_deref() == Ok("unlock-secret-service") {
        let store = OsStore::platform().expect("a Secret Service: run inside a D-Bus session with one");
        figure("unlock_to_first_read_secret_service", unlock_to_first_read_ms(&store), "ms");
        return;
    }
    let n: u64 = std::env::var("FV_BENCH_DOCS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let (reads, cold_reads, commits) = (n, (n / 50).max(100), (n * 3 / 10).max(100));
    let key = DataKey::from_bytes(Zeroizing::new([0x5a; 32]));
    let tmp = tempfile::tempdir_in(std::env::var("FV_BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).expect("tempdir");
    let (pdir, edir) = (tmp.path().join("plain"), tmp.path().join("sqlcipher"));
    std::fs::create_dir_all(&pdir).expect("mkdir");
    std::fs::create_dir_all(&edir).expect("mkdir");
    let [p, e] = workload([&pdir, &edir], &key, n, reads, cold_reads, commits);
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
    // The least any SQLCipher with its per-page HMAC could add to a plain cold read here:
    // the page cryptography alone, with none of SQLCipher's per-connection work. Whenever
    // this floor is above the 1.15x target, no tuning can meet it on this machine.
    let (pages, page_us) = (pages_per_cold_read(&pdir.join("bench.db")), page_crypto_us());
    let plain_us = p.cold.as_secs_f64() * 1e6 / cold_reads as f64;
    figure("db_cold_read_pages", pages as f64, "pages");
    figure("db_page_crypto", page_us, "us");
    figure("db_cold_read_floor_ratio", (plain_us + pages as f64 * page_us) / plain_us, "x");
    figure("db_full_list_plain", p.list.as_secs_f64() * 1e3, "ms");
    figure("db_full_list_sqlcipher", e.list.as_secs_f64() * 1e3, "ms");
    figure("db_full_list_ratio", ratio(e.list, p.list), "x");
    figure("db_size_plain", p.size as f64 / 1048576.0, "MiB");
    figure("db_size_sqlcipher", e.size as f64 / 1048576.0, "MiB");
    figure("db_size_ratio", e.size as f64 / p.size as f64, "x");
    for (len, ratio) in size_sweep([&pdir, &edir], &key) {
        figure(&format!("db_size_ratio_payload_{len}"), ratio, "x");
    }
    let in_process = OsStore::with_store(keyring_core::mock::Store::new().expect("mock store"));
    figure("unlock_to_first_read", unlock_to_first_read_ms(&in_process), "ms");
}
