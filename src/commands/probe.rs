//! `filtermon probe`: build a planted-repeat probe evalset and report its layout.

use std::io::Write as _;

use crate::commands::cli::ProbeArgs;
use crate::evalset::probe::{parse_gaps, probe, ProbeOptions, ProbeSpec};

/// Runs the command.
pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let gaps = parse_gaps(&args.gaps)?;
    let opts = ProbeOptions {
        tokenizer: args.tokenizer.clone(),
        out: args.out.clone(),
        spec: ProbeSpec {
            span: args.span,
            gaps: gaps.clone(),
            windows: args.windows,
            window: args.window,
            seed: args.seed,
        },
        unigram: args.unigram.clone(),
    };
    let es = probe(&opts)?;
    let h = es.header();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "probe evalset {} in {}: {} windows of {} tokens, span {} (tokenizer {})",
        es.id(),
        es.dir().display(),
        h.windows.len(),
        h.window,
        args.span,
        es.tokenizer_hash()
    )?;
    writeln!(out, "{:>6} {:>8}", "gap", "windows")?;
    for &gap in &gaps {
        let n = es.probe().map_or(0, |p| {
            p.windows.iter().filter(|w| w.gap as usize == gap).count()
        });
        writeln!(out, "{gap:>6} {n:>8}")?;
    }
    Ok(())
}
