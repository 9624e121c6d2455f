//! Training tiny Olmo-family models on CPU with candle autograd, writing Hugging Face
//! checkpoints on a WSD schedule (see [`schedule`]) for the demo's monitor to score.
//!
//! Separate from scoring: the models are the scorer's own [`CausalLm`], built from the trainer's
//! variables ([`params::Params::model`]), and the checkpoints are read back with the real
//! loader.

pub mod bpe;
pub mod checkpoint_out;
pub mod data;
pub mod optim;
pub mod params;
pub mod schedule;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::engine::model::config::Config;
use crate::engine::model::spec::ModelSpec;
use crate::engine::model::CausalLm;
use crate::error::input_error;
use data::Sampler;
use optim::{AdamW, AdamWConfig};
use params::Params;
use schedule::Schedule;

/// Everything a run needs besides the model config and the data.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Sequences per step.
    pub batch_size: usize,
    /// Tokens per sequence (each predicts the next, so windows hold `seq_len + 1`).
    pub seq_len: usize,
    /// Learning-rate schedule and checkpoint cadence.
    pub schedule: Schedule,
    /// Optimizer hyper-parameters.
    pub adamw: AdamWConfig,
    /// Seed of the initial weights and the batch order.
    pub seed: u64,
}

/// The kind of a written checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// From the constant-rate phase (`stepN`).
    Stable,
    /// The end of an annealing branch (`stepN-anneal`).
    Anneal,
}

/// What the trainer reports to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An optimizer step finished.
    Step {
        /// Main-run step (for a branch: the step it started from).
        step: usize,
        /// `Some(i)`: step `i` (1-based) of the annealing branch from `step`.
        anneal: Option<usize>,
        /// Learning rate used.
        lr: f64,
        /// Mean training loss of the batch, nats per token.
        loss: f32,
        /// Training throughput over all steps so far.
        tokens_per_sec: f64,
    },
    /// A checkpoint folder appeared.
    Checkpoint {
        /// Its folder.
        dir: PathBuf,
        /// Its step (tokens seen = step × tokens per step).
        step: usize,
        /// Stable or annealed.
        kind: CheckpointKind,
    },
}

/// Where a run's checkpoints go and what they carry.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Folder receiving the `stepN` folders.
    pub dir: PathBuf,
    /// Copied into every checkpoint.
    pub tokenizer: PathBuf,
}

/// One training run, advanced step by step ([`Trainer::advance`]) or to the end
/// ([`Trainer::run`]); `Send`, so it can run on its own thread.
pub struct Trainer {
    config_json: Value,
    spec: ModelSpec,
    params: Params,
    model: CausalLm,
    opt: AdamW,
    sampler: Sampler,
    cfg: TrainConfig,
    out: RunOutput,
    device: Device,
    step: usize,
    tokens: usize,
    seconds: f64,
}

impl Trainer {
    /// A fresh model for `config` (what its checkpoints' `config.json` will hold), trained on `tokens` (documents
    /// concatenated, separated by the end-of-text id).
    pub fn new(
        config: Config,
        tokens: Arc<Vec<u32>>,
        cfg: TrainConfig,
        out: RunOutput,
    ) -> anyhow::Result<Self> {
        cfg.schedule.validate()?;
        let device = Device::Cpu;
        let spec = config
            .spec()
            .map_err(|e| input_error(format!("model config: {e}")))?;
        let config_json = serde_json::to_value(&config)?;
        let params = Params::init(&spec, cfg.seed, &device)?;
        let model = params.model(&spec, &device)?;
        let opt = AdamW::new(params.vars(), cfg.adamw)?;
        let sampler = Sampler::new(tokens, cfg.seq_len, spec.vocab_size, cfg.seed)?;
        std::fs::create_dir_all(&out.dir)
            .with_context(|| format!("creating {}", out.dir.display()))?;
        Ok(Self {
            config_json,
            spec,
            params,
            model,
            opt,
            sampler,
            cfg,
            out,
            device,
            step: 0,
            tokens: 0,
            seconds: 0.0,
        })
    }

    /// Scalars in the model.
    pub fn parameter_count(&self) -> usize {
        self.params.count()
    }

    /// Main-run steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Whether the main run is complete.
    pub fn is_done(&self) -> bool {
        self.step >= self.cfg.schedule.total_steps
    }

    /// Training tokens per second so far (optimizer steps only, checkpoint writes excluded).
    pub fn tokens_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The model as trained so far (shares the trainer's weights).
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// One main-run step, then the stable checkpoint and annealing branch due at it, if any.
    /// Returns `false` once the main run is complete (and does nothing).
    pub fn advance(&mut self, on_event: &mut dyn FnMut(&Event)) -> anyhow::Result<bool> {
        if self.is_done() {
            return Ok(false);
        }
        self.step += 1;
        let step = self.step;
        let lr = self.cfg.schedule.lr(step);
        let batch = self.sampler.batch(self.cfg.batch_size, &self.device)?;
        let loss = self.timed_update(Update::Main, &batch, lr)?;
        on_event(&Event::Step {
            step,
            anneal: None,
            lr,
            loss,
            tokens_per_sec: self.tokens_per_sec(),
        });
        if self.cfg.schedule.is_checkpoint(step) {
            let dir = self.write(&schedule::stable_name(step), &self.params)?;
            on_event(&Event::Checkpoint {
                dir,
                step,
                kind: CheckpointKind::Stable,
            });
        }
        if self.cfg.schedule.is_anneal_start(step) {
            self.anneal(on_event)?;
        }
        Ok(!self.is_done())
    }

    /// Runs the rest of the schedule.
    pub fn run(&mut self, on_event: &mut dyn FnMut(&Event)) -> anyhow::Result<()> {
        while self.advance(on_event)? {}
        Ok(())
    }

    /// The annealing branch from the current step: copies of weights and optimizer state, a
    /// batch stream of its own (the main run's batches do not depend on branches), the rate
    /// decaying to zero.
    fn anneal(&mut self, on_event: &mut dyn FnMut(&Event)) -> anyhow::Result<()> {
        let from = self.step;
        let params = self.params.deep_clone()?;
        let mut branch = Branch {
            model: params.model(&self.spec, &self.device)?,
            params,
            opt: self.opt.clone(),
            sampler: self.sampler.fork(from as u64),
        };
        let n = self.cfg.schedule.anneal_steps;
        for i in 1..=n {
            let lr = self.cfg.schedule.anneal_lr(i);
            let batch = branch.sampler.batch(self.cfg.batch_size, &self.device)?;
            let loss = self.timed_update(Update::Branch(&mut branch), &batch, lr)?;
            on_event(&Event::Step {
                step: from,
                anneal: Some(i),
                lr,
                loss,
                tokens_per_sec: self.tokens_per_sec(),
            });
        }
        let dir = self.write(&schedule::anneal_name(from + n), &branch.params)?;
        on_event(&Event::Checkpoint {
            dir,
            step: from + n,
            kind: CheckpointKind::Anneal,
        });
        Ok(())
    }

    /// Forward, backward and optimizer step on the main run or a branch; returns the loss.
    fn timed_update(&mut self, which: Update, batch: &Tensor, lr: f64) -> anyhow::Result<f32> {
        let start = Instant::now();
        let (model, params, opt) = match which {
            Update::Main => (&self.model, &self.params, &mut self.opt),
            Update::Branch(b) => (&b.model, &b.params, &mut b.opt),
        };
        let loss = lm_loss(model, batch)?;
        let grads = loss.backward()?;
        opt.step(params.vars(), &grads, lr)?;
        let loss = loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            anyhow::bail!("training diverged at step {} (loss {loss})", self.step);
        }
        self.seconds += start.elapsed().as_secs_f64();
        self.tokens += batch.dim(0)? * (batch.dim(1)? - 1);
        Ok(loss)
    }

    fn write(&self, name: &str, params: &Params) -> anyhow::Result<PathBuf> {
        checkpoint_out::write(
            &self.out.dir,
            name,
            &self.config_json,
            params,
            &self.out.tokenizer,
        )
    }
}

/// An annealing branch's own weights, model view, optimizer and batches.
struct Branch {
    params: Params,
    model: CausalLm,
    opt: AdamW,
    sampler: Sampler,
}

enum Update<'a> {
    Main,
    Branch(&'a mut Branch),
}

/// Mean next-token cross-entropy of `batch: [b, t + 1]` (u32), as a differentiable scalar.
pub fn lm_loss(model: &CausalLm, batch: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t1) = batch.dims2()?;
    let t = t1 - 1;
    let inputs = batch.narrow(1, 0, t)?;
    let targets = batch.narrow(1, 1, t)?.flatten_all()?;
    let hidden = model.hidden_states(&inputs)?;
    let h = hidden.dim(2)?;
    let logits = hidden
        .reshape((b * t, h))?
        .matmul(&model.lm_head.weight()?.t()?)?;
    candle_nn::loss::cross_entropy(&logits, &targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::checkpoint::Checkpoint;
    use crate::engine::model::twins::{self, Twin, TwinShape};
    use candle_core::DType;

    fn tiny_shape() -> TwinShape {
        TwinShape {
            vocab_size: 48,
            hidden_size: 32,
            num_layers: 4,
            num_heads: 2,
            head_dim: 16,
            intermediate_size: 64,
            sliding_window: Some(8),
            max_position_embeddings: 64,
            ..TwinShape::demo(48, 16)
        }
    }

    /// A stream with structure to learn: a cycle of 12 ids with occasional noise.
    fn tokens() -> Arc<Vec<u32>> {
        Arc::new(
            (0..4000u32)
                .map(|i| if i % 37 == 0 { 40 } else { i % 12 })
                .collect(),
        )
    }

    fn config(total: usize, every: usize, anneal_every: usize) -> TrainConfig {
        TrainConfig {
            batch_size: 4,
            seq_len: 24,
            schedule: Schedule {
                peak_lr: 1e-2,
                warmup_steps: 3,
                total_steps: total,
                checkpoint_every: every,
                anneal_every,
                anneal_steps: 2,
            },
            adamw: AdamWConfig::default(),
            seed: 5,
        }
    }

    fn trainer(twin: Twin, cfg: TrainConfig, dir: &std::path::Path) -> anyhow::Result<Trainer> {
        let out = RunOutput {
            dir: dir.join(twin.name()),
            tokenizer: PathBuf::from("tests/fixtures/tokenizer.json"),
        };
        Trainer::new(twins::config(twin, &tiny_shape()), tokens(), cfg, out)
    }

    #[test]
    fn a_few_steps_lower_the_loss() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut t = trainer(Twin::Hybrid, config(25, 1000, 0), dir.path())?;
        let mut losses = Vec::new();
        t.run(&mut |e| {
            if let Event::Step { loss, .. } = e {
                losses.push(*loss);
            }
        })?;
        assert_eq!(losses.len(), 25);
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(last < first - 0.5, "loss {first} → {last}");
        assert!(t.tokens_per_sec() > 0.0);
        Ok(())
    }

    #[test]
    fn checkpoints_load_with_the_real_loader_and_score_as_trained() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        for twin in Twin::ALL {
            let mut t = trainer(twin, config(2, 2, 2), dir.path())?;
            let mut written = Vec::new();
            t.run(&mut |e| {
                if let Event::Checkpoint { dir, kind, step } = e {
                    written.push((dir.clone(), *kind, *step));
                }
            })?;
            let names: Vec<String> = written
                .iter()
                .map(|(d, _, _)| d.file_name().unwrap_or_default().to_string_lossy().into())
                .collect();
            assert_eq!(names, ["step2", "step4-anneal"], "{twin:?}");
            assert_eq!(written[1].1, CheckpointKind::Anneal);
            assert!(!dir.path().join(twin.name()).join("step2-tmp").exists());

            let ckpt = Checkpoint::open(&written[0].0)?;
            ckpt.tokenizer_path()?;
            let loaded = ckpt.load_model(DType::F32, &Device::Cpu)?;
            assert_eq!(loaded.parameter_count(), t.parameter_count());
            let batch = Sampler::new(tokens(), 24, 48, 99)?.batch(2, &Device::Cpu)?;
            let trained = lm_loss(t.model(), &batch)?.to_scalar::<f32>()?;
            let inputs = batch.narrow(1, 0, 24)?;
            let targets: Vec<u32> = batch.narrow(1, 1, 24)?.flatten_all()?.to_vec1()?;
            let hidden = loaded.hidden_states(&inputs)?.reshape((48, 32))?;
            let scored = loaded.score_tokens(&hidden, &targets)?;
            let mean = scored.iter().map(|s| f64::from(s.loss)).sum::<f64>() / 48.0;
            assert!(
                (mean - f64::from(trained)).abs() < 1e-4,
                "{twin:?}: scoring {mean} vs training {trained}"
            );
        }
        Ok(())
    }

    #[test]
    fn every_parameter_gets_a_gradient() -> anyhow::Result<()> {
        let spec = twins::config(Twin::Hybrid, &tiny_shape()).spec()?;
        let params = Params::init(&spec, 1, &Device::Cpu)?;
        let model = params.model(&spec, &Device::Cpu)?;
        let batch = Sampler::new(tokens(), 16, 48, 1)?.batch(2, &Device::Cpu)?;
        let grads = lm_loss(&model, &batch)?.backward()?;
        for (name, var) in params.vars() {
            let g = grads.get(var.as_tensor());
            let norm = match g {
                Some(g) => g.abs()?.sum_all()?.to_scalar::<f32>()?,
                None => 0.0,
            };
            assert!(norm > 0.0, "{name}: no gradient");
        }
        Ok(())
    }
}
