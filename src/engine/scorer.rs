//! The scoring engine: the one way from a checkpoint folder to per-token scores. `score`,
//! `compare` and the daemon (and so the demo) all go through a [`Scorer`]: open the folder
//! (Hugging Face or OLMo-core), check its tokenizer by one rule, load the model on the device
//! and dtype, score windows or an evalset. What the scores come to per filter is the analysis
//! stage's `summarize`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::engine::checkpoint::Checkpoint;
use crate::engine::model::nll::TokenScore;
use crate::engine::model::CausalLm;
use crate::engine::score::{score_evalset, score_windows, Throughput, Window};
use crate::error::input_error;
use crate::evalset::scores::EvalScores;
use crate::evalset::EvalSet;

/// How checkpoints are scored.
#[derive(Debug, Clone)]
pub struct ScoreSettings {
    /// Device.
    pub device: Device,
    /// Precision.
    pub dtype: DType,
    /// Windows per forward pass.
    pub batch: usize,
}

/// Scores checkpoints, keeping the last model loaded so that a checkpoint scored on several
/// evalsets is loaded once. [`Scorer::unload`] drops it (the daemon does when its queue is
/// empty, so that an idle daemon beside a training job holds no weights).
pub struct Scorer {
    settings: ScoreSettings,
    cached: Option<(PathBuf, CausalLm)>,
}

impl Scorer {
    /// A scorer with nothing loaded.
    pub fn new(settings: ScoreSettings) -> Self {
        Scorer {
            settings,
            cached: None,
        }
    }

    /// Whether a model is loaded.
    pub fn is_loaded(&self) -> bool {
        self.cached.is_some()
    }

    /// Drops the loaded model, if any, freeing its memory (on a GPU, the device memory).
    pub fn unload(&mut self) {
        if let Some((dir, model)) = self.cached.take() {
            drop(model);
            // A GPU keeps freed buffers in its memory pool for the next pass; give them back.
            if let Err(e) = crate::engine::device::release_cached_memory(&self.settings.device) {
                tracing::warn!(error = %e, "could not release the device's cached memory");
            }
            tracing::debug!(checkpoint = %dir.display(), "model dropped");
        }
    }

    /// The model of `ckpt`, loaded unless it is the one already loaded. The old model goes
    /// before the new one loads, so that two never share the memory.
    pub fn model(&mut self, ckpt: &Checkpoint) -> anyhow::Result<&CausalLm> {
        if self.cached.as_ref().is_none_or(|(p, _)| p != &ckpt.dir) {
            self.unload();
            let model = ckpt.load_model(self.settings.dtype, &self.settings.device)?;
            self.cached = Some((ckpt.dir.clone(), model));
        }
        match &self.cached {
            Some((_, model)) => Ok(model),
            None => anyhow::bail!("model cache is empty after loading"),
        }
    }

    /// Scores every window of `es` with `ckpt`, once its tokenizer passed
    /// [`check_evalset_tokenizer`]; `tokenizer` is the one given for the run, if any.
    pub fn score_evalset(
        &mut self,
        ckpt: &Checkpoint,
        es: &EvalSet,
        tokenizer: Option<&Path>,
    ) -> anyhow::Result<(EvalScores, Throughput)> {
        check_evalset_tokenizer(ckpt, es, tokenizer)?;
        self.score_checked_evalset(ckpt, es)
    }

    /// As [`Scorer::score_evalset`], for a checkpoint whose tokenizer the caller has already
    /// passed through [`check_evalset_tokenizer`].
    pub fn score_checked_evalset(
        &mut self,
        ckpt: &Checkpoint,
        es: &EvalSet,
    ) -> anyhow::Result<(EvalScores, Throughput)> {
        let (batch, device) = (self.settings.batch, self.settings.device.clone());
        score_evalset(self.model(ckpt)?, es, batch, &device)
    }

    /// Scores windows of token ids with `ckpt`; every id must index its embedding.
    pub fn score_windows(
        &mut self,
        ckpt: &Checkpoint,
        windows: &[Window],
    ) -> anyhow::Result<(Vec<Vec<TokenScore>>, Throughput)> {
        let vocab = ckpt.spec.vocab_size;
        if let Some(bad) = windows
            .iter()
            .flat_map(|w| &w.tokens)
            .find(|&&t| t as usize >= vocab)
        {
            return Err(input_error(format!(
                "{}: tokenizer produced id {bad}, beyond the model's vocab_size {vocab}",
                ckpt.dir.display()
            )));
        }
        let (batch, device) = (self.settings.batch, self.settings.device.clone());
        score_windows(self.model(ckpt)?, windows, batch, &device)
    }
}

/// The tokenizer rule: a checkpoint is scored on an evalset only with the tokenizer that
/// evalset was prepared with — `given` (the run's, or `--tokenizer`) when set, else the
/// folder's own — and its vocabulary must fit the embedding. An OLMo-core folder holds none, so
/// without `given` it is refused; a Hugging Face folder without one cannot be checked and is
/// scored with a warning. Returns the tokenizer checked, if any.
pub fn check_evalset_tokenizer(
    ckpt: &Checkpoint,
    es: &EvalSet,
    given: Option<&Path>,
) -> anyhow::Result<Option<PathBuf>> {
    if given.is_none() && ckpt.is_hugging_face() && ckpt.tokenizer_path().is_err() {
        tracing::warn!(checkpoint = %ckpt.dir.display(), "no tokenizer.json: cannot check it matches the evalset's");
        return Ok(None);
    }
    let path = ckpt.resolve_tokenizer(given)?;
    es.check_tokenizer(&path)?;
    Ok(Some(path))
}
