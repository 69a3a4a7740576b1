//! The server's shared state and the pieces every route uses: the clock, the limits, the
//! JSON body extractor that answers malformed or oversized input with a problem.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldvault_core::protocol::sync::{CheckedOp, CursorKey, MAX_KEY_AHEAD_SECS};
use fieldvault_core::protocol::{MAX_SKEW_SECS, TokenSigner, TokenVerifier};
use fieldvault_core::rules::Rules;
use serde::de::DeserializeOwned;

use crate::auth::Passwords;
use crate::problem::ApiError;
use crate::seal::Sealer;
use crate::storage::{PushBatch, Store, StoreError};

/// "Now" in Unix seconds. A function, so tests can run the server at another time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// Lifetimes and limits. The defaults are the documented policy (docs/protocol.md).
#[derive(Debug, Clone)]
pub struct Config {
    /// Access token lifetime (SPEC: about ten minutes; `serve --access-ttl`).
    pub access_ttl: u64,
    /// Offline token lifetime (SPEC: policy, default seven days; `serve --lease-ttl` sets it
    /// with the lease's, so the offline token expires with the lease).
    pub offline_ttl: u64,
    /// Offline lease lifetime: every login and refresh sends the device's lease key with
    /// `expires_at` = now + this (`serve --lease-ttl`).
    pub lease_ttl: u64,
    /// A refresh repeated with the same attempt id gets the same successor within this window.
    pub refresh_retry_window: u64,
    /// Largest request body, in bytes (413 beyond).
    pub body_limit: usize,
    /// Largest body of `POST /v1/sync/push`, in bytes (SPEC section 5: a push body is at
    /// most 4 MiB; a document alone may be 1 MiB, so a push of it needs more than
    /// `body_limit`).
    pub push_body_limit: usize,
    /// Longest a client may take to send a request body once its headers are in, in
    /// seconds: 60, time for 1 MiB at about 17 kB/s, a poor mobile link. A body that
    /// trickles in slower is refused, so a client cannot hold a connection and its buffer
    /// open indefinitely.
    pub body_timeout: u64,
    /// Largest total size of the request headers, in bytes (431 beyond).
    pub header_limit: usize,
    /// A session refreshes for at most this long after its login; then only a login helps.
    pub session_max_ttl: u64,
    /// Connections served at once (their handshakes done), from all addresses together.
    /// With one request at a time per connection this bounds the request bodies held in
    /// memory: 512 x 4 MiB push bodies (the arithmetic is at `listener::MAX_STREAMS`).
    pub max_connections: usize,
    /// Sockets one client address may hold at once, in any state (handshake or served; an
    /// IPv6 address counts by its /64); more are closed as soon as they are accepted
    /// (`serve --max-connections-per-address`, default 128: the load benchmark runs 64 clients
    /// from one address, and clients behind one proxy or NAT share theirs).
    pub max_connections_per_address: usize,
    /// TLS handshakes in progress at once, from all addresses together; one address may hold
    /// at most half its connection cap of them and never more than a quarter. When all are
    /// taken, new clients wait in the kernel's accept queue.
    pub max_handshakes: usize,
    /// From `accept` to a finished TLS handshake and a free connection slot; a connection
    /// that takes longer is closed.
    pub handshake_timeout: Duration,
    /// A served connection that starts no request within this of its handshake is closed
    /// (a request starts when its headers are in: the HTTP/1.1 request line and headers, an
    /// HTTP/2 HEADERS frame after the preface).
    pub first_request_timeout: Duration,
    /// A connection with no request in progress for this long after its last answer is
    /// closed (HTTP/2 with a GOAWAY first), whichever HTTP version it speaks.
    pub idle_timeout: Duration,
    /// A connection whose requests have been in progress without a pause for this long is
    /// closed: an answer must be taken within it (HTTP/2 flow control lets a reader stop an
    /// answer for good). The device's client gives up on any exchange after 60 s itself;
    /// a request body may take `body_timeout`, 60 s, to arrive.
    pub request_timeout: Duration,
    /// An HTTP/2 connection is pinged after this long without a frame from the client...
    pub keep_alive_interval: Duration,
    /// ...and closed when the ping is not answered within this.
    pub keep_alive_timeout: Duration,
}

impl Config {
    /// How long idempotency records live (SPEC: the longest session plus 30 days). An op
    /// whose key dates it earlier is answered `expired`.
    pub fn idempotency_retention(&self) -> u64 {
        self.session_max_ttl + 30 * 86_400
    }

    /// How long an idempotency record is kept, counted from the server's time of receipt:
    /// the retention, plus the day a key may be dated ahead of the server
    /// ([`MAX_KEY_AHEAD_SECS`]), plus the clock difference allowed between instances
    /// ([`MAX_SKEW_SECS`]). So a record is only purged once its key's date is past the
    /// retention on every instance, and a retry after that is `expired`, never applied again.
    pub fn idempotency_record_life(&self) -> u64 {
        self.idempotency_retention() + MAX_KEY_AHEAD_SECS + MAX_SKEW_SECS
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            access_ttl: 600,
            offline_ttl: 7 * 86_400,
            lease_ttl: 7 * 86_400,
            refresh_retry_window: 120,
            body_limit: 1 << 20,
            push_body_limit: 4 << 20,
            body_timeout: 60,
            header_limit: 16 << 10,
            session_max_ttl: 30 * 86_400,
            max_connections: 512,
            max_connections_per_address: 128,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

/// Everything a request handler needs.
pub struct App {
    /// Shared storage.
    pub store: Arc<dyn Store>,
    /// Signs tokens.
    pub tokens: TokenSigner,
    /// Checks access tokens.
    pub verifier: TokenVerifier,
    /// Seals secrets for storage.
    pub sealer: Sealer,
    /// Hashes and checks passwords.
    pub passwords: Passwords,
    /// The clock.
    pub clock: Clock,
    /// Lifetimes and limits.
    pub config: Config,
    /// The access rules in force.
    pub rules: Arc<Rules>,
    /// Authenticates pull cursors.
    pub cursors: CursorKey,
    /// Idempotency keys of pushes running on this instance (409 for a second user).
    pub in_flight: InFlight,
    /// The identity providers users may sign in through (None: passwords only).
    pub oidc: Option<Arc<crate::auth::oidc::Oidc>>,
    /// Connection and error counters (the console's health page).
    pub health: Arc<crate::health::Health>,
    /// The pins `GET /v1/server/pins` names (None: the route answers 404).
    pub pins: Option<Arc<crate::certs::PinSource>>,
    /// The group commit of request nonces (and of the revocation epoch's reads).
    pub replay: crate::signed::NonceWriter,
    /// What this instance verified of each session it has seen (ADR 0011).
    pub sessions: crate::signed::SessionCache,
}

/// The (user, idempotency key) pairs of pushes running on this instance. PostgreSQL adds
/// advisory locks for the other instances.
#[derive(Debug, Default)]
pub struct InFlight(std::sync::Mutex<std::collections::HashSet<(String, String)>>);

/// Holds keys in [`InFlight`] until dropped.
#[derive(Debug)]
pub struct InFlightGuard<'a> {
    set: &'a InFlight,
    keys: Vec<(String, String)>,
}

impl InFlight {
    /// Claims every key, or none if any is already claimed.
    pub fn claim<'k>(&self, user: &str, keys: impl Iterator<Item = &'k str>) -> Option<InFlightGuard<'_>> {
        let mut set = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut mine: Vec<(String, String)> = Vec::new();
        for k in keys {
            let pair = (user.to_owned(), k.to_owned());
            if set.contains(&pair) && !mine.contains(&pair) {
                for p in &mine {
                    set.remove(p);
                }
                return None;
            }
            if set.insert(pair.clone()) {
                mine.push(pair);
            }
        }
        Some(InFlightGuard { set: self, keys: mine })
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for k in &self.keys {
            set.remove(k);
        }
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App").field("config", &self.config).finish_non_exhaustive()
    }
}

impl App {
    /// Assembles the state.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: TokenSigner,
        store_key: &[u8; 32],
        clock: Clock,
        config: Config,
    ) -> Result<App, String> {
        let parallel = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let sealer = Sealer::new(store_key);
        Ok(App {
            replay: crate::signed::NonceWriter::new(store.clone()),
            sessions: crate::signed::SessionCache::default(),
            store,
            verifier: tokens.verifier(),
            tokens,
            cursors: CursorKey::new(&crate::seal::cursor_key(store_key)),
            sealer,
            passwords: Passwords::new(parallel)?,
            clock,
            config,
            rules: Arc::new(Rules::owner_only()),
            in_flight: InFlight::default(),
            oidc: None,
            health: Arc::default(),
            pins: None,
        })
    }

    /// The same state with these access rules.
    #[must_use]
    pub fn with_rules(mut self, rules: Rules) -> App {
        self.rules = Arc::new(rules);
        self
    }

    /// The same state signing users in through these identity providers too.
    #[must_use]
    pub fn with_oidc(mut self, oidc: crate::auth::oidc::Oidc) -> App {
        self.oidc = Some(Arc::new(oidc));
        self
    }

    /// The same state announcing the pins of this key directory at `GET /v1/server/pins`.
    #[must_use]
    pub fn with_pins(mut self, pins: crate::certs::PinSource) -> App {
        self.pins = Some(Arc::new(pins));
        self
    }

    /// Now, by this server's clock.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// One round of the purge `serve` runs once a minute: the nonces expired by this clock
    /// and the store's, and the idempotency records older than their life
    /// ([`Config::idempotency_record_life`]). Both are tried; (nonces, records) purged, or
    /// the first error.
    ///
    /// # Errors
    /// A store failure.
    pub async fn purge(&self) -> Result<(u64, u64), StoreError> {
        let now = self.now();
        let nonces = self.store.purge_nonces(now).await;
        let records = self.store.purge_idempotency(now.saturating_sub(self.config.idempotency_record_life())).await;
        Ok((nonces?, records?))
    }

    /// A push of `ops` by `user`'s device as the store runs it at `now`: under the rules in
    /// force, with ops whose keys predate the idempotency retention expired.
    pub fn push_batch(
        &self,
        user: String,
        device_id: String,
        device_seq: u64,
        ops: Vec<CheckedOp>,
        now: u64,
    ) -> PushBatch {
        PushBatch {
            user,
            device_id,
            device_seq,
            ops,
            expired_before: now.saturating_sub(self.config.idempotency_retention()),
            rules: self.rules.clone(),
            now,
        }
    }
}

/// Why this clock may not serve beside the store's: `Some(reason)` when `local` is more than
/// [`MAX_SKEW_SECS`] from `store` (the database's clock). Each instance judges request
/// timestamps by its own clock while nonces are kept, and purged, for that much skew
/// from the database's.
pub fn clock_skew(local: u64, store: u64) -> Option<String> {
    let off = local.abs_diff(store);
    let side = if local > store { "ahead of" } else { "behind" };
    (off > MAX_SKEW_SECS).then(|| {
        format!(
            "this machine's clock is {off} s {side} the database's; at most {MAX_SKEW_SECS} s is allowed \
             (request nonces are kept for that much): set the clock right"
        )
    })
}

/// A random identifier: `prefix` then 16 random bytes in base64url.
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("the OS random source works");
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(b))
}

/// A JSON request body: at most the configured limit (413 `too_large`), well-formed and of
/// the expected shape (400 `bad_request` naming the problem), no content coding.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        let mut codings = req.headers().get_all(axum::http::header::CONTENT_ENCODING).iter();
        if codings.any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity")) {
            return Err(ApiError::bad_request("encoded request bodies are not accepted"));
        }
        // A push may carry up to 4 MiB of ops (SPEC section 5), as the signed layer read it.
        let limit = if req.uri().path() == crate::signed::PUSH_PATH {
            app.config.push_body_limit
        } else {
            app.config.body_limit
        };
        let bytes = read_body(req.into_body(), &app.config, limit).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a whole request body, at most `limit` bytes and within `config.body_timeout`
/// seconds.
pub async fn read_body(body: axum::body::Body, config: &Config, limit: usize) -> Result<Bytes, ApiError> {
    let secs = config.body_timeout;
    match tokio::time::timeout(std::time::Duration::from_secs(secs), axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::bad_request(format!("the request body did not arrive within {secs} s"))),
        Ok(Err(e)) if is_length_limit(&e) => Err(ApiError::body_too_large(limit)),
        Ok(Err(_)) => Err(ApiError::bad_request("the request body could not be read")),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// Whether a body-reading error is the length limit (anywhere in its chain).
pub fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Parses a JSON body, answering 400 with what is wrong (never echoing values).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "the JSON does not have the expected fields and types",
            _ => "the body is not well-formed JSON",
        };
        ApiError::bad_request(format!("{what} (line {}, column {})", e.line(), e.column()))
    })
}
