//! Per-token NLL parity with Hugging Face transformers on committed random-weight fixtures
//! (made by `scripts/make_fixtures.py`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use filtermon::checkpoint::Checkpoint;
use filtermon::model::nll;
use serde_json::Value;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixture folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("reference.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 7,
        "expected the committed fixtures, found {dirs:?}"
    );
    dirs
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

/// Max |ΔNLL| over every sequence of a fixture, and the count of top-1/top-5 disagreements.
fn compare(dir: &Path, dtype: DType, key: &str) -> (f32, usize) {
    let ckpt = Checkpoint::open(dir).expect("open");
    let model = ckpt.load_model(dtype, &Device::Cpu).expect("load");
    let r = reference(dir);
    let mut worst = 0f32;
    let mut flips = 0;
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
            if key == "nll_f32" {
                let t1 = seq["top1_f32"][i].as_bool().expect("top1");
                let t5 = seq["top5_f32"][i].as_bool().expect("top5");
                flips += usize::from(s.top1 != t1) + usize::from(s.top5 != t5);
            }
        }
    }
    (worst, flips)
}

#[test]
fn f32_matches_transformers_within_1e4() {
    for dir in fixtures() {
        let (worst, flips) = compare(&dir, DType::F32, "nll_f32");
        eprintln!("{}: f32 max |dNLL| = {worst:.2e}", dir.display());
        assert!(worst <= 1e-4, "{}: max |dNLL| {worst}", dir.display());
        assert_eq!(flips, 0, "{}: top-k disagreements", dir.display());
    }
}

#[test]
fn bf16_matches_transformers_within_005() {
    let mut failed = Vec::new();
    for dir in fixtures() {
        let (worst, _) = compare(&dir, DType::BF16, "nll_bf16");
        eprintln!("{}: bf16 max |dNLL| = {worst:.2e}", dir.display());
        if worst > 0.05 {
            failed.push((dir, worst));
        }
    }
    assert!(failed.is_empty(), "bf16 beyond 0.05: {failed:?}");
}
