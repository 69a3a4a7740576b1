//! The layout every console page shares. maud escapes every interpolated value, so a user
//! name holding markup renders as text; nothing here is marked pre-escaped but the QR code's
//! SVG, which the `qrcode` crate draws from the URI's bits (no text of ours).

use axum::http::{StatusCode, Uri};
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
                        a href="/devices" { "Devices" }
                        a href="/sessions" { "Sessions" }
                        a href="/rules" { "Access rules" }
                        a href="/audit" { "Audit log" }
                        a href="/health" { "Health" }
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

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub(super) fn when(at: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(at).unwrap_or(i64::MAX), 0)
        .map_or_else(|| at.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// A page number that is not one (answered 400).
#[derive(Debug)]
pub(super) struct BadPage;

impl IntoResponse for BadPage {
    fn into_response(self) -> Response {
        message(StatusCode::BAD_REQUEST, "Bad request", "bad page number: pages count from 1.")
    }
}

/// A listing's query: one text field (a search prefix, a user name) and the page number
/// (from 1, at most a million).
pub(super) struct Listing {
    /// The query key of the text field.
    key: &'static str,
    /// Its value ("" when absent).
    pub(super) text: String,
    /// The page, from 1.
    pub(super) page: u64,
}

impl Listing {
    /// Reads `key` and `page` from the query; other keys are ignored.
    pub(super) fn parse(uri: &Uri, key: &'static str) -> Result<Listing, BadPage> {
        let mut listing = Listing { key, text: String::new(), page: 1 };
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            if k == key {
                listing.text = v.into_owned();
            } else if k == "page" && !v.is_empty() {
                listing.page = v.parse().ok().filter(|p| (1..=1_000_000).contains(p)).ok_or(BadPage)?;
            }
        }
        Ok(listing)
    }

    /// The first page, with no text.
    pub(super) fn first(key: &'static str) -> Listing {
        Listing::of(key, "")
    }

    /// The first page with `text`.
    pub(super) fn of(key: &'static str, text: &str) -> Listing {
        Listing { key, text: text.to_owned(), page: 1 }
    }

    /// The first row of the page, for a page of `size` rows.
    pub(super) fn offset(&self, size: u32) -> u64 {
        (self.page - 1) * u64::from(size)
    }

    /// `path` with this listing's text and page `page`.
    pub(super) fn link(&self, path: &str, page: u64) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(self.key, &self.text)
            .append_pair("page", &page.to_string())
            .finish();
        format!("{path}?{query}")
    }

    /// Links to the pages before and after this one (the next when this one is full).
    pub(super) fn paging(&self, path: &str, rows: usize, size: u32) -> Markup {
        html! {
            p.paging {
                @if self.page > 1 { a href=(self.link(path, self.page - 1)) { "Previous page" } " " }
                @if rows == size as usize { a href=(self.link(path, self.page + 1)) { "Next page" } " " }
                "Page " (self.page)
            }
        }
    }
}

/// The outcome of an action shown above a page: (succeeded, what happened).
pub(super) type Notice = Option<(bool, String)>;

/// A page's status: 400 when it reports a refused action, else 200.
pub(super) fn notice_status(notice: &Notice) -> StatusCode {
    match notice {
        Some((false, _)) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// The notice as a paragraph (nothing without one).
pub(super) fn notice_markup(notice: &Notice) -> Markup {
    html! { @if let Some((ok, text)) = notice { p class=(if *ok { "notice" } else { "error" }) { (text) } } }
}
