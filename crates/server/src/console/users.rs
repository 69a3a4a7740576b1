//! The users page: one page of users at a time (by name, optionally those whose name starts
//! with a search prefix), and what an administrator does to a user, each through the same
//! `accounts::` function as the command line: create (name, password, roles), disable and
//! enable, reset the password (a reset or a disable revokes every session of the user), and
//! replace roles and attributes. A disable and a roles or attributes change need a step-up.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use zeroize::Zeroizing;

use super::login::step_up;
use super::pages::{Listing, Notice, notice_markup, notice_status, page, respond};
use super::{Fields, admin_actor};
use crate::accounts::{self, Access, AccountError};
use crate::app::App;
use crate::auth::{Password, PeerAddr};
use crate::storage::{AdminSession, Page, UserRecord};

/// Users per page.
pub const PAGE_SIZE: u32 = 50;

fn access_text(user: &UserRecord) -> (String, String) {
    let attributes = user.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n");
    (user.roles.join(" "), attributes)
}

fn table(session: &AdminSession, query: &Listing, users: &[UserRecord]) -> Markup {
    html! {
        div #users {
            @if users.is_empty() { p { "No users on this page." } }
            @else {
                table {
                    thead { tr { th { "Name" } th { "State" } th { "Roles and attributes" } th { "Password" } } }
                    tbody {
                        @for u in users {
                            @let (roles, attributes) = access_text(u);
                            tr {
                                td { (u.name) }
                                td {
                                    @if u.disabled {
                                        "disabled "
                                        form.inline method="post" action="/users/enable" {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input type="hidden" name="user" value=(u.name);
                                            button type="submit" { "Enable" }
                                        }
                                    } @else {
                                        "active "
                                        form.inline method="post" action="/users/disable" {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input type="hidden" name="user" value=(u.name);
                                            button type="submit" { "Disable" }
                                        }
                                    }
                                }
                                td {
                                    form method="post" action="/users/access" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="user" value=(u.name);
                                        label { "Roles " input name="roles" value=(roles); }
                                        label { "Attributes (key=value, one a line) "
                                            textarea name="attributes" rows="2" { (attributes) } }
                                        button type="submit" { "Save" }
                                    }
                                }
                                td {
                                    form method="post" action="/users/password" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="user" value=(u.name);
                                        input type="password" name="password" autocomplete="new-password" minlength="12";
                                        button type="submit" { "Reset" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (query.paging("/users", users.len(), PAGE_SIZE))
        }
    }
}

async fn render(app: &App, session: &AdminSession, query: &Listing, notice: Notice) -> Response {
    let page_rows = Page { offset: query.offset(PAGE_SIZE), limit: PAGE_SIZE };
    let users = match app.store.users_page(&query.text, page_rows).await {
        Ok(u) => u,
        Err(e) => return super::pages::internal(&e),
    };
    let status = notice_status(&notice);
    let body = html! {
        h1 { "Users" }
        (notice_markup(&notice))
        form method="get" action="/users" {
            label { "Name starts with "
                input type="search" name="q" value=(query.text)
                    hx-get="/users" hx-trigger="input changed delay:300ms" hx-target="#users" hx-select="#users"
                    hx-swap="outerHTML";
            }
            button type="submit" { "Search" }
        }
        (table(session, query, &users))
        fieldset {
            legend { "New user" }
            form method="post" action="/users" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Name " input name="user" required; }
                label { "Password (12 characters or more, hard to guess) " input type="password" name="password" autocomplete="new-password" minlength="12" required; }
                label { "Roles (separated by spaces or commas) " input name="roles"; }
                button type="submit" { "Create" }
            }
        }
    };
    respond(status, page("Users", Some(session), body))
}

/// `GET /users?q=PREFIX&page=N`: one page; a page past the end is empty.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    uri: Uri,
) -> Response {
    match Listing::parse(&uri, "q") {
        Ok(q) => render(&app, &session, &q, None).await,
        Err(r) => r.into_response(),
    }
}

fn roles(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace()).filter(|r| !r.is_empty()).map(str::to_owned).collect()
}

/// The outcome of an action, shown above the first page of users.
async fn done(app: &App, session: &AdminSession, result: Result<String, AccountError>) -> Response {
    let notice = match result {
        Ok(text) => (true, text),
        Err(AccountError::Store(e @ crate::storage::StoreError::Backend(_))) => return super::pages::internal(&e),
        Err(e) => (false, e.to_string()),
    };
    render(app, session, &Listing::first("q"), Some(notice)).await
}

/// `POST /users`: a new user with a password and roles.
pub(super) async fn create(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    let name = fields.get("user");
    let result = async {
        let access = Access::parse(&roles(fields.get("roles")), &[])?;
        let password = Password::new(Zeroizing::new(fields.get("password").to_owned()));
        // audit: user add (actor: the administrator, target: the user).
        accounts::add_user(&app.store, &admin_actor(&session.admin), &app.passwords, name, access, password, app.now())
            .await?;
        Ok(format!("User {name:?} created."))
    }
    .await;
    done(&app, &session, result).await
}

/// `POST /users/disable` (step-up): no login or refresh, every session revoked.
pub(super) async fn disable(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    Extension(mut session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    if let Err(r) = step_up(&app, &mut session, &fields, peer.as_ref().map(|Extension(p)| p), "/users/disable").await {
        return r;
    }
    let name = fields.get("user");
    let result = accounts::disable_user(&app.store, &admin_actor(&session.admin), name, app.now())
        .await
        .map(|()| format!("User {name:?} disabled; every session revoked."));
    done(&app, &session, result).await
}

/// `POST /users/enable`.
pub(super) async fn enable(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    let name = fields.get("user");
    let result = accounts::enable_user(&app.store, &admin_actor(&session.admin), name, app.now())
        .await
        .map(|()| format!("User {name:?} enabled."));
    done(&app, &session, result).await
}

/// `POST /users/password`: a new password; every session of the user revoked.
pub(super) async fn password(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    let name = fields.get("user");
    let password = Password::new(Zeroizing::new(fields.get("password").to_owned()));
    let result =
        accounts::set_password(&app.store, &admin_actor(&session.admin), &app.passwords, name, password, app.now())
            .await
            .map(|()| format!("Password of {name:?} reset; every session revoked."));
    done(&app, &session, result).await
}

/// `POST /users/access` (step-up): replaces roles and attributes.
pub(super) async fn access(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerAddr>>,
    Extension(mut session): Extension<AdminSession>,
    Extension(fields): Extension<Arc<Fields>>,
) -> Response {
    if let Err(r) = step_up(&app, &mut session, &fields, peer.as_ref().map(|Extension(p)| p), "/users/access").await {
        return r;
    }
    let name = fields.get("user");
    let attributes: Vec<String> =
        fields.get("attributes").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let result = async {
        let access = Access::parse(&roles(fields.get("roles")), &attributes)?;
        accounts::set_access(&app.store, &admin_actor(&session.admin), name, &access, app.now()).await?;
        Ok(format!("Roles and attributes of {name:?} replaced."))
    }
    .await;
    done(&app, &session, result).await
}
