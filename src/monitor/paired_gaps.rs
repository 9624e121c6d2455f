//! Paired gaps to the baseline, computed as checkpoints are committed. Where a run's
//! checkpoint and one of its baseline's share kind and tokens seen, `run − baseline` is taken
//! token by token over the same tokens, for every filter and every token-selecting recall row,
//! with a document-cluster bootstrap interval; the gap charts draw it as their CI. The `rise`
//! alert rule pairs checkpoints through the same token sets.

use std::collections::HashMap;

use crate::analysis::recall::RecallRow;
use crate::analysis::stats::paired::{paired_diff, PairedDiff};
use crate::evalset::loaded::LoadedEvalset;
use crate::store::Store;

/// Which scored tokens each filter and recall row of an evalset selects, and the documents.
pub struct TokenSets {
    docs: Vec<u32>,
    doc_count: usize,
    masks: Vec<(String, Vec<bool>)>,
}

impl TokenSets {
    /// The masks of the evalset's filters and of the recall cliff and copy-n rows.
    pub fn new(es: &LoadedEvalset) -> TokenSets {
        let scored = |keep: &dyn Fn(&crate::evalset::labels::TokenLabels) -> bool| -> Vec<bool> {
            es.labels.iter().map(|t| t.pos > 0 && keep(t)).collect()
        };
        let mut masks: Vec<(String, Vec<bool>)> = es
            .filters
            .iter()
            .map(|f| (f.name().to_string(), scored(&|t| f.matches(t))))
            .collect();
        for row in RecallRow::cliff().into_iter().chain(RecallRow::copy_n()) {
            let mask = scored(&|t| row.selects(t));
            masks.push((row.name(), mask));
        }
        TokenSets::from_parts(es.docs.clone(), es.es.header().docs.len(), masks)
    }

    /// Token sets from their parts: `docs[i]` is token i's document (of `doc_count`).
    pub fn from_parts(docs: Vec<u32>, doc_count: usize, masks: Vec<(String, Vec<bool>)>) -> Self {
        TokenSets {
            docs,
            doc_count,
            masks,
        }
    }

    /// Mean of `a − b` over `row`'s tokens with its 95% interval; `None` for a row these sets
    /// do not know.
    pub fn paired(
        &self,
        row: &str,
        a: &[f32],
        b: &[f32],
        resamples: usize,
        seed: u64,
    ) -> Option<PairedDiff> {
        let (_, mask) = self.masks.iter().find(|(name, _)| name == row)?;
        Some(self.diff(mask, a, b, resamples, seed))
    }

    fn diff(&self, mask: &[bool], a: &[f32], b: &[f32], resamples: usize, seed: u64) -> PairedDiff {
        paired_diff(
            a,
            b,
            |i| mask.get(i).copied().unwrap_or(false),
            &self.docs,
            self.doc_count,
            resamples,
            seed,
        )
    }
}

/// Computes and stores the paired gaps of every pairing not yet stored, on every evalset of
/// `sets`; returns how many pairings it stored.
pub fn update(
    store: &mut Store,
    sets: &HashMap<i64, TokenSets>,
    resamples: usize,
    seed: u64,
) -> anyhow::Result<usize> {
    let mut stored = 0;
    for (&evalset_id, set) in sets {
        for pairing in store.unpaired(evalset_id)? {
            let (Some(run), Some(base)) = (
                store.token_scores(pairing.checkpoint, evalset_id)?,
                store.token_scores(pairing.baseline, evalset_id)?,
            ) else {
                continue;
            };
            let gaps: Vec<(String, PairedDiff)> = set
                .masks
                .iter()
                .map(|(name, mask)| {
                    let d = set.diff(mask, &run.loss, &base.loss, resamples, seed);
                    (name.clone(), d)
                })
                .collect();
            store.record_paired_gaps(pairing, evalset_id, &gaps)?;
            stored += 1;
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    const TOKENS: usize = 48;

    /// Token i belongs to document i / 6; the `even` row selects even positions.
    fn sets() -> TokenSets {
        let all: Vec<bool> = (0..TOKENS).map(|i| i > 0).collect();
        let even: Vec<bool> = (0..TOKENS).map(|i| i > 0 && i % 2 == 0).collect();
        TokenSets::from_parts(
            (0..TOKENS as u32).map(|i| i / 6).collect(),
            TOKENS / 6,
            vec![
                ("all".into(), all),
                ("even".into(), even),
                ("none".into(), vec![false; TOKENS]),
            ],
        )
    }

    fn losses(seed: u32) -> Vec<f32> {
        (0..TOKENS as u32)
            .map(|i| ((i * 7 + seed * 13) % 11) as f32 * 0.25 + 1.0)
            .collect()
    }

    #[test]
    fn gaps_pair_checkpoints_of_the_same_kind_and_tokens_once() {
        let (_dir, mut store, es) = testing::store(TOKENS);
        let base = testing::run(&mut store, "tr", None);
        let run = testing::run(&mut store, "hy", Some("tr"));
        testing::scored(&mut store, base, es, 100, false, &losses(1));
        testing::scored(&mut store, base, es, 100, true, &losses(2));
        let r_stable = testing::scored(&mut store, run, es, 100, false, &losses(3));
        // Annealed at 100 but the baseline's annealed checkpoint is paired, not its stable one;
        // the run's step 150 has no baseline checkpoint at its tokens.
        let r_anneal = testing::scored(&mut store, run, es, 100, true, &losses(4));
        testing::scored(&mut store, run, es, 150, false, &losses(5));
        let sets: HashMap<i64, TokenSets> = [(es, sets())].into();

        assert_eq!(update(&mut store, &sets, 200, 0).expect("update"), 2);
        assert_eq!(update(&mut store, &sets, 200, 0).expect("again"), 0);
        let gaps = store.paired_gaps().expect("gaps");
        assert_eq!(gaps.len(), 4, "two pairings × the two rows with tokens");

        // Stable pairs with stable (losses 3 − 1), annealed with annealed (4 − 2).
        for (checkpoint, run_seed, base_seed) in [(r_stable, 3, 1), (r_anneal, 4, 2)] {
            let (a, b) = (losses(run_seed), losses(base_seed));
            for (row, every) in [("all", 1usize), ("even", 2)] {
                let picked: Vec<usize> = (1..TOKENS).filter(|i| i % every == 0).collect();
                let want = picked
                    .iter()
                    .map(|&i| f64::from(a[i]) - f64::from(b[i]))
                    .sum::<f64>()
                    / picked.len() as f64;
                let got = gaps[&(checkpoint, es, row.to_string())];
                assert!(
                    (got.mean - want).abs() < 1e-9,
                    "{row}: {} vs {want}",
                    got.mean
                );
                assert_eq!(got.n, picked.len());
                assert!(got.lo <= got.mean && got.mean <= got.hi, "{got:?}");
            }
            assert!(!gaps.contains_key(&(checkpoint, es, "none".into())));
        }
        assert!(store.unpaired(es).expect("unpaired").is_empty());
    }
}
