//! Live updates: one poller watches the store and tells every open page what changed, over
//! server-sent events.
//!
//! SQLite's `PRAGMA data_version` changes on a connection whenever another connection
//! commits, so the poller asks only that, a few times a second, and reads the
//! [`ChangeMarks`] when it moved. Pages get an event per kind of change (`results`,
//! `alerts`, `queue`) and fetch what they show again.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::App;
use crate::error::one_line;
use crate::store::activity::{ChangeMarks, QueueCounts};
use crate::store::Store;

/// How often the poller asks for `data_version`: a result shows within this much.
const POLL: Duration = Duration::from_millis(250);

/// What changed, as the event's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// New results (a job committed).
    Results,
    /// A firing stored or acknowledged.
    Alerts,
    /// Jobs queued, started, finished or failed.
    Queue,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Results => "results",
            Kind::Alerts => "alerts",
            Kind::Queue => "queue",
        }
    }
}

/// A change, and the store's counts after it, so that a client can tell which commit an
/// event is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Change {
    #[serde(skip)]
    kind: Kind,
    results: i64,
    alerts: i64,
    acked: i64,
    #[serde(flatten)]
    queue: QueueCounts,
}

impl Change {
    fn new(kind: Kind, m: &ChangeMarks) -> Self {
        Change {
            kind,
            results: m.results.0,
            alerts: m.alerts.0,
            acked: m.alerts.1,
            queue: m.queue.clone(),
        }
    }

    fn event(&self) -> Event {
        let data = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        Event::default().event(self.kind.name()).data(data)
    }
}

/// Polls the store until the server stops, broadcasting each change.
pub(super) async fn poll(app: Arc<App>) {
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<Store> = None;
    let mut seen: Option<(i64, ChangeMarks)> = None;
    loop {
        ticks.tick().await;
        let db = app.db.clone();
        let version = seen.as_ref().map(|s| s.0);
        let polled = tokio::task::spawn_blocking(move || {
            // data_version compares commits against this one connection, so it is kept.
            let store = match conn {
                Some(s) => s,
                None => Store::open_read_only(&db)?,
            };
            let v = store.data_version()?;
            let marks = if version == Some(v) {
                None
            } else {
                Some(store.change_marks()?)
            };
            anyhow::Ok((store, v, marks))
        })
        .await;
        let (store, v, marks) = match polled {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %one_line(&e), "dashboard cannot poll the store");
                conn = None;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "dashboard poller stopped");
                return;
            }
        };
        conn = Some(store);
        let Some(marks) = marks else { continue };
        if let Some((_, old)) = &seen {
            for (changed, kind) in [
                (old.results != marks.results, Kind::Results),
                (old.alerts != marks.alerts, Kind::Alerts),
                (old.queue != marks.queue, Kind::Queue),
            ] {
                if changed {
                    // No receiver is no error: no page is open.
                    let _ = app.changes.send(Change::new(kind, &marks));
                }
            }
        }
        seen = Some((v, marks));
    }
}

/// `GET /api/events`: a `hello` event, then one event per change until the server stops.
pub(super) async fn stream(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.changes.subscribe();
    let changes = stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(c) => c.event(),
            // A page that fell behind refetches everything.
            Err(RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((event, rx))
    });
    let mut closing = app.closing.clone();
    let events = stream::once(async { Event::default().event("hello").data("{}") })
        .chain(changes)
        .take_until(async move {
            let _ = closing.wait_for(|c| *c).await;
        })
        .map(Ok);
    Sse::new(events).keep_alive(KeepAlive::default())
}
