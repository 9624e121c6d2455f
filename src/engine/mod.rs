//! Stage 2, the scoring engine: checkpoint folders ([`checkpoint`]) become models ([`model`])
//! on a device ([`device`]), which turn windows of an evalset into per-token losses
//! ([`score`]). [`parity`] checks the models against transformers; [`train`] trains the
//! demo's small models with the same code.

pub mod checkpoint;
pub mod core_rate;
pub mod device;
pub mod model;
pub mod parity;
pub mod score;
pub mod scorer;
pub mod train;
