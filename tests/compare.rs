//! `filtermon compare` end to end on two fixture checkpoints that share a tokenizer.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{filtermon, read_jsonl, repo};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

fn prepare(input: &str, out: &Path, tokenizer: &Path) {
    let res = filtermon(&[
        "prepare",
        "--input",
        s(&repo().join(input)),
        "--tokenizer",
        s(tokenizer),
        "--out",
        s(out),
        "--window",
        "256",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

/// A copy of a fixture checkpoint whose tokenizer has one more vocabulary entry.
fn with_other_tokenizer(ckpt: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(ckpt.join(f), dir.join(f)).expect("copy");
    }
    let tok = std::fs::read_to_string(ckpt.join("tokenizer.json")).expect("tok");
    let mut v: Value = serde_json::from_str(&tok).expect("json");
    v["model"]["vocab"]["zzz-new-token"] = Value::from(299);
    std::fs::write(dir.join("tokenizer.json"), v.to_string()).expect("write");
    dir.to_path_buf()
}

#[test]
fn compare_writes_every_artifact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let es = tmp.path().join("es");
    prepare(
        "data/eval",
        &es,
        &repo().join("tests/fixtures/tokenizer.json"),
    );
    let out = tmp.path().join("out");
    // Two transformers: scoring the hybrid fixture unoptimised would take most of a minute.
    let (a, b) = (
        repo().join("tests/fixtures/hf/olmo2"),
        repo().join("tests/fixtures/hf/olmo3_gqa_swa"),
    );
    let res = filtermon(&[
        "compare",
        s(&a),
        s(&b),
        "--evalset",
        s(&es),
        "--out",
        s(&out),
        "--a-name",
        "transformer",
        "--b-name",
        "hybrid",
        "--resamples",
        "200",
        "--derive-filter",
        "3",
        "--batch",
        "4",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr),
    );
    assert!(res.status.success(), "{stderr}");

    // The decision table names every verdict by model name or "no difference".
    assert!(stdout.contains("better"), "{stdout}");
    for row in [
        "upos=NOUN",
        "class=content",
        "bracket=close",
        "repeat_len=0",
        "filter=copy5",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row} in {stdout}"));
        assert!(
            line.ends_with("transformer")
                || line.ends_with("hybrid")
                || line.ends_with("no difference"),
            "{line}"
        );
    }
    // Fixture categories are small: each one under 500 tokens is warned about.
    assert!(stderr.contains("fewer than 500"), "{stderr}");

    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("metrics.json")).expect("metrics.json"),
    )
    .expect("json");
    assert_eq!(m["schema"], "filtermon.compare/1");
    assert_eq!(m["a"]["name"], "transformer");
    assert_eq!(m["b"]["name"], "hybrid");
    let tokens = m["tokens"].as_u64().expect("tokens");
    assert!(tokens > 10_000, "{tokens}");
    let cats = m["categories"].as_array().expect("categories");
    let kinds: Vec<&str> = cats
        .iter()
        .map(|c| c["kind"].as_str().expect("kind"))
        .collect();
    for k in [
        "upos",
        "tag",
        "class",
        "bracket",
        "repeat_len",
        "copy_distance",
        "word_initial",
        "domain",
        "filter",
    ] {
        assert!(kinds.contains(&k), "no {k} category");
    }
    for c in cats {
        let n = c["n"].as_u64().expect("n");
        assert!(n > 0);
        let (la, lb, gap) = (
            c["loss_a"].as_f64().expect("loss_a"),
            c["loss_b"].as_f64().expect("loss_b"),
            c["gap"].as_f64().expect("gap"),
        );
        assert!((la - lb - gap).abs() < 1e-4, "{c}");
        let (lo, hi) = (
            c["gap_ci_lo"].as_f64().expect("lo"),
            c["gap_ci_hi"].as_f64().expect("hi"),
        );
        assert!(lo <= gap + 1e-9 && gap <= hi + 1e-9, "{c}");
        for k in ["top1_a", "top1_b", "top5_a", "top5_b"] {
            let v = c[k].as_f64().expect(k);
            assert!((0.0..=1.0).contains(&v));
        }
        assert!(c["top5_a"].as_f64() >= c["top1_a"].as_f64());
        let p = c["mcnemar"]["p_value"].as_f64().expect("p");
        assert!((0.0..=1.0).contains(&p));
        assert!(["a", "b", "no_difference"].contains(&c["better"].as_str().expect("better")));
    }
    let all = cats
        .iter()
        .find(|c| c["name"] == "filter=all")
        .expect("all");
    assert_eq!(all["n"].as_u64(), Some(tokens));
    let reg = &m["regression"];
    let terms = reg["terms"].as_array().expect("terms");
    let term_names: Vec<&str> = terms
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    for t in [
        "intercept",
        "log_freq",
        "log_pos",
        "word_initial",
        "bracket=close",
        "log_copy_distance",
    ] {
        assert!(term_names.contains(&t), "no term {t} in {term_names:?}");
    }
    assert!(terms.iter().all(|t| t["se"].as_f64().expect("se") > 0.0));
    assert_eq!(reg["n"].as_u64(), Some(tokens));
    assert_eq!(
        m["curves"]["repeat_len"].as_array().expect("curve").len(),
        8
    );
    assert!(!m["curves"]["copy_distance"]
        .as_array()
        .expect("curve")
        .is_empty());
    assert!(!m["warnings"].as_array().expect("warnings").is_empty());

    let png = std::fs::read(out.join("comparison_plots.png")).expect("png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.len() > 50_000, "{} bytes", png.len());

    let csv = std::fs::read_to_string(out.join("token_category_map.csv")).expect("csv");
    assert!(csv.starts_with("category,tokens,documents,example_tokens"));
    for cat in [
        "upos=NOUN",
        "repeat_len=16+",
        "filter=content_nocopy",
        "domain=python",
    ] {
        assert!(
            csv.lines().any(|l| l.starts_with(cat)),
            "{cat} not in the map"
        );
    }

    let rows = read_jsonl(&out.join("labeled_dataset.jsonl"));
    let scored: Vec<&Value> = rows.iter().filter(|r| r["pos"] != 0).collect();
    assert_eq!(scored.len() as u64, tokens);
    for r in scored.iter().take(500) {
        let (la, lb) = (
            r["loss_a"].as_f64().expect("loss_a"),
            r["loss_b"].as_f64().expect("loss_b"),
        );
        assert!((r["gap"].as_f64().expect("gap") - (la - lb)).abs() < 1e-5);
        assert!(r["upos"].is_string() && r["top1_b"].is_boolean());
    }
    assert!(rows
        .iter()
        .filter(|r| r["pos"] == 0)
        .all(|r| r["loss_a"].is_null()));

    // The derived filter, when one is derived, compiles as a filter file.
    match m["derived_filter"].as_object() {
        Some(d) => {
            let file = out.join("derived_filters.toml");
            let text = std::fs::read_to_string(&file).expect("derived_filters.toml");
            assert!(text.contains("repeat_len == 0"), "{text}");
            assert!(d["expression"]
                .as_str()
                .expect("expr")
                .starts_with("upos in {"));
            let res = filtermon(&[
                "prepare",
                "--input",
                s(&repo().join("data/eval/python")),
                "--tokenizer",
                s(&repo().join("tests/fixtures/tokenizer.json")),
                "--out",
                s(&tmp.path().join("es2")),
                "--filters",
                s(&file),
            ]);
            assert!(
                res.status.success(),
                "{}",
                String::from_utf8_lossy(&res.stderr)
            );
        }
        None => assert!(stderr.contains("no filter derived"), "{stderr}"),
    }
}

#[test]
fn compare_refuses_mismatched_tokenizers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let es = tmp.path().join("es");
    prepare(
        "data/eval/python",
        &es,
        &repo().join("tests/fixtures/tokenizer.json"),
    );
    let a = repo().join("tests/fixtures/hf/hybrid_rope");
    let other = with_other_tokenizer(&a, &tmp.path().join("other"));
    let out = tmp.path().join("out");
    let refuse = |x: &Path, y: &Path, evalset: &Path, what: &str| {
        let res = filtermon(&[
            "compare",
            s(x),
            s(y),
            "--evalset",
            s(evalset),
            "--out",
            s(&out),
        ]);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{what}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.contains("tokenizer"), "{what}: {stderr}");
    };
    // The two checkpoints' tokenizers differ.
    refuse(&a, &other, &es, "A vs B");
    // Both agree, but the evalset was built with another tokenizer.
    let es_other = tmp.path().join("es_other");
    prepare("data/eval/python", &es_other, &other.join("tokenizer.json"));
    refuse(&a, &a, &es_other, "evalset");
    assert!(!out.join("metrics.json").exists());
}
