//! One pass's weight table (feature key → sparse class weights) and greedy decoding
//! with it.

use super::features::{SentenceFeatures, START_1, START_2};

/// One weight: the class it votes for and by how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Entry {
    pub(super) w: f32,
    pub(super) class: u8,
}

/// A hashed feature table: feature key → sparse class weights.
pub(super) struct Weights {
    /// Open-addressing table of (key, first entry << 8 | entry count); count 0 = empty.
    slots: Vec<(u32, u32)>,
    mask: usize,
    /// Sorted keys and their entry ranges, kept for saving.
    pub(super) keys: Vec<u32>,
    pub(super) offsets: Vec<u32>,
    pub(super) entries: Vec<Entry>,
}

/// Entry ranges are packed into 24 bits.
pub(super) const MAX_ENTRIES: usize = 1 << 24;

impl Weights {
    pub(super) fn new(keys: Vec<u32>, offsets: Vec<u32>, entries: Vec<Entry>) -> Weights {
        debug_assert!(entries.len() < MAX_ENTRIES);
        let cap = (keys.len() * 2).next_power_of_two().max(16);
        let mask = cap - 1;
        let mut slots = vec![(0u32, 0u32); cap];
        for (idx, &k) in keys.iter().enumerate() {
            let (a, b) = (offsets[idx], offsets[idx + 1]);
            let mut s = slot_of(k, mask);
            while slots[s].1 != 0 {
                s = (s + 1) & mask;
            }
            slots[s] = (k, a << 8 | (b - a));
        }
        Weights {
            slots,
            mask,
            keys,
            offsets,
            entries,
        }
    }

    #[inline]
    fn add_scores(&self, feats: &[u32], scores: &mut [f32]) {
        for &key in feats {
            let mut s = slot_of(key, self.mask);
            loop {
                let (k, packed) = self.slots[s];
                if packed == 0 {
                    break;
                }
                if k == key {
                    let a = (packed >> 8) as usize;
                    let n = (packed & 0xff) as usize;
                    for e in &self.entries[a..a + n] {
                        scores[e.class as usize] += e.w;
                    }
                    break;
                }
                s = (s + 1) & self.mask;
            }
        }
    }
}

#[inline]
fn slot_of(key: u32, mask: usize) -> usize {
    // Keys are already hashes; a multiply spreads them over the table's low bits.
    (key.wrapping_mul(0x9E37_79B1) as usize) & mask
}

pub(super) fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

/// Every word's static features, flat: word `i`'s are `feats[starts[i]..starts[i + 1]]`.
pub(super) struct Statics<'a> {
    pub(super) feats: &'a [u32],
    pub(super) starts: &'a [usize],
}

pub(super) struct Scratch {
    feats: Vec<u32>,
    scores: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(n_classes: usize) -> Scratch {
        Scratch {
            feats: Vec::with_capacity(32),
            scores: vec![0.0; n_classes],
        }
    }
}

/// Greedy left-to-right decoding with one pass's weights.
pub(super) fn decode(
    w: &Weights,
    ctx: &SentenceFeatures,
    statics: &Statics<'_>,
    fixed: &[Option<u8>],
    prior: Option<&[u8]>,
    s: &mut Scratch,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(fixed.len());
    let (mut t1, mut t2) = (START_1, START_2);
    for (i, f) in fixed.iter().enumerate() {
        let class = match f {
            Some(c) => *c,
            None => {
                s.feats.clear();
                ctx.dynamic_features(i, t1, t2, &mut s.feats);
                if let Some(p) = prior {
                    ctx.stacked_features(i, t1, p, &mut s.feats);
                }
                s.scores.iter_mut().for_each(|x| *x = 0.0);
                w.add_scores(
                    &statics.feats[statics.starts[i]..statics.starts[i + 1]],
                    &mut s.scores,
                );
                w.add_scores(&s.feats, &mut s.scores);
                argmax(&s.scores) as u8
            }
        };
        out.push(class);
        t2 = t1;
        t1 = class as u64;
    }
    out
}
