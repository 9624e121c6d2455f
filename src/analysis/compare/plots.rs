//! `comparison_plots.png`: gap by category, gap vs repeat length, gap vs copy distance, and
//! the regression coefficients.

use std::path::Path;

use crate::analysis::compare::Comparison;
use crate::evalset::categories::Kind;
use crate::plot::{self, Interval};

/// Draws the four panels into `path`.
pub fn draw(c: &Comparison, a: &str, b: &str, path: &Path) -> anyhow::Result<()> {
    let gap_desc = format!("gap = loss({a}) − loss({b}), nats; > 0: {b} better");
    let rows = |kinds: &[Kind]| -> Vec<Interval> {
        c.categories
            .iter()
            .filter(|r| kinds.contains(&r.kind))
            .map(|r| Interval {
                label: format!("{} ({})", r.name, r.n),
                estimate: r.gap,
                lo: r.gap_ci_lo,
                hi: r.gap_ci_hi,
            })
            .collect()
    };
    let by_category = rows(&[
        Kind::Upos,
        Kind::Class,
        Kind::Bracket,
        Kind::WordInitial,
        Kind::Domain,
        Kind::Filter,
    ]);
    let strip = |mut v: Vec<Interval>| {
        // The axis already names the binned quantity.
        for r in &mut v {
            if let Some((_, bin)) = r.label.split_once('=') {
                r.label = bin.to_owned();
            }
        }
        v
    };
    let repeat = strip(rows(&[Kind::RepeatLen]));
    let copy = strip(rows(&[Kind::CopyDistance]));
    let coefs: Vec<Interval> = c
        .regression
        .terms
        .iter()
        .map(|t| Interval {
            label: t.coefficient.name.clone(),
            estimate: t.coefficient.estimate,
            lo: t.coefficient.ci_lo,
            hi: t.coefficient.ci_hi,
        })
        .collect();
    plot::png(path, (1800, 1700), |root| {
        let (top, bottom) = root.split_vertically(1100);
        let top = top.split_evenly((1, 2));
        let bottom = bottom.split_evenly((1, 2));
        plot::forest(
            &top[0],
            &format!("Gap by category, 95% document-bootstrap CI ({a} vs {b})"),
            &gap_desc,
            &by_category,
        )?;
        plot::forest(
            &top[1],
            &format!(
                "Regression of the gap, cluster-robust 95% CI (reference UPOS {})",
                c.regression.reference_upos
            ),
            "coefficient, nats",
            &coefs,
        )?;
        plot::binned_curve(
            &bottom[0],
            "Gap vs repeat length",
            "repeat_len (tokens of the repeated n-gram ending here)",
            "gap, nats",
            &repeat,
        )?;
        if copy.is_empty() {
            plot::note(
                &bottom[1],
                "Gap vs copy distance",
                "no token repeats an earlier n-gram",
            )
        } else {
            plot::binned_curve(
                &bottom[1],
                "Gap vs copy distance",
                "copy_distance (tokens back to the previous occurrence)",
                "gap, nats",
                &copy,
            )
        }
    })
}
