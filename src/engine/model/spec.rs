//! The architecture of a checkpoint, independent of the format it was saved in.
//!
//! Both the Hugging Face loader (`config.json`) and the OLMo-core loader map their
//! configs to a [`ModelSpec`]; the models are built from it alone.

/// The model families filtermon scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `olmo2`: post-norm transformer, full attention only.
    Olmo2,
    /// `olmo3`: `olmo2` plus sliding-window layers and per-layer-type RoPE.
    Olmo3,
    /// `olmo_hybrid`: Gated DeltaNet layers mixed with attention layers (or GDN only).
    OlmoHybrid,
}

impl Family {
    /// The `model_type` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Family::Olmo2 => "olmo2",
            Family::Olmo3 => "olmo3",
            Family::OlmoHybrid => "olmo_hybrid",
        }
    }
}

/// Where a block's norms sit relative to its mixer and MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `h = x + norm(mix(x))` (Olmo 2/3 "reordered" norm).
    Post,
    /// `h = x + mix(norm(x))`.
    Pre,
}

/// YaRN context-extension parameters (transformers' `_compute_yarn_parameters`).
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    /// Scale factor of the context extension.
    pub factor: f64,
    /// Pretraining context length.
    pub original_max_position_embeddings: f64,
    /// Multiplier of cos/sin; derived from `factor` when the config leaves it out.
    pub attention_factor: Option<f64>,
    /// DeepSeek-style mscale numerator.
    pub mscale: Option<f64>,
    /// DeepSeek-style mscale denominator.
    pub mscale_all_dim: Option<f64>,
    /// Rotations above which frequencies are extrapolated.
    pub beta_fast: f64,
    /// Rotations below which frequencies are interpolated.
    pub beta_slow: f64,
    /// Round the correction range to whole dimensions.
    pub truncate: bool,
}

/// Rotary position embedding of one attention layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// Base wavelength.
    pub theta: f64,
    /// YaRN scaling, when configured for this layer.
    pub yarn: Option<Yarn>,
}

impl Rope {
    /// Inverse frequencies (`head_dim / 2` of them) and the cos/sin multiplier.
    pub fn inv_freq(&self, head_dim: usize) -> (Vec<f32>, f32) {
        let dim = head_dim as f64;
        // Computed in f32 like transformers, so that positions × frequency round the same way.
        let pos_freqs: Vec<f32> = (0..head_dim / 2)
            .map(|i| (self.theta as f32).powf((2 * i) as f32 / dim as f32))
            .collect();
        let Some(y) = &self.yarn else {
            return (pos_freqs.iter().map(|p| 1.0 / p).collect(), 1.0);
        };
        let get_mscale = |scale: f64, m: f64| {
            if scale <= 1.0 {
                1.0
            } else {
                0.1 * m * scale.ln() + 1.0
            }
        };
        let attention_factor = match (y.attention_factor, y.mscale, y.mscale_all_dim) {
            (Some(a), _, _) => a,
            (None, Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => {
                get_mscale(y.factor, m) / get_mscale(y.factor, ma)
            }
            _ => get_mscale(y.factor, 1.0),
        };
        let correction_dim = |rot: f64| {
            dim * (y.original_max_position_embeddings / (rot * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * self.theta.ln())
        };
        let (mut low, mut high) = (correction_dim(y.beta_fast), correction_dim(y.beta_slow));
        if y.truncate {
            low = low.floor();
            high = high.ceil();
        }
        let low = low.max(0.0) as f32;
        let mut high = high.min(dim - 1.0) as f32;
        if low == high {
            high += 0.001;
        }
        let factor = y.factor as f32;
        let inv = pos_freqs
            .iter()
            .enumerate()
            .map(|(i, &pos_freq)| {
                let extrapolation = 1.0 / pos_freq;
                let interpolation = 1.0 / (factor * pos_freq);
                let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                let extrapolation_factor = 1.0 - ramp;
                interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
            })
            .collect();
        (inv, attention_factor as f32)
    }
}

/// Shape of the softmax-attention layers.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (GQA when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// Shape of the Gated DeltaNet layers.
#[derive(Debug, Clone, PartialEq)]
pub struct GdnSpec {
    /// Query/key heads.
    pub num_k_heads: usize,
    /// Value heads (a multiple of `num_k_heads`; q and k are repeated to match).
    pub num_v_heads: usize,
    /// Width of one query/key head.
    pub head_k_dim: usize,
    /// Width of one value head.
    pub head_v_dim: usize,
    /// Depthwise causal convolution kernel length.
    pub conv_kernel: usize,
    /// β ∈ [0, 2] instead of [0, 1].
    pub allow_neg_eigval: bool,
}

impl GdnSpec {
    /// Total query (and key) width.
    pub fn key_dim(&self) -> usize {
        self.num_k_heads * self.head_k_dim
    }

    /// Total value width.
    pub fn value_dim(&self) -> usize {
        self.num_v_heads * self.head_v_dim
    }
}

/// The token mixer of one layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Mixer {
    /// Softmax attention; `window` keys including the current one when sliding.
    Attention {
        /// Sliding-window length, or `None` for full attention.
        window: Option<usize>,
        /// RoPE, or `None` for NoPE.
        rope: Option<Rope>,
    },
    /// A Gated DeltaNet layer.
    GatedDeltaNet,
}

/// One decoder layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Attention or Gated DeltaNet.
    pub mixer: Mixer,
    /// Norm placement of this block.
    pub norm: NormPlacement,
}

/// Everything needed to build a model and check its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The family, for messages.
    pub family: Family,
    /// Rows of the embedding and the LM head.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// RMSNorm epsilon of the block and final norms.
    pub rms_norm_eps: f64,
    /// The LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Attention shape (used by attention layers).
    pub attention: AttentionSpec,
    /// GDN shape, present when any layer is a GDN layer.
    pub gdn: Option<GdnSpec>,
    /// The layers, bottom to top.
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// Forward FLOPs per scored token of a `window`-token window (a multiply-add counts two):
    /// every projection and the LM head; attention's scores and weighted sum over the keys a
    /// query sees on average (all earlier ones, or its sliding window); a GDN layer's
    /// convolution and its recurrence in the token-by-token form (decay, `kᵀS`, update and
    /// read-out: 7·dk·dv per value head), the least work that computes it. Norms, activations
    /// and the softmax are left out: they are not matrix work.
    pub fn flops_per_token(&self, window: usize) -> f64 {
        let (h, t) = (self.hidden_size as f64, window.max(1) as f64);
        let mlp = 2.0 * 3.0 * h * self.intermediate_size as f64;
        let a = &self.attention;
        let (qd, kvd) = (
            (a.num_heads * a.head_dim) as f64,
            (a.num_kv_heads * a.head_dim) as f64,
        );
        let mixers: f64 = self
            .layers
            .iter()
            .map(|layer| match &layer.mixer {
                Mixer::Attention { window: w, .. } => {
                    // Mean over positions 1..=t of the keys each sees.
                    let keys = match w {
                        Some(w) if (*w as f64) < t => {
                            let w = *w as f64;
                            (w * (w + 1.0) / 2.0 + (t - w) * w) / t
                        }
                        _ => (t + 1.0) / 2.0,
                    };
                    2.0 * h * (2.0 * qd + 2.0 * kvd) + 2.0 * 2.0 * qd * keys
                }
                Mixer::GatedDeltaNet => self.gdn.as_ref().map_or(0.0, |g| {
                    let (kd, vd, nv) = (
                        g.key_dim() as f64,
                        g.value_dim() as f64,
                        g.num_v_heads as f64,
                    );
                    let projections = 2.0 * h * (2.0 * kd + 2.0 * vd + 2.0 * nv) + 2.0 * vd * h;
                    let conv = 2.0 * g.conv_kernel as f64 * (2.0 * kd + vd);
                    let recurrence = 7.0 * (g.head_k_dim * g.head_v_dim) as f64 * nv;
                    projections + conv + recurrence
                }),
            })
            .sum();
        let layers = self.layers.len() as f64;
        mixers + layers * mlp + 2.0 * h * self.vocab_size as f64
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::model::twins::{config, Twin, TwinShape};

    #[test]
    fn a_sliding_window_counts_only_the_keys_it_sees() {
        // The demo transformer slides a 128-token window on 3 of its 4 layers.
        let shape = TwinShape::demo(512, 256);
        let sliding = config(Twin::Transformer, &shape).spec().expect("spec");
        let full = config(
            Twin::Transformer,
            &TwinShape {
                sliding_window: None,
                ..shape
            },
        )
        .spec()
        .expect("spec");
        // Keys per query over 256 positions: 128.5 with full attention; with the window,
        // (128·129/2 + 128·128) / 256 = 96.25.
        let qd = 128.0;
        let expected = 3.0 * 4.0 * qd * (128.5 - 96.25);
        let diff = full.flops_per_token(256) - sliding.flops_per_token(256);
        assert!((diff - expected).abs() < 1e-6, "{diff} vs {expected}");
        // A window no shorter than the sequence is full attention.
        assert_eq!(sliding.flops_per_token(64), full.flops_per_token(64));
    }
}
