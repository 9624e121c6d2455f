//! Regression alerts: rules over loss curves (DESIGN §8).

pub mod rules;
