//! A worker: leases jobs one at a time, scores them on its device and commits the results.
//! A daemon runs one per configured device; they share the queue and the work after a
//! commit ([`AfterCommit`]). `filtermon worker` runs one on its own, without that work, until
//! the queue is idle ([`super::standalone`]).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::analysis::stats::aggregate::{AggregateOptions, FilterResult};
use crate::analysis::summary::summarize;
use crate::engine::checkpoint::Checkpoint;
use crate::engine::scorer::Scorer;
use crate::error::one_line;
use crate::evalset::loaded::LoadedEvalset;
use crate::monitor::alerts::Alerter;
use crate::monitor::charts::{render, ChartOptions};
use crate::monitor::paired_gaps::{self, TokenSets};
use crate::monitor::tensorboard::Appender;
use crate::store::jobs::{FailOutcome, Job, RetryPolicy};
use crate::store::losses::{encode, EncodedLosses};
use crate::store::sql::Dialect;
use crate::store::{now, Location, Store};

/// An evalset this daemon serves: its store id and config name, ready for scoring.
pub struct ServedEvalset {
    /// Store id.
    pub id: i64,
    /// Config name.
    pub name: String,
    /// The evalset with its filters, labels and documents.
    pub loaded: LoadedEvalset,
}

/// Scores one checkpoint on one evalset: per-filter results followed by the recall metrics
/// rows ([`crate::analysis::recall::RecallMetrics::results`]), and the per-token vectors.
/// `tokenizer` is the run's, from the watch config.
fn score_job(
    scorer: &mut Scorer,
    dir: &Path,
    es: &LoadedEvalset,
    tokenizer: Option<&Path>,
    aggregate: AggregateOptions,
) -> anyhow::Result<(Vec<FilterResult>, EncodedLosses)> {
    let ckpt = Checkpoint::open(dir)?;
    let (scores, _) = scorer.score_evalset(&ckpt, &es.es, tokenizer)?;
    let (mut results, recall) = summarize(es, &scores, aggregate);
    results.extend(recall.results());
    Ok((results, encode(&scores)?))
}

/// The work after a commit, shared by a daemon's workers and done under its lock: paired
/// gaps, TensorBoard scalars, alert rules and chart redraws each read everything committed so
/// far, so the worker that runs them last has seen every commit; and two workers never redraw
/// the same chart files at once, compute the same gaps twice, nor write the same scalars twice.
/// With Slurm workers, the daemon runs it as it sees their commits in the store.
pub struct AfterCommit {
    /// Alert rules, evaluated after each commit (one hook for the whole daemon).
    pub alerter: Alerter,
    /// The TensorBoard event files, appended after each commit once its paired gaps are
    /// stored (with the config's `tensorboard` key).
    pub tensorboard: Option<Appender>,
    /// Token sets by evalset id, for the paired gaps to the baseline (empty: none computed).
    pub token_sets: Arc<HashMap<i64, TokenSets>>,
    /// Bootstrap settings of the paired gaps.
    pub paired: AggregateOptions,
    /// Folder of the charts and report, redrawn as results come in.
    pub charts: PathBuf,
}

// Neither paired gaps, TensorBoard scalars, alerts nor charts may stop the daemon: failures
// are logged.
impl AfterCommit {
    /// After one or more commits: the paired gaps, then the TensorBoard scalars (which carry
    /// the gaps), then the alert rules (which read both results and gaps). Everything is read
    /// from the store, so one call covers every commit since the last.
    pub fn update(&mut self, store: &mut Store) {
        let (resamples, seed) = (self.paired.resamples, self.paired.seed);
        if let Err(e) = paired_gaps::update(store, &self.token_sets, resamples, seed) {
            tracing::error!(error = %one_line(&e), "computing paired gaps");
        }
        if let Some(appender) = &mut self.tensorboard {
            match appender.append(store) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(scalars = n, "TensorBoard scalars appended"),
                Err(e) => tracing::error!(error = %one_line(&e), "appending TensorBoard scalars"),
            }
        }
        if let Err(e) = self.alerter.evaluate(store) {
            tracing::error!(error = %one_line(&e), "evaluating alert rules");
        }
    }

    /// Redraws the charts of `evalsets` (`None`: all) and the report.
    pub fn draw_charts(&self, store: &Store, evalsets: Option<&[i64]>) {
        let started = Instant::now();
        match render(store, &self.charts, &ChartOptions::default(), evalsets) {
            Ok(index) => tracing::debug!(report = %index.display(),
                secs = started.elapsed().as_secs_f64(), "charts redrawn"),
            Err(e) => tracing::error!(error = %one_line(&e), "drawing charts"),
        }
    }
}

/// What the worker loop needs.
pub struct Worker {
    /// Name in logs: its device, numbered (`cpu#1`) where `cpu` is listed more than once.
    pub name: String,
    /// Store connection of the worker.
    pub store: Store,
    /// Database path, for the lease-renewal connection.
    pub db: Location,
    /// Lease owner id, unique to this worker.
    pub owner: String,
    /// Lease length.
    pub lease: Duration,
    /// Retry policy.
    pub policy: RetryPolicy,
    /// Run ids this daemon serves.
    pub runs: Vec<i64>,
    /// The runs' tokenizers from the watch config, by run name.
    pub tokenizers: HashMap<String, PathBuf>,
    /// Evalsets this daemon serves (shared by its workers).
    pub evalsets: Arc<Vec<ServedEvalset>>,
    /// The scorer, on this worker's device.
    pub scorer: Scorer,
    /// Bootstrap settings of the per-filter results.
    pub aggregate: AggregateOptions,
    /// Paired gaps, alerts and chart redraws after a commit, shared by a daemon's workers;
    /// None for a `filtermon worker`, whose daemon does them.
    pub after_commit: Option<Arc<Mutex<AfterCommit>>>,
    /// Whether this worker catches up at start on what was committed before a restart (one
    /// worker of a daemon does).
    pub catch_up: bool,
    /// Stop once no job has been due for this long (None: run until `stop`).
    pub idle_exit: Option<Duration>,
    /// Set on shutdown (SIGINT/SIGTERM, or another worker stopping on its own): take no new job.
    pub stop: Arc<AtomicBool>,
    /// The job being scored, for the shutdown path to re-queue.
    pub current: Arc<Mutex<Option<Job>>>,
}

/// How long an idle worker waits before looking at the queue again (jobs queued by other
/// daemons, retries coming due).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long a worker waits before trying a PostgreSQL store again after an error.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Least time between two chart redraws while a backlog is scored.
const CHART_EVERY: Duration = Duration::from_secs(10);

/// What one turn of the worker loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// No job was due; the model, if any, was dropped.
    Idle,
    /// A job ran; the evalset id when its results were committed.
    Ran(Option<i64>),
}

impl Worker {
    /// Runs until `stop` is set (or, with `idle_exit`, until no job has been due for that
    /// long); `wake` is signalled when jobs are queued.
    pub fn run(mut self, wake: &Receiver<()>) -> anyhow::Result<()> {
        let span = tracing::info_span!("worker", device = %self.name);
        let _enter = span.enter();
        if let Some(after_commit) = self.after_commit.as_ref().filter(|_| self.catch_up) {
            // What was committed before a restart (gaps and firings are stored once).
            let mut after = lock(after_commit);
            after.update(&mut self.store);
            after.draw_charts(&self.store, None);
        }
        // Charts are redrawn after a commit that empties the queue; during a backlog, after a
        // commit only once CHART_EVERY has passed since the last redraw, so that quickly scored
        // checkpoints do not wait on redraws.
        let mut stale: Vec<i64> = Vec::new();
        let mut drawn = Instant::now();
        let mut last_reclaim: Option<Instant> = None;
        let mut idle_since: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let turn = match self.turn(&mut last_reclaim) {
                Ok(turn) => turn,
                // A shared server comes back from a restart or failover (the connection is
                // opened again); a job cut off meanwhile keeps its lease until it expires and
                // is scored again. An SQLite error is the file's own, and stops the worker.
                Err(e) if self.store.dialect() == Dialect::Postgres => {
                    tracing::error!(error = %one_line(&e),
                        retry_secs = STORE_RETRY.as_secs_f64(), "store error; trying again");
                    if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(STORE_RETRY) {
                        break;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Turn::Ran(Some(evalset)) = turn {
                if self.after_commit.is_some() && !stale.contains(&evalset) {
                    stale.push(evalset);
                }
            }
            let idle = turn == Turn::Idle;
            if !stale.is_empty() && (idle || drawn.elapsed() >= CHART_EVERY) {
                self.draw_stale(&mut stale);
                drawn = Instant::now();
            }
            if !idle {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if let Some(limit) = self.idle_exit {
                if since.elapsed() >= limit {
                    tracing::info!(
                        idle_secs = limit.as_secs_f64(),
                        "no job due for the idle time; worker exits"
                    );
                    break;
                }
            }
            match wake.recv_timeout(IDLE_POLL) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if !stale.is_empty() {
            self.draw_stale(&mut stale);
        }
        Ok(())
    }

    /// Reclaims dead leases when due (every half lease), leases the next job and scores it;
    /// after a commit, runs the [`AfterCommit`] work when this worker has it. With no job due,
    /// drops the model: its checkpoint's other jobs would have been leased by now.
    pub fn turn(&mut self, last_reclaim: &mut Option<Instant>) -> anyhow::Result<Turn> {
        if last_reclaim.is_none_or(|t| t.elapsed() >= self.lease / 2) {
            self.store.reclaim(self.policy)?;
            *last_reclaim = Some(Instant::now());
        }
        let es_ids: Vec<i64> = self.evalsets.iter().map(|e| e.id).collect();
        let job = self
            .store
            .lease(&self.owner, self.lease.as_secs_f64(), &self.runs, &es_ids)?;
        let Some(job) = job else {
            self.scorer.unload();
            return Ok(Turn::Idle);
        };
        let evalset = job.evalset_id;
        if !self.run_job(job)? {
            return Ok(Turn::Ran(None));
        }
        if let Some(after_commit) = &self.after_commit {
            lock(after_commit).update(&mut self.store);
        }
        Ok(Turn::Ran(Some(evalset)))
    }

    /// Scores one job; `true` when its results were committed.
    fn run_job(&mut self, job: Job) -> anyhow::Result<bool> {
        let Some(es) = self.evalsets.iter().find(|e| e.id == job.evalset_id) else {
            anyhow::bail!(
                "leased job {} of an evalset this daemon does not serve",
                job.id
            );
        };
        set_current(&self.current, Some(job.clone()));
        let span = tracing::info_span!("job", run = %job.run, checkpoint = %job.checkpoint, evalset = %es.name);
        let _enter = span.enter();
        tracing::info!(step = job.step, attempt = job.attempts, "scoring");
        let heartbeat = Heartbeat::start(&self.db, job.id, &self.owner, self.lease);
        let started = Instant::now();
        let scorer = &mut self.scorer;
        let tokenizer = self.tokenizers.get(&job.run).map(PathBuf::as_path);
        let aggregate = self.aggregate;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            score_job(
                scorer,
                Path::new(&job.path),
                &es.loaded,
                tokenizer,
                aggregate,
            )
        }))
        .unwrap_or_else(|panic| Err(anyhow::anyhow!("scoring panicked: {}", panic_text(&panic))));
        let score_secs = started.elapsed().as_secs_f64();
        drop(heartbeat);
        let mut committed = false;
        match outcome {
            Ok((results, losses)) => {
                if self
                    .store
                    .complete(&job, &self.owner, &results, &losses, score_secs)?
                {
                    let latency = now() - job.ready_at - score_secs;
                    tracing::info!(
                        job = job.id,
                        step = job.step,
                        score_secs,
                        latency_secs = latency,
                        filters = results.len(),
                        "scored"
                    );
                    committed = true;
                } else {
                    tracing::warn!(job = job.id, "lease lost while scoring; results discarded");
                }
            }
            Err(e) => {
                // A broken checkpoint frees its memory before the next one loads.
                self.scorer.unload();
                let msg = one_line(&e);
                match self.store.fail(&job, &self.owner, &msg, self.policy)? {
                    FailOutcome::Retry(secs) => {
                        tracing::warn!(job = job.id, error = %msg, retry_in_secs = secs, "scoring failed; will retry")
                    }
                    FailOutcome::Failed => {
                        tracing::error!(job = job.id, error = %msg, attempts = job.attempts, "scoring failed for good")
                    }
                    FailOutcome::LeaseLost => {
                        tracing::warn!(job = job.id, error = %msg, "scoring failed after the lease was lost")
                    }
                }
            }
        }
        set_current(&self.current, None);
        Ok(committed)
    }

    /// Redraws the charts of the `stale` evalsets and the report, and empties `stale`.
    fn draw_stale(&self, stale: &mut Vec<i64>) {
        if let Some(after_commit) = &self.after_commit {
            lock(after_commit).draw_charts(&self.store, Some(stale));
        }
        stale.clear();
    }
}

fn set_current(current: &Mutex<Option<Job>>, job: Option<Job>) {
    // A poisoned lock only means a panic elsewhere; the slot itself is still valid.
    *current.lock().unwrap_or_else(|p| p.into_inner()) = job;
}

/// Locks the shared [`AfterCommit`].
pub(crate) fn lock(after: &Mutex<AfterCommit>) -> std::sync::MutexGuard<'_, AfterCommit> {
    // A panic while another worker held the lock leaves nothing half-written that the next
    // update would not redo: gaps, firings and charts are all recomputed from the store.
    after.lock().unwrap_or_else(|p| p.into_inner())
}

/// The message of a caught panic.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Renews a job's lease from its own thread and connection while the job runs.
struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(db: &Location, job: i64, owner: &str, lease: Duration) -> Heartbeat {
        let (tx, rx) = mpsc::channel::<()>();
        let (db, owner) = (db.clone(), owner.to_string());
        let thread = std::thread::spawn(move || {
            let mut store = match Store::open_existing(&db) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %one_line(&e), "lease renewal cannot open the db");
                    return;
                }
            };
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(lease / 4) {
                match store.renew(job, &owner, lease.as_secs_f64()) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job, "lease lost");
                        return;
                    }
                    Err(e) => tracing::warn!(job, error = %one_line(&e), "lease renewal failed"),
                }
            }
        });
        Heartbeat {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scorer::ScoreSettings;
    use crate::evalset::filter::compile_filters;
    use crate::evalset::prepare::{prepare, PrepareOptions};
    use crate::monitor::alerts::rules::AlertSettings;
    use crate::monitor::tensorboard::event_file::{own_files, read_scalars};
    use crate::store::{EvalsetRow, NewCheckpoint, RunRow};
    use candle_core::{DType, Device};

    /// An evalset prepared from a short document with the fixture tokenizer, registered in
    /// `store`.
    fn evalset(root: &Path, store: &mut Store, name: &str, window: usize) -> ServedEvalset {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let corpus = root.join(format!("corpus-{name}/prose"));
        std::fs::create_dir_all(&corpus).expect("mkdir");
        let text = std::fs::read_to_string(repo.join("data/eval/prose/01-harbor-strike.txt"))
            .expect("corpus");
        let cut: String = text.chars().take(1200).collect();
        std::fs::write(corpus.join("doc.txt"), cut).expect("write");
        let opts = PrepareOptions {
            inputs: vec![corpus],
            tokenizer: repo.join("tests/fixtures/tokenizer.json"),
            out: root.join(format!("es-{name}")),
            window,
            ..Default::default()
        };
        let es = prepare(&opts).expect("prepare").evalset;
        let id = store
            .upsert_evalset(&EvalsetRow {
                name: name.into(),
                hash: es.id().to_string(),
                tokenizer_hash: es.tokenizer_hash().to_string(),
                dir: opts.out.display().to_string(),
                tokens: es.len() as u64,
            })
            .expect("evalset row");
        let filters = compile_filters(&[], es.domains()).expect("filters");
        ServedEvalset {
            id,
            name: name.into(),
            loaded: LoadedEvalset::new(es, filters).expect("load"),
        }
    }

    #[test]
    fn the_model_serves_a_checkpoints_jobs_and_is_dropped_when_the_queue_is_empty() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = Location::Sqlite(tmp.path().join("m.db"));
        let mut store = Store::open(&db).expect("store");
        let evalsets = vec![
            evalset(tmp.path(), &mut store, "a", 64),
            evalset(tmp.path(), &mut store, "b", 32),
        ];
        let es_ids: Vec<i64> = evalsets.iter().map(|e| e.id).collect();
        let run = store
            .upsert_run(&RunRow {
                name: "r".into(),
                arch: "transformer".into(),
                dir: "/r".into(),
                baseline: None,
                tokens_per_step: 1,
            })
            .expect("run");
        let ckpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/olmo2");
        let ck = NewCheckpoint {
            name: "step1".into(),
            path: ckpt.display().to_string(),
            step: 1,
            tokens: 1,
            anneal: false,
        };
        store.add_checkpoint(run, &ck, &es_ids).expect("queue");
        let aggregate = AggregateOptions {
            resamples: 10,
            seed: 0,
            by_domain: false,
        };
        let token_sets = Arc::new(HashMap::new());
        let alerter = Alerter::new(
            AlertSettings {
                rules: Vec::new(),
                on_alert: None,
                hook_timeout: Duration::from_secs(1),
            },
            &db,
            token_sets.clone(),
            10,
            0,
        )
        .expect("alerter");
        let mut worker = Worker {
            name: "cpu".into(),
            store,
            db: db.clone(),
            owner: "test/cpu".into(),
            lease: Duration::from_secs(60),
            policy: RetryPolicy {
                max_attempts: 1,
                max_lost_leases: 20,
                backoff: 0.0,
            },
            runs: vec![run],
            tokenizers: HashMap::new(),
            evalsets: Arc::new(evalsets),
            scorer: Scorer::new(ScoreSettings {
                device: Device::Cpu,
                dtype: DType::F32,
                batch: 1,
            }),
            aggregate,
            after_commit: Some(Arc::new(Mutex::new(AfterCommit {
                alerter,
                tensorboard: Some(Appender::new(tmp.path().join("tb"), vec!["r".into()])),
                token_sets,
                paired: aggregate,
                charts: tmp.path().join("charts"),
            }))),
            catch_up: false,
            idle_exit: None,
            stop: Arc::new(AtomicBool::new(false)),
            current: Arc::new(Mutex::new(None)),
        };
        let mut reclaimed = None;
        // The checkpoint's two jobs, one per evalset, share one load.
        for es in &es_ids {
            let turn = worker.turn(&mut reclaimed).expect("turn");
            assert_eq!(turn, Turn::Ran(Some(*es)));
            assert!(
                worker.scorer.is_loaded(),
                "kept for the checkpoint's next job"
            );
        }
        assert_eq!(worker.turn(&mut reclaimed).expect("turn"), Turn::Idle);
        assert!(!worker.scorer.is_loaded(), "an idle worker holds no model");
        // Idle again: nothing to drop, nothing fails.
        assert_eq!(worker.turn(&mut reclaimed).expect("turn"), Turn::Idle);
        assert!(!worker.scorer.is_loaded());

        // Each commit's results went to the run's event file as they were committed.
        let stored = worker.store.results(None).expect("results");
        let means = stored.iter().filter(|r| r.mean.is_some()).count();
        let files = own_files(&tmp.path().join("tb/r")).expect("event files");
        assert_eq!(files.len(), 1, "one file for the daemon's start");
        let bytes = std::fs::read(&files[0]).expect("read");
        assert_eq!(read_scalars(&bytes).expect("scalars").len(), means);
    }
}
