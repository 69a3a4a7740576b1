//! The health page: the store (which backend, whether it answers and how fast, the audit
//! chain's head), the connections each listener serves, and the device API's recent error
//! answers by kind. Read-only.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::pages::{page, respond};
use crate::app::App;
use crate::health::{ErrorCounts, WINDOW_MINUTES};
use crate::storage::AdminSession;

/// `GET /health`.
pub(super) async fn show(State(app): State<Arc<App>>, Extension(session): Extension<AdminSession>) -> Response {
    let started = Instant::now();
    let head = app.store.audit_head().await;
    let elapsed = started.elapsed();
    let store_ok = head.is_ok();
    let store = match &head {
        Ok(head) => format!(
            "answering: a read took {:.1} ms; audit chain head at record {}",
            elapsed.as_secs_f64() * 1000.0,
            head.map_or(0, |(seq, _)| seq)
        ),
        Err(e) => {
            tracing::error!(error = %e, "console: the store does not answer");
            "failing: a read was refused (the cause is in the server's log)".to_owned()
        }
    };
    let now = app.now();
    let (device_open, device_served) = app.health.device.counts();
    let (console_open, console_served) = app.health.console.counts();
    let windows: [(&str, ErrorCounts); 3] = [
        ("last 5 minutes", app.health.errors.last(now, 5)),
        ("last 15 minutes", app.health.errors.last(now, 15)),
        ("last hour", app.health.errors.last(now, WINDOW_MINUTES)),
    ];
    let body = html! {
        h1 { "Health" }
        h2 { "Store" }
        p #store class=(if store_ok { "notice" } else { "error" }) { (app.store.backend()) ": " (store) }
        h2 { "Connections" }
        table #connections {
            thead { tr { th { "Listener" } th { "Open now" } th { "Served since the start" } } }
            tbody {
                tr { td { "device API" } td { (device_open) } td { (device_served) } }
                tr { td { "console" } td { (console_open) } td { (console_served) } }
            }
        }
        h2 { "Device API error answers" }
        table #errors {
            thead { tr {
                th { "Window" } th { "401 refused credentials" } th { "429 throttled" }
                th { "other 4xx" } th { "5xx server failures" }
            } }
            tbody {
                @for (label, c) in &windows {
                    tr { td { (label) } td { (c[0]) } td { (c[1]) } td { (c[2]) } td { (c[3]) } }
                }
            }
        }
        p { "Counted by this instance since it started; the causes of server failures are in its log." }
    };
    respond(
        if store_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE },
        page("Health", Some(&session), body),
    )
}
