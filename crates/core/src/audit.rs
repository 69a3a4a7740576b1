//! The tamper-evident audit log: a hash chain of records, each carrying the hash of the one
//! before. Format: `docs/formats/audit.md`.
//!
//! `hash = SHA-256(prev_hash || JCS({action, actor, at, detail, seq, target}))`, where JCS is
//! RFC 8785 (JSON Canonicalization Scheme); the first record's `prev_hash` is 32 zero bytes.
//! [`verify`] (or [`ChainVerifier`], one record at a time) names the first broken link.
//!
//! A retention cut deletes the oldest records and appends an [`RETENTION_CUT`] record naming
//! the first kept seq and its `prev_hash` (the anchor); a chain whose first record is not seq 1
//! verifies only when such a cut record later in the chain names exactly that record.

use serde_json::{Map, Value};

/// Length of a record hash (SHA-256).
pub const AUDIT_HASH_LEN: usize = 32;

/// The `prev_hash` of the first record of a chain: 32 zero bytes.
pub const GENESIS_PREV_HASH: [u8; AUDIT_HASH_LEN] = [0; AUDIT_HASH_LEN];

/// The largest `seq` or `at` a record may carry: 2^53 - 1, the largest integer JSON numbers
/// (IEEE 754 doubles, which RFC 8785 uses) hold exactly.
pub const MAX_AUDIT_NUMBER: u64 = (1 << 53) - 1;

/// The action of a retention cut record. Its detail names the anchor:
/// `{"first_kept_seq": N, "first_kept_prev_hash": "<64 hex digits>", "deleted": N}`.
pub const RETENTION_CUT: &str = "audit.retention_cut";

/// Something that happened, as the code that does it describes it: a record without its place
/// in the chain. The store gives it a `seq` and `prev_hash` ([`AuditEvent::chain`]) in the
/// transaction of the action it records.
///
/// Never put a secret in `detail` (no password, code, token or key): records are kept and
/// exported in the clear.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// When, Unix seconds.
    pub at: u64,
    /// Who: `cli:<os user>`, `user:<name>`, `device:<id>`, `admin:<name>` or `system`.
    pub actor: String,
    /// What, dotted: `user.add`, `login.failed`, `directive.issued`, ...
    pub action: String,
    /// What it was done to (a user name, a device id; empty when nothing in particular).
    pub target: String,
    /// Anything else worth keeping, as a JSON object. Never a secret.
    pub detail: Map<String, Value>,
}

impl AuditEvent {
    /// An event with an empty detail.
    pub fn new(at: u64, actor: impl Into<String>, action: impl Into<String>, target: impl Into<String>) -> Self {
        AuditEvent { at, actor: actor.into(), action: action.into(), target: target.into(), detail: Map::new() }
    }

    /// The same event with one more detail field.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// The record this event becomes at position `seq`, after a record whose hash is
    /// `prev_hash` ([`GENESIS_PREV_HASH`] for the first).
    ///
    /// # Errors
    /// [`AuditError`] when `seq` or `at` is past [`MAX_AUDIT_NUMBER`].
    pub fn chain(self, seq: u64, prev_hash: [u8; AUDIT_HASH_LEN]) -> Result<AuditRecord, AuditError> {
        let mut record = AuditRecord {
            seq,
            at: self.at,
            actor: self.actor,
            action: self.action,
            target: self.target,
            detail: self.detail,
            prev_hash,
            hash: [0; AUDIT_HASH_LEN],
        };
        record.hash = record.compute_hash()?;
        Ok(record)
    }
}

/// One record of the chain, as stored and exported.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When, Unix seconds.
    pub at: u64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: String,
    /// Anything else, a JSON object.
    pub detail: Map<String, Value>,
    /// The previous record's hash ([`GENESIS_PREV_HASH`] for seq 1).
    pub prev_hash: [u8; AUDIT_HASH_LEN],
    /// This record's hash.
    pub hash: [u8; AUDIT_HASH_LEN],
}

/// A record that cannot be hashed: a number JSON cannot hold exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {what} {value} is past 2^53 - 1, the largest number its JSON form holds exactly")]
pub struct AuditError {
    /// `seq` or `at`.
    pub what: &'static str,
    /// The number.
    pub value: u64,
}

impl AuditRecord {
    /// The canonical bytes the hash covers after `prev_hash`: RFC 8785 JSON of the object
    /// `{action, actor, at, detail, seq, target}`.
    ///
    /// # Errors
    /// [`AuditError`] when `seq` or `at` is past [`MAX_AUDIT_NUMBER`].
    pub fn canonical(&self) -> Result<Vec<u8>, AuditError> {
        for (what, value) in [("seq", self.seq), ("at", self.at)] {
            if value > MAX_AUDIT_NUMBER {
                return Err(AuditError { what, value });
            }
        }
        let body = serde_json::json!({
            "action": self.action,
            "actor": self.actor,
            "at": self.at,
            "detail": self.detail,
            "seq": self.seq,
            "target": self.target,
        });
        // Strings, safe integers and a map of JSON values always have a canonical form.
        Ok(serde_jcs::to_vec(&body).expect("plain JSON values canonicalize"))
    }

    /// `SHA-256(prev_hash || canonical())`: what `hash` must be.
    ///
    /// # Errors
    /// As [`AuditRecord::canonical`].
    pub fn compute_hash(&self) -> Result<[u8; AUDIT_HASH_LEN], AuditError> {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&self.prev_hash);
        ctx.update(&self.canonical()?);
        let mut out = [0; AUDIT_HASH_LEN];
        out.copy_from_slice(ctx.finish().as_ref());
        Ok(out)
    }

    /// The anchor a retention cut record names: (first kept seq, its `prev_hash`). None for
    /// any other record, or a cut whose detail does not name one well-formed.
    pub fn cut_anchor(&self) -> Option<(u64, [u8; AUDIT_HASH_LEN])> {
        if self.action != RETENTION_CUT {
            return None;
        }
        let seq = self.detail.get("first_kept_seq")?.as_u64()?;
        let hash = hex_decode(self.detail.get("first_kept_prev_hash")?.as_str()?)?;
        Some((seq, hash))
    }
}

impl AuditRecord {
    /// The record as one line of `fieldvault-server audit export`: a JSON object
    /// `{seq, at, actor, action, target, detail, prev_hash, hash}`, hashes as lowercase hex.
    pub fn to_export_json(&self) -> Value {
        serde_json::json!({
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "prev_hash": hex(&self.prev_hash),
            "hash": hex(&self.hash),
        })
    }

    /// A record from an export line's object ([`AuditRecord::to_export_json`]); None when a
    /// field is missing or not of its type. The hash is read as written, not checked: that is
    /// [`verify`]'s work.
    pub fn from_export_json(value: &Value) -> Option<AuditRecord> {
        let text = |key: &str| value.get(key)?.as_str().map(str::to_owned);
        Some(AuditRecord {
            seq: value.get("seq")?.as_u64()?,
            at: value.get("at")?.as_u64()?,
            actor: text("actor")?,
            action: text("action")?,
            target: text("target")?,
            detail: value.get("detail")?.as_object()?.clone(),
            prev_hash: hex_decode(value.get("prev_hash")?.as_str()?)?,
            hash: hex_decode(value.get("hash")?.as_str()?)?,
        })
    }
}

/// Lowercase hex of a hash, as exports and cut records write it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash from 64 hex digits (either case); None for anything else.
pub fn hex_decode(text: &str) -> Option<[u8; AUDIT_HASH_LEN]> {
    if text.len() != 2 * AUDIT_HASH_LEN || !text.is_ascii() {
        return None;
    }
    let mut out = [0; AUDIT_HASH_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The first link of a chain that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain breaks at seq {seq}: {why}")]
pub struct BrokenLink {
    /// The first record that does not verify.
    pub seq: u64,
    /// Why, in plain words.
    pub why: String,
}

/// Checks a chain one record at a time, in seq order, so a chain of any length verifies in
/// constant memory: [`ChainVerifier::push`] each record, then [`ChainVerifier::finish`].
#[derive(Debug, Clone, Default)]
pub struct ChainVerifier {
    /// The last record's (seq, hash).
    last: Option<(u64, [u8; AUDIT_HASH_LEN])>,
    /// The first record, when it is not seq 1 after the genesis hash and no retention cut has
    /// named it yet: (seq, prev_hash).
    unanchored: Option<(u64, [u8; AUDIT_HASH_LEN])>,
    count: u64,
}

impl ChainVerifier {
    /// A verifier that has seen nothing.
    pub fn new() -> Self {
        ChainVerifier::default()
    }

    /// Checks the next record against the one before and its own hash.
    ///
    /// # Errors
    /// [`BrokenLink`] naming this record: a seq that does not follow, a `prev_hash` that is
    /// not the previous record's hash, or a hash that is not the hash of its fields.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), BrokenLink> {
        let broken = |why: String| BrokenLink { seq: record.seq, why };
        match self.last {
            None if record.seq == 1 && record.prev_hash != GENESIS_PREV_HASH => {
                return Err(broken("the first record's prev_hash is not the genesis hash (32 zero bytes)".into()));
            }
            None if record.seq != 1 => self.unanchored = Some((record.seq, record.prev_hash)),
            None => {}
            Some((seq, hash)) => {
                if record.seq != seq + 1 {
                    return Err(broken(format!(
                        "seq {} follows seq {seq}: records are missing or out of order",
                        record.seq
                    )));
                }
                if record.prev_hash != hash {
                    return Err(broken(format!("its prev_hash is not the hash of seq {seq}")));
                }
            }
        }
        match record.compute_hash() {
            Ok(hash) if hash == record.hash => {}
            Ok(_) => return Err(broken("its hash is not the hash of its fields: the record was changed".into())),
            Err(e) => return Err(broken(e.to_string())),
        }
        if self.unanchored.is_some() && record.cut_anchor() == self.unanchored {
            self.unanchored = None;
        }
        self.last = Some((record.seq, record.hash));
        self.count += 1;
        Ok(())
    }

    /// The end of the chain: what was verified.
    ///
    /// # Errors
    /// [`BrokenLink`] naming the first record when the chain starts past seq 1 and no
    /// retention cut names that start (records were deleted from the front by hand).
    pub fn finish(self) -> Result<ChainSummary, BrokenLink> {
        if let Some((seq, _)) = self.unanchored {
            return Err(BrokenLink {
                seq,
                why: "the chain starts after deleted records and no retention cut names this record as the first kept"
                    .into(),
            });
        }
        Ok(ChainSummary { count: self.count, last: self.last })
    }
}

/// A chain that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSummary {
    /// How many records.
    pub count: u64,
    /// The last record's (seq, hash); None for an empty chain.
    pub last: Option<(u64, [u8; AUDIT_HASH_LEN])>,
}

/// Verifies a whole chain in seq order (see [`ChainVerifier`]).
///
/// # Errors
/// The first [`BrokenLink`].
pub fn verify<'a>(records: impl IntoIterator<Item = &'a AuditRecord>) -> Result<ChainSummary, BrokenLink> {
    let mut verifier = ChainVerifier::new();
    for record in records {
        verifier.push(record)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_of(n: u64) -> Vec<AuditRecord> {
        let mut prev = GENESIS_PREV_HASH;
        (1..=n)
            .map(|seq| {
                let r = AuditEvent::new(1_700_000_000 + seq, "cli:root", "user.add", format!("user{seq}"))
                    .with("roles", serde_json::json!(["inspector"]))
                    .chain(seq, prev)
                    .expect("small numbers");
                prev = r.hash;
                r
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies_with_its_count_and_last_seq() {
        let records = chain_of(5);
        let summary = verify(&records).expect("verifies");
        assert_eq!(summary.count, 5);
        assert_eq!(summary.last, Some((5, records[4].hash)));
        assert_eq!(verify(&[]).expect("empty").last, None);
    }

    #[test]
    fn a_tampered_field_is_named_by_its_seq() {
        let mut records = chain_of(4);
        records[2].detail.insert("roles".into(), serde_json::json!(["admin"]));
        let e = verify(&records).expect_err("tampered");
        assert_eq!(e.seq, 3);
        assert!(e.why.contains("was changed"), "{e}");
        let mut records = chain_of(4);
        records[1].actor = "system".into();
        assert_eq!(verify(&records).expect_err("tampered").seq, 2);
    }

    #[test]
    fn a_rehashed_record_breaks_the_next_link() {
        let mut records = chain_of(4);
        records[1].target = "mallory".into();
        records[1].hash = records[1].compute_hash().expect("hash");
        let e = verify(&records).expect_err("next link");
        assert_eq!(e.seq, 3);
        assert!(e.why.contains("prev_hash"), "{e}");
    }

    #[test]
    fn a_deleted_record_is_named_as_a_gap() {
        let mut records = chain_of(5);
        records.remove(2);
        let e = verify(&records).expect_err("gap");
        assert_eq!(e.seq, 4);
        assert!(e.why.contains("missing or out of order"), "{e}");
    }

    #[test]
    fn a_reordered_pair_is_named() {
        let mut records = chain_of(5);
        records.swap(1, 2);
        let e = verify(&records).expect_err("reordered");
        assert_eq!(e.seq, 3);
    }

    #[test]
    fn a_first_record_with_another_prev_hash_than_genesis_is_refused() {
        let records = vec![AuditEvent::new(1, "system", "x", "").chain(1, [1; 32]).expect("chains")];
        assert_eq!(verify(&records).expect_err("genesis").seq, 1);
    }

    #[test]
    fn a_chain_cut_from_the_front_verifies_only_with_a_retention_cut_naming_its_first_record() {
        let mut records = chain_of(5);
        let kept = records.split_off(3);
        // Deleted by hand: the chain now starts at seq 4, and nothing vouches for that.
        let e = verify(&kept).expect_err("unanchored");
        assert_eq!(e.seq, 4);
        assert!(e.why.contains("no retention cut"), "{e}");
        // The store's cut: the deleted records leave, a cut record naming the anchor is appended.
        let last = kept.last().expect("kept");
        let cut = AuditEvent::new(1_800_000_000, "cli:root", RETENTION_CUT, "")
            .with("first_kept_seq", kept[0].seq)
            .with("first_kept_prev_hash", hex(&kept[0].prev_hash))
            .with("deleted", 3)
            .chain(last.seq + 1, last.hash)
            .expect("chains");
        let mut anchored = kept.clone();
        anchored.push(cut.clone());
        assert_eq!(verify(&anchored).expect("anchored").count, 3);
        // A cut naming another anchor does not vouch for this start.
        let wrong = AuditEvent::new(1_800_000_000, "cli:root", RETENTION_CUT, "")
            .with("first_kept_seq", 3)
            .with("first_kept_prev_hash", hex(&kept[0].prev_hash))
            .chain(last.seq + 1, last.hash)
            .expect("chains");
        let mut other = kept;
        other.push(wrong);
        assert_eq!(verify(&other).expect_err("wrong anchor").seq, 4);
    }

    #[test]
    fn numbers_past_two_to_the_53_have_no_record() {
        let e = AuditEvent::new(1 << 53, "system", "x", "").chain(1, GENESIS_PREV_HASH).expect_err("too large");
        assert_eq!(e.what, "at");
        let e = AuditEvent::new(1, "system", "x", "").chain(MAX_AUDIT_NUMBER + 1, GENESIS_PREV_HASH).expect_err("seq");
        assert_eq!(e.what, "seq");
    }

    #[test]
    fn an_export_line_reads_back_as_the_same_record() {
        for record in chain_of(3) {
            let line = serde_json::to_string(&record.to_export_json()).expect("json");
            let back = AuditRecord::from_export_json(&serde_json::from_str(&line).expect("parses")).expect("reads");
            assert_eq!(back, record);
        }
        assert_eq!(AuditRecord::from_export_json(&serde_json::json!({"seq": 1})), None);
    }

    #[test]
    fn hex_round_trips_and_refuses_anything_but_64_digits() {
        let h = [0xab; 32];
        assert_eq!(hex_decode(&hex(&h)), Some(h));
        assert_eq!(hex_decode("ab"), None);
        assert_eq!(hex_decode(&"zz".repeat(32)), None);
    }
}
