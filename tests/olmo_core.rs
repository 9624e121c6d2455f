//! OLMo-core native step folders (made by `scripts/make_olmo_core_fixtures.py`): parity with
//! OLMo-core / transformers, equality with OLMo-core's own HF conversion, broken folders.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use filtermon::engine::checkpoint::{olmo_core, Checkpoint};
use serde_json::Value;

mod common;
use common::token_losses;

const FIXTURES: &[&str] = &["transformer", "hybrid", "gdn"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn run_dir(name: &str) -> PathBuf {
    root().join("olmo_core").join(name)
}

fn step(name: &str) -> PathBuf {
    run_dir(name).join("step100")
}

fn tokenizer() -> PathBuf {
    root().join("tokenizer.json")
}

fn sequences(name: &str) -> Vec<(Vec<u32>, Vec<f32>)> {
    let text = std::fs::read_to_string(run_dir(name).join("reference.json")).expect("reference");
    let r: Value = serde_json::from_str(&text).expect("json");
    r["sequences"]
        .as_array()
        .expect("sequences")
        .iter()
        .map(|s| {
            let ids = s["token_ids"].as_array().expect("ids");
            let nll = s["nll_f32"].as_array().expect("nll");
            (
                ids.iter().map(|x| x.as_u64().expect("id") as u32).collect(),
                nll.iter().map(|x| x.as_f64().expect("f") as f32).collect(),
            )
        })
        .collect()
}

/// Per-token NLLs of `dir`'s model on `ids`.
fn losses(dir: &Path, seqs: &[(Vec<u32>, Vec<f32>)]) -> Vec<Vec<f32>> {
    let model = Checkpoint::open(dir)
        .expect("open")
        .load_model(DType::F32, &Device::Cpu)
        .expect("load");
    seqs.iter()
        .map(|(ids, _)| {
            let n = ids.len();
            let input = Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu).expect("tensor");
            let h = model
                .hidden_states(&input)
                .expect("forward")
                .get(0)
                .expect("row")
                .narrow(0, 0, n - 1)
                .expect("narrow");
            model
                .score_tokens(&h, &ids[1..])
                .expect("score")
                .iter()
                .map(|s| s.loss)
                .collect()
        })
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn native_folders_match_their_references_and_their_conversions() {
    for name in FIXTURES {
        let seqs = sequences(name);
        let native = losses(&step(name), &seqs);
        let reference: Vec<Vec<f32>> = seqs.iter().map(|(_, n)| n.clone()).collect();
        let converted = losses(&run_dir(name).join("hf"), &seqs);
        let (vs_ref, vs_hf) = (max_diff(&native, &reference), max_diff(&native, &converted));
        eprintln!("{name}: max |dNLL| vs reference {vs_ref:.2e}, vs converted {vs_hf:.2e}");
        assert!(vs_ref <= 1e-4, "{name}: {vs_ref} vs the reference");
        assert!(vs_hf <= 1e-5, "{name}: {vs_hf} vs the converted folder");
    }
}

#[test]
fn optimizer_entries_are_skipped() {
    // The transformer fixture alone carries optimizer state; loading it must not touch it.
    let bytes = std::fs::read(step("transformer").join("model_and_optim/.metadata")).expect("read");
    assert!(bytes.windows(12).any(|w| w == b"optim.state."));
    let w = Checkpoint::open(&step("transformer"))
        .expect("open")
        .weights(DType::F32, &Device::Cpu)
        .expect("weights");
    assert!(w.get((304, 16), "model.embed_tokens.weight").is_ok());
}

#[test]
fn sharded_tensors_are_reassembled_from_their_chunks() {
    let bytes = std::fs::read(step("hybrid").join("model_and_optim/.metadata")).expect("read");
    assert!(
        std::fs::read_dir(step("hybrid").join("model_and_optim"))
            .expect("dir")
            .any(|e| e.expect("entry").file_name() == "__1_0.distcp"),
        "the hybrid fixture is saved by two ranks"
    );
    assert!(!bytes.is_empty());
    let ckpt = Checkpoint::open(&step("hybrid")).expect("open");
    let w = ckpt.weights(DType::F32, &Device::Cpu).expect("weights");
    let hf = Checkpoint::open(&run_dir("hybrid").join("hf")).expect("open hf");
    let wh = hf.weights(DType::F32, &Device::Cpu).expect("weights");
    let name = "model.embed_tokens.weight";
    let a = w.get((304, 16), name).expect("native");
    let b = wh.get((304, 16), name).expect("hf");
    let d: f32 = (a - b)
        .expect("sub")
        .abs()
        .expect("abs")
        .max_all()
        .expect("max")
        .to_scalar()
        .expect("scalar");
    assert_eq!(d, 0.0);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let dest = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

fn score(ckpt: &Path, tmp: &Path, extra: &[&str]) -> std::process::Output {
    let docs = tmp.join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"id\": \"a\", \"text\": \"The cat sat on the mat. def f(x): return [x]\"}\n",
    )
    .expect("docs");
    Command::new(env!("CARGO_BIN_EXE_filtermon"))
        .arg("score")
        .arg(ckpt)
        .arg("--input")
        .arg(&docs)
        .arg("--token-losses")
        .arg(tmp.join("out.jsonl"))
        .args(extra)
        .output()
        .expect("run filtermon")
}

/// Exit 2 with one line on stderr that contains `want`.
fn fails_with(out: &std::process::Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(want), "`{want}` not in: {err}");
}

#[test]
fn score_reads_native_folders_with_a_tokenizer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tok = tokenizer();
    let tok = tok.to_str().expect("utf-8 path");
    let out = score(&step("hybrid"), tmp.path(), &["--tokenizer", tok]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let native = token_losses(&tmp.path().join("out.jsonl"));
    let out = score(&run_dir("hybrid").join("hf"), tmp.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let converted = token_losses(&tmp.path().join("out.jsonl"));
    assert_eq!(native.len(), converted.len());
    assert!(native
        .iter()
        .zip(&converted)
        .all(|(a, b)| (a - b).abs() <= 1e-5));
    fails_with(&score(&step("hybrid"), tmp.path(), &[]), "--tokenizer");
}

#[test]
fn a_tokenizer_larger_than_the_embedding_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tok: Value =
        serde_json::from_str(&std::fs::read_to_string(tokenizer()).expect("read")).expect("json");
    let vocab = tok["model"]["vocab"].as_object_mut().expect("vocab");
    for i in 0..200 {
        vocab.insert(format!("extra{i}"), Value::from(300 + i));
    }
    let big = tmp.path().join("big.json");
    std::fs::write(&big, tok.to_string()).expect("write");
    let big = big.to_str().expect("utf-8 path").to_owned();
    fails_with(
        &score(&step("gdn"), tmp.path(), &["--tokenizer", &big]),
        "has only 304 rows",
    );
}

/// A copy of a fixture's step folder, broken by `damage`, must fail with exit 2 and `want`.
fn broken(fixture: &str, want: &str, damage: impl FnOnce(&Path)) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("step100");
    copy_tree(&step(fixture), &dir);
    damage(&dir.join("model_and_optim"));
    let tok = tokenizer();
    fails_with(
        &score(
            &dir,
            tmp.path(),
            &["--tokenizer", tok.to_str().expect("utf-8")],
        ),
        want,
    );
}

#[test]
fn broken_folders_exit_2_with_one_line() {
    broken("gdn", "truncated", |d| {
        for e in std::fs::read_dir(d).expect("dir") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "distcp") {
                let len = std::fs::metadata(&p).expect("meta").len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .expect("open");
                f.set_len(len / 2).expect("truncate");
            }
        }
    });
    broken("hybrid", "no storage entry for a chunk", |d| {
        let bad = root().join("olmo_core/broken/missing_chunk.metadata");
        std::fs::copy(bad, d.join(".metadata")).expect("copy");
    });
    broken("hybrid", "__1_0.distcp: cannot open", |d| {
        std::fs::remove_file(d.join("__1_0.distcp")).expect("rm");
    });
    broken("gdn", "pickle class `os.system` is not allowed", |d| {
        let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoq\x00\x85R.";
        std::fs::write(d.join(".metadata"), evil).expect("write");
    });
    broken("gdn", "leaves the checkpoint folder", |d| {
        let p = d.join(".metadata");
        let bytes = std::fs::read(&p).expect("read");
        // `__0_N.distcp` → `../_N.distcp`: same length, so the pickle stays well-formed.
        let mut out = bytes.clone();
        for i in 0..bytes.len().saturating_sub(4) {
            if &bytes[i..i + 4] == b"__0_" {
                out[i..i + 4].copy_from_slice(b"../_");
            }
        }
        assert_ne!(out, bytes);
        std::fs::write(&p, out).expect("write");
    });
}

#[test]
fn completeness_needs_the_config_and_a_whole_index() {
    assert!(olmo_core::is_complete(&step("transformer")));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("step100");
    copy_tree(&step("gdn"), &dir);
    assert!(olmo_core::is_complete(&dir));
    let index = dir.join("model_and_optim/.metadata");
    let bytes = std::fs::read(&index).expect("read");
    std::fs::write(&index, &bytes[..bytes.len() - 1]).expect("write");
    assert!(!olmo_core::is_complete(&dir), "an index cut short");
    std::fs::write(&index, &bytes).expect("write");
    std::fs::remove_file(dir.join("config.json")).expect("rm");
    assert!(!olmo_core::is_complete(&dir), "no config.json yet");
}

/// `compare` takes a native folder like an HF one: against its own conversion, every gap is 0.
#[test]
fn compare_takes_native_folders() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let es = tmp.path().join("es");
    let tok = tokenizer();
    let prep = std::process::Command::new(env!("CARGO_BIN_EXE_filtermon"))
        .args(["prepare", "--window", "128", "--input"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/eval/python"))
        .arg("--tokenizer")
        .arg(&tok)
        .arg("--out")
        .arg(&es)
        .output()
        .expect("prepare");
    assert!(
        prep.status.success(),
        "{}",
        String::from_utf8_lossy(&prep.stderr)
    );
    let out = tmp.path().join("cmp");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_filtermon"))
        .arg("compare")
        .arg(step("transformer"))
        .arg(run_dir("transformer").join("hf"))
        .arg("--tokenizer")
        .arg(&tok)
        .arg("--evalset")
        .arg(&es)
        .args(["--resamples", "50", "--out"])
        .arg(&out)
        .output()
        .expect("compare");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).expect("metrics"))
            .expect("json");
    let text = m.to_string();
    assert!(text.contains("\"category\""), "metrics lack categories");
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.contains("filter=all") && stdout.contains("no difference"),
        "{stdout}"
    );
}
