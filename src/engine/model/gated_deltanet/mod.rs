//! Gated DeltaNet (the recurrent layer of Olmo Hybrid), per transformers' `OlmoHybridGatedDeltaNet`.
//!
//! Projections and the gated output norm are candle ops; so is the depthwise causal
//! convolution, but for one f32 pass with its SiLU on the host ([`conv`]). The delta-rule
//! recurrence runs, in its chunked form, either as a plain-Rust f32 kernel parallel over heads
//! ([`host`], the host path, fastest on the CPU) or as batched tensor ops ([`ops`], training's
//! autograd and the device path). The token-by-token recurrence ([`recurrent`]) is
//! kept as the test oracle.

pub mod conv;
pub mod host;
pub mod ops;
pub mod recurrent;

use candle_core::{DType, Result, Storage, Tensor, D};
use candle_nn::VarBuilder;

use super::cpu_slice::contiguous;
use super::host_norm::GatedRmsNorm;
use super::layers::{normalize_f32, pick, sigmoid, silu, Projection};
use super::path::ExecPath;
use super::spec::GdnSpec;
use super::tables::Tables;
use super::widest::narrow;
use super::LoadError;
use host::GdnInputs;

/// Chunk length of the chunked kernel, as in the reference.
pub const CHUNK: usize = 64;

/// Chunk length of the tensor-op kernel under autograd: the backward pass keeps every chunk's
/// intermediates, and 32 keeps training's memory and its numerics as they were measured.
pub const AUTOGRAD_CHUNK: usize = 32;

/// One Gated DeltaNet mixer.
#[derive(Debug, Clone)]
pub struct GatedDeltaNet {
    /// `[key_dim, hidden]`
    pub q: Projection,
    /// `[key_dim, hidden]`
    pub k: Projection,
    /// `[value_dim, hidden]`
    pub v: Projection,
    /// `[v_heads, hidden]`: decay input
    pub a: Projection,
    /// `[v_heads, hidden]`: β input
    pub b: Projection,
    /// `[value_dim, hidden]`: output gate
    pub g: Projection,
    /// `[hidden, value_dim]`
    pub o: Projection,
    /// Depthwise conv weight `[2·key_dim + value_dim, kernel]`, rows q | k | v.
    pub conv: Tensor,
    /// `[v_heads]`, f32
    pub a_log: Tensor,
    /// `[v_heads]`, f32 (holding model-dtype values, as the reference keeps it in the model dtype)
    pub dt_bias: Tensor,
    /// Per-value-head RMSNorm weight `[head_v_dim]`, f32 (holding model-dtype values).
    pub o_norm: Tensor,
    /// Shape.
    pub spec: GdnSpec,
    /// Chunk length of the inference kernel ([`CHUNK`] when loaded); any length gives the same
    /// outputs up to rounding, which tests check on whole models.
    pub chunk: usize,
    /// Host or device kernels for inference.
    pub path: ExecPath,
    /// The model's position tables (the chunk masks).
    pub tables: Tables,
}

impl GatedDeltaNet {
    /// Loads a `linear_attn` module: the names transformers saves, their in-memory aliases
    /// (`out_proj`, `norm`), and the fused `conv1d` or its `q_conv1d`/`k_conv1d`/`v_conv1d` parts.
    pub fn new(spec: &GdnSpec, hidden: usize, tables: Tables, vb: VarBuilder) -> Result<Self> {
        let (kd, vd, nv) = (spec.key_dim(), spec.value_dim(), spec.num_v_heads);
        // transformers keeps `A_log` in f32 whatever the load dtype, but `dt_bias` and the o_norm
        // weight in the model dtype: those are rounded through it.
        Ok(Self {
            q: Projection::load(&vb, (kd, hidden), "q_proj.weight")?,
            k: Projection::load(&vb, (kd, hidden), "k_proj.weight")?,
            v: Projection::load(&vb, (vd, hidden), "v_proj.weight")?,
            a: Projection::load(&vb, (nv, hidden), "a_proj.weight")?,
            b: Projection::load(&vb, (nv, hidden), "b_proj.weight")?,
            g: Projection::load(&vb, (vd, hidden), "g_proj.weight")?,
            o: Projection::load(
                &vb.pp(pick(&vb, &["o_proj", "out_proj"])),
                (hidden, vd),
                "weight",
            )?,
            conv: conv_weight(&vb, 2 * kd + vd, spec.conv_kernel)?,
            a_log: vb.get_with_hints_dtype(nv, "A_log", Default::default(), DType::F32)?,
            dt_bias: vb.get(nv, "dt_bias")?.to_dtype(DType::F32)?,
            o_norm: vb
                .pp(pick(&vb, &["o_norm", "norm"]))
                .get(spec.head_v_dim, "weight")?
                .to_dtype(DType::F32)?,
            spec: spec.clone(),
            chunk: CHUNK,
            path: ExecPath::for_device(vb.device()),
            tables,
        })
    }

    /// `x: [batch, seq, hidden]` → `[batch, seq, hidden]`.
    ///
    /// Autograd only follows tensor ops, so when `x` is tracked (training) the recurrence runs as
    /// tensor ops; otherwise as the path says.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kernel = match self.path {
            _ if x.track_op() => Kernel::Ops(AUTOGRAD_CHUNK),
            ExecPath::Host => Kernel::Chunked(self.chunk),
            ExecPath::Device => Kernel::Ops(self.chunk),
        };
        self.forward_with(x, kernel)
    }

    /// Forward with a chosen recurrence kernel (tests compare them).
    pub fn forward_with(&self, x: &Tensor, kernel: Kernel) -> Result<Tensor> {
        let (bsz, t, _) = x.dims3()?;
        let s = &self.spec;
        let (kd, vd, nv) = (s.key_dim(), s.value_dim(), s.num_v_heads);
        let mixed = Tensor::cat(
            &[self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?],
            2,
        )?;
        let host = x.device().is_cpu()
            && matches!(x.dtype(), DType::F32 | DType::BF16)
            && matches!(kernel, Kernel::Chunked(_) | Kernel::Recurrent);
        let mixed = if host {
            mixed.apply_op2_no_bwd(&self.conv, &conv::ConvSilu)?
        } else {
            // torch's conv1d accumulates in f32 and rounds once to the model dtype.
            let conv = causal_depthwise_conv(
                &mixed.to_dtype(DType::F32)?,
                &self.conv.to_dtype(DType::F32)?,
            )?;
            silu(&conv.to_dtype(x.dtype())?)?
        };
        let mut beta = sigmoid(&self.b.forward(x)?)?;
        if s.allow_neg_eigval {
            beta = (beta * 2.0)?;
        }
        let a = self.a.forward(x)?;
        let out = match kernel {
            Kernel::Ops(chunk) => {
                let raw = RawInputs {
                    q: mixed.narrow(2, 0, kd)?,
                    k: mixed.narrow(2, kd, kd)?,
                    v: mixed.narrow(2, 2 * kd, vd)?,
                    a,
                    beta,
                };
                self.delta_rule_ops(raw, chunk)?.to_dtype(x.dtype())?
            }
            Kernel::Chunked(_) | Kernel::Recurrent => {
                self.delta_rule_plain(&mixed, &a, &beta, kernel, x.dtype())?
            }
        };
        let gate = self.g.forward(x)?.reshape((bsz, t, nv, s.head_v_dim))?;
        // Gated RMSNorm: normalise in f32, round to the model dtype, weight (a model-dtype
        // product in the reference, so rounded again), then the f32 SiLU gate.
        if host && !x.track_op() {
            let gated = out.contiguous()?.apply_op3_no_bwd(
                &gate,
                &self.o_norm,
                &GatedRmsNorm { eps: 1e-5 },
            )?;
            return self.o.forward(&gated.reshape((bsz, t, vd))?);
        }
        let normed = normalize_f32(&out, 1e-5)?
            .to_dtype(x.dtype())?
            .to_dtype(DType::F32)?;
        let normed = normed
            .broadcast_mul(&self.o_norm)?
            .to_dtype(x.dtype())?
            .to_dtype(DType::F32)?;
        let gated = (normed * gate.to_dtype(DType::F32)?.silu()?)?.to_dtype(x.dtype())?;
        self.o.forward(&gated.reshape((bsz, t, vd))?)
    }

    /// The plain f32 kernels on the convolution's output `mixed` (`[batch, seq, q | k | v]`)
    /// and the decay and β inputs `a` and `beta` (`[batch, seq, v_heads]`):
    /// `[batch, seq, v_heads, head_v_dim]`, rounded once to `dtype`.
    fn delta_rule_plain(
        &self,
        mixed: &Tensor,
        a: &Tensor,
        beta: &Tensor,
        kernel: Kernel,
        dtype: DType,
    ) -> Result<Tensor> {
        let s = &self.spec;
        let (bsz, t, _) = mixed.dims3()?;
        let device = mixed.device().clone();
        let to_f32 =
            |y: &Tensor| -> Result<Vec<f32>> { y.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
        let (beta, a) = (to_f32(beta)?, to_f32(a)?);
        let a_log: Vec<f32> = self.a_log.to_vec1()?;
        let dt_bias: Vec<f32> = self.dt_bias.to_vec1()?;
        let nv = s.num_v_heads;
        let g: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &ai)| -a_log[i % nv].exp() * softplus(ai + dt_bias[i % nv]))
            .collect();
        // The host path's convolution leaves `mixed` a contiguous f32 CPU tensor: read in place.
        let mixed = mixed.to_dtype(DType::F32)?.contiguous()?;
        let (storage, layout) = mixed.storage_and_layout();
        let copied;
        let qkv = match &*storage {
            Storage::Cpu(cpu) => contiguous::<f32>(cpu, layout, "gated deltanet", "inputs")?,
            _ => {
                copied = mixed.flatten_all()?.to_vec1::<f32>()?;
                &copied[..]
            }
        };
        let inputs = GdnInputs {
            qkv,
            g: &g,
            beta: &beta,
            batch: bsz,
            seq: t,
            k_heads: s.num_k_heads,
            v_heads: nv,
            dk: s.head_k_dim,
            dv: s.head_v_dim,
        };
        let out = match kernel {
            Kernel::Recurrent => recurrent::recurrent(&inputs),
            Kernel::Chunked(c) => host::chunked(&inputs, c),
            Kernel::Ops(_) => candle_core::bail!("the tensor-op kernel is not a plain kernel"),
        };
        let shape = (bsz, t, nv, s.head_v_dim);
        if dtype == DType::BF16 {
            return Tensor::from_vec(narrow(&out), shape, &device);
        }
        Tensor::from_vec(out, shape, &device)?.to_dtype(dtype)
    }

    /// The delta rule as candle tensor ops (differentiable, device-resident),
    /// `[batch, seq, v_heads, head_v_dim]`.
    fn delta_rule_ops(&self, raw: RawInputs, chunk: usize) -> Result<Tensor> {
        let s = &self.spec;
        let (bsz, t, _) = raw.q.dims3()?;
        let f32 = |y: &Tensor| y.to_dtype(DType::F32);
        let rep = s.num_v_heads / s.num_k_heads;
        // L2-normalise each key head, then repeat it for the value heads that share it.
        let heads = |y: &Tensor, scale: f64| -> Result<Tensor> {
            let y = f32(y)?.reshape((bsz, t, s.num_k_heads, s.head_k_dim))?;
            let inv = (y.sqr()?.sum_keepdim(D::Minus1)? + 1e-6)?.sqrt()?.recip()?;
            let y = (y.broadcast_mul(&inv)? * scale)?;
            y.unsqueeze(3)?
                .expand((bsz, t, s.num_k_heads, rep, s.head_k_dim))?
                .reshape((bsz, t, s.num_v_heads, s.head_k_dim))
        };
        let q = heads(&raw.q, (s.head_k_dim as f64).powf(-0.5))?;
        let k = heads(&raw.k, 1.0)?;
        let v = f32(&raw.v)?.reshape((bsz, t, s.num_v_heads, s.head_v_dim))?;
        let pre = f32(&raw.a)?.broadcast_add(&self.dt_bias)?;
        let g = softplus_tensor(&pre)?.broadcast_mul(&self.a_log.exp()?.neg()?)?;
        let beta = f32(&raw.beta)?;
        ops::delta_rule(&q, &k, &v, &g, &beta, chunk, &self.tables)
    }
}

/// The mixer's inputs to the delta rule, in the model dtype: q, k, v after the conv and SiLU,
/// the decay input `a_proj x` and β.
struct RawInputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    beta: Tensor,
}

/// Which recurrence kernel to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Chunked form with this chunk length.
    Chunked(usize),
    /// Token by token (the oracle).
    Recurrent,
    /// Chunked form with this chunk length as candle tensor ops: autograd can differentiate it,
    /// and it runs wherever the tensors live.
    Ops(usize),
}

/// `softplus` as tensor ops, stable for large |x|: `max(x, 0) + ln(1 + e^{−|x|})`.
fn softplus_tensor(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// `softplus` with torch's threshold, above which it is the identity.
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The depthwise conv weight as `[conv_dim, kernel]`, from the fused tensor or from
/// `q_conv1d`/`k_conv1d`/`v_conv1d` concatenated (whatever their individual row counts).
fn conv_weight(vb: &VarBuilder, conv_dim: usize, kernel: usize) -> Result<Tensor> {
    if vb.contains_tensor("conv1d.weight") {
        return vb
            .get((conv_dim, 1, kernel), "conv1d.weight")?
            .reshape((conv_dim, kernel));
    }
    let parts = ["q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight"]
        .iter()
        .map(|name| vb.get_unchecked(name))
        .collect::<Result<Vec<_>>>()?;
    let t = Tensor::cat(&parts, 0)?;
    if t.dims() != [conv_dim, 1, kernel] {
        return Err(LoadError::ConcatenatedShape {
            tensors: format!("{}.{{q,k,v}}_conv1d.weight", vb.prefix()),
            got: t.dims().to_vec(),
            expected: vec![conv_dim, 1, kernel],
        }
        .into());
    }
    t.reshape((conv_dim, kernel))
}

/// Depthwise causal conv over time: `x: [b, t, c]`, `w: [c, k]`, output `[b, t, c]`.
pub fn causal_depthwise_conv(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (_, t, _) = x.dims3()?;
    let kernel = w.dim(1)?;
    let padded = x.pad_with_zeros(1, kernel - 1, 0)?;
    let wt = w.t()?.contiguous()?; // [k, c]
    let mut acc: Option<Tensor> = None;
    for j in 0..kernel {
        let term = padded.narrow(1, j, t)?.broadcast_mul(&wt.get(j)?)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    // `kernel` ≥ 1 is checked when the layer is loaded.
    acc.ok_or_else(|| candle_core::Error::Msg("conv kernel of length 0".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// A seeded N(0, std²)-ish tensor (uniform with that standard deviation).
    fn seeded(rng: &mut StdRng, shape: &[usize], std: f32) -> Result<Tensor> {
        let half_width = std * 3f32.sqrt();
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| rng.random_range(-half_width..half_width))
            .collect();
        Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
    }

    /// A layer with random weights: 2 key heads shared by 4 value heads.
    fn random_layer(allow_neg_eigval: bool, seed: u64) -> Result<GatedDeltaNet> {
        let mut rng = StdRng::seed_from_u64(seed);
        let spec = GdnSpec {
            num_k_heads: 2,
            num_v_heads: 4,
            head_k_dim: 8,
            head_v_dim: 6,
            conv_kernel: 4,
            allow_neg_eigval,
        };
        let (h, kd, vd, nv) = (16, spec.key_dim(), spec.value_dim(), 4);
        let mut r = |shape: &[usize], std: f32| seeded(&mut rng, shape, std);
        let mut p = |shape: &[usize]| r(shape, 0.3).map(Projection::Dense);
        Ok(GatedDeltaNet {
            q: p(&[kd, h])?,
            k: p(&[kd, h])?,
            v: p(&[vd, h])?,
            a: p(&[nv, h])?,
            b: p(&[nv, h])?,
            g: p(&[vd, h])?,
            o: p(&[h, vd])?,
            conv: r(&[2 * kd + vd, 4], 0.5)?,
            a_log: r(&[nv], 1.0)?,
            dt_bias: r(&[nv], 1.0)?,
            o_norm: (r(&[6], 0.1)? + 1.0)?,
            spec,
            chunk: CHUNK,
            path: ExecPath::Host,
            tables: Tables::default(),
        })
    }

    /// Largest difference between two kernels' layer outputs, relative to the output scale (a
    /// few units here; the plain kernels agree with each other to the same degree).
    fn kernel_gap(layer: &GatedDeltaNet, x: &Tensor, a: Kernel, b: Kernel) -> Result<f32> {
        let flat =
            |k: Kernel| -> Result<Vec<f32>> { layer.forward_with(x, k)?.flatten_all()?.to_vec1() };
        let (a, b) = (flat(a)?, flat(b)?);
        let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
        Ok(max_diff(&a, &b) / scale)
    }

    #[test]
    fn autograd_kernel_matches_plain_kernels() -> Result<()> {
        for (seed, seq, neg) in [(0, 1, false), (1, 50, true), (2, 64, false), (3, 150, true)] {
            let layer = random_layer(neg, seed)?;
            let x = seeded(&mut StdRng::seed_from_u64(seed + 10), &[2, seq, 16], 1.0)?;
            for k in [Kernel::Recurrent, Kernel::Chunked(CHUNK)] {
                let d = kernel_gap(&layer, &x, Kernel::Ops(AUTOGRAD_CHUNK), k)?;
                assert!(d <= 1e-5, "seq {seq}, {k:?}: max relative diff {d}");
            }
        }
        Ok(())
    }

    /// The device path's kernel against the token-by-token oracle, at lengths around a chunk
    /// boundary and every chunk length from 16 to 128 (β up to 2 in half of the cases).
    #[test]
    fn tensor_op_kernel_matches_the_recurrence() -> Result<()> {
        for (seed, seq) in [1, 63, 64, 65, 300].into_iter().enumerate() {
            let layer = random_layer(seed % 2 == 0, seed as u64)?;
            let x = seeded(
                &mut StdRng::seed_from_u64(seed as u64 + 20),
                &[2, seq, 16],
                1.0,
            )?;
            for chunk in [16, 32, 48, 64, 100, 128] {
                let d = kernel_gap(&layer, &x, Kernel::Ops(chunk), Kernel::Recurrent)?;
                assert!(d <= 1e-5, "seq {seq}, chunk {chunk}: max relative diff {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn the_device_path_selects_the_tensor_op_kernel() -> Result<()> {
        let mut layer = random_layer(true, 5)?;
        let x = seeded(&mut StdRng::seed_from_u64(9), &[1, 70, 16], 1.0)?;
        layer.path = ExecPath::Device;
        let via_path: Vec<f32> = layer.forward(&x)?.flatten_all()?.to_vec1()?;
        let ops: Vec<f32> = layer
            .forward_with(&x, Kernel::Ops(CHUNK))?
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(via_path, ops);
        Ok(())
    }

    #[test]
    fn tracked_input_selects_the_autograd_kernel() -> Result<()> {
        let layer = random_layer(false, 4)?;
        let x = candle_core::Var::randn(0f32, 1.0, (1, 20, 16), &candle_core::Device::Cpu)?;
        let y = layer.forward(x.as_tensor())?;
        // Position 0 reaches the last output only through the recurrence (the conv spans 4).
        let grads = y.narrow(1, 19, 1)?.sqr()?.sum_all()?.backward()?;
        let gx = grads
            .get(x.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient reached the input".into()))?;
        let first = gx.narrow(1, 0, 1)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(first > 0.0);
        Ok(())
    }
}
