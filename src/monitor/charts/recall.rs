//! Recall snapshots: each run's recall rows at its latest checkpoint, against their own x —
//! retrieval gain by the gap between planted copies, COPY-5 loss by copy distance (the
//! recall cliff), loss by repeat length (the copy-n curve) — and each run's gap to its
//! baseline on the same x.

use std::collections::HashMap;

use plotters::style::RGBColor;

use super::lines::{LineChart, Series, SeriesPoint};
use super::{Planned, Section};
use crate::analysis::curves::{gap, Curve, Point};
use crate::analysis::recall::RecallRow;
use crate::analysis::stats::paired::PairedDiff;
use crate::store::paired_gaps::GapKey;

/// A family of recall rows sharing an x axis.
struct Family {
    member: fn(&RecallRow) -> bool,
    stem: &'static str,
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    /// One evenly spaced, named position per bin (gaps and distance ranges) rather than a
    /// numeric axis.
    categorical: bool,
}

const FAMILIES: [Family; 3] = [
    Family {
        member: |r| matches!(r, RecallRow::Gain(_)),
        stem: "recall-gain",
        title: "retrieval gain by gap",
        x_desc: "tokens between the planted copies",
        y_desc: "first − second copy NLL (nats)",
        categorical: true,
    },
    Family {
        member: |r| matches!(r, RecallRow::Cliff { .. }),
        stem: "recall-cliff",
        title: "recall cliff: COPY-5 loss by copy distance",
        x_desc: "copy distance (tokens)",
        y_desc: "mean NLL (nats)",
        categorical: true,
    },
    Family {
        member: |r| matches!(r, RecallRow::CopyN(_)),
        stem: "recall-copy-n",
        title: "copy-n curve: loss by repeat length",
        x_desc: "repeat length n",
        y_desc: "mean NLL (nats)",
        categorical: false,
    },
];

/// What the y axis of a recall row's chart over training measures.
pub fn y_desc(row: &RecallRow) -> &'static str {
    if *row == RecallRow::Copy5Miss {
        return "share of COPY-5 tokens missed at top-1";
    }
    FAMILIES
        .iter()
        .find(|f| (f.member)(row))
        .map_or("value", |f| f.y_desc)
}

/// The run's latest checkpoint among `curves` (most tokens, then step).
fn latest(curves: &[&Curve]) -> Option<Point> {
    curves
        .iter()
        .filter_map(|c| c.points.last())
        .max_by_key(|p| (p.tokens, p.step, p.checkpoint))
        .cloned()
}

/// Snapshot charts of one evalset's curves; `dir` is its folder in the report.
pub fn plan(
    curves: &[&Curve],
    paired: &HashMap<GapKey, PairedDiff>,
    colours: &HashMap<String, RGBColor>,
    dir: &str,
    evalset: &str,
) -> Vec<Planned> {
    let mut out = Vec::new();
    for fam in &FAMILIES {
        let members: Vec<(String, f64, &Curve)> = curves
            .iter()
            .filter_map(|c| {
                let row = RecallRow::parse(&c.filter).filter(|r| (fam.member)(r))?;
                Some((row.bin()?, row.x()?, *c))
            })
            .collect();
        let mut bins: Vec<(f64, &str)> = members.iter().map(|(s, k, _)| (*k, s.as_str())).collect();
        bins.sort_by(|a, b| a.0.total_cmp(&b.0));
        bins.dedup();
        if bins.is_empty() {
            continue;
        }
        let x_of = |i: usize, k: f64| if fam.categorical { i as f64 } else { k };
        let mut runs: Vec<&str> = members.iter().map(|(_, _, c)| c.run.as_str()).collect();
        runs.sort_unstable();
        runs.dedup();
        let mut values = Vec::new();
        let mut gaps = Vec::new();
        for run in runs {
            let of_run: Vec<&Curve> = members
                .iter()
                .filter(|(_, _, c)| c.run == run)
                .map(|(_, _, c)| *c)
                .collect();
            let Some(at) = latest(&of_run) else { continue };
            let colour = colours.get(run).copied().unwrap_or(RGBColor(0, 0, 0));
            let mut points = Vec::new();
            let mut gap_points = Vec::new();
            let mut baseline = None;
            for (i, (k, suffix)) in bins.iter().enumerate() {
                let Some(c) = of_run
                    .iter()
                    .find(|c| c.filter.ends_with(&format!("@{suffix}")))
                else {
                    continue;
                };
                if let Some(p) = c.points.iter().find(|p| p.checkpoint == at.checkpoint) {
                    points.push(SeriesPoint {
                        x: x_of(i, *k),
                        y: p.mean,
                        lo: p.ci_lo,
                        hi: p.ci_hi,
                        anneal: false,
                    });
                }
                let base = curves
                    .iter()
                    .find(|b| Some(&b.run) == c.baseline.as_ref() && b.filter == c.filter);
                if let Some(base) = base {
                    baseline = Some(base.run.clone());
                    if let Some((p, g)) = gap(c, base)
                        .into_iter()
                        .find(|(p, _)| p.checkpoint == at.checkpoint)
                    {
                        let (lo, hi) = super::interval(paired, &p, c);
                        gap_points.push(SeriesPoint {
                            x: x_of(i, *k),
                            y: g,
                            lo,
                            hi,
                            anneal: false,
                        });
                    }
                }
            }
            values.push(Series {
                label: format!("{run} @ {}", at.name),
                color: colour,
                points,
                detected: Vec::new(),
            });
            if let (Some(b), false) = (baseline, gap_points.is_empty()) {
                gaps.push(Series {
                    label: format!("{run} − {b}"),
                    color: colour,
                    points: gap_points,
                    detected: Vec::new(),
                });
            }
        }
        let x_labels: Vec<String> = if fam.categorical {
            bins.iter().map(|(_, s)| (*s).to_owned()).collect()
        } else {
            Vec::new()
        };
        let planned = |suffix: &str,
                       caption: String,
                       title: String,
                       y_desc: &str,
                       zero_line: bool,
                       series: Vec<Series>| Planned {
            evalset_id: curves[0].evalset_id,
            filter: fam.stem.into(),
            stem: format!("{dir}/{}{suffix}", fam.stem),
            caption,
            section: Section::Recall,
            chart: LineChart {
                title,
                x_desc: fam.x_desc.into(),
                y_desc: y_desc.into(),
                log_x: false,
                zero_line,
                x_labels: x_labels.clone(),
                over_training: false,
                series,
            },
        };
        out.push(planned(
            "",
            format!("{} (latest checkpoints)", fam.title),
            format!("{} — {evalset}", fam.title),
            fam.y_desc,
            fam.stem == "recall-gain",
            values,
        ));
        if !gaps.is_empty() {
            out.push(planned(
                "-gap",
                format!("{}: run − baseline", fam.title),
                format!("{} — {evalset}: run − baseline", fam.title),
                "Δ (nats)",
                true,
                gaps,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_match_the_row_names() {
        let rows = [
            RecallRow::Gain(64),
            RecallRow::Cliff {
                lo: 1,
                hi: Some(32),
            },
            RecallRow::CopyN(5),
        ];
        for (fam, row) in FAMILIES.iter().zip(&rows) {
            assert!((fam.member)(row), "{row}");
            assert_eq!(y_desc(row), fam.y_desc);
        }
        assert!(y_desc(&RecallRow::Copy5Miss).contains("missed"));
    }

    #[test]
    fn bins_sort_by_their_leading_number() {
        let x = |name: &str| RecallRow::parse(name).and_then(|r| r.x());
        assert_eq!(x("recall.gain@64"), Some(64.0));
        assert_eq!(x("recall.copy5@129-512"), Some(129.0));
        assert_eq!(x("recall.copy5@2049+"), Some(2049.0));
        assert_eq!(x("recall.copy5@x"), None);
    }
}
