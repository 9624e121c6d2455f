//! The gated delta rule as candle tensor ops, so that autograd can differentiate it (training).
//!
//! Same chunked (WY) form as the plain kernel in [`super::gated_deltanet::chunked`], but batched
//! over batch × heads × chunks: per chunk, `(I + A)⁻¹` of the strictly lower-triangular
//! `A[i, j] = β_i (k_i·k_j) e^{gc_i − gc_j}` comes from a product of `log2(chunk)` matmuls
//! (`A` is nilpotent, so `Σ_{n<chunk} (−A)ⁿ` is exact), and only the state passes between chunks
//! sequentially. A token-by-token loop would record thousands of tiny ops per layer.

use candle_core::{DType, Device, Result, Tensor};

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
    let gc = split_gate(g)?.cumsum(2)?; // [b·h, n, c]

    let lower = lower_mask(c, true, dev)?;
    let strict = lower_mask(c, false, dev)?;
    let diff = gc.unsqueeze(3)?.broadcast_sub(&gc.unsqueeze(2)?)?;
    // Mask before exp: above the diagonal gc_i − gc_j > 0 and could overflow.
    let decay = diff.broadcast_mul(&lower)?.exp()?.broadcast_mul(&lower)?;
    let kt = k.transpose(2, 3)?;
    let k_beta = k.broadcast_mul(&beta)?;
    let a = k_beta.matmul(&kt)?.mul(&decay)?.broadcast_mul(&strict)?;
    let inv = unit_lower_inverse(&a, c)?;
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
fn lower_mask(c: usize, diagonal: bool, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..c * c)
        .map(|x| {
            let (i, j) = (x / c, x % c);
            f32::from(j < i || (diagonal && i == j))
        })
        .collect();
    Tensor::from_vec(m, (c, c), dev)
}

/// `(I + A)⁻¹` for strictly lower-triangular `A: [.., c, c]`, as
/// `(I − A)(I + A²)(I + A⁴)…`, which sums `(−A)ⁿ` for `n < c` (and `Aᶜ = 0`).
fn unit_lower_inverse(a: &Tensor, c: usize) -> Result<Tensor> {
    let eye = Tensor::eye(c, DType::F32, a.device())?;
    let mut power = a.neg()?;
    let mut inv = power.broadcast_add(&eye)?;
    let mut covered = 2;
    while covered < c {
        power = power.matmul(&power)?;
        inv = (&inv + inv.matmul(&power)?)?;
        covered *= 2;
    }
    Ok(inv)
}
