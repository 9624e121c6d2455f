//! `filtermon export`: every stored result, one row per (run, checkpoint, evalset, filter).

use std::io::{BufWriter, Write};

use serde::Serialize;

use crate::commands::cli::{ExportArgs, ExportFormat};
use crate::store::report::{rfc3339, ResultRow};
use crate::store::Store;

/// The exported columns, in order.
pub const COLUMNS: [&str; 18] = [
    "run",
    "arch",
    "step",
    "tokens",
    "kind",
    "checkpoint",
    "evalset",
    "filter",
    "mean",
    "n",
    "ci_lo",
    "ci_hi",
    "top1",
    "top5",
    "scored_at",
    "gap",
    "gap_ci_lo",
    "gap_ci_hi",
];

/// One exported row; `scored_at` as RFC 3339 UTC, undefined numbers as null (`gap` where
/// the baseline has no checkpoint of the same kind at the same tokens, or the run none).
#[derive(Debug, Serialize)]
struct Record<'a> {
    run: &'a str,
    arch: &'a str,
    step: u64,
    tokens: u64,
    kind: &'a str,
    checkpoint: &'a str,
    evalset: &'a str,
    filter: &'a str,
    mean: Option<f64>,
    n: u64,
    ci_lo: Option<f64>,
    ci_hi: Option<f64>,
    top1: Option<f64>,
    top5: Option<f64>,
    scored_at: String,
    gap: Option<f64>,
    gap_ci_lo: Option<f64>,
    gap_ci_hi: Option<f64>,
}

impl<'a> From<&'a ResultRow> for Record<'a> {
    fn from(r: &'a ResultRow) -> Self {
        Record {
            run: &r.run,
            arch: &r.arch,
            step: r.step,
            tokens: r.tokens,
            kind: &r.kind,
            checkpoint: &r.checkpoint,
            evalset: &r.evalset,
            filter: &r.filter,
            mean: r.mean,
            n: r.n,
            ci_lo: r.ci_lo,
            ci_hi: r.ci_hi,
            top1: r.top1,
            top5: r.top5,
            scored_at: rfc3339(r.scored_at),
            gap: r.gap,
            gap_ci_lo: r.gap_ci_lo,
            gap_ci_hi: r.gap_ci_hi,
        }
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

fn csv_line(r: &Record) -> String {
    let fields = [
        csv_field(r.run),
        csv_field(r.arch),
        r.step.to_string(),
        r.tokens.to_string(),
        csv_field(r.kind),
        csv_field(r.checkpoint),
        csv_field(r.evalset),
        csv_field(r.filter),
        num(r.mean),
        r.n.to_string(),
        num(r.ci_lo),
        num(r.ci_hi),
        num(r.top1),
        num(r.top5),
        r.scored_at.clone(),
        num(r.gap),
        num(r.gap_ci_lo),
        num(r.gap_ci_hi),
    ];
    fields.join(",")
}

/// Runs the command.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.db)?;
    let rows = store.results(args.run.as_deref())?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.format == ExportFormat::Csv {
        writeln!(out, "{}", COLUMNS.join(","))?;
    }
    for row in &rows {
        let rec = Record::from(row);
        match args.format {
            ExportFormat::Csv => writeln!(out, "{}", csv_line(&rec))?,
            ExportFormat::Jsonl => {
                serde_json::to_writer(&mut out, &rec)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
