//! `filtermon prepare`: build an evalset and report tokens per domain × filter.

use std::io::Write;

use crate::analysis::stats::MIN_STABLE_TOKENS;
use crate::commands::cli::PrepareArgs;
use crate::evalset::filter::{compile_filters, load_filter_file, Filter};
use crate::evalset::prepare::{prepare, PrepareOptions};
use crate::evalset::reader::ReaderOptions;
use crate::evalset::EvalSet;

/// Runs the command.
pub fn run(args: &PrepareArgs) -> anyhow::Result<()> {
    let user = match &args.filters {
        Some(p) => load_filter_file(p)?,
        None => Vec::new(),
    };
    let opts = PrepareOptions {
        inputs: args.input.clone(),
        tokenizer: args.tokenizer.clone(),
        out: args.out.clone(),
        window: args.window,
        reader: ReaderOptions {
            text_field: args.text_field.clone(),
            id_field: args.id_field.clone(),
            domain_field: args.domain_field.clone(),
            default_domain: args.domain.clone(),
            skip_bad: args.skip_bad,
        },
    };
    let prepared = prepare(&opts)?;
    let es = &prepared.evalset;
    let filters = compile_filters(&user, es.domains())?;
    let h = es.header();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "evalset {} in {}: {} documents, {} windows, {} tokens (tokenizer {})",
        es.id(),
        es.dir().display(),
        h.docs.len(),
        h.windows.len(),
        h.tokens,
        es.tokenizer_hash()
    )?;
    if prepared.skipped > 0 {
        writeln!(out, "skipped {} malformed lines or files", prepared.skipped)?;
    }
    print_counts(&mut out, es, &filters)?;
    Ok(())
}

/// Prints scored tokens (pos ≥ 1) per domain × filter; warns where a count is too small.
pub fn print_counts(out: &mut impl Write, es: &EvalSet, filters: &[Filter]) -> anyhow::Result<()> {
    let domains = es.domains();
    let counts = es.filter_counts(filters)?;
    write!(out, "{:<16}", "filter")?;
    for d in domains {
        write!(out, " {d:>10}")?;
    }
    writeln!(out, " {:>10}", "total")?;
    for (f, row) in filters.iter().zip(&counts) {
        write!(out, "{:<16}", f.name())?;
        for c in row {
            write!(out, " {c:>10}")?;
        }
        writeln!(out, " {:>10}", row.iter().sum::<usize>())?;
    }
    for (f, row) in filters.iter().zip(&counts) {
        for (d, &c) in domains.iter().zip(row) {
            if c < MIN_STABLE_TOKENS {
                tracing::warn!(
                    "filter {} has {c} tokens in domain {d}: fewer than {MIN_STABLE_TOKENS}, too few for a stable estimate",
                    f.name()
                );
            }
        }
    }
    Ok(())
}
