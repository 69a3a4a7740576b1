//! Sign-in through an OpenID Connect provider, the device's half (SPEC section 5, issue 18;
//! `docs/identity.md`): the OAuth 2.0 authorization code flow (RFC 6749) with PKCE S256 only
//! (RFC 7636), a loopback redirect (RFC 8252 section 7.3), and the bodies the device
//! exchanges with the Fieldvault server. The device never talks to the provider except
//! through the browser: the server tells it where the provider's authorization endpoint is
//! (`GET /v1/auth/oidc/config`), and redeems the code itself (`POST /v1/auth/oidc`).
//!
//! Pure: randomness comes in as bytes, so the same inputs give the same URL and challenge.
//!
//! ```
//! use fieldvault_core::protocol::oidc::{AuthorizationRequest, OidcIssuerConfig};
//!
//! let provider = OidcIssuerConfig {
//!     issuer: "https://id.example".into(),
//!     authorization_endpoint: "https://id.example/auth".into(),
//!     client_id: "fieldvault".into(),
//!     scopes: vec!["openid".into(), "profile".into()],
//! };
//! let request = AuthorizationRequest::new([1; 32], [2; 32], [3; 32], "http://127.0.0.1:4711/callback");
//! let url = request.url(&provider);
//! assert!(url.starts_with("https://id.example/auth?response_type=code&client_id=fieldvault&"));
//! assert!(url.contains("&code_challenge_method=S256&"));
//! let back = request.check_redirect(&format!("code=abc&state={}", request.state())).expect("state matches");
//! assert_eq!(back.expose_secret(), "abc");
//! ```

use std::fmt;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::auth::DeviceProof;

/// The scopes a device asks for when the server names none: the ID token, the user's name,
/// and a refresh token the server keeps to re-check the user at the provider.
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// The path of the loopback redirect a device listens on (RFC 8252 section 7.3: the port is
/// the device's choice at run time; providers accept any port for a loopback address).
pub const REDIRECT_PATH: &str = "/callback";

/// Longest authorization code, PKCE verifier, nonce or state a server accepts in
/// `POST /v1/auth/oidc` (RFC 7636 caps the verifier at 128 characters; codes are opaque but
/// short in practice).
pub const MAX_FIELD: usize = 2048;

/// One provider the server signs users in through: what a device needs to start the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The issuer identifier, exactly as its discovery document and ID tokens give it.
    pub issuer: String,
    /// Where the browser starts the sign-in.
    pub authorization_endpoint: String,
    /// The server's client id at this provider.
    pub client_id: String,
    /// The scopes to ask for, `openid` first.
    pub scopes: Vec<String>,
}

/// `GET /v1/auth/oidc/config`: the providers this server accepts (empty when none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OidcConfigResponse {
    /// Each configured provider.
    pub issuers: Vec<OidcIssuerConfig>,
}

impl OidcConfigResponse {
    /// The provider whose issuer is `issuer`, compared exactly except for one trailing `/`
    /// (people type `https://id.example/` for `https://id.example`).
    pub fn find(&self, issuer: &str) -> Option<&OidcIssuerConfig> {
        let want = issuer.strip_suffix('/').unwrap_or(issuer);
        self.issuers.iter().find(|p| p.issuer.strip_suffix('/').unwrap_or(&p.issuer) == want)
    }
}

macro_rules! secret_text {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Zeroizing<String>);

        impl $name {
            /// Takes ownership of the text.
            pub fn new(s: Zeroizing<String>) -> Self {
                Self(s)
            }

            /// The text.
            ///
            /// # Security
            /// For the body that carries it and the check that needs it; never a log.
            pub fn expose_secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_text!(
    /// An authorization code from the provider's redirect: single use, short-lived, and
    /// worth a session to whoever redeems it first with the verifier.
    AuthorizationCode
);
secret_text!(
    /// A PKCE code verifier (RFC 7636): 43 characters of base64url from 32 random bytes.
    CodeVerifier
);
secret_text!(
    /// A six-digit TOTP code (RFC 6238) in a login body.
    TotpCode
);

/// `POST /v1/auth/oidc`: the code the browser brought back, and what the server needs to
/// redeem and check it. The answer is the password login's ([`super::auth::TokenResponse`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OidcLoginRequest {
    /// The provider's issuer identifier, one of `GET /v1/auth/oidc/config`'s.
    pub issuer: String,
    /// The authorization code from the redirect.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub code: AuthorizationCode,
    /// The PKCE verifier whose S256 challenge went into the authorization request.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub code_verifier: CodeVerifier,
    /// The redirect URI of the authorization request, exactly (the provider checks it).
    pub redirect_uri: String,
    /// The nonce of the authorization request; the ID token must carry it.
    pub nonce: String,
    /// A label for this device; the server assigns the device id.
    pub device_name: String,
    /// The device this login continues; absent on a device's first login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceProof>,
}

/// Why a redirect back from the provider was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    /// The provider answered with an error (`error=access_denied`, ...): its code and, when
    /// given, its description (provider text: shown to the user, never acted on).
    #[error("the identity provider refused the sign-in: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Provider {
        /// The OAuth error code.
        error: String,
        /// `error_description`, if any.
        description: Option<String>,
    },
    /// `state` is missing or is not the one this device sent: the redirect is not the answer
    /// to this sign-in (a forged or stale redirect, RFC 6749 section 10.12).
    #[error("the sign-in answer does not belong to this sign-in (state does not match)")]
    StateMismatch,
    /// No `code` in the redirect.
    #[error("the identity provider's answer carries no authorization code")]
    MissingCode,
    /// The query is not valid percent-encoding or UTF-8.
    #[error("the identity provider's answer is malformed")]
    Malformed,
}

/// One sign-in a device starts: `state`, `nonce` and the PKCE verifier, each from 32 random
/// bytes, and the loopback redirect URI the device listens on.
pub struct AuthorizationRequest {
    state: String,
    nonce: String,
    verifier: CodeVerifier,
    redirect_uri: String,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

impl AuthorizationRequest {
    /// A request from three sets of 32 random bytes (for `state`, `nonce` and the verifier).
    pub fn new(state: [u8; 32], nonce: [u8; 32], verifier: [u8; 32], redirect_uri: &str) -> Self {
        AuthorizationRequest {
            state: URL_SAFE_NO_PAD.encode(state),
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            verifier: CodeVerifier::new(Zeroizing::new(URL_SAFE_NO_PAD.encode(verifier))),
            redirect_uri: redirect_uri.to_owned(),
        }
    }

    /// The `state` value.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The `nonce` value (sent to the server, which checks the ID token carries it).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The PKCE verifier (sent to the server only).
    pub fn verifier(&self) -> &CodeVerifier {
        &self.verifier
    }

    /// The redirect URI.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The verifier's S256 challenge: base64url(SHA-256(verifier)) (RFC 7636 section 4.2).
    pub fn challenge(&self) -> String {
        code_challenge(&self.verifier)
    }

    /// The authorization URL to open in a browser.
    pub fn url(&self, provider: &OidcIssuerConfig) -> String {
        let scopes = if provider.scopes.is_empty() { DEFAULT_SCOPES.join(" ") } else { provider.scopes.join(" ") };
        let query = [
            ("response_type", "code"),
            ("client_id", provider.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", scopes.as_str()),
            ("state", self.state.as_str()),
            ("nonce", self.nonce.as_str()),
            ("code_challenge", &self.challenge()),
            ("code_challenge_method", "S256"),
            // Without consent, providers issue no refresh token for offline_access.
            ("prompt", "consent"),
        ]
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
        let sep = if provider.authorization_endpoint.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", provider.authorization_endpoint)
    }

    /// Checks the query string of the redirect (without the `?`) against this request: the
    /// provider's error if it sent one, else `state` compared in constant time, then the code.
    ///
    /// # Errors
    /// [`RedirectError`] as its variants say.
    pub fn check_redirect(&self, query: &str) -> Result<AuthorizationCode, RedirectError> {
        let mut code = None;
        let mut state = None;
        let mut error = None;
        let mut description = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or(RedirectError::Malformed)?;
            match k {
                "code" => code = Some(v),
                "state" => state = Some(v),
                "error" => error = Some(v),
                "error_description" => description = Some(v),
                _ => {}
            }
        }
        if let Some(error) = error {
            return Err(RedirectError::Provider { error, description });
        }
        let state_ok = state.is_some_and(|s| bool::from(s.as_bytes().ct_eq(self.state.as_bytes())));
        if !state_ok {
            return Err(RedirectError::StateMismatch);
        }
        code.map(|c| AuthorizationCode::new(Zeroizing::new(c))).ok_or(RedirectError::MissingCode)
    }
}

/// base64url(SHA-256(verifier)) without padding (RFC 7636 section 4.2, S256).
pub fn code_challenge(verifier: &CodeVerifier) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.expose_secret().as_bytes()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space); None when an escape is
/// malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> OidcIssuerConfig {
        OidcIssuerConfig {
            issuer: "https://id.example/realms/field".into(),
            authorization_endpoint: "https://id.example/auth".into(),
            client_id: "field vault".into(),
            scopes: vec![],
        }
    }

    #[test]
    fn the_s256_challenge_is_rfc_7636_appendix_b() {
        let verifier = CodeVerifier::new(Zeroizing::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into()));
        assert_eq!(code_challenge(&verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn the_url_carries_every_parameter_encoded_and_the_default_scopes() {
        let r = AuthorizationRequest::new([0; 32], [1; 32], [2; 32], "http://127.0.0.1:5000/callback");
        let url = r.url(&provider());
        assert!(url.contains("client_id=field%20vault"), "{url}");
        assert!(url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcallback"), "{url}");
        assert!(url.contains("scope=openid%20profile%20offline_access"), "{url}");
        assert!(url.contains(&format!("code_challenge={}", r.challenge())), "{url}");
        assert!(url.contains(&format!("nonce={}", r.nonce())), "{url}");
        assert_eq!(r.verifier().expose_secret().len(), 43);
        let with_query =
            OidcIssuerConfig { authorization_endpoint: "https://id.example/auth?tenant=x".into(), ..provider() };
        assert!(r.url(&with_query).starts_with("https://id.example/auth?tenant=x&response_type=code"));
    }

    #[test]
    fn a_redirect_with_another_state_or_none_is_refused() {
        let r = AuthorizationRequest::new([0; 32], [1; 32], [2; 32], "http://127.0.0.1:5000/callback");
        assert_eq!(r.check_redirect("code=abc").expect_err("refused"), RedirectError::StateMismatch);
        assert_eq!(r.check_redirect("code=abc&state=other").expect_err("refused"), RedirectError::StateMismatch);
        assert_eq!(r.check_redirect(&format!("state={}", r.state())).expect_err("refused"), RedirectError::MissingCode);
        let err = r.check_redirect("error=access_denied&error_description=user+said+no").expect_err("refused");
        assert_eq!(err.to_string(), "the identity provider refused the sign-in: access_denied (user said no)");
        assert_eq!(r.check_redirect("code=%zz").expect_err("refused"), RedirectError::Malformed);
        let ok = r.check_redirect(&format!("state={}&code=a%2Fb&iss=x", r.state())).expect("matches");
        assert_eq!(ok.expose_secret(), "a/b");
    }

    #[test]
    fn secrets_in_the_login_body_print_redacted() {
        let body = OidcLoginRequest {
            issuer: "https://id.example".into(),
            code: AuthorizationCode::new(Zeroizing::new("the-code".into())),
            code_verifier: CodeVerifier::new(Zeroizing::new("the-verifier".into())),
            redirect_uri: "http://127.0.0.1:1/callback".into(),
            nonce: "n".into(),
            device_name: "phone".into(),
            device: None,
        };
        let shown = format!("{body:?}");
        assert!(!shown.contains("the-code") && !shown.contains("the-verifier"), "{shown}");
        let json = serde_json::to_value(&body).expect("serializes");
        assert_eq!(json["code"], "the-code");
        assert!(json.get("device").is_none());
        assert_eq!(format!("{:?}", TotpCode::new(Zeroizing::new("123456".into()))), "TotpCode([redacted])");
    }

    #[test]
    fn the_config_finds_an_issuer_with_or_without_a_trailing_slash() {
        let c = OidcConfigResponse { issuers: vec![provider()] };
        assert!(c.find("https://id.example/realms/field/").is_some());
        assert!(c.find("https://id.example/realms/field").is_some());
        assert!(c.find("https://id.example/realms").is_none());
    }
}
