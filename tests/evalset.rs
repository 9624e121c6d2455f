//! `prepare` and `score --evalset` end to end on real files.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{filtermon, prepare, read_jsonl, repo};

fn labeled(dir: &Path) -> Vec<Value> {
    read_jsonl(&dir.join("labeled_dataset.jsonl"))
}

#[test]
fn prepare_writes_every_artifact_and_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let data = repo().join("data/eval");
    for out in [&a, &b] {
        let res = prepare(&data, out, &["--window", "256"]);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let stdout = String::from_utf8_lossy(&res.stdout);
        for f in ["all", "content_nocopy", "copy5", "close_bracket"] {
            assert!(stdout.contains(f), "report lacks {f}: {stdout}");
        }
    }
    let manifest = |d: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("manifest.json")).expect("manifest"))
            .expect("json")
    };
    let (ma, mb) = (manifest(&a), manifest(&b));
    assert_eq!(
        ma["id"], mb["id"],
        "the content hash must not depend on the run"
    );
    assert_eq!(ma["window"], 256);
    assert_eq!(
        ma["tokens_per_domain"].as_object().expect("domains").len(),
        4
    );
    let rows = labeled(&a);
    assert_eq!(rows.len() as u64, ma["tokens"].as_u64().expect("tokens"));
    let keys = [
        "doc",
        "window",
        "pos",
        "token_id",
        "text",
        "tag",
        "upos",
        "content",
        "function",
        "open_bracket",
        "close_bracket",
        "repeat_len",
        "copy_distance",
        "log_freq",
        "word_initial",
        "domain",
    ];
    for k in keys {
        assert!(rows[0].get(k).is_some(), "missing {k}");
    }
    assert!(rows.iter().all(|r| r["pos"].as_u64().expect("pos") < 256));
    let csv = std::fs::read_to_string(a.join("token_category_map.csv")).expect("csv");
    assert!(csv.starts_with("category,tokens,documents,example_tokens"));
    for cat in [
        "upos=NOUN",
        "domain=latex",
        "bracket=close",
        "repeat_len=5-7",
        "filter=copy5",
    ] {
        assert!(csv.lines().any(|l| l.starts_with(cat)), "no {cat} row");
    }
}

#[test]
fn subword_tokens_take_their_word_labels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let docs = tmp.path().join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"id\": \"d\", \"domain\": \"prose\", \"text\": \"The dog quickly ate the bone (twice).\"}\n",
    )
    .expect("write");
    let out = tmp.path().join("es");
    let res = prepare(&docs, &out, &[]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let rows = labeled(&out);
    // Rebuild the text from the token texts and find which tokens cover "quickly".
    let mut text = String::new();
    let mut starts = Vec::new();
    for r in &rows {
        starts.push(text.len());
        text.push_str(r["text"].as_str().expect("text"));
    }
    assert_eq!(text, "The dog quickly ate the bone (twice).");
    let word = text.find("quickly").expect("word");
    let covering: Vec<&Value> = rows
        .iter()
        .zip(&starts)
        .filter(|(r, &s)| {
            let t = r["text"].as_str().expect("text");
            let first = s + (t.len() - t.trim_start().len());
            !t.trim().is_empty() && first >= word && first < word + "quickly".len()
        })
        .map(|(r, _)| r)
        .collect();
    assert!(!covering.is_empty());
    assert!(covering
        .iter()
        .all(|r| r["upos"] == "ADV" && r["tag"] == "RB" && r["content"] == true));
    assert_eq!(
        covering
            .iter()
            .filter(|r| r["word_initial"] == true)
            .count(),
        1
    );
    assert_eq!(covering[0]["word_initial"], true);
    let by_text = |t: &str| rows.iter().find(|r| r["text"] == t).expect("token");
    assert_eq!(by_text("(")["open_bracket"], true);
    assert_eq!(by_text(")")["close_bracket"], true);
    assert_eq!(
        by_text(" ")["upos"],
        "X",
        "whitespace-only tokens belong to no word"
    );
    assert!(rows
        .iter()
        .any(|r| r["repeat_len"].as_u64().expect("n") >= 2));
    assert!(rows.iter().all(|r| r["domain"] == "prose"));
}

#[test]
fn score_evalset_reports_every_filter_and_refuses_other_tokenizers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let es = tmp.path().join("es");
    let res = prepare(&repo().join("data/eval/python"), &es, &["--window", "128"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let ckpt = repo().join("tests/fixtures/hf/hybrid_rope");
    let losses = tmp.path().join("losses.jsonl");
    let res = filtermon(&[
        "score",
        ckpt.to_str().expect("utf8"),
        "--evalset",
        es.to_str().expect("utf8"),
        "--json",
        "--by-domain",
        "--resamples",
        "200",
        "--token-losses",
        losses.to_str().expect("utf8"),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let v: Value = serde_json::from_slice(&res.stdout).expect("json output");
    let results = v["results"].as_array().expect("results");
    for f in [
        "all",
        "content",
        "function",
        "content_nocopy",
        "copy5",
        "open_bracket",
        "close_bracket",
    ] {
        let r = results
            .iter()
            .find(|r| r["filter"] == f && r.get("domain").is_none())
            .expect(f);
        let (mean, lo, hi) = (r["mean"].as_f64(), r["ci_lo"].as_f64(), r["ci_hi"].as_f64());
        let (mean, lo, hi) = (mean.expect("mean"), lo.expect("lo"), hi.expect("hi"));
        assert!(lo <= mean && mean <= hi, "{f}: {lo} {mean} {hi}");
        assert!(r["n"].as_u64().expect("n") > 0);
    }
    assert!(results.iter().any(|r| r["domain"] == "python"));
    let all = results.iter().find(|r| r["filter"] == "all").expect("all");
    let lines = std::fs::read_to_string(&losses)
        .expect("losses")
        .lines()
        .count() as u64;
    assert_eq!(
        all["n"].as_u64(),
        Some(lines),
        "one loss line per scored token"
    );

    // A checkpoint whose tokenizer differs is refused with one line and exit 2.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(ckpt.join(f), other.join(f)).expect("copy");
    }
    let tok = std::fs::read_to_string(ckpt.join("tokenizer.json")).expect("tok");
    let mut v: Value = serde_json::from_str(&tok).expect("json");
    v["model"]["vocab"]["zzz-new-token"] = Value::from(299);
    std::fs::write(other.join("tokenizer.json"), v.to_string()).expect("write");
    let res = filtermon(&[
        "score",
        other.to_str().expect("utf8"),
        "--evalset",
        es.to_str().expect("utf8"),
    ]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("tokenizer"), "{stderr}");
}

#[test]
fn corrupt_evalset_and_bad_corpus_lines_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let es = tmp.path().join("es");
    assert!(prepare(&repo().join("data/eval/latex"), &es, &[])
        .status
        .success());
    let bin = es.join("evalset.bin");
    let len = std::fs::metadata(&bin).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bin)
        .expect("open")
        .set_len(len - 7)
        .expect("truncate");
    let ckpt = repo().join("tests/fixtures/hf/olmo2");
    let res = filtermon(&[
        "score",
        ckpt.to_str().expect("utf8"),
        "--evalset",
        es.to_str().expect("utf8"),
    ]);
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("evalset.bin"));

    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"text\": 3}\n").expect("write");
    let res = prepare(&bad, &tmp.path().join("es2"), &[]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.jsonl:2"), "{stderr}");
    let res = prepare(&bad, &tmp.path().join("es3"), &["--skip-bad"]);
    assert!(res.status.success());
    assert!(String::from_utf8_lossy(&res.stdout).contains("skipped 1"));
}
