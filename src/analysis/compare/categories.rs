//! Per-category statistics of a paired comparison.

use rayon::prelude::*;
use serde::Serialize;

use crate::analysis::compare::{CompareOptions, PairedInput};
use crate::analysis::stats::bootstrap::{ratio, ratio_ci, Cluster};
use crate::analysis::stats::mcnemar::{mcnemar, McNemar};
use crate::evalset::categories::{CategorySet, Kind};
use crate::evalset::scores::EvalScores;

/// Which model a category favours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The gap's interval lies below zero.
    A,
    /// The gap's interval lies above zero.
    B,
    /// The interval contains zero (or there are too few documents to tell).
    NoDifference,
}

/// One category's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryResult {
    /// What the category groups by.
    pub kind: Kind,
    /// `kind=value`.
    pub name: String,
    /// The filter's canonical expression, for filter categories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// Tokens.
    pub n: usize,
    /// Documents with at least one token.
    pub documents: usize,
    /// Mean NLL under A (nats).
    pub loss_a: f64,
    /// Mean NLL under B (nats).
    pub loss_b: f64,
    /// Mean of loss A − loss B; positive ⇒ B better.
    pub gap: f64,
    /// 95% document-cluster bootstrap interval of the gap, lower end.
    pub gap_ci_lo: f64,
    /// Upper end.
    pub gap_ci_hi: f64,
    /// Top-1 accuracy of A.
    pub top1_a: f64,
    /// Top-1 accuracy of B.
    pub top1_b: f64,
    /// Top-5 accuracy of A.
    pub top5_a: f64,
    /// Top-5 accuracy of B.
    pub top5_b: f64,
    /// Tokens only A got right at top-1.
    pub only_a_top1: u64,
    /// Tokens only B got right at top-1.
    pub only_b_top1: u64,
    /// McNemar's test on those discordant counts.
    pub mcnemar: McNemar,
    /// The better model by the gap's interval.
    pub better: Verdict,
}

#[derive(Clone)]
struct Acc {
    n: usize,
    sum_a: f64,
    sum_b: f64,
    top1_a: u64,
    top1_b: u64,
    top5_a: u64,
    top5_b: u64,
    only_a: u64,
    only_b: u64,
    gaps: Vec<Cluster>,
}

/// One row per category that holds a token of `tokens`.
pub fn per_category(
    input: &PairedInput,
    set: &CategorySet,
    tokens: &[usize],
    a: &EvalScores,
    b: &EvalScores,
    opts: CompareOptions,
) -> Vec<CategoryResult> {
    let empty = Acc {
        n: 0,
        sum_a: 0.0,
        sum_b: 0.0,
        top1_a: 0,
        top1_b: 0,
        top5_a: 0,
        top5_b: 0,
        only_a: 0,
        only_b: 0,
        gaps: vec![Cluster::default(); input.doc_count],
    };
    let mut accs = vec![empty; set.categories().len()];
    let mut members = Vec::new();
    for &i in tokens {
        set.members(&input.labels[i], &mut members);
        let (la, lb) = (f64::from(a.loss[i]), f64::from(b.loss[i]));
        for &m in &members {
            let c = &mut accs[m];
            c.n += 1;
            c.sum_a += la;
            c.sum_b += lb;
            c.top1_a += u64::from(a.top1[i]);
            c.top1_b += u64::from(b.top1[i]);
            c.top5_a += u64::from(a.top5[i]);
            c.top5_b += u64::from(b.top5[i]);
            c.only_a += u64::from(a.top1[i] && !b.top1[i]);
            c.only_b += u64::from(b.top1[i] && !a.top1[i]);
            c.gaps[input.docs[i] as usize].add(la - lb);
        }
    }
    // Every category resamples the same documents (same seed): the intervals of nested
    // categories then move together, as they would with one shared bootstrap.
    accs.into_par_iter()
        .enumerate()
        .filter(|(_, c)| c.n > 0)
        .map(|(idx, c)| {
            let cat = &set.categories()[idx];
            let (lo, hi) = ratio_ci(&c.gaps, opts.resamples, opts.seed, 0.95);
            let nf = c.n as f64;
            CategoryResult {
                kind: cat.kind,
                name: cat.name(),
                definition: set.filter(idx).map(|f| f.source().to_owned()),
                n: c.n,
                documents: c.gaps.iter().filter(|g| g.n > 0.0).count(),
                loss_a: c.sum_a / nf,
                loss_b: c.sum_b / nf,
                gap: ratio(&c.gaps),
                gap_ci_lo: lo,
                gap_ci_hi: hi,
                top1_a: c.top1_a as f64 / nf,
                top1_b: c.top1_b as f64 / nf,
                top5_a: c.top5_a as f64 / nf,
                top5_b: c.top5_b as f64 / nf,
                only_a_top1: c.only_a,
                only_b_top1: c.only_b,
                mcnemar: mcnemar(c.only_a, c.only_b),
                better: verdict(lo, hi),
            }
        })
        .collect()
}

/// B when the whole interval is above zero, A when below, else no difference.
pub fn verdict(lo: f64, hi: f64) -> Verdict {
    if lo > 0.0 {
        Verdict::B
    } else if hi < 0.0 {
        Verdict::A
    } else {
        Verdict::NoDifference
    }
}
