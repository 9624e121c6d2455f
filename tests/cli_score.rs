//! `filtermon score` end to end: output format, and one-line exit-2 errors for bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

mod common;
use common::{assert_input_error, copy_dir, fixture, read_jsonl, token_losses};

fn docs(dir: &Path, lines: &[&str]) -> PathBuf {
    let p = dir.join("docs.jsonl");
    std::fs::write(&p, lines.join("\n") + "\n").expect("write docs");
    p
}

const GOOD_DOCS: &[&str] = &[
    r#"{"id": "a", "text": "The cat sat on the mat. The cat sat on the mat again.", "domain": "prose"}"#,
    r#"{"text": "def f(x):\n    return (x + 1) * [x]\n"}"#,
];

fn score_command(ckpt: &Path, docs: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_filtermon"));
    cmd.arg("score")
        .arg(ckpt)
        .arg("--input")
        .arg(docs)
        .arg("--token-losses")
        .arg(out)
        .args(extra);
    cmd
}

fn score(ckpt: &Path, docs: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    score_command(ckpt, docs, out, extra)
        .output()
        .expect("run filtermon")
}

#[test]
fn writes_one_record_per_scored_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = docs(tmp.path(), GOOD_DOCS);
    let out = tmp.path().join("losses.jsonl");
    let res = score(
        &fixture("hybrid_rope"),
        &d,
        &out,
        &["--window", "8", "--batch", "3"],
    );
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        stdout.contains("mean NLL") && stdout.contains("tokens/s"),
        "{stdout}"
    );
    let recs = read_jsonl(&out);
    assert!(!recs.is_empty());
    for r in &recs {
        let keys: Vec<&str> = r
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 7, "{r}");
        for k in ["doc", "window", "pos", "token_id", "loss", "top1", "top5"] {
            assert!(r.get(k).is_some(), "missing {k} in {r}");
        }
        let pos = r["pos"].as_u64().expect("pos");
        assert!(
            (1..8).contains(&pos),
            "pos {pos} outside a window of 8 (0 is never scored)"
        );
        assert!(r["loss"].as_f64().expect("loss") > 0.0);
    }
    assert!(recs.iter().any(|r| r["doc"] == "a"));
    // The second document has no id: it is named by its line number.
    assert!(recs.iter().any(|r| r["doc"] == "2"));
    assert!(recs.iter().any(|r| r["window"].as_u64() == Some(1)));
}

#[test]
fn batching_does_not_change_losses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = docs(tmp.path(), GOOD_DOCS);
    let read = |batch: &str| -> Vec<f64> {
        let out = tmp.path().join(format!("b{batch}.jsonl"));
        let res = score(
            &fixture("gdn_only"),
            &d,
            &out,
            &["--window", "16", "--batch", batch],
        );
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        token_losses(&out)
    };
    let (one, many) = (read("1"), read("4"));
    assert_eq!(one.len(), many.len());
    // Batches change the shapes of the projection matmuls, hence their rounding: on the
    // shipped prose, batch 4 and batch 1 differ by up to 3e-5 nats (f32, ~6-nat losses),
    // while a padding leak would move losses by far more.
    for (a, b) in one.iter().zip(&many) {
        assert!((a - b).abs() < 5e-5, "{a} vs {b}");
    }
}

/// Runs `score` and checks that it fails as an input error naming every `needle`.
fn assert_score_input_error(ckpt: &Path, docs: &Path, needles: &[&str]) {
    let out = docs.with_extension("out.jsonl");
    assert_input_error(&score(ckpt, docs, &out, &[]), needles);
}

fn broken_copy(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    copy_dir(&fixture("olmo3_gqa_swa"), &dir);
    dir
}

fn rewrite_weights(dir: &Path, edit: impl Fn(&mut Vec<(String, Tensor)>)) {
    let path = dir.join("model.safetensors");
    let map = candle_core::safetensors::load(&path, &Device::Cpu).expect("load");
    let mut tensors: Vec<(String, Tensor)> = map.into_iter().collect();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors.into_iter().collect(), &path).expect("save");
}

#[test]
fn bad_checkpoints_give_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = docs(tmp.path(), GOOD_DOCS);

    let dir = broken_copy(tmp.path(), "no_config");
    std::fs::remove_file(dir.join("config.json")).expect("rm");
    assert_score_input_error(&dir, &d, &["no_config", "config.json"]);

    let dir = broken_copy(tmp.path(), "unknown_type");
    let cfg = std::fs::read_to_string(dir.join("config.json")).expect("cfg");
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"olmo3\"", "\"gpt_neox\""),
    )
    .expect("write");
    assert_score_input_error(&dir, &d, &["config.json", "gpt_neox"]);

    let dir = broken_copy(tmp.path(), "missing_tensor");
    rewrite_weights(&dir, |t| {
        t.retain(|(n, _)| n != "model.layers.1.self_attn.k_proj.weight")
    });
    assert_score_input_error(
        &dir,
        &d,
        &["missing_tensor", "model.layers.1.self_attn.k_proj.weight"],
    );

    let dir = broken_copy(tmp.path(), "misshapen_tensor");
    rewrite_weights(&dir, |t| {
        for (n, x) in t.iter_mut() {
            if n == "model.layers.0.mlp.up_proj.weight" {
                *x = x.narrow(0, 0, 3).expect("narrow");
            }
        }
    });
    assert_score_input_error(
        &dir,
        &d,
        &[
            "model.safetensors",
            "model.layers.0.mlp.up_proj.weight",
            "shape",
        ],
    );

    let dir = broken_copy(tmp.path(), "truncated");
    let st = dir.join("model.safetensors");
    let len = std::fs::metadata(&st).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    assert_score_input_error(&dir, &d, &["model.safetensors"]);

    let dir = broken_copy(tmp.path(), "no_tokenizer");
    std::fs::remove_file(dir.join("tokenizer.json")).expect("rm");
    assert_score_input_error(&dir, &d, &["no_tokenizer", "tokenizer.json"]);
}

#[test]
fn bad_documents_give_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = fixture("olmo2");
    let empty_line = docs(tmp.path(), &[GOOD_DOCS[0], "", GOOD_DOCS[1]]);
    assert_score_input_error(&ckpt, &empty_line, &["docs.jsonl:2", "empty"]);
    let bad_json = tmp.path().join("bad.jsonl");
    std::fs::write(&bad_json, format!("{}\n{{\"text\": oops}}\n", GOOD_DOCS[0])).expect("write");
    assert_score_input_error(&ckpt, &bad_json, &["bad.jsonl:2"]);
    let no_text = tmp.path().join("notext.jsonl");
    std::fs::write(&no_text, "{\"id\": \"x\"}\n").expect("write");
    assert_score_input_error(&ckpt, &no_text, &["notext.jsonl:1", "text"]);
    let empty_file = tmp.path().join("empty.jsonl");
    std::fs::write(&empty_file, "").expect("write");
    assert_score_input_error(&ckpt, &empty_file, &["empty.jsonl", "no documents"]);
}

/// `FILTERMON_DEVICE_PATH=1` runs the device path's kernels on the CPU for any command: the
/// same records, with losses within f32 rounding of the host path's, on a hybrid checkpoint
/// (attention and Gated DeltaNet layers) with batches that pad.
#[test]
fn the_forced_device_path_scores_like_the_host_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = docs(tmp.path(), GOOD_DOCS);
    let run = |forced: &str, name: &str| {
        let out = tmp.path().join(name);
        let res = score_command(
            &fixture("hybrid_rope"),
            &d,
            &out,
            &["--window", "9", "--batch", "2"],
        )
        .env("FILTERMON_DEVICE_PATH", forced)
        .output()
        .expect("run filtermon");
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        read_jsonl(&out)
    };
    let (host, device) = (run("0", "host.jsonl"), run("1", "device.jsonl"));
    assert_eq!(host.len(), device.len());
    assert!(!host.is_empty());
    for (h, d) in host.iter().zip(&device) {
        for k in ["doc", "window", "pos", "token_id"] {
            assert_eq!(h[k], d[k], "{h} vs {d}");
        }
        let gap = (h["loss"].as_f64().expect("loss") - d["loss"].as_f64().expect("loss")).abs();
        assert!(gap <= 1e-4, "{h} vs {d}");
    }
}

/// A GPU that is not there (or a build without the `cuda` feature) is bad input: exit 2, one
/// line naming the device, from a scoring command and from `parity`.
#[test]
fn a_missing_gpu_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = docs(tmp.path(), GOOD_DOCS);
    let out = tmp.path().join("losses.jsonl");
    let res = score(&fixture("olmo2"), &d, &out, &["--device", "cuda:7"]);
    assert_input_error(&res, &["--device cuda:7"]);
    assert!(
        !out.exists(),
        "nothing is written for a device that is not there"
    );
    let res = Command::new(env!("CARGO_BIN_EXE_filtermon"))
        .arg("parity")
        .arg(fixture("olmo2"))
        .args(["--device", "cuda:7"])
        .output()
        .expect("run filtermon");
    assert_input_error(&res, &["--device cuda:7"]);
}
