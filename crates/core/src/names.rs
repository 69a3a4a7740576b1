//! What a collection name, a document id and a user name may be: one rule for the vault on
//! the device, the outbox, the wire and the server.
//!
//! Collection names are 1-64 characters from `A-Z a-z 0-9 _ . -` starting with a letter or
//! digit (they appear in file-system-safe contexts and in the rules file); ids are 1-256
//! bytes of UTF-8 without control characters; a document body is a JSON object of at most
//! 1 MiB (large content belongs in attachments). A new server user's name is 1-64
//! characters from `A-Z a-z 0-9 _ . - @` starting with a letter or digit: it is what rules
//! see as `user.id` and what documents carry as `owner`, it shows in logs, the audit log and
//! the console, and an operator types it, so it holds nothing that needs quoting or escaping
//! (`alice`, `j.doe`, `ops-team_2`, `ada@example.org`).

/// Longest collection name.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;
/// Largest document body, in bytes of JSON (SPEC section 5: the device refuses larger ones at
/// write time, the server answers `too_large`).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why a name is refused. The message never quotes the name: on the server it is input from
/// the network, and a caller that wants to show it adds it itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty or longer than [`MAX_COLLECTION_LEN`].
    #[error("a collection name is 1 to {MAX_COLLECTION_LEN} characters")]
    CollectionLength,
    /// A character outside the set, or a first character that is not a letter or digit.
    #[error("a collection name holds only A-Z a-z 0-9 _ . - and starts with a letter or digit")]
    CollectionCharacters,
    /// Empty or longer than [`MAX_ID_BYTES`] (the length found).
    #[error("a document id is 1 to {MAX_ID_BYTES} bytes, not {0}")]
    IdLength(usize),
    /// A control character.
    #[error("a document id has no control characters")]
    IdControl,
    /// Empty or longer than [`MAX_USER_NAME_LEN`].
    #[error("a user name is 1 to {MAX_USER_NAME_LEN} characters")]
    UserNameLength,
    /// A character outside the set, or a first character that is not a letter or digit.
    #[error("a user name holds only A-Z a-z 0-9 _ . - @ and starts with a letter or digit")]
    UserNameCharacters,
}

/// Checks a collection name.
///
/// # Errors
/// [`NameError::CollectionLength`] or [`NameError::CollectionCharacters`].
pub fn check_collection(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_COLLECTION_LEN {
        return Err(NameError::CollectionLength);
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(NameError::CollectionCharacters);
    }
    Ok(())
}

/// Checks a document id.
///
/// # Errors
/// [`NameError::IdLength`] or [`NameError::IdControl`].
pub fn check_id(id: &str) -> Result<(), NameError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(NameError::IdLength(id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err(NameError::IdControl);
    }
    Ok(())
}

/// Checks the name of a user being created (existing users keep the names they have).
///
/// # Errors
/// [`NameError::UserNameLength`] or [`NameError::UserNameCharacters`].
pub fn check_user_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_USER_NAME_LEN {
        return Err(NameError::UserNameLength);
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-@".contains(&b))
    {
        return Err(NameError::UserNameCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_follow_the_one_rule() {
        for ok in ["visits", "a", "V1.notes_2024-x", &"c".repeat(64)] {
            assert_eq!(check_collection(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_collection(""), Err(NameError::CollectionLength));
        assert_eq!(check_collection(&"c".repeat(65)), Err(NameError::CollectionLength));
        for bad in ["_x", ".x", "-x", "a b", "a/b", "é", "a\u{0}"] {
            assert_eq!(check_collection(bad), Err(NameError::CollectionCharacters), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_bounded_utf8_without_control_characters() {
        for ok in ["v1", "a b/c", "é", &"i".repeat(256)] {
            assert_eq!(check_id(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_id(""), Err(NameError::IdLength(0)));
        assert_eq!(check_id(&"é".repeat(129)), Err(NameError::IdLength(258)));
        assert_eq!(check_id("a\nb"), Err(NameError::IdControl));
    }

    #[test]
    fn user_names_follow_the_one_rule() {
        for ok in ["alice", "a", "j.doe", "ops-team_2", "ada@example.org", "7", &"u".repeat(64)] {
            assert_eq!(check_user_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_user_name(""), Err(NameError::UserNameLength));
        assert_eq!(check_user_name(&"u".repeat(65)), Err(NameError::UserNameLength));
        for bad in ["bad name/with slash", "a b", "a/b", "_x", ".x", "@x", "-x", "<script>", "é", "a\u{0}", "a:b"] {
            assert_eq!(check_user_name(bad), Err(NameError::UserNameCharacters), "{bad:?}");
        }
    }

    #[test]
    fn errors_never_quote_the_name() {
        let name = "secret\u{7}name";
        let id = check_id(name).expect_err("a control character");
        let collection = check_collection(name).expect_err("a space and a control character");
        assert!(!id.to_string().contains("secret") && !collection.to_string().contains("secret"));
    }
}
