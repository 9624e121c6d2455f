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
//!
//! Everything is type-checked when the filter is compiled: `upos == 3`,
//! `repeat_len == "x"`, `upos < ADJ` and unknown tag names are errors that name
//! the column. A domain that is not in the evalset is not an error: it matches no
//! token.
//!
//! Every [`Filter`] keeps a canonical rendering of its source (single spaces
//! around operators, only the parentheses precedence needs), so that stored results
//! record exactly what was measured.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::error::input_error;
use crate::evalset::labels::TokenLabels;
use crate::tagset::{ptb_id, Upos, PTB_TAGS};

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
/// here, so mistakes surface with the file and key.
///
/// # Errors
///
/// [`InputError`](crate::error::InputError)s naming the file (and key): unreadable
/// file, invalid TOML, keys other than `filters`, a value that is not a string, a
/// name of a built-in filter, or an expression that does not compile.
pub fn load_filter_file(path: &Path) -> Result<Vec<(String, String)>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("{shown}: cannot read filter file: {e}")))?;
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        input_error(format!("{shown}: invalid TOML: {}", e.message()))
    })?;
    if let Some(other) = doc.keys().find(|k| k.as_str() != "filters") {
        crate::bail_input!(
            "{shown}: unknown key `{other}` (a filter file has only a [filters] table)"
        );
    }
    let Some(table) = doc.get("filters") else {
        crate::bail_input!("{shown}: no [filters] table");
    };
    filters_from_toml(table, &shown.to_string())
}

/// Reads a `[filters]` table (from a filter file or a watch config) into sorted
/// `(name, expression)` pairs; `origin` (e.g. the file name) prefixes errors.
pub fn filters_from_toml(table: &toml::Value, origin: &str) -> Result<Vec<(String, String)>> {
    let Some(table) = table.as_table() else {
        crate::bail_input!("{origin}: `filters` must be a table of name = \"expression\"");
    };
    let builtins = builtin_filters();
    let mut out = Vec::with_capacity(table.len());
    for (name, value) in table {
        let Some(expr) = value.as_str() else {
            crate::bail_input!(
                "{origin}: filters.{name}: expected a string expression, found {}",
                value.type_str()
            );
        };
        if builtins.iter().any(|(b, _)| *b == name.as_str()) {
            crate::bail_input!(
                "{origin}: filters.{name}: `{name}` is a built-in filter; choose another name"
            );
        }
        Filter::compile(name, expr, &[]).with_context(|| format!("{origin}: filters.{name}"))?;
        out.push((name.clone(), expr.to_string()));
    }
    out.sort();
    Ok(out)
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
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        // Names end up in file names of charts and in SQL rows.
        crate::bail_input!("filter name `{name}`: use ASCII letters, digits, '_', '-' or '.'");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Labels and values

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Tag,
    Upos,
    Content,
    Function,
    OpenBracket,
    CloseBracket,
    WordInitial,
    RepeatLen,
    CopyDistance,
    LogFreq,
    Pos,
    Domain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Num,
    Upos,
    Tag,
    Domain,
}

const LABELS: [(&str, Label); 12] = [
    ("tag", Label::Tag),
    ("upos", Label::Upos),
    ("content", Label::Content),
    ("function", Label::Function),
    ("open_bracket", Label::OpenBracket),
    ("close_bracket", Label::CloseBracket),
    ("word_initial", Label::WordInitial),
    ("repeat_len", Label::RepeatLen),
    ("copy_distance", Label::CopyDistance),
    ("log_freq", Label::LogFreq),
    ("pos", Label::Pos),
    ("domain", Label::Domain),
];

impl Label {
    fn from_name(s: &str) -> Option<Label> {
        LABELS.iter().find(|(n, _)| *n == s).map(|(_, l)| *l)
    }

    fn name(self) -> &'static str {
        LABELS
            .iter()
            .find(|(_, l)| *l == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    fn kind(self) -> Kind {
        match self {
            Label::Content
            | Label::Function
            | Label::OpenBracket
            | Label::CloseBracket
            | Label::WordInitial => Kind::Bool,
            Label::RepeatLen | Label::CopyDistance | Label::LogFreq | Label::Pos => Kind::Num,
            Label::Upos => Kind::Upos,
            Label::Tag => Kind::Tag,
            Label::Domain => Kind::Domain,
        }
    }

    fn bool_of(self, t: &TokenLabels) -> bool {
        match self {
            Label::Content => t.content(),
            Label::Function => t.function(),
            Label::OpenBracket => t.open_bracket,
            Label::CloseBracket => t.close_bracket,
            Label::WordInitial => t.word_initial,
            _ => false,
        }
    }

    fn num_of(self, t: &TokenLabels) -> f64 {
        match self {
            Label::RepeatLen => f64::from(t.repeat_len),
            Label::CopyDistance => f64::from(t.copy_distance),
            Label::LogFreq => f64::from(t.log_freq),
            Label::Pos => f64::from(t.pos),
            _ => f64::NAN,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
        }
    }

    fn is_order(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

/// A type-checked literal.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Bool(bool),
    Num { value: f64, int: bool },
    Upos(Upos),
    Tag(u8),
    Domain(String),
}

/// The type-checked syntax tree, kept for rendering the canonical source.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Const(bool),
    Flag(Label),
    Compare {
        label: Label,
        op: Op,
        values: Vec<Lit>,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num {
        value: f64,
        int: bool,
    },
    LParen,
    RParen,
    LBrace,
    RBrace,
    Comma,
    And,
    Or,
    Not,
    Cmp(Op),
    /// A lone `=`, kept as a token so the parser can say what it expected instead.
    Assign,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Character offset of the token's first character.
    at: usize,
    /// The token's source text, for "found ..." messages.
    text: String,
}

struct SyntaxError {
    at: usize,
    msg: String,
}

fn err<T>(at: usize, msg: impl Into<String>) -> std::result::Result<T, SyntaxError> {
    Err(SyntaxError {
        at,
        msg: msg.into(),
    })
}

fn lex(chars: &[char]) -> std::result::Result<Vec<Token>, SyntaxError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let tok = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => single(&mut i, Tok::LParen),
            ')' => single(&mut i, Tok::RParen),
            '{' => single(&mut i, Tok::LBrace),
            '}' => single(&mut i, Tok::RBrace),
            ',' => single(&mut i, Tok::Comma),
            '&' => single(&mut i, Tok::And),
            '|' => single(&mut i, Tok::Or),
            '=' | '!' | '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                i += if eq { 2 } else { 1 };
                match (c, eq) {
                    ('=', true) => Tok::Cmp(Op::Eq),
                    ('=', false) => Tok::Assign,
                    ('!', true) => Tok::Cmp(Op::Ne),
                    ('!', false) => Tok::Not,
                    ('<', true) => Tok::Cmp(Op::Le),
                    ('<', false) => Tok::Cmp(Op::Lt),
                    ('>', true) => Tok::Cmp(Op::Ge),
                    _ => Tok::Cmp(Op::Gt),
                }
            }
            '"' => lex_string(chars, &mut i)?,
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                lex_number(chars, &mut i)?
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                Tok::Ident(chars[start..i].iter().collect())
            }
            c @ ('$' | '-' | '#' | '`' | '\'') => {
                return err(
                    start,
                    format!(
                        "unexpected character '{c}' (quote tags such as \"PRP$\" or \"-LRB-\")"
                    ),
                )
            }
            c => return err(start, format!("unexpected character '{c}'")),
        };
        out.push(Token {
            tok,
            at: start,
            text: chars[start..i].iter().collect(),
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        at: chars.len(),
        text: String::new(),
    });
    Ok(out)
}

fn single(i: &mut usize, tok: Tok) -> Tok {
    *i += 1;
    tok
}

fn lex_string(chars: &[char], i: &mut usize) -> std::result::Result<Tok, SyntaxError> {
    let start = *i;
    *i += 1;
    let mut s = String::new();
    while *i < chars.len() {
        match chars[*i] {
            '"' => {
                *i += 1;
                return Ok(Tok::Str(s));
            }
            '\\' => match chars.get(*i + 1) {
                Some(&c @ ('"' | '\\')) => {
                    s.push(c);
                    *i += 2;
                }
                _ => return err(*i, "only \\\" and \\\\ may follow a backslash in a string"),
            },
            c => {
                s.push(c);
                *i += 1;
            }
        }
    }
    err(start, "unterminated string")
}

fn lex_number(chars: &[char], i: &mut usize) -> std::result::Result<Tok, SyntaxError> {
    let start = *i;
    if chars[*i] == '-' {
        *i += 1;
    }
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    digits(i);
    let mut int = true;
    if chars.get(*i) == Some(&'.') {
        *i += 1;
        int = false;
        if !digits(i) {
            return err(*i, "expected digits after '.'");
        }
    }
    if matches!(chars.get(*i), Some('e' | 'E')) {
        *i += 1;
        int = false;
        if matches!(chars.get(*i), Some('+' | '-')) {
            *i += 1;
        }
        if !digits(i) {
            return err(*i, "expected digits in the exponent");
        }
    }
    if chars
        .get(*i)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
    {
        return err(
            *i,
            format!("unexpected character '{}' in a number", chars[*i]),
        );
    }
    let text: String = chars[start..*i].iter().collect();
    let value: f64 = text.parse().map_err(|_| SyntaxError {
        at: start,
        msg: format!("invalid number '{text}'"),
    })?;
    if !value.is_finite() || (int && value.abs() > 9.007_199_254_740_992e15) {
        return err(start, format!("number '{text}' is out of range"));
    }
    Ok(Tok::Num { value, int })
}

// ---------------------------------------------------------------------------
// Parser

fn parse(expr: &str) -> Result<Expr> {
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

// ---------------------------------------------------------------------------
// Canonical rendering

/// Binding strength: 0 = or, 1 = and, 2 = not, 3 = atom.
fn strength(e: &Expr) -> u8 {
    match e {
        Expr::Or(_) => 0,
        Expr::And(_) => 1,
        Expr::Not(_) => 2,
        _ => 3,
    }
}

fn render(e: &Expr, min: u8, out: &mut String) {
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

// ---------------------------------------------------------------------------
// Evaluation

/// What [`Filter::matches`] evaluates: literals resolved to masks and indices.
#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    Flag(Label),
    Cmp {
        label: Label,
        op: Op,
        value: f64,
    },
    NumIn {
        label: Label,
        values: Vec<f64>,
        negate: bool,
    },
    Upos {
        mask: u32,
        negate: bool,
    },
    Tag {
        mask: u64,
        negate: bool,
    },
    Domain {
        ids: Vec<u16>,
        negate: bool,
    },
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

fn lower(e: &Expr, domains: &[String]) -> Node {
    match e {
        Expr::Const(b) => Node::Const(*b),
        Expr::Flag(l) => Node::Flag(*l),
        Expr::Not(inner) => Node::Not(Box::new(lower(inner, domains))),
        Expr::And(items) => Node::And(items.iter().map(|i| lower(i, domains)).collect()),
        Expr::Or(items) => Node::Or(items.iter().map(|i| lower(i, domains)).collect()),
        Expr::Compare { label, op, values } => {
            let negate = *op == Op::Ne;
            match label.kind() {
                Kind::Bool => {
                    let accept_true = values.contains(&Lit::Bool(true)) != negate;
                    let accept_false = values.contains(&Lit::Bool(false)) != negate;
                    match (accept_true, accept_false) {
                        (true, true) => Node::Const(true),
                        (false, false) => Node::Const(false),
                        (true, false) => Node::Flag(*label),
                        (false, true) => Node::Not(Box::new(Node::Flag(*label))),
                    }
                }
                Kind::Num => {
                    let nums: Vec<f64> = values
                        .iter()
                        .filter_map(|v| {
                            if let Lit::Num { value, .. } = v {
                                Some(*value)
                            } else {
                                None
                            }
                        })
                        .collect();
                    match (op, nums.as_slice()) {
                        (Op::In | Op::Eq | Op::Ne, _) => Node::NumIn {
                            label: *label,
                            values: nums,
                            negate,
                        },
                        (_, [v]) => Node::Cmp {
                            label: *label,
                            op: *op,
                            value: *v,
                        },
                        _ => Node::Const(false),
                    }
                }
                Kind::Upos => {
                    let mask = values
                        .iter()
                        .filter_map(|v| {
                            if let Lit::Upos(u) = v {
                                Some(1u32 << (*u as u8))
                            } else {
                                None
                            }
                        })
                        .fold(0, |a, b| a | b);
                    Node::Upos { mask, negate }
                }
                Kind::Tag => {
                    let mask = values
                        .iter()
                        .filter_map(|v| {
                            if let Lit::Tag(t) = v {
                                Some(1u64 << t)
                            } else {
                                None
                            }
                        })
                        .fold(0, |a, b| a | b);
                    Node::Tag { mask, negate }
                }
                Kind::Domain => {
                    // A name missing from the table resolves to nothing: it matches no token.
                    let ids = values
                        .iter()
                        .filter_map(|v| {
                            if let Lit::Domain(d) = v {
                                Some(d)
                            } else {
                                None
                            }
                        })
                        .filter_map(|d| domains.iter().position(|x| x == d))
                        .filter_map(|i| u16::try_from(i).ok())
                        .collect();
                    Node::Domain { ids, negate }
                }
            }
        }
    }
}

impl Node {
    fn eval(&self, t: &TokenLabels) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::Flag(l) => l.bool_of(t),
            Node::Cmp { label, op, value } => {
                let x = label.num_of(t);
                match op {
                    Op::Lt => x < *value,
                    Op::Le => x <= *value,
                    Op::Gt => x > *value,
                    Op::Ge => x >= *value,
                    Op::Eq => x == *value,
                    Op::Ne => x != *value,
                    Op::In => false,
                }
            }
            Node::NumIn {
                label,
                values,
                negate,
            } => {
                let x = label.num_of(t);
                values.contains(&x) != *negate
            }
            Node::Upos { mask, negate } => (mask >> (t.upos as u8) & 1 == 1) != *negate,
            Node::Tag { mask, negate } => (t.tag < 64 && mask >> t.tag & 1 == 1) != *negate,
            Node::Domain { ids, negate } => ids.contains(&t.domain) != *negate,
            Node::Not(inner) => !inner.eval(t),
            Node::And(items) => items.iter().all(|i| i.eval(t)),
            Node::Or(items) => items.iter().any(|i| i.eval(t)),
        }
    }
}
