//! Per-token loss vectors as compressed blobs: losses as little-endian f32 and top-1/top-5
//! hits as bitsets (LSB first), each zstd-compressed. Indexed by the evalset's global token
//! index, position-0 tokens included (NaN loss), so paired analyses line up by index.

use anyhow::Context;

use super::sql::{params, Exec, Row};

use crate::evalset::scores::EvalScores;

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

/// The `token_losses` columns of one row, as stored.
struct Blobs {
    codec: String,
    tokens: i64,
    loss: Vec<u8>,
    top1: Vec<u8>,
    top5: Vec<u8>,
}

impl Blobs {
    /// The five columns starting at `at`.
    fn read(r: &Row, at: usize) -> anyhow::Result<Blobs> {
        Ok(Blobs {
            codec: r.get(at)?,
            tokens: r.get(at + 1)?,
            loss: r.get(at + 2)?,
            top1: r.get(at + 3)?,
            top5: r.get(at + 4)?,
        })
    }

    fn decode(&self) -> anyhow::Result<EvalScores> {
        if self.codec != CODEC {
            anyhow::bail!(
                "losses stored with codec {}, this filtermon reads {CODEC}",
                self.codec
            );
        }
        decode(
            usize::try_from(self.tokens)?,
            &self.loss,
            &self.top1,
            &self.top5,
        )
    }
}

/// A checkpoint's stored per-token scores on one evalset, with where they came from.
pub struct StoredScores {
    /// The checkpoint folder.
    pub checkpoint: std::path::PathBuf,
    /// The evalset folder.
    pub evalset_dir: std::path::PathBuf,
    /// The evalset's content hash.
    pub evalset_hash: String,
    /// The scores.
    pub scores: EvalScores,
}

impl super::Store {
    /// The stored scores of `run@which`, where `which` is a checkpoint folder name or a step
    /// (the stable checkpoint when a stable and an annealed one share the step); `evalset`
    /// (a hash prefix) picks one when the checkpoint was scored on several.
    pub fn stored_scores(
        &self,
        run: &str,
        which: &str,
        evalset: Option<&str>,
    ) -> anyhow::Result<StoredScores> {
        let rows = self.db.query(
            "SELECT c.path, e.dir, e.hash, t.codec, t.tokens, t.loss, t.top1, t.top5
             FROM token_losses t
             JOIN checkpoints c ON c.id = t.checkpoint_id
             JOIN runs r ON r.id = c.run_id
             JOIN evalsets e ON e.id = t.evalset_id
             WHERE r.name = ?1 AND (c.name = ?2 OR CAST(c.step AS TEXT) = ?2)
             ORDER BY c.name != ?2, c.kind = 'anneal', e.id",
            params![run, which],
        )?;
        let rows: Vec<(String, String, String, Blobs)> = rows
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, Blobs::read(r, 3)?)))
            .collect::<anyhow::Result<_>>()?;
        let wanted = rows
            .into_iter()
            .find(|r| evalset.is_none_or(|h| r.2.starts_with(h)));
        let Some((path, dir, hash, blobs)) = wanted else {
            return Err(crate::error::input_error(format!(
                "no stored per-token losses for {run}@{which}{}",
                evalset
                    .map(|h| format!(" on evalset {h}"))
                    .unwrap_or_default()
            )));
        };
        Ok(StoredScores {
            checkpoint: path.into(),
            evalset_dir: dir.into(),
            evalset_hash: hash,
            scores: blobs.decode().with_context(|| format!("{run}@{which}"))?,
        })
    }

    /// The stored per-token scores of one checkpoint on one evalset, if any.
    pub fn token_scores(
        &self,
        checkpoint_id: i64,
        evalset_id: i64,
    ) -> anyhow::Result<Option<EvalScores>> {
        self.db
            .query_opt(
                "SELECT codec, tokens, loss, top1, top5 FROM token_losses
                 WHERE checkpoint_id = ?1 AND evalset_id = ?2",
                params![checkpoint_id, evalset_id],
            )?
            .map(|r| Blobs::read(&r, 0)?.decode())
            .transpose()
    }
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
