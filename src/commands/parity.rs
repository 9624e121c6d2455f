//! `filtermon parity`: checks this build, on this device, against the transformers references
//! shipped with the test fixtures (or any folder holding a `reference.json`).

use std::io::Write as _;

use crate::commands::cli::ParityArgs;
use crate::engine::device;
use crate::engine::device::DTypeArg;
use crate::engine::parity::check;
use crate::error::input_error;

/// Runs the command: one line per fixture; fails when any fixture is beyond its tolerance.
pub fn run(args: &ParityArgs) -> anyhow::Result<()> {
    let device = device::parse(&args.device)?;
    let tolerance = args.tolerance.unwrap_or(match args.dtype {
        DTypeArg::F32 => 1e-4,
        DTypeArg::Bf16 | DTypeArg::F16 => 0.05,
    });
    if args.dtype == DTypeArg::F16 {
        return Err(input_error(
            "parity: the references hold f32 and bf16 losses, not f16",
        ));
    }
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for dir in &args.fixtures {
        let a = check(dir, args.dtype.dtype(), &device, None)?;
        // Top-k ranks are compared only in f32, where ties cannot come from rounding.
        let pass = a.max_abs <= tolerance && a.flips == 0;
        failed += usize::from(!pass);
        if args.json {
            let mut row = serde_json::to_value(&a)?;
            row["tolerance"] = serde_json::json!(tolerance);
            row["pass"] = serde_json::json!(pass);
            writeln!(out, "{row}")?;
        } else {
            writeln!(
                out,
                "{} {:<5} {:<6} max |dNLL| {:.2e}  mean {:.2e}  top-k flips {}  {} tokens  {}",
                if pass { "ok  " } else { "FAIL" },
                a.dtype,
                a.path,
                a.max_abs,
                a.mean_abs,
                a.flips,
                a.tokens,
                a.fixture.display()
            )?;
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} fixtures beyond max |dNLL| {tolerance:e}",
            args.fixtures.len()
        );
    }
    Ok(())
}
