//! The sessions page: one page of a user's sessions, newest first (device, created, last
//! refresh, state), and their revocation: one session, or every live one (step-up). A revoked
//! session's access token is refused from its next request and its refresh token is spent;
//! the device stays, and signs in again.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::login::step_up;
use super::pages::{Listing, Notice, notice_markup, notice_status, page, respond, when};
use super::{Fields, admin_actor};
use crate::app::App;
use crate::auth::PeerAddr;
use crate::storage::{AdminSession, AuditEvent, Page, Sessions};

/// Sessions per page.
pub const PAGE_SIZE: u32 = 50;

async fn render(app: &App, session: &AdminSession, query: &Listing, notice: Notice) -> Response {
    let user = query.text.as_str();
    let sessions = if user.is_empty() {
        Vec::new()
    } else {
        match app.store.sessions_page(user, Page { offset: query.offset(PAGE_SIZE), limit: PAGE_SIZE }).await {
            Ok(s) => s,
            Err(e) => return super::pages::internal(&e),
        }
    };
    let status = notice_status(&notice);
    let body = html! {
        h1 { "Sessions" }
        (notice_markup(&notice))
        form method="get" action="/sessions" {
            label { "User " input type="search" name="user" value=(user) required; }
            button type="submit" { "Show" }
        }
        @if !user.is_empty() {
            h2 { "Sessions of " (user) }
            @if sessions.is_empty() { p { "No sessions on this page." } }
            @else {
                table #sessions {
                    thead { tr {
                        th { "Session" } th { "Device" } th { "Created (UTC)" } th { "Last refresh (UTC)" } th { "State" }
                    } }
                    tbody {
                        @for s in &sessions {
                            tr data-session=(s.id) {
                                td { code { (s.id) } }
                                td { (s.device_name) br; code { (s.device_id) } }
                                td { (when(s.created_at)) }
                                td { (when(s.refreshed_at)) }
                                td {
                                    @if let Some(t) = s.revoked_at { "revoked " (when(t)) }
                                    @else {
                                        "live "
                                        form.inline method="post" action="/sessions/revoke" {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input type="hidden" name="user" value=(user);
                                            input type="hidden" name="session" value=(s.id);
                                            button type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (query.paging("/sessions", sessions.len(), PAGE_SIZE))
            form method="post" action="/sessions/revoke-all" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="user" value=(user);
                button.danger type="submit" { "Revoke every session of " (user) }
            }
        }
    };
    respond(status, page("Sessions", Some(session), body))
}

/// `GET /sessions?user=NAME&page=N`.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    uri: Uri,
) -> Response {
    match Listing::parse(&uri, "user") {
        Ok(q) => render(&app, &session, &q, None).await,
        Err(r) => r.into_response(),
    }
}

async fn revoke_which(app: &App, session: &AdminSession, user: &str, which: Sessions<'_>) -> Response {
    let now = app.now();
    let actor = admin_actor(&session.admin);
    let audit = match which {
        Sessions::One(id) => AuditEvent::new(now, actor, "session.revoke", user).with("session", id),
        Sessions::All => AuditEvent::new(now, actor, "session.revoke_all", user),
    };
    let notice = match app.store.revoke_sessions(user, which, now, &audit).await {
        Ok(0) => (false, format!("{user:?} has no such live session.")),
        Ok(1) => (true, format!("1 session of {user:?} revoked.")),
        Ok(n) => (true, format!("{n} sessions of {user:?} revoked.")),
        Err(e) => return super::pages::internal(&e),
    };
    render(app, session, &Listing::of("user", user), Some(notice)).await
}

/// `POST /sessions/revoke`: one session of a user.
pub(super) async fn revoke(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    revoke_which(&app, &session, fields.get("user"), Sessions::One(fields.get("session"))).await
}

/// `POST /sessions/revoke-all` (step-up): every live session of a user.
pub(super) async fn revoke_all(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    Extension(mut session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    if let Err(r) =
        step_up(&app, &mut session, &fields, peer.as_ref().map(|Extension(p)| p), "/sessions/revoke-all").await
    {
        return r;
    }
    revoke_which(&app, &session, fields.get("user"), Sessions::All).await
}
