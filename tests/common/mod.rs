//! Helpers shared by the integration tests.
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod daemon;
pub mod dashboard;
pub mod services;

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

/// Records a run `name` (folder `/runs/<name>`) and returns its id.
pub fn add_run(
    store: &mut filtermon::store::Store,
    name: &str,
    arch: &str,
    baseline: Option<&str>,
    tokens_per_step: u64,
) -> i64 {
    store
        .upsert_run(&filtermon::store::RunRow {
            name: name.into(),
            arch: arch.into(),
            dir: format!("/runs/{name}"),
            baseline: baseline.map(str::to_owned),
            tokens_per_step,
        })
        .expect("run")
}

/// Adds the checkpoint `step{step}` (`-anneal` when annealed) of the run `(name, id)` with
/// `tokens` seen, and commits `results` and `losses` as its score on `es`.
pub fn commit_checkpoint(
    store: &mut filtermon::store::Store,
    (run_name, run): (&str, i64),
    es: i64,
    (step, tokens, anneal): (u64, u64, bool),
    results: &[filtermon::analysis::stats::aggregate::FilterResult],
    losses: &filtermon::store::losses::EncodedLosses,
) {
    let ck = filtermon::store::NewCheckpoint {
        name: format!("step{step}{}", if anneal { "-anneal" } else { "" }),
        path: format!("/runs/{run_name}/step{step}"),
        step,
        tokens,
        anneal,
    };
    store.add_checkpoint(run, &ck, &[es]).expect("checkpoint");
    let job = store
        .lease("test", 60.0, &[run], &[es])
        .expect("lease")
        .expect("a job");
    assert!(store
        .complete(&job, "test", results, losses, 0.1)
        .expect("complete"));
}

/// A TensorBoard scalar as `(run, tag, step, value)`; the run is its folder under the root.
pub type TbPoint = (String, String, i64, f64);

/// The points a store's results should give, from `export --format jsonl` rows: the mean at
/// tokens seen and, where there is one, the paired gap, in the run's folder (its annealed
/// checkpoints in `<run>/anneal`); rows without a mean give none. Sorted.
pub fn expected_tb_points(rows: &[serde_json::Value]) -> Vec<TbPoint> {
    let mut out = Vec::new();
    for r in rows {
        let s = |k: &str| r[k].as_str().expect(k).to_string();
        let run = match r["kind"].as_str() {
            Some("anneal") => format!("{}/anneal", s("run")),
            _ => s("run"),
        };
        let tag = format!("filtermon/{}/{}", s("evalset"), s("filter"));
        let step = r["tokens"].as_i64().expect("tokens");
        let Some(mean) = r["mean"].as_f64() else {
            continue;
        };
        out.push((run.clone(), tag.clone(), step, mean));
        if let Some(gap) = r["gap"].as_f64() {
            out.push((run, format!("{tag}/gap"), step, gap));
        }
    }
    sort_tb(&mut out);
    out
}

fn sort_tb(points: &mut [TbPoint]) {
    points.sort_by(|a, b| a.partial_cmp(b).expect("finite values"));
}

/// Asserts that two sorted point lists match, values to f32 precision.
pub fn assert_tb_points_match(got: &[TbPoint], want: &[TbPoint], reader: &str) {
    assert_eq!(got.len(), want.len(), "{reader}: {got:#?}\nwant: {want:#?}");
    for (g, w) in got.iter().zip(want) {
        let close = (g.3 - w.3).abs() <= 1e-6 * w.3.abs().max(1.0);
        assert!(
            g.0 == w.0 && g.1 == w.1 && g.2 == w.2 && close,
            "{reader}: {g:?} != {w:?}"
        );
    }
}

/// Every point of filtermon's event files under `root`, read with filtermon's own reader.
/// Sorted.
pub fn read_tb_with_filtermon(root: &Path) -> Vec<TbPoint> {
    use filtermon::monitor::tensorboard::event_file::{own_files, read_scalars};
    fn walk(root: &Path, dir: &Path, out: &mut Vec<TbPoint>) {
        let run = dir
            .strip_prefix(root)
            .expect("under the root")
            .to_str()
            .expect("utf8")
            .to_string();
        for file in own_files(dir).expect("list") {
            let bytes = std::fs::read(file).expect("read");
            for s in read_scalars(&bytes).expect("scalars") {
                out.push((run.clone(), s.tag, s.step, f64::from(s.value)));
            }
        }
        for e in std::fs::read_dir(dir).expect("read folder") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    sort_tb(&mut out);
    out
}

/// The Python named by `FILTERMON_PYTHON` (default `python3`) when it can import
/// `tensorboard`; otherwise prints why the check with TensorBoard's reader is skipped.
pub fn tensorboard_python() -> Option<String> {
    let py = std::env::var("FILTERMON_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&py)
        .args(["-c", "import tensorboard"])
        .output()
    {
        Ok(out) if out.status.success() => Some(py),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            eprintln!(
                "skipped the check with TensorBoard's reader: {py} cannot import tensorboard ({}); \
                 set FILTERMON_PYTHON to a Python that can",
                err.trim().lines().last().unwrap_or("no message")
            );
            None
        }
        Err(e) => {
            eprintln!("skipped the check with TensorBoard's reader: cannot run {py}: {e}");
            None
        }
    }
}

/// Every scalar under `root` as TensorBoard's own reader loads it
/// (`scripts/check_tensorboard.py`). Sorted.
pub fn read_tb_with_tensorboard(python: &str, root: &Path) -> Vec<TbPoint> {
    let out = Command::new(python)
        .arg(repo().join("scripts/check_tensorboard.py"))
        .arg(root)
        .output()
        .expect("run check_tensorboard.py");
    assert!(
        out.status.success(),
        "check_tensorboard.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut points = Vec::new();
    for (run, tags) in json.as_object().expect("runs") {
        for (tag, series) in tags.as_object().expect("tags") {
            for p in series.as_array().expect("points") {
                let step = p[0].as_i64().expect("step");
                let value = p[1].as_f64().expect("value");
                points.push((run.clone(), tag.clone(), step, value));
            }
        }
    }
    sort_tb(&mut points);
    points
}
