//! Malformed rules give one clean line and print nothing: the CEL parser's and interpreter's
//! panics stop inside `fieldvault_core::rules` (issue 22, item 4).
//!
//! One test in a binary of its own: it installs a panic hook that records what reaches it,
//! and the hook is process-wide.

use std::sync::{Arc, Mutex};

use fieldvault_core::rules::{RuleUser, Rules, RulesError};
use serde_json::json;

fn collection(read: &str) -> String {
    format!("version = 1\n[collections.c]\nread = {}\nwrite = \"false\"\n", toml_string(read))
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn malformed_expressions_are_refused_in_one_line_and_no_panic_reaches_the_hook() {
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        record.lock().expect("hook log").push(info.to_string());
    }));

    let malformed = [
        "doc.owner ==",
        "doc.owner == 'x",
        "(doc.owner == user.id",
        "doc.owner == )",
        "&& true",
        "doc.",
        "user.roles.exists(r,",
        "1 +",
        "doc.owner === user.id",
        "}",
        "doc[",
        "'a' in",
    ];
    for text in malformed {
        let err = Rules::from_toml(&collection(text)).err().unwrap_or_else(|| panic!("{text:?} loads"));
        assert!(
            matches!(&err, RulesError::InvalidExpression { collection, key: "read", .. } if collection == "c"),
            "{text:?}: {err:?}"
        );
        let line = err.to_string();
        assert!(line.starts_with("collection \"c\": read: does not parse"), "{text:?}: {line}");
        assert!(!line.contains('\n') && !line.contains("panicked"), "{text:?}: {line}");
    }

    // An evaluation that panics in the interpreter (a macro over a string) denies, silently.
    let rules = Rules::from_toml(&collection("doc.tags.exists(t, t == 'x')")).expect("loads");
    let alice = RuleUser { id: "alice".into(), roles: vec![], attributes: Default::default() };
    assert!(!rules.can_read(&alice, "c", &json!({"owner": "alice", "tags": "x"})));
    assert!(rules.can_read(&alice, "c", &json!({"owner": "alice", "tags": ["x"]})));

    // Copied out before asserting: a failing assertion panics, and the hook takes the lock.
    let recorded = seen.lock().expect("hook log").clone();
    assert_eq!(recorded, Vec::<String>::new(), "nothing reached the hook");

    // Panics elsewhere still reach the hook the application installed.
    assert!(std::panic::catch_unwind(|| panic!("outside the rules")).is_err());
    let recorded = seen.lock().expect("hook log").clone();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0].contains("outside the rules"), "{recorded:?}");
}
