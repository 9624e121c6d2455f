//! Alert rules evaluated over loss curves (DESIGN §8). Pure functions: the daemon feeds them
//! curves from the store and records what fires.

use std::time::Duration;

use crate::analysis::curves::{gap, Curve, Point};
use crate::analysis::recall::RecallRow;
use crate::analysis::stats::paired::PairedDiff;
use crate::store::alerts::Firing;

/// What a rule checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// A run's filtered loss at an annealed checkpoint rose over the previous annealed one,
    /// with the paired bootstrap interval of the rise above zero and the rise ≥ `min_delta`.
    Rise {
        /// Smallest rise (nats) worth an alert.
        min_delta: f64,
    },
    /// `run − baseline` at matched tokens exceeds `max_gap`.
    Gap {
        /// Largest tolerated gap (nats).
        max_gap: f64,
    },
    /// The sign of `run − baseline` changed between consecutive checkpoints of the same
    /// kind (stable or annealed).
    SignFlip,
    /// A retrieval gain (`recall.gain@G` rows of a probe evalset) fell below `min_gain` at a
    /// checkpoint, or dropped between consecutive annealed checkpoints with the two 95%
    /// intervals apart.
    RetrievalDrop {
        /// Smallest acceptable gain (nats); `None`: only drops are checked.
        min_gain: Option<f64>,
    },
}

/// Alert rules and what to run when one fires.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Rules, by unique name.
    pub rules: Vec<Rule>,
    /// Shell command run with each new firing as one JSON object on stdin.
    pub on_alert: Option<String>,
    /// How long the hook may run before it is killed.
    pub hook_timeout: Duration,
}

/// A named rule, optionally restricted to some filters and runs (empty = all).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name, unique in the config.
    pub name: String,
    /// The check.
    pub kind: RuleKind,
    /// Filters it watches (empty: every filter).
    pub filters: Vec<String>,
    /// Runs it watches (empty: every run).
    pub runs: Vec<String>,
    /// Evalsets it watches, by config name (empty: every evalset).
    pub evalsets: Vec<String>,
}

impl Rule {
    fn applies(&self, c: &Curve) -> bool {
        let filter = if self.filters.is_empty() {
            // By default loss rules watch the filters, and the retrieval rule the gains (which
            // are differences, not losses).
            match self.kind {
                RuleKind::RetrievalDrop { .. } => {
                    matches!(RecallRow::parse(&c.filter), Some(RecallRow::Gain(_)))
                }
                _ => RecallRow::parse(&c.filter).is_none(),
            }
        } else {
            self.filters.contains(&c.filter)
        };
        filter
            && (self.runs.is_empty() || self.runs.contains(&c.run))
            && (self.evalsets.is_empty() || self.evalsets.contains(&c.evalset))
    }
}

fn firing(
    rule: &Rule,
    c: &Curve,
    p: &Point,
    value: f64,
    threshold: f64,
    message: String,
) -> Firing {
    Firing {
        rule: rule.name.clone(),
        run: c.run.clone(),
        evalset: c.evalset.clone(),
        evalset_id: c.evalset_id,
        filter: c.filter.clone(),
        checkpoint_id: p.checkpoint,
        checkpoint: p.name.clone(),
        step: p.step,
        tokens: p.tokens,
        value,
        threshold,
        message,
    }
}

/// Every firing of a baseline rule (`Gap`, `SignFlip`) over the curves; a curve's baseline is
/// the curve of its `baseline` run on the same filter. `Rise` needs per-token losses: see
/// [`rise_firings`].
pub fn baseline_firings(rule: &Rule, curves: &[Curve]) -> Vec<Firing> {
    let mut out = Vec::new();
    for c in curves.iter().filter(|c| rule.applies(c)) {
        let Some(base) = c.baseline.as_ref().and_then(|b| {
            curves
                .iter()
                .find(|x| &x.run == b && x.filter == c.filter && x.evalset_id == c.evalset_id)
        }) else {
            continue;
        };
        let gaps = gap(c, base);
        match rule.kind {
            RuleKind::Gap { max_gap } => {
                for (p, g) in gaps.iter().filter(|(_, g)| *g > max_gap) {
                    let msg = format!(
                        "{} is {g:.4} nats worse than {} on {} ({}) at {} tokens (limit {max_gap})",
                        c.run, base.run, c.filter, c.evalset, p.tokens
                    );
                    out.push(firing(rule, c, p, *g, max_gap, msg));
                }
            }
            RuleKind::SignFlip => {
                // Consecutive checkpoints of the same kind: stable with stable, annealed
                // with annealed.
                let (annealed, stable): (Vec<_>, Vec<_>) =
                    gaps.into_iter().partition(|(p, _)| p.anneal);
                for pair in stable.windows(2).chain(annealed.windows(2)) {
                    let ((_, g0), (p, g1)) = (&pair[0], &pair[1]);
                    if g0.signum() != g1.signum() && *g0 != 0.0 && *g1 != 0.0 {
                        let msg = format!(
                            "{} − {} on {} ({}) changed sign from {g0:+.4} to {g1:+.4} at {} tokens",
                            c.run, base.run, c.filter, c.evalset, p.tokens
                        );
                        out.push(firing(rule, c, p, *g1, 0.0, msg));
                    }
                }
            }
            RuleKind::Rise { .. } | RuleKind::RetrievalDrop { .. } => {}
        }
    }
    out
}

/// Every firing of a `RetrievalDrop` rule.
pub fn retrieval_firings(rule: &Rule, curves: &[Curve]) -> Vec<Firing> {
    let RuleKind::RetrievalDrop { min_gain } = rule.kind else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in curves.iter().filter(|c| rule.applies(c)) {
        if let Some(min) = min_gain {
            for p in c.points.iter().filter(|p| p.mean < min) {
                let msg = format!(
                    "{} retrieves less than {min} nats on {} ({}) at {} ({:.4})",
                    c.run, c.filter, c.evalset, p.name, p.mean
                );
                out.push(firing(rule, c, p, p.mean, min, msg));
            }
        }
        let annealed: Vec<&Point> = c.annealed().collect();
        for pair in annealed.windows(2) {
            let (prev, cur) = (pair[0], pair[1]);
            if cur.ci_hi < prev.ci_lo {
                let msg = format!(
                    "{} on {} ({}) dropped from {:.4} [{:.4}, {:.4}] at {} to {:.4} [{:.4}, {:.4}] at {}",
                    c.run, c.filter, c.evalset, prev.mean, prev.ci_lo, prev.ci_hi, prev.name, cur.mean,
                    cur.ci_lo, cur.ci_hi, cur.name
                );
                out.push(firing(rule, c, cur, cur.mean - prev.mean, 0.0, msg));
            }
        }
    }
    out
}

/// Every firing of a `Rise` rule. `paired(curve, previous, current)` gives the paired
/// difference `current − previous` over the filter's tokens (from stored per-token losses),
/// or `None` when the losses are not available.
pub fn rise_firings(
    rule: &Rule,
    curves: &[Curve],
    mut paired: impl FnMut(&Curve, &Point, &Point) -> anyhow::Result<Option<PairedDiff>>,
) -> anyhow::Result<Vec<Firing>> {
    let RuleKind::Rise { min_delta } = rule.kind else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for c in curves.iter().filter(|c| rule.applies(c)) {
        let annealed: Vec<&Point> = c.annealed().collect();
        for pair in annealed.windows(2) {
            let (prev, cur) = (pair[0], pair[1]);
            let Some(d) = paired(c, prev, cur)? else {
                continue;
            };
            if d.mean >= min_delta && d.lo > 0.0 {
                let msg = format!(
                    "{} on {} ({}) rose {:.4} nats from {} to {} (95% CI [{:.4}, {:.4}])",
                    c.run, c.filter, c.evalset, d.mean, prev.name, cur.name, d.lo, d.hi
                );
                out.push(firing(rule, c, cur, d.mean, min_delta.max(0.0), msg));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::curves::tests::curve;

    fn rule(kind: RuleKind) -> Rule {
        Rule {
            name: "r".into(),
            kind,
            filters: vec![],
            runs: vec![],
            evalsets: vec![],
        }
    }

    #[test]
    fn gap_fires_only_beyond_the_limit_and_only_with_a_baseline() {
        let base = curve("tf", None, &[(1000, 3.0, false), (4000, 2.0, false)]);
        let rnn = curve(
            "rnn",
            Some("tf"),
            &[(1000, 3.05, false), (2000, 2.9, false), (4000, 2.3, false)],
        );
        let fired = baseline_firings(
            &rule(RuleKind::Gap { max_gap: 0.2 }),
            &[base.clone(), rnn.clone()],
        );
        // 2000 tokens: baseline 2.5 (halfway in log space) → gap 0.4; 4000: gap 0.3; 1000: 0.05.
        assert_eq!(
            fired.iter().map(|f| f.tokens).collect::<Vec<_>>(),
            vec![2000, 4000]
        );
        assert!((fired[0].value - 0.4).abs() < 1e-9);
        assert!(
            baseline_firings(&rule(RuleKind::Gap { max_gap: 0.5 }), &[base.clone(), rnn])
                .is_empty()
        );
        let orphan = curve("x", None, &[(1000, 9.0, false)]);
        assert!(
            baseline_firings(&rule(RuleKind::Gap { max_gap: 0.0 }), &[base, orphan]).is_empty()
        );
    }

    #[test]
    fn sign_flip_fires_where_the_gap_changes_sign() {
        let base = curve(
            "tf",
            None,
            &[(1000, 3.0, false), (2000, 2.5, false), (3000, 2.2, false)],
        );
        let hy = curve(
            "hy",
            Some("tf"),
            &[(1000, 3.1, false), (2000, 2.4, false), (3000, 2.1, false)],
        );
        let fired = baseline_firings(&rule(RuleKind::SignFlip), &[base.clone(), hy]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].tokens, 2000);
        let steady = curve(
            "hy",
            Some("tf"),
            &[(1000, 3.1, false), (2000, 2.6, false), (3000, 2.3, false)],
        );
        assert!(baseline_firings(&rule(RuleKind::SignFlip), &[base.clone(), steady]).is_empty());
        // An annealed point below the baseline between stable points above it is not a flip:
        // annealed points are compared with annealed ones only.
        let mut base_annealed = base.clone();
        base_annealed
            .points
            .push(curve("tf", None, &[(2000, 2.3, true)]).points[0].clone());
        base_annealed.points.sort_by_key(|p| p.tokens);
        let mixed = curve(
            "hy",
            Some("tf"),
            &[(1000, 3.1, false), (2000, 2.2, true), (3000, 2.3, false)],
        );
        assert!(baseline_firings(&rule(RuleKind::SignFlip), &[base_annealed, mixed]).is_empty());
    }

    #[test]
    fn retrieval_drop_fires_below_the_floor_and_on_disjoint_annealed_intervals() {
        let mut c = curve(
            "gdn",
            None,
            &[
                (1000, 1.5, true),
                (2000, 0.4, false),
                (3000, 1.2, true),
                (4000, 1.19, true),
            ],
        );
        c.filter = "recall.gain@512".into();
        for p in &mut c.points {
            (p.ci_lo, p.ci_hi) = (p.mean - 0.1, p.mean + 0.1);
        }
        let drop = |min_gain| rule(RuleKind::RetrievalDrop { min_gain });
        // 1.5 → 1.2: [1.4, 1.6] and [1.1, 1.3] are apart; 1.2 → 1.19 overlaps; the stable
        // point is no annealed neighbour.
        let fired = retrieval_firings(&drop(None), std::slice::from_ref(&c));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].tokens, 3000);
        assert!((fired[0].value + 0.3).abs() < 1e-9);
        let fired = retrieval_firings(&drop(Some(0.5)), std::slice::from_ref(&c));
        assert_eq!(
            fired.iter().map(|f| f.tokens).collect::<Vec<_>>(),
            vec![2000, 3000]
        );
        // Loss rows are not gains, and gain rows are not losses.
        let mut loss = c.clone();
        loss.filter = "copy5".into();
        assert!(retrieval_firings(&drop(Some(9.0)), &[loss]).is_empty());
        let gap_rule = rule(RuleKind::Gap { max_gap: -9.0 });
        let mut base = c.clone();
        base.run = "tf".into();
        c.baseline = Some("tf".into());
        assert!(baseline_firings(&gap_rule, &[base, c]).is_empty());
    }

    #[test]
    fn rise_needs_a_significant_and_large_enough_increase_between_annealed_points() {
        let c = curve(
            "hy",
            None,
            &[
                (1000, 3.0, true),
                (2000, 2.0, false),
                (3000, 3.2, true),
                (4000, 3.21, true),
            ],
        );
        let diffs = |mean: f64, lo: f64| PairedDiff {
            mean,
            lo,
            hi: mean + (mean - lo),
            n: 100,
        };
        let run = |min_delta: f64, lo_shift: f64| {
            rise_firings(
                &rule(RuleKind::Rise { min_delta }),
                std::slice::from_ref(&c),
                |_, prev, cur| {
                    let m = cur.mean - prev.mean;
                    Ok(Some(diffs(m, m - lo_shift)))
                },
            )
            .expect("rules")
        };
        // Annealed pairs: 1000→3000 (+0.2) and 3000→4000 (+0.01); the stable point is skipped.
        let fired = run(0.05, 0.05);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].tokens, 3000);
        assert!(run(0.5, 0.05).is_empty(), "below min_delta");
        assert!(run(0.05, 0.3).is_empty(), "interval reaches below zero");
        let none = rise_firings(&rule(RuleKind::Rise { min_delta: 0.0 }), &[c], |_, _, _| {
            Ok(None)
        });
        assert!(none.expect("rules").is_empty());
    }
}
