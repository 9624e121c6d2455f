//! The token-by-token recurrence: slow, but the plain statement of the delta rule, so the
//! chunked kernels are tested against it.

use super::host::{axpy, vec_state, GdnInputs};

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
