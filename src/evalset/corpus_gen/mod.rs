//! A deterministic synthetic corpus for the demo: prose, Python, HTML and LaTeX documents from
//! templates written for filtermon, with repeats planted at controlled distances, so that every
//! token filter of the design (content and function words, brackets, copies) has tokens.
//!
//! The same seed gives the same bytes. Documents cycle through the four domains; a planted
//! repeat copies a span of whole words verbatim to a point a chosen number of words after it.
//! Train and eval splits come from independent random streams of the same generator.

pub mod code;
pub mod markup;
pub mod prose;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::evalset::reader::Document;

/// The generated domains, in the order documents cycle through them.
pub const DOMAINS: [&str; 4] = ["prose", "python", "html", "latex"];

/// How repeats are planted.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatConfig {
    /// Repeats planted per document (each may land or not; see `probability`).
    pub per_document: usize,
    /// Chance that each of them is planted.
    pub probability: f64,
    /// Smallest and largest copied span, in words (inclusive).
    pub span_words: (usize, usize),
    /// Distances, in words from the end of the span to the copy, drawn uniformly.
    pub distances: Vec<usize>,
}

impl Default for RepeatConfig {
    fn default() -> Self {
        Self {
            per_document: 2,
            probability: 0.7,
            span_words: (5, 24),
            distances: vec![4, 16, 64, 256],
        }
    }
}

/// Size and seed of a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusConfig {
    /// Seed of everything.
    pub seed: u64,
    /// Characters of the train split (documents are added until it is reached).
    pub train_chars: usize,
    /// Characters of the held-out eval split.
    pub eval_chars: usize,
    /// Planted repeats.
    pub repeats: RepeatConfig,
}

/// The two splits.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    /// Training documents.
    pub train: Vec<Document>,
    /// Held-out documents.
    pub eval: Vec<Document>,
}

/// Paths of a corpus written by [`Corpus::write`].
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusFiles {
    /// `train.jsonl`
    pub train: PathBuf,
    /// `eval.jsonl`
    pub eval: PathBuf,
}

impl Corpus {
    /// Generates both splits.
    pub fn generate(cfg: &CorpusConfig) -> Self {
        Self {
            train: split(cfg, "train", cfg.train_chars, 0),
            eval: split(cfg, "eval", cfg.eval_chars, 1),
        }
    }

    /// Writes `train.jsonl` and `eval.jsonl` (`{"id", "domain", "text"}` per line, as
    /// [`crate::evalset::reader::CorpusReader`] reads) into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<CorpusFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = CorpusFiles {
            train: dir.join("train.jsonl"),
            eval: dir.join("eval.jsonl"),
        };
        write_jsonl(&files.train, &self.train)?;
        write_jsonl(&files.eval, &self.eval)?;
        Ok(files)
    }
}

fn split(cfg: &CorpusConfig, name: &str, chars: usize, stream: u64) -> Vec<Document> {
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(2).wrapping_add(stream));
    let mut docs = Vec::new();
    let mut total = 0;
    while total < chars {
        let domain = DOMAINS[docs.len() % DOMAINS.len()];
        let raw = body(&mut rng, domain);
        let text = plant_repeats(&mut rng, &raw, &cfg.repeats);
        total += text.len();
        docs.push(Document {
            id: format!("{domain}-{name}-{:05}", docs.len()),
            domain: domain.to_string(),
            text,
        });
    }
    docs
}

fn body(rng: &mut StdRng, domain: &str) -> String {
    let parts = rng.random_range(2..6);
    match domain {
        "prose" => prose::document(rng, parts),
        "python" => code::document(rng, parts),
        "html" => markup::html(rng, parts),
        _ => markup::latex(rng, parts),
    }
}

/// Copies spans of whole words verbatim further on (`per_document` attempts).
pub fn plant_repeats(rng: &mut StdRng, text: &str, cfg: &RepeatConfig) -> String {
    let mut text = text.to_string();
    let lo = cfg.span_words.0.max(1);
    let hi = cfg.span_words.1.max(lo);
    for _ in 0..cfg.per_document {
        if cfg.distances.is_empty() || !rng.random_bool(cfg.probability.clamp(0.0, 1.0)) {
            continue;
        }
        let span = rng.random_range(lo..=hi);
        let distance = cfg.distances[rng.random_range(0..cfg.distances.len())];
        if let Some(planted) = plant_one(rng, &text, span, distance) {
            text = planted;
        }
    }
    text
}

/// Inserts a copy of `span` words `distance` words after the original, or `None` when the
/// text is too short. Words keep their trailing whitespace, and neither the original nor the
/// insertion point can be the text's last word, so both the original and the copy follow
/// whitespace (or the text's start) and end with it: the copy tokenizes exactly as the original.
fn plant_one(rng: &mut StdRng, text: &str, span: usize, distance: usize) -> Option<String> {
    let units: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
    let room = units.len().checked_sub(span + distance)?;
    if room == 0 {
        return None;
    }
    let start = rng.random_range(0..room);
    let at = start + span + distance;
    let copy = units[start..start + span].concat();
    let mut out = String::with_capacity(text.len() + copy.len());
    out.push_str(&units[..at].concat());
    out.push_str(&copy);
    out.push_str(&units[at..].concat());
    Some(out)
}

/// `word` with its first letter in upper case.
pub fn capitalize(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Uniform choice from a non-empty constant list.
trait Pick {
    fn pick_ref<'a, T>(&mut self, items: &'a [T]) -> &'a T;

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick_ref(items)
    }
}

impl Pick for StdRng {
    fn pick_ref<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.random_range(0..items.len())]
    }
}

fn write_jsonl(path: &Path, docs: &[Document]) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(file);
    for d in docs {
        let line = json!({"id": d.id, "domain": d.domain, "text": d.text});
        writeln!(w, "{line}").with_context(|| format!("writing {}", path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evalset::reader::{CorpusReader, ReaderOptions};

    fn config(seed: u64) -> CorpusConfig {
        CorpusConfig {
            seed,
            train_chars: 40_000,
            eval_chars: 8_000,
            repeats: RepeatConfig::default(),
        }
    }

    #[test]
    fn same_seed_same_corpus_other_seed_other_corpus() {
        assert_eq!(Corpus::generate(&config(7)), Corpus::generate(&config(7)));
        assert_ne!(
            Corpus::generate(&config(7)).train,
            Corpus::generate(&config(8)).train
        );
    }

    #[test]
    fn every_domain_in_both_splits_with_its_features() {
        let c = Corpus::generate(&config(1));
        for docs in [&c.train, &c.eval] {
            for d in DOMAINS {
                assert!(docs.iter().any(|x| x.domain == d), "no {d} document");
            }
        }
        let all = |domain: &str| -> String {
            c.train
                .iter()
                .filter(|d| d.domain == domain)
                .map(|d| d.text.as_str())
                .collect()
        };
        let prose = all("prose");
        for w in [" she ", " he ", "There ", "(", ")", "[", "]", "\""] {
            assert!(prose.contains(w), "prose lacks {w:?}");
        }
        assert!(all("python").contains("def ") && all("python").contains("{\""));
        assert!(all("html").contains("<ul>") || all("html").contains("<table>"));
        assert!(all("latex").contains("\\begin{") && all("latex").contains("\\end{"));
        let total: usize = c.train.iter().map(|d| d.text.len()).sum();
        assert!(total >= 40_000);
    }

    #[test]
    fn planted_copy_repeats_the_span_verbatim_at_the_distance() {
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let out = plant_one(&mut rng, &text, 6, 10).unwrap_or_default();
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words.len(), 106);
        // The copy sits right after the 10 words that follow the original span.
        let start = words
            .windows(6)
            .position(|w| words.windows(6).filter(|x| *x == w).count() == 2)
            .unwrap_or(usize::MAX);
        assert_eq!(&words[start..start + 6], &words[start + 16..start + 22]);
    }

    #[test]
    fn written_splits_read_back_with_the_corpus_reader() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let c = Corpus::generate(&config(2));
        let files = c.write(dir.path())?;
        let back: Vec<Document> = CorpusReader::open(&[files.eval], ReaderOptions::default())?
            .collect::<Result<_, _>>()?;
        assert_eq!(back, c.eval);
        Ok(())
    }
}
