//! filtermon: scores pretraining checkpoints on filtered subsets of an evaluation set.
//!
//! Stages, in data-flow order; each imports only the stages before it (`tests/layers.rs`
//! checks this):
//!
//! 1. [`evalset`]: tokenizer, tagger, labels, filters; evalsets prepared and read.
//! 2. [`engine`]: checkpoints loaded as models on a device, windows scored to per-token losses.
//! 3. [`analysis`]: statistics, per-filter summaries, recall metrics, curves, comparisons.
//! 4. [`store`]: the SQLite store of results, jobs and alerts.
//! 5. [`monitor`]: the watch config, the daemon, paired gaps, alerts and charts.
//! 6. [`demo`]: the end-to-end demo (three small runs trained, watched and charted).
//! 7. [`commands`]: the command line.
//!
//! [`error`], [`progress`] and [`plot`] are used by every stage.

pub mod analysis;
pub mod commands;
pub mod demo;
pub mod engine;
pub mod error;
pub mod evalset;
pub mod monitor;
pub mod plot;
pub mod progress;
pub mod store;
