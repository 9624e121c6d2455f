//! `filtermon export`: every stored result, one row per (run, checkpoint, evalset, filter);
//! with `--detect`, the detection table; with `--format tensorboard`, the results as
//! TensorBoard scalars ([`crate::monitor::tensorboard`]).

use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::analysis::detection::{Detection, Lead};
use crate::commands::cli::{ExportArgs, ExportFormat};
use crate::monitor::tensorboard;
use crate::store::report::ResultRecord;
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

fn csv_line(r: &ResultRecord) -> String {
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

/// The exported columns of `--detect`, in order.
pub const DETECT_COLUMNS: [&str; 9] = [
    "run",
    "baseline",
    "evalset",
    "filter",
    "kind",
    "primary",
    "checkpoints",
    "first_detected",
    "lead",
];

/// One exported detection: `first_detected` null when never detected; `lead` in tokens, the
/// string `all_never` when `all` never detected, null when the filter never did.
#[derive(Debug, Serialize)]
struct DetectRecord<'a> {
    run: &'a str,
    baseline: &'a str,
    evalset: &'a str,
    filter: &'a str,
    kind: &'a str,
    primary: bool,
    checkpoints: usize,
    first_detected: Option<u64>,
    lead: serde_json::Value,
}

impl<'a> From<&'a Detection> for DetectRecord<'a> {
    fn from(d: &'a Detection) -> Self {
        DetectRecord {
            run: &d.run,
            baseline: &d.baseline,
            evalset: &d.evalset,
            filter: &d.filter,
            kind: if d.anneal { "anneal" } else { "stable" },
            primary: d.primary,
            checkpoints: d.checkpoints,
            first_detected: d.first_detected,
            lead: match d.lead {
                Lead::Tokens(t) => t.into(),
                Lead::AllNeverDetected => "all_never".into(),
                Lead::NotDetected => serde_json::Value::Null,
            },
        }
    }
}

fn detect_csv_line(r: &DetectRecord) -> String {
    let lead = match &r.lead {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    [
        csv_field(r.run),
        csv_field(r.baseline),
        csv_field(r.evalset),
        csv_field(r.filter),
        r.kind.to_string(),
        r.primary.to_string(),
        r.checkpoints.to_string(),
        r.first_detected.map(|t| t.to_string()).unwrap_or_default(),
        lead,
    ]
    .join(",")
}

/// Writes one record per line to stdout: CSV under a header, or JSON objects.
fn write_records<R: Serialize>(
    csv: bool,
    header: &[&str],
    records: impl Iterator<Item = R>,
    csv_line: impl Fn(&R) -> String,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    if csv {
        writeln!(out, "{}", header.join(","))?;
    }
    for rec in records {
        if csv {
            writeln!(out, "{}", csv_line(&rec))?;
        } else {
            serde_json::to_writer(&mut out, &rec)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs the command.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    if args.format == ExportFormat::Tensorboard {
        let Some(out) = &args.out else {
            crate::bail_input!(
                "--format tensorboard needs --out DIR, the folder of the event files"
            );
        };
        return to_tensorboard(args, out);
    }
    if args.out.is_some() {
        crate::bail_input!("--out is only for --format tensorboard: csv and jsonl go to stdout");
    }
    if args.x.is_some() {
        crate::bail_input!("--x is only for --format tensorboard");
    }
    let csv = args.format == ExportFormat::Csv;
    let store = Store::open_existing(&args.db)?;
    if args.detect {
        let detections = store.detections()?;
        let records = detections
            .iter()
            .filter(|d| args.run.as_deref().is_none_or(|r| r == d.run))
            .map(DetectRecord::from);
        return write_records(csv, &DETECT_COLUMNS, records, detect_csv_line);
    }
    let rows = store.results(args.run.as_deref())?;
    write_records(csv, &COLUMNS, rows.iter().map(ResultRecord::from), csv_line)
}

/// Writes the results as event files under `out` and prints each file's path.
fn to_tensorboard(args: &ExportArgs, out: &Path) -> anyhow::Result<()> {
    if args.detect {
        crate::bail_input!("--detect exports a table: use --format csv or jsonl");
    }
    let store = Store::open_existing(&args.db)?;
    let rows = store.results(args.run.as_deref())?;
    let files = tensorboard::export(&rows, out, args.x.unwrap_or_default())?;
    if files.is_empty() {
        tracing::warn!("no result with a mean to export");
    }
    let mut stdout = std::io::stdout().lock();
    for f in files {
        writeln!(stdout, "{}", f.display())?;
    }
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
