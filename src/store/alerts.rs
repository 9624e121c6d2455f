//! Alert firings: recorded once per (rule, checkpoint, evalset, filter), listed and
//! acknowledged, and tracked until the `on_alert` hook has taken them.
//!
//! A firing is stored undelivered; it is marked delivered only once the hook exited 0 for
//! it (or at once when no hook is configured). A daemon that dies in between leaves it
//! undelivered, and the next start hands it to the hook again: delivery is at-least-once.

use serde::{Deserialize, Serialize};

use super::report::rfc3339;
use super::sql::{params, Exec};
use super::{now, Store};
use crate::error::input_error;

/// One firing of a rule at one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// Rule name.
    pub rule: String,
    /// Run.
    pub run: String,
    /// Evalset name.
    pub evalset: String,
    /// Evalset id in the store.
    #[serde(skip)]
    pub evalset_id: i64,
    /// Filter.
    pub filter: String,
    /// Checkpoint id in the store.
    #[serde(skip)]
    pub checkpoint_id: i64,
    /// Checkpoint name.
    pub checkpoint: String,
    /// Training step.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// The observed quantity (rise or gap, nats).
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// One human sentence.
    pub message: String,
}

/// A stored firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// Id, for `alerts --ack`.
    pub id: i64,
    /// When it fired (RFC 3339 UTC).
    pub fired_at: String,
    /// When it was acknowledged (RFC 3339 UTC), if it was.
    pub acked_at: Option<String>,
    /// When the `on_alert` hook took it (RFC 3339 UTC): it exited 0 for it, or none was
    /// configured when it fired. `None` while it is still to be handed to the hook.
    pub delivered_at: Option<String>,
    /// What fired.
    #[serde(flatten)]
    pub firing: Firing,
}

impl Store {
    /// Records a firing, undelivered, unless the same rule already fired at the same
    /// checkpoint on the same evalset and filter; returns the new row's id, or `None` for a
    /// repeat.
    pub fn record_alert(&mut self, f: &Firing) -> anyhow::Result<Option<i64>> {
        let run_id = self.run_id(&f.run)?;
        let details = serde_json::to_string(f)?;
        self.db
            .query_opt(
                "INSERT INTO alerts (rule, run_id, checkpoint_id, evalset_id, filter, message,
                 details, fired_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT DO NOTHING RETURNING id",
                params![
                    f.rule,
                    run_id,
                    f.checkpoint_id,
                    f.evalset_id,
                    f.filter,
                    f.message,
                    details,
                    now()
                ],
            )?
            .map(|r| r.get(0))
            .transpose()
    }

    /// Every stored firing, newest first.
    pub fn alerts(&self) -> anyhow::Result<Vec<AlertRow>> {
        self.alert_rows("TRUE ORDER BY fired_at DESC, id DESC")
    }

    /// The firings not yet delivered to the hook, oldest first (the order they fired in).
    pub fn undelivered_alerts(&self) -> anyhow::Result<Vec<AlertRow>> {
        self.alert_rows("delivered_at IS NULL ORDER BY id ASC")
    }

    /// Marks a firing delivered to the hook; marking twice keeps the first time.
    pub fn mark_alert_delivered(&mut self, id: i64) -> anyhow::Result<()> {
        let found = self.db.execute(
            "UPDATE alerts SET delivered_at = COALESCE(delivered_at, ?2) WHERE id = ?1",
            params![id, now()],
        )?;
        if found == 0 {
            anyhow::bail!("no alert with id {id}");
        }
        Ok(())
    }

    /// The firings of `filter_and_order`, a fixed SQL tail (`WHERE …` condition and
    /// `ORDER BY`) given by the callers above, never by user input.
    fn alert_rows(&self, filter_and_order: &str) -> anyhow::Result<Vec<AlertRow>> {
        let rows = self.db.query(
            &format!(
                "SELECT id, fired_at, acked_at, details, checkpoint_id, evalset_id, delivered_at
                 FROM alerts WHERE {filter_and_order}"
            ),
            params![],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let id: i64 = r.get(0)?;
            let fired: f64 = r.get(1)?;
            let acked: Option<f64> = r.get(2)?;
            let details = r.get::<Option<String>>(3)?.unwrap_or_default();
            let checkpoint_id: Option<i64> = r.get(4)?;
            let evalset_id: Option<i64> = r.get(5)?;
            let delivered: Option<f64> = r.get(6)?;
            let mut firing: Firing = serde_json::from_str(&details)
                .map_err(|e| anyhow::anyhow!("alert {id}: unreadable details: {e}"))?;
            firing.checkpoint_id = checkpoint_id.unwrap_or_default();
            firing.evalset_id = evalset_id.unwrap_or_default();
            out.push(AlertRow {
                id,
                fired_at: rfc3339(fired),
                acked_at: acked.map(rfc3339),
                delivered_at: delivered.map(rfc3339),
                firing,
            });
        }
        Ok(out)
    }

    /// Acknowledges a firing; acknowledging twice keeps the first time. An unknown id is an
    /// input error.
    pub fn ack_alert(&mut self, id: i64) -> anyhow::Result<()> {
        let found = self.db.execute(
            "UPDATE alerts SET acked_at = COALESCE(acked_at, ?2) WHERE id = ?1",
            params![id, now()],
        )?;
        if found == 0 {
            return Err(input_error(format!("no alert with id {id}")));
        }
        Ok(())
    }
}
