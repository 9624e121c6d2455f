//! Document-cluster bootstrap of a ratio mean (Σ loss / Σ tokens), resampling whole documents
//! because tokens of one document are not independent.
//!
//! A paired comparison of two models is the same bootstrap over per-token gaps
//! (loss A − loss B): summing the gaps per document keeps each resampled document's tokens
//! paired, so the interval reflects the variance of the difference, not of each model.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Per-document sums of one quantity.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cluster {
    /// Σ of the values in the document.
    pub sum: f64,
    /// Number of values.
    pub n: f64,
}

impl Cluster {
    /// Adds one value.
    pub fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1.0;
    }
}

/// The point estimate `Σ sum / Σ n`; NaN without values.
pub fn ratio(clusters: &[Cluster]) -> f64 {
    ratio_of(clusters.iter().copied())
}

/// Percentile bootstrap interval of `Σ sum / Σ n` over resampled clusters.
///
/// Returns `(lo, hi)` at the given two-sided `level` (0.95 for a 95% CI); NaN when no cluster
/// has any value.
pub fn ratio_ci(clusters: &[Cluster], resamples: usize, seed: u64, level: f64) -> (f64, f64) {
    if clusters.iter().all(|c| c.n == 0.0) {
        return (f64::NAN, f64::NAN);
    }
    percentile_ci(clusters.len(), resamples, seed, level, |drawn| {
        ratio_of(drawn.iter().map(|&i| clusters[i]))
    })
}

/// `ratio(a) − ratio(b)` for clusters that hold two quantities each, `pairs[i] = (a_i, b_i)`
/// (e.g. a window's losses on two kinds of token); NaN when either side has no value.
pub fn ratio_diff(pairs: &[(Cluster, Cluster)]) -> f64 {
    ratio_of(pairs.iter().map(|p| p.0)) - ratio_of(pairs.iter().map(|p| p.1))
}

/// Percentile bootstrap interval of [`ratio_diff`], resampling whole clusters so that both
/// quantities of a cluster stay together.
pub fn ratio_diff_ci(
    pairs: &[(Cluster, Cluster)],
    resamples: usize,
    seed: u64,
    level: f64,
) -> (f64, f64) {
    if !ratio_diff(pairs).is_finite() {
        return (f64::NAN, f64::NAN);
    }
    percentile_ci(pairs.len(), resamples, seed, level, |drawn| {
        ratio_of(drawn.iter().map(|&i| pairs[i].0)) - ratio_of(drawn.iter().map(|&i| pairs[i].1))
    })
}

fn ratio_of(clusters: impl Iterator<Item = Cluster>) -> f64 {
    let (s, n) = clusters.fold((0.0, 0.0), |(s, n), c| (s + c.sum, n + c.n));
    if n > 0.0 {
        s / n
    } else {
        f64::NAN
    }
}

/// Percentile interval of `stat` over `resamples` draws of `k` cluster indices with
/// replacement; resamples where `stat` is not finite (no value drawn) are left out.
fn percentile_ci(
    k: usize,
    resamples: usize,
    seed: u64,
    level: f64,
    mut stat: impl FnMut(&[usize]) -> f64,
) -> (f64, f64) {
    if k == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut drawn = vec![0usize; k];
    let mut stats: Vec<f64> = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for d in drawn.iter_mut() {
            *d = rng.random_range(0..k);
        }
        let s = stat(&drawn);
        if s.is_finite() {
            stats.push(s);
        }
    }
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    (quantile(&stats, alpha), quantile(&stats, 1.0 - alpha))
}

/// Linear-interpolation quantile of sorted data (numpy's default method).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy.quantile([1, 2, 4, 8], [0.025, 0.5, 0.975]) = [1.075, 3.0, 7.7]
        let d = [1.0, 2.0, 4.0, 8.0];
        assert!((quantile(&d, 0.025) - 1.075).abs() < 1e-12);
        assert!((quantile(&d, 0.5) - 3.0).abs() < 1e-12);
        assert!((quantile(&d, 0.975) - 7.7).abs() < 1e-12);
    }

    #[test]
    fn interval_brackets_the_estimate_and_shrinks_with_more_documents() {
        let make = |docs: usize| -> Vec<Cluster> {
            (0..docs)
                .map(|i| Cluster {
                    sum: 10.0 * (1.0 + (i % 7) as f64 / 7.0),
                    n: 10.0,
                })
                .collect()
        };
        let width = |c: &[Cluster]| {
            let (lo, hi) = ratio_ci(c, 2000, 1, 0.95);
            let mean = c.iter().map(|x| x.sum).sum::<f64>() / c.iter().map(|x| x.n).sum::<f64>();
            assert!(lo <= mean && mean <= hi, "{lo} {mean} {hi}");
            hi - lo
        };
        let (small, large) = (width(&make(20)), width(&make(500)));
        // Width scales like 1/sqrt(documents): 5x for 25x the documents, within bootstrap noise.
        assert!(
            small / large > 3.5 && small / large < 7.0,
            "{small} {large}"
        );
    }

    #[test]
    fn identical_documents_give_a_point_interval() {
        let c = vec![Cluster { sum: 6.0, n: 3.0 }; 30];
        assert_eq!(ratio_ci(&c, 100, 0, 0.95), (2.0, 2.0));
    }

    #[test]
    fn difference_interval_keeps_pairs_together() {
        // b = a − 1 in every cluster: the difference is exactly 1 in every resample, although
        // each side alone varies a lot between clusters.
        let pairs: Vec<(Cluster, Cluster)> = (0..30)
            .map(|i| {
                let a = Cluster {
                    sum: 4.0 * (i % 5) as f64,
                    n: 4.0,
                };
                let b = Cluster {
                    sum: a.sum - 4.0,
                    n: 4.0,
                };
                (a, b)
            })
            .collect();
        assert!((ratio_diff(&pairs) - 1.0).abs() < 1e-12);
        let (lo, hi) = ratio_diff_ci(&pairs, 300, 2, 0.95);
        assert!(
            (lo - 1.0).abs() < 1e-12 && (hi - 1.0).abs() < 1e-12,
            "{lo} {hi}"
        );
        // Independent noise on one side widens the interval around the estimate.
        let noisy: Vec<(Cluster, Cluster)> = pairs
            .iter()
            .enumerate()
            .map(|(i, (a, b))| {
                let shift = if i % 2 == 0 { 2.0 } else { -2.0 };
                (
                    *a,
                    Cluster {
                        sum: b.sum + shift,
                        n: b.n,
                    },
                )
            })
            .collect();
        let (lo, hi) = ratio_diff_ci(&noisy, 500, 2, 0.95);
        let d = ratio_diff(&noisy);
        assert!(lo < d && d < hi && hi - lo > 0.05, "{lo} {d} {hi}");
        assert!(ratio_diff_ci(&[], 10, 0, 0.95).0.is_nan());
    }

    #[test]
    fn same_seed_same_interval() {
        let c: Vec<Cluster> = (0..40)
            .map(|i| Cluster {
                sum: i as f64,
                n: 1.0 + (i % 3) as f64,
            })
            .collect();
        assert_eq!(ratio_ci(&c, 500, 9, 0.95), ratio_ci(&c, 500, 9, 0.95));
        assert!(ratio_ci(&[], 10, 0, 0.95).0.is_nan());
    }
}
