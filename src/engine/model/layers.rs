//! Building blocks shared by the architectures: projections, RMSNorm, SwiGLU, residual adds.

#[cfg(target_arch = "x86_64")]
use std::sync::Arc;

#[cfg(target_arch = "x86_64")]
use candle_core::Device;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use half::bf16;

#[cfg(target_arch = "x86_64")]
use super::dot_bf16::Packed;

use super::cpu_slice::contiguous;
use super::fast_exp::SwiGlu;
use super::host_norm::HostRmsNorm;
use super::path::ExecPath;
#[cfg(target_arch = "x86_64")]
use super::products::View;
use super::widened::Bf16Linear;
use super::widest::add;

/// `x @ wᵀ` for `x: [rows, in]` and a weight stored `[out, in]`.
fn dense_product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let bf16_host = x.dtype() == DType::BF16 && w.dtype() == DType::BF16 && x.device().is_cpu();
    if bf16_host && !x.track_op() && !w.track_op() {
        return x.apply_op2_no_bwd(w, &Bf16Linear);
    }
    x.matmul(&w.t()?)
}

/// A projection's weight `[out, in]`, held the way the forward pass multiplies it.
#[derive(Debug, Clone)]
pub enum Projection {
    /// A tensor. A projection's, on the CPU outside training, has its elements laid out
    /// `[in, out]` (the same tensor with transposed strides), as `gemm` packs `wᵀ` from that
    /// layout with contiguous loads, measured 5–15% faster per product on these shapes than
    /// from a checkpoint's `[out, in]`; an LM head keeps the checkpoint's layout. Trained
    /// weights (variables) stay as they are, so that updates show.
    Dense(Tensor),
    /// bf16 on a CPU with AVX512-BF16, outside training: packed once at load into the panels
    /// the dot-product kernel reads, in place of the tensor, rather than at every product.
    #[cfg(target_arch = "x86_64")]
    Packed(Arc<Packed>),
}

impl Projection {
    /// Loads `name` (`[out, in]`) from `vb`.
    pub fn load(vb: &VarBuilder, (out, inp): (usize, usize), name: &str) -> Result<Self> {
        let w = vb.get((out, inp), name)?;
        if let Some(packed) = pack(&w)? {
            return Ok(packed);
        }
        if w.device().is_cpu() && !w.is_variable() {
            return Ok(Self::Dense(w.t()?.contiguous()?.t()?));
        }
        Ok(Self::Dense(w))
    }

    /// An LM head `[vocab, hidden]` as the checkpoint lays it out (the logits' product reads
    /// it so), packed where [`Projection::load`] would pack it.
    pub fn head(w: Tensor) -> Result<Self> {
        Ok(pack(&w)?.unwrap_or(Self::Dense(w)))
    }

    /// `x @ wᵀ`, over any leading dims of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Some((&inner, lead)) = x.dims().split_last() else {
            candle_core::bail!("a projection's input has at least one dim")
        };
        let rows = x.reshape((lead.iter().product::<usize>(), inner))?;
        let out = match self {
            Self::Dense(w) => dense_product(&rows, w)?,
            #[cfg(target_arch = "x86_64")]
            Self::Packed(w) => rows.contiguous()?.apply_op1_no_bwd(&**w)?,
        };
        out.reshape([lead, &[self.dims().0]].concat())
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            // Both constructors take 2-D weights.
            Self::Dense(w) => w.dims2().unwrap_or_default(),
            #[cfg(target_arch = "x86_64")]
            Self::Packed(w) => w.dims(),
        }
    }

    /// The weight `[out, in]` as a tensor: the dense one, or for a packed one a bf16 copy
    /// unpacked on the CPU (for kernels that take a tensor: the device path's run on a CPU).
    pub fn weight(&self) -> Result<Tensor> {
        match self {
            Self::Dense(w) => Ok(w.clone()),
            #[cfg(target_arch = "x86_64")]
            Self::Packed(w) => Tensor::from_vec(w.unpack(), w.dims(), &Device::Cpu),
        }
    }
}

/// `w` packed for the dot-product kernel where it applies: bf16 on a CPU with AVX512-BF16,
/// outside training.
#[cfg(target_arch = "x86_64")]
fn pack(w: &Tensor) -> Result<Option<Projection>> {
    let packable = w.dtype() == DType::BF16
        && w.device().is_cpu()
        && !w.is_variable()
        && super::dot_bf16::available();
    if !packable {
        return Ok(None);
    }
    let dims = w.dims2()?;
    let (storage, layout) = w.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::BF16(data)) = &*storage else {
        candle_core::bail!("a bf16 CPU tensor without bf16 CPU storage")
    };
    let packed = Packed::new(View::over(data, layout), dims);
    Ok(Some(Projection::Packed(Arc::new(packed))))
}

/// Nothing to pack without the x86 dot-product kernel.
#[cfg(not(target_arch = "x86_64"))]
fn pack(_: &Tensor) -> Result<Option<Projection>> {
    Ok(None)
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

/// `x + y` for the residual stream. On the CPU outside training, bf16 adds in one AVX-512 pass
/// on rayon's threads, where candle's bf16 add converts eight lanes at a time on a thread pool
/// of its own (about 2% of bf16 scoring time); the sums and the rounding are the same.
pub fn residual_add(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let host = x.device().is_cpu() && !x.track_op() && !y.track_op();
    if host && x.dtype() == DType::BF16 && y.dtype() == DType::BF16 {
        return x
            .contiguous()?
            .apply_op2_no_bwd(&y.contiguous()?, &ResidualAdd);
    }
    x + y
}

/// [`residual_add`] on bf16 CPU tensors of one shape, both contiguous.
#[derive(Debug, Clone, Copy)]
struct ResidualAdd;

impl CustomOp2 for ResidualAdd {
    fn name(&self) -> &'static str {
        "residual-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<bf16>(xs, xl, "residual add", "inputs")?;
        let y = contiguous::<bf16>(ys, yl, "residual add", "inputs")?;
        if xl.shape() != yl.shape() {
            candle_core::bail!("residual add: {:?} and {:?}", xl.dims(), yl.dims())
        }
        Ok((CpuStorage::BF16(add(x, y)), xl.shape().clone()))
    }
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// `[intermediate, hidden]`
    pub gate: Projection,
    /// `[intermediate, hidden]`
    pub up: Projection,
    /// `[hidden, intermediate]`
    pub down: Projection,
}

impl Mlp {
    /// Loads `gate_proj`, `up_proj` and `down_proj` from `vb`.
    pub fn new(hidden: usize, intermediate: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gate: Projection::load(&vb, (intermediate, hidden), "gate_proj.weight")?,
            up: Projection::load(&vb, (intermediate, hidden), "up_proj.weight")?,
            down: Projection::load(&vb, (hidden, intermediate), "down_proj.weight")?,
        })
    }

    /// Applies the MLP.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.gate.forward(x)?;
        let u = self.up.forward(x)?;
        // On the CPU outside training, one pass with a vectorised exp, in bf16 with the
        // reference's roundings (SiLU rounded once, then the product).
        let host = matches!(x.dtype(), DType::F32 | DType::BF16);
        let h = if x.device().is_cpu() && !x.track_op() && host {
            g.apply_op2_no_bwd(&u, &SwiGlu)?
        } else {
            (silu(&g)? * u)?
        };
        self.down.forward(&h)
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

#[cfg(test)]
mod tests {
    use super::super::widest::GRAIN;
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_residual_add_is_candles_add() -> Result<()> {
        let dev = Device::Cpu;
        // More elements than one task adds, and a tail.
        let shape = (3, 5, GRAIN / 4 + 3);
        let x = Tensor::randn(0f32, 3., shape, &dev)?.to_dtype(DType::BF16)?;
        let y = Tensor::randn(0f32, 1., shape, &dev)?.to_dtype(DType::BF16)?;
        let got = residual_add(&x, &y)?;
        let want = (&x + &y)?;
        assert_eq!(got.dims(), want.dims());
        let (got, want) = (got.flatten_all()?, want.flatten_all()?);
        assert_eq!(got.to_vec1::<bf16>()?, want.to_vec1::<bf16>()?);
        assert!(residual_add(&x, &y.narrow(2, 1, 10)?).is_err());
        Ok(())
    }
}
