//! The host path's attention in f32 on the CPU, outside training: RoPE and causal attention
//! over queries, keys and values left in the projections' `[batch, seq, heads, head_dim]`
//! layout.
//!
//! Done with tensor ops, attention transposed q, k and v to `[batch, heads, seq, head_dim]`,
//! ran every product as one multi-threaded `gemm` per head (a 128 × 64 by 64 × keys product is
//! too small to split across threads without waiting on them), and copied the output back. Here
//! one task per (batch, head, query block) runs its two products single-threaded on strided
//! views, with the masked softmax between them in a buffer of its own, and writes its rows
//! straight into the `[batch, seq, heads·head_dim]` output; the tasks spread over the threads.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use super::fast_exp::{first_seen, seen_keys, softmax_row};
use super::products::{product, product_at, Land, View};

/// Queries per task: a block's keys end at its last query, so smaller blocks skip more of the
/// masked upper triangle, while larger ones keep each product big enough to run at speed.
const QUERY_BLOCK: usize = 64;

/// RoPE (rotate-half) of `x: [batch, seq, heads, head_dim]` with f32 tables
/// `[≥ seq, head_dim / 2]`, computed as transformers' `x·cos + rotate_half(x)·sin`.
#[derive(Debug, Clone, Copy)]
pub struct Rope;

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "host-rope"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        cos: &CpuStorage,
        cos_layout: &Layout,
        sin: &CpuStorage,
        sin_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x_data = contiguous::<f32>(x, x_layout, "host rope", "input")?;
        let cos = contiguous::<f32>(cos, cos_layout, "host rope", "cos table")?;
        let sin = contiguous::<f32>(sin, sin_layout, "host rope", "sin table")?;
        let (_, seq, heads, dim) = x_layout.shape().dims4()?;
        let half = dim / 2;
        if dim % 2 != 0 || cos.len() < seq * half || sin.len() < seq * half {
            candle_core::bail!("host rope: tables do not cover {seq} positions of width {dim}")
        }
        let mut out = vec![0f32; x_data.len()];
        let row = heads * dim;
        out.par_chunks_mut(row)
            .zip(x_data.par_chunks(row))
            .enumerate()
            .for_each(|(at, (o, x))| {
                let p = at % seq.max(1);
                let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
                for (o, x) in o.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                    let (x1, x2) = x.split_at(half);
                    let (o1, o2) = o.split_at_mut(half);
                    for i in 0..half {
                        o1[i] = x1[i] * c[i] - x2[i] * s[i];
                        o2[i] = x1[i] * s[i] + x2[i] * c[i];
                    }
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// Causal (optionally sliding-window) softmax attention of `q: [batch, seq, heads, head_dim]`
/// over `k`, `v: [batch, seq, kv_heads, head_dim]` (grouped-query when `kv_heads < heads`),
/// giving `[batch, seq, heads·head_dim]`. Scores are multiplied by `scale` before the softmax.
#[derive(Debug, Clone, Copy)]
pub struct CausalAttention {
    /// Factor on every score.
    pub scale: f32,
    /// Keys a query sees, its own included; `None` for all earlier ones.
    pub window: Option<usize>,
}

/// The output buffer, shared by tasks that each write rows no other task writes.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint (row, head) blocks of the buffer, which outlives them.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element at `offset`; a method, so that closures capture the whole (`Sync`) wrapper
    /// rather than its raw pointer.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "host-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            contiguous::<f32>(q, q_layout, "host attention", "queries")?,
            contiguous::<f32>(k, k_layout, "host attention", "keys")?,
            contiguous::<f32>(v, v_layout, "host attention", "values")?,
        );
        let (batch, seq, heads, dim) = q_layout.shape().dims4()?;
        let (kb, kt, kv_heads, kd) = k_layout.shape().dims4()?;
        if (kb, kt, kd) != (batch, seq, dim)
            || k_layout.shape() != v_layout.shape()
            || kv_heads == 0
            || heads % kv_heads != 0
        {
            candle_core::bail!(
                "host attention: queries {:?} do not fit keys {:?} and values {:?}",
                q_layout.dims(),
                k_layout.dims(),
                v_layout.dims()
            )
        }
        let mut out = vec![0f32; batch * seq * heads * dim];
        let dst = Out(out.as_mut_ptr());
        let blocks = seq.div_ceil(QUERY_BLOCK);
        let (q_row, kv_row) = (heads * dim, kv_heads * dim);
        (0..batch * heads * blocks)
            .into_par_iter()
            .for_each(|task| {
                let (b, h, block) = (
                    task / (heads * blocks),
                    task / blocks % heads,
                    task % blocks,
                );
                let kh = h / (heads / kv_heads);
                let start = block * QUERY_BLOCK;
                let len = QUERY_BLOCK.min(seq - start);
                let end = start + len;
                // Keys before `first_key` are outside every query's window in this block.
                let first_key = first_seen(start, self.window);
                let keys = end - first_key;
                let q_at = (b * seq + start) * q_row + h * dim;
                let kv_at = (b * seq + first_key) * kv_row + kh * dim;
                let mut scores = vec![0f32; len * keys];
                let (queries, keys_t) = (
                    View::rows(&q[q_at..], q_row),
                    View::transposed(&k[kv_at..], kv_row),
                );
                product(
                    &mut scores,
                    keys,
                    (len, keys, dim),
                    queries,
                    keys_t,
                    Land::Set,
                    1,
                );
                let mut probs = vec![0f32; len * keys];
                for (i, (p, s)) in probs
                    .chunks_exact_mut(keys)
                    .zip(scores.chunks_exact(keys))
                    .enumerate()
                {
                    let seen = seen_keys(start + i, first_key, self.window);
                    softmax_row(&s[seen.clone()], &mut p[seen], self.scale);
                }
                let weights = View::rows(&probs, keys);
                let values = View::rows(&v[kv_at..], kv_row);
                // SAFETY: rows start..end of head h in `out` are this task's alone, and `out`
                // lives until every task has finished.
                unsafe {
                    product_at(
                        dst.at(q_at),
                        q_row,
                        (len, dim, keys),
                        weights,
                        values,
                        Land::Set,
                        1,
                    )
                };
            });
        Ok((CpuStorage::F32(out), Shape::from((batch, seq, heads * dim))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::olmo3::causal_mask;
    use candle_core::{Device, Tensor, D};

    /// The same attention as plain tensor ops: transpose to heads, repeat kv heads, mask,
    /// softmax, product, transpose back.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, window: Option<usize>) -> Tensor {
        let (b, t, nh, hd) = q.dims4().unwrap();
        let nkv = k.dim(2).unwrap();
        let heads = |y: &Tensor| y.transpose(1, 2).unwrap().contiguous().unwrap();
        let repeat = |y: Tensor| {
            y.unsqueeze(2)
                .unwrap()
                .expand((b, nkv, nh / nkv, t, hd))
                .unwrap()
                .reshape((b, nh, t, hd))
                .unwrap()
        };
        let (q, k, v) = (heads(q), repeat(heads(k)), repeat(heads(v)));
        let mask = causal_mask(t, window, &Device::Cpu).unwrap();
        let scores = ((q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap())
            .broadcast_add(&mask)
            .unwrap();
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, nh * hd))
            .unwrap()
    }

    #[test]
    fn matches_the_masked_softmax_of_tensor_ops() -> Result<()> {
        let dev = Device::Cpu;
        // Lengths below, at and across the query block; grouped and plain heads; windows
        // shorter and longer than the sequence.
        for (seq, heads, kv_heads, window) in [
            (1, 2, 2, None),
            (64, 4, 2, None),
            (150, 4, 1, Some(40)),
            (130, 2, 2, Some(500)),
        ] {
            let (b, hd) = (2, 16);
            let q = Tensor::randn(0f32, 1.0, (b, seq, heads, hd), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (b, seq, kv_heads, hd), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, seq, kv_heads, hd), &dev)?;
            let scale = 0.25;
            let got = q.apply_op3_no_bwd(
                &k,
                &v,
                &CausalAttention {
                    scale: scale as f32,
                    window,
                },
            )?;
            let want = reference(&q, &k, &v, scale, window);
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "seq {seq}, window {window:?}: max diff {diff}");
        }
        Ok(())
    }

    #[test]
    fn rope_matches_candles_rope_on_the_transposed_layout() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, d) = (2, 37, 3, 8);
        let x = Tensor::randn(0f32, 1.0, (b, t, h, d), &dev)?;
        let cos = Tensor::randn(0f32, 1.0, (t, d / 2), &dev)?;
        let sin = Tensor::randn(0f32, 1.0, (t, d / 2), &dev)?;
        let got = x.apply_op3_no_bwd(&cos, &sin, &Rope)?;
        let xt = x.transpose(1, 2)?.contiguous()?;
        let want = candle_nn::rotary_emb::rope(&xt, &cos, &sin)?.transpose(1, 2)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "same products, same roundings");
        Ok(())
    }
}
