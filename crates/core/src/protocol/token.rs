//! Token claims and their checks (SPEC section 5, "Tokens"): EdDSA (Ed25519) JWTs, one `typ`
//! and one `aud` per kind, each checked exactly, so that no kind of token is ever accepted as
//! another (an offline token is never an access token). JWS encoding and the Ed25519
//! signature come from `jsonwebtoken` on aws-lc-rs; this module decides what is accepted.
//! Time is an argument: expiry is checked against the caller's `now`, not a hidden clock.

use std::collections::HashSet;
use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// `typ` of an access token (RFC 9068).
pub const ACCESS_TYP: &str = "at+jwt";
/// `aud` of an access token.
pub const ACCESS_AUDIENCE: &str = "fieldvault/access";
/// `typ` of an offline token.
pub const OFFLINE_TYP: &str = "fv-offline+jwt";
/// `aud` of an offline token: checked by the device, never accepted by the server.
pub const OFFLINE_AUDIENCE: &str = "fieldvault/offline";
/// `typ` of a device directive (remote logout or wipe).
pub const DIRECTIVE_TYP: &str = "fv-directive+jwt";
/// `aud` of a device directive.
pub const DIRECTIVE_AUDIENCE: &str = "fieldvault/directive";
/// `typ` of the server's signed pin list (`GET /v1/server/pins`).
pub const PINS_TYP: &str = "fv-pins+jwt";
/// How long a pin list is good for after it is signed.
pub const PINS_LIFETIME_SECS: u64 = 24 * 60 * 60;
/// Most pins a pin list names, and a device keeps.
pub const MAX_PINS: usize = 4;
/// `iss` of every token.
const ISSUER: &str = "fieldvault-server";
/// A token issued this far in the future (by a server whose clock runs ahead) is still taken.
const IAT_LEEWAY_SECS: u64 = 60;

/// Why a token was refused. The server answers all of them as `invalid_token`; the variants
/// are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url parts with JSON inside, or claims of the wrong shape.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not EdDSA, or the header has `crit` or an unknown `kid`.
    #[error("the token header is not acceptable (EdDSA with this server's key id only)")]
    Header,
    /// `typ` differs from the expected kind's.
    #[error("the token is of another kind (typ {found:?}, expected {expected})")]
    WrongType {
        /// The expected `typ`.
        expected: &'static str,
        /// The `typ` found, if any.
        found: Option<String>,
    },
    /// `aud` or `iss` is not exactly the expected value.
    #[error("the token is for another audience or issuer")]
    WrongAudience,
    /// The Ed25519 signature does not verify.
    #[error("the token signature does not verify")]
    BadSignature,
    /// `exp` is not after `now`, or `iat` is in the future.
    #[error("the token has expired or is not yet valid")]
    Expired,
    /// The signing key could not be read.
    #[error("the token-signing key is not a valid Ed25519 PKCS#8 key")]
    BadKey,
}

/// Claims of an access token (`typ: at+jwt`, about ten minutes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// Issuer: always `fieldvault-server`.
    pub iss: String,
    /// The user name.
    pub sub: String,
    /// Audience: exactly [`ACCESS_AUDIENCE`].
    pub aud: String,
    /// The session id; `X-Key-Id` must name this session.
    pub sid: String,
    /// The server-assigned device id.
    pub device_id: String,
    /// The user's roles at issue time.
    pub roles: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
}

impl AccessClaims {
    /// Whether these claims, already verified, still hold at `now`: the time rule
    /// [`TokenVerifier::access`] applies (not expired, not issued in the future beyond the
    /// leeway), for a caller that remembers a verified token's claims.
    ///
    /// # Errors
    /// [`TokenError::Expired`].
    pub fn check_time(&self, now: u64) -> Result<(), TokenError> {
        fresh(self.iat, self.exp, now)
    }
}

/// Claims of an offline token (`typ: fv-offline+jwt`): lets the device authenticate its user
/// offline against the cached public key until `exp`. The server never accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineClaims {
    /// Issuer: always `fieldvault-server`.
    pub iss: String,
    /// The user name.
    pub sub: String,
    /// Audience: exactly [`OFFLINE_AUDIENCE`].
    pub aud: String,
    /// The session id.
    pub sid: String,
    /// The server-assigned device id.
    pub device_id: String,
    /// The user's roles at issue time.
    pub roles: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
}

/// What a directive tells a device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectiveKind {
    /// Remote logout: forget the session and its tokens; keep the vault.
    Revoke,
    /// Remote wipe: crypto-shred the account's data on the device.
    Wipe,
}

impl DirectiveKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DirectiveKind::Revoke => "revoke",
            DirectiveKind::Wipe => "wipe",
        }
    }
}

/// Claims of a device directive (`typ: fv-directive+jwt`): remote logout or wipe, bound to
/// one user, device and session. A device acts only when `sub` and `device_id` are its own,
/// `iat` is after its login, and `jti` is new to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectiveClaims {
    /// Issuer: always `fieldvault-server`.
    pub iss: String,
    /// Audience: exactly [`DIRECTIVE_AUDIENCE`].
    pub aud: String,
    /// The user name.
    pub sub: String,
    /// The device the directive is for.
    pub device_id: String,
    /// The device's session when the directive was made.
    pub sid: String,
    /// Unique directive id (what `POST /v1/devices/ack` names).
    pub jti: String,
    /// Revoke or wipe.
    pub kind: DirectiveKind,
    /// Issued at (Unix seconds).
    pub iat: u64,
}

impl DirectiveClaims {
    /// Claims for a new directive.
    pub fn new(sub: &str, device_id: &str, sid: &str, jti: String, kind: DirectiveKind, iat: u64) -> Self {
        DirectiveClaims {
            iss: ISSUER.into(),
            aud: DIRECTIVE_AUDIENCE.into(),
            sub: sub.into(),
            device_id: device_id.into(),
            sid: sid.into(),
            jti,
            kind,
            iat,
        }
    }
}

impl AccessClaims {
    /// Claims for a new access token.
    pub fn new(sub: &str, sid: &str, device_id: &str, roles: &[String], iat: u64, exp: u64, jti: String) -> Self {
        AccessClaims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: ACCESS_AUDIENCE.into(),
            sid: sid.into(),
            device_id: device_id.into(),
            roles: roles.to_vec(),
            iat,
            exp,
            jti,
        }
    }
}

impl OfflineClaims {
    /// Claims for a new offline token.
    pub fn new(sub: &str, sid: &str, device_id: &str, roles: &[String], iat: u64, exp: u64, jti: String) -> Self {
        OfflineClaims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: OFFLINE_AUDIENCE.into(),
            sid: sid.into(),
            device_id: device_id.into(),
            roles: roles.to_vec(),
            iat,
            exp,
            jti,
        }
    }
}

/// Claims of the server's pin list (`typ: fv-pins+jwt`, SPEC section 5): the SPKI pins of
/// its current certificate key and of the next one, if made. Exactly these three claims (no
/// `aud` or `iss`: the `typ` alone makes it a pin list). A device that verifies it with its
/// cached JWKS adds the pins to its pin set, so a key rotation never locks it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinsClaims {
    /// `sha256/BASE64` pins, the current key's first; 1 to [`MAX_PINS`].
    pub pins: Vec<String>,
    /// Signed at (Unix seconds).
    pub iat: u64,
    /// Good until (Unix seconds): `iat` + [`PINS_LIFETIME_SECS`].
    pub exp: u64,
}

impl PinsClaims {
    /// A pin list signed at `iat`.
    pub fn new(pins: Vec<String>, iat: u64) -> Self {
        PinsClaims { pins, iat, exp: iat.saturating_add(PINS_LIFETIME_SECS) }
    }
}

/// A device's pin set after a verified pin list: the announced pins first (the current
/// key's, then the next), then the device's own pins the list did not name, each once, at
/// most [`MAX_PINS`]. The oldest of the device's own pins go first when there are too many.
pub fn merge_pins(own: &[String], announced: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(MAX_PINS);
    for p in announced.iter().chain(own) {
        if out.len() < MAX_PINS && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// The key id of an Ed25519 public key: base64url (no padding) of the first 12 bytes of its
/// SHA-256. Tokens carry it as `kid`; the JWKS lists it.
fn key_id(public_key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(&digest::digest(&digest::SHA256, public_key).as_ref()[..12])
}

/// Signs tokens with the server's Ed25519 key.
pub struct TokenSigner {
    key: EncodingKey,
    public: Vec<u8>,
    kid: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Reads an Ed25519 private key in PKCS#8 (v1 or v2) DER.
    ///
    /// # Errors
    /// [`TokenError::BadKey`].
    pub fn from_pkcs8(der: &Zeroizing<Vec<u8>>) -> Result<Self, TokenError> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| TokenError::BadKey)?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(TokenSigner { key: EncodingKey::from_ed_der(der), kid: key_id(&public), public })
    }

    /// The matching verifier.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::from_public_key(&self.public)
    }

    /// The JWKS document (RFC 7517) with this key, for `GET /v1/auth/jwks`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&self.public),
        }]})
    }

    /// Signs `claims` as a JWT of kind `typ`.
    pub fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(typ.into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("an Ed25519 key read by aws-lc-rs always signs")
    }
}

/// Checks tokens against one Ed25519 public key.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    kid: String,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for a raw 32-byte Ed25519 public key (a JWK's decoded `x`).
    pub fn from_public_key(public: &[u8]) -> Self {
        TokenVerifier { key: DecodingKey::from_ed_der(public), kid: key_id(public) }
    }

    /// Checks an access token at time `now` and returns its claims.
    ///
    /// # Errors
    /// Any [`TokenError`]; an offline or directive token is [`TokenError::WrongType`].
    pub fn access(&self, token: &str, now: u64) -> Result<AccessClaims, TokenError> {
        let c: AccessClaims = self.check(token, ACCESS_TYP, ACCESS_AUDIENCE)?;
        c.check_time(now)?;
        Ok(c)
    }

    /// Checks an offline token at time `now` (what a device does to let its user in offline).
    ///
    /// # Errors
    /// Any [`TokenError`].
    pub fn offline(&self, token: &str, now: u64) -> Result<OfflineClaims, TokenError> {
        let c: OfflineClaims = self.check(token, OFFLINE_TYP, OFFLINE_AUDIENCE)?;
        fresh(c.iat, c.exp, now)?;
        Ok(c)
    }

    /// Checks a directive's signature, type, audience and issuer (directives do not expire:
    /// the device decides by `iat` and `jti`).
    ///
    /// # Errors
    /// Any [`TokenError`] but `Expired`.
    pub fn directive(&self, token: &str) -> Result<DirectiveClaims, TokenError> {
        self.check(token, DIRECTIVE_TYP, DIRECTIVE_AUDIENCE)
    }

    /// Checks the server's pin list at time `now`: signature, `typ`, freshness, and 1 to
    /// [`MAX_PINS`] pins (their format is the caller's to check).
    ///
    /// # Errors
    /// Any [`TokenError`] but `WrongAudience`; [`TokenError::Malformed`] for no pins or too many.
    pub fn pins(&self, token: &str, now: u64) -> Result<PinsClaims, TokenError> {
        let c: PinsClaims = self.check_signed(token, PINS_TYP)?;
        fresh(c.iat, c.exp, now)?;
        if c.pins.is_empty() || c.pins.len() > MAX_PINS {
            return Err(TokenError::Malformed);
        }
        Ok(c)
    }

    fn check<C: DeserializeOwned + HasAudience>(
        &self,
        token: &str,
        typ: &'static str,
        aud: &'static str,
    ) -> Result<C, TokenError> {
        let claims: C = self.check_signed(token, typ)?;
        if claims.aud() != aud || claims.iss() != ISSUER {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }

    /// The header (EdDSA, this key's `kid`, no `crit`), the `typ` and the signature.
    fn check_signed<C: DeserializeOwned>(&self, token: &str, typ: &'static str) -> Result<C, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA || header.crit.is_some() || header.kid.as_deref() != Some(&self.kid) {
            return Err(TokenError::Header);
        }
        if header.typ.as_deref() != Some(typ) {
            return Err(TokenError::WrongType { expected: typ, found: header.typ });
        }
        let mut v = Validation::new(Algorithm::EdDSA);
        // Expiry is checked below against the caller's clock; audience exactly, below too
        // (jsonwebtoken would also accept an array that contains it).
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<C>(token, &self.key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })?;
        Ok(data.claims)
    }
}

trait HasAudience {
    fn aud(&self) -> &str;
    fn iss(&self) -> &str;
}

impl HasAudience for AccessClaims {
    fn aud(&self) -> &str {
        &self.aud
    }
    fn iss(&self) -> &str {
        &self.iss
    }
}

impl HasAudience for DirectiveClaims {
    fn aud(&self) -> &str {
        &self.aud
    }
    fn iss(&self) -> &str {
        &self.iss
    }
}

impl HasAudience for OfflineClaims {
    fn aud(&self) -> &str {
        &self.aud
    }
    fn iss(&self) -> &str {
        &self.iss
    }
}

fn fresh(iat: u64, exp: u64, now: u64) -> Result<(), TokenError> {
    if exp <= now || iat > now.saturating_add(IAT_LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
        TokenSigner::from_pkcs8(&Zeroizing::new(doc.as_ref().to_vec())).expect("key")
    }

    fn access(iat: u64, exp: u64) -> AccessClaims {
        AccessClaims::new("alice", "s1", "d1", &["inspector".into()], iat, exp, "j1".into())
    }

    #[test]
    fn access_token_round_trips_and_expires_at_exp() {
        let s = signer();
        let t = s.sign(ACCESS_TYP, &access(1000, 1600));
        assert_eq!(s.verifier().access(&t, 1599), Ok(access(1000, 1600)));
        assert_eq!(s.verifier().access(&t, 1600), Err(TokenError::Expired));
        assert_eq!(s.verifier().access(&t, 900), Err(TokenError::Expired), "issued in the future");
    }

    #[test]
    fn remembered_access_claims_expire_by_the_same_rule_as_a_full_check() {
        let s = signer();
        let t = s.sign(ACCESS_TYP, &access(1000, 1600));
        let claims = access(1000, 1600);
        for now in [900, 999, 1000, 1599, 1600, 1601] {
            assert_eq!(claims.check_time(now), s.verifier().access(&t, now).map(|_| ()), "at {now}");
        }
    }

    #[test]
    fn offline_token_is_never_an_access_token() {
        let s = signer();
        let off = OfflineClaims::new("alice", "s1", "d1", &[], 1000, 9000, "j2".into());
        let t = s.sign(OFFLINE_TYP, &off);
        assert_eq!(s.verifier().offline(&t, 2000), Ok(off.clone()));
        assert!(matches!(s.verifier().access(&t, 2000), Err(TokenError::WrongType { .. })));
        // Even relabelled as at+jwt, its audience gives it away (and its claims do not fit).
        let relabelled = s.sign(ACCESS_TYP, &off);
        assert!(s.verifier().access(&relabelled, 2000).is_err());
    }

    #[test]
    fn access_claims_with_another_audience_are_refused() {
        let s = signer();
        let mut c = access(1000, 1600);
        c.aud = OFFLINE_AUDIENCE.into();
        assert_eq!(s.verifier().access(&s.sign(ACCESS_TYP, &c), 1100), Err(TokenError::WrongAudience));
    }

    #[test]
    fn another_keys_token_and_a_changed_byte_are_refused() {
        let (a, b) = (signer(), signer());
        let t = a.sign(ACCESS_TYP, &access(1000, 1600));
        assert_eq!(b.verifier().access(&t, 1100), Err(TokenError::Header), "unknown kid");
        let forged = TokenVerifier { key: b.verifier().key, kid: a.verifier().kid };
        assert_eq!(forged.access(&t, 1100), Err(TokenError::BadSignature));
        let (body, sig) = t.rsplit_once('.').expect("three parts");
        let mut sig = sig.as_bytes().to_vec();
        sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{body}.{}", String::from_utf8(sig).expect("ascii"));
        assert!(a.verifier().access(&tampered, 1100).is_err());
    }

    #[test]
    fn hs256_and_none_tokens_are_refused() {
        let s = signer();
        let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&access(1000, 1600)).expect("json"));
        let kid = s.verifier().kid;
        for alg in ["none", "HS256"] {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#));
            let t = format!("{h}.{claims}.");
            assert!(s.verifier().access(&t, 1100).is_err(), "{alg}");
        }
    }

    #[test]
    fn jwks_names_the_key_tokens_carry() {
        let s = signer();
        let jwks = s.jwks();
        let x = jwks["keys"][0]["x"].as_str().expect("x");
        let public = URL_SAFE_NO_PAD.decode(x).expect("b64");
        let t = s.sign(ACCESS_TYP, &access(1000, 1600));
        assert!(TokenVerifier::from_public_key(&public).access(&t, 1100).is_ok());
        assert_eq!(jwks["keys"][0]["kid"], s.verifier().kid);
    }

    #[test]
    fn a_pin_list_verifies_only_as_itself_while_fresh_and_merges_into_at_most_four_pins() {
        let s = signer();
        let claims = PinsClaims::new(vec!["sha256/a".into(), "sha256/b".into()], 1000);
        let t = s.sign(PINS_TYP, &claims);
        assert_eq!(s.verifier().pins(&t, 1001), Ok(claims.clone()));
        assert_eq!(s.verifier().pins(&t, 1000 + PINS_LIFETIME_SECS), Err(TokenError::Expired));
        assert!(matches!(s.verifier().access(&t, 1001), Err(TokenError::WrongType { .. })));
        assert!(matches!(signer().verifier().pins(&t, 1001), Err(TokenError::Header)), "another key");
        let directive = s.sign(DIRECTIVE_TYP, &DirectiveClaims::new("a", "d", "s", "j".into(), DirectiveKind::Wipe, 1));
        assert!(matches!(s.verifier().pins(&directive, 1001), Err(TokenError::WrongType { .. })));
        let relabelled = s.sign(PINS_TYP, &DirectiveClaims::new("a", "d", "s", "j".into(), DirectiveKind::Wipe, 1000));
        assert_eq!(s.verifier().pins(&relabelled, 1001), Err(TokenError::Malformed), "other claims");
        for n in [0, MAX_PINS + 1] {
            let t = s.sign(PINS_TYP, &PinsClaims::new((0..n).map(|i| format!("sha256/{i}")).collect(), 1000));
            assert_eq!(s.verifier().pins(&t, 1001), Err(TokenError::Malformed), "{n} pins");
        }
        let own: Vec<String> = ["p1", "p2", "p3"].map(String::from).to_vec();
        let merged = merge_pins(&own, &["p2".into(), "n1".into()]);
        assert_eq!(merged, ["p2", "n1", "p1", "p3"]);
        let merged = merge_pins(&merged, &["n1".into(), "n2".into()]);
        assert_eq!(merged, ["n1", "n2", "p2", "p1"], "the oldest own pin goes first");
    }
}
