//! Trainable parameters under their Hugging Face names, created from what the real loader asks
//! for, and written as `model.safetensors`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::checkpoint::sources::{self, Recording};
use crate::engine::model::spec::ModelSpec;
use crate::engine::model::CausalLm;

/// Standard deviation of the projection and embedding weights (OLMo's `init_std`).
const INIT_STD: f32 = 0.02;

/// The parameters of one model, in the order the loader requests them.
pub struct Params {
    vars: Vec<(String, Var)>,
}

impl Params {
    /// Fresh parameters for `spec`, deterministic in `seed`.
    ///
    /// Names and shapes come from running the real loader against a recording source, so the
    /// saved file holds exactly the tensors [`CausalLm::new`] reads.
    pub fn init(spec: &ModelSpec, seed: u64, device: &Device) -> anyhow::Result<Self> {
        let recording = Recording::default();
        let vb = sources::var_builder(recording.clone(), DType::F32, device);
        sources::build(spec, vb, Path::new("<recording>"))
            .context("listing the model's tensors")?;
        let mut rng = StdRng::seed_from_u64(seed);
        let vars = recording
            .recorded()
            .into_iter()
            .map(|(name, shape)| {
                let values = initial_values(&name, &shape, &mut rng);
                let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?;
                Ok((name, var))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { vars })
    }

    /// The variables with their names.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Total number of scalars.
    pub fn count(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// A model whose weights are these variables (not copies): autograd sees through it, and
    /// optimizer updates show in its next forward.
    pub fn model(&self, spec: &ModelSpec, device: &Device) -> anyhow::Result<CausalLm> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        // candle's in-memory backend hands out the tensors themselves when dtype and device
        // match, as they do here.
        let vb = sources::var_builder(map, DType::F32, device);
        sources::build(spec, vb, Path::new("<memory>"))
    }

    /// Independent copies of every variable (the start of an annealing branch).
    pub fn deep_clone(&self) -> anyhow::Result<Self> {
        let vars = self
            .vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), Var::from_tensor(&v.as_tensor().copy()?)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { vars })
    }

    /// Writes every parameter to a safetensors file.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let map: HashMap<String, Tensor> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Initial values of one tensor, chosen by its Hugging Face name as transformers initialises
/// the Olmo models: unit norms, the GDN decay and time-step priors, N(0, 0.02) elsewhere.
fn initial_values(name: &str, shape: &[usize], rng: &mut StdRng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name.ends_with("norm.weight") {
        return vec![1.0; n];
    }
    if name.ends_with("A_log") {
        // A ~ U(1, 16), stored as its log.
        return (0..n).map(|_| rng.random_range(1f32..16.0).ln()).collect();
    }
    if name.ends_with("dt_bias") {
        // dt log-uniform in [1e-3, 0.1] (floored at 1e-4), stored as softplus⁻¹(dt).
        return (0..n)
            .map(|_| {
                let dt = rng.random_range(0.001f32.ln()..0.1f32.ln()).exp().max(1e-4);
                dt + (-(-dt).exp_m1()).ln()
            })
            .collect();
    }
    if name.ends_with("conv1d.weight") {
        // torch's default for a depthwise conv: U(±1/√kernel).
        let bound = 1.0 / (shape.last().copied().unwrap_or(1) as f32).sqrt();
        return (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    }
    (0..n).map(|_| INIT_STD * normal(rng)).collect()
}

/// A standard normal sample (Box–Muller), so initialisation depends on the seed alone.
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}
