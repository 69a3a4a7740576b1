//! The rules file: its TOML schema, its limits, and every check made when it loads.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::expr::Expr;
use super::{Access, OWNER, Policy, READ_VARIABLES, RulesError, WRITE_VARIABLES};

/// Largest rules file, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Longest collection name (the same rule as document collections).
pub use crate::names::MAX_COLLECTION_LEN;
/// Longest field name in a `fields` list.
pub const MAX_FIELD_LEN: usize = 64;

/// The whole file. `version` is read on its own first, so that a file of another version is
/// refused for its version and not for keys this build does not know.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[allow(dead_code, reason = "checked before this struct is read")]
    version: i64,
    #[serde(default)]
    collections: BTreeMap<String, CollectionDoc>,
}

/// One `[collections.NAME]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionDoc {
    read: Option<String>,
    write: Option<String>,
    fields: Option<Vec<String>>,
    #[serde(default)]
    server_only: bool,
}

/// Parses and checks a rules file into one policy per named collection.
pub(super) fn parse(text: &str) -> Result<BTreeMap<String, Policy>, RulesError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(RulesError::TooLarge { size: text.len(), max: MAX_FILE_BYTES });
    }
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| RulesError::Toml(e.to_string()))?;
    match table.get("version") {
        None => return Err(RulesError::MissingVersion),
        Some(toml::Value::Integer(1)) => {}
        Some(toml::Value::Integer(n)) => return Err(RulesError::UnsupportedVersion(n.to_string())),
        Some(other) => return Err(RulesError::UnsupportedVersion(format!("a {}", other.type_str()))),
    }
    let doc: FileDoc = toml::from_str(text).map_err(|e| RulesError::Toml(e.to_string()))?;
    let mut policies = BTreeMap::new();
    for (name, c) in doc.collections {
        if !is_collection_name(&name) {
            return Err(RulesError::InvalidCollectionName(name));
        }
        let policy = collection(&name, c)?;
        policies.insert(name, policy);
    }
    Ok(policies)
}

fn collection(name: &str, c: CollectionDoc) -> Result<Policy, RulesError> {
    let access = if c.server_only {
        for (key, present) in [("read", c.read.is_some()), ("write", c.write.is_some()), ("fields", c.fields.is_some())]
        {
            if present {
                return Err(RulesError::ServerOnlyWithKey { collection: name.to_owned(), key });
            }
        }
        Access::ServerOnly
    } else {
        let compile = |key: &'static str, text: Option<String>, variables: &[&str]| {
            let text = text.ok_or_else(|| RulesError::MissingExpression { collection: name.to_owned(), key })?;
            Expr::compile(&text, variables).map_err(|reason| RulesError::InvalidExpression {
                collection: name.to_owned(),
                key,
                reason,
            })
        };
        let read = compile("read", c.read, &READ_VARIABLES)?;
        let write = compile("write", c.write, &WRITE_VARIABLES)?;
        Access::Expressions { read, write }
    };
    let fields = c.fields.map(|list| field_set(name, list)).transpose()?;
    Ok(Policy { access, fields })
}

/// The `fields` list as a set, `owner` left out (it is always kept).
fn field_set(collection: &str, list: Vec<String>) -> Result<BTreeSet<String>, RulesError> {
    let mut set = BTreeSet::new();
    for field in list {
        if !is_field_name(&field) {
            return Err(RulesError::InvalidField { collection: collection.to_owned(), field });
        }
        if !set.insert(field.clone()) {
            return Err(RulesError::DuplicateField { collection: collection.to_owned(), field });
        }
    }
    set.remove(OWNER);
    Ok(set)
}

/// The document collection syntax the client and the push endpoint enforce: 1 to 64 of
/// `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
pub(super) fn is_collection_name(name: &str) -> bool {
    crate::names::check_collection(name).is_ok()
}

/// 1 to 64 of `A-Z a-z 0-9 _`.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_FIELD_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
