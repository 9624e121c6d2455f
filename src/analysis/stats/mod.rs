//! Statistics over per-token losses: cluster bootstrap, per-filter aggregation, McNemar's test
//! and least squares with cluster-robust errors.

pub mod aggregate;
pub mod bootstrap;
pub mod mcnemar;
pub mod ols;
pub mod paired;

/// Subsets with fewer tokens than this get a warning: too few for a stable estimate.
pub const MIN_STABLE_TOKENS: usize = 500;
