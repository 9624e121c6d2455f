//! Filter expressions (DESIGN §5): named boolean expressions over token labels.
//!
//! # Language
//!
//! ```text
//! expr    := or
//! or      := and ('|' and)*
//! and     := unary ('&' unary)*
//! unary   := '!' unary | primary
//! primary := '(' expr ')' | 'true' | 'false'
//!          | LABEL                         -- boolean labels only
//!          | LABEL CMP value
//!          | LABEL 'in' '{' value (',' value)* [','] '}'
//! CMP     := '==' | '!=' | '<' | '<=' | '>' | '>='
//! value   := NUMBER | STRING | IDENT | 'true' | 'false'
//! ```
//!
//! Precedence: `!` binds tighter than `&`, which binds tighter than `|`. A comparison
//! is a primary, so `!repeat_len == 0` means `!(repeat_len == 0)`.
//!
//! | label | type | operators | values |
//! |---|---|---|---|
//! | `content` `function` `open_bracket` `close_bracket` `word_initial` | boolean | bare, `==`, `!=`, `in` | `true`, `false` |
//! | `repeat_len` `copy_distance` `pos` `log_freq` | number | all six, `in` | numbers (`3`, `-1.5`, `2e-3`) |
//! | `upos` | UPOS tag | `==`, `!=`, `in` | `ADJ`, `"PROPN"` (case-insensitive) |
//! | `tag` | PTB tag | `==`, `!=`, `in` | `NN`, `"PRP$"`, `","` (exact; quote tags that are not identifiers) |
//! | `domain` | domain name | `==`, `!=`, `in` | `"python"` or `python` |
//! | `probe_gap` `probe_offset` | number | all six, `in` | numbers |
//! | `probe_occurrence` | planted copy | `==`, `!=`, `in` | `first`, `second`, `none` |
//!
//! The probe labels describe evalsets made by `filtermon probe`. `probe_gap` is the window's
//! gap and `probe_offset` the offset within a planted span; a token without the value (every
//! token of a document evalset, and filler tokens for `probe_offset`) fails every comparison
//! on it, `!=` included, as SQL's NULL does. `probe_occurrence` is `none` for such tokens.
//!
//! Everything is type-checked when the filter is compiled: `upos == 3`,
//! `repeat_len == "x"`, `upos < ADJ` and unknown tag names are errors that name
//! the column. A domain that is not in the evalset is not an error: it matches no
//! token.
//!
//! Every [`Filter`] keeps a canonical rendering of its source (single spaces
//! around operators, only the parentheses precedence needs), so that stored results
//! record exactly what was measured.

mod ast;
mod eval;
mod lex;
mod parse;
mod render;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use toml::Spanned;

use crate::error::{input_error, line_of};
use crate::evalset::labels::TokenLabels;
use eval::{lower, Node};
use parse::parse;
use render::render;

/// The built-in filters as `(name, expression)`, in display order.
pub fn builtin_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        ("all", "true"),
        ("content", "content"),
        ("function", "function"),
        ("content_nocopy", "content & repeat_len == 0"),
        ("copy5", "repeat_len >= 5"),
        ("open_bracket", "open_bracket"),
        ("close_bracket", "close_bracket"),
    ]
}

/// A compiled, named filter.
#[derive(Debug, Clone)]
pub struct Filter {
    name: String,
    source: String,
    node: Node,
}

impl Filter {
    /// Parses, type-checks and compiles `expr` against the evalset's domain table
    /// (`TokenLabels::domain` indexes `domains`).
    ///
    /// # Errors
    ///
    /// An [`InputError`](crate::error::InputError) for a bad name, a syntax error or
    /// a type error; the message names the column, e.g.
    /// `filter 'content & repeat_len = 0': column 22: expected comparison operator, found '='`.
    pub fn compile(name: &str, expr: &str, domains: &[String]) -> Result<Filter> {
        check_name(name)?;
        let ast = parse(expr)?;
        let mut source = String::new();
        render(&ast, 0, &mut source);
        Ok(Filter {
            name: name.to_string(),
            source,
            node: lower(&ast, domains),
        })
    }

    /// The filter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The canonical text of the expression; compiling it again gives the same filter.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether a token passes the filter.
    pub fn matches(&self, t: &TokenLabels) -> bool {
        self.node.eval(t)
    }
}

/// Compiles the built-ins followed by `user` filters (e.g. from
/// [`load_filter_file`]), rejecting names used twice.
pub fn compile_filters(user: &[(String, String)], domains: &[String]) -> Result<Vec<Filter>> {
    let mut out: Vec<Filter> = Vec::new();
    let builtins = builtin_filters()
        .into_iter()
        .map(|(n, e)| (n.to_string(), e.to_string()));
    for (name, expr) in builtins.chain(user.iter().cloned()) {
        if out.iter().any(|f| f.name == name) {
            crate::bail_input!(
                "filter `{name}` is defined twice (built-in filters: {})",
                builtin_names()
            );
        }
        out.push(Filter::compile(&name, &expr, domains)?);
    }
    Ok(out)
}

/// Reads a TOML filter file:
///
/// ```toml
/// [filters]
/// adj_adv_nocopy = "upos in {ADJ, ADV} & repeat_len == 0"
/// python_close = 'domain == "python" & close_bracket'
/// ```
///
/// Returns `(name, expression)` pairs sorted by name. Every expression is checked
/// here, so mistakes surface with the file, line and key.
///
/// # Errors
///
/// [`InputError`](crate::error::InputError)s naming the file (and line and key): unreadable
/// file, invalid TOML, keys other than `filters`, a value that is not a string, a
/// name of a built-in filter, or an expression that does not compile.
pub fn load_filter_file(path: &Path) -> Result<Vec<(String, String)>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("{shown}: cannot read filter file: {e}")))?;
    let at = |span: Option<std::ops::Range<usize>>| match span {
        Some(s) => format!("{shown}:{}", line_of(&text, s.start)),
        None => shown.clone(),
    };
    let invalid = |e: toml::de::Error| {
        input_error(format!("{}: invalid TOML: {}", at(e.span()), e.message()))
    };
    let doc: BTreeMap<Spanned<String>, toml::Value> = toml::from_str(&text).map_err(invalid)?;
    if let Some(other) = doc.keys().find(|k| k.get_ref() != "filters") {
        crate::bail_input!(
            "{}: unknown key `{}` (a filter file has only a [filters] table)",
            at(Some(other.span())),
            other.get_ref()
        );
    }
    let Some((key, table)) = doc.iter().next() else {
        crate::bail_input!("{shown}: no [filters] table");
    };
    if !table.is_table() {
        crate::bail_input!(
            "{}: `filters` must be a table of name = \"expression\"",
            at(Some(key.span()))
        );
    }
    // Read again with the span of every entry, which `toml::Value` does not keep.
    #[derive(serde::Deserialize)]
    struct Entries {
        filters: SpannedFilters,
    }
    let entries: Entries = toml::from_str(&text).map_err(invalid)?;
    filters_from_spanned(&entries.filters, &text, &shown)
}

/// A `[filters]` table as read with the byte range of every name and value in its file, so
/// that errors can name the line.
pub type SpannedFilters = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// Reads a `[filters]` table (from a filter file or a watch config) into sorted
/// `(name, expression)` pairs; `origin` (e.g. the file name) prefixes errors.
pub fn filters_from_toml(table: &toml::Value, origin: &str) -> Result<Vec<(String, String)>> {
    let Some(table) = table.as_table() else {
        crate::bail_input!("{origin}: `filters` must be a table of name = \"expression\"");
    };
    let mut out = table
        .iter()
        .map(|(name, value)| filter_entry(name, value, origin))
        .collect::<Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

/// [`filters_from_toml`] for a table read with spans from `text`, the contents of the file
/// `origin`: errors name the line, `origin:LINE: filters.NAME: …`.
pub fn filters_from_spanned(
    table: &SpannedFilters,
    text: &str,
    origin: &str,
) -> Result<Vec<(String, String)>> {
    let mut out = table
        .iter()
        .map(|(name, value)| {
            let at = format!("{origin}:{}", line_of(text, value.span().start));
            filter_entry(name.get_ref(), value.get_ref(), &at)
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

/// Checks one `name = "expression"` entry; `at` (`file` or `file:line`) prefixes errors.
fn filter_entry(name: &str, value: &toml::Value, at: &str) -> Result<(String, String)> {
    let Some(expr) = value.as_str() else {
        crate::bail_input!(
            "{at}: filters.{name}: expected a string expression, found {}",
            value.type_str()
        );
    };
    if builtin_filters().iter().any(|(b, _)| *b == name) {
        crate::bail_input!(
            "{at}: filters.{name}: `{name}` is a built-in filter; choose another name"
        );
    }
    Filter::compile(name, expr, &[]).with_context(|| format!("{at}: filters.{name}"))?;
    Ok((name.to_string(), expr.to_string()))
}

fn builtin_names() -> String {
    builtin_filters()
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if !ok {
        // Names end up in file names of charts and in SQL rows, where '.' and '@' mark the
        // recall metrics stored beside filter results (`recall.gain@64`).
        crate::bail_input!(
            "filter name `{name}`: use ASCII letters, digits, '_' or '-' ('.' and '@' are reserved for recall metrics such as recall.gain@64)"
        );
    }
    Ok(())
}
