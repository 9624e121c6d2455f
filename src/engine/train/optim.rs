//! AdamW whose state can be cloned, so that a WSD annealing branch continues from the stable
//! run's moments (`candle_nn::AdamW` keeps its moments private), with weight decay on matrices
//! only, as OLMo does.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// AdamW hyper-parameters (the learning rate is given per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator floor.
    pub eps: f64,
    /// Decoupled weight decay of matrices (norms, `A_log` and `dt_bias` are not decayed).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Optimizer state for a fixed list of variables.
#[derive(Clone)]
pub struct AdamW {
    config: AdamWConfig,
    step: i32,
    /// Per variable: first and second moments (detached; replaced, never written in place, so
    /// a clone shares storage safely).
    moments: Vec<(Tensor, Tensor)>,
    decays: Vec<bool>,
}

impl AdamW {
    /// Zero moments for `vars`.
    pub fn new(vars: &[(String, Var)], config: AdamWConfig) -> candle_core::Result<Self> {
        let moments = vars
            .iter()
            .map(|(_, v)| Ok((v.zeros_like()?, v.zeros_like()?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let decays = vars.iter().map(|(_, v)| v.rank() >= 2).collect();
        Ok(Self {
            config,
            step: 0,
            moments,
            decays,
        })
    }

    /// One update of `vars` (the list given to [`AdamW::new`], in the same order) at `lr`.
    pub fn step(
        &mut self,
        vars: &[(String, Var)],
        grads: &GradStore,
        lr: f64,
    ) -> candle_core::Result<()> {
        let c = self.config;
        self.step += 1;
        let scale_m = 1.0 / (1.0 - c.beta1.powi(self.step));
        let scale_v = 1.0 / (1.0 - c.beta2.powi(self.step));
        for (((_, var), (m, v)), &decay) in vars.iter().zip(&mut self.moments).zip(&self.decays) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let next_m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let next_v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&next_m * scale_m)? / ((&next_v * scale_v)?.sqrt()? + c.eps)?)?;
            let theta = var.as_tensor().detach();
            let theta = if decay {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta
            };
            var.set(&(theta - (update * lr)?)?)?;
            *m = next_m;
            *v = next_v;
        }
        Ok(())
    }
}
