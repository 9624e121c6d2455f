//! OLMo-core's `TransformerConfig` (the `model` object of a step folder's `config.json`)
//! → [`ModelSpec`], plus the per-block naming the weight names depend on.
//!
//! Field names and defaults follow `olmo_core.nn.transformer.config` (3.0), and for the legacy
//! `fla` blocks, flash-linear-attention's `GatedDeltaNet`. Anything filtermon's models would
//! compute differently is refused with the key that asks for it.

use serde_json::{Map, Value};

use crate::engine::model::spec::{
    AttentionSpec, Family, GdnSpec, LayerSpec, Mixer, ModelSpec, NormPlacement, Rope, Yarn,
};

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

/// What filtermon cannot map in OLMo-core's model config, naming the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NativeConfigError {
    /// A required key is absent (or null).
    #[error("missing `{0}`")]
    Missing(String),
    /// A required object is absent.
    #[error("missing object `{0}`")]
    MissingObject(String),
    /// A value of the wrong type.
    #[error("`{key}` is not {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What it should be, e.g. `a number`.
        expected: &'static str,
    },
    /// A setting filtermon's models would compute differently.
    #[error("{what} is not supported{only}")]
    Unsupported {
        /// The setting, as written in messages.
        what: String,
        /// What is supported instead, e.g. ` (only YaRN)`.
        only: String,
    },
    /// Blocks that disagree about what the model spec holds once.
    #[error("blocks differ in {0}, which filtermon keeps once per model")]
    BlocksDiffer(&'static str),
    /// A model without layers.
    #[error("`n_layers` is 0")]
    NoLayers,
    /// The layer pattern of named blocks is absent.
    #[error("`model.block` holds named blocks but `model.block_pattern` is missing")]
    NoBlockPattern,
    /// A pattern entry that is not a block name.
    #[error("`model.block_pattern` holds a non-string")]
    PatternEntry,
    /// A pattern entry naming no block.
    #[error("`model.block_pattern` names unknown block `{0}`")]
    UnknownBlock(String),
    /// A block override for no layer.
    #[error("`model.block_overrides` key `{0}` is not a layer")]
    OverrideKey(String),
    /// A block override that is not a block.
    #[error("`model.block_overrides.{0}` is not an object")]
    OverrideValue(String),
    /// A block without a token mixer.
    #[error("no `sequence_mixer`")]
    NoSequenceMixer,
    /// QK-norm with its own epsilon.
    #[error("`qk_norm.eps` differs from `layer_norm.eps`")]
    QkNormEps,
    /// Query heads that key/value heads do not divide.
    #[error("`n_heads` ({heads}) is not a multiple of `n_kv_heads` ({kv_heads})")]
    KvHeads {
        /// `n_heads`.
        heads: usize,
        /// `n_kv_heads`.
        kv_heads: usize,
    },
    /// A sliding window without its pattern.
    #[error("`sliding_window.pattern` is missing")]
    NoWindowPattern,
    /// A window pattern entry that is not an integer.
    #[error("`sliding_window.pattern` holds a non-integer")]
    WindowPatternEntry,
    /// A window size that is neither a length nor "full".
    #[error("sliding window size {0} is neither positive nor -1")]
    WindowSize(i64),
    /// GDN value heads that its heads do not divide.
    #[error("GDN value heads ({v_heads}) are not a multiple of its heads ({heads})")]
    GdnHeads {
        /// Query/key heads.
        heads: usize,
        /// Value heads.
        v_heads: usize,
    },
    /// A GDN value width that is not a whole number.
    #[error("`head_dim × expand_v` = {0} is not a whole width")]
    ValueWidth(f64),
    /// A convolution without taps.
    #[error("GDN `conv_size` must be at least 1")]
    ConvSize,
    /// A bias, which OLMo-core adds unless told `bias: false`.
    #[error("`{0}.bias` is not false (biases are not supported)")]
    Bias(String),
    /// The error of one block's config, with the key of the block.
    #[error("{at}: {source}")]
    InBlock {
        /// `model.block`, `model.block.NAME` or `model.block_overrides.I`.
        at: String,
        /// What is wrong in it.
        source: Box<NativeConfigError>,
    },
}

type Result<T> = std::result::Result<T, NativeConfigError>;

/// `what` is not supported; `only` says what is, when that helps.
fn unsupported(what: impl Into<String>, only: &str) -> NativeConfigError {
    NativeConfigError::Unsupported {
        what: what.into(),
        only: only.into(),
    }
}

/// How a block's tensors are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockNaming {
    /// `blocks.{i}.attention.w_q` … (attention).
    Attention,
    /// `blocks.{i}.attention.w_a` … (Gated DeltaNet as a sequence mixer).
    Gdn,
    /// `blocks.{i}.fla.inner.q_proj` … and `fla_norm` (the old `fla` block type).
    LegacyFla,
}

/// A native model: the architecture and the naming of each block.
#[derive(Debug, Clone)]
pub struct NativeModel {
    /// The architecture.
    pub spec: ModelSpec,
    /// Per block, bottom to top.
    pub naming: Vec<BlockNaming>,
}

/// Everything one block contributes, before the blocks are checked against each other.
struct Block {
    layer: LayerSpec,
    naming: BlockNaming,
    eps: f64,
    intermediate: usize,
    attention: Option<AttentionSpec>,
    gdn: Option<GdnSpec>,
}

/// Maps the `model` object; errors are messages naming the key.
pub fn parse(m: &Obj) -> Result<NativeModel> {
    expect_str(m, "name", "default", "model")?;
    for k in ["embedding_norm", "embed_scale", "block_overrides_moe"] {
        if !is_null(m.get(k)) {
            return Err(unsupported(format!("`model.{k}`"), ""));
        }
    }
    let d = req_usize(m, "d_model")?;
    let n = req_usize(m, "n_layers")?;
    let vocab = req_usize(m, "vocab_size")?;
    let configs = resolve_blocks(m, n)?;
    let blocks = configs
        .iter()
        .enumerate()
        .map(|(i, (label, b))| {
            block(b, i, n, d).map_err(|e| NativeConfigError::InBlock {
                at: label.clone(),
                source: Box::new(e),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let lm_head = obj(m, "lm_head")?;
    expect_str(lm_head, "name", "default", "lm_head")?;
    no_bias(lm_head, "lm_head")?;
    let final_eps = rms_eps(obj(lm_head, "layer_norm")?, "lm_head.layer_norm")?;
    let same = |what: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(NativeConfigError::BlocksDiffer(what))
        }
    };
    let first = blocks.first().ok_or(NativeConfigError::NoLayers)?;
    same(
        "norm epsilon",
        blocks.iter().all(|b| b.eps == final_eps) && first.eps == final_eps,
    )?;
    same(
        "feed-forward size",
        blocks.iter().all(|b| b.intermediate == first.intermediate),
    )?;
    let attention = common(blocks.iter().filter_map(|b| b.attention.clone()));
    let gdn = common(blocks.iter().filter_map(|b| b.gdn.clone()));
    same("attention shape", attention.is_ok())?;
    same("Gated DeltaNet shape", gdn.is_ok())?;
    let attention = attention.unwrap_or_default();
    let gdn = gdn.unwrap_or_default();
    let family = if gdn.is_some() {
        Family::OlmoHybrid
    } else {
        Family::Olmo3
    };
    Ok(NativeModel {
        spec: ModelSpec {
            family,
            vocab_size: vocab,
            hidden_size: d,
            intermediate_size: first.intermediate,
            rms_norm_eps: final_eps,
            tie_word_embeddings: opt_bool(m, "tie_word_embeddings")?.unwrap_or(false),
            // A pure-GDN model has no attention layer; the shape is then never used.
            attention: attention.unwrap_or(AttentionSpec {
                num_heads: 1,
                num_kv_heads: 1,
                head_dim: d,
            }),
            gdn,
            layers: blocks.iter().map(|b| b.layer.clone()).collect(),
        },
        naming: blocks.iter().map(|b| b.naming).collect(),
    })
}

/// The one value every item shares (`Ok(None)` when there are none, `Err` when they differ).
fn common<T: PartialEq>(mut items: impl Iterator<Item = T>) -> std::result::Result<Option<T>, ()> {
    let Some(first) = items.next() else {
        return Ok(None);
    };
    if items.all(|x| x == first) {
        Ok(Some(first))
    } else {
        Err(())
    }
}

/// The block config of every layer, as `resolve_block_configs` picks them.
fn resolve_blocks(m: &Obj, n: usize) -> Result<Vec<(String, &Obj)>> {
    let block = obj(m, "block")?;
    let named = !block.contains_key("name")
        && !block.contains_key("sequence_mixer")
        && !block.contains_key("attention")
        && !block.contains_key("fla");
    if named {
        let pattern = m
            .get("block_pattern")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or(NativeConfigError::NoBlockPattern)?;
        return (0..n)
            .map(|i| {
                let name = pattern[i % pattern.len()]
                    .as_str()
                    .ok_or(NativeConfigError::PatternEntry)?;
                let b = block
                    .get(name)
                    .and_then(Value::as_object)
                    .ok_or_else(|| NativeConfigError::UnknownBlock(name.into()))?;
                Ok((format!("model.block.{name}"), b))
            })
            .collect();
    }
    let mut out: Vec<(String, &Obj)> = (0..n).map(|_| ("model.block".into(), block)).collect();
    if let Some(Value::Object(overrides)) = m.get("block_overrides") {
        for (k, v) in overrides {
            let i: usize = k
                .parse()
                .ok()
                .filter(|&i| i < n)
                .ok_or_else(|| NativeConfigError::OverrideKey(k.clone()))?;
            let b = v
                .as_object()
                .ok_or_else(|| NativeConfigError::OverrideValue(k.clone()))?;
            out[i] = (format!("model.block_overrides.{k}"), b);
        }
    }
    Ok(out)
}

fn block(b: &Obj, i: usize, n: usize, d: usize) -> Result<Block> {
    let name = b.get("name").and_then(Value::as_str).unwrap_or("default");
    for k in ["attention_residual_alpha", "feed_forward_residual_alpha"] {
        if opt_f64(b, k)?.is_some_and(|a| a != 1.0) {
            return Err(unsupported(format!("`{k}`"), ""));
        }
    }
    if !is_null(b.get("feed_forward_moe")) {
        return Err(unsupported("MoE feed-forward", ""));
    }
    let ff = obj(b, "feed_forward")?;
    expect_str(ff, "name", "default", "feed_forward")?;
    no_bias(ff, "feed_forward")?;
    if let Some(act) = ff.get("activation").and_then(Value::as_str) {
        if act != "silu" {
            return Err(unsupported(
                format!("`feed_forward.activation` `{act}`"),
                "",
            ));
        }
    }
    let eps = rms_eps(obj(b, "layer_norm")?, "layer_norm")?;
    let intermediate = req_usize(ff, "hidden_size")?;
    if name == "fla" {
        let gdn = legacy_fla(obj(b, "fla")?, d)?;
        return Ok(Block {
            layer: LayerSpec {
                mixer: Mixer::GatedDeltaNet,
                norm: NormPlacement::Pre,
            },
            naming: BlockNaming::LegacyFla,
            eps,
            intermediate,
            attention: None,
            gdn: Some(gdn),
        });
    }
    let norm = match name {
        "default" => NormPlacement::Pre,
        "reordered_norm" => NormPlacement::Post,
        other => return Err(unsupported(format!("block type `{other}`"), "")),
    };
    // `attention` is the pre-3.0 spelling of `sequence_mixer`.
    let mixer = b
        .get("sequence_mixer")
        .or_else(|| b.get("attention"))
        .and_then(Value::as_object)
        .ok_or(NativeConfigError::NoSequenceMixer)?;
    let class = mixer.get("_CLASS_").and_then(Value::as_str).unwrap_or("");
    let kind = mixer.get("type").and_then(Value::as_str).unwrap_or("");
    if kind == "gated_delta_net" || class.ends_with(".GatedDeltaNetConfig") {
        return Ok(Block {
            layer: LayerSpec {
                mixer: Mixer::GatedDeltaNet,
                norm,
            },
            naming: BlockNaming::Gdn,
            eps,
            intermediate,
            attention: None,
            gdn: Some(gdn(mixer, d)?),
        });
    }
    if !(kind.is_empty() || kind == "attention") {
        return Err(unsupported(format!("sequence mixer `{kind}`"), ""));
    }
    let (spec, window, rope) = attention(mixer, i, n, d, eps)?;
    Ok(Block {
        layer: LayerSpec {
            mixer: Mixer::Attention { window, rope },
            norm,
        },
        naming: BlockNaming::Attention,
        eps,
        intermediate,
        attention: Some(spec),
        gdn: None,
    })
}

type AttentionParts = (AttentionSpec, Option<usize>, Option<Rope>);

fn attention(a: &Obj, i: usize, n: usize, d: usize, eps: f64) -> Result<AttentionParts> {
    expect_str(a, "name", "default", "sequence_mixer")?;
    no_bias(a, "sequence_mixer")?;
    for k in ["gate", "clip_qkv"] {
        if !is_null(a.get(k)) {
            return Err(unsupported(format!("`sequence_mixer.{k}`"), ""));
        }
    }
    for k in [
        "use_head_qk_norm",
        "scalable_softmax",
        "attention_sinks",
        "qk_norm_per_head_gains",
    ] {
        if opt_bool(a, k)?.unwrap_or(false) {
            return Err(unsupported(format!("`sequence_mixer.{k}`"), ""));
        }
    }
    let qk = a
        .get("qk_norm")
        .and_then(Value::as_object)
        .ok_or_else(|| unsupported("attention without `qk_norm`", ""))?;
    if rms_eps(qk, "sequence_mixer.qk_norm")? != eps {
        return Err(NativeConfigError::QkNormEps);
    }
    let heads = req_usize(a, "n_heads")?;
    let kv = opt_usize(a, "n_kv_heads")?.unwrap_or(heads);
    if heads == 0 || kv == 0 || heads % kv != 0 {
        return Err(NativeConfigError::KvHeads {
            heads,
            kv_heads: kv,
        });
    }
    let head_dim = opt_usize(a, "head_dim")?.unwrap_or(d / heads);
    let window = match a.get("sliding_window").and_then(Value::as_object) {
        Some(sw) => window_size(sw, i, n)?,
        None => None,
    };
    let rope = match a.get("rope").and_then(Value::as_object) {
        Some(r) if window.is_some() || !opt_bool(r, "no_global_rope")?.unwrap_or(false) => {
            Some(rope(r)?)
        }
        _ => None,
    };
    Ok((
        AttentionSpec {
            num_heads: heads,
            num_kv_heads: kv,
            head_dim,
        },
        window,
        rope,
    ))
}

/// `SlidingWindowAttentionConfig._get_window_size`: `None` for full attention.
fn window_size(sw: &Obj, i: usize, n: usize) -> Result<Option<usize>> {
    let pattern: Vec<i64> = sw
        .get("pattern")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or(NativeConfigError::NoWindowPattern)?
        .iter()
        .map(|v| v.as_i64().ok_or(NativeConfigError::WindowPatternEntry))
        .collect::<Result<_>>()?;
    let first = opt_bool(sw, "force_full_attention_on_first_layer")?.unwrap_or(true);
    let last = opt_bool(sw, "force_full_attention_on_last_layer")?.unwrap_or(true);
    if (first && i == 0) || (last && i + 1 == n) {
        return Ok(None);
    }
    let idx = if first { i - 1 } else { i };
    match pattern[idx % pattern.len()] {
        -1 => Ok(None),
        w if w > 0 => Ok(Some(w as usize)),
        w => Err(NativeConfigError::WindowSize(w)),
    }
}

fn rope(r: &Obj) -> Result<Rope> {
    expect_str(r, "name", "default", "rope")?;
    if opt_f64(r, "partial_rotary_factor")?.is_some_and(|f| f != 1.0) {
        return Err(unsupported("`rope.partial_rotary_factor` other than 1", ""));
    }
    let theta = opt_f64(r, "theta")?.unwrap_or(500_000.0);
    let yarn = match r.get("scaling").and_then(Value::as_object) {
        None => None,
        Some(s) => {
            let class = s.get("_CLASS_").and_then(Value::as_str).unwrap_or("");
            if !class.ends_with(".YaRNRoPEScalingConfig") {
                return Err(unsupported(
                    format!("RoPE scaling `{class}`"),
                    " (only YaRN)",
                ));
            }
            let factor = opt_f64(s, "factor")?.unwrap_or(8.0);
            Some(Yarn {
                factor,
                original_max_position_embeddings: opt_f64(s, "old_context_len")?.unwrap_or(8192.0),
                // `YaRNRoPEScalingConfig.get_attention_rescale_factor`.
                attention_factor: Some(0.1 * factor.ln() + 1.0),
                mscale: None,
                mscale_all_dim: None,
                beta_fast: opt_f64(s, "beta_fast")?.unwrap_or(32.0),
                beta_slow: opt_f64(s, "beta_slow")?.unwrap_or(1.0),
                truncate: true,
            })
        }
    };
    Ok(Rope { theta, yarn })
}

/// `GatedDeltaNetConfig` with OLMo-core's defaults.
fn gdn(g: &Obj, d: usize) -> Result<GdnSpec> {
    if opt_bool(g, "conv_bias")?.unwrap_or(false) {
        return Err(unsupported("`conv_bias: true`", ""));
    }
    if opt_f64(g, "norm_eps")?.is_some_and(|e| e != 1e-5) {
        return Err(unsupported("GDN `norm_eps` other than 1e-5", ""));
    }
    let heads = opt_usize(g, "n_heads")?.unwrap_or(16);
    gdn_dims(
        heads,
        opt_usize(g, "n_v_heads")?.unwrap_or(heads),
        opt_usize(g, "head_dim")?,
        opt_f64(g, "expand_v")?.unwrap_or(2.0),
        opt_usize(g, "conv_size")?.unwrap_or(4),
        opt_bool(g, "allow_neg_eigval")?.unwrap_or(true),
        d,
    )
}

/// The old `fla` block: `{name: "GatedDeltaNet", fla_layer_kwargs: {...}}` with
/// flash-linear-attention's defaults.
fn legacy_fla(f: &Obj, d: usize) -> Result<GdnSpec> {
    expect_str(f, "name", "GatedDeltaNet", "fla")?;
    let empty = Obj::new();
    let k = f
        .get("fla_layer_kwargs")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (key, want) in [
        ("use_gate", true),
        ("use_short_conv", true),
        ("conv_bias", false),
    ] {
        if opt_bool(k, key)?.is_some_and(|v| v != want) {
            return Err(unsupported(
                format!("`fla.fla_layer_kwargs.{key}: {}`", !want),
                "",
            ));
        }
    }
    if opt_f64(k, "norm_eps")?.is_some_and(|e| e != 1e-5) {
        return Err(unsupported("GDN `norm_eps` other than 1e-5", ""));
    }
    let heads = opt_usize(k, "num_heads")?.unwrap_or(6);
    gdn_dims(
        heads,
        opt_usize(k, "num_v_heads")?.unwrap_or(heads),
        Some(opt_usize(k, "head_dim")?.unwrap_or(256)),
        opt_f64(k, "expand_v")?.unwrap_or(2.0),
        opt_usize(k, "conv_size")?.unwrap_or(4),
        opt_bool(k, "allow_neg_eigval")?.unwrap_or(false),
        d,
    )
}

fn gdn_dims(
    heads: usize,
    v_heads: usize,
    head_dim: Option<usize>,
    expand_v: f64,
    conv: usize,
    neg: bool,
    d: usize,
) -> Result<GdnSpec> {
    if heads == 0 || !v_heads.is_multiple_of(heads) || v_heads < heads {
        return Err(NativeConfigError::GdnHeads { heads, v_heads });
    }
    if conv == 0 {
        return Err(NativeConfigError::ConvSize);
    }
    let head_k_dim = head_dim.unwrap_or(d / heads);
    let v = head_k_dim as f64 * expand_v;
    if v.fract() != 0.0 || v <= 0.0 {
        return Err(NativeConfigError::ValueWidth(v));
    }
    Ok(GdnSpec {
        num_k_heads: heads,
        num_v_heads: v_heads,
        head_k_dim,
        head_v_dim: v as usize,
        conv_kernel: conv,
        allow_neg_eigval: neg,
    })
}

/// The epsilon of an RMSNorm config without bias (OLMo-core's `LayerNorm` defaults to a bias).
fn rms_eps(ln: &Obj, at: &str) -> Result<f64> {
    let name = ln.get("name").and_then(Value::as_str).unwrap_or("default");
    if !matches!(name, "rms" | "fused_rms" | "cute_rms") {
        return Err(unsupported(
            format!("`{at}.name` `{name}`"),
            " (only RMSNorm)",
        ));
    }
    no_bias(ln, at)?;
    if opt_bool(ln, "elementwise_affine")? == Some(false) {
        return Err(unsupported(format!("`{at}.elementwise_affine: false`"), ""));
    }
    Ok(opt_f64(ln, "eps")?.unwrap_or(1e-5))
}

/// OLMo-core gives linears and norms a bias unless the config says `bias: false`.
fn no_bias(c: &Obj, at: &str) -> Result<()> {
    if opt_bool(c, "bias")? != Some(false) {
        return Err(NativeConfigError::Bias(at.into()));
    }
    Ok(())
}

fn expect_str(c: &Obj, key: &str, want: &str, at: &str) -> Result<()> {
    match c.get(key).and_then(Value::as_str) {
        None => Ok(()),
        Some(v) if v == want => Ok(()),
        Some(v) => Err(unsupported(
            format!("`{at}.{key}` `{v}`"),
            &format!(" (only `{want}`)"),
        )),
    }
}

fn obj<'a>(c: &'a Obj, key: &str) -> Result<&'a Obj> {
    c.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| NativeConfigError::MissingObject(key.into()))
}

/// A required non-negative integer.
fn req_usize(c: &Obj, k: &str) -> Result<usize> {
    opt_usize(c, k)?.ok_or_else(|| NativeConfigError::Missing(k.into()))
}

fn opt_usize(c: &Obj, k: &str) -> Result<Option<usize>> {
    opt(c, k, "a non-negative integer", |v| {
        v.as_u64().and_then(|x| usize::try_from(x).ok())
    })
}

fn opt_f64(c: &Obj, k: &str) -> Result<Option<f64>> {
    opt(c, k, "a number", Value::as_f64)
}

fn opt_bool(c: &Obj, k: &str) -> Result<Option<bool>> {
    opt(c, k, "true or false", Value::as_bool)
}

/// `c[k]` read by `read`; absent and `null` are `None`, anything `read` refuses an error.
fn opt<T>(
    c: &Obj,
    k: &str,
    expected: &'static str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v)
            .map(Some)
            .ok_or_else(|| NativeConfigError::WrongType {
                key: k.into(),
                expected,
            }),
    }
}

fn is_null(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rms() -> Value {
        json!({"name": "rms", "eps": 1e-6, "bias": false})
    }

    fn model(block: Value) -> Obj {
        json!({
            "d_model": 64, "vocab_size": 100, "n_layers": 4, "block": block,
            "lm_head": {"layer_norm": rms(), "bias": false},
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn maps_sliding_windows_and_global_rope() {
        let attn = json!({"n_heads": 4, "n_kv_heads": 2, "bias": false, "qk_norm": rms(),
            "rope": {"theta": 10000, "no_global_rope": true},
            "sliding_window": {"pattern": [8, -1], "force_full_attention_on_first_layer": false,
                               "force_full_attention_on_last_layer": true}});
        let m = model(
            json!({"name": "reordered_norm", "sequence_mixer": attn, "layer_norm": rms(),
            "feed_forward": {"hidden_size": 128, "bias": false}}),
        );
        let nm = parse(&m).expect("maps");
        let windows: Vec<(Option<usize>, bool)> = nm
            .spec
            .layers
            .iter()
            .map(|l| match &l.mixer {
                Mixer::Attention { window, rope } => (*window, rope.is_some()),
                Mixer::GatedDeltaNet => panic!("attention expected"),
            })
            .collect();
        assert_eq!(
            windows,
            [
                (Some(8), true),
                (None, false),
                (Some(8), true),
                (None, false)
            ]
        );
        assert!(nm.spec.layers.iter().all(|l| l.norm == NormPlacement::Post));
        assert_eq!(nm.spec.attention.head_dim, 16);
    }

    #[test]
    fn maps_legacy_fla_blocks_and_refuses_biases() {
        let fla = json!({"name": "fla", "fla": {"name": "GatedDeltaNet",
            "fla_layer_kwargs": {"num_heads": 2, "head_dim": 16, "allow_neg_eigval": true}},
            "layer_norm": rms(), "feed_forward": {"hidden_size": 128, "bias": false}});
        let nm = parse(&model(fla)).expect("maps");
        assert!(nm.naming.iter().all(|n| *n == BlockNaming::LegacyFla));
        let g = nm.spec.gdn.expect("gdn");
        assert_eq!((g.head_k_dim, g.head_v_dim, g.num_v_heads), (16, 32, 2));
        assert!(nm.spec.layers.iter().all(|l| l.norm == NormPlacement::Pre));
        let biased = json!({"sequence_mixer": {"n_heads": 4, "qk_norm": rms()},
            "layer_norm": rms(), "feed_forward": {"hidden_size": 128, "bias": false}});
        let err = parse(&model(biased)).unwrap_err().to_string();
        assert!(err.contains("sequence_mixer.bias"), "{err}");
    }
}
