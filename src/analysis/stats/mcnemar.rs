//! McNemar's test of paired binary outcomes (top-1 hits of two models on the same tokens).

use serde::Serialize;

/// Below this many discordant pairs the p-value is the exact binomial one; from here on the
/// continuity-corrected chi-square. 25 is the usual rule of thumb: at b + c = 25 the two
/// p-values already agree to about two significant digits.
pub const EXACT_BELOW: u64 = 25;

/// Result of McNemar's test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct McNemar {
    /// min(b, c) for the exact test; the corrected chi-square statistic otherwise.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Whether the exact binomial test was used.
    pub exact: bool,
}

/// McNemar's test on the discordant counts `b` (only A right) and `c` (only B right): exact
/// binomial when `b + c <` [`EXACT_BELOW`], else chi-square with continuity correction.
pub fn mcnemar(b: u64, c: u64) -> McNemar {
    if b + c < EXACT_BELOW {
        exact(b, c)
    } else {
        chi2_corrected(b, c)
    }
}

/// Exact two-sided binomial test of `min(b, c)` in `b + c` fair trials, as statsmodels'
/// `mcnemar(exact=True)`: p = min(1, 2·P(X ≤ min(b, c))).
pub fn exact(b: u64, c: u64) -> McNemar {
    let n = b + c;
    let k = b.min(c);
    // Log space keeps the terms finite for any n (0.5^n underflows past n ≈ 1074).
    let ln_half_n = n as f64 * std::f64::consts::LN_2;
    let cdf: f64 = (0..=k).map(|i| (ln_choose(n, i) - ln_half_n).exp()).sum();
    McNemar {
        statistic: k as f64,
        p_value: (2.0 * cdf).min(1.0),
        exact: true,
    }
}

/// Chi-square with continuity correction, (|b − c| − 1)² / (b + c), 1 degree of freedom, as
/// statsmodels' `mcnemar(exact=False)`. With no discordant pair there is no evidence either
/// way: statistic 0, p = 1.
pub fn chi2_corrected(b: u64, c: u64) -> McNemar {
    let n = (b + c) as f64;
    if n == 0.0 {
        return McNemar {
            statistic: 0.0,
            p_value: 1.0,
            exact: false,
        };
    }
    let d = (b as f64 - c as f64).abs() - 1.0;
    let statistic = d * d / n;
    McNemar {
        statistic,
        // The chi-square(1) survival function is erfc(sqrt(x / 2)).
        p_value: libm::erfc((statistic / 2.0).sqrt()),
        exact: false,
    }
}

fn ln_choose(n: u64, k: u64) -> f64 {
    let f = |x: u64| libm::lgamma(x as f64 + 1.0);
    f(n) - f(k) - f(n - k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_exact_test_for_few_discordant_pairs() {
        assert!(mcnemar(3, 7).exact);
        assert!(mcnemar(12, 12).exact);
        assert!(!mcnemar(12, 13).exact);
    }

    #[test]
    fn symmetric_in_the_two_models() {
        assert_eq!(mcnemar(4, 9), mcnemar(9, 4));
        assert_eq!(mcnemar(40, 90), mcnemar(90, 40));
    }

    #[test]
    fn exact_survives_huge_counts() {
        let r = exact(5000, 5000);
        assert!(r.p_value > 0.99 && r.p_value <= 1.0, "{r:?}");
    }
}
