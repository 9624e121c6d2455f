//! Paired gaps to the baseline: for a checkpoint whose baseline run has a checkpoint of the
//! same kind at the same tokens seen, `run − baseline` per filter over the same tokens, with
//! its document-cluster bootstrap interval.

use std::collections::HashMap;

use rusqlite::params;

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
        let mut st = self.conn.prepare(
            "SELECT c.id, MIN(b.id) FROM checkpoints c
             JOIN runs r ON r.id = c.run_id
             JOIN runs br ON br.name = r.baseline
             JOIN checkpoints b ON b.run_id = br.id AND b.tokens = c.tokens AND b.kind = c.kind
             JOIN token_losses tc ON tc.checkpoint_id = c.id AND tc.evalset_id = ?1
             JOIN token_losses tb ON tb.checkpoint_id = b.id AND tb.evalset_id = ?1
             WHERE NOT EXISTS (SELECT 1 FROM paired_gaps g
                               WHERE g.checkpoint_id = c.id AND g.evalset_id = ?1)
             GROUP BY c.id ORDER BY c.id",
        )?;
        let rows = st.query_map([evalset_id], |r| {
            Ok(Pairing {
                checkpoint: r.get(0)?,
                baseline: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a pairing's gaps, one per filter (a filter without tokens stores no interval),
    /// in one transaction.
    pub fn record_paired_gaps(
        &mut self,
        pairing: Pairing,
        evalset_id: i64,
        gaps: &[(String, PairedDiff)],
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare(
                "INSERT OR REPLACE INTO paired_gaps
                 (checkpoint_id, baseline_checkpoint_id, evalset_id, filter, gap, n, ci_lo, ci_hi)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let finite = |x: f64| x.is_finite().then_some(x);
            for (filter, d) in gaps {
                st.execute(params![
                    pairing.checkpoint,
                    pairing.baseline,
                    evalset_id,
                    filter,
                    finite(d.mean),
                    i64::try_from(d.n)?,
                    finite(d.lo),
                    finite(d.hi),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored paired gap with tokens behind it, by (checkpoint, evalset, filter).
    pub fn paired_gaps(&self) -> anyhow::Result<HashMap<GapKey, PairedDiff>> {
        let mut st = self.conn.prepare(
            "SELECT checkpoint_id, evalset_id, filter, gap, n, ci_lo, ci_hi FROM paired_gaps
             WHERE n > 0 AND gap IS NOT NULL AND ci_lo IS NOT NULL AND ci_hi IS NOT NULL",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?),
                PairedDiff {
                    mean: r.get(3)?,
                    n: r.get::<_, i64>(4)?.max(0) as usize,
                    lo: r.get(5)?,
                    hi: r.get(6)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the pre-registered filters (the watch config's `primary`).
    pub fn set_primary_filters(&mut self, filters: &[String]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM primary_filters", [])?;
        for f in filters {
            tx.execute(
                "INSERT OR IGNORE INTO primary_filters (filter) VALUES (?1)",
                [f],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The pre-registered filters.
    pub fn primary_filters(&self) -> anyhow::Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT filter FROM primary_filters ORDER BY filter")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
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
