//! The worked example of `docs/formats/audit.md`, recomputed: the canonical bytes and hashes
//! the page prints are the ones the code makes.

use fieldvault_core::audit::{AuditEvent, GENESIS_PREV_HASH, hex, verify};

const PAGE: &str = include_str!("../../../docs/formats/audit.md");

#[test]
fn the_format_pages_worked_example_is_what_the_code_computes() {
    let first = AuditEvent::new(1_800_000_000, "cli:root", "user.add", "alice")
        .with("roles", serde_json::json!(["inspector"]))
        .chain(1, GENESIS_PREV_HASH)
        .expect("chains");
    let second = AuditEvent::new(1_800_000_060, "user:alice", "login", "alice")
        .with("address", "192.0.2.7")
        .with("device", "d-5f1c")
        .chain(2, first.hash)
        .expect("chains");
    for record in [&first, &second] {
        let canonical = String::from_utf8(record.canonical().expect("canonical")).expect("utf-8");
        assert!(PAGE.contains(&canonical), "the page shows the canonical bytes {canonical}");
        assert!(PAGE.contains(&hex(&record.hash)), "the page shows the hash {}", hex(&record.hash));
        let line = serde_json::to_string(&record.to_export_json()).expect("json");
        assert!(PAGE.contains(&line), "the page shows the export line {line}");
    }
    assert_eq!(verify([&first, &second]).expect("verifies").count, 2);
}
