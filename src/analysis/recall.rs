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
//! [`RecallMetrics::results`] turns the metrics into result rows named `recall.gain@64`,
//! `recall.copy5@1-32`, `recall.copy_n@5` and `recall.copy5_miss`; user filter names cannot
//! contain `.` or `@`, so these never collide with a filter.

use serde::Serialize;

use crate::analysis::stats::aggregate::{AggregateOptions, FilterResult};
use crate::analysis::stats::bootstrap::{ratio, ratio_ci, ratio_diff, ratio_diff_ci, Cluster};
use crate::engine::score::EvalScores;
use crate::evalset::format::WindowMeta;
use crate::evalset::labels::probe::Occurrence;
use crate::evalset::labels::TokenLabels;

/// Prefix of every recall result row.
pub const PREFIX: &str = "recall.";

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

/// A recall row that is a mean loss over tokens selected by their labels: a recall-cliff bin
/// or a copy-n length.
pub struct TokenRow {
    /// The bin as the row names it (`1-32`, `2049+`, `5`).
    pub bin: String,
    /// The result row's name.
    pub name: String,
    select: Box<dyn Fn(&TokenLabels) -> bool + Send + Sync>,
}

impl TokenRow {
    /// Whether the row counts this token.
    pub fn selects(&self, l: &TokenLabels) -> bool {
        (self.select)(l)
    }
}

/// The recall cliff's rows: COPY-5 tokens by copy-distance bin ([`CLIFF_BINS`]).
pub fn cliff_rows() -> Vec<TokenRow> {
    CLIFF_BINS
        .iter()
        .map(|&(lo, hi)| {
            let bin = match hi {
                Some(hi) => format!("{lo}-{hi}"),
                None => format!("{lo}+"),
            };
            TokenRow {
                name: cliff_name(&bin),
                bin,
                select: Box::new(move |l: &TokenLabels| {
                    l.repeat_len >= 5
                        && l.copy_distance >= lo
                        && hi.is_none_or(|h| l.copy_distance <= h)
                }),
            }
        })
        .collect()
}

/// The copy-n curve's rows: tokens with `repeat_len == n`, n = 1…[`COPY_N_MAX`].
pub fn copy_n_rows() -> Vec<TokenRow> {
    (1..=COPY_N_MAX)
        .map(|n| TokenRow {
            bin: n.to_string(),
            name: copy_n_name(&n.to_string()),
            select: Box::new(move |l: &TokenLabels| l.repeat_len == n),
        })
        .collect()
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
    let bins = |rows: Vec<TokenRow>| -> Vec<LossBin> {
        rows.into_iter()
            .map(|r| {
                loss_bin(r.bin.clone(), labels, docs, doc_count, scores, boot, |i| {
                    scored(i) && r.selects(&labels[i])
                })
            })
            .collect()
    };
    let cliff = bins(cliff_rows());
    let copy_n = bins(copy_n_rows());
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
    bin: String,
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
        bin,
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

/// Prefix of the retrieval-gain rows' names.
pub const GAIN_PREFIX: &str = "recall.gain@";

/// Name of the retrieval-gain row of a gap.
pub fn gain_name(gap: u32) -> String {
    format!("{GAIN_PREFIX}{gap}")
}

/// Name of a recall-cliff row (`bin` as in [`LossBin::bin`], e.g. `1-32`).
pub fn cliff_name(bin: &str) -> String {
    format!("{PREFIX}copy5@{bin}")
}

/// Name of a copy-n row.
pub fn copy_n_name(n: &str) -> String {
    format!("{PREFIX}copy_n@{n}")
}

/// Name of the COPY-5 miss-rate row.
pub const COPY5_MISS: &str = "recall.copy5_miss";

/// True for the names of recall rows (no user filter can have one).
pub fn is_recall_row(name: &str) -> bool {
    name.starts_with(PREFIX)
}

impl RecallMetrics {
    /// The metrics as result rows for the store and reports: `mean` is the metric, `n` its
    /// tokens, `ci_lo`/`ci_hi` its interval, `definition` says what was measured.
    pub fn results(&self) -> Vec<FilterResult> {
        let mut out = Vec::new();
        for g in &self.gains {
            out.push(row(
                gain_name(g.gap),
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
                cliff_name(&b.bin),
                format!("mean NLL of repeat_len >= 5 & {range}; 95% CI over documents"),
                &b.loss,
                b.top1,
                b.top5,
            ));
        }
        for b in &self.copy_n {
            out.push(row(
                copy_n_name(&b.bin),
                format!("mean NLL of repeat_len == {}; 95% CI over documents", b.bin),
                &b.loss,
                b.top1,
                b.top5,
            ));
        }
        let m = &self.copy5_miss;
        out.push(row(
            COPY5_MISS.into(),
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
