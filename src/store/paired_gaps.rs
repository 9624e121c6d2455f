//! Paired gaps to the baseline: for a checkpoint whose baseline run has a checkpoint of the
//! same kind at the same tokens seen, `run − baseline` per filter over the same tokens, with
//! its document-cluster bootstrap interval.

use std::collections::HashMap;

use super::sql::{params, Exec};
use super::Store;
use crate::analysis::detection::{detections, Detection};
use crate::analysis::stats::paired::PairedDiff;

/// A checkpoint and the baseline checkpoint it is paired with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pairing {
    /// The run's checkpoint.
    pub checkpoint: i64,
    /// The baseline run's checkpoint of the same kind at the same tokens.
    pub baseline: i64,
}

/// Where a paired gap belongs: (checkpoint, evalset, filter).
pub type GapKey = (i64, i64, String);

impl Store {
    /// Pairings on `evalset_id` whose losses are both stored and whose gaps are not yet.
    pub fn unpaired(&self, evalset_id: i64) -> anyhow::Result<Vec<Pairing>> {
        self.db
            .query(
                "SELECT c.id, MIN(b.id) FROM checkpoints c
             JOIN runs r ON r.id = c.run_id
             JOIN runs br ON br.name = r.baseline
             JOIN checkpoints b ON b.run_id = br.id AND b.tokens = c.tokens AND b.kind = c.kind
             JOIN token_losses tc ON tc.checkpoint_id = c.id AND tc.evalset_id = ?1
             JOIN token_losses tb ON tb.checkpoint_id = b.id AND tb.evalset_id = ?1
             WHERE NOT EXISTS (SELECT 1 FROM paired_gaps g
                               WHERE g.checkpoint_id = c.id AND g.evalset_id = ?1)
             GROUP BY c.id ORDER BY c.id",
                params![evalset_id],
            )?
            .iter()
            .map(|r| {
                Ok(Pairing {
                    checkpoint: r.get(0)?,
                    baseline: r.get(1)?,
                })
            })
            .collect()
    }

    /// Stores a pairing's gaps, one per filter (a filter without tokens stores no interval),
    /// in one transaction.
    pub fn record_paired_gaps(
        &mut self,
        pairing: Pairing,
        evalset_id: i64,
        gaps: &[(String, PairedDiff)],
    ) -> anyhow::Result<()> {
        self.db.transaction(|tx| {
            let finite = |x: f64| x.is_finite().then_some(x);
            for (filter, d) in gaps {
                tx.execute(
                    "INSERT INTO paired_gaps
                     (checkpoint_id, baseline_checkpoint_id, evalset_id, filter, gap, n, ci_lo, ci_hi)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (checkpoint_id, evalset_id, filter) DO UPDATE SET
                         baseline_checkpoint_id = excluded.baseline_checkpoint_id,
                         gap = excluded.gap, n = excluded.n,
                         ci_lo = excluded.ci_lo, ci_hi = excluded.ci_hi",
                    params![
                        pairing.checkpoint,
                        pairing.baseline,
                        evalset_id,
                        filter,
                        finite(d.mean),
                        d.n,
                        finite(d.lo),
                        finite(d.hi),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Every stored paired gap with tokens behind it, by (checkpoint, evalset, filter).
    pub fn paired_gaps(&self) -> anyhow::Result<HashMap<GapKey, PairedDiff>> {
        self.db
            .query(
                "SELECT checkpoint_id, evalset_id, filter, gap, n, ci_lo, ci_hi FROM paired_gaps
                 WHERE n > 0 AND gap IS NOT NULL AND ci_lo IS NOT NULL AND ci_hi IS NOT NULL",
                params![],
            )?
            .iter()
            .map(|r| {
                Ok((
                    (r.get(0)?, r.get(1)?, r.get(2)?),
                    PairedDiff {
                        mean: r.get(3)?,
                        n: r.get(4)?,
                        lo: r.get(5)?,
                        hi: r.get(6)?,
                    },
                ))
            })
            .collect()
    }

    /// Replaces the pre-registered filters (the watch config's `primary`).
    pub fn set_primary_filters(&mut self, filters: &[String]) -> anyhow::Result<()> {
        self.db.transaction(|tx| {
            tx.execute("DELETE FROM primary_filters", params![])?;
            for f in filters {
                tx.execute(
                    "INSERT INTO primary_filters (filter) VALUES (?1) ON CONFLICT DO NOTHING",
                    params![f],
                )?;
            }
            Ok(())
        })
    }

    /// The pre-registered filters.
    pub fn primary_filters(&self) -> anyhow::Result<Vec<String>> {
        self.db
            .query(
                "SELECT filter FROM primary_filters ORDER BY filter",
                params![],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Every run's detections of a regression against its baseline, derived from the stored
    /// curves and paired gaps ([`crate::analysis::detection`]).
    pub fn detections(&self) -> anyhow::Result<Vec<Detection>> {
        Ok(detections(
            &self.curves(None)?,
            &self.paired_gaps()?,
            &self.primary_filters()?,
        ))
    }
}
