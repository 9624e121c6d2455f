//! The on-disk evalset: `evalset.bin`, a small JSON header followed by little-endian token ids
//! and fixed-size label records, memory-mapped on open.
//!
//! ```text
//! "FMEVSET\0" | u32 format version | u32 header length | header JSON | pad to 8
//! | tokens: u32 × n | labels: 12-byte records × n
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::input_error;
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
    pub fn check(&self, windows: &[WindowMeta]) -> Result<(), String> {
        if self.span == 0 {
            return Err("probe span of 0 tokens".into());
        }
        if self.windows.len() != windows.len() {
            return Err(format!(
                "probe layout has {} windows, the evalset {}",
                self.windows.len(),
                windows.len()
            ));
        }
        for (i, (p, w)) in self.windows.iter().zip(windows).enumerate() {
            let end = u64::from(p.first) + u64::from(p.gap) + u64::from(self.span);
            if p.gap < self.span || end > u64::from(w.len) {
                return Err(format!(
                    "probe window {i}: spans at {} and {}+{} do not fit apart in {} tokens",
                    p.first, p.first, p.gap, w.len
                ));
            }
        }
        Ok(())
    }
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

/// Validates the framing of a mapped file; every failure names the file.
pub fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<Layout> {
    let bad = |why: &str| input_error(format!("{}: {why}", path.display()));
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a filtermon evalset file"));
    }
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let version = u32_at(8);
    if version != FORMAT_VERSION {
        return Err(bad(&format!(
            "evalset format {version}, this filtermon reads {FORMAT_VERSION}; prepare it again"
        )));
    }
    let json_len = u32_at(12) as usize;
    let json = bytes
        .get(16..16 + json_len)
        .ok_or_else(|| bad("truncated header"))?;
    let header: Header =
        serde_json::from_slice(json).map_err(|e| bad(&format!("corrupt header: {e}")))?;
    let tokens_at = 16 + json_len + padding(16 + json_len);
    let n = header.tokens as usize;
    let labels_at = tokens_at + 4 * n;
    if bytes.len() != labels_at + RECORD * n {
        return Err(bad("truncated or oversized token arrays"));
    }
    let consistent = header.windows.iter().all(|w| {
        (w.doc as usize) < header.docs.len() && w.start + u64::from(w.len) <= header.tokens
    }) && header
        .docs
        .iter()
        .all(|d| (d.domain as usize) < header.domains.len());
    if !consistent {
        return Err(bad("window or document table out of range"));
    }
    if let Some(p) = &header.probe {
        p.check(&header.windows).map_err(|e| bad(&e))?;
    }
    Ok(Layout {
        header,
        tokens_at,
        labels_at,
    })
}
