//! The persistent job queue: one job per (checkpoint, evalset), leased by one daemon at a
//! time.
//!
//! A lease is taken in a transaction that no other lease can interleave with (SQLite's
//! IMMEDIATE; on PostgreSQL a row lock, `FOR UPDATE SKIP LOCKED`), so two workers on one
//! store never get the same job; it carries an owner and an expiry that the owner renews while it scores.
//! A job whose owner died is re-queued when its lease expires, or at once when the owner
//! was a process on this host that no longer exists. Results are written in the same
//! transaction that marks the job done, and only while the lease is still held: a crash
//! leaves all of a job's results or none, and a job is never scored into the store twice.
//!
//! Attempts count real errors only. A lease lost to a dead owner says nothing about the
//! checkpoint, so reclaiming it gives the attempt back and counts a lost lease instead; only
//! a job that keeps losing its lease ([`RetryPolicy::max_lost_leases`], a crash loop such as
//! a checkpoint that gets the daemon OOM-killed) is marked failed for it.

use super::losses::EncodedLosses;
use super::sql::{params, Dialect, Exec};
use super::{now, Store};
use crate::analysis::stats::aggregate::FilterResult;

/// A leased job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Job id.
    pub id: i64,
    /// Checkpoint id.
    pub checkpoint_id: i64,
    /// Evalset id.
    pub evalset_id: i64,
    /// Run name.
    pub run: String,
    /// Checkpoint folder name.
    pub checkpoint: String,
    /// Checkpoint folder.
    pub path: String,
    /// Training step.
    pub step: u64,
    /// When the checkpoint was found ready (Unix seconds).
    pub ready_at: f64,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailOutcome {
    /// Queued again, not before this many seconds from now.
    Retry(f64),
    /// Out of attempts: marked failed.
    Failed,
    /// The lease had been lost; nothing was changed.
    LeaseLost,
}

/// The queue of a set of runs × evalsets, as a launcher of workers sizes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLoad {
    /// Queued jobs that may be leased now (retries not yet due are left out).
    pub due: u64,
    /// Jobs under a lease.
    pub running: u64,
}

/// Scored jobs of one evalset: how many, and when the last one was committed (Unix seconds).
/// It changes exactly when that evalset has new results.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DoneMark {
    /// Jobs done.
    pub done: u64,
    /// Newest commit.
    pub last: f64,
}

/// Lost leases after which a job is marked failed: far more than any run of bad luck with
/// restarts, few enough to stop a checkpoint that kills every daemon that scores it.
pub const MAX_LOST_LEASES: u32 = 20;

/// Retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts (failed with an error) before a job is marked failed.
    pub max_attempts: u32,
    /// Lost leases (the scoring daemon died) before a job is marked failed.
    pub max_lost_leases: u32,
    /// Wait before the first retry, in seconds; doubles with each attempt.
    pub backoff: f64,
}

impl RetryPolicy {
    fn delay(&self, attempts: u32) -> f64 {
        self.backoff * 2f64.powi(attempts.saturating_sub(1).min(30) as i32)
    }
}

/// Owner id of this process: `host:pid:nonce`.
pub fn owner_id() -> String {
    format!(
        "{}:{}:{:08x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// This machine's name ("localhost" when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the owner of a lease is a process of this host that has exited.
fn owner_is_dead(owner: &str) -> bool {
    let mut parts = owner.split(':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() || pid.parse::<u32>().is_err() {
        return false;
    }
    // Without /proc (not Linux) nothing can be said; the lease expiry still applies.
    let proc = std::path::Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid).exists()
}

/// `attempts - 1`, floored at 0, in SQL both engines run.
const ATTEMPT_GIVEN_BACK: &str = "CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END";
/// Store ids as a SQL list. Ids are integers from the store itself, so formatting them into
/// the SQL is safe.
fn ids(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

impl Store {
    /// Re-queues the jobs of dead owners: expired leases, and leases of processes on this
    /// host that are gone. The lost attempt is given back and counted as a lost lease; a job
    /// that reaches `max_lost_leases` is marked failed instead. Returns how many jobs were
    /// re-queued or failed.
    pub fn reclaim(&mut self, policy: RetryPolicy) -> anyhow::Result<usize> {
        // On PostgreSQL, rows another reclaimer holds are its to handle.
        let lock = self.lock_clause("");
        self.db.transaction(|tx| {
            let t = now();
            let running = tx.query(
                &format!(
                    "SELECT id, lease_owner, lease_expires, lost_leases FROM jobs
                     WHERE state = 'running' {lock}"
                ),
                params![],
            )?;
            let mut n = 0;
            for r in running {
                let id: i64 = r.get(0)?;
                let owner = r.get::<Option<String>>(1)?.unwrap_or_default();
                let expires = r.get::<Option<f64>>(2)?.unwrap_or(0.0);
                let lost: u32 = r.get(3)?;
                if expires >= t && !owner_is_dead(&owner) {
                    continue;
                }
                let lost = lost.saturating_add(1);
                if lost >= policy.max_lost_leases {
                    let error = format!(
                        "lost its lease {lost} times: every daemon scoring it stopped without \
                         finishing (the last was {owner}); not retried, as the checkpoint may be \
                         what kills them"
                    );
                    tx.execute(
                        &format!(
                            "UPDATE jobs SET state = 'failed', error = ?2, lost_leases = ?3,
                             attempts = {ATTEMPT_GIVEN_BACK}, lease_owner = NULL,
                             lease_expires = NULL, finished_at = ?4 WHERE id = ?1"
                        ),
                        params![id, error, lost, t],
                    )?;
                    tracing::error!(job = id, %owner, lost_leases = lost, "job failed after too many lost leases");
                } else {
                    // A real error from an earlier attempt says more than this; keep it.
                    let error =
                        format!("the daemon scoring it ({owner}) stopped without finishing");
                    tx.execute(
                        &format!(
                            "UPDATE jobs SET state = 'queued', error = COALESCE(error, ?2),
                             lost_leases = ?3, attempts = {ATTEMPT_GIVEN_BACK},
                             lease_owner = NULL, lease_expires = NULL WHERE id = ?1"
                        ),
                        params![id, error, lost],
                    )?;
                    tracing::warn!(job = id, %owner, lost_leases = lost, "re-queued the job of a daemon that died");
                }
                n += 1;
            }
            Ok(n)
        })
    }

    /// `FOR UPDATE [OF table] SKIP LOCKED` on PostgreSQL, where transactions run side by side;
    /// nothing on SQLite, whose write transactions already run one at a time.
    fn lock_clause(&self, of: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres if of.is_empty() => "FOR UPDATE SKIP LOCKED".into(),
            Dialect::Postgres => format!("FOR UPDATE OF {of} SKIP LOCKED"),
        }
    }

    /// Leases the next due job among `runs` × `evalsets` (ids): annealed checkpoints first,
    /// then oldest step first. On PostgreSQL a job another worker is leasing at this moment
    /// is skipped rather than waited for (`SKIP LOCKED`).
    pub fn lease(
        &mut self,
        owner: &str,
        lease_secs: f64,
        runs: &[i64],
        evalsets: &[i64],
    ) -> anyhow::Result<Option<Job>> {
        if runs.is_empty() || evalsets.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT j.id, j.checkpoint_id, j.evalset_id, r.name, c.name, c.path, c.step,
                    c.ready_at, j.attempts
             FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id JOIN runs r ON r.id = c.run_id
             WHERE j.state = 'queued' AND j.not_before <= ?1
               AND c.run_id IN ({}) AND j.evalset_id IN ({})
             ORDER BY j.priority DESC, c.step ASC, c.id ASC, j.evalset_id ASC LIMIT 1 {}",
            ids(runs),
            ids(evalsets),
            self.lock_clause("j")
        );
        self.db.transaction(|tx| {
            let t = now();
            let Some(r) = tx.query_opt(&sql, params![t])? else {
                return Ok(None);
            };
            let job = Job {
                id: r.get(0)?,
                checkpoint_id: r.get(1)?,
                evalset_id: r.get(2)?,
                run: r.get(3)?,
                checkpoint: r.get(4)?,
                path: r.get(5)?,
                step: r.get(6)?,
                ready_at: r.get(7)?,
                attempts: r.get::<u32>(8)? + 1,
            };
            tx.execute(
                "UPDATE jobs SET state = 'running', attempts = ?2, lease_owner = ?3,
                 lease_expires = ?4, started_at = ?5 WHERE id = ?1",
                params![job.id, job.attempts, owner, t + lease_secs, t],
            )?;
            Ok(Some(job))
        })
    }

    /// Extends a lease; false when it is no longer ours.
    pub fn renew(&mut self, job: i64, owner: &str, lease_secs: f64) -> anyhow::Result<bool> {
        Ok(self.db.execute(
            "UPDATE jobs SET lease_expires = ?3
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
            params![job, owner, now() + lease_secs],
        )? == 1)
    }

    /// Writes a job's results and loss vectors and marks it done, in one transaction.
    /// False (and nothing written) when the lease is no longer ours.
    pub fn complete(
        &mut self,
        job: &Job,
        owner: &str,
        results: &[FilterResult],
        losses: &EncodedLosses,
        score_secs: f64,
    ) -> anyhow::Result<bool> {
        self.db.transaction(|tx| {
            let t = now();
            let owned = tx.execute(
                "UPDATE jobs SET state = 'done', error = NULL, lease_owner = NULL,
                 lease_expires = NULL, finished_at = ?3, score_secs = ?4
                 WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
                params![job.id, owner, t, score_secs],
            )?;
            if owned == 0 {
                return Ok(false);
            }
            let finite = |x: f64| x.is_finite().then_some(x);
            for (pos, r) in results.iter().filter(|r| r.domain.is_none()).enumerate() {
                tx.execute(
                    "INSERT INTO results (checkpoint_id, evalset_id, filter, definition, mean, n,
                     ci_lo, ci_hi, top1, top5, scored_at, pos)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        job.checkpoint_id,
                        job.evalset_id,
                        r.filter,
                        r.definition,
                        finite(r.mean),
                        r.n,
                        finite(r.ci_lo),
                        finite(r.ci_hi),
                        finite(r.top1),
                        finite(r.top5),
                        t,
                        pos
                    ],
                )?;
            }
            tx.execute(
                "INSERT INTO token_losses (checkpoint_id, evalset_id, codec, tokens, loss, top1, top5)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.checkpoint_id,
                    job.evalset_id,
                    losses.codec,
                    losses.tokens,
                    losses.loss,
                    losses.top1,
                    losses.top5
                ],
            )?;
            Ok(true)
        })
    }

    /// Records a failed attempt: re-queued with backoff, or failed when out of attempts.
    pub fn fail(
        &mut self,
        job: &Job,
        owner: &str,
        error: &str,
        policy: RetryPolicy,
    ) -> anyhow::Result<FailOutcome> {
        let t = now();
        let (outcome, state, not_before) = if job.attempts >= policy.max_attempts {
            (FailOutcome::Failed, "failed", t)
        } else {
            let d = policy.delay(job.attempts);
            (FailOutcome::Retry(d), "queued", t + d)
        };
        let n = self.db.execute(
            "UPDATE jobs SET state = ?3, error = ?4, not_before = ?5, lease_owner = NULL,
             lease_expires = NULL, finished_at = ?6
             WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'",
            params![job.id, owner, state, error, not_before, t],
        )?;
        Ok(if n == 1 {
            outcome
        } else {
            FailOutcome::LeaseLost
        })
    }

    /// Due and running jobs among `runs` × `evalsets` (ids).
    pub fn queue_load(&self, runs: &[i64], evalsets: &[i64]) -> anyhow::Result<QueueLoad> {
        if runs.is_empty() || evalsets.is_empty() {
            return Ok(QueueLoad::default());
        }
        let r = self.db.query_one(
            &format!(
                "SELECT COUNT(*) FILTER (WHERE j.state = 'queued' AND j.not_before <= ?1),
                        COUNT(*) FILTER (WHERE j.state = 'running')
                 FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id
                 WHERE c.run_id IN ({}) AND j.evalset_id IN ({})",
                ids(runs),
                ids(evalsets)
            ),
            params![now()],
        )?;
        Ok(QueueLoad {
            due: r.get(0)?,
            running: r.get(1)?,
        })
    }

    /// The [`DoneMark`] of each of `evalsets` (ids) over `runs`, by evalset id; an evalset with
    /// nothing scored yet is left out. Cheap enough to poll: one grouped count.
    pub fn done_marks(
        &self,
        runs: &[i64],
        evalsets: &[i64],
    ) -> anyhow::Result<std::collections::BTreeMap<i64, DoneMark>> {
        if runs.is_empty() || evalsets.is_empty() {
            return Ok(Default::default());
        }
        self.db
            .query(
                &format!(
                    "SELECT j.evalset_id, COUNT(*), COALESCE(MAX(j.finished_at), 0)
                     FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id
                     WHERE j.state = 'done' AND c.run_id IN ({}) AND j.evalset_id IN ({})
                     GROUP BY j.evalset_id",
                    ids(runs),
                    ids(evalsets)
                ),
                params![],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.get(0)?,
                    DoneMark {
                        done: r.get(1)?,
                        last: r.get(2)?,
                    },
                ))
            })
            .collect()
    }

    /// Puts a job back in the queue without counting the attempt (shutdown).
    pub fn release(&mut self, job: &Job, owner: &str) -> anyhow::Result<bool> {
        Ok(self.db.execute(
            &format!(
                "UPDATE jobs SET state = 'queued', attempts = {ATTEMPT_GIVEN_BACK},
                 lease_owner = NULL, lease_expires = NULL
                 WHERE id = ?1 AND lease_owner = ?2 AND state = 'running'"
            ),
            params![job.id, owner],
        )? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::losses::encode;
    use crate::store::NewCheckpoint;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 2,
        max_lost_leases: 5,
        backoff: 0.0,
    };

    fn setup() -> (tempfile::TempDir, Store, i64, i64) {
        let (dir, mut s, es) = crate::store::testing::store(3);
        let run = crate::store::testing::run(&mut s, "a", None);
        for (name, step, anneal) in [
            ("step30", 30, false),
            ("step10", 10, false),
            ("step20-anneal", 20, true),
        ] {
            let ck = NewCheckpoint {
                name: name.into(),
                path: format!("/x/{name}"),
                step,
                tokens: step,
                anneal,
            };
            s.add_checkpoint(run, &ck, &[es]).expect("add");
        }
        (dir, s, run, es)
    }

    #[test]
    fn lease_order_anneal_then_oldest() {
        let (_d, mut s, run, es) = setup();
        let order: Vec<String> = (0..3)
            .map(|_| {
                s.lease("me", 60.0, &[run], &[es])
                    .expect("lease")
                    .expect("job")
                    .checkpoint
            })
            .collect();
        assert_eq!(order, ["step20-anneal", "step10", "step30"]);
        assert!(s.lease("me", 60.0, &[run], &[es]).expect("lease").is_none());
    }

    #[test]
    fn complete_only_with_lease_and_once() {
        let (_d, mut s, run, es) = setup();
        let job = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        let losses = encode(&crate::evalset::scores::EvalScores {
            loss: vec![f32::NAN, 1.0, 2.0],
            top1: vec![false, true, false],
            top5: vec![false, true, true],
        })
        .expect("encode");
        assert!(!s
            .complete(&job, "other", &[], &losses, 1.0)
            .expect("complete"));
        assert!(s.complete(&job, "me", &[], &losses, 1.0).expect("complete"));
        assert!(!s.complete(&job, "me", &[], &losses, 1.0).expect("again"));
    }

    #[test]
    fn queue_load_and_done_marks_follow_the_jobs_of_the_given_runs_and_evalsets() {
        let (_d, mut s, run, es) = setup();
        let other = crate::store::testing::run(&mut s, "b", None);
        let ck = NewCheckpoint {
            name: "step5".into(),
            path: "/y/step5".into(),
            step: 5,
            tokens: 5,
            anneal: false,
        };
        s.add_checkpoint(other, &ck, &[es]).expect("add");
        let load = |s: &Store| s.queue_load(&[run], &[es]).expect("load");
        assert_eq!(load(&s), QueueLoad { due: 3, running: 0 });
        assert_eq!(s.queue_load(&[run, other], &[es]).expect("load").due, 4);
        assert_eq!(
            s.queue_load(&[], &[es]).expect("load"),
            QueueLoad::default()
        );
        assert!(s.done_marks(&[run], &[es]).expect("marks").is_empty());

        let job = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!(load(&s), QueueLoad { due: 2, running: 1 });
        // A retry not yet due is no work for a new worker.
        let policy = RetryPolicy {
            backoff: 3600.0,
            ..POLICY
        };
        s.fail(&job, "me", "boom", policy).expect("fail");
        assert_eq!(load(&s), QueueLoad { due: 2, running: 0 });

        let job = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        let losses = encode(&crate::evalset::scores::EvalScores {
            loss: vec![f32::NAN, 1.0],
            top1: vec![false; 2],
            top5: vec![false; 2],
        })
        .expect("encode");
        assert!(s.complete(&job, "me", &[], &losses, 1.0).expect("complete"));
        assert_eq!(load(&s), QueueLoad { due: 1, running: 0 });
        let marks = s.done_marks(&[run], &[es]).expect("marks");
        assert_eq!(marks.len(), 1);
        assert_eq!(marks[&es].done, 1);
        assert!(marks[&es].last > 0.0);
        assert!(s.done_marks(&[other], &[es]).expect("marks").is_empty());
    }

    #[test]
    fn failure_retries_then_fails() {
        let (_d, mut s, run, es) = setup();
        let job = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!(
            s.fail(&job, "me", "boom", POLICY).expect("fail"),
            FailOutcome::Retry(0.0)
        );
        let again = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!(again.id, job.id);
        assert_eq!(again.attempts, 2);
        assert_eq!(
            s.fail(&again, "me", "boom", POLICY).expect("fail"),
            FailOutcome::Failed
        );
        assert_ne!(
            s.lease("me", 60.0, &[run], &[es])
                .expect("lease")
                .expect("job")
                .id,
            job.id
        );
    }

    #[test]
    fn expired_and_dead_leases_are_reclaimed() {
        let (_d, mut s, run, es) = setup();
        let job = s
            .lease("me", -1.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        let dead = format!("{}:999999999:0", hostname());
        let other = s
            .lease(&dead, 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        let live = s
            .lease(&owner_id(), 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!(s.reclaim(POLICY).expect("reclaim"), 2);
        assert!(!s.renew(live.id, "nobody", 60.0).expect("renew"));
        let ids: Vec<i64> = (0..2)
            .map(|_| {
                s.lease("me", 60.0, &[run], &[es])
                    .expect("lease")
                    .expect("job")
                    .id
            })
            .collect();
        assert_eq!(ids, [job.id, other.id]);
    }

    /// `(state, attempts, lost_leases, error)` of a job.
    fn job_row(s: &Store, id: i64) -> (String, u32, u32, Option<String>) {
        let r =
            s.db.query_one(
                "SELECT state, attempts, lost_leases, error FROM jobs WHERE id = ?1",
                params![id],
            )
            .expect("job");
        (
            r.get(0).expect("state"),
            r.get(1).expect("attempts"),
            r.get(2).expect("lost"),
            r.get(3).expect("error"),
        )
    }

    /// Leases the first due job to an owner that is already dead and reclaims it; returns
    /// the job's id.
    fn lose_lease(s: &mut Store, run: i64, es: i64) -> i64 {
        let dead = format!("{}:999999999:0", hostname());
        let job = s
            .lease(&dead, 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!(s.reclaim(POLICY).expect("reclaim"), 1);
        job.id
    }

    #[test]
    fn lost_leases_do_not_use_up_attempts_and_the_job_is_scored_by_a_live_worker() {
        let (_d, mut s, run, es) = setup();
        let lost = POLICY.max_attempts + 2;
        let ids: Vec<i64> = (0..lost).map(|_| lose_lease(&mut s, run, es)).collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "the same job each time");
        let id = ids[0];
        let (state, attempts, lost_leases, error) = job_row(&s, id);
        assert_eq!((state.as_str(), attempts, lost_leases), ("queued", 0, lost));
        assert!(error.is_some_and(|e| e.contains("stopped without finishing")));

        let report = s.status().expect("status");
        let row = report
            .failures
            .iter()
            .find(|f| f.checkpoint == "step20-anneal")
            .expect("the job is listed with its counts");
        assert_eq!((row.attempts, row.lost_leases), (0, lost));

        let job = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!((job.id, job.attempts), (id, 1));
        let losses = encode(&crate::evalset::scores::EvalScores {
            loss: vec![f32::NAN, 1.0, 2.0],
            top1: vec![false; 3],
            top5: vec![false; 3],
        })
        .expect("encode");
        assert!(s.complete(&job, "me", &[], &losses, 1.0).expect("complete"));
        assert_eq!(job_row(&s, id), ("done".into(), 1, lost, None));
    }

    #[test]
    fn a_job_that_keeps_losing_its_lease_fails_with_that_reason() {
        let (_d, mut s, run, es) = setup();
        let id = lose_lease(&mut s, run, es);
        // A real error in between keeps its message and its attempt.
        let job = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!(job.id, id);
        assert_eq!(
            s.fail(&job, "me", "boom", POLICY).expect("fail"),
            FailOutcome::Retry(0.0)
        );
        for _ in 1..POLICY.max_lost_leases - 1 {
            assert_eq!(lose_lease(&mut s, run, es), id);
            assert_eq!(job_row(&s, id).0, "queued");
        }
        assert_eq!(
            job_row(&s, id),
            (
                "queued".into(),
                1,
                POLICY.max_lost_leases - 1,
                Some("boom".into())
            )
        );
        assert_eq!(lose_lease(&mut s, run, es), id);
        let (state, attempts, lost, error) = job_row(&s, id);
        assert_eq!(
            (state.as_str(), attempts, lost),
            ("failed", 1, POLICY.max_lost_leases)
        );
        let error = error.expect("error");
        assert!(
            error.contains(&format!("lost its lease {} times", POLICY.max_lost_leases)),
            "{error}"
        );
        assert_ne!(
            s.lease("me", 60.0, &[run], &[es])
                .expect("lease")
                .expect("job")
                .id,
            id
        );
    }

    #[test]
    fn release_does_not_count_an_attempt() {
        let (_d, mut s, run, es) = setup();
        let job = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert!(s.release(&job, "me").expect("release"));
        let again = s
            .lease("me", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        assert_eq!((again.id, again.attempts), (job.id, 1));
    }
}
