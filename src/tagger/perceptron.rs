//! Averaged perceptron over hashed features, greedy left-to-right decoding, and the
//! compact on-disk model format.
//!
//! Decoding runs twice: the second pass has the same features plus the first pass's
//! classes for the current word and the two after it, which gives it right context that
//! a left-to-right tagger otherwise lacks (+0.2–0.3 points UPOS on EWT). It is trained
//! on first-pass output from jackknifed models, so it learns how far to trust it.
//!
//! Classes are the (PTB, UPOS) pairs seen in training: the PTB→UPOS map is not a
//! function (`IN` is ADP or SCONJ, `VB*` is VERB or AUX), so predicting the pair lets the
//! tag history and the word context decide both at once.
//!
//! Features are 32-bit hashes of (template, parts). Each word's string properties are
//! hashed once and combined with cheap integer mixing, so tagging allocates little and
//! training and inference share one feature function bit for bit.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};

use anyhow::{Context, Result};

use crate::error::input_error;
use crate::tagset::{Upos, PTB_TAGS};

/// File magic of a tagger model.
pub const MAGIC: &[u8; 8] = b"FMTAGGER";
/// Format version; bump whenever the features or the layout change.
pub const VERSION: u32 = 1;

/// A tag class: a (PTB tag id, UPOS) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    /// Index into [`PTB_TAGS`].
    pub xpos: u8,
    /// Universal POS.
    pub upos: Upos,
}

// ---------------------------------------------------------------------------------------
// Hashing

/// A stable 64-bit hash; stored models depend on it, so it must never change silently.
#[derive(Clone, Copy)]
struct StableHash(u64);

impl StableHash {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;

    fn new(seed: u64) -> Self {
        StableHash(seed.wrapping_mul(Self::K) ^ 0x2545_F491_4F6C_DD1D)
    }

    #[inline]
    fn word(self, x: u64) -> Self {
        StableHash((self.0.rotate_left(5) ^ x).wrapping_mul(Self::K))
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self = self.word(u64::from_le_bytes(a));
        }
        let rest = chunks.remainder();
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        // The length keeps "ab" and "ab\0" apart.
        self.word(u64::from_le_bytes(a)).word(b.len() as u64)
    }

    #[inline]
    fn finish(self) -> u64 {
        // murmur3 fmix64, so the truncation to 32 bits below keeps the high bits' entropy.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

fn hash_str(field: u64, s: &str) -> u64 {
    StableHash::new(field).bytes(s.as_bytes()).finish()
}

#[inline]
fn feat1(template: u64, a: u64) -> u32 {
    let h = StableHash::new(template).word(a).finish();
    (h >> 32) as u32
}

#[inline]
fn feat2(template: u64, a: u64, b: u64) -> u32 {
    let h = StableHash::new(template).word(a).word(b).finish();
    (h >> 32) as u32
}

#[inline]
fn feat3(template: u64, a: u64, b: u64, c: u64) -> u32 {
    let h = StableHash::new(template).word(a).word(b).word(c).finish();
    (h >> 32) as u32
}

// ---------------------------------------------------------------------------------------
// Per-word properties

const F_RAW: usize = 0;
const F_LOWER: usize = 1;
const F_SUF1: usize = 2; // SUF1..SUF4 = 2..=5
const F_PRE1: usize = 6; // PRE1..PRE3 = 6..=8
const F_SHAPE: usize = 9;
const F_FLAGS: usize = 10;
const F_LEN: usize = 11;
const F_SUF5: usize = 12;
const F_PRE4: usize = 13;
const N_FIELDS: usize = 14;

type WordHashes = [u64; N_FIELDS];

/// The shape of a word with runs collapsed: `Hello` → `Xx`, `3.14` → `d.d`, `e-mail` → `x-x`.
fn shape(word: &str, out: &mut String) {
    out.clear();
    let mut last = '\0';
    let mut run = 0;
    for c in word.chars() {
        let s = if c.is_uppercase() {
            'X'
        } else if c.is_lowercase() {
            'x'
        } else if c.is_ascii_digit() {
            'd'
        } else if c.is_alphabetic() {
            'a'
        } else if c.is_numeric() {
            'n'
        } else {
            c
        };
        if s == last {
            run += 1;
            // Keep short runs distinct from long ones (`Xx` vs `Xxx`): 3+ collapses.
            if run >= 3 {
                continue;
            }
        } else {
            run = 1;
            last = s;
        }
        out.push(s);
    }
}

fn word_hashes(word: &str, scratch: &mut String) -> WordHashes {
    let mut h = [0u64; N_FIELDS];
    h[F_RAW] = hash_str(F_RAW as u64, word);
    let owned;
    let lower: &str = if word.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        owned = word.to_lowercase();
        &owned
    } else {
        word
    };
    h[F_LOWER] = hash_str(F_LOWER as u64, lower);
    // Affixes are counted in chars, so they never cut a UTF-8 sequence.
    let suffix = |k: usize| {
        lower
            .char_indices()
            .rev()
            .nth(k - 1)
            .map_or(lower, |(i, _)| &lower[i..])
    };
    let prefix = |k: usize| {
        lower
            .char_indices()
            .nth(k)
            .map_or(lower, |(i, _)| &lower[..i])
    };
    for k in 1..=4 {
        h[F_SUF1 + k - 1] = hash_str((F_SUF1 + k - 1) as u64, suffix(k));
    }
    for k in 1..=3 {
        h[F_PRE1 + k - 1] = hash_str((F_PRE1 + k - 1) as u64, prefix(k));
    }
    h[F_SUF5] = hash_str(F_SUF5 as u64, suffix(5));
    h[F_PRE4] = hash_str(F_PRE4 as u64, prefix(4));
    let nch = lower.chars().count();
    shape(word, scratch);
    h[F_SHAPE] = hash_str(F_SHAPE as u64, scratch);
    let mut flags = 0u64;
    let mut chars = word.chars();
    if chars.next().is_some_and(|c| c.is_uppercase()) {
        flags |= 1;
    }
    if word.chars().any(|c| c.is_ascii_digit()) {
        flags |= 2;
    }
    if word.chars().any(|c| c.is_alphabetic()) && !word.chars().any(|c| c.is_lowercase()) {
        flags |= 4;
    }
    if word.contains('-') {
        flags |= 8;
    }
    if word.chars().any(|c| c.is_alphanumeric()) {
        flags |= 16;
    }
    h[F_FLAGS] = StableHash::new(F_FLAGS as u64).word(flags).finish();
    let len_bucket = match nch {
        0..=4 => nch as u64,
        5..=6 => 5,
        7..=9 => 6,
        _ => 7,
    };
    h[F_LEN] = StableHash::new(F_LEN as u64).word(len_bucket).finish();
    h
}

fn pad_hashes(which: u64) -> WordHashes {
    let mut h = [0u64; N_FIELDS];
    for (f, slot) in h.iter_mut().enumerate() {
        *slot = StableHash::new(0xBAD0_0000 + which).word(f as u64).finish();
    }
    h
}

/// Word properties of a sentence with two padding words on each side.
pub(crate) struct SentenceFeatures {
    words: Vec<WordHashes>,
}

/// Stands for a forgotten word's identity hashes.
const UNSEEN: u64 = 0;

/// Tag ids used for "before the sentence" and "after the sentence".
const START_1: u64 = 1000;
const START_2: u64 = 1001;
const END_1: u64 = 1002;
const END_2: u64 = 1003;

impl SentenceFeatures {
    pub(crate) fn new<S: AsRef<str>>(words: &[S]) -> Self {
        let mut v = Vec::with_capacity(words.len() + 4);
        v.push(pad_hashes(0));
        v.push(pad_hashes(1));
        let mut scratch = String::new();
        for w in words {
            v.push(word_hashes(w.as_ref(), &mut scratch));
        }
        v.push(pad_hashes(2));
        v.push(pad_hashes(3));
        SentenceFeatures { words: v }
    }

    /// Hides word `i`'s identity (training only), so the model learns what to do with
    /// words it has never seen from the rare words it has.
    fn forget_word(&mut self, i: usize) {
        let w = &mut self.words[i + 2];
        w[F_RAW] = UNSEEN;
        w[F_LOWER] = UNSEEN;
    }

    /// Features that do not depend on predicted tags.
    fn static_features(&self, i: usize, out: &mut Vec<u32>) {
        let w = |d: isize| &self.words[(i as isize + 2 + d) as usize];
        let c = w(0);
        let (m1, m2, p1, p2) = (w(-1), w(-2), w(1), w(2));
        // A feature built from a forgotten word does not exist, exactly as for a word
        // never seen in training.
        let mut push = |parts_ok: bool, f: u32| {
            if parts_ok {
                out.push(f)
            }
        };
        let ok = |h: u64| h != UNSEEN;
        push(true, feat1(100, 0));
        push(ok(c[F_RAW]), feat1(101, c[F_RAW]));
        push(ok(c[F_LOWER]), feat1(102, c[F_LOWER]));
        for k in 0..4 {
            push(true, feat1(103 + k as u64, c[F_SUF1 + k]));
        }
        for k in 0..3 {
            push(true, feat1(107 + k as u64, c[F_PRE1 + k]));
        }
        push(true, feat1(110, c[F_SHAPE]));
        push(true, feat1(111, c[F_FLAGS]));
        push(true, feat2(112, c[F_FLAGS], (i == 0) as u64));
        push(true, feat1(113, c[F_LEN]));
        push(ok(m1[F_LOWER]), feat1(114, m1[F_LOWER]));
        push(ok(m2[F_LOWER]), feat1(115, m2[F_LOWER]));
        push(ok(p1[F_LOWER]), feat1(116, p1[F_LOWER]));
        push(ok(p2[F_LOWER]), feat1(117, p2[F_LOWER]));
        push(true, feat1(118, m1[F_SUF1 + 2]));
        push(true, feat1(119, p1[F_SUF1 + 2]));
        push(true, feat1(120, m1[F_SHAPE]));
        push(true, feat1(121, p1[F_SHAPE]));
        push(
            ok(c[F_LOWER]) && ok(p1[F_LOWER]),
            feat2(122, c[F_LOWER], p1[F_LOWER]),
        );
        push(
            ok(c[F_LOWER]) && ok(m1[F_LOWER]),
            feat2(123, m1[F_LOWER], c[F_LOWER]),
        );
        push(
            ok(c[F_LOWER]) && ok(m1[F_LOWER]) && ok(p1[F_LOWER]),
            feat3(124, m1[F_LOWER], c[F_LOWER], p1[F_LOWER]),
        );
        push(ok(p1[F_LOWER]), feat2(125, c[F_SUF1 + 2], p1[F_LOWER]));
        push(ok(m1[F_LOWER]), feat2(126, m1[F_LOWER], c[F_SUF1 + 2]));
        push(true, feat2(127, c[F_SHAPE], p1[F_SHAPE]));
        push(true, feat1(128, p1[F_SUF1 + 1]));
        push(
            ok(p1[F_LOWER]) && ok(p2[F_LOWER]),
            feat2(129, p1[F_LOWER], p2[F_LOWER]),
        );
        push(true, feat1(130, c[F_SUF5]));
        push(true, feat1(131, c[F_PRE4]));
    }

    /// Features that depend on the two previous predicted classes.
    fn dynamic_features(&self, i: usize, t1: u64, t2: u64, out: &mut Vec<u32>) {
        let c = &self.words[i + 2];
        let p1 = &self.words[i + 3];
        let (cl, pl) = (c[F_LOWER] != UNSEEN, p1[F_LOWER] != UNSEEN);
        out.push(feat1(200, t1));
        out.push(feat1(201, t2));
        out.push(feat2(202, t1, t2));
        if cl {
            out.push(feat2(203, t1, c[F_LOWER]));
            out.push(feat3(206, t1, t2, c[F_LOWER]));
        }
        if pl {
            out.push(feat2(204, t1, p1[F_LOWER]));
        }
        out.push(feat2(205, t1, c[F_SUF1 + 2]));
    }

    /// Second-pass features: the first pass's classes for this word and the two after it.
    fn stacked_features(&self, i: usize, t1: u64, prior: &[u8], out: &mut Vec<u32>) {
        let c = &self.words[i + 2];
        let at = |k: usize, pad: u64| prior.get(k).map_or(pad, |&t| t as u64);
        let a0 = at(i, END_1);
        let a1 = at(i + 1, END_1);
        let a2 = at(i + 2, END_2);
        out.push(feat1(300, a0));
        out.push(feat1(301, a1));
        out.push(feat1(302, a2));
        out.push(feat2(303, a1, a2));
        out.push(feat2(304, t1, a1));
        out.push(feat2(307, a0, a1));
        out.push(feat3(309, t1, a0, a1));
        out.push(feat2(308, a1, c[F_SUF1 + 2]));
        if c[F_LOWER] != UNSEEN {
            out.push(feat2(305, a0, c[F_LOWER]));
            out.push(feat2(306, a1, c[F_LOWER]));
        }
    }

    /// All features of word `i` for a pass (`prior` = first-pass classes, second pass only).
    fn features(&self, i: usize, t1: u64, t2: u64, prior: Option<&[u8]>, out: &mut Vec<u32>) {
        self.static_features(i, out);
        self.dynamic_features(i, t1, t2, out);
        if let Some(p) = prior {
            self.stacked_features(i, t1, p, out);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Weights of one pass

/// One weight: the class it votes for and by how much.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    w: f32,
    class: u8,
}

/// A hashed feature table: feature key → sparse class weights.
struct Weights {
    /// Open-addressing table of (key, first entry << 8 | entry count); count 0 = empty.
    slots: Vec<(u32, u32)>,
    mask: usize,
    /// Sorted keys and their entry ranges, kept for saving.
    keys: Vec<u32>,
    offsets: Vec<u32>,
    entries: Vec<Entry>,
}

/// Entry ranges are packed into 24 bits.
const MAX_ENTRIES: usize = 1 << 24;

impl Weights {
    fn new(keys: Vec<u32>, offsets: Vec<u32>, entries: Vec<Entry>) -> Weights {
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

fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

// ---------------------------------------------------------------------------------------
// The trained model

/// A trained model: classes, a tag dictionary, and one or two passes of weights (the
/// second pass sees the first pass's classes to the right of each word).
pub struct Model {
    classes: Vec<Class>,
    /// Frequent words that always had one class in training: tagged without scoring.
    tagdict: HashMap<String, u8>,
    passes: Vec<Weights>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("classes", &self.classes.len())
            .field("passes", &self.passes.len())
            .field("features", &self.num_features())
            .field("tagdict", &self.tagdict.len())
            .finish()
    }
}

impl Model {
    /// The classes this model predicts.
    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// Number of features with at least one weight, over all passes.
    pub fn num_features(&self) -> usize {
        self.passes.iter().map(|p| p.keys.len()).sum()
    }

    /// Number of decoding passes (2 when the second pass refines the first).
    pub fn num_passes(&self) -> usize {
        self.passes.len()
    }

    /// Number of weights, over all passes.
    pub fn num_weights(&self) -> usize {
        self.passes.iter().map(|p| p.entries.len()).sum()
    }

    /// A copy without the weights of magnitude at most `min_weight`.
    pub fn pruned(&self, min_weight: f32) -> Model {
        let passes = self
            .passes
            .iter()
            .map(|w| {
                let (mut keys, mut offsets, mut entries) = (Vec::new(), vec![0u32], Vec::new());
                for (i, &k) in w.keys.iter().enumerate() {
                    let before = entries.len();
                    let range = w.offsets[i] as usize..w.offsets[i + 1] as usize;
                    entries.extend(w.entries[range].iter().filter(|e| e.w.abs() > min_weight));
                    if entries.len() > before {
                        keys.push(k);
                        offsets.push(entries.len() as u32);
                    }
                }
                Weights::new(keys, offsets, entries)
            })
            .collect();
        Model {
            classes: self.classes.clone(),
            tagdict: self.tagdict.clone(),
            passes,
        }
    }

    /// Tags one sentence, returning class indices.
    pub(crate) fn predict<S: AsRef<str>>(&self, words: &[S]) -> Vec<u8> {
        let ctx = SentenceFeatures::new(words);
        let fixed: Vec<Option<u8>> = words
            .iter()
            .map(|w| self.tagdict.get(w.as_ref()).copied())
            .collect();
        // Static features are the same in every pass: compute them once.
        let mut statics = Vec::with_capacity(words.len() * 36);
        let mut starts = Vec::with_capacity(words.len() + 1);
        for (i, f) in fixed.iter().enumerate() {
            starts.push(statics.len());
            if f.is_none() {
                ctx.static_features(i, &mut statics);
            }
        }
        starts.push(statics.len());
        let statics = Statics {
            feats: &statics,
            starts: &starts,
        };
        let mut scratch = Scratch::new(self.classes.len());
        let mut tags = decode(&self.passes[0], &ctx, &statics, &fixed, None, &mut scratch);
        for pass in &self.passes[1..] {
            tags = decode(pass, &ctx, &statics, &fixed, Some(&tags), &mut scratch);
        }
        tags
    }
}

/// Every word's static features, flat: word `i`'s are `feats[starts[i]..starts[i + 1]]`.
struct Statics<'a> {
    feats: &'a [u32],
    starts: &'a [usize],
}

struct Scratch {
    feats: Vec<u32>,
    scores: Vec<f32>,
}

impl Scratch {
    fn new(n_classes: usize) -> Scratch {
        Scratch {
            feats: Vec::with_capacity(32),
            scores: vec![0.0; n_classes],
        }
    }
}

/// Greedy left-to-right decoding with one pass's weights.
fn decode(
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

// ---------------------------------------------------------------------------------------
// Training

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

#[derive(Clone, Copy)]
struct Param {
    class: u8,
    w: f32,
    total: f64,
    stamp: u32,
}

/// A training example: a sentence's words and gold class indices.
pub(crate) struct Example {
    pub words: Vec<String>,
    pub gold: Vec<u8>,
}

/// Training knobs.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Shuffle seed.
    pub seed: u64,
    /// Averaged weights below this magnitude are dropped from the model (smaller file).
    pub prune: f32,
    /// A word enters the tag dictionary when seen this often...
    pub dict_min_count: u32,
    /// ...with at most this share of it in classes other than its main one.
    pub dict_max_ambiguity: f64,
    /// Words seen at most this often in training are rare...
    pub rare_max_count: u32,
    /// ...and each occurrence of one is treated as unseen with this probability.
    pub rare_forget_prob: f64,
    /// Add a second pass that sees first-pass classes to the right.
    pub two_pass: bool,
    /// Folds for the jackknifed first-pass classes the second pass trains on.
    pub folds: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            seed: 1,
            prune: 0.0,
            dict_min_count: 20,
            dict_max_ambiguity: 0.002,
            rare_max_count: 1,
            rare_forget_prob: 0.5,
            two_pass: true,
            folds: 5,
        }
    }
}

/// What training is doing, for progress reports.
pub(crate) enum TrainEvent<'a> {
    /// A jackknife model for fold `fold` (1-based) of `folds` is done.
    Fold { fold: usize, folds: usize },
    /// An epoch of pass `pass` (1-based) is done; `snapshot` averages the model so far.
    Epoch {
        pass: usize,
        epoch: usize,
        train_accuracy: f64,
        snapshot: &'a dyn Fn() -> Model,
    },
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn build_tagdict(examples: &[&Example], cfg: &TrainConfig) -> HashMap<String, u8> {
    let mut counts: HashMap<&str, HashMap<u8, u32>> = HashMap::new();
    for ex in examples {
        for (w, &g) in ex.words.iter().zip(&ex.gold) {
            *counts.entry(w.as_str()).or_default().entry(g).or_default() += 1;
        }
    }
    let mut dict = HashMap::new();
    for (w, by_class) in counts {
        let total: u32 = by_class.values().sum();
        let best = by_class
            .iter()
            .max_by_key(|(c, n)| (**n, std::cmp::Reverse(**c)));
        if let Some((&best, &n)) = best {
            if total >= cfg.dict_min_count
                && (total - n) as f64 <= cfg.dict_max_ambiguity * total as f64
            {
                dict.insert(w.to_string(), best);
            }
        }
    }
    dict
}

/// Trains a model (both passes, with jackknifing for the second), reporting progress.
pub(crate) fn train_model(
    examples: &[Example],
    classes: Vec<Class>,
    cfg: &TrainConfig,
    mut progress: impl FnMut(TrainEvent<'_>),
) -> Model {
    let all: Vec<&Example> = examples.iter().collect();
    let tagdict = build_tagdict(&all, cfg);
    let n_classes = classes.len();

    // The second pass must learn from first-pass classes as wrong as they will be on new
    // text, so each sentence's come from a model that never saw it.
    let priors: Option<Vec<Vec<u8>>> =
        (cfg.two_pass && cfg.folds >= 2 && examples.len() >= cfg.folds).then(|| {
            let mut priors = vec![Vec::new(); examples.len()];
            for k in 0..cfg.folds {
                let subset: Vec<&Example> = examples
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % cfg.folds != k)
                    .map(|(_, e)| e)
                    .collect();
                let dict = build_tagdict(&subset, cfg);
                let w = train_pass(&subset, n_classes, &dict, None, cfg, |_, _, _| {});
                let model = Model {
                    classes: classes.clone(),
                    tagdict: dict,
                    passes: vec![w],
                };
                for (i, ex) in examples
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % cfg.folds == k)
                {
                    priors[i] = model.predict(&ex.words);
                }
                progress(TrainEvent::Fold {
                    fold: k + 1,
                    folds: cfg.folds,
                });
            }
            priors
        });

    let make = |passes: Vec<Weights>| Model {
        classes: classes.clone(),
        tagdict: tagdict.clone(),
        passes,
    };
    let first = train_pass(&all, n_classes, &tagdict, None, cfg, |epoch, acc, snap| {
        let snapshot = || make(vec![snap()]);
        progress(TrainEvent::Epoch {
            pass: 1,
            epoch,
            train_accuracy: acc,
            snapshot: &snapshot,
        });
    });
    let mut passes = vec![first];
    if let Some(priors) = &priors {
        let second = train_pass(
            &all,
            n_classes,
            &tagdict,
            Some(priors),
            cfg,
            |epoch, acc, snap| {
                let first = &passes[0];
                let snapshot = || {
                    let copy = Weights::new(
                        first.keys.clone(),
                        first.offsets.clone(),
                        first.entries.clone(),
                    );
                    make(vec![copy, snap()])
                };
                progress(TrainEvent::Epoch {
                    pass: 2,
                    epoch,
                    train_accuracy: acc,
                    snapshot: &snapshot,
                });
            },
        );
        passes.push(second);
    }
    make(passes)
}

/// Trains one pass's weights; `on_epoch(epoch, train accuracy, averaged snapshot)`.
fn train_pass(
    examples: &[&Example],
    n_classes: usize,
    tagdict: &HashMap<String, u8>,
    priors: Option<&[Vec<u8>]>,
    cfg: &TrainConfig,
    mut on_epoch: impl FnMut(usize, f64, &dyn Fn() -> Weights),
) -> Weights {
    let mut word_counts: HashMap<&str, u32> = HashMap::new();
    for ex in examples {
        for w in &ex.words {
            *word_counts.entry(w.as_str()).or_default() += 1;
        }
    }
    let rare: Vec<Vec<bool>> = examples
        .iter()
        .map(|ex| {
            ex.words
                .iter()
                .map(|w| {
                    word_counts
                        .get(w.as_str())
                        .is_some_and(|&n| n <= cfg.rare_max_count)
                })
                .collect()
        })
        .collect();

    let mut index: IdMap<u32> = IdMap::default();
    let mut params: Vec<Vec<Param>> = Vec::new();
    let mut now: u32 = 0;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = SplitMix(cfg.seed);
    let mut scores = vec![0f32; n_classes];
    let mut feats: Vec<u32> = Vec::with_capacity(96);

    for epoch in 0..cfg.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let (mut correct, mut total) = (0usize, 0usize);
        for &e in &order {
            let ex = examples[e];
            let prior = priors.map(|p| p[e].as_slice());
            let mut ctx = SentenceFeatures::new(&ex.words);
            for (i, &r) in rare[e].iter().enumerate() {
                if r && rng.unit() < cfg.rare_forget_prob {
                    ctx.forget_word(i);
                }
            }
            let (mut t1, mut t2) = (START_1, START_2);
            for i in 0..ex.words.len() {
                let gold = ex.gold[i];
                let guess = if let Some(&c) = tagdict.get(ex.words[i].as_str()) {
                    c
                } else {
                    now += 1;
                    feats.clear();
                    ctx.features(i, t1, t2, prior, &mut feats);
                    scores.iter_mut().for_each(|s| *s = 0.0);
                    for f in &feats {
                        if let Some(&idx) = index.get(f) {
                            for p in &params[idx as usize] {
                                scores[p.class as usize] += p.w;
                            }
                        }
                    }
                    let guess = argmax(&scores) as u8;
                    if guess != gold {
                        for f in &feats {
                            let idx = *index.entry(*f).or_insert_with(|| {
                                params.push(Vec::new());
                                (params.len() - 1) as u32
                            });
                            update(&mut params[idx as usize], gold, guess, now);
                        }
                    }
                    guess
                };
                correct += (guess == gold) as usize;
                total += 1;
                t2 = t1;
                t1 = guess as u64;
            }
        }
        let acc = correct as f64 / total.max(1) as f64;
        on_epoch(epoch + 1, acc, &|| average(&index, &params, now, cfg.prune));
    }
    average(&index, &params, now, cfg.prune)
}

fn update(ps: &mut Vec<Param>, gold: u8, guess: u8, now: u32) {
    for (class, delta) in [(gold, 1.0f32), (guess, -1.0f32)] {
        let k = match ps.iter().position(|p| p.class == class) {
            Some(k) => k,
            None => {
                ps.push(Param {
                    class,
                    w: 0.0,
                    total: 0.0,
                    stamp: now,
                });
                ps.len() - 1
            }
        };
        let p = &mut ps[k];
        // Lazy averaging: credit the weight for the steps it sat unchanged.
        p.total += (now - p.stamp) as f64 * p.w as f64;
        p.stamp = now;
        p.w += delta;
    }
}

fn average(index: &IdMap<u32>, params: &[Vec<Param>], now: u32, prune: f32) -> Weights {
    let mut keyed: Vec<(u32, u32)> = index.iter().map(|(&k, &v)| (k, v)).collect();
    keyed.sort_unstable();
    let mut keys = Vec::new();
    let mut offsets = vec![0u32];
    let mut entries = Vec::new();
    for (k, idx) in keyed {
        let before = entries.len();
        let mut ps: Vec<Param> = params[idx as usize].clone();
        ps.sort_by_key(|p| p.class);
        for p in ps {
            let total = p.total + (now - p.stamp) as f64 * p.w as f64;
            let avg = (total / now.max(1) as f64) as f32;
            if avg.abs() > prune && avg != 0.0 {
                entries.push(Entry {
                    w: avg,
                    class: p.class,
                });
            }
        }
        if entries.len() > before {
            keys.push(k);
            offsets.push(entries.len() as u32);
        }
    }
    Weights::new(keys, offsets, entries)
}

// ---------------------------------------------------------------------------------------
// On-disk format
//
// MAGIC (8) | VERSION u32 LE | zlib stream (its Adler-32 catches corruption) of:
//   n_classes u8, then (xpos u8, upos u8) per class
//   n_passes u8, then per pass:
//     lo f32 LE, hi f32 LE             the weight code's range (see `LogCode`)
//     n_features varint, keys as varint deltas (strictly increasing)
//     per feature: entry count varint
//     per entry: class u8               (all classes, then all weights: compresses better)
//     per entry: weight code u8
//   n_dict varint, per word: len varint, UTF-8 bytes, class u8
// and nothing after, inside or outside the stream.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Model {
    /// Serialises the model (weights quantised to 16 bits, zlib-compressed).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut p = Vec::new();
        p.push(self.classes.len() as u8);
        for c in &self.classes {
            p.push(c.xpos);
            p.push(c.upos as u8);
        }
        p.push(self.passes.len() as u8);
        for w in &self.passes {
            let hi = w.entries.iter().fold(0f32, |m, e| m.max(e.w.abs()));
            let lo = w.entries.iter().fold(hi, |m, e| m.min(e.w.abs()));
            let code = LogCode::new(lo, hi);
            p.extend_from_slice(&code.lo.to_le_bytes());
            p.extend_from_slice(&code.hi.to_le_bytes());
            put_varint(&mut p, w.keys.len() as u64);
            let mut prev = 0u64;
            for (i, &k) in w.keys.iter().enumerate() {
                let k = k as u64;
                put_varint(&mut p, if i == 0 { k } else { k - prev });
                prev = k;
            }
            for o in w.offsets.windows(2) {
                put_varint(&mut p, (o[1] - o[0]) as u64);
            }
            p.extend(w.entries.iter().map(|e| e.class));
            p.extend(w.entries.iter().map(|e| code.encode(e.w)));
        }
        let mut dict: Vec<(&String, &u8)> = self.tagdict.iter().collect();
        dict.sort();
        put_varint(&mut p, dict.len() as u64);
        for (w, c) in dict {
            put_varint(&mut p, w.len() as u64);
            p.extend_from_slice(w.as_bytes());
            p.push(*c);
        }
        let mut out = Vec::with_capacity(p.len() / 2);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let mut enc = flate2::write::ZlibEncoder::new(out, flate2::Compression::best());
        enc.write_all(&p).context("compressing tagger model")?;
        enc.finish().context("compressing tagger model")
    }

    /// Parses a model; every inconsistency is an input error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(input_error(
                "not a filtermon tagger model (bad magic header)",
            ));
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(v);
        if version != VERSION {
            return Err(input_error(format!(
                "tagger model format version {version} is not supported (this build reads version {VERSION})"
            )));
        }
        let mut payload = Vec::new();
        let mut dec = flate2::bufread::ZlibDecoder::new(&bytes[12..]);
        dec.read_to_end(&mut payload)
            .map_err(|e| input_error(format!("corrupt tagger model: {e}")))?;
        if dec.total_in() != (bytes.len() - 12) as u64 {
            return Err(corrupt("bytes after the compressed data"));
        }
        let mut r = Reader {
            b: &payload,
            pos: 0,
        };
        let n_classes = r.u8()? as usize;
        if n_classes == 0 {
            return Err(corrupt("no classes"));
        }
        let mut classes = Vec::with_capacity(n_classes);
        for _ in 0..n_classes {
            let xpos = r.u8()?;
            let upos = Upos::from_index(r.u8()?).ok_or_else(|| corrupt("bad UPOS id"))?;
            if xpos as usize >= PTB_TAGS.len() {
                return Err(corrupt("bad PTB tag id"));
            }
            classes.push(Class { xpos, upos });
        }
        let n_passes = r.u8()? as usize;
        if !(1..=2).contains(&n_passes) {
            return Err(corrupt("bad number of passes"));
        }
        let mut passes = Vec::with_capacity(n_passes);
        for _ in 0..n_passes {
            passes.push(read_weights(&mut r, n_classes)?);
        }
        let n_dict = r.count()?;
        let mut tagdict = HashMap::with_capacity(n_dict);
        for _ in 0..n_dict {
            let len = r.count()?;
            let w = std::str::from_utf8(r.take(len)?)
                .map_err(|_| corrupt("dictionary word is not UTF-8"))?;
            let c = r.u8()?;
            if c as usize >= n_classes {
                return Err(corrupt("class id out of range"));
            }
            tagdict.insert(w.to_string(), c);
        }
        if r.remaining() != 0 {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Model {
            classes,
            tagdict,
            passes,
        })
    }
}

fn read_weights(r: &mut Reader<'_>, n_classes: usize) -> Result<Weights> {
    let lo = f32::from_le_bytes(r.array::<4>()?);
    let hi = f32::from_le_bytes(r.array::<4>()?);
    if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi) {
        return Err(corrupt("bad weight range"));
    }
    let table = LogCode::new(lo, hi).table();
    let n_feat = r.count()?;
    let mut keys = Vec::with_capacity(n_feat);
    let mut prev = 0u64;
    for i in 0..n_feat {
        let d = r.varint()?;
        let k = if i == 0 {
            d
        } else if d == 0 {
            return Err(corrupt("feature keys not increasing"));
        } else {
            prev.saturating_add(d)
        };
        if k > u32::MAX as u64 {
            return Err(corrupt("feature key out of range"));
        }
        keys.push(k as u32);
        prev = k;
    }
    let mut offsets = Vec::with_capacity(n_feat + 1);
    offsets.push(0u32);
    let mut total = 0usize;
    for _ in 0..n_feat {
        let n = r.varint()?;
        if n == 0 || n > n_classes as u64 {
            return Err(corrupt("bad entry count"));
        }
        total += n as usize;
        // Each entry takes two more bytes (class, weight), which bounds `total`.
        if total > r.remaining() || total >= MAX_ENTRIES {
            return Err(corrupt("truncated weights"));
        }
        offsets.push(total as u32);
    }
    let classes = r.take(total)?;
    if classes.iter().any(|&c| c as usize >= n_classes) {
        return Err(corrupt("class id out of range"));
    }
    let weights = r.take(total)?;
    if weights.iter().any(|&b| b & 0x7f == 0) {
        return Err(corrupt("bad weight code"));
    }
    let entries = classes
        .iter()
        .zip(weights)
        .map(|(&class, &b)| Entry {
            w: table[b as usize],
            class,
        })
        .collect();
    Ok(Weights::new(keys, offsets, entries))
}

/// 8-bit weight code: a sign bit and a 7-bit magnitude on a log scale from `lo` (code 1)
/// to `hi` (code 127). Perceptron weights span orders of magnitude and matter in
/// relative terms, so this loses far less than a linear 8-bit code (at most ±3% here).
struct LogCode {
    lo: f32,
    hi: f32,
    ln_lo: f32,
    step: f32,
}

impl LogCode {
    fn new(lo: f32, hi: f32) -> LogCode {
        let lo = if lo > 0.0 {
            lo
        } else {
            hi.max(f32::MIN_POSITIVE)
        };
        let hi = hi.max(lo);
        LogCode {
            lo,
            hi,
            ln_lo: lo.ln(),
            step: (hi.ln() - lo.ln()) / 126.0,
        }
    }

    fn encode(&self, w: f32) -> u8 {
        let code = if self.step > 0.0 {
            (1.0 + ((w.abs().max(self.lo).ln() - self.ln_lo) / self.step).round()).clamp(1.0, 127.0)
                as u8
        } else {
            1
        };
        if w < 0.0 {
            code | 0x80
        } else {
            code
        }
    }

    /// The weight of every code (code 0 and 128 are unused).
    fn table(&self) -> [f32; 256] {
        let mut t = [0f32; 256];
        for code in 1..128usize {
            let m = (self.ln_lo + (code - 1) as f32 * self.step).exp();
            t[code] = m;
            t[code | 0x80] = -m;
        }
        // Exact ends make encode∘decode the identity, so a loaded model saves byte-identically.
        for (code, m) in [(1usize, self.lo), (127, self.hi)] {
            t[code] = m;
            t[code | 0x80] = -m;
        }
        t
    }
}

fn corrupt(what: &str) -> anyhow::Error {
    input_error(format!("corrupt tagger model: {what}"))
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(corrupt("truncated"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("bad varint"))
    }
    /// A count that must fit in what is left (each counted item takes at least a byte).
    fn count(&mut self) -> Result<usize> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(corrupt("count exceeds data"));
        }
        Ok(n as usize)
    }
}
