//! `filtermon alerts`: list stored alerts, or acknowledge one.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::commands::cli::AlertsArgs;
use crate::store::alerts::AlertRow;
use crate::store::Store;

/// Runs the command.
pub fn run(args: &AlertsArgs) -> anyhow::Result<()> {
    let mut store = Store::open_existing(&args.db)?;
    let mut out = std::io::stdout().lock();
    if let Some(id) = args.ack {
        store.ack_alert(id)?;
        writeln!(out, "alert {id} acknowledged")?;
        return Ok(());
    }
    let alerts = store.alerts()?;
    if args.json {
        for a in &alerts {
            writeln!(out, "{}", serde_json::to_string(a)?)?;
        }
    } else {
        out.write_all(render(&alerts)?.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn render(alerts: &[AlertRow]) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    if alerts.is_empty() {
        out.push_str("no alerts\n");
        return Ok(out);
    }
    writeln!(
        out,
        "{:>5}  {:<24}  {:<4}  {:<14}  {:<12}  {:<16}  {:<20}  message",
        "id", "fired", "ack", "rule", "run", "filter", "checkpoint"
    )?;
    for a in alerts {
        let f = &a.firing;
        writeln!(
            out,
            "{:>5}  {:<24}  {:<4}  {:<14}  {:<12}  {:<16}  {:<20}  {}",
            a.id,
            a.fired_at,
            if a.acked_at.is_some() { "yes" } else { "no" },
            f.rule,
            f.run,
            f.filter,
            f.checkpoint,
            f.message
        )?;
    }
    Ok(out)
}
