//! Change notifications for apps: a screen subscribes to a collection or to one document
//! and is told, after each local write and after each applied pull page or push answer,
//! which ids changed and how, so it refreshes without polling.
//!
//! Callbacks run on the thread that made the change, after its transaction committed, and
//! must not call back into the vault (it is borrowed while they run): queue the work instead.

use std::fmt;

/// How a document changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Written (locally, or by the server through a pull or a roll-back).
    Put,
    /// Removed (locally, or because the server deleted it or no longer lets the user read it).
    Delete,
    /// The server's version won over a local change; the local one is in the conflicts table.
    Conflict,
}

/// One changed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentChange {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub id: String,
    /// How it changed.
    pub kind: ChangeKind,
}

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Every document of a collection.
    Collection(String),
    /// One document.
    Document {
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
    },
}

impl Watch {
    fn covers(&self, c: &DocumentChange) -> bool {
        match self {
            Watch::Collection(name) => *name == c.collection,
            Watch::Document { collection, id } => *collection == c.collection && *id == c.id,
        }
    }
}

/// Names a subscription, to end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

type Callback = Box<dyn FnMut(&[DocumentChange]) + Send>;

/// The subscriptions of one account (they live as long as the unlocked vault).
#[derive(Default)]
pub(crate) struct Listeners {
    next: u64,
    subs: Vec<(SubscriptionId, Watch, Callback)>,
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listeners").field("count", &self.subs.len()).finish()
    }
}

impl Listeners {
    pub(crate) fn add(&mut self, watch: Watch, callback: Callback) -> SubscriptionId {
        self.next += 1;
        let id = SubscriptionId(self.next);
        self.subs.push((id, watch, callback));
        id
    }

    pub(crate) fn remove(&mut self, id: SubscriptionId) -> bool {
        let before = self.subs.len();
        self.subs.retain(|(s, _, _)| *s != id);
        self.subs.len() != before
    }

    /// Tells each subscriber the changes it watches (nothing when none).
    pub(crate) fn notify(&mut self, changes: &[DocumentChange]) {
        if changes.is_empty() {
            return;
        }
        for (_, watch, callback) in &mut self.subs {
            let mine: Vec<DocumentChange> = changes.iter().filter(|c| watch.covers(c)).cloned().collect();
            if !mine.is_empty() {
                callback(&mine);
            }
        }
    }

    /// Whether anyone listens (callers skip building change lists otherwise).
    pub(crate) fn any(&self) -> bool {
        !self.subs.is_empty()
    }
}

/// A change of `kind` to (collection, id).
pub(crate) fn change(collection: &str, id: &str, kind: ChangeKind) -> DocumentChange {
    DocumentChange { collection: collection.to_owned(), id: id.to_owned(), kind }
}
