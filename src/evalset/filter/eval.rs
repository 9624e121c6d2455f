//! Lowering a syntax tree to what a token is tested against, and the test itself.

use super::ast::{Expr, Kind, Label, Lit, Op};
use crate::evalset::labels::probe::Occurrence;
use crate::evalset::labels::TokenLabels;

/// What [`Filter::matches`](super::Filter::matches) evaluates: literals resolved to masks
/// and indices.
#[derive(Debug, Clone)]
pub(super) enum Node {
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
    Occurrence {
        values: Vec<Occurrence>,
        negate: bool,
    },
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

pub(super) fn lower(e: &Expr, domains: &[String]) -> Node {
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
                Kind::Occurrence => {
                    let values = values
                        .iter()
                        .filter_map(|v| {
                            if let Lit::Occurrence(o) = v {
                                Some(*o)
                            } else {
                                None
                            }
                        })
                        .collect();
                    Node::Occurrence { values, negate }
                }
            }
        }
    }
}

impl Node {
    pub(super) fn eval(&self, t: &TokenLabels) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::Flag(l) => l.bool_of(t),
            Node::Cmp { label, op, value } => {
                // A token without the label (probe labels outside probe spans) fails every
                // comparison, as SQL's NULL does.
                let Some(x) = label.num_of(t) else {
                    return false;
                };
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
            } => label
                .num_of(t)
                .is_some_and(|x| values.contains(&x) != *negate),
            Node::Upos { mask, negate } => (mask >> (t.upos as u8) & 1 == 1) != *negate,
            Node::Tag { mask, negate } => (t.tag < 64 && mask >> t.tag & 1 == 1) != *negate,
            Node::Domain { ids, negate } => ids.contains(&t.domain) != *negate,
            Node::Occurrence { values, negate } => {
                values.contains(&t.probe_occurrence()) != *negate
            }
            Node::Not(inner) => !inner.eval(t),
            Node::And(items) => items.iter().all(|i| i.eval(t)),
            Node::Or(items) => items.iter().any(|i| i.eval(t)),
        }
    }
}

impl Label {
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

    fn num_of(self, t: &TokenLabels) -> Option<f64> {
        match self {
            Label::RepeatLen => Some(f64::from(t.repeat_len)),
            Label::CopyDistance => Some(f64::from(t.copy_distance)),
            Label::LogFreq => Some(f64::from(t.log_freq)),
            Label::Pos => Some(f64::from(t.pos)),
            Label::ProbeGap => t.probe.map(|p| f64::from(p.gap)),
            Label::ProbeOffset => t.probe.and_then(|p| p.offset).map(f64::from),
            _ => None,
        }
    }
}
