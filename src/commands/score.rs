//! `filtermon score`: per-token losses of one checkpoint on a JSONL file of documents.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::analysis::recall::{Estimate, LossBin, RecallMetrics};
use crate::analysis::stats::aggregate::{AggregateOptions, FilterResult};
use crate::analysis::summary::summarize;
use crate::commands::cli::ScoreArgs;
use crate::engine::checkpoint::Checkpoint;
use crate::engine::device;
use crate::engine::score::{cut_windows, Window};
use crate::engine::scorer::{ScoreSettings, Scorer};
use crate::error::input_error;
use crate::evalset::filter::{compile_filters, load_filter_file};
use crate::evalset::loaded::LoadedEvalset;
use crate::evalset::tokenizer;
use crate::evalset::EvalSet;

/// One line of `--token-losses` (DESIGN §9).
#[derive(Debug, Serialize)]
pub struct TokenLossRecord<'a> {
    /// Document id.
    pub doc: &'a str,
    /// Window index within the document.
    pub window: usize,
    /// Index of the token in its window.
    pub pos: usize,
    /// The scored token.
    pub token_id: u32,
    /// NLL in nats given the window's earlier tokens.
    pub loss: f32,
    /// Argmax hit.
    pub top1: bool,
    /// Top-5 hit.
    pub top5: bool,
}

/// A document of a `--input` file.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDoc {
    /// `id`, or the 1-based line number.
    pub id: String,
    /// The text.
    pub text: String,
}

/// Reads a JSONL file of documents; empty and malformed lines are errors naming `file:line`.
pub fn read_docs(path: &Path) -> anyhow::Result<Vec<InputDoc>> {
    let file = File::open(path)
        .map_err(|e| input_error(format!("{}: cannot open: {e}", path.display())))?;
    let mut docs = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let n = i + 1;
        let at = || format!("{}:{n}", path.display());
        let line = line.map_err(|e| input_error(format!("{}: {e}", at())))?;
        if line.trim().is_empty() {
            return Err(input_error(format!("{}: empty line", at())));
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| input_error(format!("{}: not JSON: {e}", at())))?;
        let text = v
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| input_error(format!("{}: no string field `text`", at())))?;
        let id = match v.get("id") {
            None | Some(Value::Null) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(x)) => x.to_string(),
            Some(_) => {
                return Err(input_error(format!(
                    "{}: `id` is neither a string nor a number",
                    at()
                )))
            }
        };
        docs.push(InputDoc {
            id,
            text: text.to_owned(),
        });
    }
    if docs.is_empty() {
        return Err(input_error(format!("{}: no documents", path.display())));
    }
    Ok(docs)
}

/// Runs the command.
pub fn run(args: &ScoreArgs) -> anyhow::Result<()> {
    let mut scorer = Scorer::new(ScoreSettings {
        device: device::parse(&args.runtime.device)?,
        dtype: args.runtime.dtype.dtype(),
        batch: args.runtime.batch,
    });
    let ckpt = Checkpoint::open(&args.checkpoint)?;
    match (&args.input, &args.evalset) {
        (Some(input), None) => {
            let out = args
                .token_losses
                .as_ref()
                .ok_or_else(|| input_error("--input needs --token-losses FILE"))?;
            score_documents(args, &mut scorer, &ckpt, input, out)
        }
        (None, Some(dir)) => score_evalset_cmd(args, &mut scorer, &ckpt, dir),
        _ => Err(input_error("give exactly one of --input and --evalset")),
    }
}

fn score_documents(
    args: &ScoreArgs,
    scorer: &mut Scorer,
    ckpt: &Checkpoint,
    input: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if args.window < 2 {
        return Err(input_error("--window must be at least 2 tokens"));
    }
    let tok = tokenizer::load(&ckpt.resolve_tokenizer(args.tokenizer.as_deref())?)?;
    let docs = read_docs(input)?;
    let mut windows: Vec<Window> = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        windows.extend(cut_windows(
            i,
            &tokenizer::encode(&tok, &d.text)?,
            args.window,
        ));
    }
    // Loaded before the log line, so that a bad checkpoint's error is the only output.
    scorer.model(ckpt)?;
    tracing::info!(documents = docs.len(), windows = windows.len(), "scoring");
    let (scores, speed) = scorer.score_windows(ckpt, &windows)?;
    let docs = &docs;
    let records = windows.iter().zip(&scores).flat_map(|(w, s)| {
        s.iter().enumerate().map(move |(i, ts)| TokenLossRecord {
            doc: &docs[w.doc].id,
            window: w.index,
            pos: i + 1,
            token_id: w.tokens[i + 1],
            loss: ts.loss,
            top1: ts.top1,
            top5: ts.top5,
        })
    });
    let sum = write_token_losses(out, records)?;
    writeln!(
        stdout,
        "scored {} tokens in {} windows of {} documents; mean NLL {:.4} nats; {:.0} tokens/s",
        speed.tokens,
        windows.len(),
        docs.len(),
        sum / speed.tokens.max(1) as f64,
        speed.tokens as f64 / speed.seconds.max(1e-9)
    )?;
    Ok(())
}

fn score_evalset_cmd(
    args: &ScoreArgs,
    scorer: &mut Scorer,
    ckpt: &Checkpoint,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let es = EvalSet::open(dir)?;
    let user = match &args.filters {
        Some(p) => load_filter_file(p)?,
        None => Vec::new(),
    };
    let filters = compile_filters(&user, es.domains())?;
    let (scores, speed) = scorer.score_evalset(ckpt, &es, args.tokenizer.as_deref())?;
    let es = LoadedEvalset::new(es, filters)?;
    if let Some(out) = &args.token_losses {
        let (es, scores) = (&es.es, &scores);
        let h = es.header();
        let records = es.windows().iter().flat_map(|w| {
            (1..w.len as usize).map(move |p| {
                let i = w.start as usize + p;
                TokenLossRecord {
                    doc: &h.docs[w.doc as usize].id,
                    window: w.index as usize,
                    pos: p,
                    token_id: es.token(i),
                    loss: scores.loss[i],
                    top1: scores.top1[i],
                    top5: scores.top5[i],
                }
            })
        });
        write_token_losses(out, records)?;
    }
    let opts = AggregateOptions {
        resamples: args.resamples,
        seed: args.seed,
        by_domain: args.by_domain,
    };
    let (results, recall) = summarize(&es, &scores, opts);
    let es = &es.es;
    if args.json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "checkpoint": args.checkpoint.display().to_string(),
                "evalset": es.id(),
                "tokens": speed.tokens,
                "tokens_per_s": speed.tokens as f64 / speed.seconds.max(1e-9),
                "results": results,
                "recall": recall,
            }))?
        )?;
    } else {
        print_table(&mut stdout, &results)?;
        print_recall(&mut stdout, &recall)?;
        writeln!(
            stdout,
            "{} tokens of evalset {} at {:.0} tokens/s",
            speed.tokens,
            es.id(),
            speed.tokens as f64 / speed.seconds.max(1e-9)
        )?;
    }
    Ok(())
}

/// Writes `--token-losses`; returns the sum of losses.
fn write_token_losses<'a>(
    path: &Path,
    records: impl Iterator<Item = TokenLossRecord<'a>>,
) -> anyhow::Result<f64> {
    let file = File::create(path)
        .map_err(|e| input_error(format!("{}: cannot create: {e}", path.display())))?;
    let mut out = BufWriter::new(file);
    let mut sum = 0f64;
    for rec in records {
        sum += f64::from(rec.loss);
        serde_json::to_writer(&mut out, &rec)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(sum)
}

/// The per-filter table.
pub fn print_table(stdout: &mut impl Write, results: &[FilterResult]) -> std::io::Result<()> {
    writeln!(
        stdout,
        "{:<16} {:<10} {:>8} {:>9} {:>20} {:>7} {:>7}",
        "filter", "domain", "tokens", "mean NLL", "95% CI", "top-1", "top-5"
    )?;
    for r in results {
        writeln!(
            stdout,
            "{:<16} {:<10} {:>8} {:>9.4} {:>20} {:>7.3} {:>7.3}",
            r.filter,
            r.domain.as_deref().unwrap_or("all"),
            r.n,
            r.mean,
            format!("[{:.4}, {:.4}]", r.ci_lo, r.ci_hi),
            r.top1,
            r.top5
        )?;
    }
    Ok(())
}

/// The recall diagnostics: retrieval gain per gap (probe evalsets), the COPY-5 loss by copy
/// distance, the copy-n curve and the COPY-5 miss rate.
pub fn print_recall(stdout: &mut impl Write, m: &RecallMetrics) -> std::io::Result<()> {
    let ci = |e: &Estimate| format!("[{:.4}, {:.4}]", e.ci_lo, e.ci_hi);
    if !m.gains.is_empty() {
        writeln!(
            stdout,
            "\nretrieval gain (NLL first copy - second copy, span offsets >= 1)\n{:>6} {:>8} {:>9} {:>9} {:>9} {:>20} {:>7} {:>7}",
            "gap", "windows", "first", "second", "gain", "95% CI", "top-1", "top-5"
        )?;
        for g in &m.gains {
            writeln!(
                stdout,
                "{:>6} {:>8} {:>9.4} {:>9.4} {:>9.4} {:>20} {:>7.3} {:>7.3}",
                g.gap,
                g.windows,
                g.first,
                g.second,
                g.gain.value,
                ci(&g.gain),
                g.second_top1,
                g.second_top5
            )?;
        }
    }
    let mut bins = |title: &str, key: &str, rows: &[LossBin]| -> std::io::Result<()> {
        writeln!(
            stdout,
            "\n{title}\n{key:>10} {:>8} {:>9} {:>20} {:>7} {:>7}",
            "tokens", "mean NLL", "95% CI", "top-1", "top-5"
        )?;
        for b in rows {
            writeln!(
                stdout,
                "{:>10} {:>8} {:>9.4} {:>20} {:>7.3} {:>7.3}",
                b.bin,
                b.loss.n,
                b.loss.value,
                ci(&b.loss),
                b.top1,
                b.top5
            )?;
        }
        Ok(())
    };
    bins(
        "recall cliff: COPY-5 by copy distance",
        "distance",
        &m.cliff,
    )?;
    bins("copy-n curve: repeat_len == n", "n", &m.copy_n)?;
    let miss = &m.copy5_miss;
    writeln!(
        stdout,
        "\nCOPY-5 top-1 miss rate {:.4} {} over {} tokens",
        miss.value,
        ci(miss),
        miss.n
    )
}
