//! Windows of token ids → per-token scores, batched, with a progress bar.

use std::time::Instant;

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::model::nll::TokenScore;
use crate::engine::model::CausalLm;
use crate::evalset::scores::EvalScores;
use crate::evalset::EvalSet;

/// A run of consecutive tokens of one document, scored in one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Index of the document in its source.
    pub doc: usize,
    /// Index of this window within its document.
    pub index: usize,
    /// Token ids.
    pub tokens: Vec<u32>,
}

/// Cuts one document's tokens into consecutive windows of at most `size` tokens.
pub fn cut_windows(doc: usize, tokens: &[u32], size: usize) -> Vec<Window> {
    tokens
        .chunks(size.max(1))
        .enumerate()
        .map(|(index, chunk)| Window {
            doc,
            index,
            tokens: chunk.to_vec(),
        })
        .collect()
}

/// Throughput of one scoring pass.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Tokens scored (positions ≥ 1).
    pub tokens: usize,
    /// Wall time of the forward passes and NLL.
    pub seconds: f64,
}

/// Scores every window; result `i` holds positions `1..len` of window `i`.
///
/// Windows of a batch are right-padded: the models are causal, so padding after a window's
/// last token cannot change its scores.
pub fn score_windows(
    model: &CausalLm,
    windows: &[Window],
    batch: usize,
    device: &Device,
) -> anyhow::Result<(Vec<Vec<TokenScore>>, Throughput)> {
    let total: usize = windows
        .iter()
        .map(|w| w.tokens.len().saturating_sub(1))
        .sum();
    let bar = crate::progress::attach(ProgressBar::new(total as u64));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} scoring {bar:30} {pos}/{len} tokens {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    let mut out = Vec::with_capacity(windows.len());
    for group in windows.chunks(batch.max(1)) {
        let len = group.iter().map(|w| w.tokens.len()).max().unwrap_or(0);
        if len < 2 {
            out.extend(group.iter().map(|_| Vec::new()));
            continue;
        }
        let mut ids = vec![0u32; group.len() * len];
        for (row, w) in group.iter().enumerate() {
            ids[row * len..row * len + w.tokens.len()].copy_from_slice(&w.tokens);
        }
        let ids = Tensor::from_vec(ids, (group.len(), len), device)?;
        // Every position of the batch is scored in one pass, padding included (its targets are
        // id 0 and its scores are dropped): fewer, larger slices for the device path.
        let hidden = model.hidden_states(&ids)?.narrow(1, 0, len - 1)?;
        let hidden = hidden.reshape((group.len() * (len - 1), hidden.dim(2)?))?;
        let mut targets = vec![0u32; group.len() * (len - 1)];
        for (row, w) in group.iter().enumerate() {
            let next = w.tokens.get(1..).unwrap_or_default();
            targets[row * (len - 1)..row * (len - 1) + next.len()].copy_from_slice(next);
        }
        let scores = model.score_tokens(&hidden, &targets)?;
        for (row, w) in group.iter().enumerate() {
            let n = w.tokens.len().saturating_sub(1);
            out.push(scores[row * (len - 1)..row * (len - 1) + n].to_vec());
            bar.inc(n as u64);
        }
    }
    bar.finish_and_clear();
    Ok((
        out,
        Throughput {
            tokens: total,
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}

/// Scores every window of an evalset.
pub fn score_evalset(
    model: &CausalLm,
    es: &EvalSet,
    batch: usize,
    device: &Device,
) -> anyhow::Result<(EvalScores, Throughput)> {
    let windows: Vec<Window> = es
        .windows()
        .iter()
        .map(|w| Window {
            doc: w.doc as usize,
            index: w.index as usize,
            tokens: es.window_tokens(w),
        })
        .collect();
    let vocab = model.spec.vocab_size;
    if let Some(bad) = windows
        .iter()
        .flat_map(|w| &w.tokens)
        .find(|&&t| t as usize >= vocab)
    {
        return Err(crate::error::input_error(format!(
            "{}: token id {bad} is beyond the model's vocab_size {vocab}",
            es.dir().display()
        )));
    }
    let (per_window, speed) = score_windows(model, &windows, batch, device)?;
    let n = es.len();
    let mut scores = EvalScores {
        loss: vec![f32::NAN; n],
        top1: vec![false; n],
        top5: vec![false; n],
    };
    for (w, s) in es.windows().iter().zip(&per_window) {
        for (p, ts) in s.iter().enumerate() {
            let i = w.start as usize + p + 1;
            scores.loss[i] = ts.loss;
            scores.top1[i] = ts.top1;
            scores.top5[i] = ts.top5;
        }
    }
    Ok((scores, speed))
}
