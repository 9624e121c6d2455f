//! Hand-checked bracket labels, one test per domain, with BPE-like token splits.

use filtermon::evalset::labels::brackets::{bracket_labels, token_bracket_labels};

/// (open, close) per token.
fn flags(tokens: &[&str]) -> Vec<(bool, bool)> {
    token_bracket_labels(tokens)
        .iter()
        .map(|b| (b.open, b.close))
        .collect()
}

const N: (bool, bool) = (false, false);
const O: (bool, bool) = (true, false);
const C: (bool, bool) = (false, true);
const B: (bool, bool) = (true, true);

#[test]
fn prose() {
    let toks = [
        "The",
        " mayor",
        " (",
        "who",
        " had",
        " resigned",
        ")",
        " said",
        " x",
        " <",
        " y",
        " and",
        " a",
        "<b",
        " too",
        ".",
    ];
    assert_eq!(
        flags(&toks),
        vec![N, N, O, N, N, N, C, N, N, N, N, N, N, N, N, N]
    );
    // `[sic]` and a smiley-like `:)`.
    assert_eq!(flags(&[" [", "sic", "]", " :", ")"]), vec![O, N, C, N, C]);
}

#[test]
fn python() {
    let toks = [
        "def", " f", "(x", "):", "\n   ", " return", " {", "k", ":", " v", "[", "0", "]", " for",
        " k", ",", " v", " in", " x", ".items", "()}", "\n", "if", " a", "<b", ":",
    ];
    let want = vec![
        N, N, O, C, N, N, O, N, N, N, O, N, C, N, N, N, N, N, N, N, B, N, N, N, N, N,
    ];
    assert_eq!(flags(&toks), want);
    // A comparison followed by a later `>` before any `<` still looks like a tag; documented.
    assert_eq!(
        flags(&["if", " a", "<b", " and", " c", ">d"]),
        vec![N, N, O, N, N, N]
    );
}

#[test]
fn html() {
    let toks = [
        "<", "div", " class", "=\"", "box", "\">", "<", "/", "div",
        ">", // split `<` `/` `div`
        "</", "span", ">", " <", "br", "/>", " <", "img", " src", "=\"", "a", ".png", "\"", " /",
        ">", "<!--", " note", " -->", "<!", "DOCTYPE", " html", ">", " a", " <", " b", " >",
    ];
    let want = vec![
        O, N, N, N, N, N, C, C, N, N, //
        C, N, N, O, N, C, O, N, N, N, N, N, N, C, C, //
        N, N, N, N, N, N, N, N, N, N, N,
    ];
    assert_eq!(flags(&toks), want);
    // A tag cut off by the window's end does not count.
    assert_eq!(flags(&["<p", ">", "hi", "</", "p"]), vec![O, N, N, N, N]);
}

#[test]
fn latex() {
    let toks = [
        "\\begin", "{", "align", "}", "\n", "f", "(x", ")", " &=", " \\", "left", "[", "x", "^",
        "{", "2", "}", " \\", "right", "]", "\n", "\\end", "{", "align", "}", " \\", "endgroup",
        " \\", "begin", "group", " \\", "beg", "in", "{", "x", "}",
    ];
    let want = vec![
        O, O, N, C, N, N, O, C, N, N, N, O, N, N, O, N, C, N, N, C, N, //
        C, O, N, C, N, N, N, N, N, O, O, O, O, N, C,
    ];
    assert_eq!(flags(&toks), want);
    // `\end{` as one token carries both labels.
    assert_eq!(flags(&["\\end{", "proof", "}"]), vec![B, N, C]);
}

#[test]
fn spans_into_window_text() {
    let text = " print(\"<a href='x'>\")";
    let spans = [(0, 6), (6, 8), (8, 9), (9, 10), (10, 20), (20, 23)];
    let got: Vec<(bool, bool)> = bracket_labels(text, &spans)
        .iter()
        .map(|b| (b.open, b.close))
        .collect();
    assert_eq!(got, vec![N, O, O, N, N, C]);
}
