//! `probe_gap`, `probe_occurrence` and `probe_offset`: where a token of a probe evalset sits
//! relative to the span `filtermon probe` planted twice in its window.
//!
//! They are not stored per token: they follow from the layout in the evalset header
//! ([`ProbeLayout`](crate::evalset::format::ProbeLayout)), so the label records keep their size and document evalsets are unchanged.

use serde::{Deserialize, Serialize};

/// Where one window's span sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeWindow {
    /// Distance from the first occurrence's start to the second's (≥ the span length, so the
    /// two never overlap).
    pub gap: u32,
    /// Position in the window of the first occurrence's first token.
    pub first: u32,
}

impl ProbeWindow {
    /// Position in the window of the second occurrence's first token.
    pub fn second(&self) -> u32 {
        self.first + self.gap
    }
}

/// Which copy of the planted span a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Occurrence {
    /// Not in a planted span (random filler, or any token of a document evalset).
    None,
    /// The span's first appearance: only language statistics can predict it.
    First,
    /// The repeat: predictable by retrieving the first occurrence.
    Second,
}

impl Occurrence {
    /// Every value, in display order.
    pub const ALL: [Occurrence; 3] = [Occurrence::None, Occurrence::First, Occurrence::Second];

    /// The name used in filters and `labeled_dataset.jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            Occurrence::None => "none",
            Occurrence::First => "first",
            Occurrence::Second => "second",
        }
    }

    /// Parses [`Occurrence::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Option<Occurrence> {
        Self::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(s))
    }
}

/// The probe labels of one token of a probe window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeLabel {
    /// The window's gap: tokens from the first occurrence's start to the second's.
    pub gap: u32,
    /// Which copy of the span the token is in.
    pub occurrence: Occurrence,
    /// Offset within the span (0 = its first token); `None` outside the spans.
    pub offset: Option<u32>,
}

impl ProbeLabel {
    /// The label of position `pos` of a window laid out as `w` with spans of `span` tokens.
    pub fn at(w: &ProbeWindow, span: u32, pos: u32) -> ProbeLabel {
        let within = |start: u32| (start..start + span).contains(&pos).then(|| pos - start);
        let (occurrence, offset) = match (within(w.first), within(w.second())) {
            (Some(o), _) => (Occurrence::First, Some(o)),
            (None, Some(o)) => (Occurrence::Second, Some(o)),
            (None, None) => (Occurrence::None, None),
        };
        ProbeLabel {
            gap: w.gap,
            occurrence,
            offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_offsets_and_filler() {
        let w = ProbeWindow { gap: 5, first: 2 };
        let got: Vec<(Occurrence, Option<u32>)> = (0..12)
            .map(|p| {
                let l = ProbeLabel::at(&w, 3, p);
                assert_eq!(l.gap, 5);
                (l.occurrence, l.offset)
            })
            .collect();
        use Occurrence::*;
        assert_eq!(
            got,
            vec![
                (None, Option::None),
                (None, Option::None),
                (First, Some(0)),
                (First, Some(1)),
                (First, Some(2)),
                (None, Option::None),
                (None, Option::None),
                (Second, Some(0)),
                (Second, Some(1)),
                (Second, Some(2)),
                (None, Option::None),
                (None, Option::None),
            ]
        );
    }

    #[test]
    fn names_round_trip() {
        for o in Occurrence::ALL {
            assert_eq!(Occurrence::from_name(o.name()), Some(o));
        }
        assert_eq!(Occurrence::from_name("SECOND"), Some(Occurrence::Second));
        assert_eq!(Occurrence::from_name("third"), None);
    }
}
