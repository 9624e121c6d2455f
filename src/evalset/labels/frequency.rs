//! `log_freq` (DESIGN §5): natural log of a token id's count over the whole evalset.
//!
//! Counts cover every token of every window, including each window's first token,
//! which is not scored but is still text the models read.

use std::collections::HashMap;

/// Token-id counts over an evalset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrequencyTable {
    // A map rather than a dense vector: ids come from a user-supplied tokenizer, so
    // their range is not ours to trust.
    counts: HashMap<u32, u64>,
    total: u64,
}

impl FrequencyTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts over all the given windows.
    pub fn from_windows<'a, I>(windows: I) -> Self
    where
        I: IntoIterator<Item = &'a [u32]>,
    {
        let mut table = Self::new();
        for w in windows {
            table.add(w);
        }
        table
    }

    /// Adds one window's tokens.
    pub fn add(&mut self, tokens: &[u32]) {
        for &t in tokens {
            *self.counts.entry(t).or_insert(0) += 1;
        }
        self.total += tokens.len() as u64;
    }

    /// How often `id` was counted.
    pub fn count(&self, id: u32) -> u64 {
        self.counts.get(&id).copied().unwrap_or(0)
    }

    /// Natural log of the count of `id`; `None` for an id never counted (its log
    /// would be −∞, which JSON and the regressions cannot carry).
    pub fn log_freq(&self, id: u32) -> Option<f32> {
        match self.count(id) {
            0 => None,
            c => Some((c as f64).ln() as f32),
        }
    }

    /// `log_freq` of each token of a window that was counted into this table.
    ///
    /// # Errors
    ///
    /// When a token was never counted: labelling a window that the table did not
    /// see is a bug in the caller, and a silent 0 would skew `log_freq` filters.
    pub fn log_freqs(&self, tokens: &[u32]) -> anyhow::Result<Vec<f32>> {
        tokens
            .iter()
            .map(|&t| {
                self.log_freq(t).ok_or_else(|| {
                    anyhow::anyhow!("token id {t} is not in the evalset's frequency table")
                })
            })
            .collect()
    }

    /// Number of tokens counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of distinct ids counted.
    pub fn distinct(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_across_windows() {
        let a = [1u32, 2, 2, 3];
        let b = [2u32, 9];
        let f = FrequencyTable::from_windows([&a[..], &b[..]]);
        assert_eq!(f.count(2), 3);
        assert_eq!(f.count(4), 0);
        assert_eq!(f.total(), 6);
        assert_eq!(f.distinct(), 4);
        assert_eq!(f.log_freq(1), Some(0.0));
        assert!((f.log_freq(2).unwrap() - 3f32.ln()).abs() < 1e-6);
        assert_eq!(f.log_freq(4), None);
        let v = f.log_freqs(&b).unwrap();
        assert!((v[0] - 3f32.ln()).abs() < 1e-6 && v[1] == 0.0);
        assert!(f
            .log_freqs(&[4])
            .unwrap_err()
            .to_string()
            .contains("token id 4"));
    }
}
