//! Building blocks shared by the architectures: linear maps, RMSNorm, SwiGLU.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::fast_exp::SwiGlu;
use super::host_norm::HostRmsNorm;
use super::path::ExecPath;
use super::widened::Bf16Linear;

/// `x @ wᵀ` for weights stored `[out, in]`, over any leading dims of `x`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let (inner, lead) = dims
        .split_last()
        .expect("linear input has at least one dim");
    let rows: usize = lead.iter().product();
    let x = x.reshape((rows, *inner))?;
    let bf16_host = x.dtype() == DType::BF16 && w.dtype() == DType::BF16 && x.device().is_cpu();
    let out = if bf16_host && !x.track_op() && !w.track_op() {
        x.apply_op2_no_bwd(w, &Bf16Linear)?
    } else {
        x.matmul(&w.t()?)?
    };
    let mut shape = lead.to_vec();
    shape.push(w.dim(0)?);
    out.reshape(shape)
}

/// A projection's weight `[out, in]` from `vb`. On the CPU outside training its elements are
/// laid out `[in, out]` (the same tensor with transposed strides): `gemm` packs `wᵀ` from that
/// layout with contiguous loads, measured 5–15% faster per product on these shapes than from a
/// checkpoint's `[out, in]`. Trained weights (variables) stay as they are, so that updates show.
pub fn projection(vb: &VarBuilder, (out, inp): (usize, usize), name: &str) -> Result<Tensor> {
    let w = vb.get((out, inp), name)?;
    if w.device().is_cpu() && !w.is_variable() {
        w.t()?.contiguous()?.t()
    } else {
        Ok(w)
    }
}

/// RMSNorm as transformers computes it: normalise in f32, multiply the weight in f32, cast back.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    /// The weight as stored, for the fused kernel (whose f32 product is the same).
    stored: Tensor,
    eps: f64,
    /// On the device path a GPU runs one fused kernel (accumulating in f32, rounding once) in
    /// place of the eight ops of the host path.
    pub path: ExecPath,
}

impl RmsNorm {
    /// `weight` is kept in f32, as the reference multiplies it there.
    pub fn new(weight: Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            stored: weight.clone(),
            weight: weight.to_dtype(DType::F32)?,
            eps,
            path: ExecPath::Host,
        })
    }

    /// Loads `weight` (`[size]`, in the model dtype) from `vb`.
    pub fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Self::new(vb.get(size, "weight")?, eps)
    }

    /// Normalises over the last dim.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        // The fused kernel has no backward pass, so training keeps the plain ops; and candle's
        // CPU version of it rounds the norm and the products to bf16, unlike the GPU kernel
        // (which `filtermon parity` checks on the GPU), so the CPU keeps the reference's
        // roundings: in one pass per row outside training (`host_norm`), else the plain ops.
        if self.path == ExecPath::Device && !x.device().is_cpu() && !x.track_op() {
            let alpha = if self.stored.dtype() == dtype {
                self.stored.clone()
            } else {
                self.weight.to_dtype(dtype)?
            };
            return candle_nn::ops::rms_norm(&x.contiguous()?, &alpha, self.eps as f32);
        }
        let host = matches!(dtype, DType::F32 | DType::BF16);
        if x.device().is_cpu() && !x.track_op() && !self.weight.track_op() && host {
            let op = HostRmsNorm {
                eps: self.eps as f32,
            };
            return x.contiguous()?.apply_op2_no_bwd(&self.weight, &op);
        }
        let xf = normalize_f32(x, self.eps)?;
        xf.broadcast_mul(&self.weight)?.to_dtype(dtype)
    }
}

/// `x / sqrt(mean(x²) + eps)` over the last dim, in f32.
pub fn normalize_f32(x: &Tensor, eps: f64) -> Result<Tensor> {
    let xf = x.to_dtype(DType::F32)?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    xf.broadcast_div(&(var + eps)?.sqrt()?)
}

/// SiLU computed in f32 and rounded once to `x`'s dtype, as torch does for bf16 (candle's own
/// bf16 SiLU rounds after the exp, the add and the division, and differs on ~30 % of elements).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::F32)?.silu()?.to_dtype(x.dtype())
}

/// Sigmoid computed in f32 and rounded once to `x`'s dtype (see [`silu`]).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[intermediate, hidden]`
    pub gate: Tensor,
    /// `[intermediate, hidden]`
    pub up: Tensor,
    /// `[hidden, intermediate]`
    pub down: Tensor,
}

impl Mlp {
    /// Loads `gate_proj`, `up_proj` and `down_proj` from `vb`.
    pub fn new(hidden: usize, intermediate: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gate: projection(&vb, (intermediate, hidden), "gate_proj.weight")?,
            up: projection(&vb, (intermediate, hidden), "up_proj.weight")?,
            down: projection(&vb, (hidden, intermediate), "down_proj.weight")?,
        })
    }

    /// Applies the MLP.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = linear(x, &self.gate)?;
        let u = linear(x, &self.up)?;
        // On the CPU outside training, one pass with a vectorised exp, in bf16 with the
        // reference's roundings (SiLU rounded once, then the product).
        let host = matches!(x.dtype(), DType::F32 | DType::BF16);
        let h = if x.device().is_cpu() && !x.track_op() && host {
            g.apply_op2_no_bwd(&u, &SwiGlu)?
        } else {
            (silu(&g)? * u)?
        };
        linear(&h, &self.down)
    }
}

/// The first of `prefixes` under which `vb` holds a `weight`, for modules checkpoints save under
/// more than one name; the first one when none does, so that the error names it.
pub fn pick<'a>(vb: &VarBuilder, prefixes: &[&'a str]) -> &'a str {
    prefixes
        .iter()
        .find(|p| vb.contains_tensor(&format!("{p}.weight")))
        .or(prefixes.first())
        .copied()
        .unwrap_or_default()
}
