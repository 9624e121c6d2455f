//! RMSNorm on the host as one pass per row: candle's ops take eight passes over the
//! activations (widen, square, mean, add, root, divide, scale, narrow), each a hand-off to its
//! thread pool, four times a layer.
//!
//! The numbers are those of [`super::layers::RmsNorm`]'s ops: the row in f32, divided by
//! `sqrt(mean(x²) + eps)`, times the f32 weight, rounded once to the input's dtype; only the
//! order of the sum of squares differs. The GDN layer's gated norm ([`GatedRmsNorm`]) likewise
//! follows its tensor ops, roundings included.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape};
use half::bf16;
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use super::fast_exp::gate_by_silu;
use super::widest::{narrow_row, round_row, widen_row, widest};

/// f32 lanes summed side by side, so that the compiler vectorises the sum of squares.
const LANES: usize = 16;

/// Rows one task normalises: enough to pay for the task.
const ROWS_PER_TASK: usize = 8;

/// `x / sqrt(mean(x²) + eps) · weight` over the last dim, for f32 or bf16 `x` and an f32
/// `weight` of the last dim's size.
#[derive(Debug, Clone, Copy)]
pub struct HostRmsNorm {
    /// Added to the mean square.
    pub eps: f32,
}

impl CustomOp2 for HostRmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let weight = contiguous::<f32>(ws, wl, "rms norm", "weights")?;
        let width = weight.len();
        if xl.dims().last() != Some(&width) || width == 0 {
            candle_core::bail!(
                "rms norm: rows of {:?} against a weight of {width}",
                xl.dims()
            )
        }
        let eps = self.eps;
        let out = by_rows(xs, xl, None, width, "rms norm", |row, _| {
            normalize_row(row, weight, eps)
        })?;
        Ok((out, xl.shape().clone()))
    }
}

/// The GDN layer's output norm: `x / sqrt(mean(x²) + eps)`, rounded to the model dtype, times
/// the f32 weight, rounded again, times `silu(gate)` in f32, rounded once more; for f32 or bf16
/// `x` and `gate` of one shape and an f32 weight of the last dim's size. (Rounding to f32 is
/// no rounding.)
#[derive(Debug, Clone, Copy)]
pub struct GatedRmsNorm {
    /// Added to the mean square.
    pub eps: f32,
}

impl CustomOp3 for GatedRmsNorm {
    fn name(&self) -> &'static str {
        "gated-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let weight = contiguous::<f32>(ws, wl, "gated rms norm", "weights")?;
        let width = weight.len();
        if xl.dims().last() != Some(&width) || width == 0 || xl.shape() != gl.shape() {
            candle_core::bail!(
                "gated rms norm: rows of {:?} and gates of {:?} against a weight of {width}",
                xl.dims(),
                gl.dims()
            )
        }
        let eps = self.eps;
        let round = matches!(xs, CpuStorage::BF16(_));
        // One row in f32: normalised, weighted and gated, rounded where the reference rounds.
        let gated = |row: &mut [f32], gate: &[f32]| {
            normalize_row(row, &[], eps);
            if round {
                round_row(row);
            }
            for (v, w) in row.iter_mut().zip(weight) {
                *v *= w;
            }
            if round {
                round_row(row);
            }
            if round {
                // Rounded to bf16 next: the vectorised exp's last-ulp differences from libm's
                // survive only within them of a rounding boundary.
                gate_by_silu(row, gate);
            } else {
                // libm's exp, as candle's SiLU: the vectorised exp's last-ulp differences made
                // the f32 NLL of a GDN model drift further between chunk lengths.
                for (v, g) in row.iter_mut().zip(gate) {
                    *v *= g / (1.0 + (-g).exp());
                }
            }
        };
        let out = by_rows(xs, xl, Some((gs, gl)), width, "gated rms norm", gated)?;
        Ok((out, xl.shape().clone()))
    }
}

/// `f(row, gate_row)` on every `width`-long row of `x` (f32 or bf16, contiguous) in f32, with
/// the matching row of `gate` (of `x`'s shape and dtype) or an empty one; the rows come back in
/// `x`'s dtype, rounded once.
fn by_rows(
    xs: &CpuStorage,
    xl: &Layout,
    gate: Option<(&CpuStorage, &Layout)>,
    width: usize,
    op: &str,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) -> Result<CpuStorage> {
    let task = width * ROWS_PER_TASK;
    // The gate rows of task `i`'s rows, from whichever dtype they are stored in.
    fn rows<T>(all: Option<&[T]>, i: usize, task: usize) -> &[T] {
        all.map_or(&[], |g| &g[i * task..((i + 1) * task).min(g.len())])
    }
    if let CpuStorage::BF16(_) = xs {
        let x = contiguous::<bf16>(xs, xl, op, "activations")?;
        let g = gate
            .map(|(gs, gl)| contiguous::<bf16>(gs, gl, op, "gates"))
            .transpose()?;
        let mut out = vec![bf16::ZERO; x.len()];
        out.par_chunks_mut(task)
            .zip(x.par_chunks(task))
            .enumerate()
            .for_each(|(i, (o, x))| {
                let (mut row, mut gate) = (vec![0f32; width], vec![0f32; width]);
                let mut gates = rows(g, i, task).chunks_exact(width);
                for (o, x) in o.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    widen_row(x, &mut row);
                    let gate = match gates.next() {
                        Some(g) => {
                            widen_row(g, &mut gate);
                            &gate[..]
                        }
                        None => &[],
                    };
                    f(&mut row, gate);
                    narrow_row(&row, o);
                }
            });
        return Ok(CpuStorage::BF16(out));
    }
    let x = contiguous::<f32>(xs, xl, op, "activations")?;
    let g = gate
        .map(|(gs, gl)| contiguous::<f32>(gs, gl, op, "gates"))
        .transpose()?;
    let mut out = x.to_vec();
    out.par_chunks_mut(task).enumerate().for_each(|(i, o)| {
        let mut gates = rows(g, i, task).chunks_exact(width);
        for row in o.chunks_exact_mut(width) {
            f(row, gates.next().unwrap_or(&[]));
        }
    });
    Ok(CpuStorage::F32(out))
}

widest! {
    /// Normalises one row in place, then multiplies it by `weight` (none when empty).
    fn normalize_row(row: &mut [f32], weight: &[f32], eps: f32) = normalize_row_body;
}

#[inline(always)]
fn normalize_row_body(row: &mut [f32], weight: &[f32], eps: f32) {
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c) {
            *s += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    let mean = (sums.iter().sum::<f32>() + tail) / row.len() as f32;
    let root = (mean + eps).sqrt();
    if weight.is_empty() {
        for v in row.iter_mut() {
            *v /= root;
        }
    } else {
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v / root * w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor, D};

    /// candle's ops, as `RmsNorm` ran them before this kernel.
    fn by_ops(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        xf.broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(w)?
            .to_dtype(x.dtype())
    }

    #[test]
    fn matches_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        // A width with a tail past the lanes, and more rows than one task takes.
        let x = Tensor::randn(0f32, 3., (3, 7, 37), &dev)?;
        let w = Tensor::randn(1f32, 0.5, 37, &dev)?;
        let eps = 1e-6;
        let op = HostRmsNorm { eps: eps as f32 };
        let got = x.apply_op2_no_bwd(&w, &op)?;
        let diff = (got - by_ops(&x, &w, eps)?)?.abs()?.flatten_all()?.max(0)?;
        assert!(diff.to_scalar::<f32>()? < 1e-5);

        let xb = x.to_dtype(DType::BF16)?;
        let got = xb.apply_op2_no_bwd(&w, &op)?;
        assert_eq!(got.dtype(), DType::BF16);
        let want = by_ops(&xb, &w, eps)?.to_dtype(DType::F32)?;
        let got = got.to_dtype(DType::F32)?;
        // One rounding of sums in another order: at most one bf16 step apart.
        let beyond = ((got - &want)?.abs()? - (want.abs()? / 128.)?)?
            .flatten_all()?
            .max(0)?;
        assert!(beyond.to_scalar::<f32>()? <= 0.);
        Ok(())
    }

    #[test]
    fn gated_norm_matches_the_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 2., (2, 9, 3, 37), &dev)?;
        let gate = Tensor::randn(0f32, 2., (2, 9, 3, 37), &dev)?;
        let w = Tensor::randn(1f32, 0.5, 37, &dev)?;
        let op = GatedRmsNorm { eps: 1e-5 };
        for dtype in [DType::F32, DType::BF16] {
            let (x, gate) = (x.to_dtype(dtype)?, gate.to_dtype(dtype)?);
            let got = x.apply_op3_no_bwd(&gate, &w, &op)?;
            assert_eq!(got.dtype(), dtype);
            // The GDN layer's tensor ops.
            let round = |t: Tensor| t.to_dtype(dtype)?.to_dtype(DType::F32);
            let normed = round(by_ops(
                &x.to_dtype(DType::F32)?,
                &Tensor::ones(37, DType::F32, &dev)?,
                1e-5,
            )?)?;
            let normed = round(normed.broadcast_mul(&w)?)?;
            let want = (normed * gate.to_dtype(DType::F32)?.silu()?)?.to_dtype(dtype)?;
            let (got, want) = (got.to_dtype(DType::F32)?, want.to_dtype(DType::F32)?);
            // Sums of squares in another order: within 1e-5 in f32; in bf16, roundings that
            // moved by one step through the two products.
            let tol = if dtype == DType::F32 { 1e-5 } else { 1. / 64. };
            let beyond = ((got - &want)?.abs()? - (want.abs()? * tol)?)?
                .flatten_all()?
                .max(0)?;
            assert!(beyond.to_scalar::<f32>()? <= 1e-6, "{dtype:?}");
        }
        Ok(())
    }

    #[test]
    fn refuses_a_weight_of_another_width() -> Result<()> {
        let x = Tensor::zeros((2, 8), DType::F32, &Device::Cpu)?;
        let w = Tensor::ones(6, DType::F32, &Device::Cpu)?;
        assert!(x.apply_op2_no_bwd(&w, &HostRmsNorm { eps: 1e-6 }).is_err());
        Ok(())
    }
}
