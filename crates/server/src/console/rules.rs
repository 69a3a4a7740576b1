//! The access rules in force (read-only), and the check an operator asks most: what can this
//! user read of this document? The answer is the one a pull would give: the rules file's
//! `read` expression over the stored document, and the fields that reach the user's devices.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use fieldvault_core::protocol::sync::readable;
use fieldvault_core::rules::RuleUser;
use maud::{Markup, html};

use super::pages::{page, respond};
use crate::app::App;
use crate::storage::AdminSession;

/// The check's three inputs, from the query (all empty: no check asked).
#[derive(Default)]
struct Check {
    user: String,
    collection: String,
    id: String,
}

impl Check {
    fn parse(uri: &Uri) -> Check {
        let mut c = Check::default();
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            match &*k {
                "user" => c.user = v.into_owned(),
                "collection" => c.collection = v.into_owned(),
                "id" => c.id = v.into_owned(),
                _ => {}
            }
        }
        c
    }

    fn asked(&self) -> bool {
        !(self.user.is_empty() && self.collection.is_empty() && self.id.is_empty())
    }
}

/// The answer to a check, in plain words, and the fields that would sync.
async fn answer(app: &App, c: &Check) -> Result<(bool, String, Option<serde_json::Value>), crate::storage::StoreError> {
    let Some(user) = app.store.user(&c.user).await? else {
        return Ok((false, format!("There is no user {:?}.", c.user), None));
    };
    let Some(doc) = app.store.document(&c.collection, &c.id).await? else {
        return Ok((false, format!("There is no document {}/{}.", c.collection, c.id), None));
    };
    if doc.deleted {
        return Ok((false, format!("{}/{} is deleted: nobody reads it.", c.collection, c.id), None));
    }
    if !app.rules.syncs(&c.collection) {
        return Ok((false, format!("{:?} is a server-only collection: no device reads it.", c.collection), None));
    }
    let who = RuleUser { id: user.name.clone(), roles: user.roles.clone(), attributes: user.attributes.clone() };
    if readable(&app.rules, &who, &c.collection, &doc) {
        let fields = app.rules.project(&c.collection, &doc.body);
        Ok((
            true,
            format!("{} may read {}/{}; these fields reach their devices:", user.name, c.collection, c.id),
            Some(fields),
        ))
    } else {
        Ok((false, format!("{} may not read {}/{}.", user.name, c.collection, c.id), None))
    }
}

fn form(c: &Check) -> Markup {
    html! {
        form method="get" action="/rules" {
            label { "User " input name="user" value=(c.user) required; }
            label { "Collection " input name="collection" value=(c.collection) required; }
            label { "Document id " input name="id" value=(c.id) required; }
            button type="submit" { "What can this user read?" }
        }
    }
}

/// `GET /rules[?user=U&collection=C&id=ID]`: the rules in force, and the check when asked.
pub(super) async fn show(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    uri: Uri,
) -> Response {
    let check = Check::parse(&uri);
    let result = if check.asked() {
        match answer(&app, &check).await {
            Ok(r) => Some(r),
            Err(e) => return super::pages::internal(&e),
        }
    } else {
        None
    };
    let fingerprint: String = app.rules.fingerprint().iter().map(|b| format!("{b:02x}")).collect();
    let body = html! {
        h1 { "Access rules" }
        p { "Fingerprint " code { (fingerprint) } }
        @match app.rules.source() {
            Some(text) => pre { (text) },
            None => p { "No rules file: in every collection a user reads and writes only the documents they own." },
        }
        h2 { "What can this user read?" }
        (form(&check))
        @if let Some((ok, text, fields)) = &result {
            p class=(if *ok { "notice" } else { "error" }) { (text) }
            @if let Some(fields) = fields { pre { (serde_json::to_string_pretty(fields).unwrap_or_default()) } }
        }
    };
    respond(StatusCode::OK, page("Access rules", Some(&session), body))
}
