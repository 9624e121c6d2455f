//! Recall diagnostics: how well a checkpoint retrieves what its window already holds.
//!
//! | metric | tokens | value | interval |
//! |---|---|---|---|
//! | retrieval gain at gap g (probe evalsets only) | planted-span tokens at offset ≥ 1 of windows with gap g | mean NLL of the first copy − mean NLL of the second | bootstrap over windows, both copies of a window drawn together |
//! | recall cliff | COPY-5 (`repeat_len ≥ 5`) with `copy_distance` in 1–32, 33–128, 129–512, 513–2048, 2049+ | mean NLL | bootstrap over documents |
//! | copy-n curve, n = 1…16 | `repeat_len == n` | mean NLL | bootstrap over documents |
//! | COPY-5 miss rate | COPY-5 | share whose top-1 prediction is wrong | bootstrap over documents |
//!
//! Only scored tokens count: position ≥ 1 with a finite loss. Offset 0 of a span is left out
//! of the gain because nothing announces the second copy before its first token.
//!
//! [`RecallMetrics::results`] turns the metrics into result rows named by [`RecallRow`]:
//! `recall.gain@64`, `recall.copy5@1-32`, `recall.copy_n@5` and `recall.copy5_miss`; user
//! filter names cannot contain `.` or `@`, so these never collide with a filter.

use serde::Serialize;

use crate::analysis::stats::aggregate::{AggregateOptions, FilterResult};
use crate::analysis::stats::bootstrap::{ratio, ratio_ci, ratio_diff, ratio_diff_ci, Cluster};
use crate::evalset::format::WindowMeta;
use crate::evalset::labels::probe::Occurrence;
use crate::evalset::labels::TokenLabels;
use crate::evalset::scores::EvalScores;

/// Copy-distance bins of the recall cliff, `(lo, hi)` inclusive; `None`: no upper end.
pub const CLIFF_BINS: [(u32, Option<u32>); 5] = [
    (1, Some(32)),
    (33, Some(128)),
    (129, Some(512)),
    (513, Some(2048)),
    (2049, None),
];

/// Longest repeat of the copy-n curve.
pub const COPY_N_MAX: u8 = 16;

/// A value with its 95% bootstrap interval and the tokens behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Point estimate (NaN without tokens).
    pub value: f64,
    /// Lower end of the 95% interval.
    pub ci_lo: f64,
    /// Upper end.
    pub ci_hi: f64,
    /// Tokens.
    pub n: usize,
}

/// Retrieval gain at one gap of a probe evalset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapGain {
    /// Tokens from the first copy's start to the second's.
    pub gap: u32,
    /// Windows with this gap.
    pub windows: usize,
    /// Mean NLL of first-copy tokens (offset ≥ 1).
    pub first: f64,
    /// Mean NLL of second-copy tokens (offset ≥ 1).
    pub second: f64,
    /// `first − second`; `n` counts second-copy tokens.
    pub gain: Estimate,
    /// Top-1 accuracy on the second copy.
    pub second_top1: f64,
    /// Top-5 accuracy on the second copy.
    pub second_top5: f64,
}

/// Mean loss over a set of tokens, with their accuracies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LossBin {
    /// The row.
    #[serde(skip)]
    pub row: RecallRow,
    /// Row name suffix: `1-32`, `2049+`, `5`.
    pub bin: String,
    /// Mean NLL.
    pub loss: Estimate,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
}

/// Every recall metric of one checkpoint on one evalset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallMetrics {
    /// Retrieval gain per gap, ascending; empty unless the evalset is a probe.
    pub gains: Vec<GapGain>,
    /// COPY-5 loss per copy-distance bin ([`CLIFF_BINS`]).
    pub cliff: Vec<LossBin>,
    /// Loss of tokens with `repeat_len == n`, n = 1…[`COPY_N_MAX`].
    pub copy_n: Vec<LossBin>,
    /// Share of COPY-5 tokens whose top-1 prediction is wrong.
    pub copy5_miss: Estimate,
    /// Top-5 accuracy on COPY-5 tokens.
    pub copy5_top5: f64,
}

/// How the intervals are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bootstrap {
    /// Resamples.
    pub resamples: usize,
    /// Seed.
    pub seed: u64,
}

impl From<AggregateOptions> for Bootstrap {
    fn from(o: AggregateOptions) -> Self {
        Bootstrap {
            resamples: o.resamples,
            seed: o.seed,
        }
    }
}

/// The name of a recall result row, typed. [`RecallRow::name`] is its one string form (the
/// store's and every report's) and [`RecallRow::parse`] the one parser of those names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecallRow {
    /// Retrieval gain of planted spans `gap` tokens apart: `recall.gain@64`.
    Gain(u32),
    /// The recall cliff: COPY-5 tokens with `copy_distance` in `lo..=hi` (no upper end when
    /// `hi` is `None`): `recall.copy5@1-32`, `recall.copy5@2049+`.
    Cliff {
        /// Shortest copy distance of the bin.
        lo: u32,
        /// Longest copy distance of the bin, if any.
        hi: Option<u32>,
    },
    /// The copy-n curve: tokens with `repeat_len == n`: `recall.copy_n@5`.
    CopyN(u8),
    /// Share of COPY-5 tokens whose top-1 prediction is wrong: `recall.copy5_miss`.
    Copy5Miss,
}

impl RecallRow {
    /// The recall cliff's rows, one per bin of [`CLIFF_BINS`].
    pub fn cliff() -> Vec<RecallRow> {
        CLIFF_BINS
            .iter()
            .map(|&(lo, hi)| RecallRow::Cliff { lo, hi })
            .collect()
    }

    /// The copy-n curve's rows, n = 1…[`COPY_N_MAX`].
    pub fn copy_n() -> Vec<RecallRow> {
        (1..=COPY_N_MAX).map(RecallRow::CopyN).collect()
    }

    /// The bin as the name ends: `64`, `1-32`, `2049+`, `5`; `None` for the miss rate.
    pub fn bin(&self) -> Option<String> {
        match *self {
            RecallRow::Gain(gap) => Some(gap.to_string()),
            RecallRow::Cliff { lo, hi: Some(hi) } => Some(format!("{lo}-{hi}")),
            RecallRow::Cliff { lo, hi: None } => Some(format!("{lo}+")),
            RecallRow::CopyN(n) => Some(n.to_string()),
            RecallRow::Copy5Miss => None,
        }
    }

    /// Where the row sits on its x axis: the gap, the bin's shortest distance, n.
    pub fn x(&self) -> Option<f64> {
        match *self {
            RecallRow::Gain(gap) => Some(f64::from(gap)),
            RecallRow::Cliff { lo, .. } => Some(f64::from(lo)),
            RecallRow::CopyN(n) => Some(f64::from(n)),
            RecallRow::Copy5Miss => None,
        }
    }

    /// The row's name in the store and in reports.
    pub fn name(&self) -> String {
        match self {
            RecallRow::Gain(_) => format!("recall.gain@{}", self.bin().unwrap_or_default()),
            RecallRow::Cliff { .. } => format!("recall.copy5@{}", self.bin().unwrap_or_default()),
            RecallRow::CopyN(_) => format!("recall.copy_n@{}", self.bin().unwrap_or_default()),
            RecallRow::Copy5Miss => "recall.copy5_miss".into(),
        }
    }

    /// The row a name stands for; `None` for a filter's name (or anything else).
    pub fn parse(name: &str) -> Option<RecallRow> {
        let number = |s: &str| -> Option<u32> {
            // Canonical digits only, so that a parsed row names itself back the same way.
            let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            (plain && (s == "0" || !s.starts_with('0'))).then(|| s.parse().ok())?
        };
        let rest = name.strip_prefix("recall.")?;
        if rest == "copy5_miss" {
            return Some(RecallRow::Copy5Miss);
        }
        if let Some(gap) = rest.strip_prefix("gain@") {
            return number(gap).map(RecallRow::Gain);
        }
        if let Some(n) = rest.strip_prefix("copy_n@") {
            return u8::try_from(number(n)?).ok().map(RecallRow::CopyN);
        }
        let bin = rest.strip_prefix("copy5@")?;
        match bin.strip_suffix('+') {
            Some(lo) => Some(RecallRow::Cliff {
                lo: number(lo)?,
                hi: None,
            }),
            None => {
                let (lo, hi) = bin.split_once('-')?;
                Some(RecallRow::Cliff {
                    lo: number(lo)?,
                    hi: Some(number(hi)?),
                })
            }
        }
    }

    /// Whether a cliff or copy-n row counts this token (gain and miss-rate rows select none:
    /// theirs are not means over labelled tokens).
    pub fn selects(&self, l: &TokenLabels) -> bool {
        match *self {
            RecallRow::Cliff { lo, hi } => {
                l.repeat_len >= 5
                    && l.copy_distance >= lo
                    && hi.is_none_or(|h| l.copy_distance <= h)
            }
            RecallRow::CopyN(n) => l.repeat_len == n,
            RecallRow::Gain(_) | RecallRow::Copy5Miss => false,
        }
    }
}

impl std::fmt::Display for RecallRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Computes every metric from per-token labels and scores (`docs[i]`: document of token `i`,
/// one of `doc_count`; `windows` in token order, for the gain's per-window resampling).
pub fn recall_metrics(
    labels: &[TokenLabels],
    docs: &[u32],
    doc_count: usize,
    windows: &[WindowMeta],
    scores: &EvalScores,
    boot: Bootstrap,
) -> RecallMetrics {
    let scored = |i: usize| labels[i].pos > 0 && scores.loss[i].is_finite();
    let copy5 = |l: &TokenLabels| l.repeat_len >= 5;
    let bins = |rows: Vec<RecallRow>| -> Vec<LossBin> {
        rows.into_iter()
            .map(|r| {
                loss_bin(r, labels, docs, doc_count, scores, boot, |i| {
                    scored(i) && r.selects(&labels[i])
                })
            })
            .collect()
    };
    let cliff = bins(RecallRow::cliff());
    let copy_n = bins(RecallRow::copy_n());
    let mut misses = vec![Cluster::default(); doc_count];
    let mut hits = Hits::default();
    for i in (0..labels.len()).filter(|&i| scored(i) && copy5(&labels[i])) {
        misses[docs[i] as usize].add(if scores.top1[i] { 0.0 } else { 1.0 });
        hits.add(scores, i);
    }
    RecallMetrics {
        gains: gains(labels, windows, scores, boot),
        cliff,
        copy_n,
        copy5_miss: estimate(&misses, boot),
        copy5_top5: hits.top5(),
    }
}

fn estimate(clusters: &[Cluster], boot: Bootstrap) -> Estimate {
    let (ci_lo, ci_hi) = ratio_ci(clusters, boot.resamples, boot.seed, 0.95);
    Estimate {
        value: ratio(clusters),
        ci_lo,
        ci_hi,
        n: clusters.iter().map(|c| c.n as usize).sum(),
    }
}

/// Mean loss of the selected tokens, clustered by document.
fn loss_bin(
    row: RecallRow,
    labels: &[TokenLabels],
    docs: &[u32],
    doc_count: usize,
    scores: &EvalScores,
    boot: Bootstrap,
    selected: impl Fn(usize) -> bool,
) -> LossBin {
    let mut clusters = vec![Cluster::default(); doc_count];
    let mut hits = Hits::default();
    for i in (0..labels.len()).filter(|&i| selected(i)) {
        clusters[docs[i] as usize].add(f64::from(scores.loss[i]));
        hits.add(scores, i);
    }
    LossBin {
        row,
        bin: row.bin().unwrap_or_default(),
        loss: estimate(&clusters, boot),
        top1: hits.top1(),
        top5: hits.top5(),
    }
}

/// Top-1 and top-5 hit counts.
#[derive(Default)]
struct Hits {
    n: usize,
    top1: usize,
    top5: usize,
}

impl Hits {
    fn add(&mut self, scores: &EvalScores, i: usize) {
        self.n += 1;
        self.top1 += usize::from(scores.top1[i]);
        self.top5 += usize::from(scores.top5[i]);
    }

    fn share(&self, k: usize) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            k as f64 / self.n as f64
        }
    }

    fn top1(&self) -> f64 {
        self.share(self.top1)
    }

    fn top5(&self) -> f64 {
        self.share(self.top5)
    }
}

/// Retrieval gain per gap; a window is one bootstrap cluster holding both copies' losses.
fn gains(
    labels: &[TokenLabels],
    windows: &[WindowMeta],
    scores: &EvalScores,
    boot: Bootstrap,
) -> Vec<GapGain> {
    // gap → per window (first copy, second copy), and the second copy's hits.
    let mut by_gap: std::collections::BTreeMap<u32, (Vec<(Cluster, Cluster)>, Hits)> =
        Default::default();
    for w in windows {
        let range = w.start as usize..(w.start + u64::from(w.len)) as usize;
        let Some(gap) = labels.get(range.start).and_then(|l| l.probe).map(|p| p.gap) else {
            continue;
        };
        let (pairs, hits) = by_gap.entry(gap).or_default();
        let mut pair = (Cluster::default(), Cluster::default());
        for i in range {
            let Some(p) = labels[i].probe else { continue };
            if labels[i].pos == 0 || !scores.loss[i].is_finite() || p.offset.is_none_or(|o| o == 0)
            {
                continue;
            }
            let loss = f64::from(scores.loss[i]);
            match p.occurrence {
                Occurrence::First => pair.0.add(loss),
                Occurrence::Second => {
                    pair.1.add(loss);
                    hits.add(scores, i);
                }
                Occurrence::None => {}
            }
        }
        pairs.push(pair);
    }
    by_gap
        .into_iter()
        .map(|(gap, (pairs, hits))| {
            let (ci_lo, ci_hi) = ratio_diff_ci(&pairs, boot.resamples, boot.seed, 0.95);
            let firsts: Vec<Cluster> = pairs.iter().map(|p| p.0).collect();
            let seconds: Vec<Cluster> = pairs.iter().map(|p| p.1).collect();
            GapGain {
                gap,
                windows: pairs.len(),
                first: ratio(&firsts),
                second: ratio(&seconds),
                gain: Estimate {
                    value: ratio_diff(&pairs),
                    ci_lo,
                    ci_hi,
                    n: hits.n,
                },
                second_top1: hits.top1(),
                second_top5: hits.top5(),
            }
        })
        .collect()
}

impl RecallMetrics {
    /// The metrics as result rows for the store and reports: `mean` is the metric, `n` its
    /// tokens, `ci_lo`/`ci_hi` its interval, `definition` says what was measured.
    pub fn results(&self) -> Vec<FilterResult> {
        let mut out = Vec::new();
        for g in &self.gains {
            out.push(row(
                RecallRow::Gain(g.gap).name(),
                format!(
                    "retrieval gain: mean NLL of first-copy minus second-copy tokens (span offset >= 1) \
                     of planted spans {} tokens apart; 95% CI over windows; top1/top5 of the second copy",
                    g.gap
                ),
                &g.gain,
                g.second_top1,
                g.second_top5,
            ));
        }
        for (b, &(lo, hi)) in self.cliff.iter().zip(&CLIFF_BINS) {
            let range = match hi {
                Some(hi) => format!("copy_distance >= {lo} & copy_distance <= {hi}"),
                None => format!("copy_distance >= {lo}"),
            };
            out.push(row(
                b.row.name(),
                format!("mean NLL of repeat_len >= 5 & {range}; 95% CI over documents"),
                &b.loss,
                b.top1,
                b.top5,
            ));
        }
        for b in &self.copy_n {
            out.push(row(
                b.row.name(),
                format!("mean NLL of repeat_len == {}; 95% CI over documents", b.bin),
                &b.loss,
                b.top1,
                b.top5,
            ));
        }
        let m = &self.copy5_miss;
        out.push(row(
            RecallRow::Copy5Miss.name(),
            "share of repeat_len >= 5 tokens whose top-1 prediction is wrong; 95% CI over documents"
                .into(),
            m,
            1.0 - m.value,
            self.copy5_top5,
        ));
        out
    }
}

fn row(filter: String, definition: String, e: &Estimate, top1: f64, top5: f64) -> FilterResult {
    FilterResult {
        filter,
        definition,
        domain: None,
        mean: e.value,
        n: e.n,
        ci_lo: e.ci_lo,
        ci_hi: e.ci_hi,
        top1,
        top5,
    }
}
