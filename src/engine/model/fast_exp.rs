//! The host path's exponentials, on an exp written so that the compiler vectorises it:
//! attention's masked softmax as one pass over the scores, the log-sum-exp of the NLL, and
//! SwiGLU's `silu(gate) · up`.
//!
//! `f32::exp` is a call into libm per element, which no loop around it can vectorise; on the
//! CPU it took about 7% of scoring time (the softmax over every attention score and the
//! log-sum-exp over every logit), and candle's SiLU is built on it too. [`exp`] is a
//! polynomial within 2 ulp of libm's `expf` for the arguments used here (≤ 0), in plain
//! arithmetic the compiler turns into vector code. The softmax row folds in the score scale,
//! the masked softmax the causal (and sliding-window) mask, and SwiGLU the product, each a pass
//! over the data fewer. f32 attention runs the softmax row inside its own kernel
//! (`host_attention`); the masked softmax serves bf16.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use half::bf16;
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use super::widest::{to_bf16, to_f32, widest};

/// Below this, e^x is under f32's smallest normal number: it is taken as 0.
const EXP_MIN: f32 = -87.336_55;

/// e^x for x ≤ 0 within 2 ulp (0 below [`EXP_MIN`]; arguments above 0 are clamped to 0).
///
/// Cody–Waite reduction x = n·ln 2 + r with |r| ≤ ln 2 / 2, a degree-6 polynomial for e^r,
/// and 2ⁿ put into the exponent bits. n is rounded with the 1.5·2²³ trick rather than
/// `round()`, which the baseline x86-64 target has no vector instruction for.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let below = x < EXP_MIN;
    let x = x.clamp(EXP_MIN, 0.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_66;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n ∈ [-126, 0], so 2ⁿ is a normal number. Its exponent comes from the bits of `shifted`
    // (1.5·2²³ + n, whose low bits are n): `n as i32` is a saturating conversion, which the
    // compiler cannot vectorise and which made each exp ~40× slower.
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
    if below {
        0.0
    } else {
        e * scale
    }
}

/// Lanes of the row loops: enough independent sums to fill a vector register and hide the
/// latency of the adds.
const LANES: usize = 16;

/// Largest element of a row (−∞ for an empty row).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let tail = chunks.remainder().iter().copied();
    lanes
        .into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Chunks of lanes summed in f32 before they go into the f64 total: few enough that the f32
/// sums stay within 1e-5 relative, many enough that the f64 adds cost nothing.
const F32_RUN: usize = 64;

widest! {
    /// `ln Σ e^x` of a row, and how many of its elements exceed `target` (the target's rank).
    pub fn log_sum_exp_and_rank(row: &[f32], target: f32) -> (f64, usize) = lse_and_rank;
}

#[inline(always)]
fn lse_and_rank(row: &[f32], target: f32) -> (f64, usize) {
    let max = row_max(row);
    let mut total = 0f64;
    let mut rank = 0usize;
    let mut chunks = row.chunks_exact(LANES);
    loop {
        let mut sums = [0f32; LANES];
        let mut above = [0u32; LANES];
        let mut n = 0;
        for c in (&mut chunks).take(F32_RUN) {
            for i in 0..LANES {
                sums[i] += exp(c[i] - max);
                above[i] += u32::from(c[i] > target);
            }
            n += 1;
        }
        total += sums.iter().map(|&s| f64::from(s)).sum::<f64>();
        rank += above.iter().map(|&a| a as usize).sum::<usize>();
        if n < F32_RUN {
            break;
        }
    }
    for &x in chunks.remainder() {
        total += f64::from(exp(x - max));
        rank += usize::from(x > target);
    }
    (f64::from(max) + total.ln(), rank)
}

widest! {
    /// Softmax of `scale · row` into `out`.
    pub(super) fn softmax_row(row: &[f32], out: &mut [f32], scale: f32) = softmax_row_body;
}

#[inline(always)]
fn softmax_row_body(row: &[f32], out: &mut [f32], scale: f32) {
    // scale > 0, so the largest scaled score is the scaled largest score.
    let max = row_max(row) * scale;
    let mut sums = [0f32; LANES];
    let mut src = row.chunks_exact(LANES);
    let mut dst = out.chunks_exact_mut(LANES);
    for (c, o) in (&mut src).zip(&mut dst) {
        for i in 0..LANES {
            o[i] = exp(c[i] * scale - max);
            sums[i] += o[i];
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for (&x, o) in src.remainder().iter().zip(dst.into_remainder()) {
        *o = exp(x * scale - max);
        sum += *o;
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// The first position a query at `query` sees: `window` keys back, its own included.
pub(super) fn first_seen(query: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (query + 1).saturating_sub(w))
}

/// The columns of the keys the query at `query` sees, when column 0 is position `first_key`
/// (at most [`first_seen`]).
pub(super) fn seen_keys(query: usize, first_key: usize, window: Option<usize>) -> Range<usize> {
    first_seen(query, window).saturating_sub(first_key)..query + 1 - first_key
}

/// Causal attention softmax over f32 scores `[…, queries, keys]` of one query block: query
/// row `i` is position `first_query + i`, key column `j` is position `first_key + j`. A query
/// sees the keys at or before it, and within `window` of it when there is one; the rest get
/// probability 0, as under the −∞ mask. (The bf16 path's scores arrive scaled and rounded as
/// the reference rounds them.)
#[derive(Debug, Clone, Copy)]
pub struct MaskedSoftmax {
    /// Position of the first query row.
    pub first_query: usize,
    /// Position of the first key column.
    pub first_key: usize,
    /// Sliding window (keys including the query's own), if any.
    pub window: Option<usize>,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let scores = contiguous::<f32>(storage, layout, "masked softmax", "scores")?;
        let dims = layout.dims();
        let (queries, keys) = match dims {
            [.., q, k] => (*q, *k),
            _ => candle_core::bail!("masked softmax takes [.., queries, keys] scores"),
        };
        let last_query = self.first_query + queries;
        if keys == 0 || self.first_key > self.first_query || last_query > self.first_key + keys {
            candle_core::bail!("masked softmax: keys do not cover the queries' own positions")
        }
        let mut out = vec![0f32; scores.len()];
        out.par_chunks_mut(keys)
            .zip(scores.par_chunks(keys))
            .enumerate()
            .for_each(|(row, (o, s))| {
                let seen = seen_keys(
                    self.first_query + row % queries,
                    self.first_key,
                    self.window,
                );
                softmax_row(&s[seen.clone()], &mut o[seen], 1.0);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

widest! {
    /// `out = silu(gate) · up`.
    fn swiglu_chunk(gate: &[f32], up: &[f32], out: &mut [f32]) = swiglu_chunk_body;
}

#[inline(always)]
fn swiglu_chunk_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g * sigmoid(g) * u;
    }
}

widest! {
    /// `x = x · silu(gate)`, elementwise.
    pub(super) fn gate_by_silu(x: &mut [f32], gate: &[f32]) = gate_by_silu_body;
}

#[inline(always)]
fn gate_by_silu_body(x: &mut [f32], gate: &[f32]) {
    for (x, &g) in x.iter_mut().zip(gate) {
        *x *= g * sigmoid(g);
    }
}

widest! {
    /// `out = silu(gate) · up` on bf16 values: the SiLU in f32, rounded to bf16 on its own,
    /// then the product, rounded again.
    fn swiglu_bf16_chunk(gate: &[bf16], up: &[bf16], out: &mut [bf16]) = swiglu_bf16_body;
}

#[inline(always)]
fn swiglu_bf16_body(gate: &[bf16], up: &[bf16], out: &mut [bf16]) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        let g = to_f32(*g);
        *o = to_bf16(to_f32(to_bf16(g * sigmoid(g))) * to_f32(*u));
    }
}

widest! {
    /// `x = silu(x)`.
    pub(super) fn silu_chunk(x: &mut [f32]) = silu_chunk_body;
}

#[inline(always)]
fn silu_chunk_body(x: &mut [f32]) {
    for v in x {
        *v *= sigmoid(*v);
    }
}

/// σ(x), from e^-|x| ≤ 1 so that the exp never overflows.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// `silu(gate) · up`, elementwise over two tensors of one shape: in f32, or on bf16 tensors
/// with the reference's roundings (SiLU computed in f32 and rounded to bf16, then the product
/// rounded).
#[derive(Debug, Clone, Copy)]
pub struct SwiGlu;

/// Elements per parallel task: large enough to amortise the task, small enough to spread.
const CHUNK: usize = 1 << 14;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gate_layout.shape() != up_layout.shape() {
            candle_core::bail!("swiglu: gate and up differ in shape")
        }
        let shape = gate_layout.shape().clone();
        if let CpuStorage::BF16(_) = gate {
            let gate = contiguous::<bf16>(gate, gate_layout, "swiglu", "gates")?;
            let up = contiguous::<bf16>(up, up_layout, "swiglu", "up projections")?;
            let mut out = vec![bf16::ZERO; gate.len()];
            out.par_chunks_mut(CHUNK)
                .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
                .for_each(|(o, (g, u))| swiglu_bf16_chunk(g, u, o));
            return Ok((CpuStorage::BF16(out), shape));
        }
        let gate = contiguous::<f32>(gate, gate_layout, "swiglu", "gates")?;
        let up = contiguous::<f32>(up, up_layout, "swiglu", "up projections")?;
        let mut out = vec![0f32; gate.len()];
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| swiglu_chunk(g, u, o));
        Ok((CpuStorage::F32(out), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor, D};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_on_the_negative_range() {
        let mut worst = 0u32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(got.to_bits().abs_diff(want.to_bits()));
            x += 1e-3;
        }
        assert!(worst <= 2, "{worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn log_sum_exp_and_rank_match_the_plain_sums() {
        let row: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3)
            .collect();
        let target = row[17];
        let (lse, rank) = log_sum_exp_and_rank(&row, target);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let want = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        assert!((lse - want).abs() < 1e-6, "{lse} vs {want}");
        assert_eq!(rank, row.iter().filter(|&&x| x > target).count());
    }

    #[test]
    fn swiglu_is_silu_times_up() -> Result<()> {
        let dev = Device::Cpu;
        let gate: Vec<f32> = (0..5000).map(|i| (i as f32 - 2500.0) * 0.013).collect();
        let up: Vec<f32> = (0..5000)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.5)
            .collect();
        let gate = Tensor::from_vec(gate, (50, 100), &dev)?;
        let up = Tensor::from_vec(up, (50, 100), &dev)?;
        let got = gate.apply_op2_no_bwd(&up, &SwiGlu)?;
        let want = (gate.silu()? * &up)?;
        let diff = max_abs_diff(&got, &want)?;
        assert!(diff < 1e-5, "{diff}");

        // bf16: SiLU rounded to bf16, then the product rounded, as the reference computes it;
        // an exp within two ulp of libm's moves a rounding by at most one bf16 step.
        let (gate, up) = (gate.to_dtype(DType::BF16)?, up.to_dtype(DType::BF16)?);
        let got = gate.apply_op2_no_bwd(&up, &SwiGlu)?;
        assert_eq!(got.dtype(), DType::BF16);
        let silu = gate.to_dtype(DType::F32)?.silu()?.to_dtype(DType::BF16)?;
        let want = (silu * &up)?.to_dtype(DType::F32)?;
        let got = got.to_dtype(DType::F32)?;
        let step = (want.abs()? / 128.)?;
        let beyond = ((got - &want)?.abs()? - step)?.flatten_all()?.max(0)?;
        assert!(
            beyond.to_scalar::<f32>()? <= 0.,
            "more than one bf16 step apart"
        );
        Ok(())
    }

    #[test]
    fn masked_softmax_is_the_mask_then_softmax() -> Result<()> {
        let (heads, queries, keys, first_query, first_key) = (3, 5, 9, 6, 2);
        let dev = Device::Cpu;
        let data: Vec<f32> = (0..heads * queries * keys)
            .map(|i| ((i * 29 % 23) as f32 - 11.0) * 0.7)
            .collect();
        let scores = Tensor::from_vec(data, (heads, queries, keys), &dev)?;
        for window in [None, Some(4)] {
            let op = MaskedSoftmax {
                first_query,
                first_key,
                window,
            };
            let got = scores.apply_op1_no_bwd(&op)?;
            let mask: Vec<f32> = (0..queries * keys)
                .map(|i| {
                    let (q, k) = (first_query + i / keys, first_key + i % keys);
                    let seen = k <= q && window.is_none_or(|w| k + w > q);
                    if seen {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (queries, keys), &dev)?;
            let want = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
            let diff = max_abs_diff(&got, &want)?;
            assert!(diff < 1e-6, "{window:?}: {diff}");
        }
        Ok(())
    }
}
