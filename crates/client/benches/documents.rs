//! Criterion micro-benchmarks of single document operations, SQLCipher beside plain SQLite
//! (same code and pragmas). `cargo bench -p fieldvault-client --features bench-baseline
//! --bench documents`. The workload figures with ratios come from `bench/database.sh`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fieldvault_client::bench_baseline::BenchDb;
use fieldvault_core::DataKey;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

fn doc(i: u64) -> Map<String, Value> {
    json!({"i": i, "pad": "p".repeat(960)}).as_object().cloned().expect("object")
}

fn bench(c: &mut Criterion) {
    let key = DataKey::from_bytes(Zeroizing::new([0x5a; 32]));
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("documents");
    group.sample_size(30);
    for (name, key) in [("plain", None), ("sqlcipher", Some(&key))] {
        let path = tmp.path().join(format!("{name}.db"));
        let mut db = BenchDb::open(&path, key).expect("open");
        db.documents().put_many("c", (0..10_000).map(|i| (format!("d{i:05}"), doc(i)))).expect("fill");
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("warm_get", name), |b| {
            b.iter(|| {
                i = (i + 7919) % 10_000;
                db.documents().get("c", &format!("d{i:05}")).expect("get")
            })
        });
        group.bench_function(BenchmarkId::new("put", name), |b| {
            b.iter(|| {
                i = (i + 7919) % 10_000;
                db.documents().put("c", &format!("d{i:05}"), doc(i)).expect("put")
            })
        });
        drop(db);
        group.bench_function(BenchmarkId::new("cold_get", name), |b| {
            b.iter(|| {
                i = (i + 7919) % 10_000;
                let mut db = BenchDb::open(&path, key).expect("open");
                db.documents().get("c", &format!("d{i:05}")).expect("get")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
