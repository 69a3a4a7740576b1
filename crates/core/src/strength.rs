//! How hard a new secret is to guess: one floor for the vault passphrase (SPEC section 3)
//! and the sync server's account passwords.
//!
//! zxcvbn estimates the guesses an attacker with dictionaries, common patterns and the
//! context words given needs, and scores 0 to 4; a new secret scoring below
//! [`MIN_SECRET_SCORE`] is refused, with zxcvbn's advice. Existing secrets are never
//! re-scored: the floor applies where a secret is chosen.
//!
//! zxcvbn sees a repeat only when nothing separates the copies: `password password` scores
//! 3 (a dictionary word, a space, a dictionary word), `passwordpassword` 0. An attacker tries
//! separators as cheaply as repeats, so the secret is scored twice, as typed and with its
//! white space and separators (`- _ . , ; : / | +`) taken out, and the lower score counts
//! (docs/keys.md, "Passphrase strength").

use zeroize::Zeroizing;

/// Characters an attacker puts between words as cheaply as nothing (with white space).
const SEPARATORS: &[char] = &['-', '_', '.', ',', ';', ':', '/', '|', '+'];

/// Lowest zxcvbn score (0-4) a new passphrase or password may have (SPEC section 3: "New
/// passphrases scoring below 3 on zxcvbn are refused").
pub const MIN_SECRET_SCORE: u8 = 3;

/// What zxcvbn says of a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Strength {
    /// The score, 0 to 4.
    pub score: u8,
    /// zxcvbn's advice, prefixed with ": " when there is any (it never quotes the secret).
    pub hint: String,
}

impl Strength {
    /// Whether the score reaches [`MIN_SECRET_SCORE`].
    pub fn acceptable(&self) -> bool {
        self.score >= MIN_SECRET_SCORE
    }
}

impl std::fmt::Debug for Strength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Strength").field("score", &self.score).finish_non_exhaustive()
    }
}

/// zxcvbn's score for `secret`, the lower of the score as typed and the score without white
/// space and separators (see the module's documentation); a secret counts as easier to guess
/// when it contains one of `context` (words an attacker tries first: the product's name, the
/// user's name).
///
/// # Security
/// `secret` is read and not kept (the copy without separators is zeroized); the caller keeps
/// it zeroized.
pub fn strength(secret: &str, context: &[&str]) -> Strength {
    let typed = zxcvbn_strength(secret, context);
    let joined: Zeroizing<String> =
        Zeroizing::new(secret.chars().filter(|c| !c.is_whitespace() && !SEPARATORS.contains(c)).collect());
    if joined.len() == secret.len() {
        return typed;
    }
    let joined = zxcvbn_strength(&joined, context);
    if joined.score < typed.score { joined } else { typed }
}

/// zxcvbn's score and advice for the text as given.
fn zxcvbn_strength(secret: &str, context: &[&str]) -> Strength {
    let entropy = zxcvbn::zxcvbn(secret, context);
    let score = u8::from(entropy.score());
    let hint = entropy
        .feedback()
        .map(|f| {
            let mut parts: Vec<String> = f.warning().map(|w| w.to_string()).into_iter().collect();
            parts.extend(f.suggestions().iter().map(|s| s.to_string()));
            parts.join(" ")
        })
        .filter(|h| !h.is_empty())
        .map(|h| format!(": {h}"))
        .unwrap_or_default();
    Strength { score, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_and_short_secrets_score_below_the_floor() {
        for weak in ["", "password", "qwertyuiop", "fieldvault123", "correct horse"] {
            assert!(!strength(weak, &["fieldvault"]).acceptable(), "{weak}");
        }
        for strong in ["marble quokka seventy umbrella", "correct horse battery staple", "tangerine orbit cello 1987"] {
            assert!(strength(strong, &["fieldvault"]).acceptable(), "{strong}");
        }
    }

    #[test]
    fn a_word_repeated_across_a_separator_scores_as_the_repeat_it_is() {
        // As typed, zxcvbn gives each of these 3 or more.
        for repeated in
            ["password password", "hunter2 hunter2", "letmein letmein", "dragon-dragon", "Password1 Password1"]
        {
            assert!(zxcvbn_strength(repeated, &[]).acceptable(), "{repeated} as typed");
            let s = strength(repeated, &[]);
            assert!(!s.acceptable(), "{repeated}: {}", s.score);
        }
    }

    #[test]
    fn a_context_word_makes_a_secret_easier_to_guess() {
        // A user named so, choosing their own name as the password.
        assert!(strength("qzwxalicejohnson", &[]).acceptable());
        assert!(!strength("qzwxalicejohnson", &["qzwxalicejohnson"]).acceptable());
    }

    #[test]
    fn debug_shows_the_score_and_never_the_advice() {
        let s = strength("password", &[]);
        assert!(!format!("{s:?}").contains("hint"));
    }
}
