//! The closing table: each run's filtered losses at its latest annealed checkpoint, and the
//! gaps to the baseline run.

use std::fmt::Write as _;

use crate::store::report::ResultRow;

/// One run's latest annealed checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Annealed {
    /// Run name.
    pub run: String,
    /// Checkpoint folder name.
    pub checkpoint: String,
    /// Tokens seen.
    pub tokens: u64,
    /// Its results, filters in the stored order.
    pub results: Vec<ResultRow>,
}

/// The latest annealed checkpoint of each of `runs` (in that order) that has results on
/// `evalset`; `None` for a run without one.
pub fn latest_annealed(rows: &[ResultRow], runs: &[&str], evalset: &str) -> Vec<Option<Annealed>> {
    runs.iter()
        .map(|&run| {
            let mine = || {
                rows.iter()
                    .filter(move |r| r.run == run && r.kind == "anneal" && r.evalset == evalset)
            };
            let last = mine().max_by_key(|r| (r.step, r.checkpoint.clone()))?;
            Some(Annealed {
                run: run.to_string(),
                checkpoint: last.checkpoint.clone(),
                tokens: last.tokens,
                results: mine()
                    .filter(|r| r.checkpoint == last.checkpoint)
                    .cloned()
                    .collect(),
            })
        })
        .collect()
}

/// The table: one line per filter of `filters` (other result rows are left out), with its token
/// count, every run's mean loss, and the gap `run − baseline` of every other run, signed as in
/// the gap charts and the alert rules (positive: the run is worse). `runs[0]` is the baseline.
pub fn table(runs: &[Annealed], filters: &[String]) -> String {
    let Some(base) = runs.first() else {
        return String::new();
    };
    let mut out = format!("{:<16} {:>7}", "filter", "tokens");
    for r in runs {
        let _ = write!(out, " {:>12}", r.run);
    }
    for r in &runs[1..] {
        let _ = write!(out, " {:>16}", format!("gap {}", r.run));
    }
    out.push('\n');
    for filter in filters {
        let row = |r: &Annealed| r.results.iter().find(|x| &x.filter == filter).cloned();
        let Some(base_row) = row(base) else {
            continue;
        };
        let mean = |r: &Annealed| row(r).and_then(|x| x.mean);
        let _ = write!(out, "{:<16} {:>7}", filter, base_row.n);
        for r in runs {
            let _ = write!(out, " {:>12}", shown(mean(r), false));
        }
        for r in &runs[1..] {
            let gap = mean(base).zip(mean(r)).map(|(b, m)| m - b);
            let _ = write!(out, " {:>16}", shown(gap, true));
        }
        out.push('\n');
    }
    out
}

fn shown(v: Option<f64>, signed: bool) -> String {
    match v {
        Some(v) if signed => format!("{v:+.4}"),
        Some(v) => format!("{v:.4}"),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run: &str, checkpoint: &str, step: u64, filter: &str, mean: Option<f64>) -> ResultRow {
        ResultRow {
            run: run.into(),
            arch: run.into(),
            step,
            tokens: step * 10,
            kind: if checkpoint.ends_with("anneal") {
                "anneal"
            } else {
                "stable"
            }
            .into(),
            checkpoint: checkpoint.into(),
            evalset: "demo".into(),
            filter: filter.into(),
            mean,
            n: 600,
            ci_lo: None,
            ci_hi: None,
            top1: None,
            top5: None,
            scored_at: 0.0,
            gap: None,
            gap_ci_lo: None,
            gap_ci_hi: None,
            checkpoint_id: 0,
        }
    }

    #[test]
    fn picks_the_latest_annealed_checkpoint_and_signs_gaps_run_minus_baseline() {
        let rows = vec![
            row("tf", "step10-anneal", 10, "all", Some(5.0)),
            row("tf", "step10-anneal", 10, "copy5", Some(3.0)),
            row("tf", "step20-anneal", 20, "all", Some(4.0)),
            row("tf", "step20-anneal", 20, "copy5", Some(2.0)),
            row("tf", "step30", 30, "all", Some(1.0)),
            row("gdn", "step20-anneal", 20, "all", Some(4.25)),
            row("gdn", "step20-anneal", 20, "copy5", None),
            row("hy", "step8", 8, "all", Some(4.0)),
        ];
        let picked = latest_annealed(&rows, &["tf", "gdn", "hy"], "demo");
        assert_eq!(picked.len(), 3);
        let tf = picked[0].clone().expect("tf");
        assert_eq!((tf.checkpoint.as_str(), tf.tokens), ("step20-anneal", 200));
        assert_eq!(tf.results.len(), 2);
        assert!(picked[2].is_none(), "hy has no annealed checkpoint");
        assert!(latest_annealed(&rows, &["tf"], "other")[0].is_none());

        let gdn = picked[1].clone().expect("gdn");
        let filters = ["all", "copy5", "none"].map(String::from);
        let text = table(&[tf, gdn], &filters);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("gap gdn"));
        let all: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(all, ["all", "600", "4.0000", "4.2500", "+0.2500"]);
        let copy5: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(copy5, ["copy5", "600", "2.0000", "-", "-"]);
    }
}
