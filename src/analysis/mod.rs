//! Stage 3, analysis of scored tokens: statistics ([`stats`]), per-filter summaries ([`summary`]) and
//! the recall metrics ([`recall`]), loss curves ([`curves`]) and the token-by-token comparison of
//! two checkpoints ([`compare`]).

pub mod compare;
pub mod curves;
pub mod detection;
pub mod recall;
pub mod stats;
pub mod summary;
