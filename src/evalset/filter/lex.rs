//! The lexer: filter text to tokens that remember where they start, for error messages.

use super::ast::Op;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    /// Character offset of the token's first character.
    pub(super) at: usize,
    /// The token's source text, for "found ..." messages.
    pub(super) text: String,
}

pub(super) struct SyntaxError {
    pub(super) at: usize,
    pub(super) msg: String,
}

pub(super) fn err<T>(at: usize, msg: impl Into<String>) -> std::result::Result<T, SyntaxError> {
    Err(SyntaxError {
        at,
        msg: msg.into(),
    })
}

pub(super) fn lex(chars: &[char]) -> std::result::Result<Vec<Token>, SyntaxError> {
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
