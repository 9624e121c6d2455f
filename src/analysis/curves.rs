//! Loss curves over training: one run's results on one filter, and gaps to a baseline run at
//! matched tokens seen. Charts and alert rules both read curves through this module.

/// One scored checkpoint on a curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Checkpoint id in the store.
    pub checkpoint: i64,
    /// Checkpoint name (folder).
    pub name: String,
    /// Training step.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// An annealed (WSD decay) checkpoint rather than a stable one.
    pub anneal: bool,
    /// Mean NLL on the filter.
    pub mean: f64,
    /// Lower end of the 95% CI.
    pub ci_lo: f64,
    /// Upper end of the 95% CI.
    pub ci_hi: f64,
}

/// One run's results on one filter, ordered by tokens seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Run name.
    pub run: String,
    /// Architecture label (transformer, hybrid, rnn, …).
    pub arch: String,
    /// Evalset id in the store.
    pub evalset_id: i64,
    /// Evalset name.
    pub evalset: String,
    /// Filter name.
    pub filter: String,
    /// The run this one is compared with, if any.
    pub baseline: Option<String>,
    /// Points by increasing tokens.
    pub points: Vec<Point>,
}

impl Curve {
    /// The curve's value at `tokens` by linear interpolation in log-tokens over its stable
    /// (`anneal == false`) or its annealed points; `None` outside their range (never
    /// extrapolated).
    pub fn at(&self, tokens: u64, anneal: bool) -> Option<f64> {
        interpolate_log_x(&self.points, tokens, anneal)
    }

    /// Only the annealed points.
    pub fn annealed(&self) -> impl Iterator<Item = &Point> {
        self.points.iter().filter(|p| p.anneal)
    }
}

fn interpolate_log_x(points: &[Point], tokens: u64, anneal: bool) -> Option<f64> {
    let usable: Vec<&Point> = points
        .iter()
        .filter(|p| p.anneal == anneal && p.tokens > 0 && p.mean.is_finite())
        .collect();
    let x = (tokens as f64).ln();
    let i = usable.partition_point(|p| p.tokens < tokens);
    let hit = usable.get(i)?;
    if hit.tokens == tokens {
        return Some(hit.mean);
    }
    let before = usable.get(i.checked_sub(1)?)?;
    let (x0, x1) = ((before.tokens as f64).ln(), (hit.tokens as f64).ln());
    Some(before.mean + (hit.mean - before.mean) * (x - x0) / (x1 - x0))
}

/// `run − baseline` at each of the run's points where the baseline can be interpolated. A
/// stable point is matched against the baseline's stable points and an annealed one against
/// its annealed points: an annealed checkpoint sits below the stable curve by the decay's
/// gain, which is not an architecture difference.
pub fn gap(run: &Curve, baseline: &Curve) -> Vec<(Point, f64)> {
    run.points
        .iter()
        .filter_map(|p| {
            baseline
                .at(p.tokens, p.anneal)
                .map(|b| (p.clone(), p.mean - b))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A curve with the given (tokens, mean, anneal) points.
    pub(crate) fn curve(run: &str, baseline: Option<&str>, pts: &[(u64, f64, bool)]) -> Curve {
        Curve {
            run: run.into(),
            arch: "transformer".into(),
            evalset_id: 1,
            evalset: "default".into(),
            filter: "all".into(),
            baseline: baseline.map(str::to_owned),
            points: pts
                .iter()
                .enumerate()
                .map(|(i, &(tokens, mean, anneal))| Point {
                    checkpoint: i as i64 + 1,
                    name: format!("step{}", tokens / 1000),
                    step: tokens / 1000,
                    tokens,
                    anneal,
                    mean,
                    ci_lo: mean - 0.01,
                    ci_hi: mean + 0.01,
                })
                .collect(),
        }
    }

    #[test]
    fn interpolates_linearly_in_log_tokens() {
        let c = curve("b", None, &[(1000, 4.0, false), (100_000, 2.0, false)]);
        // 10,000 is halfway between 1,000 and 100,000 in log space.
        assert!((c.at(10_000, false).expect("inside") - 3.0).abs() < 1e-12);
        assert_eq!(c.at(1000, false), Some(4.0));
        assert_eq!(c.at(100_000, false), Some(2.0));
        assert_eq!(c.at(999, false), None, "no extrapolation below");
        assert_eq!(c.at(100_001, false), None, "no extrapolation above");
        assert_eq!(c.at(10_000, true), None, "no annealed points");
    }

    #[test]
    fn gap_is_run_minus_baseline_where_matched_kind_with_kind() {
        let base = curve(
            "b",
            None,
            &[
                (1000, 4.0, false),
                (100_000, 2.0, false),
                (1000, 3.8, true),
                (100_000, 1.8, true),
            ],
        );
        let run = curve(
            "r",
            Some("b"),
            &[
                (500, 5.0, false),
                (10_000, 3.25, false),
                (10_000, 2.85, true),
            ],
        );
        let g = gap(&run, &base);
        assert_eq!(g.len(), 2);
        assert!((g[0].1 - 0.25).abs() < 1e-12, "stable vs stable");
        assert!((g[1].1 - 0.05).abs() < 1e-12, "annealed vs annealed");
    }
}
