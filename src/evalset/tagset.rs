//! Part-of-speech tag sets: Universal POS and the Penn Treebank tags of UD English-EWT.

use std::fmt;
use std::str::FromStr;

/// Universal POS tags (UD v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Upos {
    Adj,
    Adp,
    Adv,
    Aux,
    Cconj,
    Det,
    Intj,
    Noun,
    Num,
    Part,
    Pron,
    Propn,
    Punct,
    Sconj,
    Sym,
    Verb,
    X,
}

impl Upos {
    /// Every tag, in discriminant order.
    pub const ALL: [Upos; 17] = [
        Upos::Adj,
        Upos::Adp,
        Upos::Adv,
        Upos::Aux,
        Upos::Cconj,
        Upos::Det,
        Upos::Intj,
        Upos::Noun,
        Upos::Num,
        Upos::Part,
        Upos::Pron,
        Upos::Propn,
        Upos::Punct,
        Upos::Sconj,
        Upos::Sym,
        Upos::Verb,
        Upos::X,
    ];

    /// The UD spelling, e.g. `PROPN`.
    pub fn name(self) -> &'static str {
        match self {
            Upos::Adj => "ADJ",
            Upos::Adp => "ADP",
            Upos::Adv => "ADV",
            Upos::Aux => "AUX",
            Upos::Cconj => "CCONJ",
            Upos::Det => "DET",
            Upos::Intj => "INTJ",
            Upos::Noun => "NOUN",
            Upos::Num => "NUM",
            Upos::Part => "PART",
            Upos::Pron => "PRON",
            Upos::Propn => "PROPN",
            Upos::Punct => "PUNCT",
            Upos::Sconj => "SCONJ",
            Upos::Sym => "SYM",
            Upos::Verb => "VERB",
            Upos::X => "X",
        }
    }

    /// The tag with this discriminant.
    pub fn from_index(i: u8) -> Option<Upos> {
        Upos::ALL.get(i as usize).copied()
    }

    /// Open-class, meaning-bearing words (DESIGN §5 `content`).
    pub fn is_content(self) -> bool {
        matches!(
            self,
            Upos::Noun | Upos::Propn | Upos::Verb | Upos::Adj | Upos::Adv
        )
    }

    /// Closed-class grammatical words (DESIGN §5 `function`).
    pub fn is_function(self) -> bool {
        matches!(
            self,
            Upos::Adp | Upos::Aux | Upos::Cconj | Upos::Det | Upos::Part | Upos::Pron | Upos::Sconj
        )
    }
}

impl fmt::Display for Upos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Upos {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Upos::ALL
            .iter()
            .copied()
            .find(|u| u.name() == s)
            .ok_or_else(|| format!("unknown UPOS tag `{s}`"))
    }
}

/// Penn Treebank tags as used by UD English-EWT's XPOS column; a tag id is an index here.
pub const PTB_TAGS: [&str; 51] = [
    "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR", "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS",
    "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD", "VBG",
    "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB", ",", ".", ":", "``", "''", "-LRB-", "-RRB-",
    "#", "$", "ADD", "AFX", "GW", "HYPH", "NFP", "XX",
];

/// The id of a PTB tag, or `None` when it is not in [`PTB_TAGS`].
pub fn ptb_id(tag: &str) -> Option<u8> {
    PTB_TAGS.iter().position(|t| *t == tag).map(|i| i as u8)
}
