//! Detection lead time: from which checkpoint a run's paired gap to its baseline says, and
//! keeps saying, that the run is worse; and how many tokens before the overall loss (`all`)
//! each filter said so.
//!
//! A filter **first detects** at the tokens of the first checkpoint from which the paired
//! gap's 95% interval lies entirely on the worse side of zero at that checkpoint and at every
//! later checkpoint of the same kind; stable and annealed checkpoints are tracked apart (an
//! annealed checkpoint sits below the stable curve by the decay's gain). A detection that is
//! lost again at a later checkpoint does not count from before the loss. The **lead** of a
//! filter is `all`'s first detection minus the filter's, in tokens (negative: later than
//! `all`).
//!
//! Many filters are tested at once, so among them one may detect early by chance; a
//! detection counts as evidence for the architecture only on a filter named before the run
//! (the watch config's `primary` filters, marked in every table).

use std::collections::HashMap;

use serde::Serialize;

use crate::analysis::curves::Curve;
use crate::analysis::recall::RecallRow;
use crate::analysis::stats::paired::PairedDiff;

/// The filter every other filter's lead is measured against.
pub const OVERALL: &str = "all";

/// One paired gap on a run's curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GapAt {
    /// Tokens seen at the checkpoint.
    pub tokens: u64,
    /// An annealed checkpoint rather than a stable one.
    pub anneal: bool,
    /// `run − baseline` with its interval.
    pub diff: PairedDiff,
}

/// Whether a higher value of the row means a worse model: true for losses and the COPY-5
/// miss rate, false for a retrieval gain (the drop of loss a second copy brings).
pub fn higher_is_worse(filter: &str) -> bool {
    !matches!(RecallRow::parse(filter), Some(RecallRow::Gain(_)))
}

/// The tokens of the first sustained detection among the `anneal` checkpoints of `gaps`, or
/// `None` (see the module doc).
pub fn first_detected(gaps: &[GapAt], anneal: bool, higher_is_worse: bool) -> Option<u64> {
    let mut kind: Vec<&GapAt> = gaps.iter().filter(|g| g.anneal == anneal).collect();
    kind.sort_by_key(|g| g.tokens);
    let worse = |d: &PairedDiff| {
        if higher_is_worse {
            d.lo > 0.0
        } else {
            d.hi < 0.0
        }
    };
    // The detection is the start of the longest run of worse intervals reaching the end.
    let held = kind.iter().rev().take_while(|g| worse(&g.diff)).count();
    (held > 0).then(|| kind[kind.len() - held].tokens)
}

/// How many tokens before `all` a filter first detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lead {
    /// `all`'s first detection minus the filter's (negative: after `all`).
    Tokens(i64),
    /// The filter detected and `all` never did.
    AllNeverDetected,
    /// The filter never detected.
    NotDetected,
}

impl Lead {
    /// From the two first detections.
    pub fn new(filter: Option<u64>, all: Option<u64>) -> Lead {
        match (filter, all) {
            (None, _) => Lead::NotDetected,
            (Some(_), None) => Lead::AllNeverDetected,
            (Some(f), Some(a)) => Lead::Tokens(a as i64 - f as i64),
        }
    }

    /// Best first: detected where `all` never did, then by lead, then not detected.
    fn rank(&self) -> (u8, i64) {
        match *self {
            Lead::AllNeverDetected => (0, 0),
            Lead::Tokens(t) => (1, -t),
            Lead::NotDetected => (2, 0),
        }
    }

    /// As a table cell: the tokens, `all never` or `-`.
    pub fn cell(&self) -> String {
        match self {
            Lead::Tokens(t) => t.to_string(),
            Lead::AllNeverDetected => "all never".into(),
            Lead::NotDetected => "-".into(),
        }
    }
}

/// The detection of one filter of one run on one evalset, for one kind of checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Run name.
    pub run: String,
    /// Its baseline run.
    pub baseline: String,
    /// Evalset name.
    pub evalset: String,
    /// Evalset id in the store.
    #[serde(skip)]
    pub evalset_id: i64,
    /// Filter or recall row.
    pub filter: String,
    /// Annealed checkpoints rather than stable ones.
    pub anneal: bool,
    /// Checkpoints of this kind with a paired gap.
    pub checkpoints: usize,
    /// Tokens at the first sustained detection.
    pub first_detected: Option<u64>,
    /// Tokens before `all`.
    pub lead: Lead,
    /// Named among the config's `primary` filters: a pre-registered test.
    pub primary: bool,
}

/// Every run's detections, per evalset, filter and kind of checkpoint, from its curves and the
/// paired gaps by (checkpoint, evalset, filter); sorted by run, evalset, kind, then lead.
/// `primary` names the pre-registered filters.
pub fn detections(
    curves: &[Curve],
    paired: &HashMap<(i64, i64, String), PairedDiff>,
    primary: &[String],
) -> Vec<Detection> {
    let mut out = Vec::new();
    for c in curves {
        let Some(baseline) = &c.baseline else {
            continue;
        };
        let gaps: Vec<GapAt> = c
            .points
            .iter()
            .filter_map(|p| {
                let diff = paired.get(&(p.checkpoint, c.evalset_id, c.filter.clone()))?;
                Some(GapAt {
                    tokens: p.tokens,
                    anneal: p.anneal,
                    diff: *diff,
                })
            })
            .collect();
        for anneal in [false, true] {
            let checkpoints = gaps.iter().filter(|g| g.anneal == anneal).count();
            if checkpoints == 0 {
                continue;
            }
            out.push(Detection {
                run: c.run.clone(),
                baseline: baseline.clone(),
                evalset: c.evalset.clone(),
                evalset_id: c.evalset_id,
                filter: c.filter.clone(),
                anneal,
                checkpoints,
                first_detected: first_detected(&gaps, anneal, higher_is_worse(&c.filter)),
                lead: Lead::NotDetected,
                primary: primary.contains(&c.filter),
            });
        }
    }
    let all: HashMap<(String, i64, bool), Option<u64>> = out
        .iter()
        .filter(|d| d.filter == OVERALL)
        .map(|d| ((d.run.clone(), d.evalset_id, d.anneal), d.first_detected))
        .collect();
    for d in &mut out {
        let overall = all
            .get(&(d.run.clone(), d.evalset_id, d.anneal))
            .copied()
            .flatten();
        d.lead = Lead::new(d.first_detected, overall);
    }
    out.sort_by(|a, b| {
        (&a.run, &a.evalset, a.anneal, a.lead.rank(), &a.filter).cmp(&(
            &b.run,
            &b.evalset,
            b.anneal,
            b.lead.rank(),
            &b.filter,
        ))
    });
    out
}

/// Tokens as `1.2M`, `800k`, or `-` for none.
fn tokens_cell(t: Option<u64>) -> String {
    match t {
        None => "-".into(),
        Some(t) if t >= 1_000_000 => format!("{:.1}M", t as f64 / 1e6),
        Some(t) if t >= 1_000 => format!("{:.0}k", t as f64 / 1e3),
        Some(t) => t.to_string(),
    }
}

impl Detection {
    /// The lead as a table cell, in the units of [`Detection::first_detected`]'s cell.
    pub fn lead_cell(&self) -> String {
        match self.lead {
            Lead::Tokens(t) if t < 0 => format!("-{}", tokens_cell(Some(t.unsigned_abs()))),
            Lead::Tokens(t) => tokens_cell(Some(t as u64)),
            other => other.cell(),
        }
    }

    /// The first detection as a table cell.
    pub fn first_detected_cell(&self) -> String {
        tokens_cell(self.first_detected)
    }
}

/// The detection table as text, one line per detection in the given order, with a legend.
pub fn table(detections: &[Detection]) -> String {
    let mut out = format!(
        "{:<18} {:<14} {:<12} {:<6} {:<22} {:>9} {:>10} {:>11}\n",
        "run", "baseline", "evalset", "kind", "filter", "detected", "lead", "checkpoints"
    );
    for d in detections {
        let filter = if d.primary {
            format!("{} *", d.filter)
        } else {
            d.filter.clone()
        };
        out.push_str(&format!(
            "{:<18} {:<14} {:<12} {:<6} {:<22} {:>9} {:>10} {:>11}\n",
            d.run,
            d.baseline,
            d.evalset,
            if d.anneal { "anneal" } else { "stable" },
            filter,
            d.first_detected_cell(),
            d.lead_cell(),
            d.checkpoints
        ));
    }
    out.push_str(LEGEND);
    out
}

/// What the detection table's columns mean, under every rendering of it.
pub const LEGEND: &str =
    "detected: tokens at the first checkpoint from which the paired gap's 95% interval \
stays on the worse side of zero; lead: tokens before `all` detected (`all never`: only this filter \
detected). * primary: named in the config before the runs; the other rows are exploratory, one \
of many filters tested, so an early detection there is weaker evidence.\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::curves::Point;

    fn at(tokens: u64, anneal: bool, lo: f64, hi: f64) -> GapAt {
        GapAt {
            tokens,
            anneal,
            diff: PairedDiff {
                mean: (lo + hi) / 2.0,
                lo,
                hi,
                n: 100,
            },
        }
    }

    #[test]
    fn a_sustained_detection_counts_from_its_first_checkpoint() {
        let gaps = [
            at(100, false, -0.1, 0.1),
            at(200, false, 0.01, 0.2),
            at(300, false, 0.02, 0.3),
            at(400, false, 0.05, 0.4),
        ];
        assert_eq!(first_detected(&gaps, false, true), Some(200));
    }

    #[test]
    fn a_detection_lost_again_does_not_count() {
        let lost = [
            at(100, false, 0.01, 0.2),
            at(200, false, -0.01, 0.2),
            at(300, false, 0.02, 0.3),
        ];
        assert_eq!(first_detected(&lost, false, true), Some(300));
        let never_back = [at(100, false, 0.01, 0.2), at(200, false, -0.01, 0.2)];
        assert_eq!(first_detected(&never_back, false, true), None);
    }

    #[test]
    fn a_gain_is_worse_below_zero() {
        assert!(!higher_is_worse("recall.gain@64"));
        assert!(higher_is_worse("recall.copy5_miss"));
        assert!(higher_is_worse("content"));
        let gaps = [at(100, false, -0.3, -0.1), at(200, false, -0.2, -0.05)];
        assert_eq!(first_detected(&gaps, false, false), Some(100));
        assert_eq!(first_detected(&gaps, false, true), None);
    }

    #[test]
    fn stable_and_annealed_are_tracked_apart() {
        let gaps = [
            at(100, false, 0.01, 0.2),
            at(150, true, -0.1, 0.1),
            at(200, false, 0.02, 0.3),
            at(250, true, 0.01, 0.1),
        ];
        assert_eq!(first_detected(&gaps, false, true), Some(100));
        assert_eq!(first_detected(&gaps, true, true), Some(250));
    }

    fn curve(run: &str, baseline: Option<&str>, filter: &str, ids: &[(i64, u64)]) -> Curve {
        Curve {
            run: run.into(),
            arch: "transformer".into(),
            evalset_id: 1,
            evalset: "es".into(),
            filter: filter.into(),
            baseline: baseline.map(str::to_owned),
            points: ids
                .iter()
                .map(|&(checkpoint, tokens)| Point {
                    checkpoint,
                    name: format!("step{tokens}"),
                    step: tokens,
                    tokens,
                    anneal: false,
                    mean: 1.0,
                    ci_lo: 0.9,
                    ci_hi: 1.1,
                })
                .collect(),
        }
    }

    #[test]
    fn leads_are_measured_against_all_and_runs_without_a_baseline_have_none() {
        let ids = [(1, 100), (2, 200), (3, 300)];
        let curves = [
            curve("swa", Some("base"), "all", &ids),
            curve("swa", Some("base"), "copy5", &ids),
            curve("swa", Some("base"), "content", &ids),
            curve("base", None, "all", &[(4, 100), (5, 200), (6, 300)]),
        ];
        let mut paired = HashMap::new();
        let put = |paired: &mut HashMap<_, _>, ck: i64, filter: &str, lo: f64| {
            let diff = PairedDiff {
                mean: lo + 0.1,
                lo,
                hi: lo + 0.2,
                n: 10,
            };
            paired.insert((ck, 1, filter.to_string()), diff);
        };
        for (ck, all, copy5, content) in [
            (1, -0.1, 0.05, -0.1),
            (2, -0.1, 0.05, -0.1),
            (3, 0.01, 0.05, -0.1),
        ] {
            put(&mut paired, ck, "all", all);
            put(&mut paired, ck, "copy5", copy5);
            put(&mut paired, ck, "content", content);
        }
        let found = detections(&curves, &paired, &["copy5".to_string()]);
        let summary: Vec<(&str, Option<u64>, Lead, bool)> = found
            .iter()
            .map(|d| (d.filter.as_str(), d.first_detected, d.lead, d.primary))
            .collect();
        assert_eq!(
            summary,
            [
                ("copy5", Some(100), Lead::Tokens(200), true),
                ("all", Some(300), Lead::Tokens(0), false),
                ("content", None, Lead::NotDetected, false),
            ]
        );
        assert!(
            found.iter().all(|d| d.run == "swa"),
            "no baseline, no detection"
        );

        // `all` never detected.
        put(&mut paired, 3, "all", -0.1);
        let found = detections(&curves, &paired, &[]);
        let copy5 = found.iter().find(|d| d.filter == "copy5").expect("copy5");
        assert_eq!(copy5.lead, Lead::AllNeverDetected);
        assert_eq!(found[0].filter, "copy5", "sorted first");
    }
}
