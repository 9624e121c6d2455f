//! Per-token labels of DESIGN §5: what filters select on.

pub mod brackets;
pub mod frequency;
pub mod probe;
pub mod repeats;

use crate::evalset::tagset::Upos;
use probe::{Occurrence, ProbeLabel};

/// Every label one scored token carries (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLabels {
    /// Index into [`crate::evalset::tagset::PTB_TAGS`] of the word the token's first non-space character falls in.
    pub tag: u8,
    /// Universal POS of that word.
    pub upos: Upos,
    /// The token's text opens a bracket, an HTML tag or a LaTeX environment.
    pub open_bracket: bool,
    /// The token's text closes a bracket, an HTML tag or a LaTeX environment.
    pub close_bracket: bool,
    /// Longest n such that the n tokens ending here occurred, in order, earlier in the window (capped at 255).
    pub repeat_len: u8,
    /// Tokens back to the most recent earlier occurrence of that longest match; 0 when `repeat_len == 0`.
    pub copy_distance: u32,
    /// Natural log of the token id's count over the evalset.
    pub log_freq: f32,
    /// The token starts a word.
    pub word_initial: bool,
    /// Index in the window.
    pub pos: u32,
    /// Index into the evalset's list of domain names.
    pub domain: u16,
    /// Position relative to the planted spans, in probe evalsets only.
    pub probe: Option<ProbeLabel>,
}

impl TokenLabels {
    /// UPOS is a content word (NOUN, PROPN, VERB, ADJ, ADV).
    pub fn content(&self) -> bool {
        self.upos.is_content()
    }

    /// UPOS is a function word (ADP, AUX, CCONJ, DET, PART, PRON, SCONJ).
    pub fn function(&self) -> bool {
        self.upos.is_function()
    }

    /// Which planted span the token is in; [`Occurrence::None`] outside them and in document
    /// evalsets.
    pub fn probe_occurrence(&self) -> Occurrence {
        self.probe.map_or(Occurrence::None, |p| p.occurrence)
    }
}
