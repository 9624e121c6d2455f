//! The on-disk evalset: `evalset.bin`, a small JSON header followed by little-endian token ids
//! and fixed-size label records, memory-mapped on open.
//!
//! ```text
//! "FMEVSET\0" | u32 format version | u32 header length | header JSON | pad to 8
//! | tokens: u32 × n | labels: 12-byte records × n
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{input_error, InputError};
use crate::evalset::labels::probe::ProbeWindow;
use crate::evalset::labels::TokenLabels;
use crate::evalset::tagset::Upos;

/// File name of the binary evalset inside its folder.
pub const FILE_NAME: &str = "evalset.bin";
const MAGIC: &[u8; 8] = b"FMEVSET\0";
/// Bumped whenever the byte layout changes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes per label record.
pub const RECORD: usize = 12;

/// One document of the evalset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMeta {
    /// Document id from the source.
    pub id: String,
    /// Index into [`Header::domains`].
    pub domain: u16,
}

/// One window: consecutive tokens of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowMeta {
    /// Index into [`Header::docs`].
    pub doc: u32,
    /// Index of the window within its document.
    pub index: u32,
    /// Global index of the window's first token.
    pub start: u64,
    /// Tokens in the window.
    pub len: u32,
}

/// Everything but the per-token arrays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Content hash (see [`content_id`]).
    pub id: String,
    /// Hash of the tokenizer the tokens come from.
    pub tokenizer_hash: String,
    /// Version of the labeling code and tagger model.
    pub labeler_version: String,
    /// Most tokens per window.
    pub window: usize,
    /// Domain names.
    pub domains: Vec<String>,
    /// Documents, in source order.
    pub docs: Vec<DocMeta>,
    /// Windows, in token order.
    pub windows: Vec<WindowMeta>,
    /// Total tokens.
    pub tokens: u64,
    /// Where `filtermon probe` planted its repeated spans; absent in evalsets of documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeLayout>,
}

/// The planted layout of a probe evalset: every window holds one span of random tokens twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeLayout {
    /// Tokens per planted span.
    pub span: u32,
    /// One entry per window of [`Header::windows`], in the same order.
    pub windows: Vec<ProbeWindow>,
}

impl ProbeLayout {
    /// Checks the layout against the window table: one entry per window, spans non-empty,
    /// not overlapping and inside their windows.
    pub fn check(&self, windows: &[WindowMeta]) -> Result<(), ProbeLayoutError> {
        if self.span == 0 {
            return Err(ProbeLayoutError::EmptySpan);
        }
        if self.windows.len() != windows.len() {
            return Err(ProbeLayoutError::WindowCount {
                layout: self.windows.len(),
                evalset: windows.len(),
            });
        }
        for (i, (p, w)) in self.windows.iter().zip(windows).enumerate() {
            let end = u64::from(p.first) + u64::from(p.gap) + u64::from(self.span);
            if p.gap < self.span || end > u64::from(w.len) {
                return Err(ProbeLayoutError::DoesNotFit {
                    window: i,
                    first: p.first,
                    gap: p.gap,
                    len: w.len,
                });
            }
        }
        Ok(())
    }
}

/// Why a probe layout does not fit the window table.
#[derive(Debug, thiserror::Error)]
pub enum ProbeLayoutError {
    /// A span of no tokens, which plants nothing.
    #[error("probe span of 0 tokens")]
    EmptySpan,
    /// One entry per window is needed.
    #[error("probe layout has {layout} windows, the evalset {evalset}")]
    WindowCount {
        /// Entries in the layout.
        layout: usize,
        /// Windows in the evalset.
        evalset: usize,
    },
    /// The two copies of a window's span overlap or run past its end.
    #[error("probe window {window}: spans at {first} and {first}+{gap} do not fit apart in {len} tokens")]
    DoesNotFit {
        /// Index of the window.
        window: usize,
        /// Position of the first copy.
        first: u32,
        /// Distance from the first copy to the second.
        gap: u32,
        /// Tokens in the window.
        len: u32,
    },
}

/// Why an `evalset.bin` cannot be read, with the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The magic bytes are missing.
    #[error("{}: not a filtermon evalset file", path.display())]
    NotAnEvalset {
        /// The file.
        path: PathBuf,
    },
    /// Another layout version, which this build cannot read.
    #[error(
        "{}: evalset format {version}, this filtermon reads {FORMAT_VERSION}; prepare it again",
        path.display()
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version the file has.
        version: u32,
    },
    /// The file ends inside the header.
    #[error("{}: truncated header", path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
    },
    /// The header is not the JSON of a [`Header`].
    #[error("{}: corrupt header: {error}", path.display())]
    CorruptHeader {
        /// The file.
        path: PathBuf,
        /// What decoding it gave.
        error: serde_json::Error,
    },
    /// The file is not as long as the header's token count makes it.
    #[error("{}: truncated or oversized token arrays", path.display())]
    ArrayLength {
        /// The file.
        path: PathBuf,
    },
    /// A window names a missing document or tokens past the end, or a document a missing
    /// domain.
    #[error("{}: window or document table out of range", path.display())]
    TableOutOfRange {
        /// The file.
        path: PathBuf,
    },
    /// The probe layout does not fit the window table.
    #[error("{}: {error}", path.display())]
    Probe {
        /// The file.
        path: PathBuf,
        /// How it does not fit.
        error: ProbeLayoutError,
    },
}

/// Packs the stored part of a token's labels (`pos` and `domain` follow from its window).
pub fn encode_record(l: &TokenLabels) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0] = l.tag;
    r[1] = l.upos as u8;
    r[2] =
        u8::from(l.open_bracket) | u8::from(l.close_bracket) << 1 | u8::from(l.word_initial) << 2;
    r[3] = l.repeat_len;
    r[4..8].copy_from_slice(&l.copy_distance.to_le_bytes());
    r[8..12].copy_from_slice(&l.log_freq.to_le_bytes());
    r
}

/// Unpacks a record written by [`encode_record`].
pub fn decode_record(r: &[u8], pos: u32, domain: u16) -> Option<TokenLabels> {
    let word = |i: usize| -> Option<[u8; 4]> { r.get(i..i + 4)?.try_into().ok() };
    Some(TokenLabels {
        tag: *r.first()?,
        upos: Upos::from_index(*r.get(1)?)?,
        open_bracket: r.get(2)? & 1 != 0,
        close_bracket: r.get(2)? & 2 != 0,
        word_initial: r.get(2)? & 4 != 0,
        repeat_len: *r.get(3)?,
        copy_distance: u32::from_le_bytes(word(4)?),
        log_freq: f32::from_le_bytes(word(8)?),
        pos,
        domain,
        probe: None,
    })
}

/// The evalset id: a hash over tokens, label records, tokenizer hash, labeler version,
/// window length, document table and, for probe evalsets, the planted layout.
pub fn content_id(header: &Header, tokens: &[u32], records: &[u8]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    h.update(records);
    h.update(header.tokenizer_hash.as_bytes());
    h.update(header.labeler_version.as_bytes());
    h.update((header.window as u64).to_le_bytes());
    for d in &header.docs {
        h.update(d.id.as_bytes());
        h.update([0]);
        h.update(header.domains[d.domain as usize].as_bytes());
        h.update([0]);
    }
    // Only probe evalsets hash their layout, so the ids of document evalsets stay as they were.
    if let Some(p) = &header.probe {
        h.update(b"probe");
        h.update(p.span.to_le_bytes());
        for w in &p.windows {
            h.update(w.gap.to_le_bytes());
            h.update(w.first.to_le_bytes());
        }
    }
    hex::encode(&h.finalize()[..8])
}

/// Writes `evalset.bin` (to a temporary name, then renamed, so readers never see half a file).
pub fn write(path: &Path, header: &Header, tokens: &[u32], records: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("bin.tmp");
    let json = serde_json::to_vec(header)?;
    let mut f = BufWriter::new(
        File::create(&tmp).map_err(|e| input_error(format!("{}: {e}", tmp.display())))?,
    );
    f.write_all(MAGIC)?;
    f.write_all(&FORMAT_VERSION.to_le_bytes())?;
    f.write_all(&(json.len() as u32).to_le_bytes())?;
    f.write_all(&json)?;
    f.write_all(&vec![0u8; padding(16 + json.len())])?;
    for t in tokens {
        f.write_all(&t.to_le_bytes())?;
    }
    f.write_all(records)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// A parsed file: header plus byte ranges of the two arrays.
pub struct Layout {
    /// The header.
    pub header: Header,
    /// Byte offset of the token array.
    pub tokens_at: usize,
    /// Byte offset of the label records.
    pub labels_at: usize,
}

/// Validates the framing of a mapped file; every failure is a [`FormatError`] naming the
/// file, inside an [`InputError`] so that a `?` into `anyhow` keeps it an exit-2 error.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Layout, InputError> {
    parse_typed(path, bytes).map_err(InputError::new)
}

fn parse_typed(path: &Path, bytes: &[u8]) -> Result<Layout, FormatError> {
    let path_buf = || path.to_path_buf();
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(FormatError::NotAnEvalset { path: path_buf() });
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version {
            path: path_buf(),
            version,
        });
    }
    let json_len = u32_at(12) as usize;
    let json = bytes
        .get(16..16 + json_len)
        .ok_or_else(|| FormatError::TruncatedHeader { path: path_buf() })?;
    let header: Header =
        serde_json::from_slice(json).map_err(|error| FormatError::CorruptHeader {
            path: path_buf(),
            error,
        })?;
    let tokens_at = 16 + json_len + padding(16 + json_len);
    let n = header.tokens as usize;
    let labels_at = tokens_at + 4 * n;
    if bytes.len() != labels_at + RECORD * n {
        return Err(FormatError::ArrayLength { path: path_buf() });
    }
    let consistent = header.windows.iter().all(|w| {
        (w.doc as usize) < header.docs.len() && w.start + u64::from(w.len) <= header.tokens
    }) && header
        .docs
        .iter()
        .all(|d| (d.domain as usize) < header.domains.len());
    if !consistent {
        return Err(FormatError::TableOutOfRange { path: path_buf() });
    }
    if let Some(p) = &header.probe {
        p.check(&header.windows)
            .map_err(|error| FormatError::Probe {
                path: path_buf(),
                error,
            })?;
    }
    Ok(Layout {
        header,
        tokens_at,
        labels_at,
    })
}
