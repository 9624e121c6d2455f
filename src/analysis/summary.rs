//! What one scored evalset comes to: a result per filter, and the recall diagnostics.

use crate::analysis::recall::{recall_metrics, RecallMetrics};
use crate::analysis::stats::aggregate::{aggregate, AggregateOptions, FilterResult};
use crate::evalset::loaded::LoadedEvalset;
use crate::evalset::scores::EvalScores;

/// Per-filter results and the recall diagnostics of one scored evalset.
pub fn summarize(
    es: &LoadedEvalset,
    scores: &EvalScores,
    opts: AggregateOptions,
) -> (Vec<FilterResult>, RecallMetrics) {
    let doc_count = es.es.header().docs.len();
    let results = aggregate(
        &es.labels,
        &es.docs,
        es.es.domains(),
        doc_count,
        scores,
        &es.filters,
        opts,
    );
    let recall = recall_metrics(
        &es.labels,
        &es.docs,
        doc_count,
        es.es.windows(),
        scores,
        opts.into(),
    );
    (results, recall)
}
