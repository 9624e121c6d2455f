//! Read-side queries behind `status` and `export`.

use std::path::Path;

use serde::Serialize;

use super::sql::{params, Exec, Row};
use super::Store;
use crate::error::input_error;

/// One exported result: a (run, checkpoint, evalset, filter).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultRow {
    /// Run name.
    pub run: String,
    /// Architecture label.
    pub arch: String,
    /// Training step.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// `stable` or `anneal`.
    pub kind: String,
    /// Checkpoint folder name.
    pub checkpoint: String,
    /// Evalset name.
    pub evalset: String,
    /// Filter name.
    pub filter: String,
    /// Mean NLL (nats); `None` when no token passed the filter.
    pub mean: Option<f64>,
    /// Tokens that passed.
    pub n: u64,
    /// Lower end of the 95% CI.
    pub ci_lo: Option<f64>,
    /// Upper end of the 95% CI.
    pub ci_hi: Option<f64>,
    /// Top-1 accuracy.
    pub top1: Option<f64>,
    /// Top-5 accuracy.
    pub top5: Option<f64>,
    /// When the results were committed (Unix seconds).
    pub scored_at: f64,
    /// Paired gap to the baseline's checkpoint of the same kind at the same tokens (nats),
    /// where there is one.
    pub gap: Option<f64>,
    /// Lower end of the gap's 95% CI.
    pub gap_ci_lo: Option<f64>,
    /// Upper end of the gap's 95% CI.
    pub gap_ci_hi: Option<f64>,
    /// Store id of the checkpoint.
    pub checkpoint_id: i64,
}

/// One result as `export` writes it (and the JSON API serves it); `scored_at` as RFC 3339
/// UTC, undefined numbers as null (`gap` where the baseline has no checkpoint of the same
/// kind at the same tokens, or the run none).
#[derive(Debug, Serialize)]
pub struct ResultRecord<'a> {
    /// Run name.
    pub run: &'a str,
    /// Architecture label.
    pub arch: &'a str,
    /// Training step.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// `stable` or `anneal`.
    pub kind: &'a str,
    /// Checkpoint folder name.
    pub checkpoint: &'a str,
    /// Evalset name.
    pub evalset: &'a str,
    /// Filter name.
    pub filter: &'a str,
    /// Mean NLL (nats); null when no token passed the filter.
    pub mean: Option<f64>,
    /// Tokens that passed.
    pub n: u64,
    /// Lower end of the 95% CI.
    pub ci_lo: Option<f64>,
    /// Upper end of the 95% CI.
    pub ci_hi: Option<f64>,
    /// Top-1 accuracy.
    pub top1: Option<f64>,
    /// Top-5 accuracy.
    pub top5: Option<f64>,
    /// When the results were committed, RFC 3339 UTC.
    pub scored_at: String,
    /// Paired gap to the baseline (nats), where there is one.
    pub gap: Option<f64>,
    /// Lower end of the gap's 95% CI.
    pub gap_ci_lo: Option<f64>,
    /// Upper end of the gap's 95% CI.
    pub gap_ci_hi: Option<f64>,
}

impl<'a> From<&'a ResultRow> for ResultRecord<'a> {
    fn from(r: &'a ResultRow) -> Self {
        ResultRecord {
            run: &r.run,
            arch: &r.arch,
            step: r.step,
            tokens: r.tokens,
            kind: &r.kind,
            checkpoint: &r.checkpoint,
            evalset: &r.evalset,
            filter: &r.filter,
            mean: r.mean,
            n: r.n,
            ci_lo: r.ci_lo,
            ci_hi: r.ci_hi,
            top1: r.top1,
            top5: r.top5,
            scored_at: rfc3339(r.scored_at),
            gap: r.gap,
            gap_ci_lo: r.gap_ci_lo,
            gap_ci_hi: r.gap_ci_hi,
        }
    }
}

/// Checkpoints of a run by state. A checkpoint is failed when any of its jobs failed,
/// running when any runs, queued when any waits, done when all are done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// Waiting (including failed attempts that will be retried).
    pub queued: u64,
    /// Being scored.
    pub running: u64,
    /// Scored on every evalset.
    pub done: u64,
    /// Out of attempts.
    pub failed: u64,
}

impl StateCounts {
    /// Checkpoints that will not change state any more.
    pub fn finished(&self) -> u64 {
        self.done + self.failed
    }
}

impl std::ops::AddAssign for StateCounts {
    fn add_assign(&mut self, o: StateCounts) {
        self.queued += o.queued;
        self.running += o.running;
        self.done += o.done;
        self.failed += o.failed;
    }
}

/// One run in `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStatus {
    /// Run name.
    pub name: String,
    /// Architecture label.
    pub arch: String,
    /// Checkpoint folder.
    pub dir: String,
    /// Baseline run.
    pub baseline: Option<String>,
    /// Whether `dir` is missing (or is no folder) where the report is made: the daemon waits
    /// for it, as for a run that has not started.
    pub waiting_for_folder: bool,
    /// Checkpoints by state.
    pub checkpoints: StateCounts,
    /// Results of the highest-step scored checkpoint, per evalset and filter.
    pub latest: Vec<ResultRow>,
}

/// A job that failed or lost its lease at least once and is not done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureRow {
    /// Run name.
    pub run: String,
    /// Checkpoint folder name.
    pub checkpoint: String,
    /// Evalset name.
    pub evalset: String,
    /// `failed` (out of attempts) or `queued` (will be retried).
    pub state: String,
    /// Attempts that ended in an error (or, while it is queued again, made so far).
    pub attempts: u32,
    /// Times the daemon scoring it died (lease reclaimed); counted apart from attempts.
    pub lost_leases: u32,
    /// The last error: a real one when there was one, else the lost lease.
    pub error: String,
}

/// Everything `status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// Runs by name.
    pub runs: Vec<RunStatus>,
    /// Failed attempts, with their errors.
    pub failures: Vec<FailureRow>,
}

pub(super) const RESULT_COLUMNS: &str = "r.name, r.arch, c.step, c.tokens, c.kind, c.name, e.name,
    res.filter, res.mean, res.n, res.ci_lo, res.ci_hi, res.top1, res.top5, res.scored_at,
    g.gap, g.ci_lo, g.ci_hi, c.id
    FROM results res
    JOIN checkpoints c ON c.id = res.checkpoint_id
    JOIN runs r ON r.id = c.run_id
    JOIN evalsets e ON e.id = res.evalset_id
    LEFT JOIN paired_gaps g ON g.checkpoint_id = res.checkpoint_id
        AND g.evalset_id = res.evalset_id AND g.filter = res.filter";

pub(super) fn result_row(r: &Row) -> anyhow::Result<ResultRow> {
    Ok(ResultRow {
        run: r.get(0)?,
        arch: r.get(1)?,
        step: r.get(2)?,
        tokens: r.get(3)?,
        kind: r.get(4)?,
        checkpoint: r.get(5)?,
        evalset: r.get(6)?,
        filter: r.get(7)?,
        mean: r.get(8)?,
        n: r.get(9)?,
        ci_lo: r.get(10)?,
        ci_hi: r.get(11)?,
        top1: r.get(12)?,
        top5: r.get(13)?,
        scored_at: r.get(14)?,
        gap: r.get(15)?,
        gap_ci_lo: r.get(16)?,
        gap_ci_hi: r.get(17)?,
        checkpoint_id: r.get(18)?,
    })
}

impl Store {
    /// Every result, or one run's, ordered by run, step, checkpoint, evalset and filter
    /// (filters in the order they were defined).
    pub fn results(&self, run: Option<&str>) -> anyhow::Result<Vec<ResultRow>> {
        if let Some(name) = run {
            if self.run_id(name)?.is_none() {
                return Err(input_error(format!(
                    "no run named {name:?} in the database"
                )));
            }
        }
        let sql = format!(
            "SELECT {RESULT_COLUMNS} WHERE CAST(?1 AS TEXT) IS NULL OR r.name = ?1
             ORDER BY r.name, c.step, c.name, e.name, res.pos"
        );
        self.db
            .query(&sql, params![run])?
            .iter()
            .map(result_row)
            .collect()
    }

    /// Runs, checkpoint states, latest results and failures.
    pub fn status(&self) -> anyhow::Result<StatusReport> {
        let runs: Vec<RunStatus> = {
            let rows = self.db.query(
                "SELECT id, name, arch, dir, baseline FROM runs ORDER BY name",
                params![],
            )?;
            let rows = rows.iter().map(|r| {
                Ok((
                    r.get::<i64>(0)?,
                    RunStatus {
                        name: r.get(1)?,
                        arch: r.get(2)?,
                        dir: r.get(3)?,
                        baseline: r.get(4)?,
                        waiting_for_folder: false,
                        checkpoints: StateCounts::default(),
                        latest: Vec::new(),
                    },
                ))
            });
            let rows = rows.collect::<anyhow::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(rows.len());
            for (id, mut run) in rows {
                run.waiting_for_folder = !Path::new(&run.dir).is_dir();
                run.checkpoints = self.state_counts(id)?;
                run.latest = self.latest(id)?;
                out.push(run);
            }
            out
        };
        let failures = self.db.query(
            "SELECT r.name, c.name, e.name, j.state, j.attempts, j.error, j.lost_leases
             FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id
             JOIN runs r ON r.id = c.run_id JOIN evalsets e ON e.id = j.evalset_id
             WHERE j.error IS NOT NULL AND j.state IN ('failed', 'queued')
             ORDER BY r.name, c.step, c.name, e.name",
            params![],
        )?;
        let failures = failures
            .iter()
            .map(|r| {
                Ok(FailureRow {
                    run: r.get(0)?,
                    checkpoint: r.get(1)?,
                    evalset: r.get(2)?,
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    error: r.get(5)?,
                    lost_leases: r.get(6)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(StatusReport { runs, failures })
    }

    fn state_counts(&self, run_id: i64) -> anyhow::Result<StateCounts> {
        let states = self.db.query(
            "SELECT CASE WHEN COUNT(*) FILTER (WHERE j.state = 'failed') > 0 THEN 'failed'
                         WHEN COUNT(*) FILTER (WHERE j.state = 'running') > 0 THEN 'running'
                         WHEN COUNT(*) FILTER (WHERE j.state = 'queued') > 0 THEN 'queued'
                         ELSE 'done' END
             FROM checkpoints c JOIN jobs j ON j.checkpoint_id = c.id
             WHERE c.run_id = ?1 GROUP BY c.id",
            params![run_id],
        )?;
        let mut counts = StateCounts::default();
        for r in states {
            match r.get::<String>(0)?.as_str() {
                "failed" => counts.failed += 1,
                "running" => counts.running += 1,
                "queued" => counts.queued += 1,
                _ => counts.done += 1,
            }
        }
        Ok(counts)
    }

    fn latest(&self, run_id: i64) -> anyhow::Result<Vec<ResultRow>> {
        let sql = format!(
            "SELECT {RESULT_COLUMNS}
             WHERE c.run_id = ?1 AND res.checkpoint_id = (
                 SELECT c2.id FROM checkpoints c2 JOIN jobs j2 ON j2.checkpoint_id = c2.id
                 WHERE c2.run_id = ?1 AND j2.evalset_id = res.evalset_id AND j2.state = 'done'
                 ORDER BY c2.step DESC, c2.id DESC LIMIT 1)
             ORDER BY e.name, res.pos"
        );
        self.db
            .query(&sql, params![run_id])?
            .iter()
            .map(result_row)
            .collect()
    }
}

/// A store time (Unix seconds) as RFC 3339 UTC with milliseconds, e.g.
/// `2026-03-01T12:00:00.250Z`.
pub fn rfc3339(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400.25), "2000-02-29T00:00:00.250Z");
        assert_eq!(rfc3339(1_772_366_400.0), "2026-03-01T12:00:00.000Z");
    }
}
