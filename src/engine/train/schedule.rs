//! Warmup–stable–decay (WSD) learning-rate schedule with annealing branches.
//!
//! The main run warms up linearly to the peak rate and stays there; every `checkpoint_every`
//! steps it writes a stable checkpoint `stepN`. From every `anneal_every`-th step a branch
//! continues with copies of the weights and optimizer state for `anneal_steps` steps while the
//! rate falls linearly to zero, and writes the annealed checkpoint `stepM-anneal`, where
//! `M = N + anneal_steps` (its step counts the branch's updates, so tokens seen = M × tokens
//! per step). The main run goes on from step N unaffected.

use crate::error::input_error;

/// A WSD schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Peak (and stable) learning rate.
    pub peak_lr: f64,
    /// Linear warmup steps, from `peak_lr / warmup_steps` to `peak_lr`.
    pub warmup_steps: usize,
    /// Steps of the main run, warmup included.
    pub total_steps: usize,
    /// A stable checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// An annealing branch from every step that is a multiple of this (0: none). A multiple of
    /// `checkpoint_every`, so every branch starts at a stable checkpoint.
    pub anneal_every: usize,
    /// Length of each annealing branch.
    pub anneal_steps: usize,
}

impl Schedule {
    /// Checks the cadences fit together.
    pub fn validate(&self) -> anyhow::Result<()> {
        let bad = |m: &str| Err(input_error(format!("training schedule: {m}")));
        if self.total_steps == 0 || self.checkpoint_every == 0 {
            return bad("total_steps and checkpoint_every must be positive");
        }
        if !(self.peak_lr.is_finite() && self.peak_lr > 0.0) {
            return bad("peak_lr must be a positive number");
        }
        if self.anneal_every > 0 {
            if !self.anneal_every.is_multiple_of(self.checkpoint_every) {
                return bad("anneal_every must be a multiple of checkpoint_every");
            }
            if self.anneal_steps == 0 {
                return bad("anneal_steps must be positive when anneal_every is set");
            }
        }
        Ok(())
    }

    /// Learning rate of main-run step `step` (1-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            self.peak_lr * step as f64 / self.warmup_steps as f64
        } else {
            self.peak_lr
        }
    }

    /// Learning rate of step `i` (1-based) of an annealing branch: linear to 0 at the last.
    pub fn anneal_lr(&self, i: usize) -> f64 {
        let left = self.anneal_steps.saturating_sub(i) as f64;
        self.peak_lr * left / self.anneal_steps.max(1) as f64
    }

    /// Whether main-run step `step` writes a stable checkpoint.
    pub fn is_checkpoint(&self, step: usize) -> bool {
        step.is_multiple_of(self.checkpoint_every)
    }

    /// Whether an annealing branch starts at main-run step `step`.
    pub fn is_anneal_start(&self, step: usize) -> bool {
        self.anneal_every > 0 && step.is_multiple_of(self.anneal_every)
    }

    /// Optimizer steps of the whole schedule, branches included.
    pub fn total_updates(&self) -> usize {
        let branches = self.total_steps.checked_div(self.anneal_every).unwrap_or(0);
        self.total_steps + branches * self.anneal_steps
    }
}

/// Folder name of the stable checkpoint after `step` steps.
pub fn stable_name(step: usize) -> String {
    format!("step{step}")
}

/// Folder name of the annealed checkpoint whose branch ends after `step` steps.
pub fn anneal_name(step: usize) -> String {
    format!("step{step}-anneal")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            peak_lr: 1e-3,
            warmup_steps: 10,
            total_steps: 100,
            checkpoint_every: 20,
            anneal_every: 40,
            anneal_steps: 8,
        }
    }

    #[test]
    fn warmup_then_constant_then_decay_to_zero() {
        let s = schedule();
        assert!((s.lr(5) - 5e-4).abs() < 1e-12);
        assert_eq!(s.lr(10), 1e-3);
        assert_eq!(s.lr(100), 1e-3);
        assert!(s.anneal_lr(1) < 1e-3);
        assert_eq!(s.anneal_lr(8), 0.0);
        assert_eq!(s.total_updates(), 100 + 2 * 8);
        assert!(s.is_anneal_start(80) && !s.is_anneal_start(60) && s.is_checkpoint(60));
    }

    #[test]
    fn bad_cadences_are_input_errors() {
        let mut s = schedule();
        s.anneal_every = 30;
        assert!(s.validate().is_err());
        s.anneal_every = 40;
        s.anneal_steps = 0;
        assert!(s.validate().is_err());
    }
}
