//! RMSNorm on the host as one pass per row: candle's ops take eight passes over the
//! activations (widen, square, mean, add, root, divide, scale, narrow), each a hand-off to its
//! thread pool, four times a layer.
//!
//! The numbers are those of [`super::layers::RmsNorm`]'s ops: the row in f32, divided by
//! `sqrt(mean(x²) + eps)`, times the f32 weight, rounded once to the input's dtype; only the
//! order of the sum of squares differs.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use half::bf16;
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use super::widest::{narrow_row, widen_row, widest};

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
        let shape = xl.shape().clone();
        let eps = self.eps;
        if let CpuStorage::BF16(_) = xs {
            let x = contiguous::<bf16>(xs, xl, "rms norm", "activations")?;
            let mut out = vec![bf16::ZERO; x.len()];
            out.par_chunks_mut(width * ROWS_PER_TASK)
                .zip(x.par_chunks(width * ROWS_PER_TASK))
                .for_each(|(o, x)| {
                    let mut row = vec![0f32; width];
                    for (o, x) in o.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                        widen_row(x, &mut row);
                        normalize_row(&mut row, weight, eps);
                        narrow_row(&row, o);
                    }
                });
            return Ok((CpuStorage::BF16(out), shape));
        }
        let x = contiguous::<f32>(xs, xl, "rms norm", "activations")?;
        let mut out = x.to_vec();
        out.par_chunks_mut(width * ROWS_PER_TASK).for_each(|rows| {
            for row in rows.chunks_exact_mut(width) {
                normalize_row(row, weight, eps);
            }
        });
        Ok((CpuStorage::F32(out), shape))
    }
}

widest! {
    /// Normalises one row in place.
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
    for (v, w) in row.iter_mut().zip(weight) {
        *v = *v / root * w;
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
    fn refuses_a_weight_of_another_width() -> Result<()> {
        let x = Tensor::zeros((2, 8), DType::F32, &Device::Cpu)?;
        let w = Tensor::ones(6, DType::F32, &Device::Cpu)?;
        assert!(x.apply_op2_no_bwd(&w, &HostRmsNorm { eps: 1e-6 }).is_err());
        Ok(())
    }
}
