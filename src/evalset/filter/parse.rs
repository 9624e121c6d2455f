//! The recursive-descent parser: tokens to a type-checked [`Expr`], with errors that
//! name the line and column.

use anyhow::Result;

use super::ast::{Expr, Kind, Label, Lit, Op, LABELS};
use super::lex::{err, lex, SyntaxError, Tok, Token};
use crate::error::input_error;
use crate::evalset::labels::probe::Occurrence;
use crate::evalset::tagset::{ptb_id, Upos};

pub(super) fn parse(expr: &str) -> Result<Expr> {
    let chars: Vec<char> = expr.chars().collect();
    let result = lex(&chars).and_then(|tokens| {
        let mut p = Parser { tokens, next: 0 };
        let e = p.or()?;
        let t = p.peek();
        if t.tok != Tok::Eof {
            return err(
                t.at,
                format!("expected '&', '|' or end of filter, found {}", describe(t)),
            );
        }
        Ok(e)
    });
    result.map_err(|e| {
        let (line, col) = line_col(&chars, e.at);
        let place = if expr.contains('\n') {
            format!("line {line}, column {col}")
        } else {
            format!("column {col}")
        };
        input_error(format!("filter '{expr}': {place}: {}", e.msg))
    })
}

/// 1-based line and column of a character offset.
fn line_col(chars: &[char], at: usize) -> (usize, usize) {
    let before = &chars[..at.min(chars.len())];
    let line = before.iter().filter(|&&c| c == '\n').count() + 1;
    let col = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
    (line, col)
}

fn describe(t: &Token) -> String {
    match t.tok {
        Tok::Eof => "end of filter".to_string(),
        _ => format!("'{}'", t.text),
    }
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
}

type PResult<T> = std::result::Result<T, SyntaxError>;

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends with Eof and the parser never moves past it.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.next += 1;
        }
        t
    }

    fn or(&mut self) -> PResult<Expr> {
        let mut items = vec![self.and()?];
        while self.peek().tok == Tok::Or {
            self.bump();
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(flatten(items, true))
        })
    }

    fn and(&mut self) -> PResult<Expr> {
        let mut items = vec![self.unary()?];
        while self.peek().tok == Tok::And {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(flatten(items, false))
        })
    }

    fn unary(&mut self) -> PResult<Expr> {
        if self.peek().tok == Tok::Not {
            self.bump();
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> PResult<Expr> {
        let t = self.bump();
        match &t.tok {
            Tok::LParen => {
                let e = self.or()?;
                let close = self.bump();
                if close.tok != Tok::RParen {
                    return err(
                        close.at,
                        format!("expected ')', found {}", describe(&close)),
                    );
                }
                Ok(e)
            }
            Tok::Ident(id) if id == "true" => Ok(Expr::Const(true)),
            Tok::Ident(id) if id == "false" => Ok(Expr::Const(false)),
            Tok::Ident(id) => {
                let Some(label) = Label::from_name(id) else {
                    let names: Vec<&str> = LABELS.iter().map(|(n, _)| *n).collect();
                    return err(
                        t.at,
                        format!("unknown label '{id}' (labels: {})", names.join(", ")),
                    );
                };
                self.comparison(label)
            }
            _ => err(
                t.at,
                format!("expected a label, '!' or '(', found {}", describe(&t)),
            ),
        }
    }

    fn comparison(&mut self, label: Label) -> PResult<Expr> {
        let t = self.peek().clone();
        let op = match &t.tok {
            Tok::Cmp(op) => *op,
            Tok::Ident(id) if id == "in" => Op::In,
            _ if label.kind() == Kind::Bool => return Ok(Expr::Flag(label)),
            _ => {
                return err(
                    t.at,
                    format!("expected comparison operator, found {}", describe(&t)),
                )
            }
        };
        self.bump();
        if op.is_order() && label.kind() != Kind::Num {
            return err(
                t.at,
                format!("'{}' cannot be ordered; use ==, != or in", label.name()),
            );
        }
        let values = if op == Op::In {
            let open = self.bump();
            if open.tok != Tok::LBrace {
                return err(
                    open.at,
                    format!("expected '{{' after 'in', found {}", describe(&open)),
                );
            }
            let mut values = Vec::new();
            loop {
                if self.peek().tok == Tok::RBrace && !values.is_empty() {
                    self.bump();
                    break;
                }
                values.push(self.value(label)?);
                let sep = self.bump();
                match sep.tok {
                    Tok::Comma => {}
                    Tok::RBrace => break,
                    _ => {
                        return err(
                            sep.at,
                            format!("expected ',' or '}}', found {}", describe(&sep)),
                        )
                    }
                }
            }
            values
        } else {
            vec![self.value(label)?]
        };
        Ok(Expr::Compare { label, op, values })
    }

    /// One literal, checked against the label's type.
    fn value(&mut self, label: Label) -> PResult<Lit> {
        let t = self.bump();
        let name = label.name();
        let found = describe(&t);
        match (label.kind(), &t.tok) {
            (_, Tok::Eof) => err(
                t.at,
                format!("expected a value for '{name}', found end of filter"),
            ),
            (Kind::Bool, Tok::Ident(id)) if id == "true" || id == "false" => {
                Ok(Lit::Bool(id == "true"))
            }
            (Kind::Bool, _) => err(t.at, format!("'{name}' is true or false, found {found}")),
            (Kind::Num, Tok::Num { value, int }) => Ok(Lit::Num {
                value: *value,
                int: *int,
            }),
            (Kind::Num, _) => err(t.at, format!("'{name}' is a number, found {found}")),
            (Kind::Upos, Tok::Ident(s) | Tok::Str(s)) if !is_keyword(&t.tok) => {
                let upper = s.to_ascii_uppercase();
                Upos::ALL
                    .iter()
                    .find(|u| u.name() == upper)
                    .map(|u| Lit::Upos(*u))
                    .map_or_else(|| err(t.at, format!("unknown UPOS tag '{s}'")), Ok)
            }
            (Kind::Upos, _) => err(
                t.at,
                format!("'{name}' is a UPOS tag such as ADJ, found {found}"),
            ),
            (Kind::Tag, Tok::Ident(s) | Tok::Str(s)) if !is_keyword(&t.tok) => match ptb_id(s) {
                Some(id) => Ok(Lit::Tag(id)),
                None => err(
                    t.at,
                    format!("unknown PTB tag '{s}' (quote tags such as \"PRP$\" or \",\")"),
                ),
            },
            (Kind::Tag, _) => err(
                t.at,
                format!("'{name}' is a PTB tag such as NN or \"PRP$\", found {found}"),
            ),
            (Kind::Domain, Tok::Ident(s) | Tok::Str(s)) if !is_keyword(&t.tok) => {
                Ok(Lit::Domain(s.clone()))
            }
            (Kind::Domain, _) => err(
                t.at,
                format!("'{name}' is a domain name such as \"python\", found {found}"),
            ),
            (Kind::Occurrence, Tok::Ident(s) | Tok::Str(s)) if !is_keyword(&t.tok) => {
                Occurrence::from_name(s).map_or_else(
                    || {
                        err(
                            t.at,
                            format!("'{name}' is first, second or none, found '{s}'"),
                        )
                    },
                    |o| Ok(Lit::Occurrence(o)),
                )
            }
            (Kind::Occurrence, _) => err(
                t.at,
                format!("'{name}' is first, second or none, found {found}"),
            ),
        }
    }
}

fn is_keyword(tok: &Tok) -> bool {
    matches!(tok, Tok::Ident(s) if s == "true" || s == "false" || s == "in")
}

/// `a & (b & c)` is `a & b & c`: merges same-operator children so the canonical
/// text does not depend on how the user grouped them.
fn flatten(items: Vec<Expr>, or: bool) -> Vec<Expr> {
    let mut out = Vec::with_capacity(items.len());
    for e in items {
        match e {
            Expr::Or(v) if or => out.extend(v),
            Expr::And(v) if !or => out.extend(v),
            e => out.push(e),
        }
    }
    out
}
