//! filtermon: scores pretraining checkpoints on filtered subsets of an evaluation set.
//!
//! Stages, in data-flow order (see DESIGN and the README):
//! [`checkpoint`] finds and loads checkpoints, [`model`] runs them, [`score`] turns windows into
//! per-token losses, [`evalset`] labels tokens and selects them with filters.

pub mod alerts;
pub mod charts;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod config;
pub mod corpus_gen;
pub mod curves;
pub mod daemon;
pub mod demo;
pub mod device;
pub mod error;
pub mod evalset;
pub mod model;
pub mod paired_gaps;
pub mod parity;
pub mod plot;
pub mod progress;
pub mod recall;
pub mod score;
pub mod stats;
pub mod store;
pub mod tagger;
pub mod tagset;
pub mod tokenizer;
pub mod train;
