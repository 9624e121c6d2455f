//! The demo's monitor: a watch config written like a user's, and the real daemon running on it
//! in a thread of this process while training goes on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::ProgressBar;

use super::folder::{CHARTS, CONFIG, CORPUS, DB, EVALSET, PROBE, RUNS, TOKENIZER};
use crate::monitor::config::WatchConfig;
use crate::store::report::StateCounts;
use crate::store::Store;

/// The name of the demo's evalset in the config and the store.
pub const EVALSET_NAME: &str = "demo";
/// The name of the probe evalset.
pub const PROBE_NAME: &str = "probe";

/// What the config needs to know about the runs and their data.
#[derive(Debug, Clone)]
pub struct ConfigParams<'a> {
    /// Run names, the baseline first.
    pub runs: &'a [(&'a str, &'a str)],
    /// Tokens per optimizer step of every run.
    pub tokens_per_step: usize,
    /// Evalset window (the training context).
    pub window: usize,
    /// Bootstrap resamples.
    pub resamples: usize,
}

/// Writes `out/watch.toml` and loads it with the normal loader.
pub fn write_config(out: &Path, p: &ConfigParams) -> anyhow::Result<WatchConfig> {
    let mut text = format!(
        r#"# Written by `filtermon demo`: the demo runs, watched as any runs are. Watch them
# again with `filtermon watch --config <this file>` (keys: watch-configs/demo.toml).
db = "{DB}"
charts = "{CHARTS}"
device = "cpu"
dtype = "f32"
batch = 4
resamples = {resamples}
# Named before the runs as the test of an architecture regression in copying; detections on
# the other filters are exploratory (see `filtermon status --detect`).
primary = ["{primary}"]

[daemon]
# Checkpoints appear by renaming a finished `stepN-tmp`, so a short settle is enough.
settle_secs = 0.5
rescan_secs = 2
grace_secs = 10
lease_secs = 60
max_attempts = 2
retry_secs = 1

[[evalsets]]
name = "{EVALSET_NAME}"
dir = "{EVALSET}"
sources = ["{CORPUS}/eval.jsonl"]
tokenizer = "{TOKENIZER}"
window = {window}

# Random tokens with a span planted twice: retrieval without language statistics.
[[evalsets]]
name = "{PROBE_NAME}"
dir = "{PROBE}"

# The study's hybrid edge is largest on adjectives and adverbs that are not copies.
[filters]
adj_adv_nocopy = "upos in {{ADJ, ADV}} & repeat_len == 0"

# Alerts, as a user would set them: a run falling behind on copying, a gap to the
# transformer changing sign, a filtered loss rising between annealed checkpoints, all on the
# text (a model that learns text grows less sure of the probe's random tokens), and the
# probe's retrieval dropping.
[[alerts]]
name = "copy5-gap"
rule = "gap"
max_gap = 0.1
filters = ["copy5"]
evalsets = ["{EVALSET_NAME}"]

[[alerts]]
name = "gap-sign"
rule = "sign_flip"
filters = ["all", "content_nocopy", "copy5"]
evalsets = ["{EVALSET_NAME}"]

[[alerts]]
name = "annealed-rise"
rule = "rise"
min_delta = 0.02
evalsets = ["{EVALSET_NAME}"]

[[alerts]]
name = "retrieval"
rule = "retrieval_drop"
"#,
        resamples = p.resamples,
        window = p.window,
        primary = super::PRIMARY,
    );
    let baseline = p.runs.first().map(|r| r.0);
    for &(name, arch) in p.runs {
        text += &format!(
            "\n[[runs]]\nname = \"{name}\"\narch = \"{arch}\"\ndir = \"{RUNS}/{name}\"\n\
             tokens_per_step = {}\n",
            p.tokens_per_step
        );
        if let Some(b) = baseline.filter(|b| *b != name) {
            text += &format!("baseline = \"{b}\"\n");
        }
    }
    let path = out.join(CONFIG);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    WatchConfig::load(&path)
}

/// How often the store is read for the scoring bar.
const POLL: Duration = Duration::from_millis(500);

/// The daemon thread, a store connection to follow its progress, and the scoring bar.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    store: Store,
    bar: ProgressBar,
    last_poll: Option<Instant>,
    last: StateCounts,
}

impl Monitor {
    /// Starts the daemon on `config`. The store is created here first, so that it can be
    /// followed from the first poll on.
    pub fn start(config: WatchConfig, bar: ProgressBar) -> anyhow::Result<Self> {
        let store = Store::open(&config.db)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("daemon".into())
            .spawn(move || crate::monitor::daemon::run_until(&config, flag))
            .context("starting the monitor thread")?;
        Ok(Self {
            stop,
            thread: Some(thread),
            store,
            bar,
            last_poll: None,
            last: StateCounts::default(),
        })
    }

    /// The scoring state, read from the store at most twice a second (else the last one),
    /// with the bar updated to `written` checkpoints. Fails when the daemon has stopped.
    pub fn poll(&mut self, written: usize) -> anyhow::Result<StateCounts> {
        self.bar.set_length(written as u64);
        if self.last_poll.is_some_and(|t| t.elapsed() < POLL) {
            return Ok(self.last.clone());
        }
        self.last_poll = Some(Instant::now());
        if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            self.join()?;
            anyhow::bail!("the monitor stopped before every checkpoint was scored");
        }
        let mut s = StateCounts::default();
        for run in self.store.status()?.runs {
            s += run.checkpoints;
        }
        self.bar.set_position(s.finished());
        let mut msg = format!("{} scoring, {} queued", s.running, s.queued);
        if s.failed > 0 {
            msg += &format!(", {} FAILED", s.failed);
        }
        self.bar.set_message(msg);
        self.last = s.clone();
        Ok(s)
    }

    /// Waits until all `written` checkpoints are scored or failed.
    pub fn wait_for(&mut self, written: usize) -> anyhow::Result<StateCounts> {
        loop {
            let s = self.poll(written)?;
            if s.finished() >= written as u64 {
                self.bar.finish();
                return Ok(s);
            }
            std::thread::sleep(POLL / 4);
        }
    }

    /// The store, for the summary.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops the daemon as a signal would, and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.context("the monitor"),
            Some(Err(_)) => anyhow::bail!("the monitor thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Monitor {
    /// On an early return (training failed), the daemon still shuts down cleanly.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.join() {
            tracing::warn!(error = %crate::error::one_line(&e), "monitor shutdown");
        }
    }
}
