//! `filtermon score`: per-token losses of one checkpoint on a JSONL file of documents.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::cli::ScoreArgs;
use crate::error::input_error;
use crate::score::{cut_windows, score_windows, Window};
use crate::{device, tokenizer};

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
    if args.window < 2 {
        return Err(input_error("--window must be at least 2 tokens"));
    }
    let device = device::parse(&args.device)?;
    let ckpt = Checkpoint::open(&args.checkpoint)?;
    let tok = tokenizer::load(&ckpt.tokenizer_path()?)?;
    let docs = read_docs(&args.input)?;
    let mut windows: Vec<Window> = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        windows.extend(cut_windows(
            i,
            &tokenizer::encode(&tok, &d.text)?,
            args.window,
        ));
    }
    let vocab = ckpt.spec.vocab_size;
    if let Some(bad) = windows
        .iter()
        .flat_map(|w| &w.tokens)
        .find(|&&t| t as usize >= vocab)
    {
        return Err(input_error(format!(
            "{}: tokenizer produced id {bad}, beyond the model's vocab_size {vocab}",
            args.checkpoint.display()
        )));
    }
    let model = ckpt.load_model(args.dtype.dtype(), &device)?;
    tracing::info!(documents = docs.len(), windows = windows.len(), "scoring");
    let (scores, speed) = score_windows(&model, &windows, args.batch, &device)?;

    let out = File::create(&args.token_losses).map_err(|e| {
        input_error(format!(
            "{}: cannot create: {e}",
            args.token_losses.display()
        ))
    })?;
    let mut out = BufWriter::new(out);
    let mut sum = 0f64;
    for (w, s) in windows.iter().zip(&scores) {
        for (i, ts) in s.iter().enumerate() {
            let rec = TokenLossRecord {
                doc: &docs[w.doc].id,
                window: w.index,
                pos: i + 1,
                token_id: w.tokens[i + 1],
                loss: ts.loss,
                top1: ts.top1,
                top5: ts.top5,
            };
            serde_json::to_writer(&mut out, &rec)?;
            out.write_all(b"\n")?;
            sum += f64::from(ts.loss);
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", args.token_losses.display()))?;
    let mean = if speed.tokens > 0 {
        sum / speed.tokens as f64
    } else {
        f64::NAN
    };
    println!(
        "scored {} tokens in {} windows of {} documents; mean NLL {:.4} nats; {:.0} tokens/s",
        speed.tokens,
        windows.len(),
        docs.len(),
        mean,
        speed.tokens as f64 / speed.seconds.max(1e-9)
    );
    Ok(())
}
