//! `filtermon migrate`: copies an SQLite store into an empty one and prints each table's row
//! counts on both sides.

use std::io::Write as _;

use crate::commands::cli::MigrateArgs;
use crate::store::migrate::copy;

/// Runs the command.
pub fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let counts = copy(&args.from, &args.to)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<16} {:>10} {:>10}", "table", "source", "target")?;
    for c in &counts {
        writeln!(out, "{:<16} {:>10} {:>10}", c.table, c.source, c.target)?;
    }
    let differ: Vec<&str> = counts
        .iter()
        .filter(|c| c.source != c.target)
        .map(|c| c.table)
        .collect();
    if !differ.is_empty() {
        anyhow::bail!("row counts differ after the copy in {}", differ.join(", "));
    }
    writeln!(
        out,
        "copied {} into {}; every table's rows match",
        args.from, args.to
    )?;
    Ok(())
}
