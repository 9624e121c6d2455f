//! Stage 5, monitoring runs while they train: the watch config ([`config`]), finding new
//! checkpoints ([`discover`]), the daemon that scores them ([`daemon`]), paired gaps between
//! runs ([`paired_gaps`]), alert rules ([`alerts`]), the charts ([`charts`]), TensorBoard
//! event files ([`tensorboard`]) and the live dashboard ([`serve`]).

pub mod alerts;
pub mod charts;
pub mod config;
pub mod daemon;
pub mod discover;
pub mod paired_gaps;
pub mod serve;
pub mod tensorboard;
