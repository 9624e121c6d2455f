//! `filtermon export --format tensorboard` on a store of two runs with known results: every
//! (run, tag, step, value) read back, by TensorBoard's own reader
//! (`scripts/check_tensorboard.py`, with the Python of `FILTERMON_PYTHON` when it has
//! `tensorboard`) and by filtermon's, is a stored result's mean or paired gap.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use filtermon::analysis::stats::aggregate::FilterResult;
use filtermon::evalset::scores::EvalScores;
use filtermon::monitor::paired_gaps::{self, TokenSets};
use filtermon::monitor::tensorboard::event_file::{own_files, read_scalars};
use filtermon::store::losses::encode;
use filtermon::store::Store;

mod common;
use common::{
    add_run, assert_input_error, assert_tb_points_match, commit_checkpoint, expected_tb_points,
    filtermon, parse_jsonl, read_tb_with_filtermon, read_tb_with_tensorboard,
    store_with_one_evalset, tensorboard_python, TbPoint,
};

const TOKENS_PER_STEP: u64 = 4096;

/// `tf` and `hy` (baselined on `tf`): stable checkpoints at steps 1000 and 2000 (and 3000 for
/// `hy`, which `tf` lacks, so it has no gap) and an annealed one at 2000. Each is scored on
/// `all`, `copy5` and `empty`, whose mean is NULL (no token passed).
fn build_store(path: &Path) -> Store {
    let (mut store, es, _) = store_with_one_evalset(path);
    for (name, baseline) in [("tf", None), ("hy", Some("tf"))] {
        let run = add_run(&mut store, name, "transformer", baseline, TOKENS_PER_STEP);
        let mut checkpoints = vec![(1000, false), (2000, false), (2000, true)];
        if name == "hy" {
            checkpoints.push((3000, false));
        }
        for (step, anneal) in checkpoints {
            // Losses fall with training, lower when annealed, higher for the hybrid.
            let level = 4.0 - step as f32 / 1000.0 - if anneal { 0.25 } else { 0.0 }
                + if name == "hy" { 0.125 } else { 0.0 };
            let loss = vec![f32::NAN, level, level + 0.5, level + 1.0];
            let mean = f64::from(level) + 0.5;
            let results: Vec<FilterResult> =
                [("all", mean), ("copy5", mean + 1.0), ("empty", f64::NAN)]
                    .into_iter()
                    .map(|(filter, mean)| FilterResult {
                        filter: filter.into(),
                        definition: filter.into(),
                        domain: None,
                        mean,
                        n: 3,
                        ci_lo: mean - 0.1,
                        ci_hi: mean + 0.1,
                        top1: 0.5,
                        top5: 0.75,
                    })
                    .collect();
            let scores = EvalScores {
                top1: vec![false; loss.len()],
                top5: vec![false; loss.len()],
                loss,
            };
            let losses = encode(&scores).expect("encode");
            commit_checkpoint(
                &mut store,
                (name, run),
                es,
                (step, step * TOKENS_PER_STEP, anneal),
                &results,
                &losses,
            );
        }
    }
    let masks = vec![
        ("all".to_string(), vec![false, true, true, true]),
        ("copy5".to_string(), vec![false, false, true, true]),
        ("empty".to_string(), vec![false; 4]),
    ];
    let sets: HashMap<i64, TokenSets> =
        [(es, TokenSets::from_parts(vec![0, 0, 1, 1], 2, masks))].into();
    paired_gaps::update(&mut store, &sets, 20, 0).expect("paired gaps");
    store
}

fn export(db: &Path, args: &[&str]) -> Output {
    let db = db.to_str().expect("utf8");
    let mut all = vec!["export", "--db", db];
    all.extend_from_slice(args);
    filtermon(&all)
}

/// The store's rows as `export --format jsonl` gives them.
fn jsonl_rows(db: &Path, run: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["--format", "jsonl"];
    args.extend(run.map(|r| ["--run", r]).into_iter().flatten());
    let out = export(db, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_jsonl(&String::from_utf8_lossy(&out.stdout))
}

/// Both readers against `want`; TensorBoard's only where its Python is found.
fn check_readers(root: &Path, want: &[TbPoint]) {
    assert_tb_points_match(&read_tb_with_filtermon(root), want, "filtermon's reader");
    if let Some(python) = tensorboard_python() {
        let got = read_tb_with_tensorboard(&python, root);
        assert_tb_points_match(&got, want, "TensorBoard's reader");
        eprintln!("TensorBoard's reader read {} points", got.len());
    }
}

#[test]
fn exported_event_files_hold_every_mean_and_gap_as_tensorboard_reads_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = tmp.path().join("m.db");
    let store = build_store(&db);
    let rows = jsonl_rows(&db, None);
    let want = expected_tb_points(&rows);
    // 14 means (tf's 3 checkpoints and hy's 4, each on `all` and `copy5`; `empty` has none)
    // and 6 gaps (hy's 3 checkpoints that tf has a partner of).
    assert_eq!(want.len(), 7 * 2 + 3 * 2);
    assert!(want
        .iter()
        .any(|p| p.0 == "hy/anneal" && p.1 == "filtermon/web/copy5/gap"));

    let root = tmp.path().join("tb");
    let out = export(
        &db,
        &[
            "--format",
            "tensorboard",
            "--out",
            root.to_str().expect("utf8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<&str> = std::str::from_utf8(&out.stdout)
        .expect("utf8")
        .lines()
        .collect();
    assert_eq!(listed.len(), 4, "one file per run folder: {listed:?}");
    for run in ["tf", "tf/anneal", "hy", "hy/anneal"] {
        let files = own_files(&root.join(run)).expect("list");
        assert_eq!(files.len(), 1, "{run}");
        assert!(listed.contains(&files[0].to_str().expect("utf8")));
    }
    check_readers(&root, &want);

    // Each event's wall time is its result's `scored_at`.
    let scored_at: HashMap<(String, String, String, u64), f64> = store
        .results(None)
        .expect("results")
        .into_iter()
        .map(|r| ((r.run, r.kind, r.filter, r.tokens), r.scored_at))
        .collect();
    for (folder, kind) in [("hy", "stable"), ("hy/anneal", "anneal")] {
        let file = &own_files(&root.join(folder)).expect("list")[0];
        for s in read_scalars(&std::fs::read(file).expect("read")).expect("scalars") {
            let filter = s.tag.split('/').nth(2).expect("filter").to_string();
            let at = scored_at[&("hy".into(), kind.into(), filter, s.step as u64)];
            assert_eq!(s.wall_time, at, "{folder}: {}", s.tag);
        }
    }

    // A second export into the same folder would show every point twice.
    let again = export(
        &db,
        &[
            "--format",
            "tensorboard",
            "--out",
            root.to_str().expect("utf8"),
        ],
    );
    assert_input_error(
        &again,
        &[
            "already holds filtermon event files",
            "export into an empty folder",
        ],
    );

    // --x step and --run: one run, at training steps.
    let by_step = tmp.path().join("by-step");
    let out = export(
        &db,
        &[
            "--format",
            "tensorboard",
            "--x",
            "step",
            "--run",
            "hy",
            "--out",
            by_step.to_str().expect("utf8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want_steps: Vec<TbPoint> = expected_tb_points(&jsonl_rows(&db, Some("hy")))
        .into_iter()
        .map(|(run, tag, tokens, v)| (run, tag, tokens / TOKENS_PER_STEP as i64, v))
        .collect();
    want_steps.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    assert!(!by_step.join("tf").exists());
    check_readers(&by_step, &want_steps);
}

#[test]
fn out_goes_with_tensorboard_only_and_tensorboard_needs_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = tmp.path().join("m.db");
    build_store(&db);
    let dir = tmp.path().join("tb");
    let dir = dir.to_str().expect("utf8");
    assert_input_error(
        &export(&db, &["--format", "tensorboard"]),
        &["--format tensorboard needs --out DIR"],
    );
    for format in ["csv", "jsonl"] {
        assert_input_error(
            &export(&db, &["--format", format, "--out", dir]),
            &["--out is only for --format tensorboard"],
        );
        assert_input_error(
            &export(&db, &["--format", format, "--x", "step"]),
            &["--x is only for --format tensorboard"],
        );
    }
    assert_input_error(
        &export(&db, &["--format", "tensorboard", "--out", dir, "--detect"]),
        &["--detect exports a table"],
    );
    assert_input_error(
        &export(
            &db,
            &["--format", "tensorboard", "--out", dir, "--run", "nope"],
        ),
        &["no run named \"nope\""],
    );
    assert!(!Path::new(dir).exists(), "nothing written after a refusal");
}
