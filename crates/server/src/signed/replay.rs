//! Group commit of request nonces (the replay check of SPEC section 5): one writer task takes
//! every nonce queued while its previous commit ran and records them in one store call
//! ([`Store::claim_nonces`]: one SQLite write transaction, one PostgreSQL statement). Each
//! request waits for the commit of its batch, so its nonce is committed before the request
//! has any effect, as before; what is shared is the commit (the page encryption, the WAL
//! write, PostgreSQL's WAL flush), paid once per batch instead of once per request.
//!
//! The same commit reads the store-wide revocation epoch, so a request learns in the same
//! round trip whether anything a cached session holds may have changed
//! (docs/adr/0011-verified-session-cache.md). A request that writes no nonce (the unsigned
//! benchmark baseline) can ask for the epoch alone through the same writer.
//!
//! A failed commit fails every request of its batch (the store records none of its nonces:
//! the batch is one transaction), and the next batch is tried afresh.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::storage::{MAX_NONCE_BATCH, NonceClaim, Store, StoreError};

/// What the group commit answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// The nonce was new and is now recorded (false: a replay). Always false when no nonce
    /// was claimed.
    pub fresh: bool,
    /// The revocation epoch the batch's transaction read.
    pub revocation_epoch: u64,
}

/// One queued request: its nonce (None: the epoch alone) and where the answer goes.
struct Pending {
    claim: Option<NonceClaim>,
    answer: oneshot::Sender<Result<Claimed, String>>,
}

/// The handle requests queue their nonces on. The writer task starts with the first request
/// (on the runtime serving it) and ends when the handle is dropped.
pub struct NonceWriter {
    store: Arc<dyn Store>,
    queue: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
}

impl std::fmt::Debug for NonceWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceWriter")
    }
}

impl NonceWriter {
    /// A writer over `store`.
    pub fn new(store: Arc<dyn Store>) -> NonceWriter {
        NonceWriter { store, queue: Mutex::new(None) }
    }

    /// Records `claim`'s nonce in the next group commit; returns once that commit is done.
    ///
    /// # Errors
    /// The store failed the batch (nothing of it was recorded), or the writer has stopped.
    pub async fn claim(&self, claim: NonceClaim) -> Result<Claimed, StoreError> {
        self.submit(Some(claim)).await
    }

    /// The revocation epoch, read by the next group commit.
    ///
    /// # Errors
    /// As [`NonceWriter::claim`].
    pub async fn revocation_epoch(&self) -> Result<u64, StoreError> {
        Ok(self.submit(None).await?.revocation_epoch)
    }

    /// Queues at once (before the first await: requests queued together, without yielding
    /// in between, land in one batch), then waits for the answer.
    fn submit(&self, claim: Option<NonceClaim>) -> impl Future<Output = Result<Claimed, StoreError>> + use<> {
        let (answer, answered) = oneshot::channel();
        let queued = {
            let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Started again if the runtime it ran on has ended (a test's server restarted).
            let queue = match &mut *queue {
                Some(queue) if !queue.is_closed() => queue,
                slot => {
                    let (queue, requests) = mpsc::unbounded_channel();
                    tokio::spawn(write(self.store.clone(), requests));
                    slot.insert(queue)
                }
            };
            queue.send(Pending { claim, answer }).is_ok()
        };
        async move {
            if !queued {
                return Err(StoreError::Backend("the nonce writer has stopped".to_owned()));
            }
            match answered.await {
                Ok(Ok(claimed)) => Ok(claimed),
                Ok(Err(e)) => Err(StoreError::Backend(e)),
                Err(_) => Err(StoreError::Backend("the nonce writer stopped before answering".to_owned())),
            }
        }
    }
}

/// The writer: a batch is whatever is queued when the previous commit is done, up to
/// [`MAX_NONCE_BATCH`] nonces.
async fn write(store: Arc<dyn Store>, mut requests: mpsc::UnboundedReceiver<Pending>) {
    let mut answers = Vec::new();
    while let Some(first) = requests.recv().await {
        // The claims move to the store (no copy); each answer remembers whether it had one.
        let mut claims = Vec::new();
        let mut next = Some(first);
        while let Some(pending) = next.take() {
            answers.push((pending.claim.is_some(), pending.answer));
            claims.extend(pending.claim);
            if answers.len() < MAX_NONCE_BATCH {
                next = requests.try_recv().ok();
            }
        }
        commit(&*store, claims, &mut answers).await;
    }
}

/// Commits one batch and answers each of its requests.
async fn commit(
    store: &dyn Store,
    claims: Vec<NonceClaim>,
    answers: &mut Vec<(bool, oneshot::Sender<Result<Claimed, String>>)>,
) {
    match store.claim_nonces(claims).await {
        Ok(claimed) => {
            let mut fresh = claimed.fresh.into_iter();
            for (claimed_nonce, answer) in answers.drain(..) {
                let is_fresh = claimed_nonce && fresh.next().unwrap_or(false);
                // A request that gave up waiting (its connection closed) is not answered.
                let _ = answer.send(Ok(Claimed { fresh: is_fresh, revocation_epoch: claimed.revocation_epoch }));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = answers.len(), "a group commit of request nonces failed");
            let why = e.to_string();
            for (_, answer) in answers.drain(..) {
                let _ = answer.send(Err(why.clone()));
            }
        }
    }
}
