//! `filtermon bench`: tiny twins, and the ratio against a reference run's throughput.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod common;
use common::{assert_input_error, filtermon, parse_jsonl};

/// A tiny shape, so each twin scores in milliseconds.
const TINY: [&str; 10] = [
    "--layers",
    "2",
    "--hidden",
    "128",
    "--vocab",
    "300",
    "--window",
    "16",
    "--windows",
    "1",
];

fn bench(extra: &[&str]) -> std::process::Output {
    let mut args = vec!["bench", "--json"];
    args.extend_from_slice(&TINY);
    args.extend_from_slice(extra);
    filtermon(&args)
}

/// An executable standing in for the Python interpreter: prints what `bench_torch.py --json`
/// prints for `arch`, with the throughput given.
fn fake_python(dir: &Path, body: &str) -> String {
    let path = dir.join("python");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn every_twin_is_measured() {
    let out = bench(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = parse_jsonl(&String::from_utf8_lossy(&out.stdout));
    let archs: Vec<&str> = rows.iter().filter_map(|r| r["arch"].as_str()).collect();
    assert_eq!(archs, ["transformer", "hybrid", "gdn"]);
    for r in &rows {
        assert!(r["tokens_per_s"].as_f64().expect("tokens/s") > 0.0, "{r}");
        assert!(r["params"].as_u64().expect("params") > 0, "{r}");
        assert!(r.get("ratio").is_none(), "{r}");
        assert!(r["cpu"].as_str().is_some_and(|c| !c.is_empty()), "{r}");
    }
}

#[test]
fn the_ratio_is_against_the_reference_run() {
    let tmp = tempfile::tempdir().expect("tmp");
    let python = fake_python(
        tmp.path(),
        r#"echo '{"torch": "x", "threads": 1}'; echo '{"arch": "gdn", "tokens_per_s": 50.0}'"#,
    );
    let out = bench(&[
        "--arch",
        "gdn",
        "--torch",
        &python,
        "--torch-script",
        &python,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = parse_jsonl(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rows.len(), 1);
    let tps = rows[0]["tokens_per_s"].as_f64().expect("tokens/s");
    assert_eq!(rows[0]["torch_tokens_per_s"].as_f64(), Some(50.0));
    let ratio = rows[0]["ratio"].as_f64().expect("ratio");
    assert!((ratio - tps / 50.0).abs() < 1e-9, "{ratio} vs {tps}/50");
}

#[test]
fn a_reference_that_cannot_run_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let failing = fake_python(tmp.path(), "echo 'No module named torch' >&2; exit 1");
    let script = tmp.path().join("python");
    let script = script.to_str().expect("utf-8");
    for (python, needle) in [
        ("/nonexistent/python", "cannot run"),
        (failing.as_str(), "No module named torch"),
    ] {
        let out = bench(&["--arch", "gdn", "--torch", python, "--torch-script", script]);
        assert_input_error(&out, &[needle]);
    }
    let out = bench(&["--arch", "gdn", "--torch", &failing, "--dtype", "f16"]);
    assert_input_error(&out, &["f16"]);
}

#[test]
fn the_peak_line_and_each_twins_share_of_it() {
    let out = bench(&["--peak", "--arch", "transformer"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = parse_jsonl(&String::from_utf8_lossy(&out.stdout));
    let peak = rows[0]["peak_gflops_per_s"].as_f64().expect("peak first");
    assert!(peak > 0.0, "{}", rows[0]);
    let row = &rows[1];
    // Two full-attention layers of 2 × 64-wide heads, a 512-wide MLP and a 300-row head over a
    // 16-token window: 2·(2·128·512 + 4·128·8.5 + 6·128·512) + 2·128·300 FLOPs per token.
    let expected =
        2.0 * (2.0 * 128.0 * 512.0 + 4.0 * 128.0 * 8.5 + 6.0 * 128.0 * 512.0) + 2.0 * 128.0 * 300.0;
    let per_token = row["gflops_per_token"].as_f64().expect("flops") * 1e9;
    assert!(
        (per_token - expected).abs() < 1e-6 * expected,
        "{per_token} vs {expected}"
    );
    let (tps, gflops) = (
        row["tokens_per_s"].as_f64().expect("tokens/s"),
        row["gflops_per_s"].as_f64().expect("GFLOP/s"),
    );
    assert!((gflops - tps * per_token / 1e9).abs() < 1e-9 * gflops.max(1.0));
    let share = row["share_of_peak"].as_f64().expect("share");
    assert!((share - gflops / peak).abs() < 1e-12, "{row}");
}
