//! Command-line front ends: `filtermon tagger train|eval` and `filtermon tag`.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::error::input_error;
use crate::evalset::tagset::Upos;

use super::perceptron::TrainConfig;
use super::{evaluate, train_with_progress, Tagger, TrainProgress};

/// `filtermon tagger ...`
#[derive(Debug, Clone, Subcommand)]
pub enum TaggerCommand {
    /// Train a tagger on CoNLL-U data (e.g. UD English-EWT) and write the model.
    Train(TaggerTrainArgs),
    /// Score a tagger on a gold CoNLL-U file: UPOS and PTB accuracy, and speed.
    Eval(TaggerEvalArgs),
}

/// Arguments of `filtermon tagger train`.
#[derive(Debug, Clone, Args)]
pub struct TaggerTrainArgs {
    /// Training data in CoNLL-U with UPOS and XPOS (PTB) columns; repeat to add files.
    #[arg(long, required = true, value_name = "PATH")]
    pub train: Vec<PathBuf>,
    /// Held-out CoNLL-U data; accuracy on it is printed after every epoch.
    #[arg(long, value_name = "PATH")]
    pub dev: Option<PathBuf>,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Where to write the model.
    #[arg(long, value_name = "PATH", default_value = "tagger-model.bin")]
    pub out: PathBuf,
    /// Seed for shuffling the training sentences.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Drop averaged weights smaller than this from the saved model (smaller file).
    #[arg(long, default_value_t = TrainConfig::default().prune)]
    pub prune: f32,
}

/// Arguments of `filtermon tagger eval`.
#[derive(Debug, Clone, Args)]
pub struct TaggerEvalArgs {
    /// Gold CoNLL-U file; its FORM column is the segmentation that gets tagged.
    #[arg(long, value_name = "PATH")]
    pub conllu: PathBuf,
    /// Model file; the embedded EWT model when absent.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

/// Arguments of `filtermon tag`.
#[derive(Debug, Clone, Args)]
pub struct TagArgs {
    /// Input is one sentence per line with words separated by single spaces; the words are
    /// tagged as given. Without it, each line is raw text, split into words first.
    #[arg(long)]
    pub pretokenized: bool,
    /// Model file; the embedded EWT model when absent.
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

/// Runs a `filtermon tagger` subcommand.
pub fn run_tagger(cmd: &TaggerCommand) -> Result<()> {
    match cmd {
        TaggerCommand::Train(a) => run_train(a),
        TaggerCommand::Eval(a) => run_eval(a),
    }
}

enum Model {
    Owned(Tagger),
    Embedded(&'static Tagger),
}

impl Model {
    fn get(&self) -> &Tagger {
        match self {
            Model::Owned(t) => t,
            Model::Embedded(t) => t,
        }
    }
}

fn load_model(path: Option<&Path>) -> Result<Model> {
    Ok(match path {
        Some(p) => Model::Owned(Tagger::load(p)?),
        None => Model::Embedded(Tagger::embedded()?),
    })
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// `filtermon tagger train`.
pub fn run_train(args: &TaggerTrainArgs) -> Result<()> {
    if args.prune.is_nan() || args.prune < 0.0 {
        crate::bail_input!("--prune must be a non-negative number");
    }
    let cfg = TrainConfig {
        epochs: args.epochs,
        seed: args.seed,
        prune: args.prune,
        ..TrainConfig::default()
    };
    let files: Vec<&Path> = args.train.iter().map(PathBuf::as_path).collect();
    let t0 = std::time::Instant::now();
    let mut last_dev = None;
    let tagger = train_with_progress(&files, args.dev.as_deref(), &cfg, |p| match p {
        TrainProgress::Fold { fold, folds } => eprintln!("jackknife fold {fold}/{folds} done"),
        TrainProgress::Epoch(r) => {
            match r.dev {
                Some(d) => eprintln!(
                    "pass {} epoch {:>2}: train {}  dev UPOS {}  XPOS {}",
                    r.pass,
                    r.epoch,
                    pct(r.train_accuracy),
                    pct(d.upos()),
                    pct(d.xpos())
                ),
                None => eprintln!(
                    "pass {} epoch {:>2}: train {}",
                    r.pass,
                    r.epoch,
                    pct(r.train_accuracy)
                ),
            }
            last_dev = r.dev;
        }
    })?;
    tagger.save(&args.out)?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "trained in {:.1}s: {} classes, {} features; wrote {} ({} bytes)",
        t0.elapsed().as_secs_f64(),
        tagger.model().classes().len(),
        tagger.model().num_features(),
        args.out.display(),
        size
    )?;
    if let Some(d) = last_dev {
        // The saved model is quantised (and maybe pruned): score exactly what was written.
        let saved = Tagger::load(&args.out)?;
        let dev = args.dev.as_deref().context("dev path")?;
        let d2 = evaluate(&saved, dev)?;
        writeln!(
            out,
            "dev: UPOS {}  XPOS {}  ({} words; before quantisation UPOS {})",
            pct(d2.upos()),
            pct(d2.xpos()),
            d2.words,
            pct(d.upos())
        )?;
    }
    Ok(())
}

/// `filtermon tagger eval`.
pub fn run_eval(args: &TaggerEvalArgs) -> Result<()> {
    let model = load_model(args.model.as_deref())?;
    let acc = evaluate(model.get(), &args.conllu)?;
    if acc.words == 0 {
        crate::bail_input!("{} has no words", args.conllu.display());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "words: {}", acc.words)?;
    writeln!(
        out,
        "UPOS accuracy: {} ({}/{})",
        pct(acc.upos()),
        acc.upos_correct,
        acc.upos_total
    )?;
    writeln!(
        out,
        "XPOS accuracy: {} ({}/{})",
        pct(acc.xpos()),
        acc.xpos_correct,
        acc.xpos_total
    )?;
    writeln!(
        out,
        "speed: {:.0} words/s (one thread)",
        acc.words_per_sec()
    )?;
    Ok(())
}

/// `filtermon tag`: stdin → `word/UPOS` lines on stdout, one output line per input line.
pub fn run_tag(args: &TagArgs) -> Result<()> {
    let model = load_model(args.model.as_deref())?;
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    // A closed stdout comes back as an error that main turns into a quiet exit 0.
    tag_stream(
        model.get(),
        args.pretokenized,
        stdin,
        BufWriter::new(stdout),
    )
}

/// The body of `filtermon tag`, over any reader and writer.
pub fn tag_stream(
    tagger: &Tagger,
    pretokenized: bool,
    mut input: impl BufRead,
    mut out: impl Write,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut lineno = 0usize;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .context("reading standard input")?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let line = std::str::from_utf8(&buf)
            .map_err(|_| input_error(format!("line {lineno} of the input is not valid UTF-8")))?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if pretokenized {
            let words: Vec<&str> = line.split(' ').filter(|w| !w.is_empty()).collect();
            let tags = tagger.tag_words(&words);
            write_pairs(
                &mut out,
                words.iter().copied().zip(tags.iter().map(|t| t.1)),
            )?;
        } else {
            let tagged = tagger.tag_text(line);
            write_pairs(
                &mut out,
                tagged.iter().map(|w| (&line[w.start..w.end], w.upos)),
            )?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn write_pairs<'a>(
    out: &mut impl Write,
    pairs: impl Iterator<Item = (&'a str, Upos)>,
) -> Result<()> {
    for (i, (w, u)) in pairs.enumerate() {
        if i > 0 {
            out.write_all(b" ")?;
        }
        out.write_all(w.as_bytes())?;
        out.write_all(b"/")?;
        out.write_all(u.name().as_bytes())?;
    }
    Ok(())
}
