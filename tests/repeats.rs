//! `repeat_len` / `copy_distance` against a brute-force oracle.

use filtermon::evalset::labels::repeats::{repeat_labels, Repeat, REPEAT_CAP};
use proptest::prelude::*;

/// O(n³) oracle straight from the definition: try every earlier end `j`, measure the
/// common run backwards, keep the longest and, on ties, the latest `j`.
fn brute(t: &[u32]) -> Vec<Repeat> {
    (0..t.len())
        .map(|i| {
            let (mut best_len, mut best_j) = (0usize, 0usize);
            for j in 0..i {
                let mut l = 0;
                while l <= j && t[i - l] == t[j - l] {
                    l += 1;
                }
                if l > 0 && l >= best_len {
                    best_len = l;
                    best_j = j;
                }
            }
            if best_len == 0 {
                Repeat::default()
            } else {
                Repeat {
                    repeat_len: best_len.min(REPEAT_CAP as usize) as u8,
                    copy_distance: (i - best_j) as u32,
                }
            }
        })
        .collect()
}

fn check(t: &[u32]) {
    let fast = repeat_labels(t);
    let slow = brute(t);
    for i in 0..t.len() {
        assert_eq!(fast[i], slow[i], "position {i} of {t:?}");
    }
}

proptest! {
    #[test]
    fn matches_brute_force_random(vocab in 2u32..=5, t in prop::collection::vec(0u32..5, 0..300)) {
        let t: Vec<u32> = t.into_iter().map(|x| x % vocab).collect();
        check(&t);
    }

    #[test]
    fn matches_brute_force_large_ids(t in prop::collection::vec(prop::sample::select(vec![0u32, 7, 100_000, u32::MAX - 1, u32::MAX]), 0..200)) {
        check(&t);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Mutated repetitions of a short pattern: long overlapping matches, many beyond the cap.
    #[test]
    fn matches_brute_force_periodic(
        pattern in prop::collection::vec(0u32..4, 1..6),
        len in 260usize..330,
        mutations in prop::collection::vec((0usize..330, 0u32..4), 0..4),
    ) {
        let mut t: Vec<u32> = (0..len).map(|i| pattern[i % pattern.len()]).collect();
        for (at, v) in mutations {
            if at < len {
                t[at] = v;
            }
        }
        check(&t);
    }
}

#[test]
fn cap_applies_to_length_not_distance() {
    // 300 copies of `a`: position i completes a run of i, ending at i-1.
    let t = vec![5u32; 300];
    let r = repeat_labels(&t);
    assert_eq!(
        r[255],
        Repeat {
            repeat_len: 255,
            copy_distance: 1
        }
    );
    assert_eq!(
        r[299],
        Repeat {
            repeat_len: 255,
            copy_distance: 1
        }
    );
    assert_eq!(
        r[254],
        Repeat {
            repeat_len: 254,
            copy_distance: 1
        }
    );
}

#[test]
fn distance_is_for_the_uncapped_match() {
    // A 300-token block B, then a filler, then B's last 255 tokens, then filler, then B.
    // At the end of the second full B, the longest match (300) ends at 299, while the
    // capped-length suffix (255) also ends more recently, inside the partial copy.
    let block: Vec<u32> = (0..300).map(|i| 10 + i).collect();
    let mut t = block.clone();
    t.push(1);
    t.extend_from_slice(&block[45..]);
    t.push(2);
    t.extend_from_slice(&block);
    let r = repeat_labels(&t);
    let last = t.len() - 1;
    assert_eq!(r[last].repeat_len, 255);
    assert_eq!(r[last].copy_distance as usize, last - 299);
    check(&t);
}

#[test]
fn hand_checked_sentence() {
    // "the cat sat on the mat . the cat sat on the hat"
    let words = "the cat sat on the mat . the cat sat on the hat";
    let mut ids = std::collections::HashMap::new();
    let t: Vec<u32> = words
        .split(' ')
        .map(|w| {
            let n = ids.len() as u32;
            *ids.entry(w).or_insert(n)
        })
        .collect();
    let got: Vec<(u8, u32)> = repeat_labels(&t)
        .iter()
        .map(|r| (r.repeat_len, r.copy_distance))
        .collect();
    let want = vec![
        (0, 0), // the
        (0, 0), // cat
        (0, 0), // sat
        (0, 0), // on
        (1, 4), // the (pos 0)
        (0, 0), // mat
        (0, 0), // .
        (1, 3), // the: most recent `the` is pos 4
        (2, 7), // the cat (ends at 1)
        (3, 7), // the cat sat
        (4, 7), // the cat sat on
        (5, 7), // the cat sat on the
        (0, 0), // hat
    ];
    assert_eq!(got, want);
}

#[test]
#[ignore = "timing; run with --release -- --ignored"]
fn one_million_tokens_fast() {
    // Zipf-ish ids from an LCG, with a repeated paragraph every so often.
    let mut x: u64 = 12345;
    let mut t = Vec::with_capacity(1_000_000);
    let para: Vec<u32> = (0..400).map(|i| (i * 7919) % 50_000).collect();
    while t.len() < 1_000_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if (x >> 60) == 0 {
            t.extend_from_slice(&para);
        } else {
            let u = ((x >> 33) as f64) / (1u64 << 31) as f64;
            t.push((50_000.0f64.powf(u)) as u32);
        }
    }
    t.truncate(1_000_000);
    let start = std::time::Instant::now();
    let r = repeat_labels(&t);
    let took = start.elapsed();
    eprintln!("1M tokens: {took:?}");
    assert_eq!(r.len(), 1_000_000);
    let start = std::time::Instant::now();
    let mut total = 0usize;
    for w in t.chunks(8192) {
        total += repeat_labels(w).len();
    }
    eprintln!("1M tokens in 8192-token windows: {:?}", start.elapsed());
    assert_eq!(total, 1_000_000);
    assert!(took.as_secs_f64() < 1.0, "took {took:?}");
}
