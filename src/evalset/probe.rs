//! `filtermon probe`: a synthetic evalset that measures retrieval alone.
//!
//! Repeats in natural text are also predictable from language statistics, so COPY-5 on
//! documents understates how badly a recurrent model retrieves. A probe window is random
//! tokens (uniform over the vocabulary, or drawn from an evalset's unigram distribution) with
//! one span of random tokens planted twice at a controlled gap: the first copy can only be
//! guessed, the second can be copied. The loss difference between the two is what retrieval
//! over that gap is worth (see [`crate::analysis::recall`]).
//!
//! # Layout
//!
//! Window `k` uses gap `gaps[k % gaps.len()]`, so every gap gets `windows / gaps.len()`
//! windows (±1). The first copy starts at a uniformly drawn position `first` in
//! `0..=window − gap − span`, the second at `first + gap`: the **gap** is the distance between
//! the two copies' first tokens, and `gap ≥ span`, so the copies never overlap. Every window is
//! its own document (`gap64-0007`, domain `probe`), so document-cluster intervals resample
//! windows.
//!
//! # Labels
//!
//! `repeat_len` and `copy_distance` come from the repeat labeler, as in `prepare` (a filler
//! token may repeat by chance); `log_freq` from the probe's own token counts. Random tokens
//! form no words: `tag` is `XX`, `upos` `X`, no brackets, never `word_initial`. The planted
//! layout goes into the header; `probe_gap`, `probe_occurrence` and `probe_offset` follow
//! from it ([`crate::evalset::labels::probe`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::bail_input;
use crate::error::input_error;
use crate::evalset::format::{DocMeta, Header, ProbeLayout, WindowMeta};
use crate::evalset::labels::probe::ProbeLabel;
use crate::evalset::labels::probe::ProbeWindow;
use crate::evalset::labels::repeats::repeat_labels;
use crate::evalset::labels::TokenLabels;
use crate::evalset::prepare::{tokenizer_file, write_evalset, TokenTexts, LABELER_VERSION};
use crate::evalset::tagset::{ptb_id, Upos};
use crate::evalset::{export, EvalSet};

/// Gaps probed by default: from well inside a sliding-attention window to most of a
/// 2048-token window.
pub const DEFAULT_GAPS: [usize; 6] = [64, 128, 256, 512, 1024, 1792];

/// Windows by default: 40 per default gap. The first copy costs the unigram entropy and the
/// second far less, so 40 windows × 31 tokens per gap already give intervals of a few
/// hundredths of a nat, at 0.5M tokens per checkpoint.
pub const DEFAULT_WINDOWS: usize = 240;

/// The domain name of every probe document.
pub const PROBE_DOMAIN: &str = "probe";

/// The shape of a probe evalset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Tokens per planted span.
    pub span: usize,
    /// Distances between the two copies' first tokens, cycled over the windows.
    pub gaps: Vec<usize>,
    /// Number of windows.
    pub windows: usize,
    /// Tokens per window.
    pub window: usize,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            span: 32,
            gaps: DEFAULT_GAPS.to_vec(),
            windows: DEFAULT_WINDOWS,
            window: 2048,
            seed: 0,
        }
    }
}

impl ProbeSpec {
    /// Refuses, with one line naming the flag, a layout that cannot be built.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.span == 0 {
            bail_input!("--span must be at least 1 token");
        }
        if self.gaps.is_empty() {
            bail_input!("--gaps is empty: give at least one gap");
        }
        if self.windows == 0 {
            bail_input!("--windows must be at least 1");
        }
        if self.window > u32::MAX as usize {
            bail_input!("--window {} is too large", self.window);
        }
        let mut seen = HashSet::new();
        for &gap in &self.gaps {
            if !seen.insert(gap) {
                bail_input!("--gaps lists {gap} twice");
            }
            if gap < self.span {
                bail_input!(
                    "gap {gap} is shorter than the span of {} tokens: the two copies would overlap",
                    self.span
                );
            }
            if gap + self.span > self.window {
                bail_input!(
                    "gap {gap} + span {} exceeds the window of {} tokens",
                    self.span,
                    self.window
                );
            }
        }
        Ok(())
    }
}

/// Parses `--gaps`: comma-separated token counts (`""` is no gap, which
/// [`ProbeSpec::validate`] refuses).
pub fn parse_gaps(text: &str) -> anyhow::Result<Vec<usize>> {
    text.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| {
            g.parse::<usize>()
                .map_err(|_| input_error(format!("--gaps: `{g}` is not a number of tokens")))
        })
        .collect()
}

/// Where random tokens are drawn from: never a special or added token.
#[derive(Debug, Clone)]
pub enum TokenSampler {
    /// Uniform over these ids.
    Uniform(Vec<u32>),
    /// Ids with weights (their counts in an evalset).
    Unigram {
        /// Token ids.
        ids: Vec<u32>,
        /// The distribution over `ids`.
        weights: WeightedIndex<u64>,
    },
}

impl TokenSampler {
    /// Uniform over the tokenizer's vocabulary minus its special and added tokens.
    pub fn uniform(tok: &Tokenizer) -> anyhow::Result<Self> {
        let added: HashSet<u32> = tok.get_added_tokens_decoder().into_keys().collect();
        let mut ids: Vec<u32> = tok
            .get_vocab(true)
            .into_values()
            .filter(|id| !added.contains(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            bail_input!("the tokenizer has no ordinary tokens to draw from");
        }
        Ok(Self::Uniform(ids))
    }

    /// The unigram distribution of an evalset's tokens, minus the tokenizer's special and
    /// added tokens.
    pub fn unigram(es: &EvalSet, tok: &Tokenizer) -> anyhow::Result<Self> {
        let added: HashSet<u32> = tok.get_added_tokens_decoder().into_keys().collect();
        let mut counts: std::collections::BTreeMap<u32, u64> = Default::default();
        for i in 0..es.len() {
            let t = es.token(i);
            if !added.contains(&t) {
                *counts.entry(t).or_default() += 1;
            }
        }
        Self::from_counts(counts.into_iter().collect()).ok_or_else(|| {
            input_error(format!(
                "{}: the evalset holds no ordinary tokens to draw from",
                es.dir().display()
            ))
        })
    }

    /// A unigram sampler from `(id, count)` pairs; `None` without a positive count.
    pub fn from_counts(counts: Vec<(u32, u64)>) -> Option<Self> {
        let (ids, weights): (Vec<u32>, Vec<u64>) =
            counts.into_iter().filter(|(_, c)| *c > 0).unzip();
        let weights = WeightedIndex::new(weights).ok()?;
        Some(Self::Unigram { ids, weights })
    }

    /// One token id.
    pub fn draw(&self, rng: &mut impl Rng) -> u32 {
        match self {
            Self::Uniform(ids) => ids[rng.random_range(0..ids.len())],
            Self::Unigram { ids, weights } => ids[weights.sample(rng)],
        }
    }

    /// `uniform` or `unigram`, for the manifest.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Uniform(_) => "uniform",
            Self::Unigram { .. } => "unigram",
        }
    }
}

/// A probe evalset in memory, before it is written.
#[derive(Debug, Clone)]
pub struct ProbeBuild {
    /// Every window's tokens, concatenated.
    pub tokens: Vec<u32>,
    /// Their labels (`log_freq` is filled when written).
    pub labels: Vec<TokenLabels>,
    /// One document per window.
    pub docs: Vec<DocMeta>,
    /// The windows.
    pub windows: Vec<WindowMeta>,
    /// Where the spans are.
    pub layout: ProbeLayout,
}

/// Draws every window of `spec` (which must [validate](ProbeSpec::validate)).
pub fn build(spec: &ProbeSpec, sampler: &TokenSampler) -> ProbeBuild {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let xx = ptb_id("XX").unwrap_or(0);
    let n = spec.windows * spec.window;
    let mut b = ProbeBuild {
        tokens: Vec::with_capacity(n),
        labels: Vec::with_capacity(n),
        docs: Vec::with_capacity(spec.windows),
        windows: Vec::with_capacity(spec.windows),
        layout: ProbeLayout {
            span: spec.span as u32,
            windows: Vec::with_capacity(spec.windows),
        },
    };
    for k in 0..spec.windows {
        let gap = spec.gaps[k % spec.gaps.len()];
        let first = rng.random_range(0..=spec.window - gap - spec.span);
        let mut toks: Vec<u32> = (0..spec.window).map(|_| sampler.draw(&mut rng)).collect();
        let span: Vec<u32> = (0..spec.span).map(|_| sampler.draw(&mut rng)).collect();
        toks[first..first + spec.span].copy_from_slice(&span);
        toks[first + gap..first + gap + spec.span].copy_from_slice(&span);
        let placed = ProbeWindow {
            gap: gap as u32,
            first: first as u32,
        };
        let repeats = repeat_labels(&toks);
        for (p, r) in repeats.iter().enumerate() {
            b.labels.push(TokenLabels {
                tag: xx,
                upos: Upos::X,
                open_bracket: false,
                close_bracket: false,
                repeat_len: r.repeat_len,
                copy_distance: r.copy_distance,
                log_freq: 0.0,
                word_initial: false,
                pos: p as u32,
                domain: 0,
                probe: Some(ProbeLabel::at(&placed, spec.span as u32, p as u32)),
            });
        }
        b.windows.push(WindowMeta {
            doc: k as u32,
            index: 0,
            start: b.tokens.len() as u64,
            len: spec.window as u32,
        });
        b.docs.push(DocMeta {
            id: format!("gap{gap}-{k:04}"),
            domain: 0,
        });
        b.layout.windows.push(placed);
        b.tokens.extend_from_slice(&toks);
    }
    b
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// `tokenizer.json`, or a checkpoint folder holding one.
    pub tokenizer: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// The layout.
    pub spec: ProbeSpec,
    /// Draw from this evalset's unigram distribution instead of uniformly.
    pub unigram: Option<PathBuf>,
}

/// Builds the probe evalset and writes it with `prepare`'s files into `opts.out`.
pub fn probe(opts: &ProbeOptions) -> anyhow::Result<EvalSet> {
    opts.spec.validate()?;
    let tok_path = tokenizer_file(&opts.tokenizer)?;
    let tok = crate::evalset::tokenizer::load(&tok_path)?;
    let tokenizer_hash = crate::evalset::tokenizer::hash(&tok_path)?;
    let sampler = match &opts.unigram {
        Some(dir) => unigram_sampler(dir, &tok_path, &tok)?,
        None => TokenSampler::uniform(&tok)?,
    };
    tracing::info!(
        windows = opts.spec.windows,
        window = opts.spec.window,
        span = opts.spec.span,
        gaps = ?opts.spec.gaps,
        distribution = sampler.kind(),
        "building probe"
    );
    let b = build(&opts.spec, &sampler);
    let header = Header {
        id: String::new(),
        tokenizer_hash,
        labeler_version: LABELER_VERSION.into(),
        window: opts.spec.window,
        domains: vec![PROBE_DOMAIN.to_owned()],
        docs: b.docs,
        windows: b.windows,
        tokens: 0,
        probe: Some(b.layout),
    };
    let es = write_evalset(&opts.out, header, &b.tokens, &b.labels)?;
    let sources: Vec<PathBuf> = opts.unigram.iter().cloned().collect();
    let from = export::Provenance {
        sources: &sources,
        tokenizer: &tok_path,
        skipped: 0,
        probe: Some(json!({
            "span": opts.spec.span,
            "gaps": opts.spec.gaps,
            "windows": opts.spec.windows,
            "seed": opts.spec.seed,
            "distribution": sampler.kind(),
        })),
    };
    export::write_all(&es, &TokenTexts::new(&tok), &from)?;
    Ok(es)
}

/// The unigram sampler of `--unigram DIR`, refused unless that evalset was prepared with the
/// probe's tokenizer (its token ids would mean other tokens).
fn unigram_sampler(dir: &Path, tok_path: &Path, tok: &Tokenizer) -> anyhow::Result<TokenSampler> {
    let es = EvalSet::open(dir)?;
    es.check_tokenizer(tok_path)?;
    TokenSampler::unigram(&es, tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProbeSpec {
        ProbeSpec {
            span: 4,
            gaps: vec![4, 10],
            windows: 5,
            window: 20,
            seed: 3,
        }
    }

    #[test]
    fn invalid_layouts_are_input_errors() {
        let cases: Vec<(ProbeSpec, &str)> = vec![
            (ProbeSpec { span: 0, ..spec() }, "--span must be at least 1"),
            (
                ProbeSpec {
                    gaps: vec![],
                    ..spec()
                },
                "--gaps is empty",
            ),
            (
                ProbeSpec {
                    windows: 0,
                    ..spec()
                },
                "--windows must be at least 1",
            ),
            (
                ProbeSpec {
                    gaps: vec![17],
                    ..spec()
                },
                "gap 17 + span 4 exceeds the window of 20 tokens",
            ),
            (
                ProbeSpec {
                    gaps: vec![3],
                    ..spec()
                },
                "gap 3 is shorter than the span",
            ),
            (
                ProbeSpec {
                    gaps: vec![5, 5],
                    ..spec()
                },
                "--gaps lists 5 twice",
            ),
        ];
        for (s, want) in cases {
            let e = s.validate().expect_err(want);
            assert!(crate::error::is_input_error(&e), "{e}");
            assert!(e.to_string().contains(want), "{e} vs {want}");
        }
        // The tightest fit is allowed: the second copy ends at the window's last token.
        let tight = ProbeSpec {
            gaps: vec![16],
            ..spec()
        };
        tight.validate().expect("gap + span == window fits");
        let b = build(&tight, &TokenSampler::Uniform(vec![1, 2, 3]));
        assert!(b.layout.windows.iter().all(|w| w.first == 0));
    }

    #[test]
    fn gap_lists() {
        assert_eq!(
            parse_gaps("64, 128,1792").expect("gaps"),
            vec![64, 128, 1792]
        );
        assert!(parse_gaps("").expect("empty").is_empty());
        let e = parse_gaps("64,x").expect_err("x");
        assert!(e.to_string().contains("`x` is not a number"), "{e}");
        assert!(parse_gaps("-5").is_err());
    }

    #[test]
    fn gaps_cycle_over_windows() {
        let b = build(&spec(), &TokenSampler::Uniform(vec![7, 8, 9]));
        let gaps: Vec<u32> = b.layout.windows.iter().map(|w| w.gap).collect();
        assert_eq!(gaps, vec![4, 10, 4, 10, 4]);
        assert_eq!(b.docs[1].id, "gap10-0001");
        b.layout.check(&b.windows).expect("consistent layout");
    }

    #[test]
    fn unigram_draws_follow_counts() {
        let s = TokenSampler::from_counts(vec![(5, 3), (6, 0), (9, 1)]).expect("sampler");
        let mut rng = StdRng::seed_from_u64(1);
        let draws: Vec<u32> = (0..4000).map(|_| s.draw(&mut rng)).collect();
        assert!(draws.iter().all(|t| *t == 5 || *t == 9));
        let fives = draws.iter().filter(|t| **t == 5).count() as f64 / 4000.0;
        assert!((fives - 0.75).abs() < 0.03, "{fives}");
        assert!(TokenSampler::from_counts(vec![(1, 0)]).is_none());
    }
}
