//! Checking one op as received: its shape, names and key, and its idempotency fingerprint.

use serde::Serialize;
use serde_json::Value;

use super::wire::{OpKind, PushOp};
use crate::protocol::attachments::check_attachment_list;

/// Why a push or an op is malformed (400 `bad_request`, nothing applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

/// Checks a collection name ([`crate::names::check_collection`]) as a wire error.
///
/// # Errors
/// [`OpError`] saying what the rule is (never quoting the name).
pub fn check_collection(name: &str) -> Result<(), OpError> {
    crate::names::check_collection(name).map_err(|e| OpError(e.to_string()))
}

/// Checks a document id ([`crate::names::check_id`]) as a wire error.
///
/// # Errors
/// [`OpError`] saying what the rule is (never quoting the id).
pub fn check_id(id: &str) -> Result<(), OpError> {
    crate::names::check_id(id).map_err(|e| OpError(e.to_string()))
}

/// Checks an idempotency key: a UUIDv7 (RFC 9562) in its canonical text form, which dates
/// the op. Returns that date ([`uuid_v7_time`]): a key without one could never be `expired`,
/// so a retry arriving after its record was purged would be applied twice.
///
/// # Errors
/// [`OpError`] for any other key (never quoting it).
pub fn check_idempotency_key(key: &str) -> Result<u64, OpError> {
    uuid_v7_time(key).ok_or_else(|| {
        OpError("an idempotency_key is a UUIDv7 (RFC 9562) in its canonical text form, 8-4-4-4-12 hex digits".into())
    })
}

/// An op checked and fingerprinted, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedOp {
    /// The parsed op.
    pub op: PushOp,
    /// SHA-256 of the op, without its key, in RFC 8785 canonical JSON.
    pub fingerprint: [u8; 32],
    /// When the op was made, Unix seconds: the date in its UUIDv7 key.
    pub made_at: u64,
}

/// Parses one op as received: the fingerprint is taken over exactly what the device sent
/// (minus `idempotency_key`), so two clients that serialise the same op differently (key
/// order, number spelling, whitespace) get the same fingerprint.
///
/// # Errors
/// [`OpError`] naming what is malformed: unknown or missing fields, a bad key, collection,
/// id, a put without an object body, a put whose `attachments` breaks
/// [`check_attachment_list`], or a delete carrying `attachments`.
pub fn check_op(raw: &Value) -> Result<CheckedOp, OpError> {
    check_owned_op(raw.clone())
}

/// [`check_op`] on an owned value (no copy of the op).
///
/// # Errors
/// As [`check_op`].
pub fn check_owned_op(raw: Value) -> Result<CheckedOp, OpError> {
    let Value::Object(mut map) = raw else { return Err(OpError("each op is a JSON object".into())) };
    let key = map.remove("idempotency_key");
    let fingerprint = digest_canonical(&map)?;
    if let Some(k) = key {
        map.insert("idempotency_key".into(), k);
    }
    let op: PushOp = serde_json::from_value(Value::Object(map)).map_err(|e| OpError(shape_error(&e)))?;
    let made_at = check_idempotency_key(&op.idempotency_key)?;
    check_collection(&op.collection)?;
    check_id(&op.id)?;
    match (op.op, &op.body) {
        (OpKind::Put, Some(Value::Object(_))) | (OpKind::Delete, None | Some(Value::Null)) => {}
        (OpKind::Put, _) => return Err(OpError("a put carries a JSON object as body".into())),
        (OpKind::Delete, _) => return Err(OpError("a delete carries no body".into())),
    }
    // `"attachments": null` reads as absent, like a delete's null body; the fingerprint
    // still covers it as sent.
    match (op.op, &op.attachments) {
        (OpKind::Put, Some(list)) => check_attachment_list(list).map_err(|e| OpError(e.to_string()))?,
        (OpKind::Delete, Some(_)) => {
            return Err(OpError("a delete carries no attachments (they go with the document)".into()));
        }
        (_, None) => {}
    }
    Ok(CheckedOp { fingerprint, made_at, op })
}

/// What is wrong with an op's shape, naming fields but never echoing a value (serde's
/// "invalid type" messages quote the value, which may be document content).
fn shape_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("unknown field") || text.starts_with("missing field") {
        let field = text.split('`').nth(1).unwrap_or("?");
        let what = if text.starts_with("unknown") { "unknown" } else { "missing" };
        format!("malformed op: {what} field {field:?}")
    } else {
        "malformed op: a field has the wrong type or value".to_owned()
    }
}

/// SHA-256 over the RFC 8785 canonical form of `op`.
///
/// # Errors
/// A value JCS cannot represent (never the case for parsed JSON).
pub fn fingerprint(op: &Value) -> Result<[u8; 32], OpError> {
    digest_canonical(op)
}

fn digest_canonical<T: Serialize>(op: &T) -> Result<[u8; 32], OpError> {
    let canonical = serde_jcs::to_vec(op).map_err(|e| OpError(format!("the op has no canonical form: {e}")))?;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Ok(out)
}

/// A UUIDv7 (RFC 9562, section 5.7) in its canonical text form: 48 bits of Unix
/// milliseconds, the version nibble 7, 12 random bits, the variant `10`, 62 random bits.
/// `random` supplies the 74 random bits (its first 6 bits are dropped). The clock is an
/// argument: a device passes its corrected clock, so the key dates the op in the server's
/// time ([`uuid_v7_time`] reads it back).
pub fn uuid_v7(unix_ms: u64, random: [u8; 10]) -> String {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&(unix_ms & 0xFFFF_FFFF_FFFF).to_be_bytes()[2..]);
    b[6..].copy_from_slice(&random);
    b[6] = 0x70 | (b[6] & 0x0F);
    b[8] = 0x80 | (b[8] & 0x3F);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The creation time (Unix seconds) of a key written as a UUIDv7 in its canonical text
/// form (RFC 9562: 48-bit Unix milliseconds first, version nibble 7, variant 10); None for
/// any other key.
pub fn uuid_v7_time(key: &str) -> Option<u64> {
    let b = key.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let hex: String = key.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let version = hex.as_bytes()[12];
    let variant = u8::from_str_radix(&hex[16..17], 16).ok()?;
    if version != b'7' || variant & 0b1100 != 0b1000 {
        return None;
    }
    u64::from_str_radix(&hex[..12], 16).ok().map(|ms| ms / 1000)
}
