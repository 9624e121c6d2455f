//! Ordinary least squares with cluster-robust (CRV1) standard errors, as statsmodels'
//! `OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": g})`.
//!
//! The design is streamed, row by row, twice (once for X'X and X'y, once for the per-cluster
//! scores), so an evalset of millions of tokens never holds an N × K matrix.

use nalgebra::{DMatrix, DVector};
use serde::Serialize;

/// z quantile of a two-sided 95% interval; statsmodels uses normal quantiles for cluster
/// covariances unless asked for `use_t`.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A design matrix given row by row.
pub trait Design: Sync {
    /// Column names.
    fn names(&self) -> &[String];
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Writes row `i` into `out` (length `names().len()`).
    fn row(&self, i: usize, out: &mut [f64]);
}

/// One coefficient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coefficient {
    /// Column name.
    pub name: String,
    /// Estimate.
    pub estimate: f64,
    /// Cluster-robust standard error.
    pub se: f64,
    /// Lower end of the 95% interval.
    pub ci_lo: f64,
    /// Upper end of the 95% interval.
    pub ci_hi: f64,
}

/// A fitted regression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OlsFit {
    /// Coefficients in column order.
    pub coefficients: Vec<Coefficient>,
    /// Observations.
    pub n: usize,
    /// Clusters.
    pub clusters: usize,
    /// Rank of X'X; below the column count, the estimates are the minimum-norm solution
    /// (as statsmodels' pinv) and collinear columns are not identified.
    pub rank: usize,
    /// R² of the fit.
    pub r_squared: f64,
}

/// Relative singular-value cut-off of the pseudo-inverse.
const RCOND: f64 = 1e-12;

/// Fits `y` on `x` with standard errors clustered by `groups` (any ids; one per row).
///
/// # Errors
///
/// When lengths disagree, there are fewer rows than columns, or fewer than two clusters.
pub fn fit(x: &dyn Design, y: &[f64], groups: &[u32]) -> anyhow::Result<OlsFit> {
    let (n, k) = (x.rows(), x.names().len());
    anyhow::ensure!(
        y.len() == n && groups.len() == n,
        "OLS: {n} design rows, {} responses, {} group ids",
        y.len(),
        groups.len()
    );
    anyhow::ensure!(n > k, "OLS: {n} observations for {k} coefficients");
    let mut xtx = DMatrix::<f64>::zeros(k, k);
    let mut xty = DVector::<f64>::zeros(k);
    let mut row = vec![0.0; k];
    for (i, &yi) in y.iter().enumerate() {
        x.row(i, &mut row);
        let r = DVector::from_column_slice(&row);
        xtx.ger(1.0, &r, &r, 1.0);
        xty.axpy(yi, &r, 1.0);
    }
    let (inv, rank) = pseudo_inverse(xtx)?;
    let beta = &inv * &xty;

    // Per-cluster scores u_g = Σ_{i∈g} x_i e_i.
    let mut ids: Vec<u32> = groups.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let g = ids.len();
    anyhow::ensure!(
        g >= 2,
        "OLS: cluster-robust errors need at least two clusters"
    );
    let mut scores = DMatrix::<f64>::zeros(k, g);
    let mean_y = y.iter().sum::<f64>() / n as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (i, &yi) in y.iter().enumerate() {
        x.row(i, &mut row);
        let r = DVector::from_column_slice(&row);
        let e = yi - r.dot(&beta);
        ss_res += e * e;
        ss_tot += (yi - mean_y).powi(2);
        // `ids` holds every group id, so the search cannot miss.
        let col = ids.binary_search(&groups[i]).unwrap_or(0);
        scores.column_mut(col).axpy(e, &r, 1.0);
    }
    let meat = &scores * scores.transpose();
    // statsmodels' CRV1 small-sample factor G/(G−1)·(N−1)/(N−K), K the design's rank.
    let correction = g as f64 / (g as f64 - 1.0) * (n as f64 - 1.0) / (n as f64 - rank as f64);
    let cov = (&inv * meat * &inv) * correction;
    let coefficients = x
        .names()
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let se = cov[(j, j)].max(0.0).sqrt();
            Coefficient {
                name: name.clone(),
                estimate: beta[j],
                se,
                ci_lo: beta[j] - Z95 * se,
                ci_hi: beta[j] + Z95 * se,
            }
        })
        .collect();
    Ok(OlsFit {
        coefficients,
        n,
        clusters: g,
        rank,
        r_squared: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            f64::NAN
        },
    })
}

/// Pseudo-inverse of a symmetric positive semi-definite matrix, and its rank.
fn pseudo_inverse(a: DMatrix<f64>) -> anyhow::Result<(DMatrix<f64>, usize)> {
    let svd = a.svd(true, true);
    let max = svd.singular_values.max();
    let cut = max * RCOND;
    let rank = svd.singular_values.iter().filter(|&&s| s > cut).count();
    let inv = svd
        .pseudo_inverse(cut)
        .map_err(|e| anyhow::anyhow!("OLS: pseudo-inverse failed: {e}"))?;
    Ok((inv, rank))
}

/// A dense row-major design, for small problems and tests.
pub struct DenseDesign {
    names: Vec<String>,
    data: Vec<f64>,
}

impl DenseDesign {
    /// `data` holds `data.len() / names.len()` rows of `names.len()` values.
    pub fn new(names: Vec<String>, data: Vec<f64>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !names.is_empty() && data.len().is_multiple_of(names.len()),
            "design of {} values is not a whole number of rows of {} columns",
            data.len(),
            names.len()
        );
        Ok(Self { names, data })
    }
}

impl Design for DenseDesign {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn rows(&self) -> usize {
        self.data.len() / self.names.len()
    }
    fn row(&self, i: usize, out: &mut [f64]) {
        let k = self.names.len();
        out.copy_from_slice(&self.data[i * k..(i + 1) * k]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_fit_recovers_coefficients_with_zero_error() {
        let names = vec!["const".to_string(), "x".to_string()];
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..20 {
            data.extend([1.0, i as f64]);
            y.push(2.0 + 0.5 * i as f64);
        }
        let groups: Vec<u32> = (0..20).map(|i| i / 5).collect();
        let f = fit(&DenseDesign::new(names, data).expect("design"), &y, &groups).expect("fit");
        assert!((f.coefficients[0].estimate - 2.0).abs() < 1e-10);
        assert!((f.coefficients[1].estimate - 0.5).abs() < 1e-10);
        assert!(f.coefficients[1].se < 1e-8);
        assert_eq!(f.rank, 2);
    }

    #[test]
    fn collinear_columns_lower_the_rank_instead_of_failing() {
        let names = vec!["a".to_string(), "b".to_string()];
        let data: Vec<f64> = (0..10).flat_map(|_| [1.0, 1.0]).collect();
        let y: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let groups: Vec<u32> = (0..10).map(|i| i % 3).collect();
        let f = fit(&DenseDesign::new(names, data).expect("design"), &y, &groups).expect("fit");
        assert_eq!(f.rank, 1);
        // Minimum-norm solution splits the mean 4.5 evenly.
        assert!((f.coefficients[0].estimate - 2.25).abs() < 1e-9);
    }

    #[test]
    fn one_cluster_is_an_error() {
        let d = DenseDesign::new(vec!["c".into()], vec![1.0; 5]).expect("design");
        assert!(fit(&d, &[1.0, 2.0, 3.0, 4.0, 5.0], &[0; 5]).is_err());
    }
}
