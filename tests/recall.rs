//! Recall metrics against brute-force computations from known per-token scores.

use filtermon::analysis::recall::{
    recall_metrics, Bootstrap, RecallMetrics, RecallRow, CLIFF_BINS,
};
use filtermon::evalset::format::WindowMeta;
use filtermon::evalset::labels::probe::ProbeWindow;
use filtermon::evalset::labels::probe::{Occurrence, ProbeLabel};
use filtermon::evalset::labels::TokenLabels;
use filtermon::evalset::scores::EvalScores;
use filtermon::evalset::tagset::Upos;

const WINDOW: u32 = 48;
const SPAN: u32 = 5;
const BOOT: Bootstrap = Bootstrap {
    resamples: 400,
    seed: 3,
};

/// A deterministic pseudo-random stream (splitmix64), so cases differ without a seed crate.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

struct Case {
    labels: Vec<TokenLabels>,
    docs: Vec<u32>,
    doc_count: usize,
    windows: Vec<WindowMeta>,
    scores: EvalScores,
}

/// `n_windows` windows, two per document; with `probe`, spans planted at gaps 8 and 20.
/// Repeat labels, losses and hits are arbitrary: the metrics only read them.
fn case(n_windows: usize, probe: bool, seed: u64) -> Case {
    let mut r = Mix(seed);
    let mut c = Case {
        labels: Vec::new(),
        docs: Vec::new(),
        doc_count: n_windows.div_ceil(2),
        windows: Vec::new(),
        scores: EvalScores {
            loss: Vec::new(),
            top1: Vec::new(),
            top5: Vec::new(),
        },
    };
    for k in 0..n_windows {
        let gap = [8, 20][k % 2];
        let placed = ProbeWindow {
            gap,
            first: r.below(u64::from(WINDOW - gap - SPAN + 1)) as u32,
        };
        c.windows.push(WindowMeta {
            doc: (k / 2) as u32,
            index: (k % 2) as u32,
            start: c.labels.len() as u64,
            len: WINDOW,
        });
        for pos in 0..WINDOW {
            let repeat_len = r.below(20) as u8;
            let copy_distance = if repeat_len == 0 {
                0
            } else {
                [1, 32, 33, 128, 129, 512, 513, 2048, 2049, 9000][r.below(10) as usize]
            };
            c.labels.push(TokenLabels {
                tag: 0,
                upos: Upos::X,
                open_bracket: false,
                close_bracket: false,
                repeat_len,
                copy_distance,
                log_freq: 0.0,
                word_initial: false,
                pos,
                domain: 0,
                probe: probe.then(|| ProbeLabel::at(&placed, SPAN, pos)),
            });
            c.docs.push((k / 2) as u32);
            let occ = c.labels.last().map(|l| l.probe_occurrence());
            // Second copies are cheaper, so the gain is clearly positive.
            let scale = if occ == Some(Occurrence::Second) {
                1.0
            } else {
                6.0
            };
            c.scores
                .loss
                .push(if pos == 0 { f32::NAN } else { scale * r.unit() });
            let top1 = r.below(3) == 0;
            c.scores.top1.push(top1);
            c.scores.top5.push(top1 || r.below(2) == 0);
        }
    }
    c
}

fn metrics(c: &Case) -> RecallMetrics {
    recall_metrics(&c.labels, &c.docs, c.doc_count, &c.windows, &c.scores, BOOT)
}

/// Mean loss, count and top-1 share of the scored tokens passing `keep`.
fn brute(c: &Case, keep: impl Fn(&TokenLabels) -> bool) -> (f64, usize, f64) {
    let idx: Vec<usize> = (0..c.labels.len())
        .filter(|&i| c.labels[i].pos > 0 && keep(&c.labels[i]))
        .collect();
    let sum: f64 = idx.iter().map(|&i| f64::from(c.scores.loss[i])).sum();
    let hits = idx.iter().filter(|&&i| c.scores.top1[i]).count();
    (
        sum / idx.len() as f64,
        idx.len(),
        hits as f64 / idx.len() as f64,
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn gain_is_first_minus_second_mean_without_offset_zero() {
    let c = case(12, true, 1);
    let m = metrics(&c);
    assert_eq!(m.gains.iter().map(|g| g.gap).collect::<Vec<_>>(), [8, 20]);
    for g in &m.gains {
        let copy = |occ: Occurrence| {
            move |l: &TokenLabels| {
                l.probe.is_some_and(|p| {
                    p.gap == g.gap && p.occurrence == occ && p.offset.is_some_and(|o| o >= 1)
                })
            }
        };
        let (first, _, _) = brute(&c, copy(Occurrence::First));
        let (second, n2, top1) = brute(&c, copy(Occurrence::Second));
        assert_eq!(g.windows, 6);
        assert!(close(g.first, first) && close(g.second, second));
        assert!(close(g.gain.value, first - second), "{g:?}");
        assert_eq!(g.gain.n, n2);
        // Offsets 1..SPAN of the second copy in each of six windows: offset 0 is left out.
        assert_eq!(n2, 6 * (SPAN as usize - 1));
        assert!(close(g.second_top1, top1));
        assert!(g.gain.ci_lo < g.gain.value && g.gain.value < g.gain.ci_hi);
        assert!(g.gain.ci_lo > 0.0, "second copies are cheaper: {g:?}");
    }
}

#[test]
fn cliff_copy_n_and_miss_rate_match_brute_force() {
    for (probe, seed) in [(false, 2), (true, 5)] {
        let c = case(10, probe, seed);
        let m = metrics(&c);
        assert_eq!(m.gains.is_empty(), !probe);
        for (b, &(lo, hi)) in m.cliff.iter().zip(&CLIFF_BINS) {
            let (mean, n, top1) = brute(&c, |l| {
                l.repeat_len >= 5
                    && l.copy_distance >= lo
                    && hi.is_none_or(|h| l.copy_distance <= h)
            });
            assert!(n > 0, "bin {} is empty in the case", b.bin);
            assert!(close(b.loss.value, mean) && b.loss.n == n && close(b.top1, top1));
            assert!(b.loss.ci_lo <= mean && mean <= b.loss.ci_hi, "{b:?}");
        }
        assert_eq!(
            m.cliff.iter().map(|b| b.bin.as_str()).collect::<Vec<_>>(),
            ["1-32", "33-128", "129-512", "513-2048", "2049+"]
        );
        assert_eq!(m.copy_n.len(), 16);
        for (k, b) in m.copy_n.iter().enumerate() {
            let n_rep = (k + 1) as u8;
            let (mean, n, _) = brute(&c, |l| l.repeat_len == n_rep);
            assert_eq!(b.bin, n_rep.to_string());
            assert!(close(b.loss.value, mean) && b.loss.n == n);
        }
        let (_, n5, top1) = brute(&c, |l| l.repeat_len >= 5);
        assert_eq!(m.copy5_miss.n, n5);
        assert!(close(m.copy5_miss.value, 1.0 - top1));
        assert!(
            m.copy5_miss.ci_lo <= m.copy5_miss.value && m.copy5_miss.value <= m.copy5_miss.ci_hi
        );
    }
}

#[test]
fn identical_windows_give_point_intervals() {
    // Every window a copy of the first: resampling windows or documents changes nothing.
    let mut c = case(8, true, 9);
    let w = WINDOW as usize;
    for i in w..c.labels.len() {
        c.labels[i] = c.labels[i % w];
        c.scores.loss[i] = c.scores.loss[i % w];
        c.scores.top1[i] = c.scores.top1[i % w];
    }
    let m = metrics(&c);
    let g = &m.gains[0];
    assert!(close(g.gain.ci_lo, g.gain.value) && close(g.gain.ci_hi, g.gain.value));
    let b = &m.copy_n[0];
    assert!(close(b.loss.ci_lo, b.loss.value) && close(b.loss.ci_hi, b.loss.value));
}

#[test]
fn result_rows_carry_reserved_names_and_values() {
    let c = case(6, true, 4);
    let m = metrics(&c);
    let rows = m.results();
    assert_eq!(rows.len(), 2 + 5 + 16 + 1);
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.filter == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    };
    let g = get("recall.gain@20");
    assert_eq!(
        (g.mean, g.n, g.ci_lo),
        (
            m.gains[1].gain.value,
            m.gains[1].gain.n,
            m.gains[1].gain.ci_lo
        )
    );
    assert!(g.definition.contains("20 tokens apart"));
    assert_eq!(get("recall.copy5@2049+").mean, m.cliff[4].loss.value);
    assert_eq!(get("recall.copy_n@16").n, m.copy_n[15].loss.n);
    let miss = get(&RecallRow::Copy5Miss.name());
    assert!(close(miss.top1, 1.0 - miss.mean));
    for r in &rows {
        assert!(r.filter.starts_with("recall.") && !r.definition.is_empty());
        // No user filter can take these names.
        assert!(filtermon::evalset::filter::Filter::compile(&r.filter, "true", &[]).is_err());
    }
}

#[test]
fn every_recall_row_name_parses_back_to_its_row_and_nothing_else_does() {
    let mut rows = vec![
        RecallRow::Gain(64),
        RecallRow::Gain(4096),
        RecallRow::Copy5Miss,
    ];
    rows.extend(RecallRow::cliff());
    rows.extend(RecallRow::copy_n());
    for row in rows {
        assert_eq!(RecallRow::parse(&row.name()), Some(row), "{row}");
    }
    for name in [
        "content",
        "recall.",
        "recall.gain@",
        "recall.gain@064",
        "recall.gain@-1",
        "recall.copy5@1-",
        "recall.copy5@x+",
        "recall.copy_n@300",
        "recall.copy5_miss2",
        "Recall.gain@64",
    ] {
        assert_eq!(RecallRow::parse(name), None, "{name}");
    }
}
