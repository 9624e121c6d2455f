//! Three matched architectures — an Olmo 3 transformer, a 3:1 Olmo Hybrid and a pure Gated
//! DeltaNet model — as the `config.json` of each, at one shared [`TwinShape`].
//!
//! The demo trains them (and writes these configs beside the weights) and `filtermon bench`
//! times them; both read the configs back with the loader's own mapping, so what is trained or
//! timed is what a checkpoint folder would load.

use super::config::Config;
use super::{olmo3, olmo_hybrid};

/// One of the three architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Twin {
    /// `olmo3`: attention layers only.
    Transformer,
    /// `olmo_hybrid`: three Gated DeltaNet layers to one full-attention layer.
    Hybrid,
    /// `olmo_hybrid` with every layer Gated DeltaNet.
    Recurrent,
}

impl Twin {
    /// All three, in the order the demo trains them.
    pub const ALL: [Twin; 3] = [Twin::Transformer, Twin::Hybrid, Twin::Recurrent];

    /// Short run name (`transformer`, `hybrid`, `gdn`).
    pub fn name(self) -> &'static str {
        match self {
            Twin::Transformer => "transformer",
            Twin::Hybrid => "hybrid",
            Twin::Recurrent => "gdn",
        }
    }
}

/// Sizes shared by the three twins.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinShape {
    /// Vocabulary (rows of the embedding and LM head); at least the tokenizer's.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Decoder layers (a multiple of 4 keeps the 3:1 pattern exact).
    pub num_layers: usize,
    /// Attention heads (each `hidden_size / num_heads` wide).
    pub num_heads: usize,
    /// Width of one GDN query/key head.
    pub head_dim: usize,
    /// Width of one GDN value head; `None` for `head_dim`.
    pub value_head_dim: Option<usize>,
    /// GDN heads (key and value alike); `None` for `num_heads`.
    pub gdn_heads: Option<usize>,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// The transformer's sliding window, on three layers of four (Olmo 3's pattern); `None`
    /// for full attention on every layer.
    pub sliding_window: Option<usize>,
    /// Longest sequence the configs declare.
    pub max_position_embeddings: usize,
    /// RoPE base of the attention layers.
    pub rope_theta: f64,
    /// The hybrid's attention layers without position embedding (NoPE), as Olmo Hybrid
    /// checkpoints converted from OLMo-core have them.
    pub hybrid_nope: bool,
}

impl TwinShape {
    /// The demo size: about 1.9–2.0 M parameters per twin at a 4096-token vocabulary.
    pub fn demo(vocab_size: usize, seq_len: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 128,
            num_layers: 4,
            num_heads: 4,
            head_dim: 32,
            value_head_dim: None,
            gdn_heads: None,
            intermediate_size: 384,
            // Half the training context, as Olmo 3's 4096 of 8192.
            sliding_window: Some((seq_len / 2).max(1)),
            max_position_embeddings: seq_len.max(4096),
            rope_theta: 10_000.0,
            hybrid_nope: false,
        }
    }

    /// The benchmark's shapes, mirroring `twin_configs` in `scripts/bench_torch.py`: 64-wide
    /// attention heads, half as many GDN heads with 64-wide keys and 128-wide values.
    pub fn bench(layers: usize, hidden: usize, vocab: usize) -> Self {
        Self {
            vocab_size: vocab,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: (hidden / 64).max(1),
            head_dim: 64,
            value_head_dim: Some(128),
            gdn_heads: Some((hidden / 128).max(1)),
            intermediate_size: 4 * hidden,
            sliding_window: None,
            max_position_embeddings: 8192,
            rope_theta: 500_000.0,
            hybrid_nope: true,
        }
    }
}

/// The `config.json` of `twin` at `shape`.
pub fn config(twin: Twin, shape: &TwinShape) -> Config {
    let rope = |theta: Option<f64>| {
        Some(olmo3::RopeParameters::Flat(olmo3::RopeParams {
            rope_type: Some("default".into()),
            rope_theta: Some(theta),
            ..Default::default()
        }))
    };
    let layer_types = Some(layer_types(twin, shape));
    let s = shape;
    match twin {
        Twin::Transformer => Config::Olmo3(olmo3::Config {
            model_type: olmo3::ModelType::Olmo3,
            architectures: Some(vec!["Olmo3ForCausalLM".into()]),
            vocab_size: Some(s.vocab_size),
            hidden_size: Some(s.hidden_size),
            intermediate_size: Some(s.intermediate_size),
            num_hidden_layers: Some(s.num_layers),
            num_attention_heads: Some(s.num_heads),
            num_key_value_heads: Some(s.num_heads),
            hidden_act: Some("silu".into()),
            attention_bias: Some(false),
            attention_dropout: Some(0.0),
            max_position_embeddings: Some(s.max_position_embeddings as i64),
            rms_norm_eps: Some(1e-6),
            tie_word_embeddings: Some(false),
            layer_types,
            sliding_window: s.sliding_window,
            rope_parameters: rope(Some(s.rope_theta)),
            eos_token_id: Some(0.into()),
            dtype: Some("float32".into()),
            initializer_range: Some(0.02),
            ..Default::default()
        }),
        Twin::Hybrid | Twin::Recurrent => Config::OlmoHybrid(olmo_hybrid::Config {
            model_type: olmo_hybrid::ModelType::OlmoHybrid,
            architectures: Some(vec!["OlmoHybridForCausalLM".into()]),
            vocab_size: Some(s.vocab_size),
            hidden_size: Some(s.hidden_size),
            intermediate_size: Some(s.intermediate_size),
            num_hidden_layers: Some(s.num_layers),
            num_attention_heads: Some(s.num_heads),
            num_key_value_heads: Some(s.num_heads),
            hidden_act: Some("silu".into()),
            attention_bias: Some(false),
            attention_dropout: Some(0.0),
            max_position_embeddings: Some(s.max_position_embeddings as i64),
            rms_norm_eps: Some(1e-6),
            tie_word_embeddings: Some(false),
            layer_types,
            rope_parameters: rope((!s.hybrid_nope).then_some(s.rope_theta)),
            linear_num_key_heads: Some(s.gdn_heads.unwrap_or(s.num_heads)),
            linear_num_value_heads: Some(s.gdn_heads.unwrap_or(s.num_heads)),
            linear_key_head_dim: Some(s.head_dim),
            linear_value_head_dim: Some(s.value_head_dim.unwrap_or(s.head_dim)),
            linear_conv_kernel_dim: Some(4),
            linear_allow_neg_eigval: Some(true),
            linear_a_log_min: Some(0.0),
            linear_a_log_max: Some(16.0),
            linear_dt_min: Some(0.001),
            linear_dt_max: Some(0.1),
            linear_dt_init_floor: Some(0.0001),
            eos_token_id: Some(0.into()),
            dtype: Some("float32".into()),
            initializer_range: Some(0.02),
            ..Default::default()
        }),
    }
}

/// Layer types: full attention on every fourth layer (the transformer slides on the others
/// when it has a window); the hybrid keeps at least one attention layer, the last, when it has
/// fewer than four.
fn layer_types(twin: Twin, shape: &TwinShape) -> Vec<String> {
    let n = shape.num_layers;
    (0..n)
        .map(|i| {
            let every_fourth = i % 4 == 3;
            match twin {
                Twin::Transformer if every_fourth || shape.sliding_window.is_none() => {
                    "full_attention"
                }
                Twin::Transformer => "sliding_attention",
                Twin::Hybrid if every_fourth || (n < 4 && i + 1 == n) => "full_attention",
                Twin::Hybrid | Twin::Recurrent => "linear_attention",
            }
            .to_string()
        })
        .collect()
}
