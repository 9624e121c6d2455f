//! The type-checked syntax tree and the labels, operators and literals it is made of.

use crate::evalset::labels::probe::Occurrence;
use crate::evalset::tagset::Upos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
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
    ProbeGap,
    ProbeOccurrence,
    ProbeOffset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Num,
    Upos,
    Tag,
    Domain,
    Occurrence,
}

pub(super) const LABELS: [(&str, Label); 15] = [
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
    ("probe_gap", Label::ProbeGap),
    ("probe_occurrence", Label::ProbeOccurrence),
    ("probe_offset", Label::ProbeOffset),
];

impl Label {
    pub(super) fn from_name(s: &str) -> Option<Label> {
        LABELS.iter().find(|(n, _)| *n == s).map(|(_, l)| *l)
    }

    pub(super) fn name(self) -> &'static str {
        LABELS
            .iter()
            .find(|(_, l)| *l == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    pub(super) fn kind(self) -> Kind {
        match self {
            Label::Content
            | Label::Function
            | Label::OpenBracket
            | Label::CloseBracket
            | Label::WordInitial => Kind::Bool,
            Label::RepeatLen
            | Label::CopyDistance
            | Label::LogFreq
            | Label::Pos
            | Label::ProbeGap
            | Label::ProbeOffset => Kind::Num,
            Label::Upos => Kind::Upos,
            Label::Tag => Kind::Tag,
            Label::Domain => Kind::Domain,
            Label::ProbeOccurrence => Kind::Occurrence,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl Op {
    pub(super) fn text(self) -> &'static str {
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

    pub(super) fn is_order(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

/// A type-checked literal.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lit {
    Bool(bool),
    Num { value: f64, int: bool },
    Upos(Upos),
    Tag(u8),
    Domain(String),
    Occurrence(Occurrence),
}

/// The type-checked syntax tree, kept for rendering the canonical source.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
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
