//! `metrics.json` and the printed decision table.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::analysis::compare::categories::{CategoryResult, Verdict};
use crate::analysis::compare::derive::DerivedFilter;
use crate::analysis::compare::{CompareOptions, Comparison};
use crate::analysis::stats::mcnemar::EXACT_BELOW;
use crate::analysis::stats::MIN_STABLE_TOKENS;
use crate::evalset::categories::Kind;

/// Version tag of the `metrics.json` layout.
pub const SCHEMA: &str = "filtermon.compare/1";

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// Display name.
    pub name: String,
    /// Where the scores came from (checkpoint folder).
    pub source: String,
}

/// The evalset compared on.
#[derive(Debug, Clone, Serialize)]
pub struct EvalsetInfo {
    /// Content hash.
    pub id: String,
    /// Folder.
    pub dir: String,
    /// Tokenizer hash shared by the evalset and both checkpoints.
    pub tokenizer_hash: String,
}

/// One bin of a gap curve.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    /// Bin label, e.g. `5-7`.
    pub bin: String,
    /// Tokens.
    pub n: usize,
    /// Mean gap.
    pub gap: f64,
    /// 95% interval, lower end.
    pub gap_ci_lo: f64,
    /// Upper end.
    pub gap_ci_hi: f64,
}

#[derive(Serialize)]
struct Curves {
    repeat_len: Vec<CurvePoint>,
    copy_distance: Vec<CurvePoint>,
}

#[derive(Serialize)]
struct Bootstrap {
    unit: &'static str,
    resamples: usize,
    seed: u64,
    level: f64,
}

#[derive(Serialize)]
struct DerivedOut<'a> {
    name: &'a str,
    expression: &'a str,
    picked: &'a [String],
    file: String,
}

#[derive(Serialize)]
struct Metrics<'a> {
    schema: &'static str,
    a: &'a Side,
    b: &'a Side,
    evalset: &'a EvalsetInfo,
    tokens: usize,
    documents: usize,
    bootstrap: Bootstrap,
    mcnemar_exact_below: u64,
    min_stable_tokens: usize,
    categories: &'a [CategoryResult],
    regression: &'a crate::analysis::compare::regression::Regression,
    curves: Curves,
    warnings: Vec<String>,
    derived_filter: Option<DerivedOut<'a>>,
}

/// A gap curve: the bins of one kind.
pub fn curve(c: &Comparison, kind: Kind) -> Vec<CurvePoint> {
    c.of_kind(kind)
        .map(|r| CurvePoint {
            bin: r
                .name
                .split_once('=')
                .map_or(r.name.clone(), |(_, v)| v.to_owned()),
            n: r.n,
            gap: r.gap,
            gap_ci_lo: r.gap_ci_lo,
            gap_ci_hi: r.gap_ci_hi,
        })
        .collect()
}

/// One warning per category with fewer than [`MIN_STABLE_TOKENS`] tokens.
pub fn small_category_warnings(c: &Comparison) -> Vec<String> {
    c.categories
        .iter()
        .filter(|r| r.n < MIN_STABLE_TOKENS)
        .map(|r| {
            format!(
                "category {} has {} tokens: fewer than {MIN_STABLE_TOKENS}, too few for a stable estimate",
                r.name, r.n
            )
        })
        .collect()
}

/// What `metrics.json` records besides the comparison itself.
pub struct RunInfo<'a> {
    /// Model A.
    pub a: &'a Side,
    /// Model B.
    pub b: &'a Side,
    /// The evalset.
    pub evalset: &'a EvalsetInfo,
    /// Bootstrap settings.
    pub opts: CompareOptions,
    /// The derived filter and the file it went to.
    pub derived: Option<(&'a DerivedFilter, &'a Path)>,
}

/// Writes `metrics.json`.
pub fn write_metrics(c: &Comparison, ctx: &RunInfo, path: &Path) -> anyhow::Result<()> {
    let m = Metrics {
        schema: SCHEMA,
        a: ctx.a,
        b: ctx.b,
        evalset: ctx.evalset,
        tokens: c.tokens,
        documents: c.documents,
        bootstrap: Bootstrap {
            unit: "document",
            resamples: ctx.opts.resamples,
            seed: ctx.opts.seed,
            level: 0.95,
        },
        mcnemar_exact_below: EXACT_BELOW,
        min_stable_tokens: MIN_STABLE_TOKENS,
        categories: &c.categories,
        regression: &c.regression,
        curves: Curves {
            repeat_len: curve(c, Kind::RepeatLen),
            copy_distance: curve(c, Kind::CopyDistance),
        },
        warnings: small_category_warnings(c),
        derived_filter: ctx.derived.map(|(d, file)| DerivedOut {
            name: &d.name,
            expression: &d.expression,
            picked: &d.picked,
            file: file.display().to_string(),
        }),
    };
    std::fs::write(path, serde_json::to_string_pretty(&m)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// The decision table: category → better model with the gap's interval, or "no difference".
pub fn decision_table(c: &Comparison, a: &str, b: &str) -> String {
    let mut out = format!(
        "{:<28} {:>8} {:>9} {:>22} {:>8} {:>8} {:>9}  {}\n",
        "category", "tokens", "gap", "95% CI", "top1 A", "top1 B", "McNemar p", "better"
    );
    for r in &c.categories {
        let better = match r.better {
            Verdict::A => a,
            Verdict::B => b,
            Verdict::NoDifference => "no difference",
        };
        out.push_str(&format!(
            "{:<28} {:>8} {:>+9.4} {:>22} {:>8.3} {:>8.3} {:>9.3}  {}\n",
            r.name,
            r.n,
            r.gap,
            format!("[{:+.4}, {:+.4}]", r.gap_ci_lo, r.gap_ci_hi),
            r.top1_a,
            r.top1_b,
            r.mcnemar.p_value,
            better
        ));
    }
    out
}
