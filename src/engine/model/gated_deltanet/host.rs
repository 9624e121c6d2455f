//! The host path's delta-rule kernel: the chunked (WY) form in plain f32 Rust, parallel over
//! (batch, value head), fastest on the CPU.

use rayon::prelude::*;

use super::super::products::{product, Land, View};

/// Inputs of the delta-rule kernels, all f32, row-major.
pub struct GdnInputs<'a> {
    /// `[batch, seq, 2·k_heads·dk + v_heads·dv]`: each position's queries and keys
    /// (`[k_heads, dk]` each) and values (`[v_heads, dv]`), side by side as the convolution
    /// leaves them; after the convolution, before the L2 norm.
    pub qkv: &'a [f32],
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
        let keys = self.k_heads * dk;
        let row = 2 * keys + self.v_heads * dv;
        for i in 0..t {
            let at = (b * t + i) * row;
            let (q_at, v_at) = (at + kh * dk, at + 2 * keys + h * dv);
            let gate_at = (b * t + i) * self.v_heads + h;
            let q = &self.qkv[q_at..q_at + dk];
            let k = &self.qkv[q_at + keys..q_at + keys + dk];
            let qn = 1.0 / (q.iter().map(|x| x * x).sum::<f32>() + 1e-6).sqrt();
            let kn = 1.0 / (k.iter().map(|x| x * x).sum::<f32>() + 1e-6).sqrt();
            head.q.extend(q.iter().map(|x| x * qn * scale));
            head.k.extend(k.iter().map(|x| x * kn));
            head.v.extend_from_slice(&self.qkv[v_at..v_at + dv]);
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

/// Chunked delta rule (the WY form of the reference's `torch_chunk_gated_delta_rule`), its
/// products on one thread each (the heads already run in parallel); only the triangular solve
/// goes row by row.
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
        // decay[i, j] = e^{gc_i − gc_j} for j ≤ i.
        let mut decay = vec![0f32; chunk * chunk];
        let mut scores = vec![0f32; chunk * chunk];
        for s0 in (0..t).step_by(chunk) {
            let n = chunk.min(t - s0);
            let q = &h.q[s0 * dk..(s0 + n) * dk];
            let k = &h.k[s0 * dk..(s0 + n) * dk];
            let v = &h.v[s0 * dv..(s0 + n) * dv];
            // Cumulative log-decays in f64: the gates use differences gc_i − gc_j of sums that
            // grow with the chunk, and in f32 their cancellation error made 128-token chunks
            // drift ~1e-4 nats from 64-token ones on a whole model.
            let mut acc = 0f64;
            for (c, g) in gc.iter_mut().zip(&h.g[s0..s0 + n]) {
                acc += f64::from(*g);
                *c = acc;
            }
            for i in 0..n {
                for j in 0..=i {
                    decay[i * chunk + j] = (gc[i] - gc[j]).exp() as f32;
                }
            }
            // scores[i, j] = x_i · k_j for the rows x_i of `x`.
            let by_keys = |scores: &mut [f32], x: &[f32]| {
                let keys = View::transposed(k, dk);
                product(
                    scores,
                    chunk,
                    (n, n, dk),
                    View::rows(x, dk),
                    keys,
                    Land::Set,
                    1,
                )
            };
            // scores = K Kᵀ (the lower triangle is used by the solve).
            by_keys(&mut scores, k);
            // Solve (I + A) X = [βv | β e^{gc} k] with A[i, j] = β_i (k_i·k_j) e^{gc_i − gc_j}, j < i.
            for i in 0..n {
                let beta = h.beta[s0 + i];
                let (done, rest) = x.split_at_mut(i * w);
                let row = &mut rest[..w];
                for (c, &vi) in row[..dv].iter_mut().zip(&v[i * dv..(i + 1) * dv]) {
                    *c = beta * vi;
                }
                let e = beta * gc[i].exp() as f32;
                for (c, &ki) in row[dv..].iter_mut().zip(&k[i * dk..(i + 1) * dk]) {
                    *c = e * ki;
                }
                for j in 0..i {
                    let a = beta * scores[i * chunk + j] * decay[i * chunk + j];
                    axpy(row, -a, &done[j * w..(j + 1) * w]);
                }
            }
            // v_new = U − W S
            for (vn, row) in v_new.chunks_exact_mut(dv).zip(x.chunks_exact(w)).take(n) {
                vn.copy_from_slice(&row[..dv]);
            }
            let subtract = Land::Add {
                keep: 1.0,
                sign: -1.0,
            };
            let wy = View::rows(&x[dv..], w);
            product(
                &mut v_new,
                dv,
                (n, dv, dk),
                wy,
                View::rows(&state, dv),
                subtract,
                1,
            );
            // o_i = e^{gc_i} q_i S + Σ_{j≤i} (q_i·k_j) e^{gc_i − gc_j} v_new_j
            let o = &mut out[s0 * dv..(s0 + n) * dv];
            let (q_rows, s_rows) = (View::rows(q, dk), View::rows(&state, dv));
            product(o, dv, (n, dv, dk), q_rows, s_rows, Land::Set, 1);
            for (row, g) in o.chunks_exact_mut(dv).zip(&gc) {
                let e = g.exp() as f32;
                row.iter_mut().for_each(|x| *x *= e);
            }
            by_keys(&mut scores, q);
            for i in 0..n {
                let (row, d) = (&mut scores[i * chunk..(i + 1) * chunk], &decay[i * chunk..]);
                for j in 0..n {
                    row[j] = if j <= i { row[j] * d[j] } else { 0.0 };
                }
            }
            let add = Land::Add {
                keep: 1.0,
                sign: 1.0,
            };
            let (a, vn) = (View::rows(&scores, chunk), View::rows(&v_new, dv));
            product(o, dv, (n, dv, n), a, vn, add, 1);
            // S ← e^{gc_last} S + Σ_j e^{gc_last − gc_j} k_j ⊗ v_new_j
            let last = n - 1;
            for (j, vn) in v_new.chunks_exact_mut(dv).take(n).enumerate() {
                let e = decay[last * chunk + j];
                vn.iter_mut().for_each(|x| *x *= e);
            }
            let decayed = Land::Add {
                keep: gc[last].exp() as f32,
                sign: 1.0,
            };
            let (kt, vn) = (View::transposed(k, dk), View::rows(&v_new, dv));
            product(&mut state, dv, (dk, dv, n), kt, vn, decayed, 1);
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
        qkv: Vec<f32>,
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
            qkv: n(b * seq * (2 * nk * dk + nv * dv), -1.0, 1.0),
            g: n(b * seq * nv, -0.7, 0.0),
            beta: n(b * seq * nv, 0.0, 2.0),
        }
    }

    fn inputs(o: &Owned, seq: usize) -> GdnInputs<'_> {
        GdnInputs {
            qkv: &o.qkv,
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
