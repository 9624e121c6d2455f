//! Building blocks shared by the architectures: linear maps, RMSNorm, SwiGLU.

use candle_core::{DType, Result, Tensor, D};

/// `x @ wᵀ` for weights stored `[out, in]`, over any leading dims of `x`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let (inner, lead) = dims
        .split_last()
        .expect("linear input has at least one dim");
    let rows: usize = lead.iter().product();
    let out = x.reshape((rows, *inner))?.matmul(&w.t()?)?;
    let mut shape = lead.to_vec();
    shape.push(w.dim(0)?);
    out.reshape(shape)
}

/// RMSNorm as transformers computes it: normalise in f32, multiply the weight in f32, cast back.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// `weight` is kept in f32, as the reference multiplies it there.
    pub fn new(weight: Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?,
            eps,
        })
    }

    /// Normalises over the last dim.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
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
    /// Applies the MLP.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = silu(&linear(x, &self.gate)?)?;
        let u = linear(x, &self.up)?;
        linear(&(g * u)?, &self.down)
    }
}
