//! The server's pin list (SPEC section 5, `GET /v1/server/pins`): at each sync the device
//! fetches it over the pinned connection, verifies it with its cached JWKS, and adds the pins
//! it names (the key in use, then the next key once the operator made one) to its pin set,
//! at most four. So when the server later switches to its next key, the device already pins
//! it. A list that does not verify changes nothing and fails the sync; a server without the
//! route (404) leaves the pin set as it is.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fieldvault_core::protocol::{TokenVerifier, merge_pins};
use rusqlite::Connection;
use serde_json::Value;

use super::channel::{Channel, corrected_secs, refused, stored};
use super::outbox::db_err;
use super::state::{self, JWKS, PINS};
use crate::transport::{Auth, Method, Request};
use crate::{Error, Pins};

/// The device's pin set after the pin list `token`, verified with `jwks` at `now`: None when
/// it adds nothing. Pure: no network, no storage.
///
/// # Errors
/// [`Error::MalformedAnswer`] when the list does not verify or names a malformed pin.
pub(crate) fn merged(token: &str, jwks: &Value, own: &[String], now: u64) -> Result<Option<Vec<String>>, Error> {
    let keys = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let claims = keys
        .iter()
        .find_map(|k| {
            let public = URL_SAFE_NO_PAD.decode(k.get("x")?.as_str()?).ok()?;
            TokenVerifier::from_public_key(&public).pins(token, now).ok()
        })
        .ok_or_else(|| {
            Error::MalformedAnswer("the server's pin list does not verify with its token keys (or has expired)".into())
        })?;
    Pins::parse(&claims.pins)
        .map_err(|_| Error::MalformedAnswer("the server's pin list names a malformed pin".into()))?;
    let merged = merge_pins(own, &claims.pins);
    Ok((merged != own).then_some(merged))
}

/// Fetches, verifies and merges the server's pin list into the account's pin set (used from
/// the next connection on).
///
/// # Errors
/// Transport errors; [`Error::MalformedAnswer`]; a refusal other than 404.
pub(super) fn refresh(conn: &Connection, path: &std::path::Path, channel: &Channel) -> Result<(), Error> {
    let request = Request { method: Method::Get, path_and_query: "/v1/server/pins", body: &[], auth: Auth::None };
    let resp = channel.transport.send(&request, 0)?;
    if resp.status == 404 {
        return Ok(());
    }
    if resp.status != 200 {
        return Err(refused(&resp));
    }
    let token = std::str::from_utf8(&resp.body)
        .map_err(|_| Error::MalformedAnswer("the server's pin list is not text".into()))?
        .trim();
    let jwks: Value = stored(conn, path, JWKS)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
    let own: Vec<String> = stored(conn, path, PINS)?.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    if let Some(pins) = merged(token, &jwks, &own, corrected_secs(channel.offset_ms))? {
        tracing::info!(pins = ?pins, "the server announced a pin this device did not hold: added");
        state::set(conn, PINS, &serde_json::to_string(&pins).unwrap_or_default()).map_err(db_err(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use fieldvault_core::protocol::{PINS_TYP, PinsClaims};

    use super::*;
    use crate::sync::test_signer as signer;

    const A: &str = "sha256/AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const B: &str = "sha256/AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn a_verified_list_adds_its_pins_and_a_forged_stale_or_malformed_one_changes_nothing() {
        let s = signer();
        let own = vec![A.to_owned()];
        let list = |pins: Vec<&str>, iat: u64| {
            s.sign(PINS_TYP, &PinsClaims::new(pins.into_iter().map(String::from).collect(), iat))
        };
        assert_eq!(
            merged(&list(vec![A, B], 1000), &s.jwks(), &own, 1001).expect("verifies"),
            Some(vec![A.into(), B.into()])
        );
        assert_eq!(merged(&list(vec![A], 1000), &s.jwks(), &own, 1001).expect("verifies"), None, "nothing new");
        let forged = signer().sign(PINS_TYP, &PinsClaims::new(vec![B.into()], 1000));
        assert!(matches!(merged(&forged, &s.jwks(), &own, 1001), Err(Error::MalformedAnswer(_))), "another key");
        assert!(
            matches!(merged(&list(vec![B], 1000), &s.jwks(), &own, 1000 + 86_400), Err(Error::MalformedAnswer(_))),
            "expired"
        );
        assert!(matches!(
            merged(&list(vec!["sha256/short"], 1000), &s.jwks(), &own, 1001),
            Err(Error::MalformedAnswer(_))
        ));
        assert!(matches!(merged("not a jws", &s.jwks(), &own, 1001), Err(Error::MalformedAnswer(_))));
    }
}
