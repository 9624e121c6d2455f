//! Paired differences of two score vectors over the same tokens (two checkpoints on one
//! evalset), with a document-cluster bootstrap interval.

use serde::Serialize;

use super::bootstrap::{ratio, ratio_ci, Cluster};

/// Mean of `a − b` over selected tokens and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedDiff {
    /// Mean of `a[i] − b[i]`.
    pub mean: f64,
    /// Lower end of the 95% document-cluster bootstrap interval.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    /// Tokens selected.
    pub n: usize,
}

/// Paired mean difference `a − b` over tokens where `selected(i)` holds and both are finite;
/// `docs[i]` is token i's document (of `doc_count`).
pub fn paired_diff(
    a: &[f32],
    b: &[f32],
    selected: impl Fn(usize) -> bool,
    docs: &[u32],
    doc_count: usize,
    resamples: usize,
    seed: u64,
) -> PairedDiff {
    let mut clusters = vec![Cluster::default(); doc_count];
    let mut n = 0usize;
    for i in 0..a.len().min(b.len()) {
        if selected(i) && a[i].is_finite() && b[i].is_finite() {
            clusters[docs[i] as usize].add(f64::from(a[i]) - f64::from(b[i]));
            n += 1;
        }
    }
    let (lo, hi) = ratio_ci(&clusters, resamples, seed, 0.95);
    PairedDiff {
        mean: ratio(&clusters),
        lo,
        hi,
        n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_shift_gives_a_point_interval() {
        let b: Vec<f32> = (0..100).map(|i| (i % 7) as f32).collect();
        let a: Vec<f32> = b.iter().map(|x| x + 0.5).collect();
        let docs: Vec<u32> = (0..100).map(|i| i / 10).collect();
        let d = paired_diff(&a, &b, |_| true, &docs, 10, 200, 0);
        assert_eq!((d.mean, d.lo, d.hi, d.n), (0.5, 0.5, 0.5, 100));
    }

    #[test]
    fn selection_and_nan_positions_are_skipped() {
        let a = [f32::NAN, 2.0, 3.0, 10.0];
        let b = [f32::NAN, 1.0, 1.0, 0.0];
        let d = paired_diff(&a, &b, |i| i != 3, &[0, 0, 1, 1], 2, 100, 0);
        assert_eq!(d.n, 2);
        assert!((d.mean - 1.5).abs() < 1e-12);
        assert!(d.lo >= 1.0 && d.hi <= 2.0);
    }
}
