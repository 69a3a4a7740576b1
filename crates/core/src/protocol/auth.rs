//! The authentication wire (SPEC section 5, "Devices and sessions", "Offline lease",
//! "Endpoints"), defined once for the server and the client: the bodies of login, refresh and
//! logout, the JWKS, `GET /v1/devices/self` and `POST /v1/devices/ack`; the device secret and
//! the relogin proof by which a later login names its device. No IO and no clock: `ts` and
//! "now" are arguments.
//!
//! ```text
//! proof = base64(HMAC-SHA256(device secret, "FV1-RELOGIN" "\n" DEVICE_ID "\n" TS))
//! ```
//!
//! `TS` is the proof's `ts` in decimal, as the JSON number carries it; HMAC comes from
//! aws-lc-rs (RFC 2104) and verification compares in constant time. `docs/protocol.md`,
//! section 4.1, describes the exchange and works one proof out byte for byte.
//!
//! Secrets (the password, the refresh token, the session secret, the device secret, the lease
//! key) travel as base64 or text inside these bodies; every body holding one prints
//! `[redacted]` for it in `Debug`.

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::decode_canonical;
use super::signing::timestamp_is_fresh;

/// Bytes of a device secret.
pub const DEVICE_SECRET_LEN: usize = 32;

/// The first line of the string a relogin proof signs; keeps a proof from ever being taken
/// for a request or response signature.
pub const RELOGIN_LABEL: &str = "FV1-RELOGIN";

/// Why a device secret or a relogin proof was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceProofError {
    /// The device secret is not 32 bytes of canonical standard base64.
    #[error("the device secret must be 32 bytes in canonical standard base64")]
    MalformedSecret,
    /// The proof is not the canonical standard base64 of 32 bytes.
    #[error("the device proof must be an HMAC-SHA256 in canonical standard base64")]
    MalformedProof,
    /// The proof is well formed but does not verify under this device secret.
    #[error("the device proof does not verify")]
    Mismatch,
}

/// The bytes a relogin proof covers: `"FV1-RELOGIN" "\n" device_id "\n" ts`.
pub fn relogin_string(device_id: &str, ts: u64) -> Vec<u8> {
    format!("{RELOGIN_LABEL}\n{device_id}\n{ts}").into_bytes()
}

/// A device's secret: 32 random bytes the server makes at the device's first login and sends
/// once, as base64, in `device_secret`. The device keeps it (wrapped by its master key) for
/// the device's life and proves with it, at each later login, that it is that device.
pub struct DeviceSecret(Zeroizing<[u8; DEVICE_SECRET_LEN]>);

impl fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecret([redacted])")
    }
}

impl DeviceSecret {
    /// Takes 32 secret bytes (fresh from a CSPRNG, or just unsealed or unwrapped).
    pub fn from_bytes(bytes: Zeroizing<[u8; DEVICE_SECRET_LEN]>) -> Self {
        DeviceSecret(bytes)
    }

    /// Decodes the base64 form of a login answer's `device_secret`.
    ///
    /// # Errors
    /// [`DeviceProofError::MalformedSecret`] unless it is the canonical base64 of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, DeviceProofError> {
        decode_canonical::<DEVICE_SECRET_LEN>(s)
            .map(|b| DeviceSecret(Zeroizing::new(b)))
            .ok_or(DeviceProofError::MalformedSecret)
    }

    /// The base64 form, for the device's first login answer only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// The raw bytes (to seal or wrap them for storage).
    ///
    /// # Security
    /// Hand them only to a sealing or wrapping AEAD, never to a log or a response.
    pub fn expose_secret(&self) -> &[u8; DEVICE_SECRET_LEN] {
        &self.0
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref())
    }

    /// The relogin proof for `device_id` at `ts` (Unix seconds).
    pub fn relogin_proof(&self, device_id: &str, ts: u64) -> String {
        STANDARD.encode(hmac::sign(&self.key(), &relogin_string(device_id, ts)).as_ref())
    }

    /// Checks a relogin proof for `device_id` at `ts`. Freshness is a separate question
    /// ([`DeviceProof::is_fresh`]).
    ///
    /// # Errors
    /// [`DeviceProofError::MalformedProof`] or [`DeviceProofError::Mismatch`].
    pub fn verify_relogin_proof(&self, device_id: &str, ts: u64, proof: &str) -> Result<(), DeviceProofError> {
        let tag = decode_canonical::<32>(proof).ok_or(DeviceProofError::MalformedProof)?;
        // aws-lc-rs compares the tags in constant time.
        hmac::verify(&self.key(), &relogin_string(device_id, ts), &tag).map_err(|_| DeviceProofError::Mismatch)
    }
}

/// A user's password, in memory only as long as a login (or `user add`) needs it. Zeroized on
/// drop; `Debug` prints `[redacted]`. It serializes as the plain string because the login
/// body is the one place it travels (over pinned TLS).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(Zeroizing<String>);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl Password {
    /// Takes ownership of a password.
    pub fn new(s: Zeroizing<String>) -> Self {
        Password(s)
    }

    /// The password text.
    ///
    /// # Security
    /// For the password hash and the login body only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Its length in characters.
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }
}

/// `device` in a login body: names the device this login continues, with a fresh proof that
/// the sender holds its device secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceProof {
    /// The device id the server assigned at the device's first login.
    pub id: String,
    /// When the proof was made, Unix seconds; within +/-300 s of the server's clock.
    pub ts: u64,
    /// base64(HMAC-SHA256(device secret, "FV1-RELOGIN" "\n" id "\n" ts)).
    pub proof: String,
}

impl DeviceProof {
    /// A proof that the holder of `secret` is device `device_id`, made at `ts`.
    pub fn new(secret: &DeviceSecret, device_id: &str, ts: u64) -> DeviceProof {
        DeviceProof { id: device_id.to_owned(), ts, proof: secret.relogin_proof(device_id, ts) }
    }

    /// Whether `ts` is within the signed channel's window of `now` (+/-300 s, inclusive).
    pub fn is_fresh(&self, now: u64) -> bool {
        timestamp_is_fresh(self.ts, now)
    }

    /// Checks the proof under the device's secret (not its freshness).
    ///
    /// # Errors
    /// [`DeviceProofError::MalformedProof`] or [`DeviceProofError::Mismatch`].
    pub fn verify(&self, secret: &DeviceSecret) -> Result<(), DeviceProofError> {
        secret.verify_relogin_proof(&self.id, self.ts, &self.proof)
    }
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub user: String,
    /// Password.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub password: Password,
    /// A label for this device; the server assigns the device id.
    pub device_name: String,
    /// The device this login continues; absent on a device's first login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceProof>,
    /// The current TOTP code (RFC 6238) of a user enrolled in multi-factor login; without it
    /// (or with a wrong one) such a login gets 401 `mfa_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub totp: Option<super::oidc::TotpCode>,
}

/// Why a login that named its device did not continue it (`device_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeviceReason {
    /// The device was wiped (`device wipe`); the answer carries the wipe directive, which the
    /// client carries out before anything else. The answer's device is new, with a new lease.
    Wiped,
    /// The device was retired by a plain logout (or its lease passed to the device that took
    /// it over after a rollback): nothing carries over; the answer's device is new, with a
    /// new lease.
    Retired,
    /// An old copy of the vault was caught syncing: the answer's device is new (fresh held
    /// ids, `device_seq` 0) and holds the old device's lease key, so the data carries over.
    Rollback,
}

impl DeviceReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceReason::Wiped => "wiped",
            DeviceReason::Retired => "retired",
            DeviceReason::Rollback => "rollback",
        }
    }

    /// The reason a wire string names.
    pub fn from_name(name: &str) -> Option<DeviceReason> {
        [DeviceReason::Wiped, DeviceReason::Retired, DeviceReason::Rollback].into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for DeviceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The offline lease: the key L wraps the account's data keys on the device until
/// `expires_at`. One per device: every login and refresh sends the same L with a later
/// `expires_at`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseBody {
    /// Lease id.
    pub lease_id: String,
    /// L, 32 bytes in standard base64.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key: Zeroizing<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

/// What login and refresh return (`Cache-Control: no-store`).
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// Access JWT (`typ: at+jwt`).
    pub access_token: String,
    /// Single-use refresh token.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub refresh_token: Zeroizing<String>,
    /// Offline JWT (`typ: fv-offline+jwt`), for unlocking offline; never accepted by the server.
    pub offline_token: String,
    /// The request-signing secret, 32 bytes in standard base64.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub session_secret: Zeroizing<String>,
    /// Names the session in `X-Key-Id`.
    pub key_id: String,
    /// Server-assigned device id.
    pub device_id: String,
    /// The device secret, 32 bytes in standard base64: on a device's first login only (a
    /// login that made this device), never again.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_secret: Option<Zeroizing<String>>,
    /// Why the device the login named was not continued (login only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_reason: Option<DeviceReason>,
    /// The named device's pending directives (compact JWS, oldest first), when the login
    /// named a device with a valid proof: a wiped device's wipe directive among them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directives: Vec<String>,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The device's offline lease.
    pub lease: LeaseBody,
}

/// `POST /v1/auth/refresh` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The current refresh token.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub refresh_token: Zeroizing<String>,
    /// Chosen by the client per refresh attempt and reused when it retries that attempt.
    pub attempt_id: String,
}

/// `POST /v1/auth/logout` body. An empty body is the same as `{}`: a plain logout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    /// True: end this session only; the device, its lease key and its device secret stay
    /// (`logout --keep-data`). False or absent: a plain logout, which also retires the device
    /// and deletes its lease key on the server.
    #[serde(default)]
    pub keep_device: bool,
}

/// `POST /v1/auth/logout` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogoutResponse {
    /// Always `logged_out`.
    pub status: String,
}

/// `GET /v1/devices/self` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceSelf {
    /// The user.
    pub user: String,
    /// This device's id.
    pub device_id: String,
    /// The session's key id.
    pub key_id: String,
    /// The user's roles as of the access token.
    pub roles: Vec<String>,
}

/// `GET /v1/auth/jwks` answer (RFC 7517).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JwksResponse {
    /// The token-signing keys.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub keys: Vec<serde_json::Value>,
}

/// `POST /v1/devices/ack` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The `jti` of each directive the device has carried out.
    pub jtis: Vec<String>,
}

/// `POST /v1/devices/ack` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AckResponse {
    /// How many of the named directives were pending for this device and are now done.
    pub acknowledged: u64,
}

// The secrets above (L, the refresh token, the session and device secrets) print as
// `[redacted]`.
impl fmt::Debug for LeaseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseBody")
            .field("lease_id", &self.lease_id)
            .field("key", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("key_id", &self.key_id)
            .field("device_id", &self.device_id)
            .field("device_secret", &self.device_secret.as_ref().map(|_| "[redacted]"))
            .field("device_reason", &self.device_reason)
            .field("directives", &self.directives.len())
            .field("expires_in", &self.expires_in)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRequest").field("attempt_id", &self.attempt_id).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> DeviceSecret {
        DeviceSecret::from_bytes(Zeroizing::new(core::array::from_fn(|i| i as u8)))
    }

    #[test]
    fn relogin_string_is_the_spec_layout() {
        let s = relogin_string("d_UFFSU1RVVldYWVpbXF1eXw", 1_767_830_400);
        assert_eq!(String::from_utf8(s).expect("ascii"), "FV1-RELOGIN\nd_UFFSU1RVVldYWVpbXF1eXw\n1767830400");
    }

    #[test]
    fn a_relogin_proof_verifies_only_for_its_device_time_and_secret() {
        let k = secret();
        let p = DeviceProof::new(&k, "d_1", 1000);
        assert_eq!(p.verify(&k), Ok(()));
        for other in [
            DeviceProof { id: "d_2".into(), ..p.clone() },
            DeviceProof { ts: 1001, ..p.clone() },
            DeviceProof { proof: DeviceProof::new(&k, "d_1", 999).proof, ..p.clone() },
        ] {
            assert_eq!(other.verify(&k), Err(DeviceProofError::Mismatch), "{other:?}");
        }
        let stranger = DeviceSecret::from_bytes(Zeroizing::new([9; 32]));
        assert_eq!(p.verify(&stranger), Err(DeviceProofError::Mismatch));
    }

    #[test]
    fn a_proof_is_fresh_for_300_seconds_either_way() {
        let p = DeviceProof::new(&secret(), "d_1", 1000);
        assert!(p.is_fresh(1300) && p.is_fresh(700));
        assert!(!p.is_fresh(1301) && !p.is_fresh(699));
    }

    #[test]
    fn non_canonical_proofs_and_secrets_are_refused() {
        let k = secret();
        let p = DeviceProof::new(&k, "d_1", 1000);
        for bad in [p.proof.trim_end_matches('='), "", "AAAA", &p.proof.replace('+', "-").replace('/', "_")] {
            if bad == p.proof {
                continue;
            }
            let q = DeviceProof { proof: bad.to_owned(), ..p.clone() };
            assert_eq!(q.verify(&k), Err(DeviceProofError::MalformedProof), "{bad:?}");
        }
        let b64 = k.to_base64();
        assert_eq!(DeviceSecret::from_base64(&b64).map(|s| *s.expose_secret()), Ok(*k.expose_secret()));
        for bad in [b64.trim_end_matches('='), "AAAA", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9="] {
            assert_eq!(DeviceSecret::from_base64(bad).map(|_| ()), Err(DeviceProofError::MalformedSecret), "{bad}");
        }
    }

    #[test]
    fn token_bodies_redact_their_secrets_in_debug() {
        let r = TokenResponse {
            access_token: "at".into(),
            refresh_token: Zeroizing::new("rt_secret_value".into()),
            offline_token: "ot".into(),
            session_secret: Zeroizing::new("c2Vzc2lvbiBzZWNyZXQ=".into()),
            key_id: "k_1".into(),
            device_id: "d_1".into(),
            device_secret: Some(Zeroizing::new("ZGV2aWNlIHNlY3JldA==".into())),
            device_reason: Some(DeviceReason::Rollback),
            directives: vec![],
            expires_in: 600,
            lease: LeaseBody { lease_id: "l_1".into(), key: Zeroizing::new("bGVhc2Uga2V5".into()), expires_at: 1 },
        };
        let req = RefreshRequest { refresh_token: Zeroizing::new("rt_secret_value".into()), attempt_id: "a".into() };
        let login = LoginRequest {
            user: "alice".into(),
            password: Password::new(Zeroizing::new("hunter2 hunter2".into())),
            device_name: "tablet".into(),
            device: None,
            totp: None,
        };
        let shown = format!("{r:?} {req:?} {login:?} {:?}", secret());
        for secret in ["rt_secret_value", "c2Vzc2lvbiBzZWNyZXQ=", "bGVhc2Uga2V5", "ZGV2aWNlIHNlY3JldA==", "hunter2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("k_1") && shown.contains("[redacted]") && shown.contains("Rollback"), "{shown}");
        assert!(shown.contains("DeviceSecret([redacted])"), "{shown}");
    }

    #[test]
    fn absent_device_fields_are_left_out_of_the_token_response() {
        let r = TokenResponse {
            access_token: "at".into(),
            refresh_token: Zeroizing::new("rt".into()),
            offline_token: "ot".into(),
            session_secret: Zeroizing::new("s".into()),
            key_id: "k".into(),
            device_id: "d".into(),
            device_secret: None,
            device_reason: None,
            directives: vec![],
            expires_in: 600,
            lease: LeaseBody { lease_id: "l".into(), key: Zeroizing::new("L".into()), expires_at: 1 },
        };
        let json = serde_json::to_value(&r).expect("serializes");
        for absent in ["device_secret", "device_reason", "directives"] {
            assert!(json.get(absent).is_none(), "{json}");
        }
        let back: TokenResponse = serde_json::from_value(json).expect("parses");
        assert!(back.device_secret.is_none() && back.device_reason.is_none() && back.directives.is_empty());
        let wiped = serde_json::json!({"device_reason": "wiped", "directives": ["a.b.c"]});
        let mut full = serde_json::to_value(&r).expect("serializes");
        full.as_object_mut().expect("object").extend(wiped.as_object().expect("object").clone());
        let back: TokenResponse = serde_json::from_value(full).expect("parses");
        assert_eq!((back.device_reason, back.directives), (Some(DeviceReason::Wiped), vec!["a.b.c".to_owned()]));
    }

    #[test]
    fn login_bodies_round_trip_and_refuse_unknown_fields() {
        let k = secret();
        let body = serde_json::json!({"user": "alice", "password": "pw", "device_name": "t",
            "device": {"id": "d_1", "ts": 1000, "proof": k.relogin_proof("d_1", 1000)}});
        let req: LoginRequest = serde_json::from_value(body.clone()).expect("parses");
        assert_eq!(req.device.as_ref().map(|d| d.verify(&k)), Some(Ok(())));
        assert_eq!(req.password.expose_secret(), "pw");
        assert_eq!(serde_json::to_value(&req).expect("serializes"), body);
        let first = serde_json::json!({"user": "alice", "password": "pw", "device_name": "t"});
        let req: LoginRequest = serde_json::from_value(first.clone()).expect("parses");
        assert!(req.device.is_none());
        assert_eq!(serde_json::to_value(&req).expect("serializes"), first);
        let with_code = serde_json::json!({"user": "alice", "password": "pw", "device_name": "t", "totp": "287082"});
        let req: LoginRequest = serde_json::from_value(with_code.clone()).expect("parses");
        assert_eq!(req.totp.as_ref().map(|c| c.expose_secret()), Some("287082"));
        assert_eq!(serde_json::to_value(&req).expect("serializes"), with_code);
        for bad in [
            serde_json::json!({"user": "a", "password": "p", "device_name": "t", "otp": "1"}),
            serde_json::json!({"user": "a", "password": "p", "device_name": "t",
                "device": {"id": "d", "ts": 1, "proof": "x", "extra": 1}}),
            serde_json::json!({"user": "a", "password": "p", "device_name": "t",
                "device": {"id": "d", "ts": -1, "proof": "x"}}),
        ] {
            assert!(serde_json::from_value::<LoginRequest>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_logout_without_keep_device_retires_and_unknown_fields_are_refused() {
        let parse = |s: &str| serde_json::from_str::<LogoutRequest>(s).map(|r| r.keep_device);
        assert_eq!(parse("{}").ok(), Some(false));
        assert_eq!(parse(r#"{"keep_device":false}"#).ok(), Some(false));
        assert_eq!(parse(r#"{"keep_device":true}"#).ok(), Some(true));
        assert!(parse(r#"{"keep_device":"yes"}"#).is_err());
        assert!(parse(r#"{"keep_data":true}"#).is_err());
        assert_eq!(LogoutRequest::default(), LogoutRequest { keep_device: false });
    }

    #[test]
    fn device_reasons_have_their_wire_names() {
        for r in [DeviceReason::Wiped, DeviceReason::Retired, DeviceReason::Rollback] {
            assert_eq!(serde_json::to_value(r).expect("serializes"), r.as_str());
            assert_eq!(DeviceReason::from_name(r.as_str()), Some(r));
        }
        assert_eq!(DeviceReason::from_name("lost"), None);
    }
}
