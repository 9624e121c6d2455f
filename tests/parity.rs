//! Per-token NLL parity with Hugging Face transformers on committed random-weight fixtures
//! (made by `scripts/make_fixtures.py`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use filtermon::checkpoint::Checkpoint;
use filtermon::model::nll;
use serde_json::Value;

/// The fixture folders under `tests/fixtures/<set>` (at least `min` of them).
fn fixtures_in(set: &str, min: usize) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixture folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("reference.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= min,
        "expected the committed fixtures, found {dirs:?}"
    );
    dirs
}

/// The f32 checkpoints tuned to make f32 parity sensitive to every tensor.
fn fixtures() -> Vec<PathBuf> {
    fixtures_in("hf", 7)
}

/// Well-conditioned checkpoints stored in bf16, for a per-token bf16 tolerance.
fn bf16_fixtures() -> Vec<PathBuf> {
    fixtures_in("hf_bf16", 3)
}

fn reference(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("reference"))
        .expect("reference json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Agreement of filtermon with one fixture's reference, over every sequence.
struct Agreement {
    /// Max |ΔNLL|, nats.
    max: f32,
    /// Mean |ΔNLL|, nats.
    mean: f32,
    /// Top-1/top-5 disagreements (only counted against `nll_f32`).
    flips: usize,
}

fn compare(dir: &Path, dtype: DType, key: &str) -> Agreement {
    let ckpt = Checkpoint::open(dir).expect("open");
    let model = ckpt.load_model(dtype, &Device::Cpu).expect("load");
    let r = reference(dir);
    let mut worst = 0f32;
    let mut flips = 0;
    let (mut sum_abs, mut count) = (0f32, 0usize);
    for seq in r["sequences"].as_array().expect("sequences") {
        let ids: Vec<u32> = seq["token_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let n = ids.len();
        let input = Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu).expect("tensor");
        let hidden = model.hidden_states(&input).expect("forward");
        let h = hidden
            .get(0)
            .expect("row")
            .narrow(0, 0, n - 1)
            .expect("narrow");
        let scores = nll::score(&h, &model.lm_head, &ids[1..]).expect("score");
        let want = floats(&seq[key]);
        assert_eq!(scores.len(), want.len());
        for (i, (s, w)) in scores.iter().zip(&want).enumerate() {
            worst = worst.max((s.loss - w).abs());
            sum_abs += (s.loss - w).abs();
            count += 1;
            if key == "nll_f32" {
                let t1 = seq["top1_f32"][i].as_bool().expect("top1");
                let t5 = seq["top5_f32"][i].as_bool().expect("top5");
                flips += usize::from(s.top1 != t1) + usize::from(s.top5 != t5);
            }
        }
    }
    let mean = sum_abs / count as f32;
    eprintln!(
        "{}: {key} max |dNLL| = {worst:.2e}, mean {mean:.2e}",
        dir.display()
    );
    Agreement {
        max: worst,
        mean,
        flips,
    }
}

#[test]
fn f32_matches_transformers_within_1e4() {
    for dir in fixtures() {
        let a = compare(&dir, DType::F32, "nll_f32");
        assert!(a.max <= 1e-4, "{}: max |dNLL| {}", dir.display(), a.max);
        assert_eq!(a.flips, 0, "{}: top-k disagreements", dir.display());
    }
}

/// On the well-conditioned bf16 checkpoints every token must agree with transformers' bf16
/// eager forward (where transformers' own bf16 eager and sdpa agree to ~0.01).
#[test]
fn bf16_matches_transformers_within_005() {
    let mut failed = Vec::new();
    for dir in bf16_fixtures() {
        let a = compare(&dir, DType::BF16, "nll_bf16");
        if a.max > 0.05 {
            failed.push((dir, a.max));
        }
    }
    assert!(failed.is_empty(), "bf16 max |dNLL| beyond 0.05: {failed:?}");
}

/// The f32-tuned fixtures (head dims 6-8, heavily perturbed weights) amplify bf16 rounding:
/// transformers' own bf16 eager and sdpa attention disagree by up to 0.17 nats on single tokens
/// there, so a per-token max is not meaningful; the mean still catches a systematic bf16 error.
#[test]
fn bf16_mean_matches_transformers_within_005_on_f32_fixtures() {
    let mut failed = Vec::new();
    for dir in fixtures() {
        let a = compare(&dir, DType::BF16, "nll_bf16");
        if a.mean > 0.05 {
            failed.push((dir, a.mean));
        }
    }
    assert!(
        failed.is_empty(),
        "bf16 mean |dNLL| beyond 0.05: {failed:?}"
    );
}

/// The names transformers holds in memory (fused `conv1d`, `input_layernorm`,
/// `post_attention_layernorm`) and the `out_proj`/`norm` spellings load to the same model.
#[test]
fn tensor_name_aliases_load_the_same_model() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/hybrid_rope");
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "tokenizer.json", "reference.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).expect("copy");
    }
    let map =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).expect("load");
    let mut renamed = std::collections::HashMap::new();
    for (name, t) in &map {
        if name.contains("q_conv1d") {
            let part = |p: &str| map[&name.replace("q_conv1d", p)].clone();
            let fused = Tensor::cat(&[part("q_conv1d"), part("k_conv1d"), part("v_conv1d")], 0)
                .expect("cat");
            renamed.insert(name.replace("q_conv1d", "conv1d"), fused);
            continue;
        }
        if name.contains("k_conv1d") || name.contains("v_conv1d") {
            continue;
        }
        let new = name
            .replace("attention_layer_norm", "input_layernorm")
            .replace("feedforward_layer_norm", "post_attention_layernorm")
            .replace("linear_attn.o_proj", "linear_attn.out_proj")
            .replace("linear_attn.o_norm", "linear_attn.norm");
        renamed.insert(new, t.clone());
    }
    assert!(renamed
        .keys()
        .any(|k| k.ends_with("linear_attn.conv1d.weight")));
    candle_core::safetensors::save(&renamed, tmp.path().join("model.safetensors")).expect("save");
    let a = compare(tmp.path(), DType::F32, "nll_f32");
    assert!(
        a.max <= 1e-4 && a.flips == 0,
        "aliased names changed the scores: {}",
        a.max
    );
}
