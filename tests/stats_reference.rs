//! The statistics behind `compare` against numbers computed independently by numpy, scipy and
//! statsmodels (`scripts/compare_reference.py`, committed in tests/fixtures/stats/).

use std::path::PathBuf;

use filtermon::analysis::stats::bootstrap::{quantile, ratio, ratio_ci, Cluster};
use filtermon::analysis::stats::mcnemar::{chi2_corrected, exact, mcnemar, EXACT_BELOW};
use filtermon::analysis::stats::ols::{fit, DenseDesign};
use serde_json::Value;

const REL: f64 = 1e-6;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stats")
        .join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).expect("expected.json"))
        .expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn close(got: f64, want: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1e-12);
    assert!(
        err <= REL || (got - want).abs() < 1e-15,
        "{what}: got {got}, statsmodels/numpy {want} (relative error {err:e})"
    );
}

#[test]
fn ols_cluster_robust_matches_statsmodels() {
    let text = std::fs::read_to_string(fixture("ols.csv")).expect("ols.csv");
    let (mut data, mut y, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let v: Vec<f64> = line
            .split(',')
            .map(|x| x.parse().expect("number"))
            .collect();
        groups.push(v[0] as u32);
        y.push(v[1]);
        data.push(1.0);
        data.extend_from_slice(&v[2..]);
    }
    let e = &expected()["ols"];
    let names: Vec<String> = e["names"]
        .as_array()
        .expect("names")
        .iter()
        .map(|n| n.as_str().expect("str").to_owned())
        .collect();
    let f = fit(&DenseDesign::new(names, data).expect("design"), &y, &groups).expect("fit");
    assert_eq!(f.n as u64, e["nobs"].as_u64().expect("nobs"));
    assert_eq!(f.clusters as u64, e["groups"].as_u64().expect("groups"));
    assert_eq!(f.rank, 5);
    for (key, got) in [
        (
            "params",
            f.coefficients
                .iter()
                .map(|c| c.estimate)
                .collect::<Vec<_>>(),
        ),
        ("bse", f.coefficients.iter().map(|c| c.se).collect()),
        ("ci_lo", f.coefficients.iter().map(|c| c.ci_lo).collect()),
        ("ci_hi", f.coefficients.iter().map(|c| c.ci_hi).collect()),
    ] {
        for (j, (g, w)) in got.iter().zip(floats(&e[key])).enumerate() {
            close(*g, w, &format!("{key}[{j}]"));
        }
    }
}

#[test]
fn mcnemar_matches_statsmodels() {
    for case in expected()["mcnemar"].as_array().expect("cases") {
        let (b, c) = (
            case["b"].as_u64().expect("b"),
            case["c"].as_u64().expect("c"),
        );
        let ex = exact(b, c);
        close(
            ex.statistic,
            case["exact_statistic"].as_f64().expect("s"),
            "exact statistic",
        );
        close(
            ex.p_value,
            case["exact_pvalue"].as_f64().expect("p"),
            &format!("exact p ({b}, {c})"),
        );
        if let Some(p) = case["chi2_pvalue"].as_f64() {
            let ch = chi2_corrected(b, c);
            close(
                ch.statistic,
                case["chi2_statistic"].as_f64().expect("s"),
                "chi2 statistic",
            );
            close(ch.p_value, p, &format!("chi2 p ({b}, {c})"));
        }
        let auto = mcnemar(b, c);
        assert_eq!(auto.exact, b + c < EXACT_BELOW);
        let want = if auto.exact {
            case["exact_pvalue"].as_f64()
        } else {
            case["chi2_pvalue"].as_f64()
        };
        close(
            auto.p_value,
            want.expect("p"),
            &format!("mcnemar p ({b}, {c})"),
        );
    }
}

/// The bootstrap's random draws come from Rust's `StdRng`, not numpy's generator, so its
/// intervals cannot be compared with numpy's number for number. What is checked instead does
/// not depend on the RNG: the percentile step (numpy's linear quantile), the point estimate
/// (ratio of sums), and cases whose interval is determined exactly.
#[test]
fn bootstrap_pieces_match_numpy() {
    let e = &expected()["quantile"];
    let mut data = floats(&e["data"]);
    data.sort_by(f64::total_cmp);
    for (q, want) in floats(&e["q"]).into_iter().zip(floats(&e["expected"])) {
        close(quantile(&data, q), want, &format!("quantile {q}"));
    }
    let clusters: Vec<Cluster> = floats(&e["cluster_sums"])
        .into_iter()
        .zip(floats(&e["cluster_counts"]))
        .map(|(sum, n)| Cluster { sum, n })
        .collect();
    close(
        ratio(&clusters),
        e["ratio"].as_f64().expect("ratio"),
        "ratio",
    );
    let (lo, hi) = ratio_ci(&clusters, 2000, 7, 0.95);
    let r = ratio(&clusters);
    assert!(lo < r && r < hi, "{lo} {r} {hi}");
}

#[test]
fn bootstrap_deterministic_cases() {
    // Every document has the same mean gap: every resample gives it, so does the interval.
    let same: Vec<Cluster> = (1..=12)
        .map(|n| Cluster {
            sum: 0.25 * n as f64,
            n: n as f64,
        })
        .collect();
    let (lo, hi) = ratio_ci(&same, 500, 3, 0.95);
    close(lo, 0.25, "lo");
    close(hi, 0.25, "hi");
    // Paired gaps: swapping A and B negates every document sum, so with the same seed (the
    // same resampled documents) the interval is exactly mirrored.
    let gaps: Vec<Cluster> = (0..30)
        .map(|i| Cluster {
            sum: ((i * 7919) % 23) as f64 - 9.0,
            n: 1.0 + (i % 4) as f64,
        })
        .collect();
    let swapped: Vec<Cluster> = gaps
        .iter()
        .map(|c| Cluster {
            sum: -c.sum,
            n: c.n,
        })
        .collect();
    let (lo, hi) = ratio_ci(&gaps, 1000, 11, 0.95);
    let (slo, shi) = ratio_ci(&swapped, 1000, 11, 0.95);
    assert!((lo + shi).abs() < 1e-12 && (hi + slo).abs() < 1e-12);
}
