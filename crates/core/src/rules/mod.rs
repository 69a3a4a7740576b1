//! Access rules (SPEC section 5): who may read and write which documents, and which fields
//! of them a device may hold. The server loads them once, shares them across threads, and
//! asks them about every pushed op and every pulled document. The format and the semantics
//! are in `docs/rules.md`.
//!
//! A rule is a [CEL](https://cel.dev) expression over `user` (`{id, roles, attributes}`),
//! `doc` and, for writes, `old`. Only the boolean `true` allows: an error (a missing key, a
//! type mismatch), any other value, an unknown collection or a server-only collection denies.
//! Without a rules file, [`Rules::owner_only`] lets a user read and write only their own
//! documents.
//!
//! ```
//! use fieldvault_core::rules::{RuleUser, Rules};
//! use serde_json::json;
//!
//! let rules = Rules::from_toml(r#"
//!     version = 1
//!     [collections.inspections]
//!     read  = "doc.owner == user.id || 'supervisor' in user.roles"
//!     write = "doc.owner == user.id"
//!     fields = ["site", "status"]
//! "#).expect("a valid rules file");
//!
//! let bob = RuleUser { id: "bob".into(), roles: vec!["supervisor".into()], attributes: Default::default() };
//! let doc = json!({"owner": "alice", "site": "A-7", "status": "open", "cost": 120});
//! assert!(rules.can_read(&bob, "inspections", &doc));
//! assert!(!rules.can_write(&bob, "inspections", Some(&doc), None));
//! // Devices hold only the listed fields and the owner.
//! assert_eq!(rules.project("inspections", &doc), json!({"owner": "alice", "site": "A-7", "status": "open"}));
//! // A collection the file does not name is closed.
//! assert!(!rules.can_read(&bob, "visits", &doc));
//! ```

mod contain;
mod expr;
mod file;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cel_interpreter::{Context, Value as CelValue};
use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

pub use expr::{MAX_EXPRESSION_LEN, MAX_NESTING};
pub use file::{MAX_COLLECTION_LEN, MAX_FIELD_LEN, MAX_FILE_BYTES};

use expr::Expr;

/// The field every stored document has: the user who created it, set by the server.
pub const OWNER: &str = "owner";

/// What `read` may refer to. `old` is a write-only notion, so a `read` naming it is refused.
const READ_VARIABLES: [&str; 2] = ["user", "doc"];
/// What `write` may refer to.
const WRITE_VARIABLES: [&str; 3] = ["user", "old", "doc"];

/// The default rule for both `read` and `write` without a rules file.
const OWNER_ONLY: &str = "doc.owner == user.id";

/// The user an expression sees as `user`: `{id, roles, attributes}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleUser {
    /// The account name (what the server stores as a document's `owner`).
    pub id: String,
    /// Role names, tested with `'supervisor' in user.roles`.
    pub roles: Vec<String>,
    /// Free-form attributes (`user.attributes.region`); a missing one denies, so guard
    /// optional ones with `has(user.attributes.region)`.
    pub attributes: Map<String, Value>,
}

/// A rules file that cannot be used. Nothing is half-loaded: the server keeps running on
/// what it had, or does not start.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RulesError {
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the rules file is {size} bytes; at most {max} are allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not TOML, a value of the wrong type, or a key this format does not have (the message
    /// shows the line).
    #[error("rules file: {0}")]
    Toml(String),
    /// The file has no top-level `version`.
    #[error("rules file: `version = 1` is required")]
    MissingVersion,
    /// A `version` other than 1. Never read as a fallback.
    #[error("rules file: unsupported version {0}; this build reads version 1")]
    UnsupportedVersion(String),
    /// A collection name outside the document collection syntax.
    #[error(
        "collection {0:?}: not a collection name (1 to {MAX_COLLECTION_LEN} of A-Z a-z 0-9 _ . - starting with a letter or digit)"
    )]
    InvalidCollectionName(String),
    /// `read` or `write` is absent from a collection that is not server-only. There is no
    /// default: a forgotten rule must not mean "allow".
    #[error("collection {collection:?}: {key}: required (or set server_only = true)")]
    MissingExpression {
        /// The collection.
        collection: String,
        /// `read` or `write`.
        key: &'static str,
    },
    /// A server-only collection also names `read`, `write` or `fields`.
    #[error("collection {collection:?}: {key}: must be absent when server_only = true")]
    ServerOnlyWithKey {
        /// The collection.
        collection: String,
        /// The key that should not be there.
        key: &'static str,
    },
    /// An expression does not parse, is too long or too deeply nested, uses a variable
    /// other than those allowed, or uses a construct the interpreter cannot evaluate.
    #[error("collection {collection:?}: {key}: {reason}")]
    InvalidExpression {
        /// The collection.
        collection: String,
        /// `read` or `write`.
        key: &'static str,
        /// What is wrong, with the parser's position when it has one.
        reason: String,
    },
    /// A `fields` entry that is not 1 to 64 of `A-Z a-z 0-9 _`.
    #[error("collection {collection:?}: fields: {field:?} is not a field name (1 to {MAX_FIELD_LEN} of A-Z a-z 0-9 _)")]
    InvalidField {
        /// The collection.
        collection: String,
        /// The entry.
        field: String,
    },
    /// A `fields` entry listed twice.
    #[error("collection {collection:?}: fields: {field:?} is listed twice")]
    DuplicateField {
        /// The collection.
        collection: String,
        /// The entry.
        field: String,
    },
}

/// A device's body that cannot be merged into the stored document.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeError {
    /// The body is not a JSON object.
    #[error("the document body is not a JSON object")]
    NotAnObject,
    /// The stored document is not a JSON object (a corrupt store; nothing is overwritten).
    #[error("the stored document is not a JSON object")]
    StoredNotAnObject,
    /// The body names a field outside the collection's `fields`: a device can never hold
    /// it, so it cannot send it.
    #[error("field {0:?} does not sync to devices")]
    FieldNotSyncable(String),
    /// The collection does not sync at all (server-only, or not in the rules file).
    #[error("the collection does not sync to devices")]
    CollectionNotSynced,
}

/// One collection's rules.
struct Policy {
    access: Access,
    /// The top-level fields devices hold, `owner` excluded (always kept); None = all.
    fields: Option<BTreeSet<String>>,
}

enum Access {
    /// Never synced, never readable or writable from a device.
    ServerOnly,
    /// Evaluated per document.
    Expressions { read: Expr, write: Expr },
}

enum Scope {
    /// No rules file: every valid collection name gets the same owner-only policy.
    OwnerOnly(Policy),
    /// A rules file: the collections it names, and nothing else.
    File(BTreeMap<String, Policy>),
}

/// Compiled, immutable access rules. `Send + Sync`: share one behind an `Arc`.
pub struct Rules {
    scope: Scope,
    /// The standard CEL functions (`size`, `contains`, `startsWith`, ...), built once;
    /// each evaluation adds its variables in a child scope.
    functions: Context<'static>,
    fingerprint: [u8; 32],
    /// The rules file's text, as given (None: the built-in owner-only rules).
    source: Option<String>,
}

// The server shares one `Rules` across its worker threads.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Rules>();
};

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Rules");
        match &self.scope {
            Scope::OwnerOnly(_) => d.field("scope", &"owner_only"),
            Scope::File(map) => d.field("collections", &map.keys().collect::<Vec<_>>()),
        };
        d.finish_non_exhaustive()
    }
}

impl Rules {
    /// The rules without a rules file: in every collection, a user reads and writes only
    /// the documents they own (`read = write = "doc.owner == user.id"`, so a put needs both
    /// the stored and the new document to be theirs), and every field syncs.
    pub fn owner_only() -> Rules {
        let compile = |vars: &[&str]| Expr::compile(OWNER_ONLY, vars).expect("the built-in owner rule compiles");
        let policy = Policy {
            access: Access::Expressions { read: compile(&READ_VARIABLES), write: compile(&WRITE_VARIABLES) },
            fields: None,
        };
        Rules::new(Scope::OwnerOnly(policy))
    }

    /// Parses and checks a rules file (format: `docs/rules.md`). Every expression is
    /// compiled now; evaluation never parses.
    ///
    /// # Errors
    /// [`RulesError`], naming the collection and the key at fault: the file is too large,
    /// not TOML or has an unknown key; `version` is missing or not 1; a collection name or a
    /// field name is malformed or a field is listed twice; `read` or `write` is missing, or
    /// present on a server-only collection; an expression does not compile, is too long or
    /// nested too deep, or uses a variable other than `user` and `doc` (and `old` in `write`).
    pub fn from_toml(text: &str) -> Result<Rules, RulesError> {
        let mut rules = Rules::new(Scope::File(file::parse(text)?));
        rules.source = Some(text.to_owned());
        Ok(rules)
    }

    fn new(scope: Scope) -> Rules {
        let fingerprint = fingerprint(&scope);
        Rules { scope, functions: Context::default(), fingerprint, source: None }
    }

    /// The rules file these rules were read from, as written (None: the built-in
    /// owner-only rules), for an operator to see what is in force.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// SHA-256 over a canonical description of the rules (RFC 8785 JSON of every collection
    /// with its expressions as written, its field set and `server_only`). Equal rules give
    /// equal fingerprints whatever the TOML layout; any change to an expression (even
    /// whitespace inside it), a field list or a collection gives another one, and the server
    /// then re-checks what each device holds.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Whether these are the built-in owner-only rules (no rules file): then a user can read
    /// a document only if its `owner` is the user, which the store can test without reading
    /// the document.
    pub fn owner_only_scope(&self) -> bool {
        matches!(self.scope, Scope::OwnerOnly(_))
    }

    /// Whether a device may sync `collection` at all: false for a server-only collection,
    /// for a collection a rules file does not name, and for a name outside the collection
    /// syntax.
    pub fn syncs(&self, collection: &str) -> bool {
        self.synced(collection).is_some()
    }

    /// Whether `user` may read the stored document `doc` (the full stored JSON object, with
    /// its `owner`). The `read` expression sees `user` and `doc`.
    ///
    /// # Security
    /// Pass the stored document, not a projection: a rule may test fields devices never see.
    /// False on any error, on a result other than `true`, and for a collection that does not
    /// sync.
    pub fn can_read(&self, user: &RuleUser, collection: &str, doc: &Value) -> bool {
        let Some(Synced { read, .. }) = self.synced(collection) else { return false };
        if let Scope::OwnerOnly(_) = self.scope {
            // The built-in rule, evaluated natively: it runs for every op and every pulled
            // document, and gives exactly what the CEL text gives (tested).
            return owned_by(doc, user);
        }
        let (Some(user), Some(doc)) = (to_cel(user), to_cel(doc)) else { return false };
        read.allows(&self.functions, &[("user", &user), ("doc", &doc)])
    }

    /// Whether `user` may make this write: `old` is the stored document (None on create),
    /// `new` the document after the write (None on delete).
    ///
    /// The `write` expression sees `user`, `old` (the stored document, or null) and `doc`.
    /// A put evaluates it with `doc` = the stored document (when there is one) and again
    /// with `doc` = the new one, and both must be `true`: a write can move a document
    /// neither out of the writer's reach nor into it. A delete evaluates it once with
    /// `doc` = the stored document. Nothing to write (both None) is false.
    ///
    /// # Security
    /// `new` must be the full document as it will be stored (the device's body merged with
    /// [`Rules::merge`], `owner` set by the server), or rules on server-only fields and on
    /// the owner test something other than what gets stored. False on any error, on a
    /// result other than `true`, and for a collection that does not sync.
    pub fn can_write(&self, user: &RuleUser, collection: &str, old: Option<&Value>, new: Option<&Value>) -> bool {
        let Some(Synced { write, .. }) = self.synced(collection) else { return false };
        if old.is_none() && new.is_none() {
            return false;
        }
        if let Scope::OwnerOnly(_) = self.scope {
            return old.is_none_or(|d| owned_by(d, user)) && new.is_none_or(|d| owned_by(d, user));
        }
        let Some(user) = to_cel(user) else { return false };
        let stored = old.is_some();
        let Some(old) = old.map_or(Some(CelValue::Null), to_cel) else { return false };
        let allows = |doc: &CelValue| write.allows(&self.functions, &[("user", &user), ("old", &old), ("doc", doc)]);
        if stored && !allows(&old) {
            return false;
        }
        match new.map(to_cel) {
            None => true,
            Some(Some(new)) => allows(&new),
            Some(None) => false,
        }
    }

    /// The document as a device may hold it: the collection's `fields` (top-level keys) and
    /// `owner`, or every field when the collection lists none. For a collection that does
    /// not sync, or a `doc` that is not an object, only what is safe: `owner` (or `{}`).
    pub fn project(&self, collection: &str, doc: &Value) -> Value {
        let Some(obj) = doc.as_object() else { return Value::Object(Map::new()) };
        let synced = self.synced(collection);
        let keep = |name: &str| match &synced {
            Some(s) => name == OWNER || s.fields.is_none_or(|f| f.contains(name)),
            None => name == OWNER,
        };
        Value::Object(obj.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Merges a device's projected `body` into the stored document. Every syncable field in
    /// `body` is set; every syncable field absent from `body` is removed (the device holds
    /// all of them, so absence is a deletion); every other field of `stored` is kept as it
    /// is, so a device's put never erases what it cannot see. `owner` is never taken from
    /// `body`: the result keeps the stored one (none on create) and the caller sets it.
    ///
    /// # Errors
    /// [`MergeError::NotAnObject`] if `body` is not an object,
    /// [`MergeError::StoredNotAnObject`] if `stored` is not one,
    /// [`MergeError::FieldNotSyncable`] if `body` names a field outside `fields` (other than
    /// `owner`), [`MergeError::CollectionNotSynced`] if the collection does not sync.
    ///
    /// # Security
    /// Check the result with [`Rules::can_write`] before storing it: merging decides the
    /// shape of the write, not whether it is allowed.
    pub fn merge(&self, collection: &str, stored: Option<&Value>, body: &Value) -> Result<Value, MergeError> {
        let fields = self.synced(collection).ok_or(MergeError::CollectionNotSynced)?.fields;
        let body = body.as_object().ok_or(MergeError::NotAnObject)?;
        let stored = match stored {
            None => None,
            Some(s) => Some(s.as_object().ok_or(MergeError::StoredNotAnObject)?),
        };
        if let Some(fields) = fields
            && let Some(name) = body.keys().find(|k| *k != OWNER && !fields.contains(*k))
        {
            return Err(MergeError::FieldNotSyncable(name.clone()));
        }
        let mut out: Map<String, Value> = match (stored, fields) {
            // Keep what devices do not hold: the owner, and the fields outside the list.
            (Some(s), Some(f)) => {
                s.iter().filter(|(k, _)| !f.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            (Some(s), None) => s.get(OWNER).map(|o| (OWNER.to_owned(), o.clone())).into_iter().collect(),
            (None, _) => Map::new(),
        };
        for (k, v) in body {
            if k != OWNER {
                out.insert(k.clone(), v.clone());
            }
        }
        Ok(Value::Object(out))
    }

    fn policy(&self, collection: &str) -> Option<&Policy> {
        match &self.scope {
            Scope::OwnerOnly(policy) => file::is_collection_name(collection).then_some(policy),
            Scope::File(map) => map.get(collection),
        }
    }

    /// The rules of a collection that syncs; None for one that does not.
    fn synced(&self, collection: &str) -> Option<Synced<'_>> {
        let policy = self.policy(collection)?;
        match &policy.access {
            Access::Expressions { read, write } => Some(Synced { read, write, fields: policy.fields.as_ref() }),
            Access::ServerOnly => None,
        }
    }
}

/// A collection that syncs, as the checks use it.
struct Synced<'a> {
    read: &'a Expr,
    write: &'a Expr,
    fields: Option<&'a BTreeSet<String>>,
}

/// `doc.owner == user.id` without the interpreter: false when `owner` is missing or not a
/// string, as the CEL evaluation is (an error, or `false`).
fn owned_by(doc: &Value, user: &RuleUser) -> bool {
    doc.get(OWNER).and_then(Value::as_str) == Some(user.id.as_str())
}

/// A JSON value (or the user) as CEL sees it; None if it has no CEL form (never the case
/// for parsed JSON, but a conversion failure must deny, not panic).
fn to_cel<T: Serialize>(value: &T) -> Option<CelValue> {
    cel_interpreter::to_value(value).ok()
}

/// See [`Rules::fingerprint`].
fn fingerprint(scope: &Scope) -> [u8; 32] {
    let describe = |p: &Policy| match &p.access {
        Access::ServerOnly => serde_json::json!({ "server_only": true }),
        Access::Expressions { read, write } => serde_json::json!({
            "server_only": false,
            "read": read.source(),
            "write": write.source(),
            "fields": p.fields,
        }),
    };
    let description = match scope {
        Scope::OwnerOnly(p) => serde_json::json!({ "version": 1, "default": describe(p), "collections": null }),
        Scope::File(map) => serde_json::json!({
            "version": 1,
            "default": null,
            "collections": map.iter().map(|(k, p)| (k.clone(), describe(p))).collect::<Map<_, _>>(),
        }),
    };
    let canonical =
        serde_jcs::to_vec(&description).expect("strings, booleans, arrays and objects have a canonical form");
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"fieldvault/v1/rules\n");
    ctx.update(&canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
