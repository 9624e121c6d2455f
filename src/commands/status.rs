//! `filtermon status`: runs, checkpoints by state, latest results, failures.

use std::fmt::Write as _;

use crate::cli::StatusArgs;
use crate::config::WatchConfig;
use crate::error::input_error;
use crate::store::report::{ResultRow, RunStatus, StatusReport};
use crate::store::Store;

/// Runs the command.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let db = match (&args.config, &args.db) {
        (Some(c), None) => WatchConfig::load(c)?.db,
        (None, Some(d)) => d.clone(),
        _ => return Err(input_error("give exactly one of --config and --db")),
    };
    let report = Store::open_existing(&db)?.status()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn render_run(out: &mut String, run: &RunStatus) -> std::fmt::Result {
    let baseline = run
        .baseline
        .as_ref()
        .map(|b| format!(", baseline {b}"))
        .unwrap_or_default();
    writeln!(
        out,
        "run {} ({}{baseline}): {}",
        run.name, run.arch, run.dir
    )?;
    let c = &run.checkpoints;
    writeln!(
        out,
        "  checkpoints: {} done, {} queued, {} running, {} failed",
        c.done, c.queued, c.running, c.failed
    )?;
    let mut last: Option<(&str, &str)> = None;
    for r in &run.latest {
        if last != Some((&r.checkpoint, &r.evalset)) {
            render_heading(out, r)?;
            last = Some((&r.checkpoint, &r.evalset));
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

fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = (|| -> std::fmt::Result {
        if report.runs.is_empty() {
            writeln!(out, "no runs yet")?;
        }
        for run in &report.runs {
            render_run(&mut out, run)?;
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
            writeln!(
                out,
                "  {}/{} on {}: {what} after {} attempt(s): {}",
                f.run, f.checkpoint, f.evalset, f.attempts, f.error
            )?;
        }
        Ok(())
    })();
    out
}
