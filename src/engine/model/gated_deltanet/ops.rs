//! The gated delta rule as candle tensor ops: what autograd differentiates in training, and the
//! device path's kernel, where nothing leaves the device.
//!
//! Same chunked (WY) form as the plain kernel in [`super::host::chunked`], but batched
//! over batch × heads × chunks: per chunk, `(I + A)⁻¹` of the strictly lower-triangular
//! `A[i, j] = β_i (k_i·k_j) e^{gc_i − gc_j}` comes from a block forward substitution of
//! `log2(chunk)` batched steps, and only the state passes between chunks sequentially. A
//! token-by-token loop would launch thousands of tiny ops per layer.

use candle_core::{DType, Result, Tensor};

use crate::engine::model::tables::{TableKey, Tables};

/// `o_t = Sᵀq_t` of the recurrence `S ← e^{g_t} S; S ← S + k_t ⊗ β_t (v_t − Sᵀk_t)`.
///
/// `q`, `k`: `[batch, seq, heads, dk]`, already L2-normalised (q also scaled); `v`:
/// `[batch, seq, heads, dv]`; `g` (log decay) and `beta`: `[batch, seq, heads]`; all f32.
/// Returns `[batch, seq, heads, dv]`.
pub fn delta_rule(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: &Tensor,
    beta: &Tensor,
    chunk: usize,
    tables: &Tables,
) -> Result<Tensor> {
    let (b, t, h, dk) = q.dims4()?;
    let dv = v.dim(3)?;
    let c = chunk.clamp(1, t.max(1));
    let n = t.div_ceil(c);
    let pad = n * c - t;
    let dev = q.device();
    // [b, t, h, ·] → [b·h, n, c, ·] (candle's batched matmul takes at most two batch dims);
    // padding at the end (k = 0, β = 0, g = 0) writes nothing and cannot reach earlier outputs.
    let split = |x: &Tensor, width: usize| -> Result<Tensor> {
        x.transpose(1, 2)?
            .pad_with_zeros(2, 0, pad)?
            .reshape((b * h, n, c, width))
    };
    let split_gate = |x: &Tensor| -> Result<Tensor> {
        x.transpose(1, 2)?
            .pad_with_zeros(2, 0, pad)?
            .reshape((b * h, n, c))
    };
    let (q, k, v) = (split(q, dk)?, split(k, dk)?, split(v, dv)?);
    let beta = split_gate(beta)?.unsqueeze(3)?;
    let masks = tables.get(TableKey::ChunkMasks { chunk: c }, dev, || {
        let eye = Tensor::eye(c.next_power_of_two(), DType::F32, dev)?;
        Ok(vec![
            lower_mask(c, true, dev)?,
            lower_mask(c, false, dev)?,
            eye,
        ])
    })?;
    let (lower, strict, eye) = (&masks[0], &masks[1], &masks[2]);
    // The cumulative sum as a product with the cached triangle (candle's cumsum builds one per call).
    let gc = split_gate(g)?.broadcast_matmul(&lower.t()?)?; // [b·h, n, c]

    let diff = gc.unsqueeze(3)?.broadcast_sub(&gc.unsqueeze(2)?)?;
    // Mask before exp: above the diagonal gc_i − gc_j > 0 and could overflow.
    let decay = diff.broadcast_mul(lower)?.exp()?.broadcast_mul(lower)?;
    let kt = k.transpose(2, 3)?;
    let k_beta = k.broadcast_mul(&beta)?;
    let a = k_beta.matmul(&kt)?.mul(&decay)?.broadcast_mul(strict)?;
    let inv = unit_lower_inverse(&a.reshape((b * h * n, c, c))?, eye)?.reshape((b * h, n, c, c))?;
    let gc_exp = gc.exp()?.unsqueeze(3)?;
    let u = inv.matmul(&v.broadcast_mul(&beta)?)?; // [b·h, n, c, dv]
    let w = inv.matmul(&k_beta.broadcast_mul(&gc_exp)?)?; // [b·h, n, c, dk]
    let intra = q.matmul(&kt)?.mul(&decay)?; // [b·h, n, c, c]
    let q_decayed = q.broadcast_mul(&gc_exp)?;
    let last = gc.narrow(2, c - 1, 1)?; // [b·h, n, 1]
    let k_to_end = k.broadcast_mul(&last.broadcast_sub(&gc)?.exp()?.unsqueeze(3)?)?;

    let at = |x: &Tensor, i: usize| x.narrow(1, i, 1)?.squeeze(1);
    let mut state = Tensor::zeros((b * h, dk, dv), DType::F32, dev)?;
    let mut outs = Vec::with_capacity(n);
    for i in 0..n {
        let v_new = (at(&u, i)? - at(&w, i)?.matmul(&state)?)?;
        outs.push((at(&q_decayed, i)?.matmul(&state)? + at(&intra, i)?.matmul(&v_new)?)?);
        let end_decay = at(&last, i)?.unsqueeze(2)?.exp()?; // [b·h, 1, 1]
        state = (state.broadcast_mul(&end_decay)? + at(&k_to_end, i)?.t()?.matmul(&v_new)?)?;
    }
    Tensor::cat(&outs, 1)? // [b·h, n·c, dv]
        .narrow(1, 0, t)?
        .reshape((b, h, t, dv))?
        .transpose(1, 2)?
        .contiguous()
}

/// `c × c` f32 mask: ones on and below the diagonal (`diagonal`) or strictly below.
fn lower_mask(c: usize, diagonal: bool, dev: &candle_core::Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..c * c)
        .map(|x| {
            let (i, j) = (x / c, x % c);
            f32::from(j < i || (diagonal && i == j))
        })
        .collect();
    Tensor::from_vec(m, (c, c), dev)
}

/// `(I + A)⁻¹` for strictly lower-triangular `A: [batch, c, c]`, by block forward substitution:
/// with `L = [[L₁₁, 0], [L₂₁, L₂₂]]`, `L⁻¹ = [[L₁₁⁻¹, 0], [−L₂₂⁻¹ L₂₁ L₁₁⁻¹, L₂₂⁻¹]]`, the two
/// diagonal halves inverted together as one batch. Unlike a power series in `A` it never forms
/// large intermediate products that cancel, so its rounding does not grow with the chunk.
/// `eye` is the identity of `c`'s next power of two.
fn unit_lower_inverse(a: &Tensor, eye: &Tensor) -> Result<Tensor> {
    let (batch, c, _) = a.dims3()?;
    // Zero rows and columns up to a power of two leave the inverse's top-left block unchanged.
    let size = eye.dim(0)?;
    let padded = a
        .pad_with_zeros(1, 0, size - c)?
        .pad_with_zeros(2, 0, size - c)?;
    let l = padded.broadcast_add(eye)?;
    invert_unit_lower(&l, batch)?
        .narrow(1, 0, c)?
        .narrow(2, 0, c)
}

/// Inverse of unit lower-triangular `l: [batch, n, n]`, `n` a power of two.
fn invert_unit_lower(l: &Tensor, batch: usize) -> Result<Tensor> {
    let n = l.dim(1)?;
    if n == 1 {
        return l.ones_like();
    }
    let half = n / 2;
    let l11 = l.narrow(1, 0, half)?.narrow(2, 0, half)?;
    let l22 = l.narrow(1, half, half)?.narrow(2, half, half)?;
    let l21 = l.narrow(1, half, half)?.narrow(2, 0, half)?;
    let both = invert_unit_lower(&Tensor::cat(&[&l11, &l22], 0)?, 2 * batch)?;
    let (i11, i22) = (both.narrow(0, 0, batch)?, both.narrow(0, batch, batch)?);
    let i21 = i22.matmul(&l21.contiguous()?)?.matmul(&i11)?.neg()?;
    let top = Tensor::cat(&[&i11, &i11.zeros_like()?], 2)?;
    let bottom = Tensor::cat(&[&i21, &i22], 2)?;
    Tensor::cat(&[&top, &bottom], 1)
}
