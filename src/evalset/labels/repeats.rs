//! `repeat_len` and `copy_distance` (DESIGN §5): how long a run of earlier tokens a
//! token completes, and how far back the most recent copy of that run ends.
//!
//! # Definitions
//!
//! For a window `t[0..n]` and a position `i`:
//!
//! * `L(i)` is the largest `m` such that `t[i-m+1..=i]` also ends at some earlier
//!   position `j < i` (the earlier occurrence may overlap the current one);
//!   `L(i) == 0` exactly when `t[i]` does not occur before `i`.
//! * `repeat_len = min(L(i), 255)`.
//! * `copy_distance = i - j*`, where `j*` is the largest `j < i` at which the full,
//!   uncapped `L(i)`-token run ends; 0 when `L(i) == 0`. The cap only limits what is
//!   stored: the distance always refers to the true longest match.
//!
//! Example, `a a a a`: position 3 completes `a a a`, which ends at position 2, so
//! `repeat_len == 3` and `copy_distance == 1`.
//!
//! # Algorithm (O(n log n))
//!
//! An online suffix automaton gives `L(i)` for free: right after appending `t[i]`,
//! the suffix link of the new state is the state whose longest string is the longest
//! suffix of `t[..=i]` that also ends earlier, so `L(i) = len(link(cur))`. Call that
//! state `Q(i)`. Later clones only ever take *shorter* strings away from a state, so
//! the match `t[i-L+1..=i]` stays the longest string of `Q(i)` in the final automaton.
//!
//! The suffix automaton's `firstpos` would give the *earliest* end of the match; we
//! need the latest one before `i`. In the final automaton, the end positions of a
//! state are the positions whose prefix state lies in its subtree of the suffix-link
//! tree. Numbering the prefix states in DFS order turns every subtree into a
//! contiguous range, so "latest end before `i`" is a range-maximum over positions
//! inserted so far, answered by a segment tree while sweeping `i` upwards.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The largest `repeat_len` stored; longer matches are reported as this value.
pub const REPEAT_CAP: u8 = 255;

/// The repeat labels of one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repeat {
    /// Length of the longest earlier run this token completes, capped at [`REPEAT_CAP`].
    pub repeat_len: u8,
    /// Positions back to the end of the most recent earlier occurrence of that
    /// (uncapped) run; 0 when `repeat_len == 0`.
    pub copy_distance: u32,
}

/// Computes [`Repeat`] labels for every position of one window of token ids.
///
/// Runs in O(n log n) time and O(n) memory.
///
/// # Panics
///
/// If the window has 2³¹ tokens or more (windows are a few thousand tokens).
pub fn repeat_labels(tokens: &[u32]) -> Vec<Repeat> {
    assert!(
        tokens.len() < (1usize << 31),
        "window too long for repeat labels"
    );
    let n = tokens.len();
    if n == 0 {
        return Vec::new();
    }

    let mut sam = SuffixAutomaton::with_capacity(n);
    // Per position: the state of the longest earlier-occurring suffix and its length.
    let mut match_state = Vec::with_capacity(n);
    let mut match_len = Vec::with_capacity(n);
    let mut prefix_state = Vec::with_capacity(n);
    for &tok in tokens {
        let cur = sam.extend(tok);
        let q = sam.link[cur as usize];
        match_state.push(q);
        match_len.push(sam.len[q as usize]);
        prefix_state.push(cur);
    }

    let (lo, hi, dfs_index) = sam.prefix_ranges(&prefix_state);

    let mut latest = MaxSegmentTree::new(n);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let l = match_len[i];
        let repeat = if l == 0 {
            Repeat::default()
        } else {
            let q = match_state[i] as usize;
            // Q(i) is a proper ancestor of the prefix state of i, so its range is
            // non-empty; and some earlier position ends the match, so this is Some.
            match latest.max(lo[q] as usize, hi[q] as usize) {
                Some(j) => Repeat {
                    repeat_len: l.min(REPEAT_CAP as u32) as u8,
                    copy_distance: i as u32 - j,
                },
                None => {
                    debug_assert!(false, "match of length {l} at {i} without an earlier end");
                    Repeat::default()
                }
            }
        };
        out.push(repeat);
        latest.set(dfs_index[i] as usize, i as u32);
    }
    out
}

const NONE: u32 = u32::MAX;

/// A suffix automaton over an integer alphabet, with transitions in one hash map
/// (vocabularies are ~100k ids, so per-state arrays are out) plus a per-state edge
/// list so that cloning can copy a state's transitions.
struct SuffixAutomaton {
    len: Vec<u32>,
    link: Vec<u32>,
    first_edge: Vec<u32>,
    edges: Vec<Edge>,
    trans: HashMap<u64, u32, BuildHasherDefault<MixHasher>>,
    last: u32,
}

struct Edge {
    token: u32,
    target: u32,
    next: u32,
}

impl SuffixAutomaton {
    fn with_capacity(n: usize) -> Self {
        let mut sam = SuffixAutomaton {
            len: Vec::with_capacity(2 * n),
            link: Vec::with_capacity(2 * n),
            first_edge: Vec::with_capacity(2 * n),
            edges: Vec::with_capacity(3 * n),
            trans: HashMap::with_capacity_and_hasher(3 * n, Default::default()),
            last: 0,
        };
        sam.new_state(0, NONE);
        sam
    }

    fn new_state(&mut self, len: u32, link: u32) -> u32 {
        let id = self.len.len() as u32;
        self.len.push(len);
        self.link.push(link);
        self.first_edge.push(NONE);
        id
    }

    fn key(state: u32, token: u32) -> u64 {
        (u64::from(state) << 32) | u64::from(token)
    }

    fn get(&self, state: u32, token: u32) -> Option<u32> {
        self.trans
            .get(&Self::key(state, token))
            .map(|&e| self.edges[e as usize].target)
    }

    fn set(&mut self, state: u32, token: u32, target: u32) {
        let key = Self::key(state, token);
        if let Some(&e) = self.trans.get(&key) {
            self.edges[e as usize].target = target;
            return;
        }
        let e = self.edges.len() as u32;
        self.edges.push(Edge {
            token,
            target,
            next: self.first_edge[state as usize],
        });
        self.first_edge[state as usize] = e;
        self.trans.insert(key, e);
    }

    /// Appends one token; returns the new prefix state.
    fn extend(&mut self, tok: u32) -> u32 {
        let cur = self.new_state(self.len[self.last as usize] + 1, NONE);
        let mut p = self.last;
        while p != NONE && self.get(p, tok).is_none() {
            self.set(p, tok, cur);
            p = self.link[p as usize];
        }
        if p == NONE {
            self.link[cur as usize] = 0;
        } else if let Some(q) = self.get(p, tok) {
            if self.len[p as usize] + 1 == self.len[q as usize] {
                self.link[cur as usize] = q;
            } else {
                let clone = self.new_state(self.len[p as usize] + 1, self.link[q as usize]);
                let mut e = self.first_edge[q as usize];
                while e != NONE {
                    let Edge {
                        token,
                        target,
                        next,
                    } = self.edges[e as usize];
                    self.set(clone, token, target);
                    e = next;
                }
                while p != NONE && self.get(p, tok) == Some(q) {
                    self.set(p, tok, clone);
                    p = self.link[p as usize];
                }
                self.link[q as usize] = clone;
                self.link[cur as usize] = clone;
            }
        }
        self.last = cur;
        cur
    }

    /// Numbers the prefix states (position `i` ↦ `prefix_state[i]`) in DFS order of
    /// the suffix-link tree. Returns, per state, the half-open range `lo..hi` of the
    /// DFS numbers of the prefix states in its subtree, and per position its number.
    fn prefix_ranges(&self, prefix_state: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let s = self.len.len();
        // Children lists in CSR form.
        let mut start = vec![0u32; s + 1];
        for v in 1..s {
            start[self.link[v] as usize + 1] += 1;
        }
        for v in 0..s {
            start[v + 1] += start[v];
        }
        let mut fill = start.clone();
        let mut children = vec![0u32; s.saturating_sub(1)];
        for v in 1..s {
            let parent = self.link[v] as usize;
            children[fill[parent] as usize] = v as u32;
            fill[parent] += 1;
        }

        let mut position_of = vec![NONE; s];
        for (i, &st) in prefix_state.iter().enumerate() {
            position_of[st as usize] = i as u32;
        }

        let mut lo = vec![0u32; s];
        let mut hi = vec![0u32; s];
        let mut dfs_index = vec![0u32; prefix_state.len()];
        let mut counter = 0u32;
        // Explicit stack: (state, next child slot); recursion would overflow on
        // highly repetitive windows, whose suffix-link trees are deep.
        let mut stack: Vec<(u32, u32)> = vec![(0, start[0])];
        lo[0] = 0;
        while let Some(top) = stack.last_mut() {
            let (v, slot) = *top;
            if slot < start[v as usize + 1] {
                top.1 += 1;
                let c = children[slot as usize];
                lo[c as usize] = counter;
                let pos = position_of[c as usize];
                if pos != NONE {
                    dfs_index[pos as usize] = counter;
                    counter += 1;
                }
                stack.push((c, start[c as usize]));
            } else {
                hi[v as usize] = counter;
                stack.pop();
            }
        }
        (lo, hi, dfs_index)
    }
}

/// Range-maximum over positions, where "empty" is `NONE`.
struct MaxSegmentTree {
    size: usize,
    tree: Vec<u32>,
}

impl MaxSegmentTree {
    fn new(n: usize) -> Self {
        MaxSegmentTree {
            size: n,
            tree: vec![NONE; 2 * n],
        }
    }

    fn set(&mut self, idx: usize, value: u32) {
        let mut k = idx + self.size;
        self.tree[k] = value;
        while k > 1 {
            k /= 2;
            self.tree[k] = max_opt(self.tree[2 * k], self.tree[2 * k + 1]);
        }
    }

    /// Largest value set in `lo..hi`, if any.
    fn max(&self, lo: usize, hi: usize) -> Option<u32> {
        let mut best = NONE;
        let (mut l, mut r) = (lo + self.size, hi + self.size);
        while l < r {
            if l & 1 == 1 {
                best = max_opt(best, self.tree[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                best = max_opt(best, self.tree[r]);
            }
            l /= 2;
            r /= 2;
        }
        (best != NONE).then_some(best)
    }
}

fn max_opt(a: u32, b: u32) -> u32 {
    match (a == NONE, b == NONE) {
        (true, _) => b,
        (_, true) => a,
        _ => a.max(b),
    }
}

/// splitmix64's finaliser: the std SipHash is several times slower on the
/// automaton's millions of integer keys, which need no DoS resistance.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(tokens: &[u32]) -> Vec<(u8, u32)> {
        repeat_labels(tokens)
            .iter()
            .map(|r| (r.repeat_len, r.copy_distance))
            .collect()
    }

    #[test]
    fn empty_and_single() {
        assert!(repeat_labels(&[]).is_empty());
        assert_eq!(labels(&[7]), vec![(0, 0)]);
    }

    #[test]
    fn overlapping_run() {
        // a a a a: each position matches the run ending one step back.
        assert_eq!(labels(&[1, 1, 1, 1]), vec![(0, 0), (1, 1), (2, 1), (3, 1)]);
    }

    #[test]
    fn most_recent_occurrence_wins() {
        // 1 2 3 | 1 2 4 | 1 2: the final `1 2` ends at 1 and at 4; 4 is the most recent.
        let t = [1, 2, 3, 1, 2, 4, 1, 2];
        assert_eq!(
            labels(&t),
            vec![
                (0, 0),
                (0, 0),
                (0, 0),
                (1, 3),
                (2, 3),
                (0, 0),
                (1, 3),
                (2, 3)
            ]
        );
    }

    #[test]
    fn longest_beats_more_recent_shorter() {
        // a b c | a c | a b c: at the last `c`, `a b c` (len 3, ends at 2) beats `c` at 4.
        let t = [1, 2, 3, 1, 3, 1, 2, 3];
        let l = labels(&t);
        assert_eq!(l[7], (3, 5));
        // At pos 6 `a b` ends at 1 only.
        assert_eq!(l[6], (2, 5));
        // At pos 4 `a c` never occurred; `c` did at 2.
        assert_eq!(l[4], (1, 2));
    }
}
