//! Per-token loss vectors as compressed blobs: losses as little-endian f32 and top-1/top-5
//! hits as bitsets (LSB first), each zstd-compressed. Indexed by the evalset's global token
//! index, position-0 tokens included (NaN loss), so paired analyses line up by index.

use anyhow::Context;

use crate::score::EvalScores;

/// Codec name stored with every blob.
pub const CODEC: &str = "f32le+bits/zstd";

const LEVEL: i32 = 3;

/// The three compressed vectors of one (checkpoint, evalset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedLosses {
    /// Codec name.
    pub codec: &'static str,
    /// Tokens (vector length).
    pub tokens: usize,
    /// Compressed losses.
    pub loss: Vec<u8>,
    /// Compressed top-1 bitset.
    pub top1: Vec<u8>,
    /// Compressed top-5 bitset.
    pub top5: Vec<u8>,
}

fn bits(v: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; v.len().div_ceil(8)];
    for (i, _) in v.iter().enumerate().filter(|(_, b)| **b) {
        out[i / 8] |= 1 << (i % 8);
    }
    out
}

/// Compresses a job's scores.
pub fn encode(s: &EvalScores) -> anyhow::Result<EncodedLosses> {
    let raw: Vec<u8> = s.loss.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok(EncodedLosses {
        codec: CODEC,
        tokens: s.loss.len(),
        loss: zstd::encode_all(raw.as_slice(), LEVEL)?,
        top1: zstd::encode_all(bits(&s.top1).as_slice(), LEVEL)?,
        top5: zstd::encode_all(bits(&s.top5).as_slice(), LEVEL)?,
    })
}

/// Restores scores from the stored blobs.
pub fn decode(tokens: usize, loss: &[u8], top1: &[u8], top5: &[u8]) -> anyhow::Result<EvalScores> {
    let raw = zstd::decode_all(loss).context("decompressing token losses")?;
    if raw.len() != 4 * tokens {
        anyhow::bail!(
            "token-loss blob holds {} bytes, expected {}",
            raw.len(),
            4 * tokens
        );
    }
    let unbits = |blob: &[u8]| -> anyhow::Result<Vec<bool>> {
        let b = zstd::decode_all(blob).context("decompressing top-k bits")?;
        if b.len() != tokens.div_ceil(8) {
            anyhow::bail!("top-k bitset holds {} bytes for {tokens} tokens", b.len());
        }
        Ok((0..tokens).map(|i| b[i / 8] >> (i % 8) & 1 == 1).collect())
    };
    Ok(EvalScores {
        loss: raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        top1: unbits(top1)?,
        top5: unbits(top5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = EvalScores {
            loss: vec![f32::NAN, 0.5, 3.25, 1e-7, 9.0, 2.0, 1.0, 0.0, 4.0],
            top1: vec![false, true, false, false, true, false, false, true, true],
            top5: vec![false, true, true, false, true, true, false, true, true],
        };
        let e = encode(&s).expect("encode");
        let d = decode(e.tokens, &e.loss, &e.top1, &e.top5).expect("decode");
        assert!(d.loss[0].is_nan());
        assert_eq!(d.loss[1..], s.loss[1..]);
        assert_eq!((d.top1, d.top5), (s.top1, s.top5));
        assert!(decode(e.tokens + 1, &e.loss, &e.top1, &e.top5).is_err());
    }
}
