//! The devices page: one page of devices (all, or one user's), each with its state and its
//! directives (queued, sent, acknowledged, with their times), and what an administrator does
//! to a device, through the same `devices::issue_directive` as `fieldvault-server device`:
//! revoke (its sessions end; it signs in again and keeps its data) and remote wipe (step-up;
//! its sessions end, it is retired as wiped, its lease key deleted, and it deletes its data
//! when the directive reaches it).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use fieldvault_core::protocol::DirectiveKind;
use maud::{Markup, html};

use super::login::step_up;
use super::pages::{Listing, Notice, notice_markup, notice_status, page, respond, when};
use super::{Fields, admin_actor};
use crate::app::App;
use crate::auth::PeerAddr;
use crate::devices::{DeviceError, issue_directive};
use crate::storage::{AdminSession, DeviceFilter, DeviceRecord, Page};

/// Devices per page.
pub const PAGE_SIZE: u32 = 50;

/// The device's session state in words.
fn state(d: &DeviceRecord) -> String {
    match (d.retired, d.active) {
        (Some(reason), _) => format!("retired ({})", reason.as_str()),
        (None, true) => "signed in".to_owned(),
        (None, false) => "signed out".to_owned(),
    }
}

fn table(session: &AdminSession, query: &Listing, devices: &[DeviceRecord]) -> Markup {
    html! {
        div #devices {
            @if devices.is_empty() { p { "No devices on this page." } }
            @else {
                table {
                    thead { tr {
                        th { "Device" } th { "User" } th { "Created (UTC)" } th { "Last contact (UTC)" }
                        th { "Session" } th { "Directives" } th { "Actions" }
                    } }
                    tbody {
                        @for d in devices {
                            tr data-device=(d.id) {
                                td { (d.name) br; code { (d.id) } }
                                td { a href=(format!("/sessions?user={}", urlencode(&d.user))) { (d.user) } }
                                td { (when(d.created_at)) }
                                td { (when(d.last_seen_at)) }
                                td.state { (state(d)) }
                                td.directives {
                                    @if d.directives.is_empty() { "none" }
                                    ul {
                                        @for x in &d.directives {
                                            li data-jti=(x.jti) data-state=(x.state().as_str()) {
                                                (x.kind) " " strong { (x.state().as_str()) }
                                                " (issued " (when(x.issued_at))
                                                @if let Some(t) = x.sent_at { ", sent " (when(t)) }
                                                @if let Some(t) = x.acked_at { ", acknowledged " (when(t)) }
                                                ")"
                                            }
                                        }
                                    }
                                }
                                td {
                                    @if d.retired.is_none() {
                                        form.inline method="post" action="/devices/revoke" {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input type="hidden" name="device" value=(d.id);
                                            button type="submit" { "Revoke" }
                                        }
                                    }
                                    @if d.retired != Some(fieldvault_core::protocol::auth::DeviceReason::Wiped) {
                                        form.inline method="post" action="/devices/wipe" {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input type="hidden" name="device" value=(d.id);
                                            button.danger type="submit" { "Wipe" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (query.paging("/devices", devices.len(), PAGE_SIZE))
        }
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn render(app: &App, session: &AdminSession, query: &Listing, notice: Notice) -> Response {
    let filter = if query.text.is_empty() { DeviceFilter::All } else { DeviceFilter::User(&query.text) };
    let rows = Page { offset: query.offset(PAGE_SIZE), limit: PAGE_SIZE };
    let devices = match app.store.devices_page(filter, rows).await {
        Ok(d) => d,
        Err(e) => return super::pages::internal(&e),
    };
    let status = notice_status(&notice);
    let body = html! {
        h1 { "Devices" }
        (notice_markup(&notice))
        form method="get" action="/devices" {
            label { "User " input type="search" name="user" value=(query.text); }
            button type="submit" { "Show" }
        }
        p { "Revoke ends a device's sessions (it signs in again and keeps its data). Wipe also retires it and \
             deletes its lease key; the device deletes its data when the directive reaches it, and acknowledges it." }
        (table(session, query, &devices))
    };
    respond(status, page("Devices", Some(session), body))
}

/// `GET /devices?user=NAME&page=N`: one page; a page past the end is empty.
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

async fn directive(app: &App, session: &AdminSession, fields: &Fields, kind: DirectiveKind) -> Response {
    let id = fields.get("device");
    let notice = match issue_directive(&app.store, &admin_actor(&session.admin), &app.tokens, id, kind, app.now()).await
    {
        Ok(claims) => (
            true,
            match kind {
                DirectiveKind::Revoke => {
                    format!("Device {id:?} of {:?}: sessions revoked (directive {}).", claims.sub, claims.jti)
                }
                DirectiveKind::Wipe => format!(
                    "Device {id:?} of {:?}: wipe queued (directive {}); sessions revoked, lease key deleted.",
                    claims.sub, claims.jti
                ),
            },
        ),
        Err(DeviceError::Store(e)) => return super::pages::internal(&e),
        Err(e) => (false, e.to_string()),
    };
    render(app, session, &Listing::first("user"), Some(notice)).await
}

/// `POST /devices/revoke`: a revoke directive.
pub(super) async fn revoke(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    directive(&app, &session, &fields, DirectiveKind::Revoke).await
}

/// `POST /devices/wipe` (step-up): a wipe directive.
pub(super) async fn wipe(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    Extension(mut session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    if let Err(r) = step_up(&app, &mut session, &fields, peer.as_ref().map(|Extension(p)| p), "/devices/wipe").await {
        return r;
    }
    directive(&app, &session, &fields, DirectiveKind::Wipe).await
}
