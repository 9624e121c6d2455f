//! The three matched architectures of the demo — an Olmo 3 transformer, a 3:1 Olmo Hybrid and a
//! pure Gated DeltaNet model — as Hugging Face `config.json` objects of about equal size.
//!
//! The JSON is the single description of each architecture: the trainer maps it with the same
//! [`hf_config::parse`] the scorer uses, so what is trained is what the loader will read.

use serde_json::{json, Value};

use crate::engine::checkpoint::hf_config;
use crate::engine::model::spec::ModelSpec;
use crate::error::input_error;

/// One of the three demo architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Twin {
    /// `olmo3`: sliding-window attention layers with a full-attention layer every fourth.
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
    /// Attention heads; GDN layers use as many key and value heads.
    pub num_heads: usize,
    /// Width of one attention / GDN head.
    pub head_dim: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Sliding window of the transformer's sliding layers (half the training context, as
    /// Olmo 3's 4096 of 8192).
    pub sliding_window: usize,
    /// Longest sequence the configs declare.
    pub max_position_embeddings: usize,
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
            intermediate_size: 384,
            sliding_window: (seq_len / 2).max(1),
            max_position_embeddings: seq_len.max(4096),
        }
    }
}

/// The `config.json` of `twin` at `shape`.
pub fn config_json(twin: Twin, shape: &TwinShape) -> Value {
    let layer_types: Vec<&str> = (0..shape.num_layers)
        .map(|i| {
            let full = i % 4 == 3;
            match twin {
                Twin::Transformer if full => "full_attention",
                Twin::Transformer => "sliding_attention",
                Twin::Hybrid if full => "full_attention",
                Twin::Hybrid | Twin::Recurrent => "linear_attention",
            }
        })
        .collect();
    let mut c = json!({
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": null,
        "dtype": "float32",
        "eos_token_id": 0,
        "hidden_act": "silu",
        "hidden_size": shape.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate_size,
        "layer_types": layer_types,
        "max_position_embeddings": shape.max_position_embeddings,
        "num_attention_heads": shape.num_heads,
        "num_hidden_layers": shape.num_layers,
        "num_key_value_heads": shape.num_heads,
        "pad_token_id": null,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "tie_word_embeddings": false,
        "use_cache": true,
        "vocab_size": shape.vocab_size,
    });
    let extra = match twin {
        Twin::Transformer => json!({
            "architectures": ["Olmo3ForCausalLM"],
            "model_type": "olmo3",
            "sliding_window": shape.sliding_window,
        }),
        Twin::Hybrid | Twin::Recurrent => json!({
            "architectures": ["OlmoHybridForCausalLM"],
            "model_type": "olmo_hybrid",
            "linear_allow_neg_eigval": true,
            "linear_conv_kernel_dim": 4,
            "linear_key_head_dim": shape.head_dim,
            "linear_value_head_dim": shape.head_dim,
            "linear_num_key_heads": shape.num_heads,
            "linear_num_value_heads": shape.num_heads,
            "linear_a_log_min": 0.0,
            "linear_a_log_max": 16.0,
            "linear_dt_min": 0.001,
            "linear_dt_max": 0.1,
            "linear_dt_init_floor": 0.0001,
        }),
    };
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

/// Maps a config object with the scorer's own mapping.
pub fn spec_of(config: &Value) -> anyhow::Result<ModelSpec> {
    let obj = config
        .as_object()
        .ok_or_else(|| input_error("a model config must be a JSON object"))?;
    hf_config::parse(obj).map_err(|e| input_error(format!("model config: {e}")))
}
