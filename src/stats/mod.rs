//! Statistics over per-token losses: cluster bootstrap and per-filter aggregation.

pub mod aggregate;
pub mod bootstrap;
pub mod paired;
