//! Feature hashing and the feature templates of each pass.

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
pub(super) struct SentenceFeatures {
    words: Vec<WordHashes>,
}

/// Stands for a forgotten word's identity hashes.
const UNSEEN: u64 = 0;

/// Tag ids used for "before the sentence" and "after the sentence".
pub(super) const START_1: u64 = 1000;
pub(super) const START_2: u64 = 1001;
const END_1: u64 = 1002;
const END_2: u64 = 1003;

impl SentenceFeatures {
    pub(super) fn new<S: AsRef<str>>(words: &[S]) -> Self {
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
    pub(super) fn forget_word(&mut self, i: usize) {
        let w = &mut self.words[i + 2];
        w[F_RAW] = UNSEEN;
        w[F_LOWER] = UNSEEN;
    }

    /// Features that do not depend on predicted tags.
    pub(super) fn static_features(&self, i: usize, out: &mut Vec<u32>) {
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
    pub(super) fn dynamic_features(&self, i: usize, t1: u64, t2: u64, out: &mut Vec<u32>) {
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
    pub(super) fn stacked_features(&self, i: usize, t1: u64, prior: &[u8], out: &mut Vec<u32>) {
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
    pub(super) fn features(
        &self,
        i: usize,
        t1: u64,
        t2: u64,
        prior: Option<&[u8]>,
        out: &mut Vec<u32>,
    ) {
        self.static_features(i, out);
        self.dynamic_features(i, t1, t2, out);
        if let Some(p) = prior {
            self.stacked_features(i, t1, p, out);
        }
    }
}
