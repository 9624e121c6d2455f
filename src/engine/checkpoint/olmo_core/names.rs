//! Hugging Face tensor names (what `CausalLm::new` asks for) → OLMo-core state-dict names.
//!
//! The mapping of a block's two norms depends on where the block puts them: OLMo-core calls
//! them `attention_norm` and `feed_forward_norm` either way, while Hugging Face names them by
//! position (`input_layernorm` before the mixer, `post_attention_layernorm` after it, …).

use super::config::BlockNaming;
use crate::engine::model::spec::NormPlacement;

/// The OLMo-core name of HF tensor `hf`, or `None` when the native format has no such tensor
/// (e.g. the fused GDN conv weight, which OLMo-core keeps split).
pub fn native_name(hf: &str, blocks: &[(BlockNaming, NormPlacement)]) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("embeddings.weight".into()),
        "model.norm.weight" => return Some("lm_head.norm.weight".into()),
        "lm_head.weight" => return Some("lm_head.w_out.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    let &(naming, placement) = blocks.get(i.parse::<usize>().ok()?)?;
    let mixer_prefix = match naming {
        BlockNaming::LegacyFla => "fla.inner",
        BlockNaming::Attention | BlockNaming::Gdn => "attention",
    };
    let mixer_norm = match naming {
        BlockNaming::LegacyFla => "fla_norm.weight",
        BlockNaming::Attention | BlockNaming::Gdn => "attention_norm.weight",
    };
    let local = match (rest, placement) {
        ("mlp.gate_proj.weight", _) => "feed_forward.w1.weight".into(),
        ("mlp.down_proj.weight", _) => "feed_forward.w2.weight".into(),
        ("mlp.up_proj.weight", _) => "feed_forward.w3.weight".into(),
        ("input_layernorm.weight", NormPlacement::Pre) => mixer_norm.into(),
        ("post_attention_layernorm.weight", NormPlacement::Pre) => {
            "feed_forward_norm.weight".into()
        }
        ("post_attention_layernorm.weight", NormPlacement::Post) => mixer_norm.into(),
        ("post_feedforward_layernorm.weight", NormPlacement::Post) => {
            "feed_forward_norm.weight".into()
        }
        _ => {
            let (kind, param) = rest.split_once('.')?;
            let native = match (kind, naming) {
                ("self_attn", BlockNaming::Attention) => attention_param(param)?,
                ("linear_attn", BlockNaming::Gdn) => gdn_param(param)?,
                ("linear_attn", BlockNaming::LegacyFla) => fla_param(param)?,
                _ => return None,
            };
            format!("{mixer_prefix}.{native}")
        }
    };
    Some(format!("blocks.{i}.{local}"))
}

fn attention_param(p: &str) -> Option<&'static str> {
    Some(match p {
        "q_proj.weight" => "w_q.weight",
        "k_proj.weight" => "w_k.weight",
        "v_proj.weight" => "w_v.weight",
        "o_proj.weight" => "w_out.weight",
        "q_norm.weight" => "q_norm.weight",
        "k_norm.weight" => "k_norm.weight",
        _ => return None,
    })
}

fn gdn_param(p: &str) -> Option<&'static str> {
    Some(match p {
        "q_proj.weight" => "w_q.weight",
        "k_proj.weight" => "w_k.weight",
        "v_proj.weight" => "w_v.weight",
        "a_proj.weight" => "w_a.weight",
        "b_proj.weight" => "w_b.weight",
        "g_proj.weight" => "w_g.weight",
        "o_proj.weight" => "w_out.weight",
        other => shared_gdn_param(other)?,
    })
}

/// flash-linear-attention's `GatedDeltaNet` uses the Hugging Face names.
fn fla_param(p: &str) -> Option<&'static str> {
    Some(match p {
        "q_proj.weight" => "q_proj.weight",
        "k_proj.weight" => "k_proj.weight",
        "v_proj.weight" => "v_proj.weight",
        "a_proj.weight" => "a_proj.weight",
        "b_proj.weight" => "b_proj.weight",
        "g_proj.weight" => "g_proj.weight",
        "o_proj.weight" => "o_proj.weight",
        other => shared_gdn_param(other)?,
    })
}

fn shared_gdn_param(p: &str) -> Option<&'static str> {
    Some(match p {
        "q_conv1d.weight" => "q_conv1d.weight",
        "k_conv1d.weight" => "k_conv1d.weight",
        "v_conv1d.weight" => "v_conv1d.weight",
        "A_log" => "A_log",
        "dt_bias" => "dt_bias",
        "o_norm.weight" => "o_norm.weight",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_norms_by_placement_and_legacy_names() {
        let blocks = [
            (BlockNaming::Gdn, NormPlacement::Pre),
            (BlockNaming::Attention, NormPlacement::Post),
            (BlockNaming::LegacyFla, NormPlacement::Pre),
            (BlockNaming::Gdn, NormPlacement::Post),
        ];
        let m = |s: &str| native_name(s, &blocks);
        assert_eq!(
            m("model.layers.0.input_layernorm.weight").as_deref(),
            Some("blocks.0.attention_norm.weight")
        );
        assert_eq!(
            m("model.layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blocks.0.feed_forward_norm.weight")
        );
        assert_eq!(
            m("model.layers.1.post_attention_layernorm.weight").as_deref(),
            Some("blocks.1.attention_norm.weight")
        );
        assert_eq!(
            m("model.layers.1.self_attn.o_proj.weight").as_deref(),
            Some("blocks.1.attention.w_out.weight")
        );
        assert_eq!(
            m("model.layers.2.linear_attn.q_proj.weight").as_deref(),
            Some("blocks.2.fla.inner.q_proj.weight")
        );
        assert_eq!(
            m("model.layers.2.input_layernorm.weight").as_deref(),
            Some("blocks.2.fla_norm.weight")
        );
        assert_eq!(
            m("model.layers.3.post_feedforward_layernorm.weight").as_deref(),
            Some("blocks.3.feed_forward_norm.weight")
        );
        assert_eq!(m("model.layers.0.linear_attn.conv1d.weight"), None);
        assert_eq!(m("model.layers.0.input_layernorm.weightx"), None);
        assert_eq!(m("model.layers.9.mlp.up_proj.weight"), None);
        assert_eq!(m("model.layers.1.linear_attn.A_log"), None);
    }
}
