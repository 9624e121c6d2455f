//! Training batches: random windows of a token stream, in an order fixed by a seed.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::input_error;

/// Draws windows of `seq_len + 1` tokens at random offsets of a shared token stream.
pub struct Sampler {
    tokens: Arc<Vec<u32>>,
    window: usize,
    seed: u64,
    rng: StdRng,
}

impl Sampler {
    /// Checks that the stream holds a whole window and only ids below `vocab_size`.
    pub fn new(
        tokens: Arc<Vec<u32>>,
        seq_len: usize,
        vocab_size: usize,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let window = seq_len + 1;
        if seq_len == 0 || tokens.len() < window {
            return Err(input_error(format!(
                "training data: {} tokens cannot fill a window of {window}",
                tokens.len()
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(input_error(format!(
                "training data: token id {bad} is outside the model's vocabulary of {vocab_size}"
            )));
        }
        Ok(Self {
            tokens,
            window,
            seed,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// An independent stream over the same tokens (an annealing branch's), keyed by `key`.
    pub fn fork(&self, key: u64) -> Self {
        let seed = self.seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            tokens: Arc::clone(&self.tokens),
            window: self.window,
            seed,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `[batch, seq_len + 1]` u32 token ids.
    pub fn batch(&mut self, batch: usize, device: &Device) -> candle_core::Result<Tensor> {
        let last_start = self.tokens.len() - self.window;
        let mut ids = Vec::with_capacity(batch * self.window);
        for _ in 0..batch {
            let s = self.rng.random_range(0..=last_start);
            ids.extend_from_slice(&self.tokens[s..s + self.window]);
        }
        Tensor::from_vec(ids, (batch, self.window), device)
    }
}
