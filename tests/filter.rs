//! The filter language: parsing, type checks, canonical text, evaluation, files.

use std::io::Write;

use filtermon::error::is_input_error;
use filtermon::evalset::filter::{
    builtin_filters, compile_filters, filters_from_toml, load_filter_file, Filter,
};
use filtermon::evalset::labels::TokenLabels;
use filtermon::evalset::tagset::{ptb_id, Upos};

fn domains() -> Vec<String> {
    ["prose", "python", "html", "latex"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A NN noun in prose at position 10, new in the window.
fn base() -> TokenLabels {
    TokenLabels {
        tag: ptb_id("NN").unwrap(),
        upos: Upos::Noun,
        open_bracket: false,
        close_bracket: false,
        repeat_len: 0,
        copy_distance: 0,
        log_freq: 2.5,
        word_initial: true,
        pos: 10,
        domain: 0,
        probe: None,
    }
}

fn f(expr: &str) -> Filter {
    Filter::compile("t", expr, &domains()).unwrap_or_else(|e| panic!("{expr}: {e:#}"))
}

fn m(expr: &str, t: &TokenLabels) -> bool {
    f(expr).matches(t)
}

fn error(expr: &str) -> String {
    let e = Filter::compile("t", expr, &domains()).expect_err(expr);
    assert!(is_input_error(&e), "{expr}: not an input error: {e:#}");
    format!("{e:#}")
}

#[test]
fn error_message_names_the_column() {
    assert_eq!(
        error("content & repeat_len = 0"),
        "filter 'content & repeat_len = 0': column 22: expected comparison operator, found '='"
    );
}

#[test]
fn error_columns() {
    let cases: &[(&str, &str)] = &[
        (
            "repeat_len",
            "column 11: expected comparison operator, found end of filter",
        ),
        ("foo == 1", "column 1: unknown label 'foo'"),
        (
            "upos == 3",
            "column 9: 'upos' is a UPOS tag such as ADJ, found '3'",
        ),
        (
            "repeat_len == \"x\"",
            "column 15: 'repeat_len' is a number, found '\"x\"'",
        ),
        ("upos < ADJ", "column 6: 'upos' cannot be ordered"),
        ("tag >= NN", "column 5: 'tag' cannot be ordered"),
        ("upos in {ADJ, ADVV}", "column 15: unknown UPOS tag 'ADVV'"),
        ("tag == NNX", "column 8: unknown PTB tag 'NNX'"),
        ("tag == PRP$", "column 11: unexpected character '$'"),
        (
            "content & (repeat_len > 1",
            "column 26: expected ')', found end of filter",
        ),
        (
            "content &",
            "column 10: expected a label, '!' or '(', found end of filter",
        ),
        (
            "content content",
            "column 9: expected '&', '|' or end of filter, found 'content'",
        ),
        (
            "content == 1",
            "column 12: 'content' is true or false, found '1'",
        ),
        ("domain == 3", "column 11: 'domain' is a domain name"),
        ("domain == \"py", "column 11: unterminated string"),
        (
            "upos in ADJ",
            "column 9: expected '{' after 'in', found 'ADJ'",
        ),
        (
            "upos in {ADJ ADV}",
            "column 14: expected ',' or '}', found 'ADV'",
        ),
        ("pos > 1.", "column 9: expected digits after '.'"),
        (
            "pos > 12abc",
            "column 9: unexpected character 'a' in a number",
        ),
        (
            "content && function",
            "column 10: expected a label, '!' or '(', found '&'",
        ),
        ("content @ function", "column 9: unexpected character '@'"),
        (
            "",
            "column 1: expected a label, '!' or '(', found end of filter",
        ),
        (
            "log_freq < true",
            "column 12: 'log_freq' is a number, found 'true'",
        ),
        (
            "upos == true",
            "column 9: 'upos' is a UPOS tag such as ADJ, found 'true'",
        ),
        ("é & foo", "column 1: unexpected character 'é'"),
        (
            "content & \"x\" & foo",
            "column 11: expected a label, '!' or '(', found '\"x\"'",
        ),
    ];
    for (expr, want) in cases {
        let got = error(expr);
        assert!(got.contains(want), "{expr}: got {got:?}, want {want:?}");
        assert!(got.starts_with(&format!("filter '{expr}': ")), "{got}");
    }
    // Multi-line expressions (TOML ''' strings) name the line too.
    assert!(error("content &\n  repeat_len = 0")
        .contains("line 2, column 14: expected comparison operator"));
}

#[test]
fn precedence() {
    let mut t = base(); // content, not function, repeat_len 0
                        // `!` binds tighter than `&`: (!function) & content
    assert!(m("!function & content", &t));
    // `&` binds tighter than `|`: false | (true & true)
    assert!(m("function | content & repeat_len == 0", &t));
    // ... and (false | true) & false would differ:
    assert!(!m("(function | content) & repeat_len == 1", &t));
    assert!(m("function & content | repeat_len == 0", &t));
    assert!(!m("function & (content | repeat_len == 0)", &t));
    // `!` over a comparison: !(repeat_len == 0)
    assert!(!m("!repeat_len == 0", &t));
    assert!(m("!!content", &t));
    t.repeat_len = 3;
    assert!(m("!repeat_len == 0 & content", &t));
    assert!(m("!(content & function)", &t));
}

#[test]
fn canonical_source() {
    let cases: &[(&str, &str)] = &[
        ("content&repeat_len==0", "content & repeat_len == 0"),
        (
            "(content & function) & word_initial",
            "content & function & word_initial",
        ),
        (
            "content & (function | word_initial)",
            "content & (function | word_initial)",
        ),
        (
            "(content | function) | (word_initial)",
            "content | function | word_initial",
        ),
        ("!(repeat_len==0)", "!(repeat_len == 0)"),
        ("!repeat_len==0", "!(repeat_len == 0)"),
        ("!(content & function)", "!(content & function)"),
        ("upos in {adj,\"ADV\",}", "upos in {ADJ, ADV}"),
        (
            "tag in {\"NN\", NNS, \"PRP$\", \",\"}",
            "tag in {NN, NNS, \"PRP$\", \",\"}",
        ),
        (
            "domain in {python, \"html\"}",
            "domain in {\"python\", \"html\"}",
        ),
        ("log_freq < 2.50", "log_freq < 2.5"),
        ("log_freq >= 1e-3", "log_freq >= 0.001"),
        ("pos > 007", "pos > 7"),
        ("log_freq > -1", "log_freq > -1"),
        ("  true ", "true"),
        ("domain == \"a\\\"b\"", "domain == \"a\\\"b\""),
    ];
    for (expr, want) in cases {
        let got = f(expr);
        assert_eq!(got.source(), *want, "{expr}");
        assert_eq!(
            f(got.source()).source(),
            *want,
            "canonical text is a fixed point"
        );
    }
    assert_eq!(f("content").name(), "t");
}

#[test]
fn every_operator() {
    let mut t = base();
    t.repeat_len = 5;
    for (expr, want) in [
        ("repeat_len == 5", true),
        ("repeat_len != 5", false),
        ("repeat_len < 5", false),
        ("repeat_len <= 5", true),
        ("repeat_len > 4", true),
        ("repeat_len >= 6", false),
        ("repeat_len in {1, 5}", true),
        ("repeat_len in {1, 2}", false),
        ("repeat_len == 5.0", true),
        ("repeat_len < 5.5", true),
        ("content & function", false),
        ("content | function", true),
        ("!function", true),
        ("true", true),
        ("false", false),
        ("content == true", true),
        ("content != true", false),
        ("content == false", false),
        ("function == false", true),
        ("content in {true, false}", true),
        ("content != false", true),
        ("upos != NOUN", false),
        ("tag != NN", false),
        ("domain != \"prose\"", false),
    ] {
        assert_eq!(m(expr, &t), want, "{expr}");
    }
}

#[test]
fn every_label() {
    let mut t = base();
    t.tag = ptb_id("PRP$").unwrap();
    t.upos = Upos::Pron;
    t.open_bracket = true;
    t.close_bracket = false;
    t.repeat_len = 7;
    t.copy_distance = 120;
    t.log_freq = 3.25;
    t.word_initial = false;
    t.pos = 4000;
    t.domain = 1;
    for (expr, want) in [
        ("tag == \"PRP$\"", true),
        ("tag in {NN, \"PRP$\"}", true),
        ("tag == PRP", false),
        ("upos == PRON", true),
        ("upos in {ADJ, ADV}", false),
        ("upos == \"pron\"", true),
        ("content", false),
        ("function", true),
        ("open_bracket", true),
        ("close_bracket", false),
        ("repeat_len >= 5", true),
        ("copy_distance > 100", true),
        ("copy_distance <= 100", false),
        ("log_freq > 3.2", true),
        ("log_freq < 3.3", true),
        ("word_initial", false),
        ("pos == 4000", true),
        ("pos < 4000", false),
        ("domain == \"python\"", true),
        ("domain == python", true),
        ("domain in {\"html\", \"latex\"}", false),
        ("domain == \"cobol\"", false),
        ("domain != \"cobol\"", true),
        ("domain in {cobol, python}", true),
    ] {
        assert_eq!(m(expr, &t), want, "{expr}");
    }
    // Every UPOS name and every PTB tag is accepted.
    for u in Upos::ALL {
        t.upos = u;
        assert!(m(&format!("upos == {}", u.name()), &t));
    }
    for (i, tag) in filtermon::evalset::tagset::PTB_TAGS.iter().enumerate() {
        t.tag = i as u8;
        let expr = format!("tag == \"{tag}\"");
        assert!(m(&expr, &t), "{expr}");
        assert!(!m(&expr.replace("==", "!="), &t));
    }
}

#[test]
fn domain_missing_from_table_matches_nothing() {
    let filt = Filter::compile("py", "domain == \"python\"", &[]).unwrap();
    let mut t = base();
    for d in 0..4 {
        t.domain = d;
        assert!(!filt.matches(&t));
    }
}

#[test]
fn builtins() {
    let names: Vec<&str> = builtin_filters().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "all",
            "content",
            "function",
            "content_nocopy",
            "copy5",
            "open_bracket",
            "close_bracket"
        ]
    );
    let filters = compile_filters(&[], &domains()).unwrap();
    let get = |n: &str| filters.iter().find(|f| f.name() == n).unwrap().clone();
    let mut t = base();
    assert!(get("all").matches(&t));
    assert!(get("content").matches(&t));
    assert!(!get("function").matches(&t));
    assert!(get("content_nocopy").matches(&t));
    assert!(!get("copy5").matches(&t));
    t.repeat_len = 5;
    assert!(!get("content_nocopy").matches(&t));
    assert!(get("copy5").matches(&t));
    assert!(!get("open_bracket").matches(&t) && !get("close_bracket").matches(&t));
    t.close_bracket = true;
    assert!(get("close_bracket").matches(&t));
    assert_eq!(get("content_nocopy").source(), "content & repeat_len == 0");

    let user = vec![("adj".to_string(), "upos == ADJ".to_string())];
    assert_eq!(compile_filters(&user, &domains()).unwrap().len(), 8);
    let dup = vec![("copy5".to_string(), "repeat_len >= 6".to_string())];
    assert!(
        format!("{:#}", compile_filters(&dup, &domains()).unwrap_err())
            .contains("`copy5` is defined twice")
    );
}

#[test]
fn bad_names() {
    for name in ["", "a b", "x/y", "ü", "recall.gain@64", "a.b", "a@b"] {
        let e = Filter::compile(name, "content", &[]).unwrap_err();
        assert!(is_input_error(&e));
        assert!(e.to_string().contains("filter name"), "{e}");
    }
    assert!(Filter::compile("ok_name-2_v1", "content", &[]).is_ok());
}

fn write_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

#[test]
fn filter_file() {
    let file = write_file(
        "[filters]\nzz_adj_adv_nocopy = \"upos in {ADJ, ADV} & repeat_len == 0\"\npy_close = 'domain == \"python\" & close_bracket'\n",
    );
    let got = load_filter_file(file.path()).unwrap();
    assert_eq!(
        got,
        vec![
            (
                "py_close".to_string(),
                "domain == \"python\" & close_bracket".to_string()
            ),
            (
                "zz_adj_adv_nocopy".to_string(),
                "upos in {ADJ, ADV} & repeat_len == 0".to_string()
            ),
        ]
    );
    assert_eq!(compile_filters(&got, &domains()).unwrap().len(), 9);
}

#[test]
fn filter_file_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "[filters]\nx = 3\n",
            "filters.x: expected a string expression, found integer",
        ),
        (
            "[filters]\ncopy5 = \"repeat_len >= 6\"\n",
            "filters.copy5: `copy5` is a built-in filter",
        ),
        (
            "[filters]\nbad = \"content & repeat_len = 0\"\n",
            "filters.bad: filter 'content & repeat_len = 0': column 22",
        ),
        ("[filter]\nx = \"content\"\n", "unknown key `filter`"),
        ("", "no [filters] table"),
        ("filters = 3\n", "`filters` must be a table"),
        ("[filters]\nx = \n", "invalid TOML"),
        (
            "[filters]\n\"a b\" = \"content\"\n",
            "filters.a b: filter name `a b`",
        ),
    ];
    for (text, want) in cases {
        let file = write_file(text);
        let e = load_filter_file(file.path()).unwrap_err();
        assert!(is_input_error(&e), "{text}");
        let msg = format!("{e:#}");
        assert!(msg.starts_with(&file.path().display().to_string()), "{msg}");
        assert!(msg.contains(want), "{text:?}: got {msg:?}, want {want:?}");
    }
    let e = load_filter_file(std::path::Path::new("/nonexistent/filters.toml")).unwrap_err();
    assert!(
        is_input_error(&e)
            && e.to_string()
                .contains("/nonexistent/filters.toml: cannot read")
    );
}

#[test]
fn filter_file_errors_name_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[filters]\nok = \"content\"\nbad = \"colour == 3\"\n",
            ":3: filters.bad: filter 'colour == 3': column 1: unknown label 'colour'",
        ),
        (
            "# mine\n[filters]\nx = 3\n",
            ":3: filters.x: expected a string expression",
        ),
        (
            "[filters]\ncopy5 = \"repeat_len >= 6\"\n",
            ":2: filters.copy5: `copy5` is a built-in filter",
        ),
        ("\n[filter]\nx = \"content\"\n", ":2: unknown key `filter`"),
        ("\nfilters = 3\n", ":2: `filters` must be a table"),
        ("[filters]\nx = \n", ":2: invalid TOML"),
    ];
    for (text, want) in cases {
        let file = write_file(text);
        let e = load_filter_file(file.path()).unwrap_err();
        assert!(is_input_error(&e), "{text}");
        let msg = format!("{e:#}");
        let want = format!("{}{want}", file.path().display());
        assert!(
            msg.starts_with(&want),
            "{text:?}: got {msg:?}, want {want:?}"
        );
    }
}

#[test]
fn filters_table_from_a_watch_config() {
    let config: toml::Table = "[filters]\nadj = \"upos == ADJ\"\n".parse().unwrap();
    let got = filters_from_toml(&config["filters"], "watch.toml").unwrap();
    assert_eq!(got, vec![("adj".to_string(), "upos == ADJ".to_string())]);
}

mod random_expressions {
    use super::*;
    use proptest::prelude::*;

    fn atom() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("content".to_string()),
            Just("function".to_string()),
            Just("open_bracket".to_string()),
            Just("word_initial == false".to_string()),
            Just("true".to_string()),
            (0u8..8).prop_map(|n| format!("repeat_len >= {n}")),
            (0u32..50).prop_map(|n| format!("copy_distance<{n}")),
            Just("upos in {NOUN, ADJ}".to_string()),
            Just("tag == \"NN\"".to_string()),
            Just("domain != python".to_string()),
            (0u32..30).prop_map(|n| format!("pos <= {n}")),
            Just("log_freq > 1.5".to_string()),
        ]
    }

    fn expr() -> impl Strategy<Value = String> {
        atom().prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| format!("!{e}")),
                inner.clone().prop_map(|e| format!("({e})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} & {b}")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("{a}|{b}")),
            ]
        })
    }

    fn labels() -> impl Strategy<Value = TokenLabels> {
        (
            any::<[bool; 4]>(),
            0u8..10,
            0u32..60,
            0u32..40,
            0u16..4,
            0usize..3,
            0.0f32..3.0,
        )
            .prop_map(|(b, repeat_len, copy_distance, pos, domain, u, log_freq)| {
                TokenLabels {
                    tag: ptb_id(["NN", "JJ", "IN"][u]).unwrap(),
                    upos: [Upos::Noun, Upos::Adj, Upos::Adp][u],
                    open_bracket: b[0],
                    close_bracket: b[1],
                    repeat_len,
                    copy_distance,
                    log_freq,
                    word_initial: b[2],
                    pos,
                    domain,
                    probe: None,
                }
            })
    }

    proptest! {
        /// The canonical text is a fixed point and means the same as the input.
        #[test]
        fn canonical_text_keeps_meaning(e in expr(), tokens in prop::collection::vec(labels(), 16)) {
            let original = f(&e);
            let again = f(original.source());
            prop_assert_eq!(again.source(), original.source());
            for t in &tokens {
                prop_assert_eq!(original.matches(t), again.matches(t), "{} vs {}", e, original.source());
            }
        }
    }
}
