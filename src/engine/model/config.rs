//! A Hugging Face `config.json`: read into its family's [`Config`] by `model_type`, and mapped
//! to the [`ModelSpec`] the models are built from.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::{Family, ModelSpec};
use super::{olmo3, olmo_hybrid};

/// What is wrong with a `config.json`, naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not a JSON object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A required key is absent (or null).
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// `model_type` names a family filtermon does not read.
    #[error("unknown model_type `{0}` (filtermon reads olmo2, olmo3 and olmo_hybrid)")]
    UnknownModelType(String),
    /// A value of the wrong type, as serde reports it, at `key` (a dotted path).
    #[error("`{key}`: {message}")]
    Invalid {
        /// Where in the file.
        key: String,
        /// serde's message.
        message: String,
    },
    /// Biased attention projections.
    #[error("`attention_bias: true` is not supported by these architectures")]
    AttentionBias,
    /// A feature these architectures do not have.
    #[error("`{key}` {setting} is not supported{only}")]
    Unsupported {
        /// The key asking for it.
        key: &'static str,
        /// Its value, as written in messages.
        setting: String,
        /// What is supported instead, e.g. ` (only silu)`.
        only: &'static str,
    },
    /// Heads that do not split the hidden size.
    #[error("`hidden_size` is not a multiple of `num_attention_heads`")]
    HeadsSplitHidden,
    /// Query heads that key/value heads do not divide.
    #[error(
        "`num_attention_heads` ({heads}) is not a multiple of `num_key_value_heads` ({kv_heads})"
    )]
    KvHeads {
        /// `num_attention_heads`.
        heads: usize,
        /// `num_key_value_heads`.
        kv_heads: usize,
    },
    /// GDN value heads that key heads do not divide.
    #[error("`linear_num_value_heads` ({v_heads}) is not a multiple of `linear_num_key_heads` ({k_heads})")]
    GdnHeads {
        /// `linear_num_key_heads`.
        k_heads: usize,
        /// `linear_num_value_heads`.
        v_heads: usize,
    },
    /// A convolution without taps.
    #[error("`linear_conv_kernel_dim` must be at least 1")]
    ConvKernel,
    /// `layer_types` of the wrong length.
    #[error("`layer_types` has {got} entries but `num_hidden_layers` is {layers}")]
    LayerCount {
        /// Entries of `layer_types`.
        got: usize,
        /// `num_hidden_layers`.
        layers: usize,
    },
    /// A layer type the family does not have.
    #[error("`layer_types[{index}]` is `{found}`, which {family} does not have (expected one of {expected})")]
    LayerType {
        /// Position in `layer_types`.
        index: usize,
        /// The type written.
        found: String,
        /// The family's name.
        family: &'static str,
        /// The family's layer types, comma-separated.
        expected: String,
    },
    /// A RoPE variant other than default and YaRN.
    #[error("rope_type `{0}` is not supported (default and yarn are)")]
    RopeType(String),
    /// YaRN without one of its parameters.
    #[error("yarn RoPE needs `{0}`")]
    Yarn(&'static str),
}

impl ConfigError {
    /// A serde error, with the path of the key it happened at.
    fn invalid(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        Self::Invalid {
            key: err.path().to_string(),
            message: err.into_inner().to_string(),
        }
    }
}

/// A `config.json` of one of the families filtermon reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Config {
    /// `olmo2` or `olmo3`.
    Olmo3(olmo3::Config),
    /// `olmo_hybrid` (with attention layers or without).
    OlmoHybrid(olmo_hybrid::Config),
}

/// Just enough of a config to pick the family.
#[derive(Deserialize)]
struct Header {
    model_type: Option<String>,
}

impl Config {
    /// Reads a parsed `config.json` into its family's config.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        if !value.is_object() {
            return Err(ConfigError::NotAnObject);
        }
        let header: Header =
            serde_path_to_error::deserialize(&value).map_err(ConfigError::invalid)?;
        let model_type = header
            .model_type
            .ok_or(ConfigError::Missing("model_type"))?;
        match model_type.as_str() {
            "olmo2" | "olmo3" => serde_path_to_error::deserialize(value).map(Config::Olmo3),
            "olmo_hybrid" => serde_path_to_error::deserialize(value).map(Config::OlmoHybrid),
            _ => return Err(ConfigError::UnknownModelType(model_type)),
        }
        .map_err(ConfigError::invalid)
    }

    /// The architecture, with transformers' defaults filled in and every setting checked.
    pub fn spec(&self) -> Result<ModelSpec, ConfigError> {
        match self {
            Config::Olmo3(c) => c.spec(),
            Config::OlmoHybrid(c) => c.spec(),
        }
    }
}

/// A required key.
pub(crate) fn required<T: Copy>(value: Option<T>, key: &'static str) -> Result<T, ConfigError> {
    value.ok_or(ConfigError::Missing(key))
}

/// `layer_types` as written, or the family's default pattern; checked against the family.
pub(crate) fn layer_types(
    written: Option<&[String]>,
    family: Family,
    layers: usize,
) -> Result<Vec<String>, ConfigError> {
    let types: Vec<String> = match written {
        Some(t) => t.to_vec(),
        None => (0..layers)
            .map(|i| default_layer_type(family, i, layers).to_string())
            .collect(),
    };
    if types.len() != layers {
        return Err(ConfigError::LayerCount {
            got: types.len(),
            layers,
        });
    }
    let allowed: &[&str] = match family {
        Family::Olmo2 => &["full_attention"],
        Family::Olmo3 => &["full_attention", "sliding_attention"],
        Family::OlmoHybrid => &["full_attention", "linear_attention"],
    };
    if let Some((index, found)) = types
        .iter()
        .enumerate()
        .find(|(_, t)| !allowed.contains(&t.as_str()))
    {
        return Err(ConfigError::LayerType {
            index,
            found: found.clone(),
            family: family.name(),
            expected: allowed.join(", "),
        });
    }
    Ok(types)
}

/// transformers' default layer pattern: Olmo 3 slides on three layers of four, the hybrid has
/// full attention on every fourth layer (and at least on the last).
fn default_layer_type(family: Family, i: usize, layers: usize) -> &'static str {
    match family {
        Family::Olmo2 => "full_attention",
        Family::Olmo3 if !(i + 1).is_multiple_of(4) => "sliding_attention",
        Family::Olmo3 => "full_attention",
        Family::OlmoHybrid if i % 4 == 3 || (layers < 4 && i + 1 == layers) => "full_attention",
        Family::OlmoHybrid => "linear_attention",
    }
}
