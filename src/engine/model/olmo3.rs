//! Olmo 2 and Olmo 3: their `config.json` ([`Config`]) and their softmax attention (full-width
//! QK-norm, GQA, RoPE optionally with YaRN, sliding windows). The hybrid's attention layers are
//! the same module without a window.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Deserializer, Serialize};

use super::config::{layer_types, required, ConfigError};
use super::fast_exp::{first_seen, MaskedSoftmax};
use super::host_attention;
use super::layers::{Projection, RmsNorm};
use super::path::ExecPath;
use super::spec::{AttentionSpec, Family, LayerSpec, Mixer, ModelSpec, NormPlacement, Rope, Yarn};
use super::tables::{TableKey, Tables};

/// An `olmo2` or `olmo3` `config.json`, as transformers reads it. Required keys are options so
/// that a missing one is named as the first problem found, in the order transformers needs them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Config {
    /// `olmo2` or `olmo3`.
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
    /// Query heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<usize>,
    /// Key/value heads (default: `num_attention_heads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head (default: `hidden_size / num_attention_heads`).
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
    /// RMSNorm epsilon (default 1e-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    /// LM head = embedding (default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// `full_attention` / `sliding_attention` per layer (default: three sliding, one full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Keys a sliding layer sees, the current one included (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// RoPE, current spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// RoPE base, legacy spelling; an explicit `null` is NoPE.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rope_theta: Option<Option<f64>>,
    /// RoPE scaling, legacy spelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParams>,
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

/// The two `model_type`s of this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Full attention only.
    Olmo2,
    /// Sliding-window layers and per-layer-type RoPE.
    #[default]
    Olmo3,
}

impl ModelType {
    /// The family.
    pub fn family(self) -> Family {
        match self {
            ModelType::Olmo2 => Family::Olmo2,
            ModelType::Olmo3 => Family::Olmo3,
        }
    }
}

/// `rope_parameters`: one set for every attention layer, or one per layer type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RopeParameters {
    /// Keyed by layer type.
    ByLayerType(RopeByLayerType),
    /// The same for every layer type.
    Flat(RopeParams),
}

impl<'de> Deserialize<'de> for RopeParameters {
    /// Keyed by layer type when a layer type is among the keys, as transformers decides it.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let by_type = map.contains_key("full_attention") || map.contains_key("sliding_attention");
        let value = serde_json::Value::Object(map);
        if by_type {
            serde_json::from_value(value).map(Self::ByLayerType)
        } else {
            serde_json::from_value(value).map(Self::Flat)
        }
        .map_err(serde::de::Error::custom)
    }
}

/// `rope_parameters` keyed by layer type; a type left out (or `null`) falls back to the legacy
/// keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeByLayerType {
    /// RoPE of the full-attention layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_attention: Option<RopeParams>,
    /// RoPE of the sliding-window layers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_attention: Option<RopeParams>,
}

/// One set of RoPE parameters (`rope_parameters` or the legacy `rope_scaling`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RopeParams {
    /// `default` or `yarn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// The legacy spelling of `rope_type`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub legacy_type: Option<String>,
    /// Base wavelength; absent falls back to the top-level `rope_theta`, `null` is NoPE.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rope_theta: Option<Option<f64>>,
    /// YaRN scale factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// YaRN's pretraining context length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<f64>,
    /// Multiplier of cos/sin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
    /// DeepSeek-style mscale numerator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale: Option<f64>,
    /// DeepSeek-style mscale denominator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mscale_all_dim: Option<f64>,
    /// Rotations above which frequencies are extrapolated (0 or absent: 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_fast: Option<f64>,
    /// Rotations below which frequencies are interpolated (0 or absent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta_slow: Option<f64>,
    /// Round the correction range to whole dimensions (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
}

/// A key that may be present with `null` (`Some(None)`), which differs from absent (`None`).
pub(crate) fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// The attention layer types RoPE is configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionType {
    /// `full_attention`: YaRN applies here.
    Full,
    /// `sliding_attention`: never scaled.
    Sliding,
}

/// The RoPE keys of a config, shared by the families.
pub struct RopeKeys<'a> {
    /// `rope_parameters`.
    pub parameters: Option<&'a RopeParameters>,
    /// The legacy top-level `rope_theta`.
    pub theta: Option<Option<f64>>,
    /// The legacy `rope_scaling`.
    pub scaling: Option<&'a RopeParams>,
    /// `max_position_embeddings`.
    pub max_position_embeddings: Option<i64>,
    /// The family's base when no key sets one.
    pub default_theta: f64,
}

impl RopeKeys<'_> {
    /// RoPE of one layer type, `None` for NoPE. YaRN scales full attention only.
    pub fn rope(&self, layer: AttentionType) -> std::result::Result<Option<Rope>, ConfigError> {
        // An explicit top-level `"rope_theta": null` (which OLMo-core's hybrid converter writes
        // for NoPE) turns RoPE off; an absent key leaves the family's default.
        let legacy_theta = self.theta.unwrap_or(Some(self.default_theta));
        let params = match self.parameters {
            None => None,
            Some(RopeParameters::Flat(p)) => Some(p),
            Some(RopeParameters::ByLayerType(by_type)) => match layer {
                AttentionType::Full => by_type.full_attention.as_ref(),
                AttentionType::Sliding => by_type.sliding_attention.as_ref(),
            },
        };
        let theta = params.and_then(|p| p.rope_theta).unwrap_or(legacy_theta);
        let Some(theta) = theta else {
            return Ok(None);
        };
        let scaling = params.or(self.scaling);
        let rope_type = scaling
            .and_then(|s| s.rope_type.as_deref().or(s.legacy_type.as_deref()))
            .unwrap_or("default");
        let yarn = match rope_type {
            "default" => None,
            "yarn" if layer == AttentionType::Sliding => None,
            "yarn" => {
                let none = RopeParams::default();
                let s = scaling.unwrap_or(&none);
                Some(Yarn {
                    factor: s.factor.ok_or(ConfigError::Yarn("factor"))?,
                    original_max_position_embeddings: s
                        .original_max_position_embeddings
                        .or(self.max_position_embeddings.map(|m| m as f64))
                        .ok_or(ConfigError::Yarn("original_max_position_embeddings"))?,
                    attention_factor: s.attention_factor,
                    mscale: s.mscale,
                    mscale_all_dim: s.mscale_all_dim,
                    beta_fast: s.beta_fast.filter(|v| *v != 0.0).unwrap_or(32.0),
                    beta_slow: s.beta_slow.filter(|v| *v != 0.0).unwrap_or(1.0),
                    truncate: s.truncate.unwrap_or(true),
                })
            }
            other => return Err(ConfigError::RopeType(other.to_string())),
        };
        Ok(Some(Rope { theta, yarn }))
    }
}

/// Refuses what no family computes: attention biases and MLP activations other than SiLU.
pub(crate) fn check_common(
    attention_bias: Option<bool>,
    hidden_act: Option<&str>,
) -> std::result::Result<(), ConfigError> {
    if attention_bias == Some(true) {
        return Err(ConfigError::AttentionBias);
    }
    match hidden_act {
        Some(act) if act != "silu" => Err(ConfigError::Unsupported {
            key: "hidden_act",
            setting: format!("`{act}`"),
            only: " (only silu)",
        }),
        _ => Ok(()),
    }
}

/// The attention shape, with transformers' defaults for key/value heads and head width.
pub(crate) fn attention_spec(
    hidden_size: usize,
    num_heads: usize,
    num_kv_heads: Option<usize>,
    head_dim: Option<usize>,
) -> std::result::Result<AttentionSpec, ConfigError> {
    if num_heads == 0 || !hidden_size.is_multiple_of(num_heads) && head_dim.is_none() {
        return Err(ConfigError::HeadsSplitHidden);
    }
    let num_kv_heads = num_kv_heads.unwrap_or(num_heads);
    if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
        return Err(ConfigError::KvHeads {
            heads: num_heads,
            kv_heads: num_kv_heads,
        });
    }
    Ok(AttentionSpec {
        num_heads,
        num_kv_heads,
        head_dim: head_dim.unwrap_or(hidden_size / num_heads),
    })
}

impl Config {
    /// The architecture, checked, with transformers' defaults.
    pub fn spec(&self) -> std::result::Result<ModelSpec, ConfigError> {
        check_common(self.attention_bias, self.hidden_act.as_deref())?;
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let layers = required(self.num_hidden_layers, "num_hidden_layers")?;
        let heads = required(self.num_attention_heads, "num_attention_heads")?;
        let attention =
            attention_spec(hidden_size, heads, self.num_key_value_heads, self.head_dim)?;
        let family = self.model_type.family();
        let types = layer_types(self.layer_types.as_deref(), family, layers)?;
        let window = match family {
            Family::Olmo3 => Some(self.sliding_window.unwrap_or(4096)),
            Family::Olmo2 | Family::OlmoHybrid => None,
        };
        let keys = self.rope_keys();
        let full = keys.rope(AttentionType::Full)?;
        let sliding = keys.rope(AttentionType::Sliding)?;
        let layers = types
            .iter()
            .map(|t| {
                let mixer = if t == "sliding_attention" {
                    Mixer::Attention {
                        window,
                        rope: sliding.clone(),
                    }
                } else {
                    Mixer::Attention {
                        window: None,
                        rope: full.clone(),
                    }
                };
                LayerSpec {
                    mixer,
                    norm: NormPlacement::Post,
                }
            })
            .collect();
        Ok(ModelSpec {
            family,
            vocab_size: required(self.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(self.intermediate_size, "intermediate_size")?,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-5),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            attention,
            gdn: None,
            layers,
        })
    }

    fn rope_keys(&self) -> RopeKeys<'_> {
        RopeKeys {
            parameters: self.rope_parameters.as_ref(),
            theta: self.rope_theta,
            scaling: self.rope_scaling.as_ref(),
            max_position_embeddings: self.max_position_embeddings,
            default_theta: match self.model_type {
                ModelType::Olmo3 => 500_000.0,
                ModelType::Olmo2 => 10_000.0,
            },
        }
    }
}

/// Upper bound, in bytes, on the f32 attention scores held at once, so long windows stay in
/// memory: small on the CPU, where they should stay in cache, larger on a GPU, where fewer and
/// larger blocks keep its cores busy.
fn score_budget(device: &Device) -> usize {
    if device.is_cpu() {
        64 << 20
    } else {
        2 << 30
    }
}

/// Queries per block at most: a block's keys end at its last query, so smaller blocks skip
/// most of the masked upper triangle (about half the score work of a full causal window).
const QUERY_BLOCK: usize = 128;

/// One attention mixer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `[heads·head_dim, hidden]`
    pub q: Projection,
    /// `[kv_heads·head_dim, hidden]`
    pub k: Projection,
    /// `[kv_heads·head_dim, hidden]`
    pub v: Projection,
    /// `[hidden, heads·head_dim]`
    pub o: Projection,
    /// RMSNorm over the whole q projection, before the head split.
    pub q_norm: RmsNorm,
    /// RMSNorm over the whole k projection.
    pub k_norm: RmsNorm,
    /// Head counts and width.
    pub spec: AttentionSpec,
    /// Sliding window (keys including the current one), `None` for full attention.
    pub window: Option<usize>,
    /// RoPE, `None` for NoPE layers.
    pub rope: Option<Rope>,
    /// The model's position tables (RoPE, masks).
    pub tables: Tables,
    /// Host or device kernels.
    pub path: ExecPath,
}

impl Attention {
    /// Loads a `self_attn` module of `spec`'s shape; `window` and `rope` are the layer's own.
    pub fn new(
        spec: &ModelSpec,
        window: Option<usize>,
        rope: Option<Rope>,
        tables: Tables,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (h, a) = (spec.hidden_size, &spec.attention);
        let (qd, kvd) = (a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim);
        Ok(Self {
            q: Projection::load(&vb, (qd, h), "q_proj.weight")?,
            k: Projection::load(&vb, (kvd, h), "k_proj.weight")?,
            v: Projection::load(&vb, (kvd, h), "v_proj.weight")?,
            o: Projection::load(&vb, (h, qd), "o_proj.weight")?,
            q_norm: RmsNorm::load(qd, spec.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: RmsNorm::load(kvd, spec.rms_norm_eps, vb.pp("k_norm"))?,
            spec: a.clone(),
            window,
            rope,
            tables,
            path: ExecPath::for_device(vb.device()),
        })
    }

    /// The model's f32 `cos`/`sin` tables for `seq` positions, `None` for a NoPE layer.
    fn rope_tables(&self, seq: usize, device: &Device) -> Result<Option<(Tensor, Tensor)>> {
        let Some(rope) = &self.rope else {
            return Ok(None);
        };
        let key = TableKey::Rope {
            window: self.window,
            seq,
        };
        let tables = self.tables.get(key, device, || {
            let (cos, sin) = rope_tables(rope, self.spec.head_dim, seq, device)?;
            Ok(vec![cos, sin])
        })?;
        Ok(Some((tables[0].clone(), tables[1].clone())))
    }

    /// `x: [batch, seq, hidden]` → `[batch, seq, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (
            self.spec.num_heads,
            self.spec.num_kv_heads,
            self.spec.head_dim,
        );
        let q = self.q_norm.forward(&self.q.forward(x)?)?;
        let k = self.k_norm.forward(&self.k.forward(x)?)?;
        let v = self.v.forward(x)?;
        let (q, k, v) = (
            q.reshape((b, t, nh, hd))?,
            k.reshape((b, t, nkv, hd))?,
            v.reshape((b, t, nkv, hd))?,
        );
        let scale = (hd as f64).powf(-0.5);
        // candle's fused rope and softmax kernels have no backward pass: when autograd is
        // recording (training), use the same formulas as plain tensor ops.
        let differentiable = q.track_op();
        // The host path on the CPU outside training: attention in its own kernels, on the
        // projections' layout (see `host_attention`), in f32 or in bf16 with the reference's
        // roundings (after the rotation, of the probabilities, at the output).
        let dtype = x.dtype();
        if x.device().is_cpu()
            && matches!(dtype, DType::F32 | DType::BF16)
            && !differentiable
            && self.path == ExecPath::Host
        {
            let (q, k) = match self.rope_tables(t, x.device())? {
                Some((cos, sin)) => {
                    let rot = |y: Tensor| y.apply_op3_no_bwd(&cos, &sin, &host_attention::Rope);
                    (rot(q)?, rot(k)?)
                }
                None => (q, k),
            };
            let attention = host_attention::CausalAttention {
                scale: scale as f32,
                window: self.window,
            };
            let out = q.apply_op3_no_bwd(&k, &v, &attention)?;
            return self.o.forward(&out);
        }
        let heads = |y: Tensor| y.transpose(1, 2)?.contiguous();
        let (mut q, mut k, v) = (heads(q)?, heads(k)?, heads(v)?);
        if let Some((cos, sin)) = self.rope_tables(t, x.device())? {
            // The reference keeps cos/sin in f32 and rounds the rotated q/k back to the model dtype.
            let rot = |y: &Tensor| {
                let y32 = y.to_dtype(DType::F32)?;
                if differentiable {
                    candle_nn::rotary_emb::rope_slow(&y32, &cos, &sin)
                } else {
                    candle_nn::rotary_emb::rope(&y32, &cos, &sin)
                }?
                .to_dtype(y.dtype())
            };
            q = rot(&q)?;
            k = rot(&k)?;
        }
        let rep = nh / nkv;
        let expand = |y: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(y);
            }
            y.unsqueeze(2)?
                .expand((b, nkv, rep, t, hd))?
                .reshape((b, nh, t, hd))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        // The device path keeps the scores in the model dtype: the scale goes into q (exact for
        // the power-of-two scales of 64- and 256-wide heads), the mask is added in that dtype
        // and the softmax kernel accumulates in f32. A quarter of the host path's memory
        // traffic over the scores, which on a GPU is what attention's time goes to.
        let in_dtype = self.path == ExecPath::Device && !differentiable;
        let (q, score_dtype) = if in_dtype {
            ((q * scale)?, x.dtype())
        } else {
            (q, DType::F32)
        };
        let block = (score_budget(x.device()) / (4 * b * nh * t).max(1))
            .clamp(1, QUERY_BLOCK.min(t).max(1));
        // The host path on the CPU outside training, in bf16: one pass applies the mask and the
        // softmax.
        let fused = x.device().is_cpu() && !differentiable && !in_dtype;
        let mask = if fused {
            None
        } else {
            let key = TableKey::AttentionMask {
                window: self.window,
                seq: t,
                dtype: score_dtype,
            };
            Some(self.tables.get(key, x.device(), || {
                Ok(vec![
                    causal_mask(t, self.window, x.device())?.to_dtype(score_dtype)?
                ])
            })?)
        };
        // As the reference: q·kᵀ rounded to the model dtype, scaled by the f32 scale and
        // rounded again (candle's affine would round the scale itself to bf16), softmax in f32.
        let as_reference = |qk: Tensor| -> Result<Tensor> {
            (qk.to_dtype(DType::F32)? * scale)?
                .to_dtype(x.dtype())?
                .to_dtype(DType::F32)
        };
        let mut outs = Vec::with_capacity(t.div_ceil(block));
        for start in (0..t).step_by(block) {
            let len = block.min(t - start);
            let end = start + len;
            // Keys before `key_start` are outside every query's window in this block.
            let key_start = first_seen(start, self.window);
            let qb = q.narrow(2, start, len)?;
            let kb = k.narrow(2, key_start, end - key_start)?;
            let vb = v.narrow(2, key_start, end - key_start)?;
            let qk = qb.matmul(&kb.t()?)?;
            let probs = match &mask {
                None => as_reference(qk)?.apply_op1_no_bwd(&MaskedSoftmax {
                    first_query: start,
                    first_key: key_start,
                    window: self.window,
                })?,
                Some(mask) => {
                    let scores = if in_dtype { qk } else { as_reference(qk)? };
                    let mask =
                        mask[0]
                            .narrow(0, start, len)?
                            .narrow(1, key_start, end - key_start)?;
                    let masked = scores.broadcast_add(&mask)?;
                    if differentiable {
                        candle_nn::ops::softmax(&masked, D::Minus1)?
                    } else {
                        candle_nn::ops::softmax_last_dim(&masked)?
                    }
                }
            }
            .to_dtype(x.dtype())?;
            outs.push(probs.matmul(&vb)?);
        }
        let out = Tensor::cat(&outs, 2)?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        self.o.forward(&out)
    }
}

/// Additive mask `[seq, seq]`: 0 where query `i` sees key `j`, −∞ elsewhere.
pub(super) fn causal_mask(seq: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; seq * seq];
    for (qi, row) in m.chunks_exact_mut(seq.max(1)).enumerate() {
        for (kj, slot) in row.iter_mut().enumerate() {
            let too_old = window.is_some_and(|w| kj + w <= qi);
            if kj > qi || too_old {
                *slot = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (seq, seq), device)
}

/// f32 `cos`/`sin` tables `[seq, head_dim/2]` for positions `0..seq`.
pub fn rope_tables(
    rope: &Rope,
    head_dim: usize,
    seq: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (inv_freq, scaling) = rope.inv_freq(head_dim);
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for p in 0..seq {
        for f in &inv_freq {
            // f32 product like the reference, so large positions round identically.
            let angle = p as f32 * f;
            cos.push(angle.cos() * scaling);
            sin.push(angle.sin() * scaling);
        }
    }
    Ok((
        Tensor::from_vec(cos, (seq, half), device)?,
        Tensor::from_vec(sin, (seq, half), device)?,
    ))
}
