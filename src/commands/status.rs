//! `filtermon status`: runs, checkpoints by state, latest results, failures.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::analysis::detection::table;
use crate::analysis::recall::RecallRow;
use crate::commands::cli::StatusArgs;
use crate::error::input_error;
use crate::monitor::config::WatchConfig;
use crate::store::report::{ResultRow, RunStatus, StatusReport};
use crate::store::Store;

/// Runs the command.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let db = match (&args.config, &args.db) {
        (Some(c), None) => WatchConfig::load(c)?.db,
        (None, Some(d)) => d.clone(),
        _ => return Err(input_error("give exactly one of --config and --db")),
    };
    let store = Store::open_existing(&db)?;
    let mut out = std::io::stdout().lock();
    if args.detect {
        let detections = store.detections()?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&detections)?)?;
        } else if detections.is_empty() {
            writeln!(out, "no run with a baseline has paired gaps yet")?;
        } else {
            out.write_all(table(&detections).as_bytes())?;
        }
        out.flush()?;
        return Ok(());
    }
    let report = store.status()?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        out.write_all(render(&report, args.recall).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// Whether a row is printed: filters always; of the recall rows, the headline ones (retrieval
/// gains, COPY-5 miss rate) by default, the rest (cliff bins, copy-n) with `--recall`, and
/// empty ones never.
fn shown(r: &ResultRow, all_recall: bool) -> bool {
    let headline = match RecallRow::parse(&r.filter) {
        None => return true,
        Some(row) => matches!(row, RecallRow::Gain(_) | RecallRow::Copy5Miss),
    };
    r.n > 0 && (all_recall || headline)
}

fn render_run(out: &mut String, run: &RunStatus, all_recall: bool) -> std::fmt::Result {
    let baseline = run
        .baseline
        .as_ref()
        .map(|b| format!(", baseline {b}"))
        .unwrap_or_default();
    let waiting = if run.waiting_for_folder {
        " (waiting for its folder)"
    } else {
        ""
    };
    writeln!(
        out,
        "run {} ({}{baseline}): {}{waiting}",
        run.name, run.arch, run.dir
    )?;
    let c = &run.checkpoints;
    writeln!(
        out,
        "  checkpoints: {} done, {} queued, {} running, {} failed",
        c.done, c.queued, c.running, c.failed
    )?;
    let mut last: Option<(&str, &str)> = None;
    let mut hidden = 0;
    for r in &run.latest {
        if last != Some((&r.checkpoint, &r.evalset)) {
            render_hidden(out, &mut hidden)?;
            render_heading(out, r)?;
            last = Some((&r.checkpoint, &r.evalset));
        }
        if !shown(r, all_recall) {
            hidden += usize::from(r.n > 0);
            continue;
        }
        let ci = format!("[{}, {}]", opt(r.ci_lo, 4), opt(r.ci_hi, 4));
        writeln!(
            out,
            "    {:<22} {:>8} {:>9} {:<20} {:>6} {:>6}",
            r.filter,
            opt(r.mean, 4),
            r.n,
            ci,
            opt(r.top1, 3),
            opt(r.top5, 3)
        )?;
    }
    render_hidden(out, &mut hidden)
}

/// Says how many recall rows were left out, and resets the count.
fn render_hidden(out: &mut String, hidden: &mut usize) -> std::fmt::Result {
    if *hidden > 0 {
        writeln!(
            out,
            "    ({hidden} more recall rows, COPY-5 by copy distance and copy-n: --recall)"
        )?;
    }
    *hidden = 0;
    Ok(())
}

fn render_heading(out: &mut String, r: &ResultRow) -> std::fmt::Result {
    writeln!(
        out,
        "  latest on {}: {} (step {}, {} tokens, {})",
        r.evalset, r.checkpoint, r.step, r.tokens, r.kind
    )?;
    writeln!(
        out,
        "    {:<22} {:>8} {:>9} {:<20} {:>6} {:>6}",
        "filter", "mean", "n", "95% CI", "top1", "top5"
    )
}

fn render(report: &StatusReport, all_recall: bool) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = (|| -> std::fmt::Result {
        if report.runs.is_empty() {
            writeln!(out, "no runs yet")?;
        }
        for run in &report.runs {
            render_run(&mut out, run, all_recall)?;
        }
        if !report.failures.is_empty() {
            writeln!(out, "failures:")?;
        }
        for f in &report.failures {
            let what = if f.state == "failed" {
                "failed for good"
            } else {
                "will retry"
            };
            // Lost leases are no fault of the checkpoint, so they are shown apart.
            let lost = if f.lost_leases > 0 {
                format!(" and {} lost lease(s)", f.lost_leases)
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {}/{} on {}: {what} after {} attempt(s){lost}: {}",
                f.run, f.checkpoint, f.evalset, f.attempts, f.error
            )?;
        }
        Ok(())
    })();
    out
}

#[cfg(test)]
mod tests {
    use super::render;
    use crate::store::report::{FailureRow, StatusReport};

    #[test]
    fn failures_show_attempts_and_lost_leases_apart() {
        let row = |state: &str, attempts, lost_leases, error: &str| FailureRow {
            run: "a".into(),
            checkpoint: "step10".into(),
            evalset: "e".into(),
            state: state.into(),
            attempts,
            lost_leases,
            error: error.into(),
        };
        let report = StatusReport {
            runs: Vec::new(),
            failures: vec![
                row("queued", 0, 3, "the daemon scoring it stopped"),
                row("failed", 2, 0, "boom"),
            ],
        };
        let text = render(&report, false);
        assert!(
            text.contains(
                "a/step10 on e: will retry after 0 attempt(s) and 3 lost lease(s): \
                 the daemon scoring it stopped"
            ),
            "{text}"
        );
        assert!(
            text.contains("a/step10 on e: failed for good after 2 attempt(s): boom"),
            "{text}"
        );
        let json = serde_json::to_value(&report.failures[0]).expect("json");
        assert_eq!(
            (json["attempts"].as_u64(), json["lost_leases"].as_u64()),
            (Some(0), Some(3))
        );
    }
}
