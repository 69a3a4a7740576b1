//! Device directives (SPEC section 5): remote logout and remote wipe, signed by the server's
//! token key and delivered in the headers of verified answers (and in a wiped device's login
//! answer). A device acts on one only when it verifies against the cached JWKS, names this
//! user and this device, was issued after this device's previous login, and is new to it;
//! anything else is ignored and logged as such.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldvault_core::protocol::{DirectiveClaims, DirectiveKind, TokenVerifier};
use serde_json::Value;

/// What to do with one directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Carry it out.
    Act(DirectiveClaims),
    /// Ignore it, for this reason (logged; never acted on).
    Ignore(&'static str),
}

/// Checks one directive. `jwks` is the cached key set; `login_at` the device's login that
/// the directive must follow (Unix seconds); `seen` the directives already carried out.
pub(crate) fn check(
    token: &str,
    jwks: &Value,
    user: &str,
    device_id: &str,
    login_at: u64,
    seen: &HashSet<String>,
) -> Verdict {
    let keys = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let claims = keys.iter().find_map(|k| {
        let public = URL_SAFE_NO_PAD.decode(k.get("x")?.as_str()?).ok()?;
        TokenVerifier::from_public_key(&public).directive(token).ok()
    });
    let Some(c) = claims else { return Verdict::Ignore("its signature does not verify with the server's keys") };
    if c.sub != user {
        return Verdict::Ignore("it names another user");
    }
    if c.device_id != device_id {
        return Verdict::Ignore("it names another device");
    }
    if c.iat < login_at {
        return Verdict::Ignore("it was issued before this device's login");
    }
    if seen.contains(&c.jti) {
        return Verdict::Ignore("it was carried out before (a replay)");
    }
    Verdict::Act(c)
}

/// The strongest of the directives to act on: a wipe outranks a logout.
pub(crate) fn strongest(acts: &[DirectiveClaims]) -> Option<DirectiveKind> {
    if acts.iter().any(|c| c.kind == DirectiveKind::Wipe) {
        Some(DirectiveKind::Wipe)
    } else if acts.is_empty() {
        None
    } else {
        Some(DirectiveKind::Revoke)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldvault_core::protocol::DIRECTIVE_TYP;

    use crate::sync::test_signer as signer;

    #[test]
    fn only_a_signed_directive_for_this_user_and_device_after_login_and_new_is_acted_on() {
        let s = signer();
        let jwks = s.jwks();
        let make = |sub: &str, dev: &str, jti: &str, iat: u64| {
            s.sign(DIRECTIVE_TYP, &DirectiveClaims::new(sub, dev, "s_1", jti.into(), DirectiveKind::Wipe, iat))
        };
        let seen = HashSet::from(["j_old".to_owned()]);
        let ok = make("alice", "d_1", "j_1", 1000);
        assert!(matches!(check(&ok, &jwks, "alice", "d_1", 900, &seen), Verdict::Act(c) if c.jti == "j_1"));
        for (token, why) in [
            (make("bob", "d_1", "j_2", 1000), "it names another user"),
            (make("alice", "d_2", "j_3", 1000), "it names another device"),
            (make("alice", "d_1", "j_4", 800), "it was issued before this device's login"),
            (make("alice", "d_1", "j_old", 1000), "it was carried out before (a replay)"),
            (
                signer().sign(
                    DIRECTIVE_TYP,
                    &DirectiveClaims::new("alice", "d_1", "s", "j".into(), DirectiveKind::Wipe, 1000),
                ),
                "its signature does not verify with the server's keys",
            ),
        ] {
            assert_eq!(check(&token, &jwks, "alice", "d_1", 900, &seen), Verdict::Ignore(why));
        }
    }
}
