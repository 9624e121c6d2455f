//! The watch config (TOML): types, defaults and validation.
//!
//! Every mistake is an [`InputError`](crate::error::InputError) that names the file,
//! the line (where the TOML parser knows it) and the key path, e.g.
//! `ladder.toml:12: runs[1].baseline: no run named "gdn"`. Unknown keys are errors.
//! Relative paths are resolved against the config file's folder, so a config means the
//! same thing whatever the daemon's working directory.
//!
//! The keys are documented in `watch-configs/demo.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

mod alerts;
mod executor;

pub use executor::{Executor, SlurmSettings, DEFAULT_WORKER_IDLE};

use crate::analysis::recall::RecallRow;
use crate::engine::device::DTypeArg;
use crate::error::{input_error, line_of};
use crate::evalset::filter::{filters_from_spanned, SpannedFilters};
use crate::monitor::alerts::rules::AlertSettings;
use crate::monitor::serve::ServeSettings;
use crate::store::Location;

/// A validated watch config.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The store: an SQLite file (relative to the config's folder) or a `postgres://` URL.
    pub db: Location,
    /// Where charts go.
    pub charts: PathBuf,
    /// Folder of TensorBoard event files the daemon appends each result to (one subfolder
    /// per run), if any.
    pub tensorboard: Option<PathBuf>,
    /// Scoring devices, one in-process worker each: `cpu` or `cuda:N` (`cuda` is written
    /// `cuda:0`). A GPU appears at most once; `cpu` may repeat, for several CPU workers.
    pub devices: Vec<String>,
    /// Scoring precision.
    pub dtype: DTypeArg,
    /// Windows per forward pass.
    pub batch: usize,
    /// Bootstrap resamples for the confidence intervals.
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Timing and retry policy of the daemon.
    pub daemon: DaemonSettings,
    /// Evaluation sets, each scored on every checkpoint of the runs that use it.
    pub evalsets: Vec<EvalsetConfig>,
    /// User filters as `(name, expression)`, besides the built-ins.
    pub filters: Vec<(String, String)>,
    /// Alert rules and the hook.
    pub alerts: AlertSettings,
    /// Filters (or recall rows) named before the runs as the tests of an architecture
    /// regression: their detections are marked as pre-registered, the rest as exploratory.
    pub primary: Vec<String>,
    /// Watched runs.
    pub runs: Vec<RunConfig>,
    /// The live dashboard, served by the `watch` process itself when set.
    pub serve: Option<ServeSettings>,
    /// Where the scoring runs: in-process workers, or Slurm jobs running `filtermon worker`.
    pub executor: Executor,
}

/// Timing and retry policy of `watch`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// How long a checkpoint's files must stay unchanged before it is scored.
    pub settle: Duration,
    /// Interval of the full rescan that backs up file-system events.
    pub rescan: Duration,
    /// How long the current job may run on after SIGINT/SIGTERM before it is re-queued.
    pub grace: Duration,
    /// Lease on a running job; renewed while it runs, so only a dead daemon's lease expires.
    pub lease: Duration,
    /// Attempts per job before it is marked failed.
    pub max_attempts: u32,
    /// Wait before the first retry of a failed job; doubles with each further attempt.
    pub retry: Duration,
}

/// An evaluation set: prepared already, or prepared from sources on first start.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalsetConfig {
    /// Name used in the store and in reports.
    pub name: String,
    /// The prepared evalset folder (the output folder when `prepare` is set).
    pub dir: PathBuf,
    /// How to prepare it when `dir` does not hold an evalset yet.
    pub prepare: Option<PrepareSpec>,
}

/// Inputs of a first-start `prepare`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareSpec {
    /// Document files or folders.
    pub sources: Vec<PathBuf>,
    /// `tokenizer.json`, or a checkpoint folder holding one.
    pub tokenizer: PathBuf,
    /// Tokens per window.
    pub window: usize,
}

/// Which checkpoints of a run are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreWhich {
    /// Every checkpoint.
    All,
    /// Annealed checkpoints only.
    Anneal,
}

/// How annealed checkpoints are told from stable ones.
#[derive(Debug, Clone)]
pub enum AnnealRule {
    /// Folder names matching this regex are annealed.
    Pattern(Regex),
    /// These folder names are annealed.
    Names(Vec<String>),
}

impl AnnealRule {
    /// Whether the checkpoint folder `name` holds an annealed checkpoint.
    pub fn is_anneal(&self, name: &str) -> bool {
        match self {
            AnnealRule::Pattern(re) => re.is_match(name),
            AnnealRule::Names(names) => names.iter().any(|n| n == name),
        }
    }
}

/// A watched training run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Unique name.
    pub name: String,
    /// Architecture label: transformer, hybrid, rnn or free text.
    pub arch: String,
    /// Folder holding the run's checkpoint folders (may be a symlink).
    pub dir: PathBuf,
    /// Folder names that are checkpoints; the `step` group (or the first group) is the step.
    pub checkpoints: Regex,
    /// Annealed checkpoints.
    pub anneal: AnnealRule,
    /// Which checkpoints to score.
    pub score: ScoreWhich,
    /// Tokens per optimizer step (tokens seen = step × this): from the config, or read at
    /// start from the OLMo-core experiment config.
    pub tokens_per_step: u64,
    /// Run this one is compared against.
    pub baseline: Option<String>,
    /// Folder of `step-N.ready.json` events; when set, only announced checkpoints are scored.
    pub inbox: Option<PathBuf>,
    /// `tokenizer.json` of the run, for checkpoint folders that hold none (OLMo-core's own)
    /// or to check in place of the folder's; must be the evalsets' tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// Names of the evalsets scored on this run.
    pub evalsets: Vec<String>,
}

/// Default checkpoint folder names: `stepN` and `stepN-<suffix>` (e.g. `step1000-hf`,
/// `step1000-anneal`), never OLMo-core's in-progress `stepN-tmp`.
pub const DEFAULT_CHECKPOINTS: &str = r"^(?:.*[-_])?step(?P<step>\d+)(?:[-_].*)?$";

/// Default anneal pattern: the folder name mentions annealing.
pub const DEFAULT_ANNEAL: &str = r"(?i)anneal";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    db: String,
    #[serde(default = "default_charts")]
    charts: PathBuf,
    #[serde(default)]
    tensorboard: Option<Spanned<PathBuf>>,
    #[serde(default)]
    device: Option<Spanned<String>>,
    #[serde(default)]
    devices: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default = "default_dtype")]
    dtype: RawDType,
    #[serde(default = "default_batch")]
    batch: Spanned<usize>,
    #[serde(default = "default_resamples")]
    resamples: usize,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    daemon: RawDaemon,
    evalsets: Spanned<Vec<RawEvalset>>,
    #[serde(default)]
    filters: Option<SpannedFilters>,
    #[serde(default)]
    primary: Option<Spanned<Vec<String>>>,
    runs: Spanned<Vec<RawRun>>,
    #[serde(default)]
    alerts: Vec<alerts::RawRule>,
    #[serde(default)]
    on_alert: Option<String>,
    #[serde(default = "alerts::default_hook_timeout")]
    on_alert_timeout_secs: Spanned<f64>,
    #[serde(default)]
    serve: Option<Spanned<String>>,
    #[serde(default)]
    serve_token: Option<String>,
    #[serde(default)]
    serve_private: bool,
    #[serde(default)]
    executor: Option<executor::RawExecutor>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawDType {
    F32,
    Bf16,
    F16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    #[serde(default = "default_settle")]
    settle_secs: Spanned<f64>,
    #[serde(default = "default_rescan")]
    rescan_secs: Spanned<f64>,
    #[serde(default = "default_grace")]
    grace_secs: Spanned<f64>,
    #[serde(default = "default_lease")]
    lease_secs: Spanned<f64>,
    #[serde(default = "default_attempts")]
    max_attempts: Spanned<u32>,
    #[serde(default = "default_retry")]
    retry_secs: Spanned<f64>,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            settle_secs: default_settle(),
            rescan_secs: default_rescan(),
            grace_secs: default_grace(),
            lease_secs: default_lease(),
            max_attempts: default_attempts(),
            retry_secs: default_retry(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvalset {
    name: Spanned<String>,
    dir: PathBuf,
    #[serde(default)]
    sources: Option<Spanned<Vec<PathBuf>>>,
    #[serde(default)]
    tokenizer: Option<Spanned<PathBuf>>,
    #[serde(default)]
    window: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAnneal {
    Pattern(String),
    Names(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    name: Spanned<String>,
    arch: String,
    dir: Spanned<PathBuf>,
    #[serde(default)]
    checkpoints: Option<Spanned<String>>,
    #[serde(default)]
    anneal: Option<Spanned<RawAnneal>>,
    #[serde(default = "default_score")]
    score: ScoreWhich,
    #[serde(default)]
    tokens_per_step: Option<Spanned<u64>>,
    #[serde(default)]
    olmo_config: Option<Spanned<PathBuf>>,
    #[serde(default)]
    baseline: Option<Spanned<String>>,
    #[serde(default)]
    inbox: Option<Spanned<PathBuf>>,
    #[serde(default)]
    tokenizer: Option<Spanned<PathBuf>>,
    #[serde(default)]
    evalsets: Option<Spanned<Vec<String>>>,
}

fn default_charts() -> PathBuf {
    PathBuf::from("charts")
}
fn default_dtype() -> RawDType {
    RawDType::F32
}
fn default_batch() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}
fn default_resamples() -> usize {
    1000
}
fn default_settle() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}
fn default_rescan() -> Spanned<f64> {
    Spanned::new(0..0, 60.0)
}
fn default_grace() -> Spanned<f64> {
    Spanned::new(0..0, 30.0)
}
fn default_lease() -> Spanned<f64> {
    Spanned::new(0..0, 120.0)
}
fn default_attempts() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}
fn default_retry() -> Spanned<f64> {
    Spanned::new(0..0, 60.0)
}
fn default_score() -> ScoreWhich {
    ScoreWhich::All
}

/// Turns byte offsets into `file:line: key: message` errors.
struct Errors<'a> {
    file: String,
    text: &'a str,
}

impl Errors<'_> {
    fn at(&self, span: Option<std::ops::Range<usize>>, key: &str, msg: &str) -> anyhow::Error {
        let line = span
            .filter(|s| s.end > 0)
            .map(|s| line_of(self.text, s.start));
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("{key}: ")
        };
        match line {
            Some(l) => input_error(format!("{}:{l}: {key}{msg}", self.file)),
            None => input_error(format!("{}: {key}{msg}", self.file)),
        }
    }

    fn spanned<T>(&self, v: &Spanned<T>, key: &str, msg: &str) -> anyhow::Error {
        self.at(Some(v.span()), key, msg)
    }
}

impl WatchConfig {
    /// Reads and validates a watch config.
    ///
    /// # Errors
    ///
    /// [`InputError`](crate::error::InputError)s naming the file, line and key.
    pub fn load(path: &Path) -> anyhow::Result<WatchConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| input_error(format!("{}: cannot read config: {e}", path.display())))?;
        // Absolute, so stored run and evalset folders do not depend on the working directory.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        WatchConfig::parse(&text, &path)
    }

    /// Validates config text read from `path` (used to resolve relative paths and in errors).
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<WatchConfig> {
        let errs = Errors {
            file: path.display().to_string(),
            text,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| errs.at(e.span(), "", &format!("invalid TOML: {}", e.message())))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned` fields show up as a private segment of the path.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "")
                .replace("$__serde_spanned_private_value", "");
            let key = if key == "." { String::new() } else { key };
            errs.at(e.inner().span(), &key, e.inner().message())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        validate(raw, base, &errs, path)
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn seconds(errs: &Errors, v: &Spanned<f64>, key: &str, min: f64) -> anyhow::Result<Duration> {
    let s = *v.get_ref();
    if !s.is_finite() || s < min {
        return Err(errs.spanned(v, key, &format!("must be a number of seconds ≥ {min}")));
    }
    Ok(Duration::from_secs_f64(s))
}

fn validate(
    raw: RawConfig,
    base: &Path,
    errs: &Errors,
    path: &Path,
) -> anyhow::Result<WatchConfig> {
    if *raw.batch.get_ref() == 0 {
        return Err(errs.spanned(&raw.batch, "batch", "must be at least 1"));
    }
    let devices = validate_devices(raw.device.as_ref(), raw.devices.as_ref(), errs)?;
    let executor = executor::validate(raw.executor, base, errs)?;
    let tensorboard = match &raw.tensorboard {
        Some(dir) => {
            let path = resolve(base, dir.get_ref());
            not_a_folder(&path, dir, "tensorboard", errs)?;
            Some(path)
        }
        None => None,
    };
    let d = &raw.daemon;
    let max_attempts = *d.max_attempts.get_ref();
    if max_attempts == 0 {
        return Err(errs.spanned(&d.max_attempts, "daemon.max_attempts", "must be at least 1"));
    }
    let daemon = DaemonSettings {
        settle: seconds(errs, &d.settle_secs, "daemon.settle_secs", 0.0)?,
        rescan: seconds(errs, &d.rescan_secs, "daemon.rescan_secs", 0.1)?,
        grace: seconds(errs, &d.grace_secs, "daemon.grace_secs", 0.0)?,
        lease: seconds(errs, &d.lease_secs, "daemon.lease_secs", 1.0)?,
        max_attempts,
        retry: seconds(errs, &d.retry_secs, "daemon.retry_secs", 0.0)?,
    };

    if raw.evalsets.get_ref().is_empty() {
        return Err(errs.spanned(&raw.evalsets, "evalsets", "at least one evalset is needed"));
    }
    let mut evalsets: Vec<EvalsetConfig> = Vec::new();
    for (i, e) in raw.evalsets.into_inner().into_iter().enumerate() {
        let key = |k: &str| format!("evalsets[{i}].{k}");
        let name = e.name.get_ref().clone();
        if name.is_empty() || evalsets.iter().any(|o| o.name == name) {
            return Err(errs.spanned(&e.name, &key("name"), "empty or used twice"));
        }
        let prepare = match (e.sources, e.tokenizer) {
            (None, None) => {
                if let Some(w) = &e.window {
                    return Err(errs.spanned(w, &key("window"), "only used with `sources`"));
                }
                None
            }
            (Some(s), Some(t)) => {
                if s.get_ref().is_empty() {
                    return Err(errs.spanned(&s, &key("sources"), "is empty"));
                }
                let window = match &e.window {
                    Some(w) if *w.get_ref() < 2 => {
                        return Err(errs.spanned(w, &key("window"), "must be at least 2"))
                    }
                    Some(w) => *w.get_ref(),
                    None => 2048,
                };
                Some(PrepareSpec {
                    sources: s.get_ref().iter().map(|p| resolve(base, p)).collect(),
                    tokenizer: resolve(base, t.get_ref()),
                    window,
                })
            }
            (Some(s), None) => {
                return Err(errs.spanned(&s, &key("sources"), "needs `tokenizer` too"))
            }
            (None, Some(t)) => {
                return Err(errs.spanned(&t, &key("tokenizer"), "only used with `sources`"))
            }
        };
        evalsets.push(EvalsetConfig {
            name,
            dir: resolve(base, &e.dir),
            prepare,
        });
    }

    let filters = match &raw.filters {
        Some(table) => filters_from_spanned(table, errs.text, &errs.file)?,
        None => Vec::new(),
    };

    if raw.runs.get_ref().is_empty() {
        return Err(errs.spanned(&raw.runs, "runs", "at least one run is needed"));
    }
    let raw_runs = raw.runs.into_inner();
    let names: Vec<String> = raw_runs.iter().map(|r| r.name.get_ref().clone()).collect();
    let mut runs = Vec::with_capacity(raw_runs.len());
    for (i, r) in raw_runs.into_iter().enumerate() {
        runs.push(validate_run(r, i, &names, &evalsets, base, errs)?);
    }
    let filter_names: Vec<String> = crate::evalset::filter::builtin_filters()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .chain(filters.iter().map(|(n, _)| n.clone()))
        .collect();
    let primary = match &raw.primary {
        Some(list) => {
            let known = |f: &String| filter_names.contains(f) || RecallRow::parse(f).is_some();
            if let Some(bad) = list.get_ref().iter().find(|f| !known(f)) {
                return Err(errs.spanned(
                    list,
                    "primary",
                    &format!("`{bad}` is neither a filter nor a recall row"),
                ));
            }
            list.get_ref().clone()
        }
        None => Vec::new(),
    };
    let evalset_names: Vec<String> = evalsets.iter().map(|e| e.name.clone()).collect();
    let alerts = alerts::validate(
        raw.alerts,
        raw.on_alert,
        &raw.on_alert_timeout_secs,
        &alerts::Known {
            runs: &names,
            filters: &filter_names,
            evalsets: &evalset_names,
        },
        errs,
    )?;
    let serve = match &raw.serve {
        Some(addr) => {
            let parsed = addr.get_ref().parse().map_err(|_| {
                errs.spanned(
                    addr,
                    "serve",
                    "must be an address and port, e.g. \"127.0.0.1:8080\"",
                )
            })?;
            let settings = ServeSettings::new(parsed, raw.serve_token.clone(), raw.serve_private)
                .map_err(|e| errs.spanned(addr, "serve", &e.to_string()))?;
            Some(settings)
        }
        None if raw.serve_token.is_some() || raw.serve_private => {
            return Err(errs.at(None, "serve_token", "is set but `serve` is not"));
        }
        None => None,
    };
    Ok(WatchConfig {
        path: path.to_path_buf(),
        db: match Location::parse(&raw.db) {
            Location::Sqlite(p) => Location::Sqlite(resolve(base, &p)),
            url => url,
        },
        charts: resolve(base, &raw.charts),
        tensorboard,
        devices,
        dtype: match raw.dtype {
            RawDType::F32 => DTypeArg::F32,
            RawDType::Bf16 => DTypeArg::Bf16,
            RawDType::F16 => DTypeArg::F16,
        },
        batch: raw.batch.into_inner(),
        resamples: raw.resamples,
        seed: raw.seed,
        daemon,
        evalsets,
        filters,
        alerts,
        primary,
        runs,
        serve,
        executor,
    })
}

/// The scoring devices from `device` or `devices` (default: one `cpu` worker). Only the
/// spelling is checked here: whether a GPU exists is known when the daemon opens it, and
/// `status --config` must read a GPU config on a machine without one.
fn validate_devices(
    device: Option<&Spanned<String>>,
    devices: Option<&Spanned<Vec<Spanned<String>>>>,
    errs: &Errors,
) -> anyhow::Result<Vec<String>> {
    match (device, devices) {
        (None, None) => Ok(vec!["cpu".into()]),
        (Some(d), None) => {
            Ok(vec![device_spec(d.get_ref()).ok_or_else(|| {
                errs.spanned(d, "device", DEVICE_SPELLING)
            })?])
        }
        (Some(_), Some(list)) => Err(errs.spanned(
            list,
            "devices",
            "give either `device` or `devices`, not both",
        )),
        (None, Some(list)) => {
            if list.get_ref().is_empty() {
                return Err(errs.spanned(list, "devices", "is empty"));
            }
            let mut specs: Vec<String> = Vec::with_capacity(list.get_ref().len());
            for (i, d) in list.get_ref().iter().enumerate() {
                let key = format!("devices[{i}]");
                let spec = device_spec(d.get_ref())
                    .ok_or_else(|| errs.spanned(d, &key, DEVICE_SPELLING))?;
                // Two workers on one GPU would hold two models in its memory; CPU workers
                // only share the cores, so `cpu` may be listed once per wanted worker.
                if spec != "cpu" && specs.contains(&spec) {
                    return Err(errs.spanned(
                        d,
                        &key,
                        &format!("{spec} is listed twice (one worker per GPU)"),
                    ));
                }
                specs.push(spec);
            }
            Ok(specs)
        }
    }
}

const DEVICE_SPELLING: &str = "expected cpu, cuda or cuda:N";

/// `spec` in its canonical spelling (`cpu` or `cuda:N`), or None when it names no device.
fn device_spec(spec: &str) -> Option<String> {
    match spec {
        "cpu" => Some("cpu".into()),
        "cuda" => Some("cuda:0".into()),
        s => {
            let n: usize = s.strip_prefix("cuda:")?.parse().ok()?;
            Some(format!("cuda:{n}"))
        }
    }
}

fn validate_run(
    r: RawRun,
    i: usize,
    names: &[String],
    evalsets: &[EvalsetConfig],
    base: &Path,
    errs: &Errors,
) -> anyhow::Result<RunConfig> {
    let key = |k: &str| format!("runs[{i}].{k}");
    let name = r.name.get_ref().clone();
    if name.is_empty() || names.iter().filter(|n| **n == name).count() > 1 {
        return Err(errs.spanned(&r.name, &key("name"), "empty or used twice"));
    }
    let checkpoints = match &r.checkpoints {
        None => Regex::new(DEFAULT_CHECKPOINTS)?,
        Some(s) => {
            let re = Regex::new(s.get_ref())
                .map_err(|e| errs.spanned(s, &key("checkpoints"), &format!("bad regex: {e}")))?;
            if re.captures_len() < 2 {
                return Err(errs.spanned(
                    s,
                    &key("checkpoints"),
                    "needs a capture group for the step, e.g. `^step(?P<step>\\d+)$`",
                ));
            }
            re
        }
    };
    let anneal = match r.anneal.as_ref().map(|a| (a, a.get_ref())) {
        None => AnnealRule::Pattern(Regex::new(DEFAULT_ANNEAL)?),
        Some((s, RawAnneal::Pattern(p))) => AnnealRule::Pattern(
            Regex::new(p)
                .map_err(|e| errs.spanned(s, &key("anneal"), &format!("bad regex: {e}")))?,
        ),
        Some((_, RawAnneal::Names(n))) => AnnealRule::Names(n.clone()),
    };
    let dir = resolve(base, r.dir.get_ref());
    not_a_folder(&dir, &r.dir, &key("dir"), errs)?;
    let inbox = match &r.inbox {
        Some(i) => {
            let inbox = resolve(&dir, i.get_ref());
            not_a_folder(&inbox, i, &key("inbox"), errs)?;
            Some(inbox)
        }
        None => None,
    };
    let tokens_per_step = match (&r.tokens_per_step, &r.olmo_config) {
        (Some(t), None) => *t.get_ref(),
        (None, Some(c)) => {
            let file = resolve(&dir, c.get_ref());
            olmo_tokens_per_step(&file)
                .map_err(|e| errs.spanned(c, &key("olmo_config"), &e.to_string()))?
        }
        (Some(t), Some(_)) => {
            return Err(errs.spanned(
                t,
                &key("tokens_per_step"),
                "give either `tokens_per_step` or `olmo_config`, not both",
            ))
        }
        (None, None) => {
            return Err(errs.spanned(
                &r.name,
                &name_key(i),
                "needs `tokens_per_step` or `olmo_config` (to know tokens seen)",
            ))
        }
    };
    if let Some(b) = &r.baseline {
        if !names.contains(b.get_ref()) || *b.get_ref() == name {
            return Err(errs.spanned(
                b,
                &key("baseline"),
                &format!("no other run named {:?}", b.get_ref()),
            ));
        }
    }
    let run_evalsets = match &r.evalsets {
        None => evalsets.iter().map(|e| e.name.clone()).collect(),
        Some(list) => {
            if let Some(bad) = list
                .get_ref()
                .iter()
                .find(|n| !evalsets.iter().any(|e| &e.name == *n))
            {
                return Err(errs.spanned(
                    list,
                    &key("evalsets"),
                    &format!("no evalset named {bad:?}"),
                ));
            }
            list.get_ref().clone()
        }
    };
    let tokenizer = match &r.tokenizer {
        None => None,
        Some(t) => {
            let path = resolve(base, t.get_ref());
            if !path.is_file() {
                return Err(errs.spanned(
                    t,
                    &key("tokenizer"),
                    &format!("{}: no such tokenizer.json", path.display()),
                ));
            }
            Some(path)
        }
    };
    Ok(RunConfig {
        name,
        arch: r.arch,
        inbox,
        tokenizer,
        dir,
        checkpoints,
        anneal,
        score: r.score,
        tokens_per_step,
        baseline: r.baseline.map(Spanned::into_inner),
        evalsets: run_evalsets,
    })
}

/// Refuses a path that exists but is no folder. One that does not exist yet is fine (a run
/// may not have started, and the daemon waits for it; the TensorBoard folder is created), but
/// a file there would leave a run silently unwatched, or fail every TensorBoard write.
fn not_a_folder(path: &Path, v: &Spanned<PathBuf>, key: &str, errs: &Errors) -> anyhow::Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(errs.spanned(v, key, &format!("{} is not a folder", path.display())));
    }
    Ok(())
}

fn name_key(i: usize) -> String {
    format!("runs[{i}]")
}

/// Tokens per step from an OLMo-core experiment `config.json`: `data_loader.global_batch_size`,
/// which OLMo-core counts in tokens.
pub fn olmo_tokens_per_step(file: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| input_error(format!("{}: cannot read: {e}", file.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| input_error(format!("{}: not JSON: {e}", file.display())))?;
    v.pointer("/data_loader/global_batch_size")
        .and_then(serde_json::Value::as_u64)
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            input_error(format!(
                "{}: no positive integer `data_loader.global_batch_size` (tokens per step)",
                file.display()
            ))
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid config with two runs, `b` baselined on `a`.
    pub(crate) const OK: &str = r#"
db = "mon.db"
[daemon]
settle_secs = 0.5
[[evalsets]]
name = "default"
dir = "es"
[[runs]]
name = "a"
arch = "transformer"
dir = "ckpt/a"
tokens_per_step = 1000
[[runs]]
name = "b"
arch = "hybrid"
dir = "ckpt/b"
tokens_per_step = 1000
baseline = "a"
anneal = ["step10-anneal"]
"#;

    /// The one-line input error of a config that must not parse.
    pub(crate) fn err(text: &str) -> String {
        let e = WatchConfig::parse(text, Path::new("w.toml")).expect_err("should fail");
        assert!(crate::error::is_input_error(&e));
        crate::error::one_line(&e)
    }

    #[test]
    fn parses_and_resolves() {
        let c = WatchConfig::parse(OK, Path::new("/etc/fm/w.toml")).expect("valid");
        assert_eq!(c.db, Location::Sqlite("/etc/fm/mon.db".into()));
        assert_eq!(c.runs[1].dir, Path::new("/etc/fm/ckpt/b"));
        assert_eq!(c.daemon.settle, Duration::from_millis(500));
        assert_eq!(c.daemon.rescan, Duration::from_secs(60));
        assert!(c.runs[1].anneal.is_anneal("step10-anneal"));
        assert!(!c.runs[1].anneal.is_anneal("step10"));
        assert!(c.runs[0].anneal.is_anneal("step10-Anneal"));
        assert_eq!(c.runs[0].evalsets, vec!["default".to_string()]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err(&OK.replace(
            "tokens_per_step = 1000\nbaseline",
            "tokens_per_stp = 1\nbaseline",
        ));
        assert!(
            e.starts_with("w.toml:17: runs[1].tokens_per_stp: unknown field"),
            "{e}"
        );
        assert!(e.contains("tokens_per_stp"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = err(&OK.replace("settle_secs = 0.5", "settle_secs = \"soon\""));
        assert!(e.starts_with("w.toml:4: daemon.settle_secs"), "{e}");
    }

    #[test]
    fn bad_baseline() {
        let e = err(&OK.replace("baseline = \"a\"", "baseline = \"zz\""));
        assert!(
            e.starts_with("w.toml:18: runs[1].baseline: no other run"),
            "{e}"
        );
    }

    #[test]
    fn devices_default_single_and_list() {
        let parse = |text: &str| {
            WatchConfig::parse(text, Path::new("w.toml"))
                .expect("valid")
                .devices
        };
        assert_eq!(parse(OK), ["cpu"]);
        assert_eq!(parse(&format!("device = \"cuda\"\n{OK}")), ["cuda:0"]);
        assert_eq!(
            parse(&format!("devices = [\"cuda:1\", \"cuda:0\"]\n{OK}")),
            ["cuda:1", "cuda:0"]
        );
        // CPU workers share no memory budget, so `cpu` may be listed once per worker.
        assert_eq!(
            parse(&format!("devices = [\"cpu\", \"cpu\"]\n{OK}")),
            ["cpu", "cpu"]
        );
    }

    #[test]
    fn device_and_devices_together_or_empty_are_refused() {
        let e = err(&format!("device = \"cpu\"\ndevices = [\"cuda:0\"]\n{OK}"));
        assert!(
            e.starts_with("w.toml:2: devices: give either `device` or `devices`, not both"),
            "{e}"
        );
        let e = err(&format!("\ndevices = []\n{OK}"));
        assert!(e.starts_with("w.toml:2: devices: is empty"), "{e}");
    }

    #[test]
    fn bad_or_duplicate_devices_are_refused() {
        let e = err(&format!("devices = [\"cuda:0\", \"cuda\"]\n{OK}"));
        assert!(
            e.starts_with("w.toml:1: devices[1]: cuda:0 is listed twice"),
            "{e}"
        );
        let e = err(&format!("devices = [\"cpu\", \"gpu1\"]\n{OK}"));
        assert!(
            e.starts_with("w.toml:1: devices[1]: expected cpu, cuda or cuda:N"),
            "{e}"
        );
        let e = err(&format!("device = \"cuda:x\"\n{OK}"));
        assert!(
            e.starts_with("w.toml:1: device: expected cpu, cuda or cuda:N"),
            "{e}"
        );
    }

    #[test]
    fn a_device_that_is_no_device_names_file_line_and_key() {
        let e = err(&format!("device = \"tpu\"\n{OK}"));
        assert!(
            e.starts_with("w.toml:1: device: expected cpu, cuda or cuda:N"),
            "{e}"
        );
        let e = err(&format!("\ndevices = [\"cpu\", \"tpu\"]\n{OK}"));
        assert!(
            e.starts_with("w.toml:2: devices[1]: expected cpu, cuda or cuda:N"),
            "{e}"
        );
    }

    #[test]
    fn primary_filters_must_be_filters_or_recall_rows() {
        let ok = WatchConfig::parse(
            &format!("primary = [\"copy5\", \"recall.gain@64\"]\n{OK}"),
            Path::new("w.toml"),
        )
        .expect("config");
        assert_eq!(ok.primary, ["copy5", "recall.gain@64"]);
        let e = err(&format!("\nprimary = [\"copy5\", \"copy6\"]\n{OK}"));
        assert!(
            e.starts_with("w.toml:2: primary: `copy6` is neither a filter nor a recall row"),
            "{e}"
        );
    }

    #[test]
    fn filter_errors_name_file_line_and_key() {
        let with_filters = |filters: &str| format!("{OK}[filters]\nok = \"content\"\n{filters}\n");
        let line = |text: &str| 1 + text.lines().position(|l| l.starts_with("x =")).expect("x");
        for (filter, want) in [
            (
                "x = \"colour == 3\"",
                "filters.x: filter 'colour == 3': column 1: unknown label 'colour'",
            ),
            (
                "x = 3",
                "filters.x: expected a string expression, found integer",
            ),
            (
                "x = \"\"\"\ncontent &\n\"\"\"",
                "filters.x: filter 'content &",
            ),
        ] {
            let text = with_filters(filter);
            let e = err(&text);
            let want = format!("w.toml:{}: {want}", line(&text));
            assert!(e.starts_with(&want), "{e}\nwant: {want}");
        }
        let e = err(&format!("{OK}[filters]\ncopy5 = \"content\"\n"));
        assert!(
            e.starts_with("w.toml:21: filters.copy5: `copy5` is a built-in filter"),
            "{e}"
        );
        let e = err(&format!("filters = 3\n{OK}"));
        assert!(e.starts_with("w.toml:1: filters: invalid type"), "{e}");
    }

    #[test]
    fn a_run_dir_or_inbox_that_is_a_file_is_refused_and_a_missing_one_allowed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = tmp.path().join("w.toml");
        // Nothing at `ckpt/a` and `ckpt/b` yet: the runs may not have started.
        let c = WatchConfig::parse(OK, &cfg).expect("valid");
        assert!(!c.runs[0].dir.exists());

        std::fs::create_dir(tmp.path().join("ckpt")).expect("mkdir");
        std::fs::write(tmp.path().join("ckpt/a"), "").expect("write");
        let e = WatchConfig::parse(OK, &cfg).expect_err("a file is no run folder");
        assert!(crate::error::is_input_error(&e));
        let e = crate::error::one_line(&e);
        let want = format!(
            "{}:11: runs[0].dir: {} is not a folder",
            cfg.display(),
            tmp.path().join("ckpt/a").display()
        );
        assert_eq!(e, want);

        std::fs::create_dir_all(tmp.path().join("ckpt/b")).expect("mkdir");
        std::fs::write(tmp.path().join("ckpt/b/inbox"), "").expect("write");
        let text = OK
            .replace("dir = \"ckpt/a\"", "dir = \"ckpt/c\"")
            .replace("baseline = \"a\"", "baseline = \"a\"\ninbox = \"inbox\"");
        let e = WatchConfig::parse(&text, &cfg).expect_err("a file is no inbox");
        let e = crate::error::one_line(&e);
        assert!(
            e.starts_with(&format!("{}:19: runs[1].inbox: ", cfg.display()))
                && e.ends_with("ckpt/b/inbox is not a folder"),
            "{e}"
        );
    }

    #[test]
    fn the_tensorboard_folder_is_resolved_and_a_file_there_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = tmp.path().join("w.toml");
        let text = format!("tensorboard = \"tb\"\n{OK}");
        let c = WatchConfig::parse(&text, &cfg).expect("valid");
        assert_eq!(c.tensorboard, Some(tmp.path().join("tb")));
        assert_eq!(
            WatchConfig::parse(OK, &cfg).expect("valid").tensorboard,
            None
        );

        std::fs::write(tmp.path().join("tb"), "").expect("write");
        let e = WatchConfig::parse(&text, &cfg).expect_err("a file is no folder");
        assert!(crate::error::is_input_error(&e));
        let want = format!(
            "{}:1: tensorboard: {} is not a folder",
            cfg.display(),
            tmp.path().join("tb").display()
        );
        assert_eq!(crate::error::one_line(&e), want);
    }

    #[test]
    fn default_checkpoint_names() {
        let re = Regex::new(DEFAULT_CHECKPOINTS).expect("regex");
        for ok in [
            "step10",
            "step10-hf",
            "step10-anneal",
            "stage1-step10-tokens4B",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for bad in ["steps", "step", "foo", "mystep10"] {
            assert!(!re.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn missing_tokens_and_bad_regex() {
        let e = err(&OK.replace("tokens_per_step = 1000\nbaseline", "baseline"));
        assert!(e.contains("runs[1]: needs `tokens_per_step`"), "{e}");
        let e = err(&OK.replace("anneal = [\"step10-anneal\"]", "anneal = \"(\""));
        assert!(e.starts_with("w.toml:19: runs[1].anneal: bad regex"), "{e}");
    }

    #[test]
    fn shipped_examples_are_valid() {
        for (name, text) in [
            (
                "demo.toml",
                include_str!("../../../watch-configs/demo.toml"),
            ),
            (
                "olmo-1b-ladder.toml",
                include_str!("../../../watch-configs/olmo-1b-ladder.toml"),
            ),
            (
                "slurm-postgres.toml",
                include_str!("../../../watch-configs/slurm-postgres.toml"),
            ),
        ] {
            let c = WatchConfig::parse(text, &Path::new("watch-configs").join(name))
                .unwrap_or_else(|e| panic!("{name}: {}", crate::error::one_line(&e)));
            assert!(!c.runs.is_empty() && !c.filters.is_empty());
        }
    }

    #[test]
    fn olmo_config_tokens() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"data_loader": {"global_batch_size": 4194304}}"#,
        )
        .expect("write");
        let text = OK.replace(
            "dir = \"ckpt/a\"\ntokens_per_step = 1000",
            &format!("dir = {:?}\nolmo_config = \"config.json\"", dir.path()),
        );
        let c = WatchConfig::parse(&text, Path::new("w.toml")).expect("valid");
        assert_eq!(c.runs[0].tokens_per_step, 4194304);
    }
}
