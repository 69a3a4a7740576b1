//! One OpenID Connect provider the server is a registered client of: its discovery document
//! and JWKS (fetched over HTTPS, cached for their HTTP lifetimes), the code exchange with
//! PKCE, the ID token's checks, and the refresh grant that re-checks a user
//! (`--oidc-recheck`). The JOSE work (signatures, key selection, claims) is the
//! `openidconnect` crate's (docs/adr/0009); what this module decides is which algorithms
//! are allowed, which times are accepted, and what is cached.

use std::borrow::Cow;
use std::sync::Arc;

use fieldvault_core::protocol::TIMESTAMP_WINDOW_SECS;
use fieldvault_core::protocol::oidc::{DEFAULT_SCOPES, OidcIssuerConfig};
use openidconnect::core::{
    CoreClient, CoreGenderClaim, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, ClientSecret, DiscoveryError, IdToken, IdTokenVerifier,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    SignatureVerificationError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::http::{Lifetime, ProviderHttp};

/// The signature algorithms an ID token may use: asymmetric only. `none` and the HMAC
/// algorithms (keyed with a client secret, or forged with a public key taken for a secret)
/// are never accepted.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Discovery and keys are kept at least this long, whatever the provider's `Cache-Control`
/// says (`no-store` included): a login burst must not become a burst of fetches.
const MIN_CACHE_SECS: u64 = 60;
/// ...and at most a day, so a provider's changed endpoints are seen by the next day.
const MAX_CACHE_SECS: u64 = 86_400;
/// When the provider names no lifetime.
const DEFAULT_CACHE_SECS: u64 = 3_600;
/// An ID token signed by a key the cached JWKS lacks makes the server fetch the JWKS again
/// (the provider rotated its keys), at most once per this many seconds.
const JWKS_REFETCH_SECS: u64 = 10;

/// How one provider is configured (`serve --oidc ...`, or one `[[oidc]]` table of
/// `--oidc-config`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The issuer identifier; discovery is at `issuer + /.well-known/openid-configuration`
    /// and must name exactly this issuer.
    pub issuer: String,
    /// The server's client id at the provider.
    pub client_id: String,
    /// The client secret (a confidential client), if the provider issued one. Read from a
    /// file (`--oidc-client-secret-file`, or `client_secret_file` in the config file).
    #[serde(skip)]
    pub client_secret: Option<Zeroizing<String>>,
    /// The secret's file, in the config file.
    #[serde(default)]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Scopes asked for; default `openid profile offline_access`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A claim holding the user's roles (a list of strings, or one string), such as
    /// `groups`: when set, every sign-in sets the user's roles from it.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// The claim whose value names a user created at first sign-in (default
    /// `preferred_username`, then `sub`).
    #[serde(default)]
    pub username_claim: Option<String>,
    /// Create a Fieldvault user at an identity's first sign-in (off: an operator links
    /// identities to users with `fieldvault-server user link`).
    #[serde(default)]
    pub create_users: bool,
    /// At each refresh, refresh at the provider with the refresh token it gave at sign-in;
    /// the device's refresh fails once the provider refuses (the user was disabled there).
    #[serde(default)]
    pub recheck: bool,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("scopes", &self.scopes)
            .field("roles_claim", &self.roles_claim)
            .field("create_users", &self.create_users)
            .field("recheck", &self.recheck)
            .finish_non_exhaustive()
    }
}

/// Claims beyond the standard ones: the roles claim and `jti`, read by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type Token = IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// Why a sign-in through the provider failed. `Unavailable` is the provider's fault or the
/// network's (502 `provider_unavailable`); `Refused` is a code, token or user that does not
/// pass (401 `invalid_grant`). The texts never hold a code, token or secret.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached, or answered with something malformed.
    #[error("{0}")]
    Unavailable(String),
    /// The provider refused, or its answer does not pass the checks.
    #[error("{0}")]
    Refused(String),
}

/// A verified sign-in: who, until when, and what the provider gave to keep.
pub struct SignedIn {
    /// `sub`.
    pub subject: String,
    /// The name a created user gets (the username claim, else `sub`).
    pub username: String,
    /// Roles from the roles claim, when one is configured (None: not configured).
    pub roles: Option<Vec<String>>,
    /// `exp`, Unix seconds.
    pub expires_at: u64,
    /// `jti`, when the ID token has one.
    pub jti: Option<String>,
    /// The provider's refresh token, if it gave one.
    pub refresh_token: Option<Zeroizing<String>>,
}

/// What the provider said when asked to refresh (the `--oidc-recheck` path).
pub enum Recheck {
    /// Still valid; a rotated refresh token to keep, if it sent one.
    Valid(Option<Zeroizing<String>>),
    /// The provider refused the refresh token (the user was disabled or the grant revoked).
    Refused(String),
}

// By hand: the provider's refresh token prints as `[redacted]`.
impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("subject", &self.subject)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("expires_at", &self.expires_at)
            .field("jti", &self.jti)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl std::fmt::Debug for Recheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recheck::Valid(rotated) => f.debug_tuple("Valid").field(&rotated.as_ref().map(|_| "[redacted]")).finish(),
            Recheck::Refused(why) => f.debug_tuple("Refused").field(why).finish(),
        }
    }
}

struct Cached {
    metadata: CoreProviderMetadata,
    expires_at: u64,
    jwks_fetched_at: u64,
}

/// One configured provider and its cache.
pub struct Provider {
    config: ProviderConfig,
    issuer: IssuerUrl,
    http: Arc<ProviderHttp>,
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("config", &self.config).finish_non_exhaustive()
    }
}

fn cache_secs(lifetime: Option<Lifetime>) -> u64 {
    match lifetime {
        Some(Lifetime::MaxAge(n)) => n.clamp(MIN_CACHE_SECS, MAX_CACHE_SECS),
        Some(Lifetime::DoNotStore) => MIN_CACHE_SECS,
        None => DEFAULT_CACHE_SECS,
    }
}

fn discovery_error<E: std::error::Error>(issuer: &str, e: &DiscoveryError<E>) -> ProviderError {
    ProviderError::Unavailable(match e {
        DiscoveryError::Request(e) => format!("the identity provider {issuer} {e}"),
        DiscoveryError::Response(status, _, _) => {
            format!("the identity provider {issuer} answered its discovery document with HTTP {status}")
        }
        DiscoveryError::Parse(_) => format!("the identity provider {issuer}'s discovery document or JWKS is malformed"),
        DiscoveryError::Validation(why) => {
            format!("the identity provider {issuer}'s discovery document is refused: {why}")
        }
        other => format!("the identity provider {issuer}'s discovery failed: {other}"),
    })
}

impl Provider {
    /// A provider (nothing is fetched until it is first needed).
    ///
    /// # Errors
    /// The issuer is not an `https` URL.
    pub fn new(config: ProviderConfig, http: Arc<ProviderHttp>) -> Result<Provider, String> {
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| format!("issuer {:?}: {e}", config.issuer))?;
        if issuer.url().scheme() != "https" {
            return Err(format!("issuer {:?}: only https issuers are accepted", config.issuer));
        }
        if config.client_id.is_empty() {
            return Err(format!("issuer {:?}: the client id is empty", config.issuer));
        }
        Ok(Provider { config, issuer, http, cache: Mutex::new(None) })
    }

    /// Its configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The issuer identifier, as configured.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The discovery document with its keys: cached, or fetched now. A failed fetch caches
    /// nothing.
    async fn metadata(&self, now: u64) -> Result<CoreProviderMetadata, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| now < c.expires_at) {
            return Ok(c.metadata.clone());
        }
        let http = self.http.fork();
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &http)
            .await
            .map_err(|e| discovery_error(self.issuer(), &e))?;
        let expires_at = now + cache_secs(http.take_lifetime());
        *cache = Some(Cached { metadata: metadata.clone(), expires_at, jwks_fetched_at: now });
        Ok(metadata)
    }

    /// Fetches the JWKS again (the provider rotated its keys), at most once per
    /// [`JWKS_REFETCH_SECS`]; the cached document then carries the new keys, which are
    /// returned (None: fetched too recently to fetch again).
    async fn refetch_jwks(&self, now: u64) -> Result<Option<CoreJsonWebKeySet>, ProviderError> {
        let mut cache = self.cache.lock().await;
        let Some(cached) = cache.as_mut() else { return Ok(None) };
        if now < cached.jwks_fetched_at + JWKS_REFETCH_SECS {
            return Ok(None);
        }
        let http = self.http.fork();
        let jwks = CoreJsonWebKeySet::fetch_async(cached.metadata.jwks_uri(), &http)
            .await
            .map_err(|e| ProviderError::Unavailable(format!("the identity provider {}'s JWKS: {e}", self.issuer())))?;
        cached.metadata = cached.metadata.clone().set_jwks(jwks.clone());
        cached.jwks_fetched_at = now;
        cached.expires_at = cached.expires_at.min(now + cache_secs(http.take_lifetime()));
        Ok(Some(jwks))
    }

    /// What a device needs to start a sign-in here.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when discovery fails.
    pub async fn public_config(&self, now: u64) -> Result<OidcIssuerConfig, ProviderError> {
        let metadata = self.metadata(now).await?;
        Ok(OidcIssuerConfig {
            issuer: self.config.issuer.clone(),
            authorization_endpoint: metadata.authorization_endpoint().url().to_string(),
            client_id: self.config.client_id.clone(),
            scopes: self.scopes(),
        })
    }

    fn scopes(&self) -> Vec<String> {
        if self.config.scopes.is_empty() {
            DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.config.scopes.clone()
        }
    }

    fn secret(&self) -> Option<ClientSecret> {
        self.config.client_secret.as_ref().map(|s| ClientSecret::new(s.to_string()))
    }

    /// Redeems an authorization code with its PKCE verifier at the token endpoint, then
    /// checks the ID token: signature by a key of the issuer's JWKS with an allowed
    /// algorithm, `iss`, `aud`, `exp`, `iat` within the signed channel's window of `now`,
    /// and `nonce`.
    ///
    /// # Errors
    /// [`ProviderError::Refused`] for a code, verifier or token that does not pass;
    /// [`ProviderError::Unavailable`] when the provider cannot be reached or answers with
    /// something malformed.
    pub async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
        now: u64,
    ) -> Result<SignedIn, ProviderError> {
        let metadata = self.metadata(now).await?;
        let keys = metadata.jwks().clone();
        let client =
            CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), self.secret());
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|_| ProviderError::Refused("redirect_uri is not a URL".into()))?;
        let http = self.http.fork();
        let answer = client
            .exchange_code(openidconnect::AuthorizationCode::new(code.to_owned()))
            .map_err(|_| {
                ProviderError::Unavailable(format!("the identity provider {} names no token endpoint", self.issuer()))
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()))
            .set_redirect_uri(Cow::Owned(redirect))
            .request_async(&http)
            .await
            .map_err(|e| self.token_error(&e))?;
        let raw = answer
            .extra_fields()
            .id_token()
            .ok_or_else(|| {
                ProviderError::Unavailable(format!("the identity provider {} sent no ID token", self.issuer()))
            })?
            .to_string();
        let token: Token =
            raw.parse().map_err(|_| ProviderError::Refused("the identity provider's ID token is malformed".into()))?;
        let claims = match self.verify(&token, &keys, nonce, now) {
            Ok(claims) => claims,
            // An unknown key: the provider may have rotated; fetch its keys again, once.
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                match self.refetch_jwks(now).await? {
                    Some(keys) => self.verify(&token, &keys, nonce, now).map_err(|e| refused(&e))?,
                    None => {
                        return Err(ProviderError::Refused(
                            "the ID token is signed by a key the provider does not publish".into(),
                        ));
                    }
                }
            }
            Err(e) => return Err(refused(&e)),
        };
        let rest = &claims.additional_claims().rest;
        let subject = claims.subject().as_str().to_owned();
        let username_claim = self.config.username_claim.as_deref().unwrap_or("preferred_username");
        let username = match username_claim {
            "preferred_username" => claims.preferred_username().map(|u| u.as_str().to_owned()),
            "email" => claims.email().map(|e| e.as_str().to_owned()),
            other => rest.get(other).and_then(|v| v.as_str()).map(str::to_owned),
        }
        .unwrap_or_else(|| subject.clone());
        let roles = self.config.roles_claim.as_deref().map(|name| roles_from(rest.get(name)));
        Ok(SignedIn {
            subject,
            username,
            roles,
            expires_at: u64::try_from(claims.expiration().timestamp()).unwrap_or(0),
            jti: rest.get("jti").and_then(|v| v.as_str()).map(str::to_owned),
            refresh_token: answer.refresh_token().map(|t| Zeroizing::new(t.secret().clone())),
        })
    }

    /// Checks `token` against the issuer's `keys` (no IO).
    fn verify(
        &self,
        token: &Token,
        keys: &CoreJsonWebKeySet,
        nonce: &str,
        now: u64,
    ) -> Result<openidconnect::IdTokenClaims<OtherClaims, CoreGenderClaim>, ClaimsVerificationError> {
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        let at = move |secs: i64| chrono_from(secs);
        let verifier = IdTokenVerifier::new_public_client(
            ClientId::new(self.config.client_id.clone()),
            self.issuer.clone(),
            keys.clone(),
        )
        .set_allowed_algs(ALLOWED_ALGS)
        .set_time_fn(move || at(now_i))
        .set_issue_time_verifier_fn(move |iat| {
            let window = i64::try_from(TIMESTAMP_WINDOW_SECS).unwrap_or(300);
            if (iat.timestamp() - now_i).abs() <= window {
                Ok(())
            } else {
                Err(format!("the ID token was issued at {iat}, more than {window} s from the server's clock"))
            }
        });
        token.claims(&verifier, &Nonce::new(nonce.to_owned())).cloned()
    }

    fn token_error<RE: std::error::Error, T: openidconnect::ErrorResponse>(
        &self,
        e: &RequestTokenError<RE, T>,
    ) -> ProviderError {
        match e {
            // The provider refused the code, the verifier or the redirect URI. Its error
            // answer is provider text: only the standard code is kept.
            RequestTokenError::ServerResponse(r) => {
                let code = serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|c| c.as_str()).map(str::to_owned));
                ProviderError::Refused(format!(
                    "the identity provider refused the authorization code ({})",
                    code.unwrap_or_else(|| "no reason given".into())
                ))
            }
            RequestTokenError::Request(e) => {
                ProviderError::Unavailable(format!("the identity provider {} {e}", self.issuer()))
            }
            // Never the body: it may hold tokens.
            RequestTokenError::Parse(..) => ProviderError::Unavailable(format!(
                "the identity provider {}'s token answer is malformed",
                self.issuer()
            )),
            RequestTokenError::Other(_) => ProviderError::Unavailable(format!(
                "the identity provider {}'s token answer is not usable",
                self.issuer()
            )),
        }
    }

    /// Refreshes at the provider with the refresh token it gave (the `--oidc-recheck`
    /// path): `Refused` once it will not (user disabled, grant revoked).
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the provider cannot be reached or answers with
    /// something malformed; then nothing is decided.
    pub async fn recheck(&self, refresh_token: &str, now: u64) -> Result<Recheck, ProviderError> {
        let metadata = self.metadata(now).await?;
        let client =
            CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), self.secret());
        let token = RefreshToken::new(refresh_token.to_owned());
        let http = self.http.fork();
        let request = client.exchange_refresh_token(&token).map_err(|_| {
            ProviderError::Unavailable(format!("the identity provider {} names no token endpoint", self.issuer()))
        })?;
        match request.request_async(&http).await {
            Ok(answer) => Ok(Recheck::Valid(answer.refresh_token().map(|t| Zeroizing::new(t.secret().clone())))),
            Err(e) => match self.token_error(&e) {
                ProviderError::Refused(why) => Ok(Recheck::Refused(why)),
                unavailable => Err(unavailable),
            },
        }
    }
}

fn chrono_from(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// The token's failure in plain words, never quoting the token.
fn refused(e: &ClaimsVerificationError) -> ProviderError {
    let why = match e {
        ClaimsVerificationError::Expired(why) => format!("the ID token is expired or not yet valid ({why})"),
        ClaimsVerificationError::InvalidAudience(_) => "the ID token is for another client (aud)".into(),
        ClaimsVerificationError::InvalidIssuer(_) => "the ID token is from another issuer (iss)".into(),
        ClaimsVerificationError::InvalidNonce(_) => "the ID token's nonce is not this sign-in's".into(),
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::DisallowedAlg(_)) => {
            "the ID token's signature algorithm is not allowed (only asymmetric signatures are)".into()
        }
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => {
            "the ID token is signed by a key the provider does not publish".into()
        }
        ClaimsVerificationError::SignatureVerification(_) => "the ID token's signature does not verify".into(),
        _ => "the ID token does not pass its checks".into(),
    };
    ProviderError::Refused(why)
}

/// Roles from a claim: a list of strings or one string; anything else (or a name that is not
/// a valid role) gives none of it. At most 64 roles of at most 128 characters are kept.
fn roles_from(value: Option<&serde_json::Value>) -> Vec<String> {
    let names: Vec<&str> = match value {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(serde_json::Value::as_str).collect(),
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    };
    let mut roles: Vec<String> = names
        .into_iter()
        .filter(|r| !r.is_empty() && r.chars().count() <= 128 && !r.chars().any(char::is_control))
        .take(64)
        .map(str::to_owned)
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_refresh_token_never_prints() {
        let token = || Some(Zeroizing::new("rt-the-providers-secret".to_owned()));
        let signed_in = SignedIn {
            subject: "s".into(),
            username: "u".into(),
            roles: None,
            expires_at: 1,
            jti: None,
            refresh_token: token(),
        };
        for shown in [format!("{signed_in:?}"), format!("{:?}", Recheck::Valid(token()))] {
            assert!(!shown.contains("rt-the-providers-secret") && shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn cache_lifetimes_are_clamped_to_a_minute_and_a_day() {
        assert_eq!(cache_secs(Some(Lifetime::MaxAge(5))), 60);
        assert_eq!(cache_secs(Some(Lifetime::MaxAge(600))), 600);
        assert_eq!(cache_secs(Some(Lifetime::MaxAge(10_000_000))), 86_400);
        assert_eq!(cache_secs(Some(Lifetime::DoNotStore)), 60);
        assert_eq!(cache_secs(None), 3_600);
    }

    #[test]
    fn roles_come_from_a_list_or_a_string_and_nothing_else() {
        let v = serde_json::json!(["b", "a", "a", "", 7]);
        assert_eq!(roles_from(Some(&v)), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(roles_from(Some(&serde_json::json!("solo"))), vec!["solo".to_owned()]);
        assert!(roles_from(Some(&serde_json::json!({"a": 1}))).is_empty());
        assert!(roles_from(None).is_empty());
    }

    #[test]
    fn no_symmetric_or_unsigned_algorithm_is_allowed() {
        for alg in ALLOWED_ALGS {
            assert!(!matches!(
                alg,
                CoreJwsSigningAlgorithm::HmacSha256
                    | CoreJwsSigningAlgorithm::HmacSha384
                    | CoreJwsSigningAlgorithm::HmacSha512
                    | CoreJwsSigningAlgorithm::None
            ));
        }
    }

    #[test]
    fn only_https_issuers_are_accepted() {
        let http = Arc::new(ProviderHttp::new(None).expect("roots"));
        let config = |issuer: &str| ProviderConfig {
            issuer: issuer.into(),
            client_id: "c".into(),
            client_secret: None,
            client_secret_file: None,
            scopes: vec![],
            roles_claim: None,
            username_claim: None,
            create_users: false,
            recheck: false,
        };
        assert!(Provider::new(config("http://id.example"), http.clone()).is_err());
        assert!(Provider::new(config("https://id.example"), http).is_ok());
    }
}
