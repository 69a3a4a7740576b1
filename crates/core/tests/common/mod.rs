//! Helpers the vector-walking tests share: hex and the `name = value` vector files.

use std::collections::BTreeMap;
use std::path::Path;

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes from hex.
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

/// A vector file's `name = value` lines (comments start with `#`).
pub fn parse(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .expect("read vector")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("name = value");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}
