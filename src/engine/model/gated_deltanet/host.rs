//! The host path's delta-rule kernel: the chunked (WY) form in plain f32 Rust, parallel over
//! (batch, value head), fastest on the CPU.

use rayon::prelude::*;

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
pub(super) struct Head {
    pub(super) q: Vec<f32>,
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) g: Vec<f32>,
    pub(super) beta: Vec<f32>,
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
    pub(super) fn run(&self, per_head: impl Fn(&Head) -> Vec<f32> + Sync) -> Vec<f32> {
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
pub(super) fn axpy(out: &mut [f32], s: f32, row: &[f32]) {
    for (o, r) in out.iter_mut().zip(row) {
        *o += s * r;
    }
}

/// `out[dv] += xᵀ S` for a state `S: [dk, dv]`.
pub(super) fn vec_state(out: &mut [f32], x: &[f32], state: &[f32], dv: usize) {
    for (i, &xi) in x.iter().enumerate() {
        axpy(out, xi, &state[i * dv..(i + 1) * dv]);
    }
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
    use super::super::recurrent::recurrent;
    use super::super::CHUNK;
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
}
