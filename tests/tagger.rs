//! The embedded part-of-speech tagger against sentences written and tagged by hand for
//! filtermon (tests/data/tagger_sentences.conllu), plus the `tag` command's contract.

use std::path::Path;

use filtermon::evalset::tagger::cli::tag_stream;
use filtermon::evalset::tagger::{conllu, evaluate_sentences, Tagger};
use filtermon::evalset::tagset::{Upos, PTB_TAGS};

/// Measured 98.66% UPOS / 98.52% PTB with the shipped model; a retrained model may move
/// a little, a broken one falls far below.
const UPOS_FLOOR: f64 = 0.97;
const XPOS_FLOOR: f64 = 0.96;

fn hand_tagged() -> Vec<conllu::Sentence> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tagger_sentences.conllu");
    conllu::read_conllu(&path).expect("hand-tagged sentences parse")
}

#[test]
fn embedded_tagger_is_accurate_on_hand_tagged_sentences() {
    let sentences = hand_tagged();
    assert!(sentences.len() >= 50, "only {} sentences", sentences.len());
    let tagger = Tagger::embedded().expect("embedded model loads");
    let acc = evaluate_sentences(tagger, &sentences);
    assert_eq!(acc.upos_total, acc.words);
    assert!(
        acc.upos() >= UPOS_FLOOR,
        "UPOS accuracy {:.4} < {UPOS_FLOOR}",
        acc.upos()
    );
    assert!(
        acc.xpos() >= XPOS_FLOOR,
        "PTB accuracy {:.4} < {XPOS_FLOOR}",
        acc.xpos()
    );
}

#[test]
fn embedded_model_survives_a_save_load_round_trip() {
    let tagger = Tagger::embedded().expect("embedded model loads");
    let bytes = tagger.to_bytes().expect("serialises");
    let again = Tagger::from_bytes(&bytes).expect("parses");
    let words = ["She", "ca", "n't", "find", "the", "old", "keys", "."];
    assert_eq!(again.tag_words(&words), tagger.tag_words(&words));
    assert_eq!(again.to_bytes().expect("serialises"), bytes);
}

#[test]
fn tag_text_gives_offsets_and_sensible_tags() {
    let tagger = Tagger::embedded().expect("embedded model loads");
    let text = "I can't believe it's already 5:00.\nThe well-known e-mail arrived (finally)!";
    let tagged = tagger.tag_text(text);
    let words: Vec<&str> = tagged.iter().map(|w| &text[w.start..w.end]).collect();
    assert_eq!(
        words,
        [
            "I", "ca", "n't", "believe", "it", "'s", "already", "5:00", ".", "The", "well", "-",
            "known", "e-mail", "arrived", "(", "finally", ")", "!"
        ]
    );
    let upos: Vec<Upos> = tagged.iter().map(|w| w.upos).collect();
    assert_eq!(upos[0], Upos::Pron);
    assert_eq!(upos[1], Upos::Aux);
    assert_eq!(upos[2], Upos::Part);
    assert_eq!(upos[3], Upos::Verb);
    assert_eq!(upos[7], Upos::Num);
    assert_eq!(upos[8], Upos::Punct);
    assert_eq!(upos[9], Upos::Det);
    assert_eq!(upos[13], Upos::Noun);
    assert_eq!(PTB_TAGS[tagged[11].tag as usize], "HYPH");
    assert_eq!(tagged[2].tag_name(), "RB");
}

#[test]
fn tag_text_handles_long_and_odd_input() {
    let tagger = Tagger::embedded().expect("embedded model loads");
    assert!(tagger.tag_text("").is_empty());
    assert!(tagger.tag_text(" \n\t ").is_empty());
    // A long document without sentence punctuation still tags every word.
    let long = "word ".repeat(20_000);
    assert_eq!(tagger.tag_text(&long).len(), 20_000);
    let odd = "日本語 テキスト ünïcödé — “quotes” and emoji 🙂!";
    let tagged = tagger.tag_text(odd);
    for w in &tagged {
        assert!(w.start < w.end && odd.is_char_boundary(w.start) && odd.is_char_boundary(w.end));
    }
}

#[test]
fn pretokenized_output_keeps_words_and_lines() {
    let tagger = Tagger::embedded().expect("embedded model loads");
    let input = "The cat sat on the mat .\n\nWhere are you going ?\r\nx/y a\n";
    let mut out = Vec::new();
    tag_stream(tagger, true, input.as_bytes(), &mut out).expect("tags");
    let out = String::from_utf8(out).expect("UTF-8");
    let lines: Vec<&str> = out.split('\n').collect();
    assert_eq!(lines.len(), 5, "{out:?}");
    assert_eq!(lines[1], "");
    assert_eq!(lines[4], "");
    for (inp, got) in input.lines().zip(&lines) {
        let words: Vec<&str> = got
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(|p| p.rsplit_once('/').expect("pair").0)
            .collect();
        let want: Vec<&str> = inp.split(' ').filter(|w| !w.is_empty()).collect();
        assert_eq!(words, want);
        for p in got.split(' ').filter(|w| !w.is_empty()) {
            let tag = p.rsplit_once('/').expect("pair").1;
            assert!(tag.parse::<Upos>().is_ok(), "{tag}");
        }
    }
    assert!(lines[0].starts_with("The/DET cat/NOUN"), "{}", lines[0]);
}

#[test]
fn raw_mode_splits_words() {
    let tagger = Tagger::embedded().expect("embedded model loads");
    let mut out = Vec::new();
    tag_stream(tagger, false, "Don't panic.\n".as_bytes(), &mut out).expect("tags");
    assert_eq!(
        String::from_utf8(out).expect("UTF-8"),
        "Do/AUX n't/PART panic/VERB ./PUNCT\n"
    );
}

#[test]
fn invalid_utf8_input_is_an_input_error() {
    let tagger = Tagger::embedded().expect("embedded model loads");
    let err = tag_stream(tagger, true, &b"ok line\n\xff\xfe bad\n"[..], Vec::new())
        .expect_err("must fail");
    assert!(filtermon::error::is_input_error(&err));
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn tag_binary_honours_the_pretokenized_contract() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_filtermon"))
        .args(["tag", "--pretokenized"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn filtermon tag");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"The dogs ran home .\n\nShe did n't know .\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "The/DET dogs/NOUN ran/VERB home/ADV ./PUNCT",
            "",
            "She/PRON did/AUX n't/PART know/VERB ./PUNCT"
        ]
    );
}
