//! Olmo Hybrid: Gated DeltaNet layers (pre-norm) mixed with Olmo 3's full-attention layers
//! (post-norm), or GDN layers only. Its `config.json` is [`Config`]; the GDN layer itself is in
//! [`super::gated_deltanet`], the attention in [`super::olmo3`].

use serde::{Deserialize, Serialize};

use super::config::{layer_types, required, ConfigError};
use super::olmo3::{
    attention_spec, check_common, AttentionType, RopeKeys, RopeParameters, RopeParams,
};
use super::spec::{Family, GdnSpec, LayerSpec, Mixer, ModelSpec, NormPlacement};

/// The one `model_type` of this family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ModelType {
    /// `olmo_hybrid`.
    #[default]
    #[serde(rename = "olmo_hybrid")]
    OlmoHybrid,
}

/// An `olmo_hybrid` `config.json`, as transformers reads it. Required keys are options so that
/// a missing one is named as the first problem found.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Config {
    /// `olmo_hybrid`.
    pub model_type: ModelType,
    /// transformers' model classes (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// Rows of the embedding and the LM head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// Residual width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// SwiGLU inner width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    /// Decoder layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<usize>,
    /// Query heads of the attention layers; default of the GDN head counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<usize>,
    /// Key/value heads (default: `num_attention_heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Width of one attention head (default: `hidden_size / num_attention_heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// MLP activation; only `silu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Biases on the attention projections; only `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Training-time dropout (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_dropout: Option<f64>,
    /// Longest sequence; YaRN's pretraining length when its parameters leave it out. Signed:
    /// OLMo-core's converter writes -1 for "no limit".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<i64>,
    /// RMSNorm epsilon (default 1e-6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    /// LM head = embedding (default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// `linear_attention` / `full_attention` per layer (default: full on every fourth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// RoPE of the attention layers, current spelling (absent: theta 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// RoPE base, legacy spelling; an explicit `null` is NoPE.
    #[serde(
        default,
        deserialize_with = "super::olmo3::present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rope_theta: Option<Option<f64>>,
    /// RoPE scaling, legacy spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParams>,
    /// GDN query/key heads (default: `num_attention_heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_num_key_heads: Option<usize>,
    /// GDN value heads (default: `num_attention_heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_num_value_heads: Option<usize>,
    /// GDN query/key head width (default: `0.75 · hidden_size / linear_num_key_heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_key_head_dim: Option<usize>,
    /// GDN value head width (default: twice the key head width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_value_head_dim: Option<usize>,
    /// Taps of the causal depthwise convolution (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_conv_kernel_dim: Option<usize>,
    /// β ∈ [0, 2] instead of [0, 1] (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_allow_neg_eigval: Option<bool>,
    /// Initialisation range of `A` (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_a_log_min: Option<f64>,
    /// Initialisation range of `A` (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_a_log_max: Option<f64>,
    /// Initialisation range of the time step (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_dt_min: Option<f64>,
    /// Initialisation range of the time step (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_dt_max: Option<f64>,
    /// Floor of the initial time step (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_dt_init_floor: Option<f64>,
    /// End-of-text id(s) (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    /// Stored dtype (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Initialisation scale (written for transformers, not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer_range: Option<f64>,
}

impl Config {
    /// The architecture, checked, with transformers' defaults.
    pub fn spec(&self) -> Result<ModelSpec, ConfigError> {
        check_common(self.attention_bias, self.hidden_act.as_deref())?;
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let layers = required(self.num_hidden_layers, "num_hidden_layers")?;
        let heads = required(self.num_attention_heads, "num_attention_heads")?;
        let attention =
            attention_spec(hidden_size, heads, self.num_key_value_heads, self.head_dim)?;
        let types = layer_types(self.layer_types.as_deref(), Family::OlmoHybrid, layers)?;
        // transformers fills a missing `rope_parameters` with theta 10000; only an explicit
        // `"rope_theta": null` turns RoPE off (NoPE).
        let rope = RopeKeys {
            parameters: self.rope_parameters.as_ref(),
            theta: self.rope_theta,
            scaling: self.rope_scaling.as_ref(),
            max_position_embeddings: self.max_position_embeddings,
            default_theta: 10_000.0,
        }
        .rope(AttentionType::Full)?;
        let layers = types
            .iter()
            .map(|t| match t.as_str() {
                "linear_attention" => LayerSpec {
                    mixer: Mixer::GatedDeltaNet,
                    norm: NormPlacement::Pre,
                },
                _ => LayerSpec {
                    mixer: Mixer::Attention {
                        window: None,
                        rope: rope.clone(),
                    },
                    norm: NormPlacement::Post,
                },
            })
            .collect::<Vec<_>>();
        let gdn = if types.iter().any(|t| t == "linear_attention") {
            Some(self.gdn_spec(hidden_size, heads)?)
        } else {
            None
        };
        Ok(ModelSpec {
            family: Family::OlmoHybrid,
            vocab_size: required(self.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(self.intermediate_size, "intermediate_size")?,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-6),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            attention,
            gdn,
            layers,
        })
    }

    fn gdn_spec(&self, hidden: usize, heads: usize) -> Result<GdnSpec, ConfigError> {
        let num_k_heads = self.linear_num_key_heads.unwrap_or(heads);
        let num_v_heads = self.linear_num_value_heads.unwrap_or(heads);
        if num_k_heads == 0 || !num_v_heads.is_multiple_of(num_k_heads) {
            return Err(ConfigError::GdnHeads {
                k_heads: num_k_heads,
                v_heads: num_v_heads,
            });
        }
        let head_k_dim = self
            .linear_key_head_dim
            .unwrap_or((0.75 * hidden as f64 / num_k_heads as f64) as usize);
        let conv_kernel = self.linear_conv_kernel_dim.unwrap_or(4);
        if conv_kernel == 0 {
            return Err(ConfigError::ConvKernel);
        }
        Ok(GdnSpec {
            num_k_heads,
            num_v_heads,
            head_k_dim,
            head_v_dim: self.linear_value_head_dim.unwrap_or(2 * head_k_dim),
            conv_kernel,
            allow_neg_eigval: self.linear_allow_neg_eigval.unwrap_or(true),
        })
    }
}
