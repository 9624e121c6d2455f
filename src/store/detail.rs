//! One checkpoint in full, for the dashboard's checkpoint page: where it lives, its results
//! on every evalset and what its jobs went through.

use serde::Serialize;

use super::report::{result_row, rfc3339, ResultRecord, ResultRow, RESULT_COLUMNS};
use super::sql::{params, Exec};
use super::Store;

/// A checkpoint with its results and jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointDetail {
    /// Store id.
    pub id: i64,
    /// Run name.
    pub run: String,
    /// Folder name.
    pub name: String,
    /// Full path.
    pub path: String,
    /// Training step.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// `stable` or `anneal`.
    pub kind: String,
    /// When it was found ready (Unix seconds).
    pub ready_at: f64,
    /// Its results, by evalset and filter in the order they were defined.
    pub results: Vec<ResultRow>,
    /// One job per evalset.
    pub jobs: Vec<JobRow>,
}

/// The scoring of one checkpoint on one evalset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// Evalset id in the store.
    pub evalset_id: i64,
    /// Evalset name.
    pub evalset: String,
    /// Prepared evalset folder.
    pub evalset_dir: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Attempts that ended in an error (or made so far, while queued again).
    pub attempts: u32,
    /// Times the process scoring it died (lease reclaimed).
    pub lost_leases: u32,
    /// The last error, if any.
    pub error: Option<String>,
    /// When it was queued (RFC 3339 UTC).
    pub queued_at: String,
    /// When the last attempt started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Seconds the scoring took.
    pub score_secs: Option<f64>,
}

/// [`CheckpointDetail`] as the JSON API writes it: results with the field names of `export`.
#[derive(Debug, Serialize)]
pub struct CheckpointRecord<'a> {
    /// Store id.
    pub id: i64,
    /// Run name.
    pub run: &'a str,
    /// Folder name.
    pub checkpoint: &'a str,
    /// Full path.
    pub path: &'a str,
    /// Training step.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// `stable` or `anneal`.
    pub kind: &'a str,
    /// When it was found ready (RFC 3339 UTC).
    pub ready_at: String,
    /// Results, as `export` writes them.
    pub results: Vec<ResultRecord<'a>>,
    /// Jobs.
    pub jobs: &'a [JobRow],
}

impl<'a> From<&'a CheckpointDetail> for CheckpointRecord<'a> {
    fn from(d: &'a CheckpointDetail) -> Self {
        CheckpointRecord {
            id: d.id,
            run: &d.run,
            checkpoint: &d.name,
            path: &d.path,
            step: d.step,
            tokens: d.tokens,
            kind: &d.kind,
            ready_at: rfc3339(d.ready_at),
            results: d.results.iter().map(ResultRecord::from).collect(),
            jobs: &d.jobs,
        }
    }
}

impl Store {
    /// A checkpoint by store id, or `None` when there is no such checkpoint.
    pub fn checkpoint_detail(&self, id: i64) -> anyhow::Result<Option<CheckpointDetail>> {
        let Some(r) = self.db.query_opt(
            "SELECT r.name, c.name, c.path, c.step, c.tokens, c.kind, c.ready_at
             FROM checkpoints c JOIN runs r ON r.id = c.run_id WHERE c.id = ?1",
            params![id],
        )?
        else {
            return Ok(None);
        };
        let mut detail = CheckpointDetail {
            id,
            run: r.get(0)?,
            name: r.get(1)?,
            path: r.get(2)?,
            step: r.get(3)?,
            tokens: r.get(4)?,
            kind: r.get(5)?,
            ready_at: r.get(6)?,
            results: Vec::new(),
            jobs: Vec::new(),
        };
        let sql = format!(
            "SELECT {RESULT_COLUMNS} WHERE res.checkpoint_id = ?1 ORDER BY e.name, res.pos"
        );
        detail.results = self
            .db
            .query(&sql, params![id])?
            .iter()
            .map(result_row)
            .collect::<anyhow::Result<_>>()?;
        detail.jobs = self
            .db
            .query(
                "SELECT e.id, e.name, e.dir, j.state, j.attempts, j.lost_leases, j.error,
                        j.queued_at, j.started_at, j.finished_at, j.score_secs
                 FROM jobs j JOIN evalsets e ON e.id = j.evalset_id
                 WHERE j.checkpoint_id = ?1 ORDER BY e.name",
                params![id],
            )?
            .iter()
            .map(|r| {
                Ok(JobRow {
                    evalset_id: r.get(0)?,
                    evalset: r.get(1)?,
                    evalset_dir: r.get(2)?,
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    lost_leases: r.get(5)?,
                    error: r.get(6)?,
                    queued_at: rfc3339(r.get(7)?),
                    started_at: r.get::<Option<f64>>(8)?.map(rfc3339),
                    finished_at: r.get::<Option<f64>>(9)?.map(rfc3339),
                    score_secs: r.get(10)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some(detail))
    }

    /// The filters a checkpoint was scored with on an evalset, as `(name, definition)` in
    /// the order they were stored: enough to apply the same filters again to its stored
    /// per-token losses.
    pub fn filter_definitions(
        &self,
        checkpoint_id: i64,
        evalset_id: i64,
    ) -> anyhow::Result<Vec<(String, String)>> {
        self.db
            .query(
                "SELECT filter, definition FROM results
                 WHERE checkpoint_id = ?1 AND evalset_id = ?2 ORDER BY pos",
                params![checkpoint_id, evalset_id],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect()
    }
}
