//! The shipped evalset source (data/eval) reads cleanly and is rich in what the
//! built-in filters select, measured with a crude word/punctuation tokenizer
//! (a stand-in for BPE that splits at least as finely around brackets).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use filtermon::evalset::labels::brackets::bracket_labels;
use filtermon::evalset::labels::repeats::repeat_labels;
use filtermon::evalset::reader::{CorpusReader, Document, ReaderOptions};

fn eval_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/eval")
}

/// Spans of: optional leading space + alphanumeric run, optional leading space +
/// one other character, or a whitespace run.
fn crude_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i] == b' ' && i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
            i += 1;
        }
        if b[i].is_ascii_alphanumeric() || b[i] >= 0x80 {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] >= 0x80) {
                i += 1;
            }
        } else if b[i].is_ascii_whitespace() {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
        } else {
            i += 1;
        }
        spans.push((start, i));
    }
    spans
}

#[derive(Default)]
struct Stats {
    docs: usize,
    bytes: usize,
    tokens: usize,
    copy5: usize,
    open: usize,
    close: usize,
}

#[test]
fn shipped_evalset_is_rich_enough() {
    let docs: Vec<Document> = CorpusReader::open(&[eval_dir()], ReaderOptions::default())
        .unwrap()
        .collect::<anyhow::Result<_>>()
        .unwrap();
    let mut per_domain: BTreeMap<String, Stats> = BTreeMap::new();
    for d in &docs {
        let spans = crude_spans(&d.text);
        let mut vocab: HashMap<&str, u32> = HashMap::new();
        let ids: Vec<u32> = spans
            .iter()
            .map(|&(s, e)| {
                let n = vocab.len() as u32;
                *vocab.entry(&d.text[s..e]).or_insert(n)
            })
            .collect();
        let rep = repeat_labels(&ids);
        let br = bracket_labels(&d.text, &spans);
        let entry = per_domain.entry(d.domain.clone()).or_default();
        entry.docs += 1;
        entry.bytes += d.text.len();
        entry.tokens += spans.len();
        entry.copy5 += rep.iter().filter(|r| r.repeat_len >= 5).count();
        entry.open += br.iter().filter(|b| b.open).count();
        entry.close += br.iter().filter(|b| b.close).count();
    }
    for (domain, s) in &per_domain {
        eprintln!(
            "{domain:>7}: {} docs, {} bytes, {} tokens, copy5 {}, open {}, close {}",
            s.docs, s.bytes, s.tokens, s.copy5, s.open, s.close
        );
        assert!(s.docs >= 4, "{domain}");
        assert!(
            (10_000..=25_000).contains(&s.bytes),
            "{domain}: {} bytes",
            s.bytes
        );
        assert!(s.copy5 >= 200, "{domain}: copy5 {}", s.copy5);
    }
    let names: Vec<&str> = per_domain.keys().map(String::as_str).collect();
    assert_eq!(names, ["html", "latex", "prose", "python"]);
    let open: usize = per_domain.values().map(|s| s.open).sum();
    let close: usize = per_domain.values().map(|s| s.close).sum();
    assert!(open >= 500 && close >= 500, "open {open}, close {close}");
    // Every id is unique: the bootstrap clusters by document.
    let mut ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), docs.len());
}
