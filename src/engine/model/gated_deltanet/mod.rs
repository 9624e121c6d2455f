//! Gated DeltaNet (the recurrent layer of Olmo Hybrid), per transformers' `OlmoHybridGatedDeltaNet`.
//!
//! Projections, the depthwise causal convolution and the gated output norm are candle ops. The
//! delta-rule recurrence runs, in its chunked form, either as a plain-Rust f32 kernel parallel
//! over heads (the host path, fastest on the CPU) or as batched tensor ops (training's autograd,
//! and the device path). The token-by-token recurrence is kept as the test oracle.

use candle_core::{DType, Result, Tensor, D};
use rayon::prelude::*;

use super::delta_rule_ops;
use super::layers::{linear, normalize_f32, sigmoid, silu};
use super::path::ExecPath;
use super::spec::GdnSpec;
use super::tables::Tables;

/// Chunk length of the chunked kernel, as in the reference.
pub const CHUNK: usize = 64;

/// Chunk length of the tensor-op kernel under autograd: the backward pass keeps every chunk's
/// intermediates, and 32 keeps training's memory and its numerics as they were measured.
pub const AUTOGRAD_CHUNK: usize = 32;

/// One Gated DeltaNet mixer.
#[derive(Debug, Clone)]
pub struct GatedDeltaNet {
    /// `[key_dim, hidden]`
    pub q: Tensor,
    /// `[key_dim, hidden]`
    pub k: Tensor,
    /// `[value_dim, hidden]`
    pub v: Tensor,
    /// `[v_heads, hidden]`: decay input
    pub a: Tensor,
    /// `[v_heads, hidden]`: β input
    pub b: Tensor,
    /// `[value_dim, hidden]`: output gate
    pub g: Tensor,
    /// `[hidden, value_dim]`
    pub o: Tensor,
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
            &[
                linear(x, &self.q)?,
                linear(x, &self.k)?,
                linear(x, &self.v)?,
            ],
            2,
        )?;
        // torch's conv1d accumulates in f32 and rounds once to the model dtype.
        let mixed = causal_depthwise_conv(
            &mixed.to_dtype(DType::F32)?,
            &self.conv.to_dtype(DType::F32)?,
        )?
        .to_dtype(x.dtype())?;
        let mixed = silu(&mixed)?;
        let mut beta = sigmoid(&linear(x, &self.b)?)?;
        if s.allow_neg_eigval {
            beta = (beta * 2.0)?;
        }
        let raw = RawInputs {
            q: mixed.narrow(2, 0, kd)?,
            k: mixed.narrow(2, kd, kd)?,
            v: mixed.narrow(2, 2 * kd, vd)?,
            a: linear(x, &self.a)?,
            beta,
        };
        let out = match kernel {
            Kernel::Ops(chunk) => self.delta_rule_ops(raw, chunk)?,
            Kernel::Chunked(_) | Kernel::Recurrent => self.delta_rule_plain(raw, kernel)?,
        }
        .to_dtype(x.dtype())?;
        let gate = linear(x, &self.g)?.reshape((bsz, t, nv, s.head_v_dim))?;
        // Gated RMSNorm: normalise in f32, round to the model dtype, weight (a model-dtype
        // product in the reference, so rounded again), then the f32 SiLU gate.
        let normed = normalize_f32(&out, 1e-5)?
            .to_dtype(x.dtype())?
            .to_dtype(DType::F32)?;
        let normed = normed
            .broadcast_mul(&self.o_norm)?
            .to_dtype(x.dtype())?
            .to_dtype(DType::F32)?;
        let gated = (normed * gate.to_dtype(DType::F32)?.silu()?)?.to_dtype(x.dtype())?;
        linear(&gated.reshape((bsz, t, vd))?, &self.o)
    }

    /// The plain f32 kernels: `[batch, seq, v_heads, head_v_dim]` in f32.
    fn delta_rule_plain(&self, raw: RawInputs, kernel: Kernel) -> Result<Tensor> {
        let s = &self.spec;
        let (bsz, t, _) = raw.q.dims3()?;
        let device = raw.q.device().clone();
        let to_f32 =
            |y: Tensor| -> Result<Vec<f32>> { y.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
        let (q, k, v) = (to_f32(raw.q)?, to_f32(raw.k)?, to_f32(raw.v)?);
        let (beta, a) = (to_f32(raw.beta)?, to_f32(raw.a)?);
        let a_log: Vec<f32> = self.a_log.to_vec1()?;
        let dt_bias: Vec<f32> = self.dt_bias.to_vec1()?;
        let nv = s.num_v_heads;
        let g: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &ai)| -a_log[i % nv].exp() * softplus(ai + dt_bias[i % nv]))
            .collect();
        let inputs = GdnInputs {
            q: &q,
            k: &k,
            v: &v,
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
            Kernel::Recurrent => recurrent(&inputs),
            Kernel::Chunked(c) => chunked(&inputs, c),
            Kernel::Ops(_) => candle_core::bail!("the tensor-op kernel is not a plain kernel"),
        };
        Tensor::from_vec(out, (bsz, t, nv, s.head_v_dim), &device)
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
        delta_rule_ops::delta_rule(&q, &k, &v, &g, &beta, chunk, &self.tables)
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

/// Inputs of the delta-rule kernels, all f32, row-major.
pub struct GdnInputs<'a> {
    /// `[batch, seq, k_heads, dk]`, after conv, before L2 norm.
    pub q: &'a [f32],
    /// `[batch, seq, k_heads, dk]`
    pub k: &'a [f32],
    /// `[batch, seq, v_heads, dv]`
    pub v: &'a [f32],
    /// Log decay `[batch, seq, v_heads]` (≤ 0).
    pub g: &'a [f32],
    /// Write strength `[batch, seq, v_heads]`.
    pub beta: &'a [f32],
    /// Batch size.
    pub batch: usize,
    /// Sequence length.
    pub seq: usize,
    /// Query/key heads.
    pub k_heads: usize,
    /// Value heads (multiple of `k_heads`).
    pub v_heads: usize,
    /// Query/key head width.
    pub dk: usize,
    /// Value head width.
    pub dv: usize,
}

/// One value head's inputs, gathered contiguous: q (L2-normed, scaled), k (L2-normed), v, g, β.
struct Head {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    g: Vec<f32>,
    beta: Vec<f32>,
}

impl GdnInputs<'_> {
    fn head(&self, b: usize, h: usize) -> Head {
        let (t, dk, dv) = (self.seq, self.dk, self.dv);
        let kh = h / (self.v_heads / self.k_heads);
        let scale = (dk as f32).powf(-0.5);
        let mut head = Head {
            q: Vec::with_capacity(t * dk),
            k: Vec::with_capacity(t * dk),
            v: Vec::with_capacity(t * dv),
            g: Vec::with_capacity(t),
            beta: Vec::with_capacity(t),
        };
        for i in 0..t {
            let qk_at = ((b * t + i) * self.k_heads + kh) * dk;
            let v_at = ((b * t + i) * self.v_heads + h) * dv;
            let gate_at = (b * t + i) * self.v_heads + h;
            let q = &self.q[qk_at..qk_at + dk];
            let k = &self.k[qk_at..qk_at + dk];
            let qn = 1.0 / (q.iter().map(|x| x * x).sum::<f32>() + 1e-6).sqrt();
            let kn = 1.0 / (k.iter().map(|x| x * x).sum::<f32>() + 1e-6).sqrt();
            head.q.extend(q.iter().map(|x| x * qn * scale));
            head.k.extend(k.iter().map(|x| x * kn));
            head.v.extend_from_slice(&self.v[v_at..v_at + dv]);
            head.g.push(self.g[gate_at]);
            head.beta.push(self.beta[gate_at]);
        }
        head
    }

    /// Runs `per_head` on every (batch, value head) in parallel and scatters `[seq, dv]` results
    /// into `[batch, seq, v_heads, dv]`.
    fn run(&self, per_head: impl Fn(&Head) -> Vec<f32> + Sync) -> Vec<f32> {
        let (t, nv, dv) = (self.seq, self.v_heads, self.dv);
        let results: Vec<Vec<f32>> = (0..self.batch * nv)
            .into_par_iter()
            .map(|bh| per_head(&self.head(bh / nv, bh % nv)))
            .collect();
        let mut out = vec![0f32; self.batch * t * nv * dv];
        for (bh, res) in results.iter().enumerate() {
            let (b, h) = (bh / nv, bh % nv);
            for i in 0..t {
                let at = ((b * t + i) * nv + h) * dv;
                out[at..at + dv].copy_from_slice(&res[i * dv..(i + 1) * dv]);
            }
        }
        out
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it
/// (a single running sum pins the order of float additions).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out += s · row` elementwise.
fn axpy(out: &mut [f32], s: f32, row: &[f32]) {
    for (o, r) in out.iter_mut().zip(row) {
        *o += s * r;
    }
}

/// `out[dv] += xᵀ S` for a state `S: [dk, dv]`.
fn vec_state(out: &mut [f32], x: &[f32], state: &[f32], dv: usize) {
    for (i, &xi) in x.iter().enumerate() {
        axpy(out, xi, &state[i * dv..(i + 1) * dv]);
    }
}

/// Token-by-token recurrence: `S ← e^g S; S ← S + k ⊗ β(v − Sᵀk); o = Sᵀq`. The test oracle.
pub fn recurrent(inputs: &GdnInputs) -> Vec<f32> {
    let (t, dk, dv) = (inputs.seq, inputs.dk, inputs.dv);
    inputs.run(|h| {
        let mut state = vec![0f32; dk * dv];
        let mut out = vec![0f32; t * dv];
        let mut delta = vec![0f32; dv];
        let mut mem = vec![0f32; dv];
        for i in 0..t {
            let decay = h.g[i].exp();
            state.iter_mut().for_each(|s| *s *= decay);
            let k = &h.k[i * dk..(i + 1) * dk];
            delta.copy_from_slice(&h.v[i * dv..(i + 1) * dv]);
            mem.iter_mut().for_each(|x| *x = 0.0);
            vec_state(&mut mem, k, &state, dv);
            for (d, m) in delta.iter_mut().zip(&mem) {
                *d = (*d - m) * h.beta[i];
            }
            for (r, &kr) in k.iter().enumerate() {
                axpy(&mut state[r * dv..(r + 1) * dv], kr, &delta);
            }
            vec_state(
                &mut out[i * dv..(i + 1) * dv],
                &h.q[i * dk..(i + 1) * dk],
                &state,
                dv,
            );
        }
        out
    })
}

/// Chunked delta rule (the WY form of the reference's `torch_chunk_gated_delta_rule`).
pub fn chunked(inputs: &GdnInputs, chunk: usize) -> Vec<f32> {
    let (t, dk, dv) = (inputs.seq, inputs.dk, inputs.dv);
    let chunk = chunk.max(1);
    inputs.run(|h| {
        let mut state = vec![0f32; dk * dv];
        let mut out = vec![0f32; t * dv];
        let w = dv + dk;
        let mut x = vec![0f32; chunk * w];
        let mut v_new = vec![0f32; chunk * dv];
        let mut gc = vec![0f64; chunk];
        let mut kk = vec![0f32; chunk * chunk];
        let mut ws = vec![0f32; dv];
        for s0 in (0..t).step_by(chunk) {
            let n = chunk.min(t - s0);
            let q = &h.q[s0 * dk..(s0 + n) * dk];
            let k = &h.k[s0 * dk..(s0 + n) * dk];
            // Cumulative log-decays in f64: the gates use differences gc_i − gc_j of sums that
            // grow with the chunk, and in f32 their cancellation error made 128-token chunks
            // drift ~1e-4 nats from 64-token ones on a whole model.
            let mut acc = 0f64;
            for (c, g) in gc.iter_mut().zip(&h.g[s0..s0 + n]) {
                acc += f64::from(*g);
                *c = acc;
            }
            // kk[i, j] = k_i · k_j for j < i, reused by the triangular solve.
            for i in 0..n {
                for j in 0..i {
                    kk[i * chunk + j] = dot(&k[i * dk..(i + 1) * dk], &k[j * dk..(j + 1) * dk]);
                }
            }
            // Solve (I + A) X = [βv | β e^{gc} k] with A[i, j] = β_i (k_i·k_j) e^{gc_i − gc_j}, j < i.
            for i in 0..n {
                let beta = h.beta[s0 + i];
                let (done, rest) = x.split_at_mut(i * w);
                let row = &mut rest[..w];
                for (c, &vi) in row[..dv]
                    .iter_mut()
                    .zip(&h.v[(s0 + i) * dv..(s0 + i + 1) * dv])
                {
                    *c = beta * vi;
                }
                let e = beta * gc[i].exp() as f32;
                for (c, &ki) in row[dv..].iter_mut().zip(&k[i * dk..(i + 1) * dk]) {
                    *c = e * ki;
                }
                for j in 0..i {
                    let a = beta * kk[i * chunk + j] * (gc[i] - gc[j]).exp() as f32;
                    axpy(row, -a, &done[j * w..(j + 1) * w]);
                }
            }
            // v_new = U − W S
            for i in 0..n {
                let row = &x[i * w..(i + 1) * w];
                let vn = &mut v_new[i * dv..(i + 1) * dv];
                vn.copy_from_slice(&row[..dv]);
                ws.iter_mut().for_each(|x| *x = 0.0);
                vec_state(&mut ws, &row[dv..], &state, dv);
                for (a, b) in vn.iter_mut().zip(&ws) {
                    *a -= b;
                }
            }
            // o_i = e^{gc_i} q_i S + Σ_{j≤i} (q_i·k_j) e^{gc_i − gc_j} v_new_j
            for i in 0..n {
                let qi = &q[i * dk..(i + 1) * dk];
                let o = &mut out[(s0 + i) * dv..(s0 + i + 1) * dv];
                vec_state(o, qi, &state, dv);
                let e = gc[i].exp() as f32;
                o.iter_mut().for_each(|x| *x *= e);
                for j in 0..=i {
                    let a = dot(qi, &k[j * dk..(j + 1) * dk]) * (gc[i] - gc[j]).exp() as f32;
                    axpy(o, a, &v_new[j * dv..(j + 1) * dv]);
                }
            }
            // S ← e^{gc_last} S + Σ_j e^{gc_last − gc_j} k_j ⊗ v_new_j
            let last = gc[n - 1];
            let decay = last.exp() as f32;
            state.iter_mut().for_each(|s| *s *= decay);
            for j in 0..n {
                let e = (last - gc[j]).exp() as f32;
                let kj = &k[j * dk..(j + 1) * dk];
                let vn = &v_new[j * dv..(j + 1) * dv];
                for (r, &kr) in kj.iter().enumerate() {
                    axpy(&mut state[r * dv..(r + 1) * dv], e * kr, vn);
                }
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    struct Owned {
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
        g: Vec<f32>,
        beta: Vec<f32>,
    }

    fn random(seq: usize, seed: u64) -> Owned {
        let mut rng = StdRng::seed_from_u64(seed);
        let (b, nk, nv, dk, dv) = (2, 2, 4, 16, 12);
        let mut n = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(lo..hi)).collect()
        };
        Owned {
            q: n(b * seq * nk * dk, -1.0, 1.0),
            k: n(b * seq * nk * dk, -1.0, 1.0),
            v: n(b * seq * nv * dv, -1.0, 1.0),
            g: n(b * seq * nv, -0.7, 0.0),
            beta: n(b * seq * nv, 0.0, 2.0),
        }
    }

    fn inputs(o: &Owned, seq: usize) -> GdnInputs<'_> {
        GdnInputs {
            q: &o.q,
            k: &o.k,
            v: &o.v,
            g: &o.g,
            beta: &o.beta,
            batch: 2,
            seq,
            k_heads: 2,
            v_heads: 4,
            dk: 16,
            dv: 12,
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn chunked_matches_recurrence() {
        for (i, seq) in [1, 63, 64, 65, 200].into_iter().enumerate() {
            let o = random(seq, i as u64);
            let d = max_diff(
                &chunked(&inputs(&o, seq), CHUNK),
                &recurrent(&inputs(&o, seq)),
            );
            assert!(d <= 1e-5, "seq {seq}: max diff {d}");
        }
    }

    #[test]
    fn chunk_size_does_not_change_outputs() {
        let seq = 300;
        let o = random(seq, 7);
        let reference = chunked(&inputs(&o, seq), 64);
        for c in [16, 32, 128] {
            let d = max_diff(&chunked(&inputs(&o, seq), c), &reference);
            assert!(d <= 1e-5, "chunk {c}: max diff {d}");
        }
    }

    #[test]
    fn zero_decay_and_beta_keep_state_empty() {
        // β = 0 writes nothing, so every output must be exactly zero.
        let seq = 70;
        let mut o = random(seq, 3);
        o.beta.iter_mut().for_each(|b| *b = 0.0);
        assert!(chunked(&inputs(&o, seq), CHUNK).iter().all(|x| *x == 0.0));
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
        Ok(GatedDeltaNet {
            q: r(&[kd, h], 0.3)?,
            k: r(&[kd, h], 0.3)?,
            v: r(&[vd, h], 0.3)?,
            a: r(&[nv, h], 0.3)?,
            b: r(&[nv, h], 0.3)?,
            g: r(&[vd, h], 0.3)?,
            o: r(&[h, vd], 0.3)?,
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
