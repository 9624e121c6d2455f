//! `filtermon demo`: four tiny pretraining runs — an Olmo 3 transformer, a 3:1 hybrid, a
//! pure Gated DeltaNet model and a planted regression (the transformer with an 8-token
//! attention window) — trained on CPU with a WSD schedule while the real `watch` daemon, on a
//! watch config written like a user's, scores their checkpoints as they appear.
//!
//! Everything comes from [`crate::evalset::corpus_gen`] (no download) and lands in one folder
//! (see [`folder`]). Training ([`crate::engine::train`]) and scoring share nothing but the checkpoint
//! folders on disk and the store the summary is read from.

pub mod folder;
pub mod monitor;
pub mod summary;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::analysis::detection::{table, Detection, Lead};
use crate::analysis::recall::RecallRow;
use crate::analysis::stats::MIN_STABLE_TOKENS;
use crate::engine::model::config::Config;
use crate::engine::model::twins::{self, Twin, TwinShape};
use crate::engine::train::optim::AdamWConfig;
use crate::engine::train::schedule::Schedule;
use crate::engine::train::{bpe, Event, RunOutput, TrainConfig, Trainer};
use crate::evalset::corpus_gen::{Corpus, CorpusConfig, RepeatConfig};
use crate::evalset::filter::{builtin_filters, compile_filters};
use crate::evalset::probe::{probe, ProbeOptions, ProbeSpec};
use crate::monitor::config::WatchConfig;
use crate::monitor::serve::{ServeSettings, Server};
use monitor::{ConfigParams, Monitor, EVALSET_NAME, PROBE_NAME};

/// Sizes and schedule of a demo.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `quick` or `full`; recorded in the folder's marker.
    pub name: &'static str,
    /// The generated corpus; its eval split becomes the evalset.
    pub corpus: CorpusConfig,
    /// BPE vocabulary (the models' embedding rows).
    pub vocab_size: usize,
    /// Model sizes shared by the runs.
    pub shape: TwinShape,
    /// Batch, context, schedule and optimizer shared by the runs.
    pub train: TrainConfig,
    /// Bootstrap resamples of the monitor's confidence intervals.
    pub resamples: usize,
    /// The planted-repeat probe (its window is the training context).
    pub probe: ProbeSpec,
}

impl Plan {
    /// About 1.4M parameters per run at a 2048-token vocabulary, 120 main steps of 8 × 256
    /// tokens with an annealing branch every 40 — minutes on two cores.
    pub fn full() -> Self {
        Self::sized(SizeKnobs {
            name: "full",
            train_chars: 3_000_000,
            eval_chars: 120_000,
            vocab_size: 2048,
            hidden: 128,
            batch_size: 8,
            seq_len: 256,
            schedule: Schedule {
                peak_lr: 4e-3,
                warmup_steps: 10,
                total_steps: 120,
                checkpoint_every: 20,
                anneal_every: 40,
                anneal_steps: 10,
            },
            resamples: 1000,
            probe_span: 16,
            probe_gaps: vec![32, 64, 128, 224],
            probe_windows: 64,
        })
    }

    /// A smoke test of the whole pipeline, seconds in a release build: about 0.3M parameters,
    /// 16 main steps of 4 × 128 tokens, four checkpoints per run (two annealed), a 5k-token
    /// evalset. Its curves mean little, and the bracket and copy filters hold fewer tokens
    /// than a stable estimate needs; the small evalset keeps it fast in debug builds too,
    /// where the integration test runs it.
    pub fn quick() -> Self {
        Self::sized(SizeKnobs {
            name: "quick",
            train_chars: 200_000,
            eval_chars: 10_000,
            vocab_size: 512,
            hidden: 64,
            batch_size: 4,
            seq_len: 128,
            schedule: Schedule {
                peak_lr: 4e-3,
                warmup_steps: 2,
                total_steps: 16,
                checkpoint_every: 8,
                anneal_every: 8,
                anneal_steps: 2,
            },
            resamples: 200,
            probe_span: 8,
            probe_gaps: vec![16, 48, 112],
            probe_windows: 12,
        })
    }

    fn sized(k: SizeKnobs) -> Self {
        Self {
            name: k.name,
            corpus: CorpusConfig {
                seed: 2026,
                train_chars: k.train_chars,
                eval_chars: k.eval_chars,
                repeats: RepeatConfig::default(),
            },
            vocab_size: k.vocab_size,
            shape: TwinShape {
                hidden_size: k.hidden,
                num_heads: k.hidden / 32,
                intermediate_size: 3 * k.hidden,
                ..TwinShape::demo(k.vocab_size, k.seq_len)
            },
            train: TrainConfig {
                batch_size: k.batch_size,
                seq_len: k.seq_len,
                schedule: k.schedule,
                adamw: AdamWConfig::default(),
                seed: 1,
            },
            resamples: k.resamples,
            probe: ProbeSpec {
                span: k.probe_span,
                gaps: k.probe_gaps,
                windows: k.probe_windows,
                window: k.seq_len,
                seed: 7,
            },
        }
    }

    /// Tokens per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.train.batch_size * self.train.seq_len
    }
}

/// What [`Plan::sized`] varies.
struct SizeKnobs {
    name: &'static str,
    train_chars: usize,
    eval_chars: usize,
    vocab_size: usize,
    hidden: usize,
    batch_size: usize,
    seq_len: usize,
    schedule: Schedule,
    resamples: usize,
    probe_span: usize,
    probe_gaps: Vec<usize>,
    probe_windows: usize,
}

/// The architecture label of a run in the watch config.
fn arch(twin: Twin) -> &'static str {
    match twin {
        Twin::Transformer => "transformer",
        Twin::Hybrid => "hybrid",
        Twin::Recurrent => "rnn",
    }
}

/// Name of the planted regression's run.
pub const PLANTED: &str = "transformer-swa";

/// Attention window of the planted regression, in tokens (the current one included).
pub const PLANTED_WINDOW: usize = 8;

/// The filter named before the runs as the test of the planted regression: a model that
/// cannot see back more than a few tokens cannot complete a repeat whose first copy lies
/// further back.
pub const PRIMARY: &str = "copy5";

/// One run of the demo: its name and architecture label in the watch config, and its model.
struct DemoRun {
    name: &'static str,
    arch: &'static str,
    config: Config,
}

/// The three twins, then the planted regression: the transformer with every layer's
/// attention limited to a [`PLANTED_WINDOW`]-token sliding window (an ordinary Olmo 3
/// checkpoint, through `sliding_window`). It shares the transformer's seed, so its initial
/// weights, data order and schedule are the transformer's own.
fn demo_runs(plan: &Plan) -> Vec<DemoRun> {
    let mut runs: Vec<DemoRun> = Twin::ALL
        .iter()
        .map(|&t| DemoRun {
            name: t.name(),
            arch: arch(t),
            config: twins::config(t, &plan.shape),
        })
        .collect();
    let mut planted = twins::config(Twin::Transformer, &plan.shape);
    if let Config::Olmo3(c) = &mut planted {
        c.layer_types = Some(vec!["sliding_attention".into(); plan.shape.num_layers]);
        c.sliding_window = Some(PLANTED_WINDOW);
    }
    runs.push(DemoRun {
        name: PLANTED,
        arch: arch(Twin::Transformer),
        config: planted,
    });
    runs
}

/// Runs the demo into `out` (see [`folder::prepare`] for what it accepts) and prints its
/// progress and closing summary on stdout. With `serve`, the live dashboard is served there
/// while the demo runs, and after it until SIGINT/SIGTERM.
pub fn run(out: &Path, plan: &Plan, force: bool, serve: Option<SocketAddr>) -> anyhow::Result<()> {
    let started = Instant::now();
    folder::prepare(out, plan.name, force)?;
    writeln!(
        std::io::stdout(),
        "filtermon demo ({}) in {}",
        plan.name,
        out.display()
    )?;

    let (tokenizer, stream) = corpus_and_tokenizer(out, plan)?;
    let probe_es = probe(&ProbeOptions {
        tokenizer: tokenizer.clone(),
        out: out.join(folder::PROBE),
        spec: plan.probe.clone(),
        unigram: None,
    })?;
    writeln!(
        std::io::stdout(),
        "probe: {} windows of {} random tokens, a {}-token span planted twice at gaps {:?}",
        probe_es.header().windows.len(),
        plan.probe.window,
        plan.probe.span,
        plan.probe.gaps
    )?;

    let demo_runs = demo_runs(plan);
    let names: Vec<(&str, &str)> = demo_runs.iter().map(|r| (r.name, r.arch)).collect();
    let config = monitor::write_config(
        out,
        &ConfigParams {
            runs: &names,
            tokens_per_step: plan.tokens_per_step(),
            window: plan.train.seq_len,
            resamples: plan.resamples,
        },
    )?;
    let evalset = config
        .evalsets
        .iter()
        .find(|e| e.name == EVALSET_NAME)
        .context("the demo config has no evalset")?;
    // The daemon's own first-start preparation, so the evalset is the one a user would get.
    print_evalset(
        &crate::monitor::daemon::open_evalset(evalset)?,
        &config.filters,
    )?;

    let runs = trainers(&config, plan, demo_runs, &stream, &tokenizer)?;
    let s = &plan.train.schedule;
    writeln!(
        std::io::stdout(),
        "schedule: WSD, {} steps of {} tokens ({} warmup), stable checkpoints every {}, \
         an annealing branch of {} steps every {}",
        s.total_steps,
        plan.tokens_per_step(),
        s.warmup_steps,
        s.checkpoint_every,
        s.anneal_steps,
        s.anneal_every
    )?;
    writeln!(
        std::io::stdout(),
        "monitor: filtermon watch on {}",
        config.path.display()
    )?;
    let prepared_secs = started.elapsed().as_secs_f64();

    let multi = MultiProgress::new();
    let active = crate::progress::activate(&multi);
    let db = config.db.clone();
    let charts = config.charts.clone();
    let filters: Vec<String> = builtin_filters()
        .into_iter()
        .map(|(name, _)| name.to_string())
        .chain(config.filters.iter().map(|(name, _)| name.clone()))
        .collect();
    let mut training = Training::new(&multi, runs, s.total_updates());
    let scored_bar = multi.add(bar("scored", "{bar:30} {pos:>4}/{len} checkpoints · {msg}"));
    let mut monitor = Monitor::start(config, scored_bar)?;
    let dashboard = match serve {
        Some(addr) => {
            let server = Server::start(&db, ServeSettings::new(addr, None, false)?)?;
            let line = format!("dashboard: http://{}/", server.addr());
            // Above the progress bars on a terminal; a hidden one would drop the line.
            if multi.is_hidden() {
                writeln!(std::io::stdout(), "{line}")?;
            } else {
                multi.println(line)?;
            }
            Some(server)
        }
        None => None,
    };
    let train_start = Instant::now();
    while training.step()? {
        monitor.poll(training.written.len())?;
    }
    let train_secs = train_start.elapsed().as_secs_f64();
    let wait_start = Instant::now();
    let scoring = monitor.wait_for(training.written.len())?;
    let wait_secs = wait_start.elapsed().as_secs_f64();
    drop(active);
    let results = monitor.store().results(None)?;
    let detections = monitor.store().detections()?;
    let alerts = monitor.store().alerts()?;
    let failures = monitor.store().status()?.failures;
    monitor.stop()?;

    let failed = if scoring.failed > 0 {
        format!(", {} FAILED", scoring.failed)
    } else {
        String::new()
    };
    writeln!(
        std::io::stdout(),
        "\ntrained {} runs in {}; {} checkpoints written, {} scored{failed}",
        training.runs.len(),
        minutes(train_secs),
        training.written.len(),
        scoring.done,
    )?;
    for f in &failures {
        eprintln!("not scored: {} {}: {}", f.run, f.checkpoint, f.error);
    }
    let run_names: Vec<&str> = training.runs.iter().map(|r| r.name).collect();
    print_summary(&results, &run_names, &filters, &training.written)?;
    print_detections(&detections)?;
    writeln!(
        std::io::stdout(),
        "\nalerts: {} fired (filtermon alerts --db {})",
        alerts.len(),
        db
    )?;
    for a in alerts.iter().rev() {
        writeln!(
            std::io::stdout(),
            "  {}: {}",
            a.firing.rule,
            a.firing.message
        )?;
    }
    writeln!(std::io::stdout(), "store:  filtermon status --db {}", db)?;
    writeln!(
        std::io::stdout(),
        "export: filtermon export --db {} --format csv",
        db
    )?;
    let index = charts.join("index.html");
    if index.is_file() {
        writeln!(std::io::stdout(), "charts: {} (written)", index.display())?;
    } else {
        writeln!(
            std::io::stdout(),
            "charts: {} (not written: this build's daemon draws no charts)",
            index.display()
        )?;
    }
    writeln!(
        std::io::stdout(),
        "demo finished in {}: setup {}, training with live scoring {}, scoring after training {}",
        minutes(started.elapsed().as_secs_f64()),
        minutes(prepared_secs),
        minutes(train_secs),
        minutes(wait_secs)
    )?;
    if let Some(server) = dashboard {
        writeln!(
            std::io::stdout(),
            "dashboard: http://{}/ (served until Ctrl-C)",
            server.addr()
        )?;
        server.serve_until_signal()?;
    }
    if scoring.failed > 0 {
        anyhow::bail!("{} checkpoints could not be scored", scoring.failed);
    }
    Ok(())
}

/// Generates the corpus, trains the tokenizer; returns its path and the training tokens.
fn corpus_and_tokenizer(out: &Path, plan: &Plan) -> anyhow::Result<(PathBuf, Arc<Vec<u32>>)> {
    let corpus = Corpus::generate(&plan.corpus);
    let files = corpus.write(&out.join(folder::CORPUS))?;
    writeln!(
        std::io::stdout(),
        "corpus: {} training documents ({} kB), {} held-out documents ({} kB) in {}",
        corpus.train.len(),
        plan.corpus.train_chars / 1000,
        corpus.eval.len(),
        plan.corpus.eval_chars / 1000,
        files.train.parent().unwrap_or(out).display()
    )?;
    let tokenizer = out.join(folder::TOKENIZER);
    bpe::train(
        corpus.train.iter().map(|d| d.text.as_str()),
        plan.vocab_size,
        &tokenizer,
    )?;
    let tok = crate::evalset::tokenizer::load(&tokenizer)?;
    let stream = Arc::new(bpe::token_stream(
        &tok,
        corpus.train.iter().map(|d| d.text.as_str()),
    )?);
    writeln!(
        std::io::stdout(),
        "tokenizer: byte-level BPE of {} tokens; {} training tokens",
        tok.get_vocab_size(true),
        stream.len()
    )?;
    Ok((tokenizer, stream))
}

/// One fresh trainer per architecture, writing into the run folders the config watches.
fn trainers(
    config: &WatchConfig,
    plan: &Plan,
    demo_runs: Vec<DemoRun>,
    stream: &Arc<Vec<u32>>,
    tokenizer: &Path,
) -> anyhow::Result<Vec<(&'static str, Trainer)>> {
    let mut runs = Vec::with_capacity(demo_runs.len());
    for demo_run in demo_runs {
        let run = config
            .runs
            .iter()
            .find(|r| r.name == demo_run.name)
            .with_context(|| format!("the demo config has no run {}", demo_run.name))?;
        let trainer = Trainer::new(
            demo_run.config,
            Arc::clone(stream),
            plan.train.clone(),
            RunOutput {
                dir: run.dir.clone(),
                tokenizer: tokenizer.to_path_buf(),
            },
        )?;
        writeln!(
            std::io::stdout(),
            "run {:<15} {:<11} {:>9} parameters -> {}",
            demo_run.name,
            run.arch,
            trainer.parameter_count(),
            run.dir.display()
        )?;
        runs.push((demo_run.name, trainer));
    }
    Ok(runs)
}

/// Scored tokens per filter; warns where a filter has too few for a stable estimate.
fn print_evalset(es: &crate::evalset::EvalSet, user: &[(String, String)]) -> anyhow::Result<()> {
    let filters = compile_filters(user, es.domains())?;
    let counts = es.filter_counts(&filters)?;
    let h = es.header();
    writeln!(
        std::io::stdout(),
        "evalset: {} documents, {} windows, {} tokens in {}; scored tokens per filter:",
        h.docs.len(),
        h.windows.len(),
        h.tokens,
        es.dir().display()
    )?;
    let mut few = Vec::new();
    let line: Vec<String> = filters
        .iter()
        .zip(&counts)
        .map(|(f, row)| {
            let n: usize = row.iter().sum();
            if n < MIN_STABLE_TOKENS {
                few.push(f.name().to_string());
            }
            format!("{} {n}", f.name())
        })
        .collect();
    writeln!(std::io::stdout(), "  {}", line.join(", "))?;
    if !few.is_empty() {
        writeln!(
            std::io::stdout(),
            "  fewer than {MIN_STABLE_TOKENS} tokens (too few for a stable estimate): {}",
            few.join(", ")
        )?;
    }
    Ok(())
}

/// The closing table of `filters` from the store, runs in training order, the transformer as
/// baseline.
fn print_summary(
    results: &[crate::store::report::ResultRow],
    names: &[&str],
    filters: &[String],
    written: &[PathBuf],
) -> anyhow::Result<()> {
    let picked = summary::latest_annealed(results, names, EVALSET_NAME);
    let annealed: Vec<summary::Annealed> = picked.into_iter().flatten().collect();
    if annealed.len() < names.len() {
        anyhow::bail!(
            "{} checkpoints were written, but not every run has a scored annealed checkpoint",
            written.len()
        );
    }
    writeln!(
        std::io::stdout(),
        "\nfiltered losses (nats/token) at each run's latest annealed checkpoint; \
         gap = run − {}, positive: the run is worse (as in the gap charts and alerts)",
        names[0]
    )?;
    for a in &annealed {
        writeln!(
            std::io::stdout(),
            "  {:<12} {} ({} tokens seen)",
            a.run,
            a.checkpoint,
            a.tokens
        )?;
    }
    write!(std::io::stdout(), "{}", summary::table(&annealed, filters))?;

    let probed: Vec<summary::Annealed> = summary::latest_annealed(results, names, PROBE_NAME)
        .into_iter()
        .flatten()
        .collect();
    // Every run has the same gap rows; the baseline's list them in stored order.
    let gains: Vec<String> = probed.first().map_or_else(Vec::new, |a| {
        a.results
            .iter()
            .filter(|r| matches!(RecallRow::parse(&r.filter), Some(RecallRow::Gain(_))))
            .map(|r| r.filter.clone())
            .collect()
    });
    if probed.len() == names.len() && !gains.is_empty() {
        writeln!(
            std::io::stdout(),
            "\nretrieval gain on the probe (nats: first − second copy of the planted span; \
             higher retrieves better) at the same checkpoints"
        )?;
        write!(std::io::stdout(), "{}", summary::table(&probed, &gains))?;
    }
    Ok(())
}

/// The detection table of every run on the text evalset's stable checkpoints (the filters
/// and the recall cliff; `filtermon status --detect` has every row), and which row flagged
/// the planted regression first, beside what the primary filter did.
fn print_detections(detections: &[Detection]) -> anyhow::Result<()> {
    let text: Vec<&Detection> = detections
        .iter()
        .filter(|d| d.evalset == EVALSET_NAME && !d.anneal)
        .collect();
    let shown: Vec<Detection> = text
        .iter()
        .filter(|d| !matches!(RecallRow::parse(&d.filter), Some(RecallRow::CopyN(_))))
        .map(|d| (*d).clone())
        .collect();
    if shown.is_empty() {
        return Ok(());
    }
    writeln!(
        std::io::stdout(),
        "\ndetection of a regression against {} on the text, stable checkpoints, by lead",
        Twin::Transformer.name()
    )?;
    write!(std::io::stdout(), "{}", table(&shown))?;
    let planted: Vec<&&Detection> = text.iter().filter(|d| d.run == PLANTED).collect();
    let when = |d: &Detection| match d.lead {
        Lead::Tokens(t) if t > 0 => format!(
            "at {} tokens, {} before `all`",
            d.first_detected_cell(),
            d.lead_cell()
        ),
        Lead::Tokens(0) => format!("at {} tokens, with `all`", d.first_detected_cell()),
        Lead::Tokens(_) => format!(
            "at {} tokens, {} after `all`",
            d.first_detected_cell(),
            &d.lead_cell()[1..]
        ),
        Lead::AllNeverDetected => {
            format!("at {} tokens, and `all` never did", d.first_detected_cell())
        }
        Lead::NotDetected => "never".into(),
    };
    let first = planted.iter().find(|d| d.first_detected.is_some());
    let primary = planted.iter().find(|d| d.filter == PRIMARY);
    writeln!(std::io::stdout(),
        "planted regression ({PLANTED}, {PLANTED_WINDOW}-token attention window): first flagged by {}; \
         primary filter {PRIMARY}: {}",
        first.map_or_else(|| "no row".into(), |d| format!("`{}` {}", d.filter, when(d))),
        primary.map_or_else(|| "no paired gaps".into(), |d| when(d))
    )?;
    Ok(())
}

/// The trainers, stepped in turn so that checkpoints of all runs appear throughout, with
/// one bar each.
struct Training {
    runs: Vec<RunBar>,
    /// Checkpoint folders written so far, all runs.
    written: Vec<PathBuf>,
}

struct RunBar {
    name: &'static str,
    trainer: Trainer,
    bar: ProgressBar,
    checkpoints: usize,
}

impl Training {
    fn new(multi: &MultiProgress, trainers: Vec<(&'static str, Trainer)>, updates: usize) -> Self {
        let runs = trainers
            .into_iter()
            .map(|(name, trainer)| {
                let bar = multi.add(bar(name, "{bar:30} {pos:>4}/{len} steps · {msg}"));
                bar.set_length(updates as u64);
                RunBar {
                    name,
                    trainer,
                    bar,
                    checkpoints: 0,
                }
            })
            .collect();
        Self {
            runs,
            written: Vec::new(),
        }
    }

    /// One main-run step of every unfinished run (with the checkpoint and annealing branch
    /// due there); false once all are done.
    fn step(&mut self) -> anyhow::Result<bool> {
        let mut any = false;
        for run in self.runs.iter_mut().filter(|r| !r.trainer.is_done()) {
            any = true;
            let (mut loss, mut tokens_per_sec) = (None, 0.0);
            let (count, written) = (&mut run.checkpoints, &mut self.written);
            let mut on_event = |e: &Event| match e {
                Event::Step {
                    loss: l,
                    tokens_per_sec: t,
                    ..
                } => {
                    loss = Some(*l);
                    tokens_per_sec = *t;
                    run.bar.inc(1);
                }
                Event::Checkpoint { dir, .. } => {
                    written.push(dir.clone());
                    *count += 1;
                }
            };
            run.trainer
                .advance(&mut on_event)
                .with_context(|| format!("training {}", run.name))?;
            if let Some(loss) = loss {
                run.bar.set_message(format!(
                    "loss {loss:.3} · {tokens_per_sec:.0} tok/s · {} checkpoints",
                    run.checkpoints
                ));
            }
            if run.trainer.is_done() {
                run.bar.finish();
            }
        }
        Ok(any)
    }
}

/// A bar of the demo's display: `prefix` in a fixed column, then `template`.
fn bar(prefix: &str, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!("{{prefix:>12}} {template}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(0)
        .with_style(style)
        .with_prefix(prefix.to_string())
}

/// A duration as `4m05s`.
fn minutes(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}
