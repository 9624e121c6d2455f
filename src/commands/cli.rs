//! Command-line interface: the clap types. `main.rs` parses and dispatches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::device::DTypeArg;
use crate::store::Location;

/// filtermon: filtered-loss monitor for language-model pretraining checkpoints.
#[derive(Debug, Parser)]
#[command(name = "filtermon", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn documents into a labeled, immutable evalset.
    Prepare(PrepareArgs),
    /// Build a planted-repeat probe evalset: random tokens with one span planted twice per
    /// window at a controlled gap, to measure retrieval free of language statistics.
    Probe(ProbeArgs),
    /// Score a checkpoint on documents or an evalset: per-token NLL, top-1 and top-5.
    Score(ScoreArgs),
    /// Paired token-level comparison of two checkpoints on an evalset.
    Compare(CompareArgs),
    /// Measure scoring throughput on random-weight models.
    Bench(BenchArgs),
    /// Check per-token NLL against the transformers reference in folders holding a
    /// `reference.json` (the shipped fixtures), on this device and dtype.
    Parity(ParityArgs),
    /// Train or evaluate filtermon's part-of-speech tagger.
    #[command(subcommand)]
    Tagger(crate::evalset::tagger::cli::TaggerCommand),
    /// Tag stdin: `word/UPOS` pairs, one output line per input line.
    Tag(crate::evalset::tagger::cli::TagArgs),
    /// Watch runs and score every ready checkpoint once, keeping the curves in SQLite.
    Watch(WatchArgs),
    /// Score queued jobs of a watch config on its first device until the queue is idle: what
    /// the Slurm jobs of `watch` run.
    Worker(WorkerArgs),
    /// Runs, checkpoints by state, latest results and failures in a store.
    Status(StatusArgs),
    /// One row per (run, checkpoint, evalset, filter) of a store, as CSV or JSONL; or every
    /// result's mean and paired gap as TensorBoard scalars.
    Export(ExportArgs),
    /// Draw every curve and gap chart (PNG and SVG) and the HTML report from a store.
    Chart(ChartArgs),
    /// List the alerts a store holds, or acknowledge one.
    Alerts(AlertsArgs),
    /// Serve the live dashboard, JSON API and Prometheus metrics of a store.
    Serve(ServeArgs),
    /// Copy an SQLite store whole into an empty store (a team's PostgreSQL database) and
    /// check every table's row count.
    Migrate(MigrateArgs),
    /// Train four tiny models (transformer, hybrid, pure GDN, and the transformer with an
    /// 8-token attention window as a planted regression) on CPU while the watch daemon scores
    /// their checkpoints live; prints the annealed filtered losses and the detection table.
    Demo(DemoArgs),
}

/// `filtermon chart`.
#[derive(Debug, Args)]
pub struct ChartArgs {
    /// The store: an SQLite file or a `postgres://` URL.
    #[arg(long)]
    pub db: Location,
    /// Folder for the charts and index.html (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// What the x axis shows.
    #[arg(long, value_enum, default_value_t = crate::monitor::charts::XAxis::Tokens)]
    pub x: crate::monitor::charts::XAxis,
    /// Logarithmic x axis.
    #[arg(long)]
    pub log_x: bool,
}

/// `filtermon alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// The store: an SQLite file or a `postgres://` URL.
    #[arg(long)]
    pub db: Location,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Acknowledge the alert with this id (it stays listed, marked acknowledged).
    #[arg(long, value_name = "ID")]
    pub ack: Option<i64>,
}

/// `filtermon demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder: corpus, tokenizer, evalset, runs, watch.toml, the db and charts. Must be
    /// absent, empty, or an earlier demo folder (with --force).
    #[arg(long, default_value = "filtermon-demo")]
    pub out: PathBuf,
    /// A smaller corpus, model and schedule (seconds in a release build): a smoke test of the
    /// pipeline.
    #[arg(long)]
    pub quick: bool,
    /// Replace an earlier demo in --out (only the demo's own files are removed).
    #[arg(long)]
    pub force: bool,
    /// Also serve the live dashboard at this address while the demo runs (and print its
    /// URL), e.g. `--serve 127.0.0.1:8080`.
    #[arg(long, num_args = 0..=1, default_missing_value = crate::monitor::serve::DEFAULT_ADDR)]
    pub serve: Option<std::net::SocketAddr>,
}

/// `filtermon serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store: an SQLite file or a `postgres://` URL (read-only but for acknowledging
    /// alerts; safe beside `watch`).
    #[arg(long)]
    pub db: Location,
    /// Address to listen on. Anything but loopback needs --token.
    #[arg(long, default_value = crate::monitor::serve::DEFAULT_ADDR)]
    pub addr: std::net::SocketAddr,
    /// Token for acknowledging alerts (and, with --private, for reading): sent as
    /// `Authorization: Bearer TOKEN`, or entered once in the page.
    #[arg(long, env = "FILTERMON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Require the token for reading too.
    #[arg(long)]
    pub private: bool,
}

/// `filtermon watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch config (TOML; see watch-configs/).
    #[arg(long)]
    pub config: PathBuf,
}

/// `filtermon migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The SQLite store to copy (migrated to this filtermon's schema first).
    #[arg(long)]
    pub from: Location,
    /// The empty store to copy into: a `postgres://` URL (or an SQLite file).
    #[arg(long)]
    pub to: Location,
}

/// `filtermon worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Watch config (TOML; see watch-configs/).
    #[arg(long)]
    pub config: PathBuf,
    /// Exit after this many seconds with no job due (default: the config's
    /// `executor.worker_idle_secs`, else 120).
    #[arg(long, value_name = "N")]
    pub idle_secs: Option<f64>,
}

/// `filtermon status`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "db"])))]
pub struct StatusArgs {
    /// Watch config whose `db` to read.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The store: an SQLite file or a `postgres://` URL.
    #[arg(long)]
    pub db: Option<Location>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// List every recall row (COPY-5 by copy distance, copy-n), not only the retrieval gains and
    /// the COPY-5 miss rate; `--json` always has them all.
    #[arg(long)]
    pub recall: bool,
    /// Print the detection table instead: each run's first sustained detection of a regression
    /// against its baseline per evalset, filter and kind of checkpoint, sorted by lead over
    /// `all` (with `--json`, the detections as a JSON array).
    #[arg(long)]
    pub detect: bool,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// TensorBoard event files under --out, one folder per run (annealed checkpoints in its
    /// `anneal/` subfolder).
    Tensorboard,
}

/// `filtermon export`.
#[derive(Debug, Args)]
#[command(after_help = "\
With --format tensorboard, each run gets DIR/<run>/events.out.tfevents.<secs>.<host>.filtermon
(its annealed checkpoints DIR/<run>/anneal/…), with the scalar filtermon/<evalset>/<filter> =
the mean NLL and, where the run has a baseline checkpoint of the same kind at the same tokens,
filtermon/<evalset>/<filter>/gap = the paired gap (run − baseline); results without a mean are
skipped. Each point's wall time is when it was scored. Open with: tensorboard --logdir DIR")]
pub struct ExportArgs {
    /// The store: an SQLite file or a `postgres://` URL.
    #[arg(long)]
    pub db: Location,
    /// Output format: csv and jsonl are written to stdout, tensorboard to --out.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Folder of the TensorBoard event files (created if missing; needed with
    /// `--format tensorboard`, refused otherwise).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The TensorBoard step: tokens seen (default) or the training step.
    #[arg(long, value_enum)]
    pub x: Option<crate::monitor::charts::XAxis>,
    /// Only this run.
    #[arg(long)]
    pub run: Option<String>,
    /// Export the detection table (each run's first sustained detection of a regression per
    /// evalset, filter and kind of checkpoint, and its lead over `all`) instead of the results.
    #[arg(long)]
    pub detect: bool,
}

/// How a model runs: shared by the commands that score.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Precision of weights and activations.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// `cpu`, or `cuda:N` (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

/// `filtermon prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Corpus files (.jsonl, .jsonl.gz, .jsonl.zst, .txt) or folders of them.
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// `tokenizer.json`, or a checkpoint folder holding one.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Most tokens per window; a window never spans two documents.
    #[arg(long, default_value_t = 2048)]
    pub window: usize,
    /// Domain of plain-text files and of JSONL lines without one (default: the folder name).
    #[arg(long)]
    pub domain: Option<String>,
    /// JSONL field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// JSONL field holding the document id.
    #[arg(long, default_value = "id")]
    pub id_field: String,
    /// JSONL field holding the domain.
    #[arg(long, default_value = "domain")]
    pub domain_field: String,
    /// Skip malformed lines (counted and reported) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// TOML file of extra filters (`[filters]` name = "expression") for the report.
    #[arg(long)]
    pub filters: Option<PathBuf>,
}

/// `filtermon probe`.
#[derive(Debug, Args)]
#[command(after_help = "\
Window k plants its span at gap GAPS[k mod len(GAPS)]: the first copy starts at a random
position p, the second at p + gap (gap = distance between the copies' first tokens; it must be
at least --span and gap + span at most --window). The rest of the window is random tokens.
The output folder is an evalset like prepare's (score --evalset, watch and compare take it);
its tokens carry the labels probe_gap, probe_occurrence (first|second|none) and probe_offset,
and score --evalset reports the retrieval gain per gap from it.")]
pub struct ProbeArgs {
    /// `tokenizer.json`, or a checkpoint folder holding one.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Tokens per planted span.
    #[arg(long, default_value_t = 32)]
    pub span: usize,
    /// Gaps (first-copy start to second-copy start, in tokens), comma-separated.
    #[arg(long, default_value = "64,128,256,512,1024,1792")]
    pub gaps: String,
    /// Windows in all; they cycle through the gaps.
    #[arg(long, default_value_t = crate::evalset::probe::DEFAULT_WINDOWS)]
    pub windows: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 2048)]
    pub window: usize,
    /// Seed of the random tokens and span positions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw tokens from this evalset's unigram distribution (it must use the same tokenizer)
    /// instead of uniformly over the vocabulary. Special and added tokens are never drawn.
    #[arg(long, value_name = "EVALSET")]
    pub unigram: Option<PathBuf>,
}

/// `filtermon score`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "evalset"])))]
pub struct ScoreArgs {
    /// Checkpoint folder: Hugging Face (config.json, safetensors, tokenizer.json) or an
    /// OLMo-core `stepN` folder.
    pub checkpoint: PathBuf,
    /// `tokenizer.json` to use when the folder holds none (OLMo-core folders never do).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Documents: JSONL with a `text` field and optional `id` and `domain`.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// A prepared evalset folder: prints per-filter results with confidence intervals.
    #[arg(long)]
    pub evalset: Option<PathBuf>,
    /// Where to write one JSON object per scored token (required with --input).
    #[arg(long)]
    pub token_losses: Option<PathBuf>,
    /// Most tokens per window with --input; a window never spans two documents.
    #[arg(long, default_value_t = 2048)]
    pub window: usize,
    /// Precision, device and batch.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// TOML file of extra filters (`[filters]` name = "expression").
    #[arg(long)]
    pub filters: Option<PathBuf>,
    /// Also report every domain × filter.
    #[arg(long)]
    pub by_domain: bool,
    /// Print the per-filter results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Architectures the benchmark builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchArch {
    /// Olmo 3 transformer.
    Transformer,
    /// 3:1 GDN : attention hybrid.
    Hybrid,
    /// GDN only.
    Gdn,
    /// All three twins.
    All,
}

/// `filtermon bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which twin(s) to run.
    #[arg(long, value_enum, default_value_t = BenchArch::All)]
    pub arch: BenchArch,
    /// Decoder layers.
    #[arg(long, default_value_t = 12)]
    pub layers: usize,
    /// Residual width.
    #[arg(long, default_value_t = 768)]
    pub hidden: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 50_000)]
    pub vocab: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 1024)]
    pub window: usize,
    /// Windows scored (after one warm-up batch).
    #[arg(long, default_value_t = 4)]
    pub windows: usize,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Precision.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Python interpreter with torch and transformers: after each twin, run
    /// `scripts/bench_torch.py` on the same shape, threads, windows and dtype, and report
    /// filtermon's throughput as a ratio of transformers'.
    #[arg(long, value_name = "PYTHON")]
    pub torch: Option<PathBuf>,
    /// The reference script for `--torch`.
    #[arg(long, value_name = "FILE", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_torch.py"))]
    pub torch_script: PathBuf,
    /// Instead of scoring: time loading these checkpoint folders (e.g. an OLMo-core step folder
    /// and its Hugging Face conversion), each `--repeats` times, and compare with the first.
    #[arg(long, num_args = 1..)]
    pub load: Vec<PathBuf>,
    /// Loads per folder with `--load` (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Also measure the machine's matrix-product peak in the same run: the GFLOP/s of one
    /// 2048 × 2048 × 2048 product in the same dtype, device and threads; each twin then shows
    /// its own GFLOP/s (FLOPs counted from its shape) and its share of that peak.
    #[arg(long)]
    pub peak: bool,
}

/// `filtermon parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// Checkpoint folders, each with a `reference.json` (e.g. `tests/fixtures/hf/*`).
    #[arg(required = true)]
    pub fixtures: Vec<PathBuf>,
    /// Precision; compared with the reference's forward pass in the same dtype.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Largest per-token |ΔNLL| that passes (default 1e-4 in f32, 0.05 in bf16).
    #[arg(long)]
    pub tolerance: Option<f32>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which tags `--derive-filter` picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TagLevel {
    /// Universal POS tags.
    Upos,
    /// Penn Treebank tags.
    Tag,
}

/// `filtermon compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Checkpoint A (the baseline: gaps are loss A − loss B).
    #[arg(required_unless_present = "db")]
    pub checkpoint_a: Option<PathBuf>,
    /// Checkpoint B.
    #[arg(required_unless_present = "db")]
    pub checkpoint_b: Option<PathBuf>,
    /// A prepared evalset folder, built with the checkpoints' tokenizer (with --db: which of
    /// the stored evalsets, when the checkpoints were scored on several).
    #[arg(long, required_unless_present = "db")]
    pub evalset: Option<PathBuf>,
    /// Compare results already in this store instead of scoring (with --a and --b).
    #[arg(long, requires_all = ["a", "b"], conflicts_with_all = ["checkpoint_a", "checkpoint_b"])]
    pub db: Option<Location>,
    /// `tokenizer.json` for checkpoint folders that hold none (OLMo-core `stepN` folders).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// With --db: A as RUN@STEP or RUN@CHECKPOINT (e.g. transformer@1000, hybrid@step1000-anneal).
    #[arg(long, requires = "db")]
    pub a: Option<String>,
    /// With --db: B as RUN@STEP or RUN@CHECKPOINT.
    #[arg(long, requires = "db")]
    pub b: Option<String>,
    /// Folder for metrics.json, comparison_plots.png, token_category_map.csv and
    /// labeled_dataset.jsonl (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Name of A in reports (default: its folder name).
    #[arg(long)]
    pub a_name: Option<String>,
    /// Name of B in reports (default: its folder name).
    #[arg(long)]
    pub b_name: Option<String>,
    /// Write `derived_filters.toml` in --out: the K tags with the largest gap in B's favour
    /// (interval above zero), intersected with `repeat_len == 0`.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    pub derive_filter: Option<u16>,
    /// Tags that --derive-filter picks from.
    #[arg(long, value_enum, default_value_t = TagLevel::Upos)]
    pub derive_level: TagLevel,
    /// TOML file of extra filters (`[filters]` name = "expression") reported as categories.
    #[arg(long)]
    pub filters: Option<PathBuf>,
    /// Bootstrap resamples for the gap intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Precision, device and batch.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}
