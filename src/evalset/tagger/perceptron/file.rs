//! The on-disk model format: writing, reading with full validation, and the 8-bit log
//! code the weights are quantised to.
//!
//! ```text
//! MAGIC (8) | VERSION u32 LE | zlib stream (its Adler-32 catches corruption) of:
//!   n_classes u8, then (xpos u8, upos u8) per class
//!   n_passes u8, then per pass:
//!     lo f32 LE, hi f32 LE             the weight code's range (see `LogCode`)
//!     n_features varint, keys as varint deltas (strictly increasing)
//!     per feature: entry count varint
//!     per entry: class u8               (all classes, then all weights: compresses better)
//!     per entry: weight code u8
//!   n_dict varint, per word: len varint, UTF-8 bytes, class u8
//! and nothing after, inside or outside the stream.
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};

use anyhow::{Context, Result};

use super::weights::{Entry, Weights, MAX_ENTRIES};
use super::{Class, Model};
use crate::error::input_error;
use crate::evalset::tagset::{Upos, PTB_TAGS};

/// File magic of a tagger model.
pub const MAGIC: &[u8; 8] = b"FMTAGGER";
/// Format version; bump whenever the features or the layout change.
pub const VERSION: u32 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Model {
    /// Serialises the model (weights quantised to 16 bits, zlib-compressed).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut p = Vec::new();
        p.push(self.classes.len() as u8);
        for c in &self.classes {
            p.push(c.xpos);
            p.push(c.upos as u8);
        }
        p.push(self.passes.len() as u8);
        for w in &self.passes {
            let hi = w.entries.iter().fold(0f32, |m, e| m.max(e.w.abs()));
            let lo = w.entries.iter().fold(hi, |m, e| m.min(e.w.abs()));
            let code = LogCode::new(lo, hi);
            p.extend_from_slice(&code.lo.to_le_bytes());
            p.extend_from_slice(&code.hi.to_le_bytes());
            put_varint(&mut p, w.keys.len() as u64);
            let mut prev = 0u64;
            for (i, &k) in w.keys.iter().enumerate() {
                let k = k as u64;
                put_varint(&mut p, if i == 0 { k } else { k - prev });
                prev = k;
            }
            for o in w.offsets.windows(2) {
                put_varint(&mut p, (o[1] - o[0]) as u64);
            }
            p.extend(w.entries.iter().map(|e| e.class));
            p.extend(w.entries.iter().map(|e| code.encode(e.w)));
        }
        let mut dict: Vec<(&String, &u8)> = self.tagdict.iter().collect();
        dict.sort();
        put_varint(&mut p, dict.len() as u64);
        for (w, c) in dict {
            put_varint(&mut p, w.len() as u64);
            p.extend_from_slice(w.as_bytes());
            p.push(*c);
        }
        let mut out = Vec::with_capacity(p.len() / 2);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let mut enc = flate2::write::ZlibEncoder::new(out, flate2::Compression::best());
        enc.write_all(&p).context("compressing tagger model")?;
        enc.finish().context("compressing tagger model")
    }

    /// Parses a model; every inconsistency is an input error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(input_error(
                "not a filtermon tagger model (bad magic header)",
            ));
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(v);
        if version != VERSION {
            return Err(input_error(format!(
                "tagger model format version {version} is not supported (this build reads version {VERSION})"
            )));
        }
        let mut payload = Vec::new();
        let mut dec = flate2::bufread::ZlibDecoder::new(&bytes[12..]);
        dec.read_to_end(&mut payload)
            .map_err(|e| input_error(format!("corrupt tagger model: {e}")))?;
        if dec.total_in() != (bytes.len() - 12) as u64 {
            return Err(corrupt("bytes after the compressed data"));
        }
        let mut r = Reader {
            b: &payload,
            pos: 0,
        };
        let n_classes = r.u8()? as usize;
        if n_classes == 0 {
            return Err(corrupt("no classes"));
        }
        let mut classes = Vec::with_capacity(n_classes);
        for _ in 0..n_classes {
            let xpos = r.u8()?;
            let upos = Upos::from_index(r.u8()?).ok_or_else(|| corrupt("bad UPOS id"))?;
            if xpos as usize >= PTB_TAGS.len() {
                return Err(corrupt("bad PTB tag id"));
            }
            classes.push(Class { xpos, upos });
        }
        let n_passes = r.u8()? as usize;
        if !(1..=2).contains(&n_passes) {
            return Err(corrupt("bad number of passes"));
        }
        let mut passes = Vec::with_capacity(n_passes);
        for _ in 0..n_passes {
            passes.push(read_weights(&mut r, n_classes)?);
        }
        let n_dict = r.count()?;
        let mut tagdict = HashMap::with_capacity(n_dict);
        for _ in 0..n_dict {
            let len = r.count()?;
            let w = std::str::from_utf8(r.take(len)?)
                .map_err(|_| corrupt("dictionary word is not UTF-8"))?;
            let c = r.u8()?;
            if c as usize >= n_classes {
                return Err(corrupt("class id out of range"));
            }
            tagdict.insert(w.to_string(), c);
        }
        if r.remaining() != 0 {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Model {
            classes,
            tagdict,
            passes,
        })
    }
}

fn read_weights(r: &mut Reader<'_>, n_classes: usize) -> Result<Weights> {
    let lo = f32::from_le_bytes(r.array::<4>()?);
    let hi = f32::from_le_bytes(r.array::<4>()?);
    if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
        return Err(corrupt("bad weight range"));
    }
    let table = LogCode::new(lo, hi).table();
    let n_feat = r.count()?;
    let mut keys = Vec::with_capacity(n_feat);
    let mut prev = 0u64;
    for i in 0..n_feat {
        let d = r.varint()?;
        let k = if i == 0 {
            d
        } else if d == 0 {
            return Err(corrupt("feature keys not increasing"));
        } else {
            prev.saturating_add(d)
        };
        if k > u32::MAX as u64 {
            return Err(corrupt("feature key out of range"));
        }
        keys.push(k as u32);
        prev = k;
    }
    let mut offsets = Vec::with_capacity(n_feat + 1);
    offsets.push(0u32);
    let mut total = 0usize;
    for _ in 0..n_feat {
        let n = r.varint()?;
        if n == 0 || n > n_classes as u64 {
            return Err(corrupt("bad entry count"));
        }
        total += n as usize;
        // Each entry takes two more bytes (class, weight), which bounds `total`.
        if total > r.remaining() || total >= MAX_ENTRIES {
            return Err(corrupt("truncated weights"));
        }
        offsets.push(total as u32);
    }
    let classes = r.take(total)?;
    if classes.iter().any(|&c| c as usize >= n_classes) {
        return Err(corrupt("class id out of range"));
    }
    let weights = r.take(total)?;
    if weights.iter().any(|&b| b & 0x7f == 0) {
        return Err(corrupt("bad weight code"));
    }
    let entries = classes
        .iter()
        .zip(weights)
        .map(|(&class, &b)| Entry {
            w: table[b as usize],
            class,
        })
        .collect();
    Ok(Weights::new(keys, offsets, entries))
}

/// 8-bit weight code: a sign bit and a 7-bit magnitude on a log scale from `lo` (code 1)
/// to `hi` (code 127). Perceptron weights span orders of magnitude and matter in
/// relative terms, so this loses far less than a linear 8-bit code (at most ±3% here).
struct LogCode {
    lo: f32,
    hi: f32,
    ln_lo: f32,
    step: f32,
}

impl LogCode {
    fn new(lo: f32, hi: f32) -> LogCode {
        let lo = if lo > 0.0 {
            lo
        } else {
            hi.max(f32::MIN_POSITIVE)
        };
        let hi = hi.max(lo);
        LogCode {
            lo,
            hi,
            ln_lo: lo.ln(),
            step: (hi.ln() - lo.ln()) / 126.0,
        }
    }

    fn encode(&self, w: f32) -> u8 {
        let code = if self.step > 0.0 {
            (1.0 + ((w.abs().max(self.lo).ln() - self.ln_lo) / self.step).round()).clamp(1.0, 127.0)
                as u8
        } else {
            1
        };
        if w < 0.0 {
            code | 0x80
        } else {
            code
        }
    }

    /// The weight of every code (code 0 and 128 are unused).
    fn table(&self) -> [f32; 256] {
        let mut t = [0f32; 256];
        for code in 1..128usize {
            let m = (self.ln_lo + (code - 1) as f32 * self.step).exp();
            t[code] = m;
            t[code | 0x80] = -m;
        }
        // Exact ends make encode∘decode the identity, so a loaded model saves byte-identically.
        for (code, m) in [(1usize, self.lo), (127, self.hi)] {
            t[code] = m;
            t[code | 0x80] = -m;
        }
        t
    }
}

fn corrupt(what: &str) -> anyhow::Error {
    input_error(format!("corrupt tagger model: {what}"))
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(corrupt("truncated"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("bad varint"))
    }
    /// A count that must fit in what is left (each counted item takes at least a byte).
    fn count(&mut self) -> Result<usize> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(corrupt("count exceeds data"));
        }
        Ok(n as usize)
    }
}
