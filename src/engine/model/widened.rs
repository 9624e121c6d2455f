//! bf16 matrix products on the f32 kernels.
//!
//! candle's CPU product of two bf16 tensors widens both whole storages to f32 at every call (a
//! projection's weight, and for the logits the whole LM head), multiplies, and narrows the
//! result. Here the activations are widened once and the weight one block of output columns at
//! a time into a scratch of at most 16 MiB, so a bf16 checkpoint keeps its bf16 weights in
//! memory and is multiplied at the f32 kernels' rate. The numbers are candle's: a product of two
//! bf16 values is exact in f32, the sums run in f32, and the result is rounded once to bf16.
//! CPUs with AVX512-BF16 skip the widening: [`super::dot_bf16`] multiplies the bf16 values as
//! they are, at twice the f32 kernels' products per instruction.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use half::bf16;
use rayon::prelude::*;

use super::products::{product, Land, View};
use super::widest::{narrow, widen_row};

/// f32 elements of the widened weight block: 16 MiB, a whole projection at the bench's widths
/// and the LM head in a few blocks. Each block repacks the activations inside `gemm`, so blocks
/// of 4 MiB measured 8–12% slower on the whole bf16 forward.
const BLOCK_ELEMS: usize = 1 << 22;

/// Elements one task converts: enough to pay for the task, few enough to share a projection's
/// rows between both threads.
const CONVERT_GRAIN: usize = 1 << 14;

/// `x · wᵀ` into the row-major `rows × n` f32 matrix `out`, for bf16 `x` (`rows × k`) and `w`
/// (`n × k`), on `threads` threads.
pub fn widened_product(
    out: &mut [f32],
    x: View<bf16>,
    w: View<bf16>,
    (rows, n, k): (usize, usize, usize),
    threads: usize,
) {
    assert!(
        x.holds(rows, k) && w.holds(n, k) && out.len() >= rows * n,
        "bf16 product: an operand is smaller than its view"
    );
    #[cfg(target_arch = "x86_64")]
    if dot_applies(x) {
        return super::dot_bf16::product(out, x, w, (rows, n, k));
    }
    on_f32_kernels(out, x, w, (rows, n, k), threads);
}

/// Whether [`super::dot_bf16`] multiplies `x` on this CPU: it reads rows in place, so their
/// columns must be adjacent.
#[cfg(target_arch = "x86_64")]
fn dot_applies(x: View<bf16>) -> bool {
    x.cs == 1 && super::dot_bf16::available()
}

/// [`widened_product`] on `gemm`'s f32 kernels, whatever the CPU.
fn on_f32_kernels(
    out: &mut [f32],
    x: View<bf16>,
    w: View<bf16>,
    (rows, n, k): (usize, usize, usize),
    threads: usize,
) {
    let mut xs = vec![0f32; rows * k];
    widen(&mut xs, x, rows, k);
    let lhs = View::rows(&xs, k);
    let cols = (BLOCK_ELEMS / k.max(1)).clamp(64, n.max(64));
    let mut scratch = vec![0f32; cols.min(n) * k];
    for j0 in (0..n).step_by(cols) {
        let nb = cols.min(n - j0);
        let block = &mut scratch[..nb * k];
        // Widen along whichever dimension the weight stores contiguously.
        let rhs = if w.cs == 1 {
            widen(block, from_row(w, j0), nb, k);
            View::transposed(block, k)
        } else {
            widen(block, from_row(w, j0).t(), k, nb);
            View::rows(block, nb)
        };
        product(
            &mut out[j0..],
            n,
            (rows, nb, k),
            lhs,
            rhs,
            Land::Set,
            threads,
        );
    }
}

/// The rows of `v` from row `r` on.
fn from_row(v: View<bf16>, r: usize) -> View<bf16> {
    View {
        data: &v.data[(r * v.rs).min(v.data.len())..],
        ..v
    }
}

/// `src`'s `r × c` elements, widened, into the row-major `dst`, rows shared between threads.
fn widen(dst: &mut [f32], src: View<bf16>, r: usize, c: usize) {
    let rows_per_task = (CONVERT_GRAIN / c.max(1)).max(1);
    dst[..r * c]
        .par_chunks_mut(c.max(1))
        .with_min_len(rows_per_task)
        .enumerate()
        .for_each(|(i, row)| {
            let at = &src.data[i * src.rs..];
            if src.cs == 1 {
                widen_row(&at[..c], row);
            } else {
                for (j, d) in row.iter_mut().enumerate() {
                    *d = at[j * src.cs].to_f32();
                }
            }
        });
}

/// `x · wᵀ` for bf16 CPU tensors `x: [rows, k]` and `w: [n, k]` (any strides), as
/// [`widened_product`], rounded to bf16.
#[derive(Debug, Clone, Copy)]
pub struct Bf16Linear;

impl CustomOp2 for Bf16Linear {
    fn name(&self) -> &'static str {
        "bf16-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::BF16(x), CpuStorage::BF16(w)) = (xs, ws) else {
            candle_core::bail!("bf16-linear takes bf16 operands")
        };
        let ((rows, k), (n, wk)) = (xl.shape().dims2()?, wl.shape().dims2()?);
        if k != wk {
            candle_core::bail!("bf16-linear: {rows}×{k} by a weight of {n}×{wk}")
        }
        let (x, w) = (View::over(x, xl), View::over(w, wl));
        #[cfg(target_arch = "x86_64")]
        if dot_applies(x) {
            use half::vec::HalfBitsVecExt;
            let mut out = vec![0u16; rows * n].reinterpret_into::<bf16>();
            super::dot_bf16::product(&mut out, x, w, (rows, n, k));
            return Ok((CpuStorage::BF16(out), Shape::from((rows, n))));
        }
        let mut out = vec![0f32; rows * n];
        on_f32_kernels(&mut out, x, w, (rows, n, k), rayon::current_num_threads());
        Ok((CpuStorage::BF16(narrow(&out)), Shape::from((rows, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// `x · wᵀ` in f32 from the widened bf16 values, one dot product at a time.
    fn reference(x: &Tensor, w: &Tensor) -> Vec<Vec<f32>> {
        let x: Vec<Vec<f32>> = x.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
        let w: Vec<Vec<f32>> = w.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
        x.iter()
            .map(|xr| {
                w.iter()
                    .map(|wr| xr.iter().zip(wr).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn matches_the_f32_product_of_the_widened_values() -> Result<()> {
        let dev = Device::Cpu;
        // One block holds BLOCK_ELEMS / k outputs, so these take two, the second partial; the
        // transposed weight takes the strided widening.
        let (rows, k) = (3, 1024);
        let n = BLOCK_ELEMS / k + 76;
        let x = Tensor::randn(0f32, 1., (rows, k), &dev)?.to_dtype(DType::BF16)?;
        let stored = Tensor::randn(0f32, 1., (n, k), &dev)?.to_dtype(DType::BF16)?;
        let transposed = stored.t()?.contiguous()?.t()?;
        let want = reference(&x, &stored);
        let xs = x.to_vec2::<bf16>()?.concat();
        for w in [&stored, &transposed] {
            let got: Vec<Vec<f32>> = x
                .apply_op2_no_bwd(w, &Bf16Linear)?
                .to_dtype(DType::F32)?
                .to_vec2()?;
            for (g, r) in got.iter().flatten().zip(want.iter().flatten()) {
                // One bf16 rounding of the result, plus f32 sums in another order.
                assert!((g - r).abs() <= r.abs() / 128. + 1e-3, "{g} vs {r}");
            }
            // The f32 kernels' path, whichever path the CPU takes above.
            let (ws, wl) = w.storage_and_layout();
            let candle_core::Storage::Cpu(CpuStorage::BF16(wd)) = &*ws else {
                panic!("a bf16 CPU tensor")
            };
            let mut got = vec![f32::NAN; rows * n];
            on_f32_kernels(
                &mut got,
                View::rows(&xs, k),
                View::over(wd, wl),
                (rows, n, k),
                2,
            );
            for (g, r) in got.iter().zip(want.iter().flatten()) {
                assert!((g - r).abs() <= 1e-3 * (1. + r.abs()), "{g} vs {r}");
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_mismatched_inner_widths() -> Result<()> {
        let x = Tensor::zeros((2, 8), DType::BF16, &Device::Cpu)?;
        let w = Tensor::zeros((4, 6), DType::BF16, &Device::Cpu)?;
        assert!(x.apply_op2_no_bwd(&w, &Bf16Linear).is_err());
        Ok(())
    }
}
