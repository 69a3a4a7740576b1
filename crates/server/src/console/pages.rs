//! The layout every console page shares. maud escapes every interpolated value, so a user
//! name holding markup renders as text; nothing here is marked pre-escaped but the QR code's
//! SVG, which the `qrcode` crate draws from the URI's bits (no text of ours).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::storage::AdminSession;

/// A whole page: the header (with logout when signed in), then `body`. With a session the
/// body carries `hx-headers` with its CSRF token, so htmx requests send it.
pub(super) fn page(title: &str, session: Option<&AdminSession>, body: Markup) -> Markup {
    let hx_headers = session.map(|s| serde_json::json!({ "X-CSRF-Token": s.csrf }).to_string());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // htmx would otherwise add an inline <style>, which the CSP refuses.
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
                title { (title) " · Fieldvault console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/htmx.min.js" {}
            }
            body hx-headers=[hx_headers] {
                header {
                    strong { "Fieldvault console" }
                    @if let Some(s) = session.filter(|s| s.full) {
                        a href="/users" { "Users" }
                        a href="/rules" { "Access rules" }
                        a href="/audit" { "Audit log" }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span { (s.admin) " " }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// An HTML answer with `status`.
pub(super) fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page that only says something.
pub(super) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    respond(status, page(title, None, html! { h1 { (title) } p { (text) } p { a href="/" { "To the console" } } }))
}

/// 500, with the cause in the server's log and not on the page.
pub(super) fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console: internal error");
    message(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "The server failed; the cause is in its log.")
}
