use std::fs;
use std::path::{Path, PathBuf};

use fieldvault_client::{Error, Unlocked};
use rusqlite::Connection;
use serde_json::json;

use crate::fixture::{Fixture, alice};

trait PlainDatabases {
    fn plain(&self, name: &str, sql: &str) -> PathBuf;
}

impl PlainDatabases for Fixture {
    fn plain(&self, name: &str, sql: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        let conn = Connection::open(&p).expect("plain db");
        conn.execute_batch(sql).expect("fill plain db");
        p
    }
}

const GOOD: &str = "
    PRAGMA journal_mode = WAL;
    CREATE TABLE visits (id TEXT PRIMARY KEY, patient TEXT, meta TEXT, score REAL, n INTEGER, note TEXT);
    INSERT INTO visits VALUES ('v1', 'Ada', '{\"room\": 4, \"tags\": [\"a\"]}', 98.5, 3, NULL);
    INSERT INTO visits VALUES ('v2', 'Grace', 'not json', 77.0, -1, 'n');
    CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
    WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 2500) INSERT INTO items SELECT i, 'item ' || i FROM k;
    CREATE INDEX items_name ON items(name);
    CREATE VIEW v_names AS SELECT name FROM items;
";

fn count(v: &mut Unlocked, c: &str) -> usize {
    v.documents(&alice()).expect("documents").list(c, None, None).expect("list").documents.len()
}

#[test]
fn a_plaintext_database_is_imported_with_every_row_then_removed() {
    let f = Fixture::new();
    let plain = f.plain("legacy.sqlite", GOOD);
    let mut v = f.unlock();
    let mut calls = Vec::new();
    let m = v.migrate_from(&alice(), &plain, |done, total| calls.push((done, total))).expect("migrate");
    assert_eq!(m.collections.get("items"), Some(&2500));
    assert_eq!(m.collections.get("visits"), Some(&2));
    assert!(
        m.not_imported.contains(&"index items_name".to_owned()) && m.not_imported.contains(&"view v_names".to_owned())
    );
    assert_eq!(calls.last(), Some(&(2502, 2502)));
    for suffix in ["", "-wal", "-shm", "-journal"] {
        assert!(!Path::new(&format!("{}{suffix}", plain.display())).exists(), "{suffix} removed");
    }
    let docs = v.documents(&alice()).expect("documents");
    let v1 = docs.get("visits", "v1").expect("get").expect("v1");
    assert_eq!(
        serde_json::Value::Object(v1.body),
        json!({"patient": "Ada", "meta": {"room": 4, "tags": ["a"]}, "score": 98.5, "n": 3, "note": null})
    );
    let v2 = docs.get("visits", "v2").expect("get").expect("v2");
    assert_eq!(v2.body["meta"], json!("not json"));
    assert_eq!(docs.get("items", "2500").expect("get").expect("last item").body["name"], json!("item 2500"));
    // The import was on disk for good before the plaintext file went: a power cut right
    // after the migration loses no row.
    let durable = f.durable_database();
    drop(v);
    assert_eq!(count(&mut f.unlock(), "items"), 2500);
    f.power_cut(&durable);
    assert_eq!(count(&mut f.unlock(), "items"), 2500);
}

#[test]
fn shapes_that_cannot_be_imported_are_refused_and_nothing_is_written() {
    let f = Fixture::new();
    for (name, sql, why) in [
        ("noid.sqlite", "CREATE TABLE t (key TEXT, v TEXT); INSERT INTO t VALUES ('a', 'b');", "no `id` column"),
        (
            "dup.sqlite",
            "CREATE TABLE t (id TEXT, v TEXT); INSERT INTO t VALUES ('a', '1'), ('a', '2');",
            "duplicate ids",
        ),
        ("nullid.sqlite", "CREATE TABLE t (id TEXT, v TEXT); INSERT INTO t VALUES (NULL, '1');", "NULL or duplicate"),
        ("blob.sqlite", "CREATE TABLE t (id TEXT, v BLOB); INSERT INTO t VALUES ('a', x'00ff');", "binary data"),
        (
            "latin1.sqlite",
            "CREATE TABLE t (id TEXT, v TEXT); INSERT INTO t VALUES ('a', CAST(x'7b2261223a2263e9227d' AS TEXT));",
            "holds text that is not UTF-8",
        ),
        (
            "badname.sqlite",
            "CREATE TABLE \"bad name\" (id TEXT); INSERT INTO \"bad name\" VALUES ('a');",
            "not a valid collection name",
        ),
    ] {
        let plain = f.plain(name, sql);
        let before = fs::read(&plain).expect("read");
        let mut v = f.unlock();
        let err = v.migrate_from(&alice(), &plain, |_, _| {}).expect_err("refused");
        assert!(matches!(err, Error::Migration(_)), "{name}: {err:?}");
        assert!(err.to_string().contains(why), "{name}: {err}");
        assert_eq!(fs::read(&plain).expect("still there"), before, "{name}: the file is untouched");
        assert_eq!(count(&mut v, "t"), 0);
    }
}

#[test]
fn a_json_cell_becomes_an_object_only_when_parsing_it_changes_nothing() {
    // Each of these parses, but not to what it says: kept as the text it is.
    let changed = [
        ("issue", r#"{"n":123456789012345678901234,"a":1,"a":2}"#),
        ("big", r#"{"n":123456789012345678901234}"#),
        ("big-negative", r#"{"n":-9223372036854775809}"#),
        ("two-to-the-64", r#"{"n":18446744073709551616}"#),
        ("minus-zero", r#"{"z":-0}"#),
        ("long-fraction", r#"{"f":0.10000000000000000001}"#),
        ("underflow", r#"{"t":1e-400}"#),
        ("duplicate", r#"{"a":1,"b":2,"a":1}"#),
        ("duplicate-nested", r#"{"x":{"y":[{"k":true,"k":false}]}}"#),
        ("duplicate-escaped", r#"{"a":1,"\u0061":2}"#),
    ];
    // These say exactly what they parse to (key order and spacing aside).
    let exact = [
        ("plain", r#"{"room": 4, "tags": ["a", {"k": null}], "x": {"a": 1}, "y": {"a": "1"}}"#),
        ("numbers", r#"{"one":1.0,"tenth":0.1,"small":-2.5e-3,"minus_zero":-0.0,"price":1.50,"kilo":2e3}"#),
        ("limits", r#"{"max":18446744073709551615,"min":-9223372036854775808}"#),
    ];
    // Not a JSON object at all: text, as ever (1e400 is out of range, so it does not parse).
    let text = [("scalar", "123456789012345678901234"), ("huge", r#"{"h":1e400}"#), ("words", "not json")];
    let f = Fixture::new();
    let plain = f.tmp.path().join("cells.sqlite");
    let conn = Connection::open(&plain).expect("plain db");
    conn.execute_batch("CREATE TABLE cells (id TEXT PRIMARY KEY, v TEXT)").expect("table");
    for (id, cell) in changed.iter().chain(&exact).chain(&text) {
        conn.execute("INSERT INTO cells VALUES (?1, ?2)", [id, cell]).expect("row");
    }
    drop(conn);
    let mut v = f.unlock();
    let m = v.migrate_from(&alice(), &plain, |_, _| {}).expect("migrate");
    assert_eq!(m.collections.get("cells"), Some(&16));
    let mut kept: Vec<&str> = m.kept_as_text.iter().map(|k| k.id.as_str()).collect();
    kept.sort_unstable();
    let mut expected: Vec<&str> = changed.iter().map(|(id, _)| *id).collect();
    expected.sort_unstable();
    assert_eq!(kept, expected, "every changed cell is reported, and only those");
    assert!(m.kept_as_text.iter().all(|k| k.collection == "cells" && k.column == "v"));
    assert!(!plain.exists());

    drop(v);
    let mut v = f.unlock();
    let docs = v.documents(&alice()).expect("documents");
    let field = |id: &str| docs.get("cells", id).expect("get").expect(id).body["v"].clone();
    for (id, cell) in changed.iter().chain(&text) {
        assert_eq!(field(id), json!(cell), "{id}: the text as it was");
    }
    assert_eq!(field("plain"), json!({"room": 4, "tags": ["a", {"k": null}], "x": {"a": 1}, "y": {"a": "1"}}));
    // Written back, each number says what the cell said (1.0 stays a float, -0.0 keeps its sign).
    let numbers = field("numbers");
    let written = |k: &str| numbers[k].to_string();
    assert_eq!(
        ["one", "tenth", "small", "minus_zero", "price", "kilo"].map(written),
        ["1.0", "0.1", "-0.0025", "-0.0", "1.5", "2000.0"]
    );
    let limits = field("limits");
    assert_eq!((limits["max"].as_u64(), limits["min"].as_i64()), (Some(u64::MAX), Some(i64::MIN)));
}

#[test]
fn a_failure_midway_leaves_no_half_import_and_the_file_in_place() {
    let f = Fixture::new();
    // 3000 good rows in `a`, then a binary value in the last row of `b`: found only while
    // importing, after `a` is already inserted in the transaction.
    let plain = f.plain(
        "late.sqlite",
        "CREATE TABLE a (id INTEGER, v TEXT);
         WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 3000) INSERT INTO a SELECT i, 'x' FROM k;
         CREATE TABLE b (id TEXT, v);
         INSERT INTO b VALUES ('ok', 'fine'), ('bad', x'01');",
    );
    let mut v = f.unlock();
    let err = v.migrate_from(&alice(), &plain, |_, _| {}).expect_err("refused midway");
    assert!(err.to_string().contains("binary data"), "{err}");
    assert!(plain.exists());
    assert_eq!(count(&mut v, "a"), 0, "no half import");
    drop(v);
    assert_eq!(count(&mut f.unlock(), "a"), 0);
}

#[test]
fn running_again_after_a_kill_between_commit_and_removal_finishes_the_job() {
    let f = Fixture::new();
    let sql = "CREATE TABLE notes (id TEXT, text TEXT); INSERT INTO notes VALUES ('n1', 'hello'), ('n2', 'world');";
    let first = f.plain("first.sqlite", sql);
    let mut v = f.unlock();
    v.migrate_from(&alice(), &first, |_, _| {}).expect("migrate");
    // The same file again, as if the process died after the commit but before the unlink.
    let again = f.plain("again.sqlite", sql);
    let m = v.migrate_from(&alice(), &again, |_, _| {}).expect("identical rows are already imported");
    assert_eq!(m.collections.get("notes"), Some(&2));
    assert!(!again.exists());
    assert_eq!(count(&mut v, "notes"), 2);
    // A different row under an existing id is a conflict, not an overwrite.
    let clash =
        f.plain("clash.sqlite", "CREATE TABLE notes (id TEXT, text TEXT); INSERT INTO notes VALUES ('n1', 'changed');");
    let err = v.migrate_from(&alice(), &clash, |_, _| {}).expect_err("conflict");
    assert!(err.to_string().contains("already holds a different document"), "{err}");
    assert_eq!(
        v.documents(&alice()).expect("d").get("notes", "n1").expect("get").expect("n1").body["text"],
        json!("hello")
    );
}

#[test]
fn an_encrypted_or_missing_file_is_not_a_migration_source() {
    let f = Fixture::new();
    let mut v = f.unlock();
    v.documents(&alice())
        .expect("documents")
        .put("c", "x", json!({"a": 1}).as_object().cloned().expect("obj"))
        .expect("put");
    let own = f.tmp.path().join("v/accounts/alice/documents.db");
    let copy = f.tmp.path().join("copy.db");
    fs::copy(&own, &copy).expect("copy");
    assert!(
        v.migrate_from(&alice(), &copy, |_, _| {})
            .expect_err("encrypted")
            .to_string()
            .contains("not a plaintext SQLite database")
    );
    assert!(v.migrate_from(&alice(), &own, |_, _| {}).is_err(), "the vault's own database");
    assert!(matches!(v.migrate_from(&alice(), &f.tmp.path().join("missing.sqlite"), |_, _| {}), Err(Error::Io { .. })));
}
