//! `prepare`: documents → tokenized, labeled windows → an evalset folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::input_error;
use crate::evalset::format::{self, DocMeta, Header, WindowMeta};
use crate::evalset::labels::brackets::bracket_labels;
use crate::evalset::labels::frequency::FrequencyTable;
use crate::evalset::labels::repeats::repeat_labels;
use crate::evalset::labels::TokenLabels;
use crate::evalset::reader::{CorpusReader, ReaderOptions};
use crate::evalset::tagger::{TaggedWord, Tagger};
use crate::evalset::tagset::{ptb_id, Upos};
use crate::evalset::{export, EvalSet};

/// Version of the labeling rules; part of every evalset's id.
pub const LABELER_VERSION: &str = "labels-1";

/// What to prepare.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Corpus files or folders.
    pub inputs: Vec<PathBuf>,
    /// `tokenizer.json`, or a checkpoint folder holding one.
    pub tokenizer: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Most tokens per window.
    pub window: usize,
    /// How to read the corpus.
    pub reader: ReaderOptions,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            inputs: Vec::new(),
            tokenizer: PathBuf::new(),
            out: PathBuf::new(),
            window: 2048,
            reader: ReaderOptions::default(),
        }
    }
}

/// What `prepare` did, for its report.
pub struct Prepared {
    /// The written evalset.
    pub evalset: EvalSet,
    /// Lines or files skipped with `--skip-bad`.
    pub skipped: usize,
}

/// `tokenizer.json` itself, or the one inside a checkpoint folder.
pub fn tokenizer_file(path: &Path) -> anyhow::Result<PathBuf> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    if file.is_file() {
        Ok(file)
    } else {
        Err(input_error(format!(
            "{}: no tokenizer.json",
            path.display()
        )))
    }
}

/// Runs the whole preparation and writes the evalset folder.
pub fn prepare(opts: &PrepareOptions) -> anyhow::Result<Prepared> {
    if opts.window < 2 {
        return Err(input_error("--window must be at least 2 tokens"));
    }
    let tok_path = tokenizer_file(&opts.tokenizer)?;
    let tok = crate::evalset::tokenizer::load(&tok_path)?;
    let tagger = Tagger::embedded()?;
    let mut reader = CorpusReader::open(&opts.inputs, opts.reader.clone())?;
    let mut b = Builder::default();
    for doc in reader.by_ref() {
        let doc = doc?;
        b.add(&tok, tagger, &doc.id, &doc.domain, &doc.text, opts.window)?;
    }
    let skipped = reader.skipped();
    if b.tokens.is_empty() {
        return Err(input_error("the inputs hold no tokens"));
    }
    let header = Header {
        id: String::new(),
        tokenizer_hash: crate::evalset::tokenizer::hash(&tok_path)?,
        labeler_version: LABELER_VERSION.into(),
        window: opts.window,
        domains: b.domains,
        docs: b.docs,
        windows: b.windows,
        tokens: b.tokens.len() as u64,
        probe: None,
    };
    let evalset = write_evalset(&opts.out, header, &b.tokens, &b.labels)?;
    let texts = TokenTexts::new(&tok);
    let from = export::Provenance {
        sources: &opts.inputs,
        tokenizer: &tok_path,
        skipped,
        probe: None,
    };
    export::write_all(&evalset, &texts, &from)?;
    Ok(Prepared { evalset, skipped })
}

/// Writes `OUT/evalset.bin` from tokens and their labels and opens it: fills `log_freq` from
/// the tokens' own counts and the header's id from the content. `header.id` and the labels'
/// `log_freq` are ignored.
pub fn write_evalset(
    out: &Path,
    mut header: Header,
    tokens: &[u32],
    labels: &[TokenLabels],
) -> anyhow::Result<EvalSet> {
    let freq = FrequencyTable::from_windows(std::iter::once(tokens));
    let records: Vec<u8> = labels
        .iter()
        .zip(tokens)
        .flat_map(|(l, &t)| {
            let mut l = *l;
            l.log_freq = freq.log_freq(t).unwrap_or(0.0);
            format::encode_record(&l)
        })
        .collect();
    header.tokens = tokens.len() as u64;
    header.id = format::content_id(&header, tokens, &records);
    std::fs::create_dir_all(out)
        .map_err(|e| input_error(format!("{}: cannot create: {e}", out.display())))?;
    format::write(&out.join(format::FILE_NAME), &header, tokens, &records)?;
    EvalSet::open(out)
}

/// Decoded text of token ids, cached.
pub struct TokenTexts<'a> {
    tok: &'a Tokenizer,
    cache: std::cell::RefCell<HashMap<u32, String>>,
}

impl<'a> TokenTexts<'a> {
    /// Wraps a tokenizer.
    pub fn new(tok: &'a Tokenizer) -> Self {
        Self {
            tok,
            cache: Default::default(),
        }
    }

    /// The text of one token id (lossy for partial UTF-8 sequences).
    pub fn get(&self, id: u32) -> String {
        self.cache
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| self.tok.decode(&[id], false).unwrap_or_default())
            .clone()
    }
}

#[derive(Default)]
struct Builder {
    tokens: Vec<u32>,
    labels: Vec<TokenLabels>,
    domains: Vec<String>,
    docs: Vec<DocMeta>,
    windows: Vec<WindowMeta>,
}

impl Builder {
    fn add(
        &mut self,
        tok: &Tokenizer,
        tagger: &Tagger,
        id: &str,
        domain: &str,
        text: &str,
        window: usize,
    ) -> anyhow::Result<()> {
        let enc = tok
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("document {id}: tokenizing failed: {e}"))?;
        let ids = enc.get_ids();
        if ids.is_empty() {
            return Ok(());
        }
        let spans: Vec<(usize, usize)> = enc.get_offsets().to_vec();
        let words = tagger.tag_text(text);
        let brackets = bracket_labels(text, &spans);
        let domain_idx = match self.domains.iter().position(|d| d == domain) {
            Some(i) => i,
            None => {
                self.domains.push(domain.to_owned());
                self.domains.len() - 1
            }
        };
        let doc = self.docs.len() as u32;
        self.docs.push(DocMeta {
            id: id.to_owned(),
            domain: domain_idx as u16,
        });
        let xx = ptb_id("XX").unwrap_or(0);
        for (wi, chunk) in (0..ids.len())
            .collect::<Vec<_>>()
            .chunks(window)
            .enumerate()
        {
            let toks: Vec<u32> = chunk.iter().map(|&i| ids[i]).collect();
            let repeats = repeat_labels(&toks);
            self.windows.push(WindowMeta {
                doc,
                index: wi as u32,
                start: self.tokens.len() as u64,
                len: toks.len() as u32,
            });
            for (p, &i) in chunk.iter().enumerate() {
                let (tag, upos, word_initial) = match word_of(text, spans[i], &words) {
                    Some((w, initial)) => (w.tag, w.upos, initial),
                    // Whitespace-only tokens belong to no word.
                    None => (xx, Upos::X, false),
                };
                self.labels.push(TokenLabels {
                    tag,
                    upos,
                    open_bracket: brackets[i].open,
                    close_bracket: brackets[i].close,
                    repeat_len: repeats[p].repeat_len,
                    copy_distance: repeats[p].copy_distance,
                    log_freq: 0.0,
                    word_initial,
                    pos: p as u32,
                    domain: domain_idx as u16,
                    probe: None,
                });
            }
            self.tokens.extend_from_slice(&toks);
        }
        Ok(())
    }
}

/// The word that the token's first non-space character falls in, and whether that character
/// starts the word.
fn word_of<'w>(
    text: &str,
    span: (usize, usize),
    words: &'w [TaggedWord],
) -> Option<(&'w TaggedWord, bool)> {
    let (start, end) = span;
    let slice = text.get(start..end.min(text.len()))?;
    let offset = slice.char_indices().find(|(_, c)| !c.is_whitespace())?.0;
    let c = start + offset;
    let i = words.partition_point(|w| w.end <= c);
    let w = words.get(i).filter(|w| w.start <= c)?;
    Some((w, w.start == c))
}
