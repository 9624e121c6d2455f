//! Hugging Face `config.json` → [`ModelSpec`]: the file read here, the mapping in the family
//! configs of [`crate::engine::model::config`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::engine::model::config::{Config, ConfigError};
use crate::engine::model::spec::ModelSpec;
use crate::error::input_error;

/// A `config.json` that cannot be read or mapped.
#[derive(Debug, thiserror::Error)]
pub enum HfConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{}: not valid JSON: {source}", file.display())]
    Json {
        /// The file.
        file: PathBuf,
        /// Where and why.
        source: serde_json::Error,
    },
    /// The JSON is not a config filtermon can build a model from.
    #[error("{}: {source}", file.display())]
    Config {
        /// The file.
        file: PathBuf,
        /// The key and what is wrong with it.
        source: ConfigError,
    },
}

/// Reads and maps `config.json`; every problem is an input error naming the file and the key.
pub fn load(path: &Path) -> anyhow::Result<ModelSpec> {
    read(path).map_err(|e| input_error(e.to_string()))
}

fn read(path: &Path) -> Result<ModelSpec, HfConfigError> {
    let file = || path.to_path_buf();
    let text = std::fs::read_to_string(path).map_err(|source| HfConfigError::Read {
        file: file(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| HfConfigError::Json {
        file: file(),
        source,
    })?;
    parse(value).map_err(|source| HfConfigError::Config {
        file: file(),
        source,
    })
}

/// Maps a parsed `config.json`.
pub fn parse(value: Value) -> Result<ModelSpec, ConfigError> {
    Config::from_value(value)?.spec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::spec::{Mixer, NormPlacement, Rope};
    use serde_json::json;

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
        let spec = parse(json!({
            "model_type": "olmo3", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 2, "num_attention_heads": 2, "sliding_window": 4,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0,
                                "original_max_position_embeddings": 64},
        }))
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
        assert_eq!(ropes(&parse(off).expect("parse"))[1], None);
        let mut on = base.clone();
        on["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 5000.0});
        assert_eq!(
            ropes(&parse(on).expect("parse"))[1]
                .as_ref()
                .map(|r| r.theta),
            Some(5000.0)
        );
        // The legacy spelling, as OLMo-core's converter writes it.
        let mut legacy_off = base.clone();
        legacy_off["rope_theta"] = Value::Null;
        assert_eq!(ropes(&parse(legacy_off).expect("parse"))[1], None);
        // transformers fills an absent rope_parameters with theta 10000, i.e. RoPE on.
        assert_eq!(
            ropes(&parse(base).expect("parse"))[1]
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
            let err = parse(cfg).expect_err("must fail").to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn values_of_the_wrong_type_name_their_path() {
        let cases = [
            (
                json!({"model_type": "olmo3", "hidden_size": "8"}),
                "`hidden_size`: invalid type",
            ),
            (
                json!({"model_type": "olmo_hybrid", "rope_parameters": {"full_attention": 3}}),
                "`rope_parameters`",
            ),
            (json!({"model_type": 3}), "`model_type`"),
            (json!([1, 2]), "expected a JSON object"),
        ];
        for (cfg, want) in cases {
            let err = parse(cfg).expect_err("must fail").to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn a_written_twin_config_reads_back_to_its_spec() {
        use crate::engine::model::twins::{config, Twin, TwinShape};
        for shape in [TwinShape::demo(64, 32), TwinShape::bench(5, 256, 64)] {
            for twin in Twin::ALL {
                let written = config(twin, &shape);
                let json = serde_json::to_value(&written).expect("serialises");
                assert_eq!(
                    parse(json).expect("reads back"),
                    written.spec().expect("maps")
                );
            }
        }
    }
}
