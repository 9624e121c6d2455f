//! Agreement of filtermon's per-token scores with a Hugging Face transformers reference: a
//! checkpoint folder holding `reference.json` (written by `scripts/make_fixtures.py`), scored on
//! any device, dtype and kernel path.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::engine::checkpoint::Checkpoint;
use crate::engine::model::path::ExecPath;
use crate::error::input_error;

/// One sequence of `reference.json`.
#[derive(Debug, Deserialize)]
struct Sequence {
    token_ids: Vec<u32>,
    nll_f32: Vec<f32>,
    top1_f32: Vec<bool>,
    top5_f32: Vec<bool>,
    nll_bf16: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    sequences: Vec<Sequence>,
}

/// How filtermon's scores of one fixture compare with the reference.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// The checkpoint folder.
    pub fixture: PathBuf,
    /// `f32` or `bf16`: the reference's forward pass in the same dtype.
    pub dtype: &'static str,
    /// `host` or `device` kernels.
    pub path: &'static str,
    /// Scored tokens.
    pub tokens: usize,
    /// Max |ΔNLL|, nats.
    pub max_abs: f32,
    /// Mean |ΔNLL|, nats.
    pub mean_abs: f32,
    /// Top-1/top-5 disagreements (counted against the f32 reference only).
    pub flips: usize,
}

/// Scores every sequence of `dir/reference.json` with `dir`'s model in `dtype` on `device`, on
/// `path` (or the device's own), against the reference forward pass in the same dtype.
pub fn check(
    dir: &Path,
    dtype: DType,
    device: &Device,
    path: Option<ExecPath>,
) -> anyhow::Result<Agreement> {
    let file = dir.join("reference.json");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| input_error(format!("{}: {e}", file.display())))?;
    let reference: Reference =
        serde_json::from_str(&text).map_err(|e| input_error(format!("{}: {e}", file.display())))?;
    let mut model = Checkpoint::open(dir)?.load_model(dtype, device)?;
    if let Some(p) = path {
        model.set_path(p);
    }
    let f32_reference = dtype == DType::F32;
    let (mut max_abs, mut sum_abs, mut tokens, mut flips) = (0f32, 0f64, 0usize, 0usize);
    for seq in &reference.sequences {
        let n = seq.token_ids.len();
        let want = if f32_reference {
            &seq.nll_f32
        } else {
            &seq.nll_bf16
        };
        if n < 2 || want.len() != n - 1 {
            return Err(input_error(format!(
                "{}: a sequence of {n} tokens has {} reference losses",
                file.display(),
                want.len()
            )));
        }
        let input = Tensor::from_slice(&seq.token_ids, (1, n), device)?;
        let hidden = model.hidden_states(&input)?.get(0)?.narrow(0, 0, n - 1)?;
        let scores = model.score_tokens(&hidden, &seq.token_ids[1..])?;
        for (i, (s, w)) in scores.iter().zip(want).enumerate() {
            let d = (s.loss - w).abs();
            max_abs = max_abs.max(d);
            sum_abs += f64::from(d);
            tokens += 1;
            if f32_reference {
                let (t1, t5) = (seq.top1_f32.get(i), seq.top5_f32.get(i));
                flips += usize::from(t1 != Some(&s.top1)) + usize::from(t5 != Some(&s.top5));
            }
        }
    }
    Ok(Agreement {
        fixture: dir.to_path_buf(),
        dtype: if f32_reference { "f32" } else { "bf16" },
        path: model.path.name(),
        tokens,
        max_abs,
        mean_abs: (sum_abs / tokens.max(1) as f64) as f32,
        flips,
    })
}
