//! OLMo-core's `TransformerConfig` (the `model` object of a step folder's `config.json`)
//! → [`ModelSpec`], plus the per-block naming the weight names depend on.
//!
//! Field names and defaults follow `olmo_core.nn.transformer.config` (3.0), and for the legacy
//! `fla` blocks, flash-linear-attention's `GatedDeltaNet`. Anything filtermon's models would
//! compute differently is refused with the key that asks for it.

use serde_json::Value;

use crate::engine::checkpoint::hf_config::{opt_bool, opt_f64, opt_usize, req_usize, Obj};
use crate::engine::model::spec::{
    AttentionSpec, Family, GdnSpec, LayerSpec, Mixer, ModelSpec, NormPlacement, Rope, Yarn,
};

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
pub fn parse(m: &Obj) -> Result<NativeModel, String> {
    expect_str(m, "name", "default", "model")?;
    for k in ["embedding_norm", "embed_scale", "block_overrides_moe"] {
        if !is_null(m.get(k)) {
            return Err(format!("`model.{k}` is not supported"));
        }
    }
    let d = req_usize(m, "d_model")?;
    let n = req_usize(m, "n_layers")?;
    let vocab = req_usize(m, "vocab_size")?;
    let configs = resolve_blocks(m, n)?;
    let blocks = configs
        .iter()
        .enumerate()
        .map(|(i, (label, b))| block(b, i, n, d).map_err(|e| format!("{label}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let lm_head = obj(m, "lm_head")?;
    expect_str(lm_head, "name", "default", "lm_head")?;
    no_bias(lm_head, "lm_head")?;
    let final_eps = rms_eps(obj(lm_head, "layer_norm")?, "lm_head.layer_norm")?;
    let same = |what: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!(
                "blocks differ in {what}, which filtermon keeps once per model"
            ))
        }
    };
    let first = blocks.first().ok_or("`n_layers` is 0")?;
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
fn common<T: PartialEq>(mut items: impl Iterator<Item = T>) -> Result<Option<T>, ()> {
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
fn resolve_blocks(m: &Obj, n: usize) -> Result<Vec<(String, &Obj)>, String> {
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
            .ok_or("`model.block` holds named blocks but `model.block_pattern` is missing")?;
        return (0..n)
            .map(|i| {
                let name = pattern[i % pattern.len()]
                    .as_str()
                    .ok_or("`model.block_pattern` holds a non-string")?;
                let b = block
                    .get(name)
                    .and_then(Value::as_object)
                    .ok_or_else(|| format!("`model.block_pattern` names unknown block `{name}`"))?;
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
                .ok_or_else(|| format!("`model.block_overrides` key `{k}` is not a layer"))?;
            let b = v
                .as_object()
                .ok_or_else(|| format!("`model.block_overrides.{k}` is not an object"))?;
            out[i] = (format!("model.block_overrides.{k}"), b);
        }
    }
    Ok(out)
}

fn block(b: &Obj, i: usize, n: usize, d: usize) -> Result<Block, String> {
    let name = b.get("name").and_then(Value::as_str).unwrap_or("default");
    for k in ["attention_residual_alpha", "feed_forward_residual_alpha"] {
        if opt_f64(b, k)?.is_some_and(|a| a != 1.0) {
            return Err(format!("`{k}` is not supported"));
        }
    }
    if !is_null(b.get("feed_forward_moe")) {
        return Err("MoE feed-forward is not supported".into());
    }
    let ff = obj(b, "feed_forward")?;
    expect_str(ff, "name", "default", "feed_forward")?;
    no_bias(ff, "feed_forward")?;
    if let Some(act) = ff.get("activation").and_then(Value::as_str) {
        if act != "silu" {
            return Err(format!(
                "`feed_forward.activation` `{act}` is not supported"
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
        other => return Err(format!("block type `{other}` is not supported")),
    };
    // `attention` is the pre-3.0 spelling of `sequence_mixer`.
    let mixer = b
        .get("sequence_mixer")
        .or_else(|| b.get("attention"))
        .and_then(Value::as_object)
        .ok_or("no `sequence_mixer`")?;
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
        return Err(format!("sequence mixer `{kind}` is not supported"));
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

fn attention(a: &Obj, i: usize, n: usize, d: usize, eps: f64) -> Result<AttentionParts, String> {
    expect_str(a, "name", "default", "sequence_mixer")?;
    no_bias(a, "sequence_mixer")?;
    for k in ["gate", "clip_qkv"] {
        if !is_null(a.get(k)) {
            return Err(format!("`sequence_mixer.{k}` is not supported"));
        }
    }
    for k in [
        "use_head_qk_norm",
        "scalable_softmax",
        "attention_sinks",
        "qk_norm_per_head_gains",
    ] {
        if opt_bool(a, k)?.unwrap_or(false) {
            return Err(format!("`sequence_mixer.{k}` is not supported"));
        }
    }
    let qk = a
        .get("qk_norm")
        .and_then(Value::as_object)
        .ok_or("attention without `qk_norm` is not supported")?;
    if rms_eps(qk, "sequence_mixer.qk_norm")? != eps {
        return Err("`qk_norm.eps` differs from `layer_norm.eps`".into());
    }
    let heads = req_usize(a, "n_heads")?;
    let kv = opt_usize(a, "n_kv_heads")?.unwrap_or(heads);
    if heads == 0 || kv == 0 || heads % kv != 0 {
        return Err(format!(
            "`n_heads` ({heads}) is not a multiple of `n_kv_heads` ({kv})"
        ));
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
fn window_size(sw: &Obj, i: usize, n: usize) -> Result<Option<usize>, String> {
    let pattern: Vec<i64> = sw
        .get("pattern")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or("`sliding_window.pattern` is missing")?
        .iter()
        .map(|v| {
            v.as_i64()
                .ok_or("`sliding_window.pattern` holds a non-integer")
        })
        .collect::<Result<_, _>>()?;
    let first = opt_bool(sw, "force_full_attention_on_first_layer")?.unwrap_or(true);
    let last = opt_bool(sw, "force_full_attention_on_last_layer")?.unwrap_or(true);
    if (first && i == 0) || (last && i + 1 == n) {
        return Ok(None);
    }
    let idx = if first { i - 1 } else { i };
    match pattern[idx % pattern.len()] {
        -1 => Ok(None),
        w if w > 0 => Ok(Some(w as usize)),
        w => Err(format!(
            "sliding window size {w} is neither positive nor -1"
        )),
    }
}

fn rope(r: &Obj) -> Result<Rope, String> {
    expect_str(r, "name", "default", "rope")?;
    if opt_f64(r, "partial_rotary_factor")?.is_some_and(|f| f != 1.0) {
        return Err("`rope.partial_rotary_factor` other than 1 is not supported".into());
    }
    let theta = opt_f64(r, "theta")?.unwrap_or(500_000.0);
    let yarn = match r.get("scaling").and_then(Value::as_object) {
        None => None,
        Some(s) => {
            let class = s.get("_CLASS_").and_then(Value::as_str).unwrap_or("");
            if !class.ends_with(".YaRNRoPEScalingConfig") {
                return Err(format!(
                    "RoPE scaling `{class}` is not supported (only YaRN)"
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
fn gdn(g: &Obj, d: usize) -> Result<GdnSpec, String> {
    if opt_bool(g, "conv_bias")?.unwrap_or(false) {
        return Err("`conv_bias: true` is not supported".into());
    }
    if opt_f64(g, "norm_eps")?.is_some_and(|e| e != 1e-5) {
        return Err("GDN `norm_eps` other than 1e-5 is not supported".into());
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
fn legacy_fla(f: &Obj, d: usize) -> Result<GdnSpec, String> {
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
            return Err(format!(
                "`fla.fla_layer_kwargs.{key}: {}` is not supported",
                !want
            ));
        }
    }
    if opt_f64(k, "norm_eps")?.is_some_and(|e| e != 1e-5) {
        return Err("GDN `norm_eps` other than 1e-5 is not supported".into());
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
) -> Result<GdnSpec, String> {
    if heads == 0 || !v_heads.is_multiple_of(heads) || v_heads < heads {
        return Err(format!(
            "GDN value heads ({v_heads}) are not a multiple of its heads ({heads})"
        ));
    }
    let head_k_dim = head_dim.unwrap_or(d / heads);
    let v = head_k_dim as f64 * expand_v;
    if v.fract() != 0.0 || v <= 0.0 {
        return Err(format!("`head_dim × expand_v` = {v} is not a whole width"));
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
fn rms_eps(ln: &Obj, at: &str) -> Result<f64, String> {
    let name = ln.get("name").and_then(Value::as_str).unwrap_or("default");
    if !matches!(name, "rms" | "fused_rms" | "cute_rms") {
        return Err(format!(
            "`{at}.name` `{name}` is not supported (only RMSNorm)"
        ));
    }
    no_bias(ln, at)?;
    if opt_bool(ln, "elementwise_affine")? == Some(false) {
        return Err(format!("`{at}.elementwise_affine: false` is not supported"));
    }
    Ok(opt_f64(ln, "eps")?.unwrap_or(1e-5))
}

/// OLMo-core gives linears and norms a bias unless the config says `bias: false`.
fn no_bias(c: &Obj, at: &str) -> Result<(), String> {
    if opt_bool(c, "bias")? != Some(false) {
        return Err(format!(
            "`{at}.bias` is not false (biases are not supported)"
        ));
    }
    Ok(())
}

fn expect_str(c: &Obj, key: &str, want: &str, at: &str) -> Result<(), String> {
    match c.get(key).and_then(Value::as_str) {
        None => Ok(()),
        Some(v) if v == want => Ok(()),
        Some(v) => Err(format!(
            "`{at}.{key}` `{v}` is not supported (only `{want}`)"
        )),
    }
}

fn obj<'a>(c: &'a Obj, key: &str) -> Result<&'a Obj, String> {
    c.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("missing object `{key}`"))
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
        let err = parse(&model(biased)).unwrap_err();
        assert!(err.contains("sequence_mixer.bias"), "{err}");
    }
}
