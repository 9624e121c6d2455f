//! Paired token-level comparison of two checkpoints A and B on one evalset: per-category
//! gaps (loss A − loss B, positive ⇒ B better) with document-cluster bootstrap intervals,
//! McNemar's test on top-1, a regression of the gap on categories with controls, and the
//! gap as a function of repeat length and copy distance.
//!
//! The engine takes two [`EvalScores`] of the same evalset, wherever they come from.

pub mod categories;
pub mod derive;
pub mod plots;
pub mod regression;
pub mod report;

use serde::Serialize;

use crate::evalset::categories::{CategorySet, Kind};
use crate::evalset::filter::Filter;
use crate::evalset::labels::TokenLabels;
use crate::evalset::scores::EvalScores;
use categories::CategoryResult;
use regression::Regression;

/// The evalset side of a comparison: labels and documents of every token.
pub struct PairedInput<'a> {
    /// Labels by global token index.
    pub labels: &'a [TokenLabels],
    /// Document index by global token index.
    pub docs: &'a [u32],
    /// Number of documents.
    pub doc_count: usize,
    /// Domain names.
    pub domains: &'a [String],
    /// Filters reported as categories.
    pub filters: &'a [Filter],
}

/// Settings of the analysis.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
}

/// Everything `compare` computes.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Tokens compared (scored by both, position ≥ 1).
    pub tokens: usize,
    /// Documents.
    pub documents: usize,
    /// One row per category with at least one token, in [`CategorySet`] order.
    pub categories: Vec<CategoryResult>,
    /// The regression of the gap on categories with controls.
    pub regression: Regression,
}

impl Comparison {
    /// Rows of one kind, in bin / display order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &CategoryResult> {
        self.categories.iter().filter(move |c| c.kind == kind)
    }
}

/// Runs the analysis.
///
/// # Errors
///
/// When the scores do not cover the evalset's tokens, no token is scored by both models, or
/// the regression cannot be fitted.
pub fn compare(
    input: &PairedInput,
    a: &EvalScores,
    b: &EvalScores,
    opts: CompareOptions,
) -> anyhow::Result<Comparison> {
    let n = input.labels.len();
    for (name, s) in [("A", a), ("B", b)] {
        anyhow::ensure!(
            s.loss.len() == n && s.top1.len() == n && s.top5.len() == n && input.docs.len() == n,
            "scores of {name} cover {} tokens, the evalset has {n}",
            s.loss.len()
        );
    }
    // Tokens both models scored: position 0 has no prefix, and a non-finite loss says nothing.
    let tokens: Vec<usize> = (0..n)
        .filter(|&i| input.labels[i].pos > 0 && a.loss[i].is_finite() && b.loss[i].is_finite())
        .collect();
    if tokens.is_empty() {
        return Err(crate::error::input_error(
            "no token is scored by both checkpoints (every window shorter than 2 tokens?)",
        ));
    }
    if input.doc_count < 2 {
        return Err(crate::error::input_error(
            "the evalset has one document: document-cluster intervals and errors need at least two",
        ));
    }
    let set = CategorySet::new(input.domains, input.filters);
    let categories = categories::per_category(input, &set, &tokens, a, b, opts);
    let regression = regression::fit(input, &tokens, a, b)?;
    Ok(Comparison {
        tokens: tokens.len(),
        documents: input.doc_count,
        categories,
        regression,
    })
}
