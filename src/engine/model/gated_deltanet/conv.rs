//! The host path's short convolution in f32: the causal depthwise convolution over time and its
//! SiLU in one pass, parallel over positions. As tensor ops it took a padded copy and, per tap,
//! a full-size product and sum.

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use half::bf16;
use rayon::prelude::*;

use super::super::cpu_slice::contiguous;
use super::super::fast_exp::silu_chunk;
use super::super::widest::{round_row, widen};

/// `silu(causal_depthwise_conv(x, w))` for `x: [batch, seq, channels]` and `w: [channels,
/// taps]`: position t of a channel sums taps j = 0‥taps−1 over the input at t − (taps − 1) + j
/// (zero before the start), in that order, as the tensor-op version adds them. On bf16 tensors
/// the sums run in f32 and are rounded to bf16 before the SiLU, whose result is rounded again,
/// as torch's conv1d and the reference's SiLU round them. The result is f32 either way (bf16
/// values, for bf16 inputs): the delta rule's kernel reads it in f32.
#[derive(Debug, Clone, Copy)]
pub struct ConvSilu;

impl CustomOp2 for ConvSilu {
    fn name(&self) -> &'static str {
        "host-conv-silu"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let bf16_in = matches!(x, CpuStorage::BF16(_));
        let x = &*widened(x, x_layout, "inputs")?;
        let w = &*widened(w, w_layout, "weights")?;
        let (_, seq, channels) = x_layout.shape().dims3()?;
        let (w_channels, taps) = w_layout.shape().dims2()?;
        if w_channels != channels || taps == 0 {
            candle_core::bail!("conv-silu: weight {w_channels}×{taps} for {channels} channels")
        }
        // Tap-major, so that each tap's weights run along the channels as the input does.
        let by_tap: Vec<f32> = (0..taps)
            .flat_map(|j| (0..channels).map(move |c| w[c * taps + j]))
            .collect();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(channels)
            .enumerate()
            .for_each(|(row, o)| {
                let (b, t) = (row / seq, row % seq);
                for (j, weights) in by_tap.chunks_exact(channels).enumerate() {
                    // Input position t − (taps − 1) + j; taps before the start add zero.
                    let Some(at) = (t + j).checked_sub(taps - 1) else {
                        continue;
                    };
                    let input = &x[(b * seq + at) * channels..][..channels];
                    for ((o, &xi), &wi) in o.iter_mut().zip(input).zip(weights) {
                        *o += xi * wi;
                    }
                }
                if bf16_in {
                    // The vectorised exp: its last-ulp differences from libm's survive the
                    // rounding to bf16 only within them of a rounding boundary (a few values in
                    // 10⁵), and libm's exp, one call per value, was ~3% of a GDN layer's time.
                    round_row(o);
                    silu_chunk(o);
                    round_row(o);
                } else {
                    // libm's exp, as candle's SiLU: the fast exp's last-ulp differences, passed
                    // through the recurrence, doubled the chunk-length drift of a hybrid's NLL.
                    for v in o.iter_mut() {
                        *v /= 1.0 + (-*v).exp();
                    }
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// A contiguous f32 or bf16 operand as f32: borrowed, or widened into a copy.
fn widened<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<Cow<'a, [f32]>> {
    if let CpuStorage::BF16(_) = storage {
        let narrow = contiguous::<bf16>(storage, layout, "conv-silu", what)?;
        return Ok(Cow::Owned(widen(narrow)));
    }
    contiguous::<f32>(storage, layout, "conv-silu", what).map(Cow::Borrowed)
}

#[cfg(test)]
mod tests {
    use super::super::causal_depthwise_conv;
    use super::*;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn matches_the_tensor_op_convolution_and_silu() -> Result<()> {
        let dev = Device::Cpu;
        for (seq, taps) in [(1, 4), (3, 4), (50, 4), (20, 1)] {
            let x = Tensor::randn(0f32, 1.0, (2, seq, 24), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (24, taps), &dev)?;
            let got = x.apply_op2_no_bwd(&w, &ConvSilu)?;
            let want = causal_depthwise_conv(&x, &w)?.silu()?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "seq {seq}, taps {taps}: the same sums and SiLU");

            // bf16: the reference's roundings, after the sums and after the SiLU; every value a
            // bf16 value.
            let (xb, wb) = (x.to_dtype(DType::BF16)?, w.to_dtype(DType::BF16)?);
            let got = xb.apply_op2_no_bwd(&wb, &ConvSilu)?;
            assert_eq!(got.dtype(), DType::F32);
            let conv = causal_depthwise_conv(&xb.to_dtype(DType::F32)?, &wb.to_dtype(DType::F32)?)?;
            let want = conv
                .to_dtype(DType::BF16)?
                .to_dtype(DType::F32)?
                .silu()?
                .to_dtype(DType::BF16)?;
            let want = want.to_dtype(DType::F32)?;
            // The same sums; the SiLU's exp may round to the neighbouring bf16 value.
            let beyond = ((&got - &want)?.abs()? - (want.abs()? / 128.)?)?;
            let beyond = beyond.max_all()?.to_scalar::<f32>()?;
            assert!(beyond <= 0.0, "bf16 seq {seq}, taps {taps}");
            let narrowed = got.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
            assert_eq!(
                narrowed.flatten_all()?.to_vec1::<f32>()?,
                got.flatten_all()?.to_vec1::<f32>()?
            );
        }
        Ok(())
    }
}
