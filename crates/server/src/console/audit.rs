//! The audit page: the log a page at a time (newest chain positions by `after`), and the
//! chain check, which names the first broken link as `fieldvault-server audit verify` does.
//! Read-only: nothing here changes the store.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use maud::html;

use super::pages::{page, respond, when};
use crate::app::App;
use crate::storage::{AdminSession, AuditCheck, verify_audit};

/// Records per page.
const PAGE_SIZE: u32 = 50;

/// `after` from the query (0: from the first record); None when it is not a number.
fn after(uri: &Uri) -> Option<u64> {
    let mut after = 0;
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if k == "after" {
            after = v.parse().ok()?;
        }
    }
    Some(after)
}

/// `GET /audit?after=SEQ`: the records after `SEQ`, oldest first; past the end, an empty page.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    Extension(session): Extension<AdminSession>,
    uri: Uri,
) -> Response {
    let Some(after) = after(&uri) else {
        return super::pages::message(StatusCode::BAD_REQUEST, "Bad request", "after must be a record number.");
    };
    let records = match app.store.audit_page(after, PAGE_SIZE).await {
        Ok(r) => r,
        Err(e) => return super::pages::internal(&e),
    };
    let next = records.last().map(|r| r.seq).filter(|_| records.len() == PAGE_SIZE as usize);
    let body = html! {
        h1 { "Audit log" }
        p { a href="/audit/verify" { "Check the chain" } " (walks the whole log; names the first broken link)" }
        table id="audit" {
            thead { tr { th { "Seq" } th { "At (UTC)" } th { "Actor" } th { "Action" } th { "Target" } th { "Detail" } } }
            tbody {
                @for r in &records {
                    tr {
                        td { (r.seq) }
                        td { (when(r.at)) }
                        td { (r.actor) }
                        td { (r.action) }
                        td { (r.target) }
                        td { code { (serde_json::Value::Object(r.detail.clone())) } }
                    }
                }
            }
        }
        @if records.is_empty() { p { "No records here." } }
        @if let Some(next) = next { p { a href={ "/audit?after=" (next) } { "Older records follow: next page" } } }
    };
    respond(StatusCode::OK, page("Audit log", Some(&session), body))
}

/// `GET /audit/verify`: the chain from its first record to the chain head.
pub(super) async fn verify(State(app): State<Arc<App>>, Extension(session): Extension<AdminSession>) -> Response {
    let (status, text) = match verify_audit(app.store.as_ref()).await {
        Ok(AuditCheck::Intact(summary)) => (
            StatusCode::OK,
            format!(
                "The chain verifies: {} records, last seq {}.",
                summary.count,
                summary.last.map_or(0, |(seq, _)| seq)
            ),
        ),
        Ok(AuditCheck::Broken(link)) => {
            (StatusCode::CONFLICT, format!("The chain is broken at record {}: {}", link.seq, link.why))
        }
        Err(e) => return super::pages::internal(&e),
    };
    let ok = status == StatusCode::OK;
    let body = html! {
        h1 { "Audit chain" }
        p class=(if ok { "notice" } else { "error" }) { (text) }
        p { a href="/audit" { "To the audit log" } }
    };
    respond(status, page("Audit chain", Some(&session), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_in_utc_and_after_must_be_a_number() {
        assert_eq!(when(0), "1970-01-01 00:00:00");
        assert_eq!(after(&"/audit?after=12".parse().expect("uri")), Some(12));
        assert_eq!(after(&"/audit".parse().expect("uri")), Some(0));
        assert_eq!(after(&"/audit?after=x".parse().expect("uri")), None);
    }
}
