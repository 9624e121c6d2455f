//! The human- and tool-readable files beside `evalset.bin` (DESIGN §9):
//! `manifest.json`, `labeled_dataset.jsonl` and `token_category_map.csv`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::evalset::labels::TokenLabels;
use crate::evalset::prepare::{TokenTexts, LABELER_VERSION};
use crate::evalset::EvalSet;
use crate::tagset::PTB_TAGS;

/// One line of `labeled_dataset.jsonl`: the position, the token and every label of DESIGN §5.
#[derive(Debug, Serialize)]
pub struct LabeledToken<'a> {
    /// Document id.
    pub doc: &'a str,
    /// Window index within the document.
    pub window: u32,
    /// Index in the window.
    pub pos: u32,
    /// Token id.
    pub token_id: u32,
    /// Decoded token text.
    pub text: String,
    /// PTB tag.
    pub tag: &'static str,
    /// Universal POS.
    pub upos: &'static str,
    /// UPOS is a content word.
    pub content: bool,
    /// UPOS is a function word.
    pub function: bool,
    /// Opens a bracket, tag or environment.
    pub open_bracket: bool,
    /// Closes a bracket, tag or environment.
    pub close_bracket: bool,
    /// Longest repeated n-gram ending here.
    pub repeat_len: u8,
    /// Distance to that repeat's previous occurrence.
    pub copy_distance: u32,
    /// ln count of the token id over the evalset.
    pub log_freq: f32,
    /// Starts a word.
    pub word_initial: bool,
    /// Document domain.
    pub domain: &'a str,
}

impl<'a> LabeledToken<'a> {
    /// Builds the record of one token.
    pub fn new(
        es: &'a EvalSet,
        doc: u32,
        window: u32,
        token_id: u32,
        text: String,
        l: &TokenLabels,
    ) -> Self {
        let h = es.header();
        Self {
            doc: &h.docs[doc as usize].id,
            window,
            pos: l.pos,
            token_id,
            text,
            tag: PTB_TAGS.get(l.tag as usize).copied().unwrap_or("XX"),
            upos: l.upos.name(),
            content: l.content(),
            function: l.function(),
            open_bracket: l.open_bracket,
            close_bracket: l.close_bracket,
            repeat_len: l.repeat_len,
            copy_distance: l.copy_distance,
            log_freq: l.log_freq,
            word_initial: l.word_initial,
            domain: &es.domains()[l.domain as usize],
        }
    }
}

/// Writes all three files into the evalset's folder.
pub fn write_all(
    es: &EvalSet,
    texts: &TokenTexts,
    sources: &[PathBuf],
    tokenizer: &Path,
    skipped: usize,
) -> anyhow::Result<()> {
    let labels = es.labels()?;
    write_labeled_dataset(es, texts, &labels, &es.dir().join("labeled_dataset.jsonl"))?;
    write_category_map(es, texts, &labels, &es.dir().join("token_category_map.csv"))?;
    write_manifest(es, sources, tokenizer, skipped)
}

fn write_labeled_dataset(
    es: &EvalSet,
    texts: &TokenTexts,
    labels: &[TokenLabels],
    path: &Path,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for w in es.windows() {
        for p in 0..w.len as usize {
            let i = w.start as usize + p;
            let id = es.token(i);
            let rec = LabeledToken::new(es, w.doc, w.index, id, texts.get(id), &labels[i]);
            serde_json::to_writer(&mut out, &rec)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Every category a token can fall in, as `kind=value` names.
pub fn categories(l: &TokenLabels, domains: &[String]) -> Vec<String> {
    let mut c = vec![
        format!("upos={}", l.upos.name()),
        format!(
            "tag={}",
            PTB_TAGS.get(l.tag as usize).copied().unwrap_or("XX")
        ),
        format!(
            "domain={}",
            domains.get(l.domain as usize).map_or("?", String::as_str)
        ),
    ];
    for (flag, name) in [
        (l.content(), "content"),
        (l.function(), "function"),
        (l.open_bracket, "open_bracket"),
        (l.close_bracket, "close_bracket"),
        (l.word_initial, "word_initial"),
        (l.repeat_len == 0, "new_token"),
        (l.repeat_len >= 5, "copy5"),
    ] {
        if flag {
            c.push(name.to_owned());
        }
    }
    c
}

fn write_category_map(
    es: &EvalSet,
    texts: &TokenTexts,
    labels: &[TokenLabels],
    path: &Path,
) -> anyhow::Result<()> {
    #[derive(Default)]
    struct Cat {
        tokens: u64,
        docs: BTreeSet<u32>,
        ids: HashMap<u32, u64>,
    }
    let mut cats: BTreeMap<String, Cat> = BTreeMap::new();
    let docs = es.token_docs();
    for (i, l) in labels.iter().enumerate() {
        for name in categories(l, es.domains()) {
            let c = cats.entry(name).or_default();
            c.tokens += 1;
            c.docs.insert(docs[i]);
            *c.ids.entry(es.token(i)).or_default() += 1;
        }
    }
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["category", "tokens", "documents", "example_tokens"])?;
    for (name, c) in &cats {
        let mut ids: Vec<(&u32, &u64)> = c.ids.iter().collect();
        ids.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let examples: Vec<String> = ids
            .iter()
            .take(5)
            .map(|(id, _)| format!("{:?}", texts.get(**id)))
            .collect();
        w.write_record([
            name.as_str(),
            &c.tokens.to_string(),
            &c.docs.len().to_string(),
            &examples.join(" "),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn write_manifest(
    es: &EvalSet,
    sources: &[PathBuf],
    tokenizer: &Path,
    skipped: usize,
) -> anyhow::Result<()> {
    let h = es.header();
    let mut per_domain: BTreeMap<&str, u64> = BTreeMap::new();
    for w in es.windows() {
        let d = &es.domains()[h.docs[w.doc as usize].domain as usize];
        *per_domain.entry(d).or_default() += u64::from(w.len);
    }
    let manifest = json!({
        "id": es.id(),
        "format_version": crate::evalset::format::FORMAT_VERSION,
        "labeler_version": LABELER_VERSION,
        "tokenizer": tokenizer.display().to_string(),
        "tokenizer_hash": es.tokenizer_hash(),
        "window": h.window,
        "sources": sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "documents": h.docs.len(),
        "windows": h.windows.len(),
        "tokens": h.tokens,
        "tokens_per_domain": per_domain,
        "skipped": skipped,
        "created_by": concat!("filtermon ", env!("CARGO_PKG_VERSION")),
    });
    std::fs::write(
        es.dir().join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    Ok(())
}
