//! Evaluation sets: documents cut into windows, every token labeled (DESIGN §5), stored
//! immutable and content-hashed, tied to one tokenizer.

pub mod categories;
pub mod corpus_gen;
pub mod export;
pub mod filter;
pub mod format;
pub mod labels;
pub mod loaded;
pub mod prepare;
pub mod probe;
pub mod reader;
pub mod scores;
pub mod tagger;
pub mod tagset;
pub mod tokenizer;

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::input_error;
use format::{Header, Layout, WindowMeta, RECORD};
use labels::probe::ProbeLabel;
use labels::TokenLabels;

/// A prepared evalset, memory-mapped.
pub struct EvalSet {
    dir: PathBuf,
    map: Mmap,
    layout: Layout,
}

impl EvalSet {
    /// Opens `DIR/evalset.bin`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(format::FILE_NAME);
        let file = File::open(&path).map_err(|e| {
            input_error(format!(
                "{}: not an evalset folder ({}: {e})",
                dir.display(),
                format::FILE_NAME
            ))
        })?;
        // SAFETY: evalsets are immutable once written (written under a temporary name and renamed).
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| input_error(format!("{}: {e}", path.display())))?;
        let layout = format::parse(&path, &map)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            map,
            layout,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The content hash.
    pub fn id(&self) -> &str {
        &self.layout.header.id
    }

    /// Hash of the tokenizer the evalset was built with.
    pub fn tokenizer_hash(&self) -> &str {
        &self.layout.header.tokenizer_hash
    }

    /// Refuses (input error) a `tokenizer.json` other than the one the evalset was built with:
    /// scores under another tokenizer would be of other token sequences.
    pub fn check_tokenizer(&self, tok_path: &Path) -> anyhow::Result<()> {
        let hash = crate::evalset::tokenizer::hash(tok_path)?;
        if hash != self.tokenizer_hash() {
            return Err(input_error(format!(
                "{}: tokenizer {hash} differs from the one evalset {} was prepared with ({})",
                tok_path.display(),
                self.id(),
                self.tokenizer_hash()
            )));
        }
        Ok(())
    }

    /// Domain names; a label's `domain` indexes this.
    pub fn domains(&self) -> &[String] {
        &self.layout.header.domains
    }

    /// The header (documents, windows, counts).
    pub fn header(&self) -> &Header {
        &self.layout.header
    }

    /// Windows in token order.
    pub fn windows(&self) -> &[WindowMeta] {
        &self.layout.header.windows
    }

    /// Total tokens.
    pub fn len(&self) -> usize {
        self.layout.header.tokens as usize
    }

    /// True when the evalset holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token id at global index `i`.
    pub fn token(&self, i: usize) -> u32 {
        let at = self.layout.tokens_at + 4 * i;
        let b = &self.map[at..at + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The token ids of one window.
    pub fn window_tokens(&self, w: &WindowMeta) -> Vec<u32> {
        (w.start as usize..(w.start + u64::from(w.len)) as usize)
            .map(|i| self.token(i))
            .collect()
    }

    /// The planted layout, for evalsets made by `filtermon probe`.
    pub fn probe(&self) -> Option<&format::ProbeLayout> {
        self.layout.header.probe.as_ref()
    }

    /// Every token's labels, in global order (probe labels derived from the header's layout).
    pub fn labels(&self) -> anyhow::Result<Vec<TokenLabels>> {
        let h = &self.layout.header;
        let mut out = Vec::with_capacity(self.len());
        for (wi, w) in h.windows.iter().enumerate() {
            let domain = h.docs[w.doc as usize].domain;
            let probe = h.probe.as_ref().map(|layout| (layout, &layout.windows[wi]));
            for p in 0..w.len {
                let i = w.start as usize + p as usize;
                let at = self.layout.labels_at + RECORD * i;
                let rec = &self.map[at..at + RECORD];
                let mut l = format::decode_record(rec, p, domain).ok_or_else(|| {
                    input_error(format!(
                        "{}: corrupt label record of token {i}",
                        self.dir.display()
                    ))
                })?;
                l.probe = probe.map(|(layout, pw)| ProbeLabel::at(pw, layout.span, p));
                out.push(l);
            }
        }
        Ok(out)
    }

    /// Scored tokens (position ≥ 1) passing each filter, per domain: `counts[filter][domain]`,
    /// domains in the order of [`EvalSet::domains`].
    pub fn filter_counts(&self, filters: &[filter::Filter]) -> anyhow::Result<Vec<Vec<usize>>> {
        let mut counts = vec![vec![0usize; self.domains().len()]; filters.len()];
        for l in self.labels()?.iter().filter(|l| l.pos > 0) {
            for (row, f) in counts.iter_mut().zip(filters) {
                if f.matches(l) {
                    row[l.domain as usize] += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Document index of every token, in global order.
    pub fn token_docs(&self) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.len());
        for w in self.windows() {
            out.extend(std::iter::repeat_n(w.doc, w.len as usize));
        }
        out
    }
}
