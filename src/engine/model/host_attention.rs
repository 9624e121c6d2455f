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
use half::bf16;
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use super::fast_exp::{first_seen, seen_keys, softmax_row};
use super::products::{product, product_at, Land, Shared, View};
use super::widest::{narrow, narrow_row, widen, widen_row};

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
        let cos = contiguous::<f32>(cos, cos_layout, "host rope", "cos table")?;
        let sin = contiguous::<f32>(sin, sin_layout, "host rope", "sin table")?;
        let (_, seq, heads, dim) = x_layout.shape().dims4()?;
        let half = dim / 2;
        if dim % 2 != 0 || cos.len() < seq * half || sin.len() < seq * half {
            candle_core::bail!("host rope: tables do not cover {seq} positions of width {dim}")
        }
        // One position's heads, rotated: `x` and `o` are `[heads, dim]`.
        let rotate = |at: usize, o: &mut [f32], x: &[f32]| {
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
        };
        let row = heads * dim;
        let shape = x_layout.shape().clone();
        if let CpuStorage::BF16(_) = x {
            // In f32 from the bf16 values, rounded once to bf16, as the reference rotates.
            let x = contiguous::<bf16>(x, x_layout, "host rope", "input")?;
            let mut out = vec![bf16::ZERO; x.len()];
            // Row buffers per task, not per position.
            let buffers = || (vec![0f32; row], vec![0f32; row]);
            out.par_chunks_mut(row)
                .zip(x.par_chunks(row))
                .enumerate()
                .for_each_init(buffers, |(wide, rotated), (at, (o, x))| {
                    widen_row(x, wide);
                    rotate(at, rotated, wide);
                    narrow_row(rotated, o);
                });
            return Ok((CpuStorage::BF16(out), shape));
        }
        let x = contiguous::<f32>(x, x_layout, "host rope", "input")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(row)
            .zip(x.par_chunks(row))
            .enumerate()
            .for_each(|(at, (o, x))| rotate(at, o, x));
        Ok((CpuStorage::F32(out), shape))
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

/// One task's share of the attention: a block of one head's queries and the keys they see.
#[derive(Debug, Clone, Copy)]
struct Block {
    /// Position of the first query.
    start: usize,
    /// Queries.
    len: usize,
    /// Position of the first key any query of the block sees.
    first_key: usize,
    /// Keys from `first_key` to the last query's own.
    keys: usize,
    /// The first query's element in q and in the output.
    q_at: usize,
    /// The first key's element in k and v.
    kv_at: usize,
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
struct Shape4 {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    dim: usize,
}

impl CausalAttention {
    /// Runs `task` on every block of every (batch, head), spread over rayon's threads.
    fn for_each_block(&self, s: Shape4, task: impl Fn(Block) + Sync) {
        let blocks = s.seq.div_ceil(QUERY_BLOCK);
        let (q_row, kv_row) = (s.heads * s.dim, s.kv_heads * s.dim);
        (0..s.batch * s.heads * blocks)
            .into_par_iter()
            .for_each(|i| {
                let (b, h, block) = (i / (s.heads * blocks), i / blocks % s.heads, i % blocks);
                let kh = h / (s.heads / s.kv_heads);
                let start = block * QUERY_BLOCK;
                let len = QUERY_BLOCK.min(s.seq - start);
                // Keys before `first_key` are outside every query's window in this block.
                let first_key = first_seen(start, self.window);
                task(Block {
                    start,
                    len,
                    first_key,
                    keys: start + len - first_key,
                    q_at: (b * s.seq + start) * q_row + h * s.dim,
                    kv_at: (b * s.seq + first_key) * kv_row + kh * s.dim,
                })
            });
    }

    /// The block's masked softmax of `scores` (`len × keys`) into `probs`, zero where masked.
    fn softmax(&self, block: Block, scores: &[f32], probs: &mut [f32]) {
        for (i, (p, s)) in probs
            .chunks_exact_mut(block.keys)
            .zip(scores.chunks_exact(block.keys))
            .enumerate()
        {
            let seen = seen_keys(block.start + i, block.first_key, self.window);
            softmax_row(&s[seen.clone()], &mut p[seen], self.scale);
        }
    }

    /// The attention on f32 q, k and v.
    fn on_f32(&self, s: Shape4, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; s.batch * s.seq * s.heads * s.dim];
        let dst = Shared(out.as_mut_ptr());
        let (q_row, kv_row, dim) = (s.heads * s.dim, s.kv_heads * s.dim, s.dim);
        self.for_each_block(s, |b| {
            let mut scores = vec![0f32; b.len * b.keys];
            let (queries, keys_t) = (
                View::rows(&q[b.q_at..], q_row),
                View::transposed(&k[b.kv_at..], kv_row),
            );
            let shape = (b.len, b.keys, dim);
            product(&mut scores, b.keys, shape, queries, keys_t, Land::Set, 1);
            let mut probs = vec![0f32; b.len * b.keys];
            self.softmax(b, &scores, &mut probs);
            let (weights, values) = (
                View::rows(&probs, b.keys),
                View::rows(&v[b.kv_at..], kv_row),
            );
            // SAFETY: rows start..end of head h in `out` are this task's alone, and `out`
            // lives until every task has finished.
            unsafe {
                let shape = (b.len, dim, b.keys);
                product_at(dst.at(b.q_at), q_row, shape, weights, values, Land::Set, 1)
            };
        });
        out
    }

    /// The attention on bf16 q, k and v with the CPU's BF16 dot product: scores in f32 from
    /// the exact products, the probabilities rounded to bf16 for their product with the values
    /// (as torch's CPU attention kernel rounds them), sums in f32, the output rounded once.
    #[cfg(target_arch = "x86_64")]
    fn on_bf16_dot(&self, s: Shape4, q: &[bf16], k: &[bf16], v: &[bf16]) -> Vec<bf16> {
        use super::dot_bf16::product_at as dot_at;
        let mut out = vec![bf16::ZERO; s.batch * s.seq * s.heads * s.dim];
        let dst = Shared(out.as_mut_ptr());
        let (q_row, kv_row, dim) = (s.heads * s.dim, s.kv_heads * s.dim, s.dim);
        self.for_each_block(s, |b| {
            let mut scores = vec![0f32; b.len * b.keys];
            let queries = View::rows(&q[b.q_at..], q_row);
            let keys = View::rows(&k[b.kv_at..], kv_row);
            // SAFETY: `scores` holds `len × keys` and is this task's own.
            unsafe {
                dot_at(
                    scores.as_mut_ptr(),
                    b.keys,
                    queries,
                    keys,
                    (b.len, b.keys, dim),
                )
            };
            let mut probs = vec![0f32; b.len * b.keys];
            self.softmax(b, &scores, &mut probs);
            let mut weights = vec![bf16::ZERO; b.len * b.keys];
            narrow_row(&probs, &mut weights);
            // vᵀ: output column j of the product is value column j.
            let values_t = View {
                data: &v[b.kv_at..],
                rs: 1,
                cs: kv_row,
            };
            // SAFETY: as in `on_f32`.
            unsafe {
                let weights = View::rows(&weights, b.keys);
                dot_at(
                    dst.at(b.q_at),
                    q_row,
                    weights,
                    values_t,
                    (b.len, dim, b.keys),
                )
            };
        });
        out
    }

    /// The attention on bf16 q, k and v without the dot product: the f32 kernels on the
    /// widened values, the output rounded once.
    fn on_bf16_widened(&self, s: Shape4, q: &[bf16], k: &[bf16], v: &[bf16]) -> Vec<bf16> {
        let [q, k, v] = [q, k, v].map(widen);
        narrow(&self.on_f32(s, &q, &k, &v))
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
        let shape = Shape4 {
            batch,
            seq,
            heads,
            kv_heads,
            dim,
        };
        let out_shape = Shape::from((batch, seq, heads * dim));
        let what = ["queries", "keys", "values"];
        let operands = [(q, q_layout), (k, k_layout), (v, v_layout)];
        if let CpuStorage::BF16(_) = q {
            let [q, k, v] = [0, 1, 2].map(|i| {
                contiguous::<bf16>(operands[i].0, operands[i].1, "host attention", what[i])
            });
            let (q, k, v) = (q?, k?, v?);
            #[cfg(target_arch = "x86_64")]
            if super::dot_bf16::available() {
                let out = self.on_bf16_dot(shape, q, k, v);
                return Ok((CpuStorage::BF16(out), out_shape));
            }
            let out = self.on_bf16_widened(shape, q, k, v);
            return Ok((CpuStorage::BF16(out), out_shape));
        }
        let [q, k, v] = [0, 1, 2]
            .map(|i| contiguous::<f32>(operands[i].0, operands[i].1, "host attention", what[i]));
        let out = self.on_f32(shape, q?, k?, v?);
        Ok((CpuStorage::F32(out), out_shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::olmo3::causal_mask;
    use candle_core::{DType, Device, Tensor, D};

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
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "seq {seq}, window {window:?}: max diff {diff}");

            // bf16: against the f32 attention of the same bf16 values, which differs by the
            // probabilities' and the output's roundings (relative 2⁻⁸ each, on outputs of
            // magnitude ≲ 3).
            let [qb, kb, vb] = [&q, &k, &v].map(|x| x.to_dtype(DType::BF16));
            let (qb, kb, vb) = (qb?, kb?, vb?);
            let op = CausalAttention {
                scale: scale as f32,
                window,
            };
            let got = qb.apply_op3_no_bwd(&kb, &vb, &op)?;
            assert_eq!(got.dtype(), DType::BF16);
            let wide = |x: &Tensor| x.to_dtype(DType::F32);
            let want = reference(&wide(&qb)?, &wide(&kb)?, &wide(&vb)?, scale, window);
            let diff = (wide(&got)? - &want)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(
                diff < 4e-2,
                "bf16 seq {seq}, window {window:?}: max diff {diff}"
            );
            // The path of CPUs without the BF16 dot product, whichever this one takes above.
            let elems = |x: &Tensor| x.flatten_all()?.to_vec1::<bf16>();
            let shape = Shape4 {
                batch: b,
                seq,
                heads,
                kv_heads,
                dim: hd,
            };
            let widened = op.on_bf16_widened(shape, &elems(&qb)?, &elems(&kb)?, &elems(&vb)?);
            let widened = Tensor::from_vec(widened, want.shape(), &dev)?;
            let diff = (wide(&widened)? - want)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(
                diff < 2e-2,
                "widened seq {seq}, window {window:?}: max diff {diff}"
            );
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
        let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "same products, same roundings");
        // bf16: the rotation of the widened values, rounded once.
        let xb = x.to_dtype(DType::BF16)?;
        let got = xb.apply_op3_no_bwd(&cos, &sin, &Rope)?;
        let xt = xb.to_dtype(DType::F32)?.transpose(1, 2)?.contiguous()?;
        let want = candle_nn::rotary_emb::rope(&xt, &cos, &sin)?.transpose(1, 2)?;
        let want = want
            .to_dtype(DType::BF16)?
            .flatten_all()?
            .to_vec1::<bf16>()?;
        assert_eq!(got.flatten_all()?.to_vec1::<bf16>()?, want);
        Ok(())
    }
}
