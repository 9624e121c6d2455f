//! Helpers shared by the integration tests.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed Hugging Face fixture checkpoint.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/hf").join(name)
}

/// Runs the filtermon binary to completion.
pub fn filtermon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_filtermon"))
        .args(args)
        .output()
        .expect("run filtermon")
}

/// The committed fixture tokenizer (the one the fixture checkpoints use).
pub fn fixture_tokenizer() -> PathBuf {
    repo().join("tests/fixtures/tokenizer.json")
}

/// `filtermon prepare --input INPUT --tokenizer <fixture> --out OUT EXTRA…`.
pub fn prepare(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let tok = fixture_tokenizer();
    let mut args = vec![
        "prepare",
        "--input",
        input.to_str().expect("utf8"),
        "--tokenizer",
        tok.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    filtermon(&args)
}

/// Exit code 2, exactly one stderr line holding every `needle`, and no panic.
pub fn assert_input_error(res: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "`{n}` not in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Copies a folder with its subfolders (OLMo-core step folders have some).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read folder") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// One JSON value per line of `text`.
pub fn parse_jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// One JSON value per line of the file at `path`.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_jsonl(&text)
}

/// The `loss` column of a `--token-losses` file, in file order.
pub fn token_losses(path: &Path) -> Vec<f64> {
    read_jsonl(path)
        .iter()
        .map(|r| r["loss"].as_f64().expect("loss"))
        .collect()
}

/// A new store at `path` with one evalset ("web", 4 tokens), its id, and the encoded per-token
/// losses of a scored checkpoint on it.
pub fn store_with_one_evalset(
    path: &Path,
) -> (
    filtermon::store::Store,
    i64,
    filtermon::store::losses::EncodedLosses,
) {
    let mut store = filtermon::store::Store::open(path).expect("store");
    let es = store
        .upsert_evalset(&filtermon::store::EvalsetRow {
            name: "web".into(),
            hash: "h".into(),
            tokenizer_hash: "t".into(),
            dir: "/e".into(),
            tokens: 4,
        })
        .expect("evalset");
    let scores = filtermon::evalset::scores::EvalScores {
        loss: vec![f32::NAN, 1.0, 2.0, 3.0],
        top1: vec![false; 4],
        top5: vec![false; 4],
    };
    let losses = filtermon::store::losses::encode(&scores).expect("encode");
    (store, es, losses)
}
