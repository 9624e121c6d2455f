//! filtermon's own part-of-speech tagger (DESIGN §5: the `tag` and `upos` labels).
//!
//! An averaged perceptron, trained on UD English-EWT, predicts a (PTB tag, UPOS) pair
//! per word with greedy left-to-right decoding in two passes (the second sees the
//! first's tags to the right). A model trained on EWT ships inside the
//! binary ([`Tagger::embedded`]); `filtermon tagger train` makes new ones.
//!
//! [`Tagger::tag_text`] splits raw text into EWT-style words ([`split`]) with byte
//! offsets, groups them into sentences heuristically ([`split::split_sentences`]) and
//! tags each sentence on its own.

pub mod cli;
pub mod conllu;
pub mod perceptron;
pub mod split;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::error::input_error;
use crate::evalset::tagset::{Upos, PTB_TAGS};
pub use perceptron::TrainConfig;
use perceptron::{Class, Example, Model, TrainEvent};

/// The model trained on UD English-EWT (CC BY-SA 4.0) that ships with filtermon.
static EMBEDDED_MODEL: &[u8] = include_bytes!("../../../data/tagger/ewt-perceptron.bin");

/// The model compiled into the binary does not parse: a defect of the build, so not an
/// input error. Kept for the life of the process, hence the reason as text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the embedded tagger model is unusable: {reason}")]
pub struct EmbeddedModelError {
    /// The parse error's whole chain.
    pub reason: String,
}

/// A part-of-speech tagger.
#[derive(Debug)]
pub struct Tagger {
    model: Model,
}

/// One word of tagged text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaggedWord {
    /// Byte offset of the word's first byte in the text.
    pub start: usize,
    /// Byte offset one past the word's last byte.
    pub end: usize,
    /// PTB tag, as an index into [`PTB_TAGS`].
    pub tag: u8,
    /// Universal POS.
    pub upos: Upos,
}

impl TaggedWord {
    /// The PTB tag's spelling, e.g. `NNS`.
    pub fn tag_name(&self) -> &'static str {
        PTB_TAGS[self.tag as usize]
    }
}

impl Tagger {
    /// The embedded EWT model, parsed once per process.
    pub fn embedded() -> Result<&'static Tagger> {
        static CELL: OnceLock<std::result::Result<Tagger, EmbeddedModelError>> = OnceLock::new();
        CELL.get_or_init(|| {
            Tagger::from_bytes(EMBEDDED_MODEL).map_err(|e| EmbeddedModelError {
                reason: format!("{e:#}"),
            })
        })
        .as_ref()
        .map_err(|e| anyhow::Error::new(e.clone()))
    }

    /// Loads a model file written by [`Tagger::save`].
    pub fn load(path: &Path) -> Result<Tagger> {
        let bytes = std::fs::read(path).map_err(|e| {
            input_error(format!("cannot read tagger model {}: {e}", path.display()))
        })?;
        Tagger::from_bytes(&bytes)
            .with_context(|| format!("loading tagger model {}", path.display()))
    }

    /// Parses a model from its file contents.
    pub fn from_bytes(bytes: &[u8]) -> Result<Tagger> {
        Ok(Tagger {
            model: Model::from_bytes(bytes)?,
        })
    }

    /// The model's file contents.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.model.to_bytes()
    }

    /// Writes the model to `path` (via a temporary file, so a crash never leaves half a model).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    }

    /// A copy without the weights of magnitude at most `min_weight` (a smaller model).
    pub fn pruned(&self, min_weight: f32) -> Tagger {
        Tagger {
            model: self.model.pruned(min_weight),
        }
    }

    /// The underlying model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Tags one sentence of already-split words: (PTB tag id, UPOS) per word.
    pub fn tag_words<S: AsRef<str>>(&self, words: &[S]) -> Vec<(u8, Upos)> {
        let classes = self.model.classes();
        self.model
            .predict(words)
            .into_iter()
            .map(|c| {
                let c = classes[c as usize];
                (c.xpos, c.upos)
            })
            .collect()
    }

    /// Splits raw text into words, groups them into sentences, and tags them.
    /// Offsets are byte offsets into `text`.
    pub fn tag_text(&self, text: &str) -> Vec<TaggedWord> {
        let spans = split::split_words(text);
        let mut out = Vec::with_capacity(spans.len());
        let mut words: Vec<&str> = Vec::new();
        for range in split::split_sentences(text, &spans) {
            let sent = &spans[range];
            words.clear();
            words.extend(sent.iter().map(|s| &text[s.start..s.end]));
            for (span, (tag, upos)) in sent.iter().zip(self.tag_words(&words)) {
                out.push(TaggedWord {
                    start: span.start,
                    end: span.end,
                    tag,
                    upos,
                });
            }
        }
        out
    }
}

/// Tagging accuracy over a gold-segmented corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Accuracy {
    /// Words tagged.
    pub words: usize,
    /// Words with a gold UPOS.
    pub upos_total: usize,
    /// Of those, tagged right.
    pub upos_correct: usize,
    /// Words with a gold PTB tag.
    pub xpos_total: usize,
    /// Of those, tagged right.
    pub xpos_correct: usize,
    /// Seconds spent tagging (reading excluded).
    pub seconds: f64,
}

impl Accuracy {
    /// UPOS accuracy in [0, 1].
    pub fn upos(&self) -> f64 {
        self.upos_correct as f64 / self.upos_total.max(1) as f64
    }
    /// PTB tag accuracy in [0, 1].
    pub fn xpos(&self) -> f64 {
        self.xpos_correct as f64 / self.xpos_total.max(1) as f64
    }
    /// Tagging throughput.
    pub fn words_per_sec(&self) -> f64 {
        self.words as f64 / self.seconds.max(1e-9)
    }
}

/// Scores `tagger` against gold sentences.
pub fn evaluate_sentences(tagger: &Tagger, sentences: &[conllu::Sentence]) -> Accuracy {
    let mut acc = Accuracy::default();
    let t0 = Instant::now();
    let predicted: Vec<Vec<(u8, Upos)>> = sentences
        .iter()
        .map(|s| {
            let words: Vec<&str> = s.words.iter().map(|w| w.form.as_str()).collect();
            tagger.tag_words(&words)
        })
        .collect();
    acc.seconds = t0.elapsed().as_secs_f64();
    for (s, pred) in sentences.iter().zip(&predicted) {
        for (w, &(xpos, upos)) in s.words.iter().zip(pred) {
            acc.words += 1;
            if let Some(g) = w.upos {
                acc.upos_total += 1;
                acc.upos_correct += (g == upos) as usize;
            }
            if let Some(g) = w.xpos {
                acc.xpos_total += 1;
                acc.xpos_correct += (g == xpos) as usize;
            }
        }
    }
    acc
}

/// Scores `tagger` on a CoNLL-U file (gold segmentation).
pub fn evaluate(tagger: &Tagger, conllu: &Path) -> Result<Accuracy> {
    let sentences = conllu::read_conllu(conllu)?;
    Ok(evaluate_sentences(tagger, &sentences))
}

/// Training progress.
#[derive(Debug, Clone, Copy)]
pub enum TrainProgress {
    /// A jackknife model (for the second pass's training input) is done.
    Fold {
        /// 1-based fold number.
        fold: usize,
        /// Number of folds.
        folds: usize,
    },
    /// An epoch is done.
    Epoch(EpochReport),
}

/// Progress of one training epoch.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    /// 1-based pass number (the second pass refines the first).
    pub pass: usize,
    /// 1-based epoch number.
    pub epoch: usize,
    /// Accuracy on the training data during the epoch (both tags right).
    pub train_accuracy: f64,
    /// Accuracy of the averaged model so far on the dev set, when one was given.
    pub dev: Option<Accuracy>,
}

/// Trains a tagger on CoNLL-U files.
pub fn train(train_conllu: &Path, dev: Option<&Path>, epochs: usize, seed: u64) -> Result<Tagger> {
    train_with_progress(
        &[train_conllu],
        dev,
        &TrainConfig {
            epochs,
            seed,
            ..TrainConfig::default()
        },
        |_| {},
    )
}

/// Trains a tagger on one or more CoNLL-U files, reporting progress (with dev accuracy
/// after each epoch when `dev` is given).
pub fn train_with_progress(
    train_files: &[&Path],
    dev: Option<&Path>,
    cfg: &TrainConfig,
    progress: impl FnMut(&TrainProgress),
) -> Result<Tagger> {
    let mut sentences = Vec::new();
    for f in train_files {
        sentences.extend(conllu::read_conllu(f)?);
    }
    let dev_sentences = dev.map(conllu::read_conllu).transpose()?;
    train_sentences(&sentences, dev_sentences.as_deref(), cfg, progress)
}

/// Trains a tagger on parsed CoNLL-U sentences (see [`train_with_progress`]).
pub fn train_sentences(
    sentences: &[conllu::Sentence],
    dev_sentences: Option<&[conllu::Sentence]>,
    cfg: &TrainConfig,
    mut progress: impl FnMut(&TrainProgress),
) -> Result<Tagger> {
    if cfg.epochs == 0 {
        crate::bail_input!("--epochs must be at least 1");
    }
    if sentences.is_empty() {
        crate::bail_input!("no sentences in the training data");
    }
    // Classes in order of first appearance keep ids stable for a given training file.
    let mut class_ids: HashMap<Class, u8> = HashMap::new();
    let mut classes = Vec::new();
    let mut examples = Vec::with_capacity(sentences.len());
    for (si, s) in sentences.iter().enumerate() {
        let mut gold = Vec::with_capacity(s.words.len());
        for w in &s.words {
            let (Some(xpos), Some(upos)) = (w.xpos, w.upos) else {
                crate::bail_input!(
                    "training sentence {} has a word (`{}`) without UPOS or XPOS",
                    si + 1,
                    w.form
                );
            };
            let class = Class { xpos, upos };
            let id = match class_ids.get(&class) {
                Some(&id) => id,
                None => {
                    if classes.len() == 255 {
                        crate::bail_input!(
                            "more than 255 distinct (XPOS, UPOS) pairs in the training data"
                        );
                    }
                    classes.push(class);
                    class_ids.insert(class, (classes.len() - 1) as u8);
                    (classes.len() - 1) as u8
                }
            };
            gold.push(id);
        }
        examples.push(Example {
            words: s.words.iter().map(|w| w.form.clone()).collect(),
            gold,
        });
    }
    let model = perceptron::train_model(&examples, classes, cfg, |event| match event {
        TrainEvent::Fold { fold, folds } => progress(&TrainProgress::Fold { fold, folds }),
        TrainEvent::Epoch {
            pass,
            epoch,
            train_accuracy,
            snapshot,
        } => {
            let dev = dev_sentences.map(|d| evaluate_sentences(&Tagger { model: snapshot() }, d));
            progress(&TrainProgress::Epoch(EpochReport {
                pass,
                epoch,
                train_accuracy,
                dev,
            }));
        }
    });
    Ok(Tagger { model })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_tagger() -> Tagger {
        let text = "1\tThe\t_\tDET\tDT\t_\t_\t_\t_\t_\n2\tdog\t_\tNOUN\tNN\t_\t_\t_\t_\t_\n\
                    3\truns\t_\tVERB\tVBZ\t_\t_\t_\t_\t_\n4\t.\t_\tPUNCT\t.\t_\t_\t_\t_\t_\n\n\
                    1\tA\t_\tDET\tDT\t_\t_\t_\t_\t_\n2\tcat\t_\tNOUN\tNN\t_\t_\t_\t_\t_\n\
                    3\tsleeps\t_\tVERB\tVBZ\t_\t_\t_\t_\t_\n4\t!\t_\tPUNCT\t.\t_\t_\t_\t_\t_\n\n";
        let sentences = conllu::parse_conllu(text, "tiny").expect("parses");
        // Two folds, so the second pass (and its serialisation) is exercised too.
        let cfg = TrainConfig {
            epochs: 5,
            seed: 7,
            folds: 2,
            ..TrainConfig::default()
        };
        let t = train_sentences(&sentences, None, &cfg, |_| {}).expect("trains");
        assert_eq!(t.model().num_passes(), 2);
        t
    }

    #[test]
    fn model_round_trips_through_bytes_and_files() {
        let t = tiny_tagger();
        let words = ["The", "cat", "runs", "."];
        let before = t.tag_words(&words);
        assert_eq!(before[1].1, Upos::Noun);
        let bytes = t.to_bytes().expect("serialises");
        let back = Tagger::from_bytes(&bytes).expect("parses");
        assert_eq!(back.tag_words(&words), before);
        assert_eq!(back.to_bytes().expect("serialises"), bytes);

        let dir =
            std::env::temp_dir().join(format!("filtermon-tagger-roundtrip-{}", std::process::id()));
        let path = dir.join("m.bin");
        t.save(&path).expect("saves");
        let loaded = Tagger::load(&path).expect("loads");
        assert_eq!(loaded.tag_words(&words), before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_models_are_clear_input_errors() {
        let bytes = tiny_tagger().to_bytes().expect("serialises");
        let check = |b: &[u8], want: &str| {
            let err = Tagger::from_bytes(b).expect_err("must fail");
            assert!(crate::error::is_input_error(&err), "{err:#}");
            assert!(format!("{err:#}").contains(want), "{err:#} lacks {want}");
        };
        check(b"", "bad magic");
        check(b"GARBAGE-GARBAGE", "bad magic");
        let mut v = bytes.clone();
        v[8] = 99;
        check(&v, "version 99");
        check(&bytes[..bytes.len() / 2], "corrupt tagger model");
        let mut v = bytes.clone();
        let mid = 12 + (v.len() - 12) / 2;
        v[mid] ^= 0x55;
        check(&v, "corrupt tagger model");
        let mut v = bytes.clone();
        v.extend_from_slice(b"junk");
        // Bytes after the zlib stream are not part of the model; they must not be ignored silently.
        assert!(Tagger::from_bytes(&v).is_err());
    }

    #[test]
    fn missing_model_file_is_an_input_error() {
        let err = Tagger::load(Path::new("/nonexistent/model.bin")).expect_err("must fail");
        assert!(crate::error::is_input_error(&err));
    }

    #[test]
    fn tag_text_offsets_cover_the_words() {
        let t = tiny_tagger();
        let text = "The dog runs. A cat sleeps!";
        let tagged = t.tag_text(text);
        let words: Vec<&str> = tagged.iter().map(|w| &text[w.start..w.end]).collect();
        assert_eq!(
            words,
            ["The", "dog", "runs", ".", "A", "cat", "sleeps", "!"]
        );
        assert_eq!(tagged[2].upos, Upos::Verb);
        assert_eq!(tagged[2].tag_name(), "VBZ");
    }
}
