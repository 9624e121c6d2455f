//! An evalset ready to be scored many times: its filters compiled against its domains, and
//! its labels and token documents decoded once.

use crate::evalset::filter::Filter;
use crate::evalset::labels::TokenLabels;
use crate::evalset::EvalSet;

/// An evalset with its filters, labels and documents at hand.
pub struct LoadedEvalset {
    /// The evalset.
    pub es: EvalSet,
    /// Built-in and user filters.
    pub filters: Vec<Filter>,
    /// Labels of every token.
    pub labels: Vec<TokenLabels>,
    /// Document index of every token.
    pub docs: Vec<u32>,
}

impl LoadedEvalset {
    /// Decodes `es`'s labels and documents.
    pub fn new(es: EvalSet, filters: Vec<Filter>) -> anyhow::Result<Self> {
        Ok(LoadedEvalset {
            labels: es.labels()?,
            docs: es.token_docs(),
            es,
            filters,
        })
    }
}
