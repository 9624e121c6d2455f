//! Training: the tag dictionary, perceptron passes with lazy averaging, and jackknifed
//! first-pass classes for the second pass.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::features::{SentenceFeatures, START_1, START_2};
use super::weights::{argmax, Entry, Weights};
use super::{Class, Model};

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
