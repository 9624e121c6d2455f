//! `open_bracket` / `close_bracket` (DESIGN §5).
//!
//! Labels are computed over a whole decoded window, not token by token, because
//! byte-level BPE often cuts a marker apart (`<` | `/div` | `>`, `\` | `end`): a token
//! gets a label when its bytes overlap a marker's bytes, wherever the marker's
//! remaining bytes fall.
//!
//! # What counts
//!
//! Markers are found in the window text, then every token whose byte span overlaps
//! a marker byte gets that marker's label. A token may carry both labels.
//!
//! | marker | bytes marked | label |
//! |---|---|---|
//! | `(` `[` `{` | the character | open |
//! | `)` `]` `}` | the character | close |
//! | start tag `<name` | the `<` | open |
//! | end tag `</name` | the `<` and the `/` | close |
//! | self-closing end `/>` of a start tag | the `/` and the `>` | close |
//! | `\begin` | all six bytes | open |
//! | `\end` | all four bytes | close |
//!
//! * A tag is `<` (or `</`) followed directly by an ASCII letter, whose next `>`
//!   comes before any further `<`. This keeps `x<y and` or `a <b` in code and prose
//!   out, while accepting attributes, namespaces and custom elements. A tag cut off
//!   by the end of the window (no `>` yet) does not count. `<!-- -->`, `<!DOCTYPE>`
//!   and `<?xml ?>` are not tags.
//! * Self-closing `<br/>` is an open (its `<`) and a close (its `/>`), so open and
//!   close labels balance on well-formed markup. The `>` that merely ends a start or
//!   end tag is not a marker.
//! * `\begin` and `\end` count only as whole control words: the next byte must not
//!   be an ASCII letter (so `\endgroup`, `\beginning` do not), and the backslash
//!   must not be escaped by an odd run of backslashes before it (`\\end` is a line
//!   break and the word "end").
//! * The `{` in `\begin{itemize}` and `\end{itemize}` is an open bracket by the first
//!   rule, so a token `\end{` carries both labels.
//! * Markup rules apply in every domain; the tag shape test above is what keeps
//!   them from firing on comparisons.

/// Open/close labels of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BracketLabel {
    /// The token overlaps an opening marker.
    pub open: bool,
    /// The token overlaps a closing marker.
    pub close: bool,
}

const OPEN: u8 = 1;
const CLOSE: u8 = 2;

/// Labels every token of a window.
///
/// `window_text` is the decoded window; `token_spans[k]` is the half-open byte range
/// `start..end` of token `k` in it (byte offsets, so spans need not fall on UTF-8
/// character boundaries). Spans reaching past the text are clipped to it; empty
/// spans get no labels.
pub fn bracket_labels(window_text: &str, token_spans: &[(usize, usize)]) -> Vec<BracketLabel> {
    let marks = mark_bytes(window_text.as_bytes());
    token_spans
        .iter()
        .map(|&(start, end)| {
            let end = end.min(marks.len());
            let start = start.min(end);
            let m = marks[start..end].iter().fold(0u8, |acc, &b| acc | b);
            BracketLabel {
                open: m & OPEN != 0,
                close: m & CLOSE != 0,
            }
        })
        .collect()
}

/// Labels tokens given as their decoded texts, in window order.
pub fn token_bracket_labels<S: AsRef<str>>(tokens: &[S]) -> Vec<BracketLabel> {
    let mut text = String::new();
    let mut spans = Vec::with_capacity(tokens.len());
    for t in tokens {
        let start = text.len();
        text.push_str(t.as_ref());
        spans.push((start, text.len()));
    }
    bracket_labels(&text, &spans)
}

/// Per byte: which markers it belongs to.
fn mark_bytes(s: &[u8]) -> Vec<u8> {
    let mut marks = vec![0u8; s.len()];
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'(' | b'[' | b'{' => marks[i] |= OPEN,
            b')' | b']' | b'}' => marks[i] |= CLOSE,
            b'<' => mark_tag(s, i, &mut marks),
            b'\\' if !escaped(s, i) => {
                if control_word(s, i, b"begin") {
                    marks[i..i + 6].iter_mut().for_each(|m| *m |= OPEN);
                } else if control_word(s, i, b"end") {
                    marks[i..i + 4].iter_mut().for_each(|m| *m |= CLOSE);
                }
            }
            _ => {}
        }
        i += 1;
    }
    marks
}

/// Marks the tag starting with the `<` at `lt`, if it is one.
fn mark_tag(s: &[u8], lt: usize, marks: &mut [u8]) {
    let closing = s.get(lt + 1) == Some(&b'/');
    let name_at = if closing { lt + 2 } else { lt + 1 };
    if !s.get(name_at).is_some_and(u8::is_ascii_alphabetic) {
        return;
    }
    // The tag's `>`, provided no other `<` comes first.
    let Some(gt) = s[name_at..]
        .iter()
        .position(|&b| b == b'<' || b == b'>')
        .map(|k| name_at + k)
        .filter(|&k| s[k] == b'>')
    else {
        return;
    };
    if closing {
        marks[lt] |= CLOSE;
        marks[lt + 1] |= CLOSE;
    } else {
        marks[lt] |= OPEN;
        if gt > name_at && s[gt - 1] == b'/' {
            marks[gt - 1] |= CLOSE;
            marks[gt] |= CLOSE;
        }
    }
}

/// The backslash at `i` is preceded by an odd number of backslashes.
fn escaped(s: &[u8], i: usize) -> bool {
    s[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// `\word` at `i`, not followed by another letter.
fn control_word(s: &[u8], i: usize, word: &[u8]) -> bool {
    let end = i + 1 + word.len();
    end <= s.len() && &s[i + 1..end] == word && !s.get(end).is_some_and(u8::is_ascii_alphabetic)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(tokens: &[&str]) -> Vec<(bool, bool)> {
        token_bracket_labels(tokens)
            .iter()
            .map(|b| (b.open, b.close))
            .collect()
    }

    #[test]
    fn spans_are_clipped() {
        let l = bracket_labels("(a)", &[(0, 1), (2, 10), (5, 9), (1, 1)]);
        let got: Vec<(bool, bool)> = l.iter().map(|b| (b.open, b.close)).collect();
        assert_eq!(
            got,
            vec![(true, false), (false, true), (false, false), (false, false)]
        );
    }

    #[test]
    fn non_char_boundary_spans() {
        // "é(" is bytes c3 a9 28; a token may end inside the é.
        let l = bracket_labels("é(", &[(0, 1), (1, 3)]);
        assert_eq!(l[0], BracketLabel::default());
        assert!(l[1].open);
    }

    #[test]
    fn escaped_backslash() {
        assert_eq!(flags(&["a", "\\\\", "end", " b"]), vec![(false, false); 4]);
        assert_eq!(
            flags(&["\\\\", "\\end", "{x}"]),
            vec![(false, false), (false, true), (true, true)]
        );
    }
}
