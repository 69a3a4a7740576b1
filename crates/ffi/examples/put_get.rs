//! The Rust side of bench/bindings.sh: N put+get pairs of a 1 KiB document through the
//! facade the bindings call, timed. Prints `figure bindings_rust_put_get_us MICROSECONDS us`.

use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("v").to_str().expect("utf-8").to_owned();
    let v = fieldvault_ffi::Vault::init_with_passphrase(
        dir,
        "default".into(),
        "marble quokka seventy umbrella bench".into(),
        600,
    )
    .expect("init");
    let body = format!(r#"{{"text":"{}"}}"#, "x".repeat(1012));
    // A first round, as in every language's side (the JVM's JIT warms up on it).
    for i in 0..n {
        v.put("warm".into(), format!("d{i}"), body.clone()).expect("put");
        v.get("warm".into(), format!("d{i}")).expect("get");
    }
    let start = Instant::now();
    for i in 0..n {
        let id = format!("d{i}");
        v.put("bench".into(), id.clone(), body.clone()).expect("put");
        assert!(v.get("bench".into(), id).expect("get").is_some());
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("figure bindings_rust_put_get_us {per:.1} us");
    v.close();
}
