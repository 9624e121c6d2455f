//! `--derive-filter K`: the study's TOP-K ∩ NO-COPY filter from a comparison — the K tag
//! categories with the largest gap in B's favour (interval above zero), restricted to tokens
//! whose id is new in the window (`repeat_len == 0`).

use std::fmt::Write as _;

use crate::analysis::compare::categories::{CategoryResult, Verdict};
use crate::analysis::compare::Comparison;
use crate::evalset::categories::Kind;

/// A derived filter.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedFilter {
    /// Filter name, e.g. `top3_nocopy`.
    pub name: String,
    /// The expression.
    pub expression: String,
    /// Names of the chosen categories, best first.
    pub picked: Vec<String>,
}

/// The K categories of `kind` (UPOS or PTB tag) that favour B most; `None` when none does.
pub fn derive(c: &Comparison, k: usize, kind: Kind) -> Option<DerivedFilter> {
    let mut favour_b: Vec<&CategoryResult> =
        c.of_kind(kind).filter(|r| r.better == Verdict::B).collect();
    favour_b.sort_by(|x, y| y.gap.total_cmp(&x.gap));
    favour_b.truncate(k);
    if favour_b.is_empty() {
        return None;
    }
    let prefix = format!("{}=", kind.name());
    let values: Vec<&str> = favour_b
        .iter()
        .map(|r| r.name.strip_prefix(&prefix).unwrap_or(&r.name))
        .collect();
    // Quoted, because PTB tags such as `PRP$` and `''` are not identifiers.
    let set = values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(DerivedFilter {
        name: format!("top{k}_nocopy"),
        expression: format!("{} in {{{set}}} & repeat_len == 0", kind.name()),
        picked: favour_b.iter().map(|r| r.name.clone()).collect(),
    })
}

/// The filter file: a `[filters]` table for a filter file or a watch config, with the
/// evidence as comments.
pub fn render(d: &DerivedFilter, c: &Comparison, a: &str, b: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "# TOP-K ∩ NO-COPY derived by `filtermon compare`: A = {a}, B = {b}"
    )?;
    writeln!(
        out,
        "# categories with the largest gap (A − B) in B's favour:"
    )?;
    for name in &d.picked {
        if let Some(r) = c.categories.iter().find(|r| &r.name == name) {
            writeln!(
                out,
                "#   {name}: gap {:+.4} [{:+.4}, {:+.4}] nats over {} tokens",
                r.gap, r.gap_ci_lo, r.gap_ci_hi, r.n
            )?;
        }
    }
    let mut filters = toml::Table::new();
    filters.insert(d.name.clone(), toml::Value::String(d.expression.clone()));
    let mut doc = toml::Table::new();
    doc.insert("filters".into(), toml::Value::Table(filters));
    out.push_str(&toml::to_string(&doc)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::compare::categories::verdict;
    use crate::analysis::compare::regression::Regression;
    use crate::analysis::stats::mcnemar::mcnemar;
    use crate::evalset::filter::Filter;

    fn row(kind: Kind, name: &str, gap: f64, lo: f64, hi: f64) -> CategoryResult {
        CategoryResult {
            kind,
            name: name.into(),
            definition: None,
            n: 1000,
            documents: 10,
            loss_a: 3.0 + gap,
            loss_b: 3.0,
            gap,
            gap_ci_lo: lo,
            gap_ci_hi: hi,
            top1_a: 0.3,
            top1_b: 0.3,
            top5_a: 0.6,
            top5_b: 0.6,
            only_a_top1: 5,
            only_b_top1: 5,
            mcnemar: mcnemar(5, 5),
            better: verdict(lo, hi),
        }
    }

    fn comparison(rows: Vec<CategoryResult>) -> Comparison {
        Comparison {
            tokens: 1000,
            documents: 10,
            categories: rows,
            regression: Regression {
                reference_upos: "NOUN".into(),
                n: 1000,
                clusters: 10,
                rank: 1,
                r_squared: 0.0,
                terms: Vec::new(),
            },
        }
    }

    #[test]
    fn picks_the_largest_gaps_with_intervals_above_zero() {
        let c = comparison(vec![
            row(Kind::Upos, "upos=ADJ", 0.05, 0.01, 0.09),
            row(Kind::Upos, "upos=ADV", 0.08, 0.02, 0.14),
            row(Kind::Upos, "upos=NOUN", 0.30, -0.1, 0.7), // large but uncertain
            row(Kind::Upos, "upos=VERB", 0.03, 0.005, 0.05),
            row(Kind::Upos, "upos=DET", -0.02, -0.03, -0.01),
            row(Kind::Tag, "tag=JJ", 0.09, 0.05, 0.13),
        ]);
        let d = derive(&c, 2, Kind::Upos).expect("derived");
        assert_eq!(d.picked, ["upos=ADV", "upos=ADJ"]);
        assert_eq!(d.expression, r#"upos in {"ADV", "ADJ"} & repeat_len == 0"#);
        assert_eq!(d.name, "top2_nocopy");
        Filter::compile(&d.name, &d.expression, &[]).expect("the expression compiles");
        let text = render(&d, &c, "olmo3", "hybrid").expect("render");
        let table: toml::Table = text.parse().expect("toml");
        assert_eq!(
            table["filters"]["top2_nocopy"].as_str(),
            Some(d.expression.as_str())
        );
    }

    #[test]
    fn ptb_tags_are_quoted_and_nothing_is_derived_without_evidence() {
        let c = comparison(vec![
            row(Kind::Tag, "tag=PRP$", 0.04, 0.01, 0.07),
            row(Kind::Tag, "tag=''", 0.02, 0.01, 0.03),
            row(Kind::Upos, "upos=ADJ", 0.05, -0.01, 0.09),
        ]);
        let d = derive(&c, 5, Kind::Tag).expect("derived");
        Filter::compile(&d.name, &d.expression, &[]).expect("the expression compiles");
        assert_eq!(d.picked.len(), 2);
        assert!(derive(&c, 3, Kind::Upos).is_none());
    }
}
