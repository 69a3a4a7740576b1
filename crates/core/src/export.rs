//! The export layout (docs/formats/export.md): what an age-encrypted export holds once
//! decrypted. An uncompressed tar whose entries come in a fixed order:
//!
//! 1. `manifest.json`: the [`Manifest`] (layout version, per-collection counts and sizes,
//!    the attachment list);
//! 2. `documents/<collection>.jsonl` for each collection of the manifest, in its order: one
//!    [`ExportedDocument`] per line, ids strictly increasing;
//! 3. `attachments/<id>` for each attachment of the manifest, in its order: the plaintext.
//!
//! [`ExportWriter`] writes it from a [`Manifest`] computed beforehand, streaming every
//! entry (no entry is held in memory); [`read_export`] reads it back in one pass, calling an
//! [`ExportVisitor`], and refuses a newer layout version, an entry out of order, and any
//! count or size that disagrees with the manifest. Pure: only `Read` and `Write`.

use std::io::{self, BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;
use crate::names::{MAX_DOCUMENT_BYTES, check_collection, check_id};

/// The layout version this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// The manifest's `format` field.
pub const FORMAT_NAME: &str = "fieldvault-export";
/// The first entry's path.
pub const MANIFEST_PATH: &str = "manifest.json";
/// The largest manifest read (it lists every attachment: about 150 bytes each).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The longest line of a `.jsonl` entry: a document of [`MAX_DOCUMENT_BYTES`] plus its id
/// (at most 256 bytes, escaped at most 6 to 1), version and the keys.
pub const MAX_LINE_BYTES: usize = MAX_DOCUMENT_BYTES + 2048;

const BLOCK: usize = 512;

/// The first entry of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`LAYOUT_VERSION`] when written by this build.
    pub layout: u32,
    /// When the export was made, Unix milliseconds (informative).
    pub created_at_ms: i64,
    /// The collections exported, names strictly increasing.
    pub collections: Vec<CollectionEntry>,
    /// The attachments exported, ids strictly increasing.
    pub attachments: Vec<AttachmentEntry>,
}

/// One collection of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionEntry {
    /// The collection's name.
    pub name: String,
    /// How many documents (lines) `documents/<name>.jsonl` holds.
    pub documents: u64,
    /// The size of `documents/<name>.jsonl` in bytes.
    pub bytes: u64,
}

/// One attachment of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentEntry {
    /// Its id in the exporting vault (32 lower-case hex digits); an import gives it a new one.
    pub id: String,
    /// The owning document's collection.
    pub collection: String,
    /// The owning document's id.
    pub document: String,
    /// Plaintext size in bytes: the size of `attachments/<id>`.
    pub size: u64,
}

/// One line of a `documents/<collection>.jsonl` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedDocument {
    /// The document's id.
    pub id: String,
    /// Its version in the exporting vault (informative: an import writes version 1).
    pub version: u64,
    /// The JSON object.
    pub body: Map<String, Value>,
}

impl ExportedDocument {
    /// The line as written: compact JSON (object keys in the order of `body`, which is
    /// sorted), then `\n`.
    pub fn line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a map of JSON values serialises");
        v.push(b'\n');
        v
    }
}

fn layout(msg: impl Into<String>) -> Error {
    Error::ExportLayout(msg.into())
}

fn io(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what, source }
}

fn documents_path(collection: &str) -> String {
    format!("documents/{collection}.jsonl")
}

fn attachment_path(id: &str) -> String {
    format!("attachments/{id}")
}

/// Whether `id` is an attachment id as the vault makes them.
fn is_attachment_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Manifest {
    /// A manifest of this build's layout version.
    pub fn new(created_at_ms: i64, collections: Vec<CollectionEntry>, attachments: Vec<AttachmentEntry>) -> Self {
        Manifest { format: FORMAT_NAME.into(), layout: LAYOUT_VERSION, created_at_ms, collections, attachments }
    }

    /// Checks the rules a reader relies on: names valid and strictly increasing, ids
    /// strictly increasing, every attachment owned by a listed collection.
    ///
    /// # Errors
    /// [`Error::ExportLayout`] naming the rule broken.
    pub fn check(&self) -> Result<(), Error> {
        if self.format != FORMAT_NAME {
            return Err(layout(format!("the manifest's format is {:?}, not {FORMAT_NAME:?}", self.format)));
        }
        if self.layout != LAYOUT_VERSION {
            return Err(layout(format!("the manifest's layout is {}, not {LAYOUT_VERSION}", self.layout)));
        }
        for (i, c) in self.collections.iter().enumerate() {
            check_collection(&c.name).map_err(|e| layout(format!("collection name {:?}: {e}", c.name)))?;
            if i > 0 && self.collections[i - 1].name >= c.name {
                return Err(layout("the manifest's collections are not in strictly increasing order"));
            }
        }
        for (i, a) in self.attachments.iter().enumerate() {
            if !is_attachment_id(&a.id) {
                return Err(layout(format!("attachment id {:?} is not 32 lower-case hex digits", a.id)));
            }
            if i > 0 && self.attachments[i - 1].id >= a.id {
                return Err(layout("the manifest's attachments are not in strictly increasing order"));
            }
            if self.collections.binary_search_by(|c| c.name.as_str().cmp(&a.collection)).is_err() {
                return Err(layout(format!(
                    "attachment {} belongs to collection {:?}, not exported",
                    a.id, a.collection
                )));
            }
            check_id(&a.document).map_err(|e| layout(format!("attachment {}: document id: {e}", a.id)))?;
        }
        Ok(())
    }

    /// Parses and checks a manifest, refusing a newer layout version before anything else
    /// (a newer manifest may have other fields).
    ///
    /// # Errors
    /// [`Error::ExportNewerLayout`], [`Error::ExportLayout`].
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Error> {
        #[derive(Deserialize)]
        struct Version {
            format: String,
            layout: u64,
        }
        let v: Version = serde_json::from_slice(bytes)
            .map_err(|e| layout(format!("the manifest is not a Fieldvault export manifest: {e}")))?;
        if v.format != FORMAT_NAME {
            return Err(layout(format!("the manifest's format is {:?}, not {FORMAT_NAME:?}", v.format)));
        }
        if v.layout > u64::from(LAYOUT_VERSION) {
            return Err(Error::ExportNewerLayout { found: v.layout, supported: LAYOUT_VERSION });
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| layout(format!("the manifest is malformed: {e}")))?;
        m.check()?;
        Ok(m)
    }
}

/// A tar header for a regular file (ustar, mode 0600, owner 0, time 0: nothing about the
/// exporting machine).
fn header(path: &str, size: u64) -> Result<tar::Header, Error> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|e| layout(format!("entry path {path:?}: {e}")))?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn padding(size: u64) -> usize {
    (BLOCK - (size % BLOCK as u64) as usize) % BLOCK
}

/// Where the writer stands.
enum Open {
    Nothing,
    Collection { index: usize, docs_left: u64, bytes_left: u64, last_id: Option<String> },
    Attachment { index: usize, left: u64 },
}

/// Writes an export's plaintext layout to `out`, entry by entry, in the manifest's order.
/// Every call checks that what is written matches the manifest, so a writer bug cannot make
/// an export that its reader refuses.
pub struct ExportWriter<W: Write> {
    out: W,
    manifest: Manifest,
    next_collection: usize,
    next_attachment: usize,
    open: Open,
}

impl<W: Write> ExportWriter<W> {
    /// Checks the manifest and writes it as the first entry.
    ///
    /// # Errors
    /// [`Error::ExportLayout`] for a manifest that breaks a rule; [`Error::Io`].
    pub fn new(mut out: W, manifest: Manifest) -> Result<Self, Error> {
        manifest.check()?;
        let mut bytes = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
        bytes.push(b'\n');
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(layout(format!(
                "the manifest would be {} bytes; the limit is {MAX_MANIFEST_BYTES}",
                bytes.len()
            )));
        }
        let w = io("writing the export");
        out.write_all(header(MANIFEST_PATH, bytes.len() as u64)?.as_bytes()).map_err(w)?;
        out.write_all(&bytes).map_err(io("writing the export"))?;
        out.write_all(&[0u8; BLOCK][..padding(bytes.len() as u64)]).map_err(io("writing the export"))?;
        Ok(ExportWriter { out, manifest, next_collection: 0, next_attachment: 0, open: Open::Nothing })
    }

    /// Starts the next collection's entry; `name` must be the manifest's next collection.
    ///
    /// # Errors
    /// [`Error::ExportLayout`] out of order; [`Error::Io`].
    pub fn begin_collection(&mut self, name: &str) -> Result<(), Error> {
        self.close_entry()?;
        let index = self.next_collection;
        let Some(c) = self.manifest.collections.get(index) else {
            return Err(layout(format!("collection {name:?} is not in the manifest")));
        };
        if c.name != name || self.next_attachment > 0 {
            return Err(layout(format!("collection {name:?} written out of the manifest's order")));
        }
        let h = header(&documents_path(name), c.bytes)?;
        self.out.write_all(h.as_bytes()).map_err(io("writing the export"))?;
        self.open = Open::Collection { index, docs_left: c.documents, bytes_left: c.bytes, last_id: None };
        self.next_collection += 1;
        Ok(())
    }

    /// Writes one document of the open collection.
    ///
    /// # Errors
    /// [`Error::ExportLayout`] when no collection is open, ids are not increasing, or the
    /// collection would exceed its count or size; [`Error::Io`].
    pub fn write_document(&mut self, doc: &ExportedDocument) -> Result<(), Error> {
        let Open::Collection { docs_left, bytes_left, last_id, .. } = &mut self.open else {
            return Err(layout("a document written outside a collection"));
        };
        if last_id.as_deref().is_some_and(|l| l >= doc.id.as_str()) {
            return Err(layout("documents written out of id order"));
        }
        let line = doc.line();
        if *docs_left == 0 || (line.len() as u64) > *bytes_left {
            return Err(layout("a collection grew after its manifest entry was made"));
        }
        self.out.write_all(&line).map_err(io("writing the export"))?;
        *docs_left -= 1;
        *bytes_left -= line.len() as u64;
        *last_id = Some(doc.id.clone());
        Ok(())
    }

    fn close_entry(&mut self) -> Result<(), Error> {
        let size = match self.open {
            Open::Nothing => return Ok(()),
            Open::Collection { index, docs_left, bytes_left, .. } => {
                if docs_left != 0 || bytes_left != 0 {
                    return Err(layout(format!(
                        "collection {:?} ended short of its manifest entry",
                        self.manifest.collections[index].name
                    )));
                }
                self.manifest.collections[index].bytes
            }
            Open::Attachment { index, left } => {
                if left != 0 {
                    return Err(layout(format!(
                        "attachment {} ended short of its manifest entry",
                        self.manifest.attachments[index].id
                    )));
                }
                self.manifest.attachments[index].size
            }
        };
        self.out.write_all(&[0u8; BLOCK][..padding(size)]).map_err(io("writing the export"))?;
        self.open = Open::Nothing;
        Ok(())
    }

    /// Starts the next attachment of the manifest, `id`; its bytes are then written through
    /// this writer's [`Write`] impl, exactly the manifest's size. Returns that size.
    ///
    /// # Errors
    /// [`Error::ExportLayout`] out of order; [`Error::Io`].
    pub fn begin_attachment(&mut self, id: &str) -> Result<u64, Error> {
        self.close_entry()?;
        if self.next_collection != self.manifest.collections.len() {
            return Err(layout("an attachment written before every collection"));
        }
        let Some(a) = self.manifest.attachments.get(self.next_attachment) else {
            return Err(layout(format!("attachment {id} is not in the manifest")));
        };
        if a.id != id {
            return Err(layout(format!("attachment {id} written out of the manifest's order")));
        }
        let size = a.size;
        let h = header(&attachment_path(id), size)?;
        self.out.write_all(h.as_bytes()).map_err(io("writing the export"))?;
        self.open = Open::Attachment { index: self.next_attachment, left: size };
        self.next_attachment += 1;
        Ok(size)
    }

    /// Writes the next attachment of the manifest, `id`, copying exactly its size from
    /// `bytes` (which must end there). Returns the bytes copied.
    ///
    /// # Errors
    /// [`Error::ExportLayout`] out of order or for a source of another size; [`Error::Io`].
    pub fn append_attachment(&mut self, id: &str, bytes: &mut dyn Read) -> Result<u64, Error> {
        let size = self.begin_attachment(id)?;
        let copied = io::copy(&mut bytes.take(size), self).map_err(io("copying an attachment"))?;
        let mut probe = [0u8; 1];
        let more = bytes.read(&mut probe).map_err(io("copying an attachment"))?;
        if copied != size || more != 0 {
            return Err(layout(format!("attachment {id} is not the size its manifest entry says")));
        }
        self.close_entry()?;
        Ok(size)
    }

    /// Writes the end of the archive (two zero blocks) and gives back the output.
    ///
    /// # Errors
    /// [`Error::ExportLayout`] when an entry of the manifest was not written; [`Error::Io`].
    pub fn finish(mut self) -> Result<W, Error> {
        self.close_entry()?;
        if self.next_collection != self.manifest.collections.len()
            || self.next_attachment != self.manifest.attachments.len()
        {
            return Err(layout("the export ended before every entry of its manifest"));
        }
        self.out.write_all(&[0u8; 2 * BLOCK]).map_err(io("writing the export"))?;
        self.out.flush().map_err(io("writing the export"))?;
        Ok(self.out)
    }
}

/// An open attachment's bytes (after [`ExportWriter::begin_attachment`]); a write past its
/// size, or with no attachment open, fails.
impl<W: Write> Write for ExportWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Open::Attachment { left, .. } = &mut self.open else {
            return Err(io::Error::other("export: attachment bytes written with no attachment open"));
        };
        if buf.len() as u64 > *left {
            return Err(io::Error::other("export: an attachment is larger than its manifest entry"));
        }
        let n = self.out.write(buf)?;
        *left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What [`read_export`] hands over, in the layout's order.
pub trait ExportVisitor {
    /// The visitor's error; the reader's own errors convert into it.
    type Error: From<Error>;
    /// The manifest, checked, before any other entry.
    fn manifest(&mut self, manifest: &Manifest) -> Result<(), Self::Error>;
    /// One document of `collection`, in id order.
    fn document(&mut self, collection: &str, doc: ExportedDocument) -> Result<(), Self::Error>;
    /// One attachment: `bytes` yields exactly `entry.size` bytes (or an error from the input).
    fn attachment(&mut self, entry: &AttachmentEntry, bytes: &mut dyn Read) -> Result<(), Self::Error>;
}

fn entry_path<R: Read>(e: &tar::Entry<'_, R>) -> Result<String, Error> {
    let path = e.path_bytes();
    let path = std::str::from_utf8(&path).map_err(|_| layout("an entry's path is not UTF-8"))?.to_owned();
    if e.header().entry_type() != tar::EntryType::Regular {
        return Err(layout(format!("entry {path:?} is not a regular file")));
    }
    Ok(path)
}

/// Reads an export's plaintext layout from `input` in one pass, checking it against its
/// manifest, then reads `input` to its end (so an authenticated stream such as age's
/// checks its last chunk before this returns). Memory: one line ([`MAX_LINE_BYTES`]) and
/// the manifest ([`MAX_MANIFEST_BYTES`]) at most.
///
/// A visitor must treat what it is given as provisional until this returns `Ok`: a
/// truncated or tampered input is only known to be so at the point it fails.
///
/// # Errors
/// [`Error::ExportNewerLayout`]; [`Error::ExportLayout`] for an entry missing, extra, out of
/// order or of the wrong size or count; [`Error::Io`] from `input` (its authentication
/// failing, its end coming early); and the visitor's own.
pub fn read_export<R: Read, V: ExportVisitor>(input: R, visitor: &mut V) -> Result<Manifest, V::Error> {
    let mut archive = tar::Archive::new(input);
    let manifest = {
        let mut entries = archive.entries().map_err(io("reading the export"))?;
        let mut next = || -> Result<Option<tar::Entry<'_, R>>, Error> {
            entries.next().transpose().map_err(io("reading the export"))
        };
        // 1. The manifest.
        let mut first = next()?.ok_or_else(|| layout("the archive is empty"))?;
        if entry_path(&first)? != MANIFEST_PATH {
            return Err(layout("the first entry is not manifest.json").into());
        }
        if first.size() > MAX_MANIFEST_BYTES {
            return Err(layout(format!("the manifest is over {MAX_MANIFEST_BYTES} bytes")).into());
        }
        let mut bytes = Vec::new();
        first.read_to_end(&mut bytes).map_err(io("reading the export"))?;
        drop(first);
        let manifest = Manifest::parse(&bytes)?;
        visitor.manifest(&manifest)?;

        // 2. The documents, collection by collection.
        for c in &manifest.collections {
            let e = next()?.ok_or_else(|| layout(format!("the archive ends before {}", documents_path(&c.name))))?;
            if entry_path(&e)? != documents_path(&c.name) {
                return Err(layout(format!("expected {}, found another entry", documents_path(&c.name))).into());
            }
            if e.size() != c.bytes {
                return Err(layout(format!(
                    "{} is {} bytes; the manifest says {}",
                    documents_path(&c.name),
                    e.size(),
                    c.bytes
                ))
                .into());
            }
            let mut lines = BufReader::with_capacity(64 << 10, e);
            let mut line = Vec::new();
            let mut count = 0u64;
            let mut last: Option<String> = None;
            loop {
                line.clear();
                let n = (&mut lines)
                    .take(MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(io("reading the export"))?;
                if n == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    return Err(layout(format!(
                        "{}: line {} is over {MAX_LINE_BYTES} bytes or has no end",
                        documents_path(&c.name),
                        count + 1
                    ))
                    .into());
                }
                let doc: ExportedDocument = serde_json::from_slice(&line).map_err(|e| {
                    layout(format!("{}: line {} is malformed: {e}", documents_path(&c.name), count + 1))
                })?;
                check_id(&doc.id)
                    .map_err(|e| layout(format!("{}: line {}: {e}", documents_path(&c.name), count + 1)))?;
                if last.as_deref().is_some_and(|l| l >= doc.id.as_str()) {
                    return Err(layout(format!("{}: ids are not strictly increasing", documents_path(&c.name))).into());
                }
                last = Some(doc.id.clone());
                count += 1;
                if count > c.documents {
                    break;
                }
                visitor.document(&c.name, doc)?;
            }
            if count != c.documents {
                return Err(layout(format!(
                    "{} holds {}{count} documents; the manifest says {}",
                    documents_path(&c.name),
                    if count > c.documents { "more than " } else { "" },
                    c.documents
                ))
                .into());
            }
        }

        // 3. The attachments.
        for a in &manifest.attachments {
            let mut e = next()?.ok_or_else(|| layout(format!("the archive ends before {}", attachment_path(&a.id))))?;
            if entry_path(&e)? != attachment_path(&a.id) {
                return Err(layout(format!("expected {}, found another entry", attachment_path(&a.id))).into());
            }
            if e.size() != a.size {
                return Err(layout(format!(
                    "{} is {} bytes; the manifest says {}",
                    attachment_path(&a.id),
                    e.size(),
                    a.size
                ))
                .into());
            }
            visitor.attachment(a, &mut e)?;
            // Whatever the visitor left is read (and so checked by the input) too.
            io::copy(&mut e, &mut io::sink()).map_err(io("reading the export"))?;
        }
        if next()?.is_some() {
            return Err(layout("the archive holds an entry its manifest does not list").into());
        }
        manifest
    };
    // The rest of the input: the end-of-archive blocks, nothing else.
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        let n = rest.read(&mut buf).map_err(io("reading the export"))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(layout("bytes follow the end of the archive").into());
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(id: &str, v: u64, body: Value) -> ExportedDocument {
        let Value::Object(body) = body else { panic!("an object") };
        ExportedDocument { id: id.into(), version: v, body }
    }

    type Collections = Vec<(String, Vec<ExportedDocument>)>;
    type Attachments = Vec<(String, Vec<u8>)>;

    fn sample() -> (Manifest, Collections, Attachments) {
        let notes = vec![doc("a", 1, json!({"t": "x"})), doc("b", 3, json!({"n": 1, "z": [1, 2]}))];
        let tasks = vec![doc("t1", 2, json!({}))];
        let att = vec![("0123456789abcdef0123456789abcdef".to_string(), vec![7u8; 1000])];
        let entry = |name: &str, docs: &[ExportedDocument]| CollectionEntry {
            name: name.into(),
            documents: docs.len() as u64,
            bytes: docs.iter().map(|d| d.line().len() as u64).sum(),
        };
        let m = Manifest::new(
            5,
            vec![entry("notes", &notes), entry("tasks", &tasks)],
            vec![AttachmentEntry {
                id: att[0].0.clone(),
                collection: "notes".into(),
                document: "a".into(),
                size: 1000,
            }],
        );
        (m, vec![("notes".into(), notes), ("tasks".into(), tasks)], att)
    }

    fn write(m: &Manifest, cols: &[(String, Vec<ExportedDocument>)], att: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut w = ExportWriter::new(Vec::new(), m.clone()).expect("manifest");
        for (name, docs) in cols {
            w.begin_collection(name).expect("begin");
            for d in docs {
                w.write_document(d).expect("doc");
            }
        }
        for (id, bytes) in att {
            w.append_attachment(id, &mut bytes.as_slice()).expect("attachment");
        }
        w.finish().expect("finish")
    }

    #[derive(Default)]
    struct Collect {
        docs: Vec<(String, ExportedDocument)>,
        atts: Vec<(String, Vec<u8>)>,
    }

    impl ExportVisitor for Collect {
        type Error = Error;
        fn manifest(&mut self, _: &Manifest) -> Result<(), Error> {
            Ok(())
        }
        fn document(&mut self, c: &str, d: ExportedDocument) -> Result<(), Error> {
            self.docs.push((c.into(), d));
            Ok(())
        }
        fn attachment(&mut self, a: &AttachmentEntry, r: &mut dyn Read) -> Result<(), Error> {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(io("test"))?;
            self.atts.push((a.id.clone(), v));
            Ok(())
        }
    }

    #[test]
    fn layout_round_trips_and_is_a_plain_tar() {
        let (m, cols, att) = sample();
        let bytes = write(&m, &cols, &att);
        let mut c = Collect::default();
        assert_eq!(read_export(bytes.as_slice(), &mut c).expect("reads"), m);
        let want: Vec<_> = cols.iter().flat_map(|(n, d)| d.iter().map(move |d| (n.clone(), d.clone()))).collect();
        assert_eq!(c.docs, want);
        assert_eq!(c.atts, att);
        // Any tar reader lists the entries in order.
        let mut a = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = a
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "manifest.json",
                "documents/notes.jsonl",
                "documents/tasks.jsonl",
                "attachments/0123456789abcdef0123456789abcdef"
            ]
        );
    }

    #[test]
    fn newer_layout_version_is_refused_by_name() {
        let (mut m, ..) = sample();
        m.layout = LAYOUT_VERSION + 1;
        let bytes = serde_json::to_vec(&m).expect("json");
        assert!(matches!(Manifest::parse(&bytes), Err(Error::ExportNewerLayout { found: 2, supported: 1 })));
    }

    #[test]
    fn every_truncation_is_refused() {
        let (m, cols, att) = sample();
        let bytes = write(&m, &cols, &att);
        // The end-of-archive blocks are optional to tar readers; everything before them is not.
        let body = bytes.len() - 2 * BLOCK;
        for cut in (0..body).step_by(37) {
            let mut c = Collect::default();
            assert!(read_export(&bytes[..cut], &mut c).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn counts_and_sizes_must_match_the_manifest() {
        let (m, cols, att) = sample();
        // One document more in a collection than the manifest says (sizes kept consistent).
        let mut bigger = cols.clone();
        bigger[1].1.push(doc("t2", 1, json!({})));
        let mut lying = m.clone();
        lying.collections[1].bytes = bigger[1].1.iter().map(|d| d.line().len() as u64).sum();
        let mut w = ExportWriter::new(Vec::new(), lying.clone()).expect("manifest");
        w.begin_collection("notes").expect("notes");
        for d in &cols[0].1 {
            w.write_document(d).expect("doc");
        }
        w.begin_collection("tasks").expect("tasks");
        w.write_document(&bigger[1].1[0]).expect("first fits");
        assert!(w.write_document(&bigger[1].1[1]).is_err(), "the writer refuses a document over the count");
        // The reader refuses it too when a writer gets it wrong.
        let mut raw = Vec::new();
        let mbytes = serde_json::to_vec(&lying).expect("json");
        raw.extend_from_slice(header(MANIFEST_PATH, mbytes.len() as u64).expect("h").as_bytes());
        raw.extend_from_slice(&mbytes);
        raw.resize(raw.len() + padding(mbytes.len() as u64), 0);
        for (name, docs) in &bigger {
            let text: Vec<u8> = docs.iter().flat_map(|d| d.line()).collect();
            raw.extend_from_slice(header(&documents_path(name), text.len() as u64).expect("h").as_bytes());
            raw.extend_from_slice(&text);
            raw.resize(raw.len() + padding(text.len() as u64), 0);
        }
        raw.extend_from_slice(header(&attachment_path(&att[0].0), 1000).expect("h").as_bytes());
        raw.extend_from_slice(&att[0].1);
        raw.resize(raw.len() + padding(1000) + 2 * BLOCK, 0);
        let err = read_export(raw.as_slice(), &mut Collect::default()).expect_err("count");
        assert!(err.to_string().contains("manifest says 1"), "{err}");
        // An attachment of another size than its entry.
        assert!(
            ExportWriter::new(Vec::new(), m)
                .expect("m")
                .append_attachment(&att[0].0, &mut [0u8; 3].as_slice())
                .is_err()
        );
    }

    #[test]
    fn bytes_after_the_archive_are_refused() {
        let (m, cols, att) = sample();
        let mut bytes = write(&m, &cols, &att);
        bytes.extend_from_slice(b"more");
        assert!(read_export(bytes.as_slice(), &mut Collect::default()).is_err());
    }
}
