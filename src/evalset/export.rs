//! The human- and tool-readable files beside `evalset.bin` (DESIGN §9):
//! `manifest.json`, `labeled_dataset.jsonl` and `token_category_map.csv`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use crate::evalset::categories::CategorySet;
use crate::evalset::filter::compile_filters;
use crate::evalset::labels::probe::Occurrence;
use crate::evalset::labels::TokenLabels;
use crate::evalset::prepare::{TokenTexts, LABELER_VERSION};
use crate::evalset::scores::EvalScores;
use crate::evalset::tagset::PTB_TAGS;
use crate::evalset::EvalSet;

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
    /// The probe labels, in probe evalsets only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeFields>,
    /// Both models' scores, in `compare`'s dataset.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedScores>,
}

/// The probe labels of one token of a probe evalset.
#[derive(Debug, Serialize)]
pub struct ProbeFields {
    /// The window's gap between the two planted spans.
    pub probe_gap: u32,
    /// `first`, `second` or `none`.
    pub probe_occurrence: Occurrence,
    /// Offset within the planted span; `null` outside the spans.
    pub probe_offset: Option<u32>,
}

/// The scores of two models A and B on one token; losses are absent at position 0 (no prefix).
#[derive(Debug, Serialize)]
pub struct PairedScores {
    /// NLL under A (nats).
    pub loss_a: Option<f32>,
    /// NLL under B (nats).
    pub loss_b: Option<f32>,
    /// `loss_a − loss_b`: positive when B predicted the token better.
    pub gap: Option<f32>,
    /// A's argmax hit.
    pub top1_a: bool,
    /// B's argmax hit.
    pub top1_b: bool,
    /// A's top-5 hit.
    pub top5_a: bool,
    /// B's top-5 hit.
    pub top5_b: bool,
}

impl PairedScores {
    /// Token `i` of two scorings of one evalset.
    pub fn new(a: &EvalScores, b: &EvalScores, i: usize) -> Self {
        let finite = |x: f32| x.is_finite().then_some(x);
        let (la, lb) = (finite(a.loss[i]), finite(b.loss[i]));
        Self {
            loss_a: la,
            loss_b: lb,
            gap: la.zip(lb).map(|(x, y)| x - y),
            top1_a: a.top1[i],
            top1_b: b.top1[i],
            top5_a: a.top5[i],
            top5_b: b.top5[i],
        }
    }
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
            probe: l.probe.map(|p| ProbeFields {
                probe_gap: p.gap,
                probe_occurrence: p.occurrence,
                probe_offset: p.offset,
            }),
            paired: None,
        }
    }
}

/// Where an evalset came from, for `manifest.json`.
pub struct Provenance<'a> {
    /// Corpus files or folders (for a probe evalset: the `--unigram` evalset, if any).
    pub sources: &'a [PathBuf],
    /// The `tokenizer.json` used.
    pub tokenizer: &'a Path,
    /// Lines or files skipped with `--skip-bad`.
    pub skipped: usize,
    /// How `filtermon probe` built the evalset.
    pub probe: Option<serde_json::Value>,
}

/// Writes all three files into the evalset's folder.
pub fn write_all(es: &EvalSet, texts: &TokenTexts, from: &Provenance) -> anyhow::Result<()> {
    let labels = es.labels()?;
    write_labeled_dataset(
        es,
        texts,
        &labels,
        None,
        &es.dir().join("labeled_dataset.jsonl"),
    )?;
    let set = CategorySet::new(es.domains(), &compile_filters(&[], es.domains())?);
    write_category_map(
        es,
        texts,
        &labels,
        &set,
        &es.dir().join("token_category_map.csv"),
    )?;
    write_manifest(es, from)
}

/// Writes `labeled_dataset.jsonl`: every token with its labels and, given two scorings
/// `(A, B)`, both models' scores.
pub fn write_labeled_dataset(
    es: &EvalSet,
    texts: &TokenTexts,
    labels: &[TokenLabels],
    paired: Option<(&EvalScores, &EvalScores)>,
    path: &Path,
) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for w in es.windows() {
        for p in 0..w.len as usize {
            let i = w.start as usize + p;
            let id = es.token(i);
            let mut rec = LabeledToken::new(es, w.doc, w.index, id, texts.get(id), &labels[i]);
            rec.paired = paired.map(|(a, b)| PairedScores::new(a, b, i));
            serde_json::to_writer(&mut out, &rec)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes `token_category_map.csv`: per category of `set`, its tokens, documents and most
/// frequent token texts.
pub fn write_category_map(
    es: &EvalSet,
    texts: &TokenTexts,
    labels: &[TokenLabels],
    set: &CategorySet,
    path: &Path,
) -> anyhow::Result<()> {
    #[derive(Default)]
    struct Cat {
        tokens: u64,
        docs: BTreeSet<u32>,
        ids: HashMap<u32, u64>,
    }
    let mut cats: Vec<Cat> = set.categories().iter().map(|_| Cat::default()).collect();
    let docs = es.token_docs();
    let mut members = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        set.members(l, &mut members);
        for &m in &members {
            let c = &mut cats[m];
            c.tokens += 1;
            c.docs.insert(docs[i]);
            *c.ids.entry(es.token(i)).or_default() += 1;
        }
    }
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
    w.write_record(["category", "tokens", "documents", "example_tokens"])?;
    // Categories no token falls in would only be noise in the map.
    for (cat, c) in set
        .categories()
        .iter()
        .zip(&cats)
        .filter(|(_, c)| c.tokens > 0)
    {
        let mut ids: Vec<(&u32, &u64)> = c.ids.iter().collect();
        ids.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let examples: Vec<String> = ids
            .iter()
            .take(5)
            .map(|(id, _)| format!("{:?}", texts.get(**id)))
            .collect();
        w.write_record([
            cat.name().as_str(),
            &c.tokens.to_string(),
            &c.docs.len().to_string(),
            &examples.join(" "),
        ])?;
    }
    w.flush()?;
    Ok(())
}

fn write_manifest(es: &EvalSet, from: &Provenance) -> anyhow::Result<()> {
    let h = es.header();
    let mut per_domain: BTreeMap<&str, u64> = BTreeMap::new();
    for w in es.windows() {
        let d = &es.domains()[h.docs[w.doc as usize].domain as usize];
        *per_domain.entry(d).or_default() += u64::from(w.len);
    }
    let mut manifest = json!({
        "id": es.id(),
        "format_version": crate::evalset::format::FORMAT_VERSION,
        "labeler_version": LABELER_VERSION,
        "tokenizer": from.tokenizer.display().to_string(),
        "tokenizer_hash": es.tokenizer_hash(),
        "window": h.window,
        "sources": from.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "documents": h.docs.len(),
        "windows": h.windows.len(),
        "tokens": h.tokens,
        "tokens_per_domain": per_domain,
        "skipped": from.skipped,
        "created_by": concat!("filtermon ", env!("CARGO_PKG_VERSION")),
    });
    if let Some(probe) = &from.probe {
        manifest["probe"] = probe.clone();
    }
    std::fs::write(
        es.dir().join("manifest.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    Ok(())
}
