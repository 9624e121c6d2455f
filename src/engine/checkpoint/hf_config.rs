//! Hugging Face `config.json` → [`ModelSpec`], with transformers' defaults.

use std::path::Path;

use serde_json::{Map, Value};

use crate::engine::model::spec::{
    AttentionSpec, Family, GdnSpec, LayerSpec, Mixer, ModelSpec, NormPlacement, Rope, Yarn,
};
use crate::error::input_error;

pub(crate) type Obj = Map<String, Value>;

/// Reads and maps `config.json`; every problem names the file and the key.
pub fn load(path: &Path) -> anyhow::Result<ModelSpec> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("{}: cannot read: {e}", path.display())))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| input_error(format!("{}: not valid JSON: {e}", path.display())))?;
    let obj = value
        .as_object()
        .ok_or_else(|| input_error(format!("{}: expected a JSON object", path.display())))?;
    parse(obj).map_err(|msg| input_error(format!("{}: {msg}", path.display())))
}

/// Maps a parsed `config.json` object; errors are plain messages naming the key.
pub fn parse(c: &Obj) -> Result<ModelSpec, String> {
    let model_type = c
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or("missing `model_type`")?;
    let family = match model_type {
        "olmo2" => Family::Olmo2,
        "olmo3" => Family::Olmo3,
        "olmo_hybrid" => Family::OlmoHybrid,
        other => {
            return Err(format!(
                "unknown model_type `{other}` (filtermon reads olmo2, olmo3 and olmo_hybrid)"
            ))
        }
    };
    if opt_bool(c, "attention_bias")?.unwrap_or(false) {
        return Err("`attention_bias: true` is not supported by these architectures".into());
    }
    if let Some(act) = c.get("hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            return Err(format!("`hidden_act` `{act}` is not supported (only silu)"));
        }
    }
    let hidden_size = req_usize(c, "hidden_size")?;
    let num_layers = req_usize(c, "num_hidden_layers")?;
    let num_heads = req_usize(c, "num_attention_heads")?;
    if num_heads == 0 || hidden_size % num_heads != 0 && opt_usize(c, "head_dim")?.is_none() {
        return Err("`hidden_size` is not a multiple of `num_attention_heads`".into());
    }
    let num_kv_heads = opt_usize(c, "num_key_value_heads")?.unwrap_or(num_heads);
    if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(format!(
            "`num_attention_heads` ({num_heads}) is not a multiple of `num_key_value_heads` ({num_kv_heads})"
        ));
    }
    let head_dim = opt_usize(c, "head_dim")?.unwrap_or(hidden_size / num_heads);
    let default_eps = if family == Family::OlmoHybrid {
        1e-6
    } else {
        1e-5
    };
    let layer_types = layer_types(c, family, num_layers)?;
    let layers = layer_specs(c, family, &layer_types)?;
    let gdn = if layer_types.iter().any(|t| t == "linear_attention") {
        Some(gdn_spec(c, hidden_size, num_heads)?)
    } else {
        None
    };
    Ok(ModelSpec {
        family,
        vocab_size: req_usize(c, "vocab_size")?,
        hidden_size,
        intermediate_size: req_usize(c, "intermediate_size")?,
        rms_norm_eps: opt_f64(c, "rms_norm_eps")?.unwrap_or(default_eps),
        tie_word_embeddings: opt_bool(c, "tie_word_embeddings")?.unwrap_or(false),
        attention: AttentionSpec {
            num_heads,
            num_kv_heads,
            head_dim,
        },
        gdn,
        layers,
    })
}

fn layer_types(c: &Obj, family: Family, n: usize) -> Result<Vec<String>, String> {
    let types: Vec<String> = match c.get("layer_types") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`layer_types[{i}]` is not a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Null) | None => match family {
            Family::Olmo2 => vec!["full_attention".into(); n],
            Family::Olmo3 => (0..n)
                .map(|i| {
                    if (i + 1) % 4 != 0 {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                    .into()
                })
                .collect(),
            Family::OlmoHybrid => {
                let mut t: Vec<String> = (0..n)
                    .map(|i| {
                        if i % 4 == 3 {
                            "full_attention"
                        } else {
                            "linear_attention"
                        }
                        .into()
                    })
                    .collect();
                if !t.iter().any(|x| x == "full_attention") {
                    if let Some(last) = t.last_mut() {
                        *last = "full_attention".into();
                    }
                }
                t
            }
        },
        Some(_) => return Err("`layer_types` is not a list".into()),
    };
    if types.len() != n {
        return Err(format!(
            "`layer_types` has {} entries but `num_hidden_layers` is {n}",
            types.len()
        ));
    }
    let allowed: &[&str] = match family {
        Family::Olmo2 => &["full_attention"],
        Family::Olmo3 => &["full_attention", "sliding_attention"],
        Family::OlmoHybrid => &["full_attention", "linear_attention"],
    };
    if let Some((i, t)) = types
        .iter()
        .enumerate()
        .find(|(_, t)| !allowed.contains(&t.as_str()))
    {
        return Err(format!(
            "`layer_types[{i}]` is `{t}`, which {} does not have (expected one of {})",
            family.name(),
            allowed.join(", ")
        ));
    }
    Ok(types)
}

fn layer_specs(c: &Obj, family: Family, types: &[String]) -> Result<Vec<LayerSpec>, String> {
    let window = match family {
        Family::Olmo3 => Some(opt_usize(c, "sliding_window")?.unwrap_or(4096)),
        _ => None,
    };
    let full_rope = rope_for(c, family, "full_attention")?;
    let sliding_rope = rope_for(c, family, "sliding_attention")?;
    Ok(types
        .iter()
        .map(|t| match t.as_str() {
            "linear_attention" => LayerSpec {
                mixer: Mixer::GatedDeltaNet,
                norm: NormPlacement::Pre,
            },
            "sliding_attention" => LayerSpec {
                mixer: Mixer::Attention {
                    window,
                    rope: sliding_rope.clone(),
                },
                norm: NormPlacement::Post,
            },
            _ => LayerSpec {
                mixer: Mixer::Attention {
                    window: None,
                    rope: full_rope.clone(),
                },
                norm: NormPlacement::Post,
            },
        })
        .collect())
}

/// RoPE of one layer type. Accepts `rope_parameters` flat or keyed by layer type,
/// and the legacy `rope_theta` + `rope_scaling`; scaling applies to full attention only.
fn rope_for(c: &Obj, family: Family, layer_type: &str) -> Result<Option<Rope>, String> {
    let default_theta = match family {
        Family::Olmo3 => Some(500_000.0),
        // transformers fills a missing hybrid `rope_parameters` with theta 10000; only an
        // explicit `"rope_theta": null` turns RoPE off (NoPE).
        Family::Olmo2 | Family::OlmoHybrid => Some(10_000.0),
    };
    // The legacy top-level `rope_theta` as transformers reads it: an explicit null (which
    // OLMo-core's hybrid converter writes for NoPE) turns RoPE off, an absent key does not.
    let legacy_theta = match c.get("rope_theta") {
        None => default_theta,
        Some(_) => opt_f64(c, "rope_theta")?,
    };
    let params: Option<&Obj> = match c.get("rope_parameters") {
        Some(Value::Object(p)) => {
            let nested = p.contains_key("full_attention") || p.contains_key("sliding_attention");
            if nested {
                match p.get(layer_type) {
                    Some(Value::Object(inner)) => Some(inner),
                    Some(Value::Null) | None => None,
                    Some(_) => {
                        return Err(format!("`rope_parameters.{layer_type}` is not an object"))
                    }
                }
            } else {
                Some(p)
            }
        }
        Some(Value::Null) | None => None,
        Some(_) => return Err("`rope_parameters` is not an object".into()),
    };
    let key = |k: &str| format!("rope_parameters.{k}");
    let theta = match params {
        Some(p) => match p.get("rope_theta") {
            Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| format!("`{}` is not a number", key("rope_theta")))?,
            ),
            None => legacy_theta,
        },
        None => legacy_theta,
    };
    let Some(theta) = theta else {
        return Ok(None);
    };
    let scaling: Option<&Obj> = match params {
        Some(p) => Some(p),
        None => match c.get("rope_scaling") {
            Some(Value::Object(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(_) => return Err("`rope_scaling` is not an object".into()),
        },
    };
    let rope_type = scaling
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let yarn = match rope_type {
        "default" => None,
        "yarn" if layer_type == "sliding_attention" => None,
        "yarn" => {
            let s = scaling.ok_or("yarn without parameters")?;
            let max_pos = opt_f64(c, "max_position_embeddings")?;
            Some(Yarn {
                factor: opt_f64(s, "factor")?.ok_or("yarn RoPE needs `factor`")?,
                original_max_position_embeddings: opt_f64(s, "original_max_position_embeddings")?
                    .or(max_pos)
                    .ok_or("yarn RoPE needs `original_max_position_embeddings`")?,
                attention_factor: opt_f64(s, "attention_factor")?,
                mscale: opt_f64(s, "mscale")?,
                mscale_all_dim: opt_f64(s, "mscale_all_dim")?,
                beta_fast: opt_f64(s, "beta_fast")?
                    .filter(|v| *v != 0.0)
                    .unwrap_or(32.0),
                beta_slow: opt_f64(s, "beta_slow")?
                    .filter(|v| *v != 0.0)
                    .unwrap_or(1.0),
                truncate: opt_bool(s, "truncate")?.unwrap_or(true),
            })
        }
        other => {
            return Err(format!(
                "rope_type `{other}` is not supported (default and yarn are)"
            ))
        }
    };
    Ok(Some(Rope { theta, yarn }))
}

fn gdn_spec(c: &Obj, hidden: usize, num_heads: usize) -> Result<GdnSpec, String> {
    let num_k_heads = opt_usize(c, "linear_num_key_heads")?.unwrap_or(num_heads);
    let num_v_heads = opt_usize(c, "linear_num_value_heads")?.unwrap_or(num_heads);
    if num_k_heads == 0 || num_v_heads % num_k_heads != 0 {
        return Err(format!(
            "`linear_num_value_heads` ({num_v_heads}) is not a multiple of `linear_num_key_heads` ({num_k_heads})"
        ));
    }
    let head_k_dim = opt_usize(c, "linear_key_head_dim")?
        .unwrap_or((0.75 * hidden as f64 / num_k_heads as f64) as usize);
    let head_v_dim = opt_usize(c, "linear_value_head_dim")?.unwrap_or(2 * head_k_dim);
    Ok(GdnSpec {
        num_k_heads,
        num_v_heads,
        head_k_dim,
        head_v_dim,
        conv_kernel: opt_usize(c, "linear_conv_kernel_dim")?.unwrap_or(4),
        allow_neg_eigval: opt_bool(c, "linear_allow_neg_eigval")?.unwrap_or(true),
    })
}

pub(crate) fn req_usize(c: &Obj, k: &str) -> Result<usize, String> {
    opt_usize(c, k)?.ok_or_else(|| format!("missing `{k}`"))
}

pub(crate) fn opt_usize(c: &Obj, k: &str) -> Result<Option<usize>, String> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x as usize))
            .ok_or_else(|| format!("`{k}` is not a non-negative integer")),
    }
}

pub(crate) fn opt_f64(c: &Obj, k: &str) -> Result<Option<f64>, String> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{k}` is not a number")),
    }
}

pub(crate) fn opt_bool(c: &Obj, k: &str) -> Result<Option<bool>, String> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| format!("`{k}` is not true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Obj {
        v.as_object().cloned().expect("object")
    }

    fn fixture(name: &str, file: &str) -> ModelSpec {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf")
            .join(name)
            .join(file);
        load(&p).expect("fixture config")
    }

    fn ropes(spec: &ModelSpec) -> Vec<Option<Rope>> {
        spec.layers
            .iter()
            .map(|l| match &l.mixer {
                Mixer::Attention { rope, .. } => rope.clone(),
                Mixer::GatedDeltaNet => None,
            })
            .collect()
    }

    #[test]
    fn legacy_rope_spelling_maps_like_rope_parameters() {
        let new = fixture("olmo3_yarn", "config.json");
        let legacy = fixture("olmo3_yarn", "config.legacy.json");
        assert_eq!(new, legacy);
        let r = ropes(&new);
        assert!(
            r[0].as_ref().expect("sliding rope").yarn.is_none(),
            "YaRN only on full attention"
        );
        assert_eq!(
            r[1].as_ref()
                .expect("full rope")
                .yarn
                .as_ref()
                .expect("yarn")
                .factor,
            8.0
        );
    }

    #[test]
    fn flat_rope_parameters_scale_full_attention_only() {
        let spec = parse(&obj(json!({
            "model_type": "olmo3", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 4,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0,
                                "original_max_position_embeddings": 64},
        })))
        .expect("parse");
        let r = ropes(&spec);
        assert_eq!(r[0].as_ref().expect("rope").theta, 1000.0);
        assert!(r[0].as_ref().expect("rope").yarn.is_none());
        assert!(r[1].as_ref().expect("rope").yarn.is_some());
        assert!(matches!(
            spec.layers[0].mixer,
            Mixer::Attention {
                window: Some(4),
                ..
            }
        ));
        assert!(matches!(
            spec.layers[1].mixer,
            Mixer::Attention { window: None, .. }
        ));
    }

    #[test]
    fn hybrid_rope_is_off_only_with_a_null_theta() {
        let base = json!({
            "model_type": "olmo_hybrid", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 2,
            "layer_types": ["linear_attention", "full_attention"],
        });
        let mut off = base.clone();
        off["rope_parameters"] = json!({"rope_type": "default", "rope_theta": null});
        assert_eq!(ropes(&parse(&obj(off)).expect("parse"))[1], None);
        let mut on = base.clone();
        on["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 5000.0});
        assert_eq!(
            ropes(&parse(&obj(on)).expect("parse"))[1]
                .as_ref()
                .map(|r| r.theta),
            Some(5000.0)
        );
        // The legacy spelling, as OLMo-core's converter writes it.
        let mut legacy_off = base.clone();
        legacy_off["rope_theta"] = Value::Null;
        assert_eq!(ropes(&parse(&obj(legacy_off)).expect("parse"))[1], None);
        // transformers fills an absent rope_parameters with theta 10000, i.e. RoPE on.
        assert_eq!(
            ropes(&parse(&obj(base)).expect("parse"))[1]
                .as_ref()
                .map(|r| r.theta),
            Some(10000.0)
        );
    }

    #[test]
    fn all_linear_hybrid_is_accepted() {
        let spec = fixture("gdn_only", "config.json");
        assert!(spec
            .layers
            .iter()
            .all(|l| l.mixer == Mixer::GatedDeltaNet && l.norm == NormPlacement::Pre));
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            (json!({"model_type": "llama"}), "unknown model_type `llama`"),
            (
                json!({"model_type": "olmo3", "hidden_size": 8}),
                "missing `num_hidden_layers`",
            ),
            (
                json!({"model_type": "olmo3", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                       "num_hidden_layers": 2, "num_attention_heads": 2, "layer_types": ["full_attention"]}),
                "`layer_types` has 1 entries",
            ),
            (
                json!({"model_type": "olmo3", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 3}),
                "num_key_value_heads",
            ),
        ];
        for (cfg, want) in cases {
            let err = parse(&obj(cfg)).expect_err("must fail");
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }
}
