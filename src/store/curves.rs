//! Loss curves read back from the results table, for charts and alert rules.

use super::sql::{params, Exec};
use super::Store;
use crate::analysis::curves::{Curve, Point};

impl Store {
    /// Every (evalset, filter, run) curve, or only those of one evalset. Curves come grouped
    /// by evalset, then filter by its earliest place in a job's filter list, then run name;
    /// points by tokens seen. A result with no tokens (mean `NULL`) is a NaN point.
    pub fn curves(&self, evalset_id: Option<i64>) -> anyhow::Result<Vec<Curve>> {
        let rows = self.db.query(
            "SELECT r.name, r.arch, r.baseline, e.id, e.name, res.filter,
                    c.id, c.name, c.step, c.tokens, c.kind, res.mean, res.ci_lo, res.ci_hi,
                    MIN(res.pos) OVER (PARTITION BY res.evalset_id, res.filter) AS filter_order
             FROM results res
             JOIN checkpoints c ON c.id = res.checkpoint_id
             JOIN runs r ON r.id = c.run_id
             JOIN evalsets e ON e.id = res.evalset_id
             WHERE CAST(?1 AS INTEGER) IS NULL OR e.id = ?1
             ORDER BY e.id, filter_order, res.filter, r.name, c.tokens, c.step, c.id",
            params![evalset_id],
        )?;
        let mut curves: Vec<Curve> = Vec::new();
        for r in rows {
            let (run, evalset_id, filter): (String, i64, String) =
                (r.get(0)?, r.get(3)?, r.get(5)?);
            let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
            let point = Point {
                checkpoint: r.get(6)?,
                name: r.get(7)?,
                step: r.get(8)?,
                tokens: r.get(9)?,
                anneal: r.get::<String>(10)? == "anneal",
                mean: nan(r.get(11)?),
                ci_lo: nan(r.get(12)?),
                ci_hi: nan(r.get(13)?),
            };
            match curves.last_mut() {
                Some(c) if c.run == run && c.evalset_id == evalset_id && c.filter == filter => {
                    c.points.push(point)
                }
                _ => curves.push(Curve {
                    run,
                    arch: r.get(1)?,
                    evalset_id,
                    evalset: r.get(4)?,
                    filter,
                    baseline: r.get(2)?,
                    points: vec![point],
                }),
            }
        }
        Ok(curves)
    }
}
