//! The gap regressed on category indicators with controls, by least squares with standard
//! errors clustered by document (DESIGN §1): it separates a category's own effect from
//! confounds such as frequency, position, subword status and local reuse.
//!
//! Columns: an intercept; one indicator per UPOS tag except the most frequent (the reference);
//! open and close bracket indicators; and the controls ln(frequency), ln(position),
//! word-initial, one indicator per `repeat_len` bin above 0, and ln(copy distance) for tokens
//! that repeat something (0 otherwise, so with the bin indicators it measures the effect of
//! distance among copies). Columns without any non-zero value are left out.

use serde::Serialize;

use crate::analysis::compare::PairedInput;
use crate::analysis::stats::ols::{self, Coefficient, Design};
use crate::evalset::categories::{bin_of, REPEAT_BINS};
use crate::evalset::labels::TokenLabels;
use crate::evalset::scores::EvalScores;
use crate::evalset::tagset::Upos;

/// What a regression column stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The intercept: the reference category's gap with every control at zero.
    Intercept,
    /// A category indicator: its effect relative to the reference, controls held fixed.
    Category,
    /// A control.
    Control,
}

/// One coefficient with its role.
#[derive(Debug, Clone, Serialize)]
pub struct Term {
    /// Role of the column.
    pub role: Role,
    /// The estimate, its cluster-robust standard error and 95% interval.
    #[serde(flatten)]
    pub coefficient: Coefficient,
}

/// The fitted regression.
#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    /// The UPOS tag left out as the reference level.
    pub reference_upos: String,
    /// Tokens.
    pub n: usize,
    /// Document clusters.
    pub clusters: usize,
    /// Rank of the design (below the number of terms when columns are collinear).
    pub rank: usize,
    /// R².
    pub r_squared: f64,
    /// Coefficients in column order.
    pub terms: Vec<Term>,
}

#[derive(Clone, Copy)]
enum Col {
    Intercept,
    Upos(Upos),
    OpenBracket,
    CloseBracket,
    LogFreq,
    LogPos,
    WordInitial,
    RepeatBin(usize),
    LogCopyDistance,
}

impl Col {
    fn value(self, l: &TokenLabels) -> f64 {
        let flag = |b: bool| f64::from(u8::from(b));
        match self {
            Col::Intercept => 1.0,
            Col::Upos(u) => flag(l.upos == u),
            Col::OpenBracket => flag(l.open_bracket),
            Col::CloseBracket => flag(l.close_bracket),
            Col::LogFreq => f64::from(l.log_freq),
            Col::LogPos => f64::from(l.pos.max(1)).ln(),
            Col::WordInitial => flag(l.word_initial),
            Col::RepeatBin(b) => flag(bin_of(&REPEAT_BINS, u32::from(l.repeat_len)) == Some(b)),
            Col::LogCopyDistance => {
                if l.repeat_len > 0 {
                    f64::from(l.copy_distance.max(1)).ln()
                } else {
                    0.0
                }
            }
        }
    }

    fn name(self) -> String {
        match self {
            Col::Intercept => "intercept".into(),
            Col::Upos(u) => format!("upos={}", u.name()),
            Col::OpenBracket => "bracket=open".into(),
            Col::CloseBracket => "bracket=close".into(),
            Col::LogFreq => "log_freq".into(),
            Col::LogPos => "log_pos".into(),
            Col::WordInitial => "word_initial".into(),
            Col::RepeatBin(b) => format!("repeat_len={}", REPEAT_BINS[b].2),
            Col::LogCopyDistance => "log_copy_distance".into(),
        }
    }

    fn role(self) -> Role {
        match self {
            Col::Intercept => Role::Intercept,
            Col::Upos(_) | Col::OpenBracket | Col::CloseBracket => Role::Category,
            _ => Role::Control,
        }
    }
}

struct TokenDesign<'a> {
    labels: &'a [TokenLabels],
    tokens: &'a [usize],
    cols: Vec<Col>,
    names: Vec<String>,
}

impl Design for TokenDesign<'_> {
    fn names(&self) -> &[String] {
        &self.names
    }
    fn rows(&self) -> usize {
        self.tokens.len()
    }
    fn row(&self, i: usize, out: &mut [f64]) {
        let l = &self.labels[self.tokens[i]];
        for (o, c) in out.iter_mut().zip(&self.cols) {
            *o = c.value(l);
        }
    }
}

/// Fits the regression over `tokens` (global indices scored by both models).
pub fn fit(
    input: &PairedInput,
    tokens: &[usize],
    a: &EvalScores,
    b: &EvalScores,
) -> anyhow::Result<Regression> {
    let mut upos_count = [0usize; Upos::ALL.len()];
    for &i in tokens {
        upos_count[input.labels[i].upos as usize] += 1;
    }
    let reference = Upos::ALL
        .iter()
        .copied()
        .max_by_key(|u| (upos_count[*u as usize], std::cmp::Reverse(*u)))
        .unwrap_or(Upos::Noun);
    let mut candidates = vec![Col::Intercept];
    candidates.extend(
        Upos::ALL
            .iter()
            .filter(|&&u| u != reference)
            .map(|&u| Col::Upos(u)),
    );
    candidates.extend([
        Col::OpenBracket,
        Col::CloseBracket,
        Col::LogFreq,
        Col::LogPos,
        Col::WordInitial,
    ]);
    candidates.extend((1..REPEAT_BINS.len()).map(Col::RepeatBin));
    candidates.push(Col::LogCopyDistance);
    // A column that is zero on every token has no estimate at all.
    let cols: Vec<Col> = candidates
        .into_iter()
        .filter(|c| tokens.iter().any(|&i| c.value(&input.labels[i]) != 0.0))
        .collect();
    let design = TokenDesign {
        labels: input.labels,
        tokens,
        names: cols.iter().map(|c| c.name()).collect(),
        cols: cols.clone(),
    };
    let y: Vec<f64> = tokens
        .iter()
        .map(|&i| f64::from(a.loss[i]) - f64::from(b.loss[i]))
        .collect();
    let groups: Vec<u32> = tokens.iter().map(|&i| input.docs[i]).collect();
    let f = ols::fit(&design, &y, &groups)?;
    if f.rank < cols.len() {
        tracing::warn!(
            "regression: {} terms but rank {}: collinear columns are not identified",
            cols.len(),
            f.rank
        );
    }
    Ok(Regression {
        reference_upos: reference.name().to_owned(),
        n: f.n,
        clusters: f.clusters,
        rank: f.rank,
        r_squared: f.r_squared,
        terms: cols
            .iter()
            .zip(f.coefficients)
            .map(|(c, coefficient)| Term {
                role: c.role(),
                coefficient,
            })
            .collect(),
    })
}
