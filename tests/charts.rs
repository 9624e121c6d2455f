//! `filtermon chart` on a store of three runs with known curves: real PNG and SVG files,
//! each run's series in each chart, and an index that names every chart.

use std::fs;
use std::path::Path;
use std::process::Command;

use filtermon::analysis::stats::aggregate::FilterResult;

mod common;
use common::{add_run, commit_checkpoint, store_with_one_evalset};

const BIN: &str = env!("CARGO_BIN_EXE_filtermon");
const RUNS: [(&str, &str, Option<&str>); 3] = [
    ("tf-1b", "transformer", None),
    ("hy-1b", "hybrid", Some("tf-1b")),
    ("gdn-1b", "rnn", Some("tf-1b")),
];

/// Filters, and recall rows of each family.
const ROWS: [&str; 9] = [
    "all",
    "copy5",
    "recall.gain@64",
    "recall.gain@1024",
    "recall.copy5@1-32",
    "recall.copy5@129-512",
    "recall.copy5@2049+",
    "recall.copy_n@2",
    "recall.copy_n@10",
];

/// Power-law loss curves: the recurrent run trails on copy5 by a widening margin.
fn loss(arch: &str, filter: &str, tokens: f64, anneal: bool) -> f64 {
    let base = 2.0 + 40.0 * tokens.powf(-0.3);
    let copy_penalty = match (arch, filter) {
        ("rnn", f) if f.contains("copy") || f.contains("gain") => 0.05 + 0.3 * (tokens / 4e7),
        ("hybrid", _) => -0.02,
        _ => 0.0,
    };
    base + copy_penalty - if anneal { 0.08 } else { 0.0 }
}

fn build_store(path: &Path) {
    let (mut store, es, losses) = store_with_one_evalset(path);
    for (name, arch, baseline) in RUNS {
        let run = add_run(&mut store, name, arch, baseline, 4096);
        let mut cks: Vec<(u64, bool)> = (1..=10).map(|k| (k * 1000, false)).collect();
        cks.extend([(4000, true), (8000, true)]);
        for (step, anneal) in cks {
            let tokens = step * 4096;
            let results: Vec<FilterResult> = ROWS
                .iter()
                .map(|f| {
                    let mean = loss(arch, f, tokens as f64, anneal);
                    FilterResult {
                        filter: (*f).into(),
                        definition: (*f).into(),
                        domain: None,
                        mean,
                        n: 1000,
                        ci_lo: mean - 0.03,
                        ci_hi: mean + 0.03,
                        top1: 0.3,
                        top5: 0.6,
                    }
                })
                .collect();
            commit_checkpoint(
                &mut store,
                (name, run),
                es,
                (step, tokens, anneal),
                &results,
                &losses,
            );
        }
    }
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = fs::read(path).expect("png");
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

#[test]
fn charts_show_every_run_and_the_index_names_every_chart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = tmp.path().join("m.db");
    build_store(&db);
    let out = tmp.path().join("report");
    let run = Command::new(BIN)
        .args(["chart", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("chart");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let index = fs::read_to_string(out.join("index.html")).expect("index");
    let mut pngs: Vec<&str> = index
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    pngs.sort_unstable();
    let recall_rows = ROWS[2..].iter().map(|r| format!("web/{r}.png"));
    let mut expected: Vec<String> = [
        "web/all-gap.png",
        "web/all.png",
        "web/copy5-gap.png",
        "web/copy5.png",
        "web/recall-cliff.png",
        "web/recall-cliff-gap.png",
        "web/recall-copy-n.png",
        "web/recall-copy-n-gap.png",
        "web/recall-gain.png",
        "web/recall-gain-gap.png",
    ]
    .map(String::from)
    .into_iter()
    .chain(recall_rows)
    .collect();
    expected.sort_unstable();
    assert_eq!(pngs, expected);
    // The longest gap's gain over training is shown with the snapshots, the rest folded.
    let recall_section = &index[index.find("Recall diagnostics").expect("section")..];
    let folded = recall_section.find("<details>").expect("folded rows");
    let at = |png: &str| recall_section.find(&format!("src=\"{png}\"")).expect(png);
    assert!(at("web/recall.gain@1024.png") < folded);
    assert!(at("web/recall.gain@64.png") > folded);
    for png in &pngs {
        assert_eq!(png_size(&out.join(png)), (960, 600));
        let svg_name = png.replace(".png", ".svg");
        assert!(index.contains(&format!("href=\"{svg_name}\"")));
        let svg = fs::read_to_string(out.join(&svg_name)).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains(r#"width="960" height="600""#));
        assert!(
            !svg.contains("<text"),
            "text is outlined with the shipped font"
        );
        for (name, arch, _) in RUNS {
            let labelled = if png.ends_with("-gap.png") {
                format!("{name} − tf-1b")
            } else if png.starts_with("web/recall-") {
                format!("{name} @ step10000")
            } else {
                format!("{name} ({arch})")
            };
            if png.ends_with("-gap.png") && name == "tf-1b" {
                assert!(!svg.contains(&format!("aria-label=\"{labelled}\"")));
                continue;
            }
            assert!(
                svg.contains(&format!("aria-label=\"{labelled}\"")),
                "{svg_name} has {labelled} in its legend"
            );
        }
    }
    // Each architecture keeps its colour: the transformer's blue, the hybrid's orange and
    // the recurrent run's green lines are in the loss chart; the gap chart has no blue line.
    let copy5 = fs::read_to_string(out.join("web/copy5.svg")).expect("svg");
    let copy5_gap = fs::read_to_string(out.join("web/copy5-gap.svg")).expect("svg");
    for rgb in ["rgb(31,119,180)", "rgb(255,127,14)", "rgb(44,160,44)"] {
        let line = format!("stroke=\"{rgb}\"");
        assert!(
            copy5
                .lines()
                .any(|l| l.starts_with("<polyline") && l.contains(&line)),
            "a {rgb} line"
        );
    }
    assert!(
        copy5_gap.contains("rgb(44,160,44)") && !copy5_gap.contains("stroke=\"rgb(31,119,180)\"")
    );
    // The cliff's bins are named on a categorical axis, in order of distance.
    let cliff = fs::read_to_string(out.join("web/recall-cliff.svg")).expect("svg");
    let at = |label: &str| cliff.find(&format!("aria-label=\"{label}\"")).expect(label);
    assert!(at("1-32") < at("129-512") && at("129-512") < at("2049+"));
    // The latest values: the annealed step 8000 is not the latest, step 10000 is.
    assert!(index.contains("step10000"));
    assert!(index.contains(&format!(
        "{:.4}",
        loss("rnn", "copy5", 10000.0 * 4096.0, false)
    )));
    assert!(index.contains("No alert has fired."));

    let by_step = Command::new(BIN)
        .args(["chart", "--x", "step", "--log-x", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(tmp.path().join("by-step"))
        .status()
        .expect("chart");
    assert!(by_step.success());
    let svg = fs::read_to_string(tmp.path().join("by-step/web/all.svg")).expect("svg");
    assert!(svg.contains("aria-label=\"step\"") && !svg.contains("aria-label=\"tokens seen\""));

    let missing = Command::new(BIN)
        .args(["chart", "--db"])
        .arg(tmp.path().join("none.db"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("chart");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such database"));
}
