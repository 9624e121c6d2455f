//! Canonical rendering of a syntax tree: single spaces around operators and only the
//! parentheses precedence needs.

use std::fmt::Write as _;

use super::ast::{Expr, Lit, Op};
use crate::evalset::tagset::PTB_TAGS;

/// Binding strength: 0 = or, 1 = and, 2 = not, 3 = atom.
fn strength(e: &Expr) -> u8 {
    match e {
        Expr::Or(_) => 0,
        Expr::And(_) => 1,
        Expr::Not(_) => 2,
        _ => 3,
    }
}

pub(super) fn render(e: &Expr, min: u8, out: &mut String) {
    if strength(e) < min {
        out.push('(');
        render(e, 0, out);
        out.push(')');
        return;
    }
    match e {
        Expr::Const(b) => out.push_str(if *b { "true" } else { "false" }),
        Expr::Flag(l) => out.push_str(l.name()),
        Expr::Compare { label, op, values } => {
            let _ = write!(out, "{} {} ", label.name(), op.text());
            if *op == Op::In {
                out.push('{');
                for (k, v) in values.iter().enumerate() {
                    if k > 0 {
                        out.push_str(", ");
                    }
                    render_lit(v, out);
                }
                out.push('}');
            } else if let Some(v) = values.first() {
                render_lit(v, out);
            }
        }
        Expr::Not(inner) => {
            out.push('!');
            // `!(repeat_len == 0)` reads better than `!repeat_len == 0`.
            let min = if matches!(**inner, Expr::Compare { .. }) {
                4
            } else {
                2
            };
            render(inner, min, out);
        }
        Expr::And(items) | Expr::Or(items) => {
            let (sep, child_min) = if matches!(e, Expr::And(_)) {
                (" & ", 2)
            } else {
                (" | ", 1)
            };
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(sep);
                }
                render(item, child_min, out);
            }
        }
    }
}

fn render_lit(l: &Lit, out: &mut String) {
    match l {
        Lit::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Lit::Num { value, int: true } => {
            let _ = write!(out, "{}", *value as i64);
        }
        Lit::Num { value, int: false } => {
            let _ = write!(out, "{value:?}");
        }
        Lit::Upos(u) => out.push_str(u.name()),
        Lit::Tag(id) => {
            let tag = PTB_TAGS.get(*id as usize).copied().unwrap_or("?");
            let bare = tag
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if bare {
                out.push_str(tag);
            } else {
                quote(tag, out);
            }
        }
        Lit::Domain(d) => quote(d, out),
        Lit::Occurrence(o) => out.push_str(o.name()),
    }
}

fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}
