//! Olmo 2 / Olmo 3 softmax attention: full-width QK-norm, GQA, RoPE (optionally YaRN),
//! sliding windows. The hybrid's attention layers are the same module without a window.

use candle_core::{DType, Device, Result, Tensor, D};

use super::layers::{linear, RmsNorm};
use super::path::ExecPath;
use super::spec::{AttentionSpec, Rope};
use super::tables::{TableKey, Tables};

/// Upper bound, in bytes, on the f32 attention scores held at once, so long windows stay in
/// memory: small on the CPU, where they should stay in cache, larger on a GPU, where fewer and
/// larger blocks keep its cores busy.
fn score_budget(device: &Device) -> usize {
    if device.is_cpu() {
        64 << 20
    } else {
        2 << 30
    }
}

/// Queries per block at most: a block's keys end at its last query, so smaller blocks skip
/// most of the masked upper triangle (about half the score work of a full causal window).
const QUERY_BLOCK: usize = 128;

/// One attention mixer.
#[derive(Debug, Clone)]
pub struct Attention {
    /// `[heads·head_dim, hidden]`
    pub q: Tensor,
    /// `[kv_heads·head_dim, hidden]`
    pub k: Tensor,
    /// `[kv_heads·head_dim, hidden]`
    pub v: Tensor,
    /// `[hidden, heads·head_dim]`
    pub o: Tensor,
    /// RMSNorm over the whole q projection, before the head split.
    pub q_norm: RmsNorm,
    /// RMSNorm over the whole k projection.
    pub k_norm: RmsNorm,
    /// Head counts and width.
    pub spec: AttentionSpec,
    /// Sliding window (keys including the current one), `None` for full attention.
    pub window: Option<usize>,
    /// RoPE, `None` for NoPE layers.
    pub rope: Option<Rope>,
    /// The model's position tables (RoPE, masks).
    pub tables: Tables,
    /// Host or device kernels.
    pub path: ExecPath,
}

impl Attention {
    /// `x: [batch, seq, hidden]` → `[batch, seq, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (
            self.spec.num_heads,
            self.spec.num_kv_heads,
            self.spec.head_dim,
        );
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
        let mut q = heads(self.q_norm.forward(&linear(x, &self.q)?)?, nh)?;
        let mut k = heads(self.k_norm.forward(&linear(x, &self.k)?)?, nkv)?;
        let v = heads(linear(x, &self.v)?, nkv)?;
        // candle's fused rope and softmax kernels have no backward pass: when autograd is
        // recording (training), use the same formulas as plain tensor ops.
        let differentiable = q.track_op();
        if let Some(rope) = &self.rope {
            let key = TableKey::Rope {
                window: self.window,
                seq: t,
            };
            let tables = self.tables.get(key, x.device(), || {
                let (cos, sin) = rope_tables(rope, hd, t, x.device())?;
                Ok(vec![cos, sin])
            })?;
            let (cos, sin) = (&tables[0], &tables[1]);
            // The reference keeps cos/sin in f32 and rounds the rotated q/k back to the model dtype.
            let rot = |y: &Tensor| {
                let y32 = y.to_dtype(DType::F32)?;
                if differentiable {
                    candle_nn::rotary_emb::rope_slow(&y32, cos, sin)
                } else {
                    candle_nn::rotary_emb::rope(&y32, cos, sin)
                }?
                .to_dtype(y.dtype())
            };
            q = rot(&q)?;
            k = rot(&k)?;
        }
        let rep = nh / nkv;
        let expand = |y: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(y);
            }
            y.unsqueeze(2)?
                .expand((b, nkv, rep, t, hd))?
                .reshape((b, nh, t, hd))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let scale = (hd as f64).powf(-0.5);
        // The device path keeps the scores in the model dtype: the scale goes into q (exact for
        // the power-of-two scales of 64- and 256-wide heads), the mask is added in that dtype
        // and the softmax kernel accumulates in f32. A quarter of the host path's memory
        // traffic over the scores, which on a GPU is what attention's time goes to.
        let in_dtype = self.path == ExecPath::Device && !differentiable;
        let (q, score_dtype) = if in_dtype {
            ((q * scale)?, x.dtype())
        } else {
            (q, DType::F32)
        };
        let block = (score_budget(x.device()) / (4 * b * nh * t).max(1))
            .clamp(1, QUERY_BLOCK.min(t).max(1));
        let mask_key = TableKey::AttentionMask {
            window: self.window,
            seq: t,
            dtype: score_dtype,
        };
        let mask = self.tables.get(mask_key, x.device(), || {
            Ok(vec![
                causal_mask(t, self.window, x.device())?.to_dtype(score_dtype)?
            ])
        })?;
        let mut outs = Vec::with_capacity(t.div_ceil(block));
        for start in (0..t).step_by(block) {
            let len = block.min(t - start);
            let end = start + len;
            // Keys before `key_start` are outside every query's window in this block.
            let key_start = self.window.map_or(0, |w| (start + 1).saturating_sub(w));
            let qb = q.narrow(2, start, len)?;
            let kb = k.narrow(2, key_start, end - key_start)?;
            let vb = v.narrow(2, key_start, end - key_start)?;
            let scores = if in_dtype {
                qb.matmul(&kb.t()?)?
            } else {
                // As the reference: q·kᵀ rounded to the model dtype, scaled by the f32 scale and
                // rounded again (candle's affine would round the scale itself to bf16), softmax
                // in f32.
                (qb.matmul(&kb.t()?)?.to_dtype(DType::F32)? * scale)?
                    .to_dtype(x.dtype())?
                    .to_dtype(DType::F32)?
            };
            let mask = mask[0]
                .narrow(0, start, len)?
                .narrow(1, key_start, end - key_start)?;
            let masked = scores.broadcast_add(&mask)?;
            let probs = if differentiable {
                candle_nn::ops::softmax(&masked, D::Minus1)?
            } else {
                candle_nn::ops::softmax_last_dim(&masked)?
            }
            .to_dtype(x.dtype())?;
            outs.push(probs.matmul(&vb)?);
        }
        let out = Tensor::cat(&outs, 2)?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        linear(&out, &self.o)
    }
}

/// Additive mask `[seq, seq]`: 0 where query `i` sees key `j`, −∞ elsewhere.
fn causal_mask(seq: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; seq * seq];
    for (qi, row) in m.chunks_exact_mut(seq.max(1)).enumerate() {
        for (kj, slot) in row.iter_mut().enumerate() {
            let too_old = window.is_some_and(|w| kj + w <= qi);
            if kj > qi || too_old {
                *slot = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(m, (seq, seq), device)
}

/// f32 `cos`/`sin` tables `[seq, head_dim/2]` for positions `0..seq`.
pub fn rope_tables(
    rope: &Rope,
    head_dim: usize,
    seq: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (inv_freq, scaling) = rope.inv_freq(head_dim);
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for p in 0..seq {
        for f in &inv_freq {
            // f32 product like the reference, so large positions round identically.
            let angle = p as f32 * f;
            cos.push(angle.cos() * scaling);
            sin.push(angle.sin() * scaling);
        }
    }
    Ok((
        Tensor::from_vec(cos, (seq, half), device)?,
        Tensor::from_vec(sin, (seq, half), device)?,
    ))
}
