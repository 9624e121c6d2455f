//! `filtermon probe`: exact construction (property tests), its evalset files, input errors,
//! and the recall metrics that `score --evalset` reports on it.

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::sync::OnceLock;

use filtermon::evalset::filter::Filter;
use filtermon::evalset::labels::probe::Occurrence;
use filtermon::evalset::labels::repeats::REPEAT_CAP;
use filtermon::evalset::probe::{build, ProbeSpec, TokenSampler};
use filtermon::evalset::tagset::Upos;
use filtermon::evalset::EvalSet;
use proptest::prelude::*;
use serde_json::Value;

mod common;
use common::{
    assert_input_error, filtermon, fixture, fixture_tokenizer, prepare, read_jsonl, token_losses,
};

/// The fixture tokenizer's sampler, and its special/added token ids.
fn fixture_sampler() -> &'static (TokenSampler, HashSet<u32>) {
    static S: OnceLock<(TokenSampler, HashSet<u32>)> = OnceLock::new();
    S.get_or_init(|| {
        let tok = filtermon::evalset::tokenizer::load(&fixture_tokenizer()).expect("tokenizer");
        let added = tok.get_added_tokens_decoder().into_keys().collect();
        (TokenSampler::uniform(&tok).expect("sampler"), added)
    })
}

fn spec_strategy() -> impl Strategy<Value = ProbeSpec> {
    (1usize..9, 1usize..7, 1usize..5, 0u64..1000).prop_flat_map(|(span, windows, n_gaps, seed)| {
        // Windows roomy enough for four distinct gaps between span and window − span.
        (span * 2 + 4..span * 6 + 40).prop_flat_map(move |window| {
            prop::collection::hash_set(span..=window - span, n_gaps).prop_map(move |gaps| {
                ProbeSpec {
                    span,
                    gaps: gaps.into_iter().collect(),
                    windows,
                    window,
                    seed,
                }
            })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The second copy equals the first at exactly the gap, the labels say where each token
    /// is, and every token is an ordinary vocabulary token.
    #[test]
    fn construction_is_exact(spec in spec_strategy()) {
        prop_assert!(spec.validate().is_ok());
        let (sampler, added) = fixture_sampler();
        let TokenSampler::Uniform(vocab) = sampler else { unreachable!("uniform sampler") };
        let b = build(&spec, sampler);
        prop_assert_eq!(b.windows.len(), spec.windows);
        prop_assert!(b.layout.check(&b.windows).is_ok());
        for (k, (w, placed)) in b.windows.iter().zip(&b.layout.windows).enumerate() {
            let (start, span) = (w.start as usize, spec.span);
            prop_assert_eq!(w.len as usize, spec.window);
            prop_assert_eq!(placed.gap as usize, spec.gaps[k % spec.gaps.len()]);
            let (first, second) = (placed.first as usize, placed.second() as usize);
            prop_assert_eq!(second - first, placed.gap as usize);
            prop_assert!(second + span <= spec.window);
            let toks = &b.tokens[start..start + spec.window];
            prop_assert_eq!(&toks[first..first + span], &toks[second..second + span]);
            for (p, &t) in toks.iter().enumerate() {
                prop_assert!(vocab.binary_search(&t).is_ok(), "token {} not in the vocabulary", t);
                prop_assert!(!added.contains(&t), "special token {} drawn", t);
                let l = b.labels[start + p];
                prop_assert_eq!(l.pos as usize, p);
                prop_assert_eq!(l.upos, Upos::X);
                prop_assert!(!l.open_bracket && !l.close_bracket && !l.word_initial);
                let probe = l.probe.expect("probe label");
                prop_assert_eq!(probe.gap, placed.gap);
                let (occ, off) = if (first..first + span).contains(&p) {
                    (Occurrence::First, Some((p - first) as u32))
                } else if (second..second + span).contains(&p) {
                    (Occurrence::Second, Some((p - second) as u32))
                } else {
                    (Occurrence::None, None)
                };
                prop_assert_eq!((probe.occurrence, probe.offset), (occ, off));
                // The second copy completes at least the span prefix seen at the first.
                if let (Occurrence::Second, Some(o)) = (occ, off) {
                    let least = (o as usize + 1).min(REPEAT_CAP as usize);
                    prop_assert!(l.repeat_len as usize >= least, "repeat_len {} < {}", l.repeat_len, least);
                    prop_assert!(l.copy_distance >= 1 && l.copy_distance as usize <= p);
                }
            }
        }
        // Same seed, same evalset.
        prop_assert_eq!(build(&spec, sampler).tokens, b.tokens);
    }
}

fn probe(out: &Path, extra: &[&str]) -> Output {
    let tok = fixture_tokenizer();
    let mut args = vec![
        "probe",
        "--tokenizer",
        tok.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    filtermon(&args)
}

fn ok(res: &Output) -> String {
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    String::from_utf8_lossy(&res.stdout).into_owned()
}

#[test]
fn probe_writes_an_evalset_with_probe_labels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("probe");
    let args = [
        "--span",
        "8",
        "--gaps",
        "16,40,100",
        "--windows",
        "7",
        "--window",
        "128",
        "--seed",
        "5",
    ];
    let stdout = ok(&probe(&dir, &args));
    assert!(
        stdout.contains("7 windows of 128 tokens, span 8"),
        "{stdout}"
    );
    let es = EvalSet::open(&dir).expect("open");
    let layout = es.probe().expect("probe layout");
    let gaps: Vec<u32> = layout.windows.iter().map(|w| w.gap).collect();
    assert_eq!(gaps, [16, 40, 100, 16, 40, 100, 16]);
    assert_eq!(
        (es.len(), es.domains()),
        (7 * 128, &["probe".to_string()][..])
    );

    // The filter language sees the derived labels.
    let labels = es.labels().expect("labels");
    let count = |expr: &str| {
        let f = Filter::compile("t", expr, es.domains()).expect(expr);
        labels.iter().filter(|l| f.matches(l)).count()
    };
    assert_eq!(count("probe_occurrence == second"), 7 * 8);
    assert_eq!(
        count("probe_occurrence == first & probe_offset >= 1"),
        7 * 7
    );
    assert_eq!(
        count("probe_gap == 40 & probe_occurrence in {first, second}"),
        2 * 16
    );
    assert_eq!(count("probe_occurrence == none"), 7 * (128 - 16));
    // Filler tokens have no offset: every comparison on it fails.
    assert_eq!(count("probe_occurrence == none & probe_offset != 3"), 0);

    // labeled_dataset.jsonl carries them too, in token order.
    let rows = read_jsonl(&dir.join("labeled_dataset.jsonl"));
    assert_eq!(rows.len(), es.len());
    for (r, l) in rows.iter().zip(&labels) {
        let p = l.probe.expect("probe");
        assert_eq!(r["probe_gap"], p.gap);
        assert_eq!(r["probe_occurrence"], p.occurrence.name());
        assert_eq!(r["probe_offset"].as_u64(), p.offset.map(u64::from));
        assert_eq!(r["upos"], "X");
    }
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["probe"]["distribution"], "uniform");
    assert_eq!(manifest["probe"]["gaps"], serde_json::json!([16, 40, 100]));
    assert!(dir.join("token_category_map.csv").is_file());

    // Same flags, same evalset; another seed, another.
    let again = tmp.path().join("again");
    ok(&probe(&again, &args));
    assert_eq!(EvalSet::open(&again).expect("open").id(), es.id());
    let other = tmp.path().join("other");
    let mut reseeded = args.to_vec();
    reseeded[9] = "6";
    ok(&probe(&other, &reseeded));
    assert_ne!(EvalSet::open(&other).expect("open").id(), es.id());
}

#[test]
fn unigram_draws_only_tokens_of_the_source_evalset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let docs = tmp.path().join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"id\": \"a\", \"text\": \"the cat sat on the mat and the cat sat again\"}\n",
    )
    .expect("write");
    let source = tmp.path().join("source");
    ok(&prepare(&docs, &source, &[]));
    let src = EvalSet::open(&source).expect("source");
    let vocab: HashSet<u32> = (0..src.len()).map(|i| src.token(i)).collect();
    let dir = tmp.path().join("probe");
    ok(&probe(
        &dir,
        &[
            "--unigram",
            source.to_str().expect("utf8"),
            "--span",
            "4",
            "--gaps",
            "8",
            "--windows",
            "3",
            "--window",
            "64",
        ],
    ));
    let es = EvalSet::open(&dir).expect("probe");
    let drawn: HashSet<u32> = (0..es.len()).map(|i| es.token(i)).collect();
    assert!(drawn.is_subset(&vocab), "{drawn:?} vs {vocab:?}");
    // 192 draws from a handful of ids reach several of them.
    assert!(drawn.len() >= 3, "{drawn:?}");
}

#[test]
fn bad_input_gives_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--gaps", "2020"],
            &["gap 2020 + span 32 exceeds the window of 2048"],
        ),
        (&["--span", "0"], &["--span must be at least 1"]),
        (&["--gaps", ""], &["--gaps is empty"]),
        (&["--gaps", "64,x"], &["--gaps: `x` is not a number"]),
        (
            &["--gaps", "16"],
            &["gap 16 is shorter than the span of 32"],
        ),
        (&["--gaps", "64,64"], &["--gaps lists 64 twice"]),
        (&["--windows", "0"], &["--windows must be at least 1"]),
        (
            &["--unigram", "/nonexistent/evalset"],
            &["not an evalset folder"],
        ),
    ];
    for (args, needles) in cases {
        assert_input_error(&probe(&out, args), needles);
    }
    assert!(
        !out.join("evalset.bin").exists(),
        "nothing written on bad input"
    );
    let res = filtermon(&[
        "probe",
        "--tokenizer",
        "/nonexistent/tokenizer.json",
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert_input_error(&res, &["/nonexistent/tokenizer.json"]);

    // A unigram evalset made with another tokenizer: its ids mean other tokens.
    let source = tmp.path().join("source");
    ok(&probe(
        &source,
        &[
            "--gaps",
            "8",
            "--span",
            "4",
            "--windows",
            "1",
            "--window",
            "32",
        ],
    ));
    let mut other: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_tokenizer()).expect("tok"))
            .expect("json");
    other["model"]["vocab"]["zzzz-extra"] = serde_json::json!(299_999);
    let other_tok = tmp.path().join("other.json");
    std::fs::write(&other_tok, other.to_string()).expect("write");
    let res = filtermon(&[
        "probe",
        "--tokenizer",
        other_tok.to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
        "--unigram",
        source.to_str().expect("utf8"),
    ]);
    assert_input_error(&res, &["differs from the one evalset"]);
}

/// `score --evalset` on a probe: the gain it reports is first − second mean loss of the
/// tokens it wrote to `--token-losses`, per gap.
#[test]
fn score_reports_retrieval_gain_per_gap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("probe");
    ok(&probe(
        &dir,
        &[
            "--span",
            "6",
            "--gaps",
            "10,50",
            "--windows",
            "6",
            "--window",
            "96",
        ],
    ));
    let losses_path = tmp.path().join("losses.jsonl");
    let stdout = ok(&filtermon(&[
        "score",
        fixture("gdn_only").to_str().expect("utf8"),
        "--evalset",
        dir.to_str().expect("utf8"),
        "--token-losses",
        losses_path.to_str().expect("utf8"),
        "--json",
        "--resamples",
        "200",
    ]));
    let report: Value = serde_json::from_str(&stdout).expect("json report");
    let losses = token_losses(&losses_path);
    // --token-losses skips position 0 of each window; labeled_dataset.jsonl has every token.
    let labeled: Vec<Value> = read_jsonl(&dir.join("labeled_dataset.jsonl"))
        .into_iter()
        .filter(|r| r["pos"] != 0)
        .collect();
    assert_eq!(labeled.len(), losses.len());
    let mean = |gap: u64, occ: &str| {
        let sel: Vec<f64> = labeled
            .iter()
            .zip(&losses)
            .filter(|(r, _)| {
                r["probe_gap"] == gap
                    && r["probe_occurrence"] == occ
                    && r["probe_offset"].as_u64().is_some_and(|o| o >= 1)
            })
            .map(|(_, l)| *l)
            .collect();
        assert_eq!(sel.len(), 3 * 5);
        sel.iter().sum::<f64>() / sel.len() as f64
    };
    let gains = report["recall"]["gains"].as_array().expect("gains");
    assert_eq!(gains.len(), 2);
    for g in gains {
        let gap = g["gap"].as_u64().expect("gap");
        let want = mean(gap, "first") - mean(gap, "second");
        let got = g["gain"]["value"].as_f64().expect("gain");
        // --token-losses rounds losses to f32 text; the report sums f32 values as f64.
        assert!((got - want).abs() < 1e-5, "gap {gap}: {got} vs {want}");
        assert_eq!(g["windows"], 3);
        let (lo, hi) = (g["gain"]["ci_lo"].as_f64(), g["gain"]["ci_hi"].as_f64());
        assert!(lo.expect("lo") <= got && got <= hi.expect("hi"));
    }
    assert_eq!(report["recall"]["cliff"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        report["recall"]["copy_n"].as_array().map(Vec::len),
        Some(16)
    );

    let table = ok(&filtermon(&[
        "score",
        fixture("gdn_only").to_str().expect("utf8"),
        "--evalset",
        dir.to_str().expect("utf8"),
    ]));
    for needle in [
        "retrieval gain",
        "recall cliff",
        "copy-n curve",
        "COPY-5 top-1 miss rate",
    ] {
        assert!(table.contains(needle), "`{needle}` not in: {table}");
    }
}

#[test]
fn a_layout_that_does_not_match_its_windows_is_refused() {
    use filtermon::evalset::format::{self, Header};
    let spec = ProbeSpec {
        span: 3,
        gaps: vec![4, 6],
        windows: 3,
        window: 16,
        seed: 1,
    };
    let b = build(&spec, &TokenSampler::Uniform(vec![5, 6, 7]));
    let records: Vec<u8> = b.labels.iter().flat_map(format::encode_record).collect();
    let header = |layout| Header {
        id: "x".into(),
        tokenizer_hash: "t".into(),
        labeler_version: "l".into(),
        window: 16,
        domains: vec!["probe".into()],
        docs: b.docs.clone(),
        windows: b.windows.clone(),
        tokens: b.tokens.len() as u64,
        probe: Some(layout),
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let open = |layout| {
        format::write(
            &tmp.path().join(format::FILE_NAME),
            &header(layout),
            &b.tokens,
            &records,
        )
        .expect("write");
        EvalSet::open(tmp.path())
    };
    assert!(open(b.layout.clone()).is_ok());
    let mut short = b.layout.clone();
    short.windows.pop();
    let e = open(short).err().expect("one window short");
    assert!(e.to_string().contains("probe layout has 2 windows"), "{e}");
    let mut outside = b.layout.clone();
    outside.windows[0].first = 12;
    let e = open(outside).err().expect("span outside its window");
    assert!(e.to_string().contains("do not fit"), "{e}");
}
