//! A small CoNLL-U reader: just what the tagger needs (word forms, UPOS, XPOS, `# text`).
//!
//! Multiword-token lines (`1-2`) and empty nodes (`1.1`) are skipped, so a sentence is
//! its sequence of syntactic words — the segmentation the tagger is trained and scored on.

use std::path::Path;

use anyhow::{Context, Result};

use crate::error::input_error;
use crate::evalset::tagset::{ptb_id, Upos};

/// One syntactic word of a CoNLL-U sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The FORM column.
    pub form: String,
    /// The UPOS column, `None` when it is `_`.
    pub upos: Option<Upos>,
    /// The XPOS column as a [`crate::evalset::tagset::PTB_TAGS`] index, `None` when it is `_`.
    pub xpos: Option<u8>,
}

/// One sentence of a CoNLL-U file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sentence {
    /// The `# text = ...` comment, when present.
    pub text: Option<String>,
    /// The syntactic words, in order.
    pub words: Vec<Word>,
}

/// Reads a CoNLL-U file. Problems with its content are input errors naming file and line.
pub fn read_conllu(path: &Path) -> Result<Vec<Sentence>> {
    let bytes = std::fs::read(path)
        .map_err(|e| input_error(format!("cannot read CoNLL-U file {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| input_error(format!("{} is not valid UTF-8", path.display())))?;
    parse_conllu(&text, &path.display().to_string())
        .with_context(|| format!("reading CoNLL-U file {}", path.display()))
}

/// Parses CoNLL-U text; `source` names it in error messages.
pub fn parse_conllu(text: &str, source: &str) -> Result<Vec<Sentence>> {
    let mut sentences = Vec::new();
    let mut current = Sentence::default();
    for (lineno, raw) in text.lines().enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            if !current.words.is_empty() {
                sentences.push(std::mem::take(&mut current));
            } else {
                // Comments of a sentence without words belong to nothing; drop them.
                current = Sentence::default();
            }
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(t) = comment.trim_start().strip_prefix("text =") {
                current.text = Some(t.trim().to_string());
            }
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let at = || format!("{source}:{}", lineno + 1);
        if cols.len() != 10 {
            return Err(input_error(format!(
                "{}: expected 10 tab-separated columns, found {}",
                at(),
                cols.len()
            )));
        }
        let id = cols[0];
        if id.contains('-') || id.contains('.') {
            continue;
        }
        if id.parse::<u32>().is_err() {
            return Err(input_error(format!("{}: bad word id `{id}`", at())));
        }
        let form = cols[1];
        if form.is_empty() {
            return Err(input_error(format!("{}: empty FORM", at())));
        }
        let upos = match cols[3] {
            "_" => None,
            u => Some(
                u.parse::<Upos>()
                    .map_err(|e| input_error(format!("{}: {e}", at())))?,
            ),
        };
        let xpos = match cols[4] {
            "_" => None,
            x => Some(
                ptb_id(x)
                    .ok_or_else(|| input_error(format!("{}: unknown XPOS tag `{x}`", at())))?,
            ),
        };
        current.words.push(Word {
            form: form.to_string(),
            upos,
            xpos,
        });
    }
    if !current.words.is_empty() {
        sentences.push(current);
    }
    Ok(sentences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_multiword_tokens_and_empty_nodes() {
        let text = "# text = I can't.\n1\tI\tI\tPRON\tPRP\t_\t_\t_\t_\t_\n\
                    2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_\n\
                    2\tca\tcan\tAUX\tMD\t_\t_\t_\t_\t_\n\
                    3\tn't\tnot\tPART\tRB\t_\t_\t_\t_\t_\n\
                    3.1\tx\t_\t_\t_\t_\t_\t_\t_\t_\n\
                    4\t.\t.\tPUNCT\t.\t_\t_\t_\t_\t_\n\n";
        let s = parse_conllu(text, "t").expect("parses");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text.as_deref(), Some("I can't."));
        let forms: Vec<&str> = s[0].words.iter().map(|w| w.form.as_str()).collect();
        assert_eq!(forms, ["I", "ca", "n't", "."]);
        assert_eq!(s[0].words[1].upos, Some(Upos::Aux));
        assert_eq!(s[0].words[1].xpos, ptb_id("MD"));
    }

    #[test]
    fn bad_lines_are_input_errors() {
        let err = parse_conllu("1\tx\t_\tNOPE\tNN\t_\t_\t_\t_\t_\n", "f").unwrap_err();
        assert!(crate::error::is_input_error(&err));
        assert!(err.to_string().contains("f:1"), "{err}");
        let err = parse_conllu("1\tx\t_\n", "f").unwrap_err();
        assert!(err.to_string().contains("10 tab-separated"), "{err}");
        let err = parse_conllu("1\tx\t_\tNOUN\tZZ\t_\t_\t_\t_\t_\n", "f").unwrap_err();
        assert!(err.to_string().contains("XPOS"), "{err}");
    }
}
