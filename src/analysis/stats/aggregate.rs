//! Per-filter results of one checkpoint on one evalset.

use serde::Serialize;

use crate::analysis::stats::bootstrap::{ratio_ci, Cluster};
use crate::evalset::filter::Filter;
use crate::evalset::labels::TokenLabels;
use crate::evalset::scores::EvalScores;

/// The summary of one filter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilterResult {
    /// Filter name.
    pub filter: String,
    /// Canonical expression, stored with results so a curve never changes meaning silently.
    pub definition: String,
    /// Domain, when results are split by domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Mean NLL (nats) over selected tokens.
    pub mean: f64,
    /// Selected tokens.
    pub n: usize,
    /// 95% document-cluster bootstrap interval of the mean.
    pub ci_lo: f64,
    /// Upper end of that interval.
    pub ci_hi: f64,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
}

/// How to aggregate.
#[derive(Debug, Clone, Copy)]
pub struct AggregateOptions {
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Bootstrap seed.
    pub seed: u64,
    /// Also report every domain × filter.
    pub by_domain: bool,
}

impl Default for AggregateOptions {
    fn default() -> Self {
        Self {
            resamples: 1000,
            seed: 0,
            by_domain: false,
        }
    }
}

/// One result per filter (and per domain × filter when asked), over scored tokens (pos ≥ 1);
/// `docs` is the document index per token.
pub fn aggregate(
    labels: &[TokenLabels],
    docs: &[u32],
    domains: &[String],
    doc_count: usize,
    scores: &EvalScores,
    filters: &[Filter],
    opts: AggregateOptions,
) -> Vec<FilterResult> {
    let mut out = Vec::new();
    let mut groups: Vec<Option<u16>> = vec![None];
    if opts.by_domain {
        groups.extend((0..domains.len()).map(|d| Some(d as u16)));
    }
    for f in filters {
        for &group in &groups {
            let mut clusters = vec![Cluster::default(); doc_count];
            let (mut sum, mut n, mut t1, mut t5) = (0f64, 0usize, 0usize, 0usize);
            for (i, l) in labels.iter().enumerate() {
                if l.pos == 0 || group.is_some_and(|d| d != l.domain) || !f.matches(l) {
                    continue;
                }
                let loss = f64::from(scores.loss[i]);
                clusters[docs[i] as usize].add(loss);
                sum += loss;
                n += 1;
                t1 += usize::from(scores.top1[i]);
                t5 += usize::from(scores.top5[i]);
            }
            // Documents outside the group never contribute, so they are not resampled.
            if let Some(d) = group {
                clusters = docs_in_domain(labels, docs, d, clusters);
            }
            let (ci_lo, ci_hi) = ratio_ci(&clusters, opts.resamples, opts.seed, 0.95);
            let frac = |k: usize| {
                if n == 0 {
                    f64::NAN
                } else {
                    k as f64 / n as f64
                }
            };
            out.push(FilterResult {
                filter: f.name().to_owned(),
                definition: f.source().to_owned(),
                domain: group.map(|d| domains[d as usize].clone()),
                mean: if n == 0 { f64::NAN } else { sum / n as f64 },
                n,
                ci_lo,
                ci_hi,
                top1: frac(t1),
                top5: frac(t5),
            });
        }
    }
    out
}

fn docs_in_domain(
    labels: &[TokenLabels],
    docs: &[u32],
    domain: u16,
    clusters: Vec<Cluster>,
) -> Vec<Cluster> {
    let mut keep = vec![false; clusters.len()];
    for (l, &d) in labels.iter().zip(docs) {
        if l.domain == domain {
            keep[d as usize] = true;
        }
    }
    clusters
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(c, _)| c)
        .collect()
}
