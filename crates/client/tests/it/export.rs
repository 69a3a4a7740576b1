//! Export and import (docs/formats/export.md) on real vaults, with the `age` command-line
//! tool (Debian's `age` package, installed by scripts/setup.sh) decrypting what the SDK
//! writes.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use fieldvault_client::{DocRef, Error, ExportOptions, ExportTo, ImportKey, ImportReport, Unlocked};
use fieldvault_core::Passphrase;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::fixture::{Fixture, alice};

/// A new age identity from `age-keygen`: (identity file, its recipient).
pub(crate) fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen").arg("-o").arg(&path).output().expect("age-keygen runs (apt install age)");
    assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let text = fs::read_to_string(&path).expect("identity");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .to_owned();
    (path, recipient)
}

/// Decrypts `file` with the `age` tool and `identity`.
pub(crate) fn age_decrypt(identity: &Path, file: &Path) -> Vec<u8> {
    let out = Command::new("age").arg("-d").arg("-i").arg(identity).arg(file).output().expect("age runs");
    assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A tar's entries: path and bytes, in order.
fn tar_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .expect("a tar")
        .map(|e| {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").to_string_lossy().into_owned();
            let mut v = Vec::new();
            e.read_to_end(&mut v).expect("read entry");
            (path, v)
        })
        .collect()
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

/// A vault with two collections of varied documents and three attachments (one large
/// enough for several attachment chunks and age chunks).
pub(crate) struct Source {
    pub(crate) f: Fixture,
    pub(crate) attachments: BTreeMap<(String, String), Vec<Vec<u8>>>,
}

pub(crate) fn source() -> Source {
    let f = Fixture::new();
    let mut v = f.unlock();
    let mut docs = v.documents(&alice()).expect("documents");
    docs.put("notes", "n1", obj(json!({"text": "caf\u{e9} \u{1F600}", "tags": ["a", "b"], "n": 1.5e300})))
        .expect("put");
    docs.put("notes", "n2", obj(json!({"nested": {"z": null, "a": [1, {"b": true}]}, "s": "line\nbreak\t\"q\""})))
        .expect("put");
    docs.put("notes", "n2", obj(json!({"nested": {"z": null, "a": [1, {"b": true}]}, "s": "v2"}))).expect("put v2");
    docs.put("visits", "v/1 with spaces", obj(json!({"site": "north", "count": 3}))).expect("put");
    docs.put("visits", "v2", obj(json!({}))).expect("put");
    let mut attachments: BTreeMap<(String, String), Vec<Vec<u8>>> = BTreeMap::new();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (coll, id, bytes) in
        [("notes", "n1", big), ("notes", "n1", b"second photo".to_vec()), ("visits", "v2", b"scan".to_vec())]
    {
        let p = f.tmp.path().join(format!("src-{}", attachments.values().map(Vec::len).sum::<usize>()));
        fs::write(&p, &bytes).expect("source");
        v.attach(&alice(), coll, id, &p).expect("attach");
        attachments.entry((coll.into(), id.into())).or_default().push(bytes);
    }
    Source { f, attachments }
}

fn export(v: &mut Unlocked, to: ExportTo, with_attachments: bool, out: &Path) -> fieldvault_client::ExportReport {
    let file = fs::File::create(out).expect("create export");
    v.export(&alice(), ExportOptions { collections: vec![], with_attachments, to }, file, &mut |_, _| {})
        .expect("export")
}

fn identity(path: &Path) -> ImportKey {
    ImportKey::Identities(Zeroizing::new(fs::read_to_string(path).expect("identity")))
}

fn import(v: &mut Unlocked, file: &Path, key: ImportKey) -> Result<ImportReport, Error> {
    v.import(&alice(), fs::File::open(file).expect("open export"), key, &mut |_, _| {})
}

/// Every document of the vault, as (collection, id) -> body bytes.
pub(crate) fn documents(v: &mut Unlocked) -> BTreeMap<(String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    for c in ["notes", "visits", "other"] {
        for d in v.documents(&alice()).expect("docs").list(c, None, None).expect("list").documents {
            out.insert((c.to_owned(), d.id), serde_json::to_vec(&d.body).expect("json"));
        }
    }
    out
}

/// Every attachment's bytes per document, sorted, read back through the SDK.
fn attachment_bytes(v: &mut Unlocked, dir: &Path) -> BTreeMap<(String, String), Vec<Vec<u8>>> {
    let mut out: BTreeMap<(String, String), Vec<Vec<u8>>> = BTreeMap::new();
    for (c, id) in documents(v).into_keys() {
        for a in v.attachments_of(&alice(), &c, &id).expect("attachments") {
            let p = dir.join(format!("out-{}", a.id));
            v.attachment_get(&alice(), &a.id, &p).expect("get");
            out.entry((c.clone(), id.clone())).or_default().push(fs::read(&p).expect("read"));
        }
    }
    for l in out.values_mut() {
        l.sort();
    }
    out
}

fn sorted(mut m: BTreeMap<(String, String), Vec<Vec<u8>>>) -> BTreeMap<(String, String), Vec<Vec<u8>>> {
    for l in m.values_mut() {
        l.sort();
    }
    m
}

#[test]
fn export_to_a_recipient_opens_with_the_age_tool_and_reimports_byte_for_byte() {
    let s = source();
    let tmp = s.f.tmp.path();
    let (id_file, recipient) = keygen(tmp, "id.txt");
    let out = tmp.join("export.age");
    let mut a = s.f.unlock();
    let report = export(&mut a, ExportTo::Recipients(vec![recipient]), true, &out);
    assert_eq!(report.documents, 4);
    assert_eq!(report.attachments, 3);
    assert_eq!(report.collections, [("notes".to_string(), 2), ("visits".to_string(), 2)]);

    // The age tool opens it; inside, the documented layout.
    let plain = age_decrypt(&id_file, &out);
    let entries = tar_entries(&plain);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..3], ["manifest.json", "documents/notes.jsonl", "documents/visits.jsonl"]);
    assert_eq!(names.len(), 6);
    assert!(names[3..].iter().all(|n| n.starts_with("attachments/")));
    let manifest: Value = serde_json::from_slice(&entries[0].1).expect("manifest");
    assert_eq!(manifest["layout"], 1);
    assert_eq!(manifest["collections"][0]["documents"], 2);
    let lines: Vec<Value> = entries[1]
        .1
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("line"))
        .collect();
    assert_eq!(lines[1]["id"], "n2");
    assert_eq!(lines[1]["version"], 2);
    assert_eq!(lines[1]["body"]["s"], "v2");
    let mut inside: Vec<Vec<u8>> = entries[3..].iter().map(|(_, b)| b.clone()).collect();
    inside.sort();
    let mut want: Vec<Vec<u8>> = s.attachments.values().flatten().cloned().collect();
    want.sort();
    assert_eq!(inside, want, "the attachments' plaintext, byte for byte");

    // A fresh vault imports it identically.
    let fresh = Fixture::new();
    let mut b = fresh.unlock();
    let r = import(&mut b, &out, identity(&id_file)).expect("import");
    assert_eq!((r.added, r.attachments_added, r.attachments_skipped), (4, 3, 0));
    assert!(r.skipped.is_empty() && r.conflicting.is_empty());
    let original = documents(&mut a);
    assert_eq!(documents(&mut b), original, "documents byte for byte");
    assert_eq!(attachment_bytes(&mut b, tmp), sorted(s.attachments.clone()), "attachments byte for byte");
    // New attachment ids, queued for upload; every document a local write in the outbox.
    let a_ids: Vec<String> = a.attachments_of(&alice(), "notes", "n1").expect("a").into_iter().map(|x| x.id).collect();
    for att in b.attachments_of(&alice(), "notes", "n1").expect("b") {
        assert!(!a_ids.contains(&att.id), "an imported attachment gets a new id");
        assert!(att.upload_pending && att.downloaded);
    }
    let outbox: Vec<(String, String)> =
        b.outbox(&alice()).expect("outbox").into_iter().map(|e| (e.collection, e.id)).collect();
    let mut keys: Vec<(String, String)> = original.keys().cloned().collect();
    let mut got = outbox.clone();
    got.sort();
    keys.sort();
    assert_eq!(got, keys);
    // Imported documents start at version 1 here.
    assert_eq!(b.documents(&alice()).expect("d").get("notes", "n2").expect("get").expect("doc").version, 1);

    // Again: every document skipped (same body), no attachment duplicated.
    let r = import(&mut b, &out, identity(&id_file)).expect("import again");
    assert_eq!((r.added, r.skipped.len(), r.attachments_added, r.attachments_skipped), (0, 4, 0, 3));
    assert_eq!(b.attachments_of(&alice(), "notes", "n1").expect("b").len(), 2);

    // A document edited here conflicts and is left as it is here.
    b.documents(&alice()).expect("d").put("visits", "v2", obj(json!({"mine": 1}))).expect("edit");
    let r = import(&mut b, &out, identity(&id_file)).expect("import a third time");
    assert_eq!(r.conflicting, [DocRef { collection: "visits".into(), id: "v2".into() }]);
    assert_eq!(r.skipped.len(), 3);
    let here = b.documents(&alice()).expect("d").get("visits", "v2").expect("get").expect("doc");
    assert_eq!(Value::Object(here.body), json!({"mine": 1}), "never overwritten");
}

#[test]
fn export_to_a_passphrase_opens_with_age_scrypt_and_reimports() {
    let s = source();
    let tmp = s.f.tmp.path();
    let out = tmp.join("export.age");
    let mut a = s.f.unlock();
    let pass = || Passphrase::new(Zeroizing::new("correct horse battery staple export".into()));
    export(&mut a, ExportTo::Passphrase(pass()), false, &out);
    // The age CLI reads a passphrase from a terminal only: decrypt with the age crate's
    // scrypt identity (the same file format) instead.
    let bytes = fs::read(&out).expect("read");
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> scrypt "), "an age scrypt file");
    let dec = age::Decryptor::new(bytes.as_slice()).expect("age header");
    let id =
        age::scrypt::Identity::new(age::secrecy::SecretString::from("correct horse battery staple export".to_owned()));
    let mut plain = Vec::new();
    dec.decrypt(std::iter::once(&id as &dyn age::Identity)).expect("passphrase").read_to_end(&mut plain).expect("read");
    let entries = tar_entries(&plain);
    assert_eq!(entries.len(), 3, "no attachments without with_attachments");

    let fresh = Fixture::new();
    let mut b = fresh.unlock();
    let wrong = Passphrase::new(Zeroizing::new("not it".into()));
    assert!(matches!(import(&mut b, &out, ImportKey::Passphrase(wrong)), Err(Error::ExportKeyRefused(_))));
    let r = import(&mut b, &out, ImportKey::Passphrase(pass())).expect("import");
    assert_eq!((r.added, r.attachments_added), (4, 0));
    assert_eq!(documents(&mut b), documents(&mut a));
}

#[test]
fn a_chosen_collection_only_and_a_bad_recipient_is_refused() {
    let s = source();
    let tmp = s.f.tmp.path();
    let (id_file, recipient) = keygen(tmp, "id.txt");
    let mut a = s.f.unlock();
    let out = tmp.join("visits.age");
    let file = fs::File::create(&out).expect("create");
    let opts = ExportOptions {
        collections: vec!["visits".into()],
        with_attachments: true,
        to: ExportTo::Recipients(vec![recipient]),
    };
    let r = a.export(&alice(), opts, file, &mut |_, _| {}).expect("export");
    assert_eq!((r.documents, r.attachments), (2, 1));
    let names: Vec<String> = tar_entries(&age_decrypt(&id_file, &out)).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[..2], ["manifest.json", "documents/visits.jsonl"]);

    let mut sink = Vec::new();
    let opts = ExportOptions {
        collections: vec![],
        with_attachments: false,
        to: ExportTo::Recipients(vec!["age1notarecipient".into()]),
    };
    assert!(matches!(a.export(&alice(), opts, &mut sink, &mut |_, _| {}), Err(Error::InvalidExport(_))));
    assert!(sink.is_empty(), "nothing written");
}

/// What the vault holds, to compare before and after a refused import.
fn state(f: &Fixture) -> (BTreeMap<(String, String), Vec<u8>>, usize, usize) {
    let mut v = f.unlock();
    let docs = documents(&mut v);
    let outbox = v.outbox(&alice()).expect("outbox").len();
    drop(v);
    let files = fs::read_dir(f.vault().join("accounts/alice/files")).map(|d| d.count()).unwrap_or(0);
    (docs, outbox, files)
}

#[test]
fn truncated_tampered_and_foreign_exports_are_refused_with_nothing_imported() {
    let s = source();
    let tmp = s.f.tmp.path();
    let (id_file, recipient) = keygen(tmp, "id.txt");
    let (other_id, _) = keygen(tmp, "other.txt");
    let out = tmp.join("export.age");
    export(&mut s.f.unlock(), ExportTo::Recipients(vec![recipient.clone()]), true, &out);
    let good = fs::read(&out).expect("read");

    let target = Fixture::new();
    {
        let mut v = target.unlock();
        v.documents(&alice()).expect("d").put("other", "mine", obj(json!({"keep": true}))).expect("put");
    }
    let before = state(&target);
    let bad = tmp.join("bad.age");
    let try_import = |bytes: &[u8], key: ImportKey| {
        fs::write(&bad, bytes).expect("write");
        let mut v = target.unlock();
        let r = import(&mut v, &bad, key);
        drop(v);
        assert_eq!(state(&target), before, "the vault is untouched");
        r
    };
    // Truncated anywhere: in the header, in the documents, in an attachment, the last bytes.
    for cut in [10, 200, good.len() / 3, good.len() / 2, good.len() - 1000, good.len() - 1] {
        let r = try_import(&good[..cut], identity(&id_file));
        assert!(matches!(r, Err(Error::ExportDamaged(_))), "cut at {cut}: {r:?}");
    }
    // A flipped bit in the documents, in an attachment, in the last chunk.
    for at in [400, good.len() / 2, good.len() - 20] {
        let mut t = good.clone();
        t[at] ^= 0x10;
        let r = try_import(&t, identity(&id_file));
        assert!(matches!(r, Err(Error::ExportDamaged(_))), "flip at {at}: {r:?}");
    }
    // Another identity, a passphrase for a recipient's export, not an age file at all.
    assert!(matches!(try_import(&good, identity(&other_id)), Err(Error::ExportKeyRefused(_))));
    let p = Passphrase::new(Zeroizing::new("whatever".into()));
    assert!(matches!(try_import(&good, ImportKey::Passphrase(p)), Err(Error::ExportKeyRefused(_))));
    assert!(matches!(try_import(b"PK\x03\x04 a zip", identity(&id_file)), Err(Error::ExportDamaged(_))));

    // An export of a newer layout version (the same file with `"layout": 2`, re-encrypted
    // with the age tool) is refused by name.
    let plain = age_decrypt(&id_file, &out);
    let text = String::from_utf8_lossy(&plain[512..1024]).into_owned();
    assert!(text.contains("\"layout\": 1,"), "the manifest is pretty-printed: {text}");
    let at = 512 + text.find("\"layout\": 1,").expect("found") + "\"layout\": ".len();
    let mut newer = plain.clone();
    newer[at] = b'2';
    let newer_plain = tmp.join("newer.tar");
    fs::write(&newer_plain, &newer).expect("write");
    let enc = Command::new("age").arg("-r").arg(&recipient).arg(&newer_plain).output().expect("age");
    assert!(enc.status.success());
    let r = try_import(&enc.stdout, identity(&id_file));
    assert!(matches!(r, Err(Error::ExportNewerLayout { found: 2, supported: 1 })), "{r:?}");
}

/// The fenced block after `<!-- example: NAME -->` in docs/formats/export.md.
fn example(doc: &str, name: &str) -> String {
    let marker = format!("<!-- example: {name} -->");
    let after = &doc[doc.find(&marker).expect("the example is in the page") + marker.len()..];
    let start = after.find("```").expect("a fenced block");
    let body = &after[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].to_owned()
}

#[test]
fn the_worked_example_of_the_format_page_is_what_the_code_writes() {
    let page = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/formats/export.md")).expect("page");
    let f = Fixture::new();
    let tmp = f.tmp.path();
    let mut v = f.unlock();
    let mut docs = v.documents(&alice()).expect("documents");
    docs.put("notes", "n1", obj(json!({"text": "hello"}))).expect("put");
    docs.put("notes", "n2", obj(json!({"done": false}))).expect("put");
    docs.put("notes", "n2", obj(json!({"done": true, "tags": ["a"]}))).expect("put");
    let src = tmp.join("hello.txt");
    fs::write(&src, b"hello, age\n").expect("write");
    let att = v.attach(&alice(), "notes", "n1", &src).expect("attach");
    let (id_file, recipient) = keygen(tmp, "id.txt");
    let out = tmp.join("notes.age");
    export(&mut v, ExportTo::Recipients(vec![recipient]), true, &out);

    let plain = age_decrypt(&id_file, &out);
    assert_eq!(plain.len(), 4096, "the size the page states");
    let entries = tar_entries(&plain);
    let manifest = String::from_utf8(entries[0].1.clone()).expect("utf-8");
    assert!(page.contains(&format!(" {} 1970-01-01 00:00 manifest.json", manifest.len())), "the listing's size");
    let created = serde_json::from_str::<Value>(&manifest).expect("json")["created_at_ms"].to_string();
    let normalized = manifest
        .replace(&att.id, "0123456789abcdef0123456789abcdef")
        .replace(&format!("\"created_at_ms\": {created}"), "\"created_at_ms\": 1765000000000");
    assert_eq!(normalized, example(&page, "manifest.json"));
    assert_eq!(entries[1].0, "documents/notes.jsonl");
    assert_eq!(String::from_utf8(entries[1].1.clone()).expect("utf-8"), example(&page, "documents/notes.jsonl"));
    assert_eq!(entries[2], (format!("attachments/{}", att.id), b"hello, age\n".to_vec()));
}
