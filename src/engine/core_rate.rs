//! The floating-point rate of one core for the two instructions a CPU matrix product of f32 or
//! bf16 weights can be built on: the f32 fused multiply-add that `gemm`'s AVX-512 kernels use,
//! and AVX512-BF16's pair dot product `vdpbf16ps` (two bf16 products per f32 lane). Their ratio
//! bounds what scoring bf16 weights in bf16 can gain over f32 on this CPU: on some CPUs the dot
//! product retires twice the FLOPs of an FMA, on others half.

use std::time::Instant;

/// Iterations of each timed loop: twelve independent instructions each, about 0.1 s in all.
const ITERATIONS: u64 = 10_000_000;

/// One core's GFLOP/s, best of three runs of each loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoreRates {
    /// `vfmadd231ps` on 16 f32 lanes: 32 FLOPs each.
    pub f32_fma: f64,
    /// `vdpbf16ps` on 16 f32 lanes of bf16 pairs: 64 FLOPs each; `None` without AVX512-BF16.
    pub bf16_dot: Option<f64>,
}

/// Measures both rates on the calling thread; `None` on a CPU without AVX-512.
pub fn measure() -> Option<CoreRates> {
    #[cfg(target_arch = "x86_64")]
    {
        if !is_x86_feature_detected!("avx512f") {
            return None;
        }
        // SAFETY: the CPU has AVX-512F (checked above).
        let f32_fma = best_gflops(32.0, || unsafe { fma_loop(ITERATIONS) });
        let bf16_dot = is_x86_feature_detected!("avx512bf16").then(|| {
            // SAFETY: the CPU has AVX512-BF16 (checked above).
            best_gflops(64.0, || unsafe { bf16_dot_loop(ITERATIONS) })
        });
        Some(CoreRates { f32_fma, bf16_dot })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// GFLOP/s of the fastest of three runs of `run`, which executes `12 × ITERATIONS`
/// instructions of `flops` each.
fn best_gflops(flops: f64, run: impl Fn()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        run();
        best = best.min(start.elapsed().as_secs_f64());
    }
    12.0 * ITERATIONS as f64 * flops / best / 1e9
}

// Twelve independent accumulators hide the instruction's latency (4–6 cycles) at up to two
// per cycle; the inputs are zeros, so no denormal slows either loop.
#[cfg(target_arch = "x86_64")]
macro_rules! twelve_chains {
    ($name:ident, $feature:literal, $op:literal) => {
        #[target_feature(enable = $feature)]
        unsafe fn $name(iterations: u64) {
            std::arch::asm!(
                "vpxord zmm30, zmm30, zmm30",
                "vpxord zmm31, zmm31, zmm31",
                "2:",
                concat!($op, " zmm0, zmm30, zmm31"),
                concat!($op, " zmm1, zmm30, zmm31"),
                concat!($op, " zmm2, zmm30, zmm31"),
                concat!($op, " zmm3, zmm30, zmm31"),
                concat!($op, " zmm4, zmm30, zmm31"),
                concat!($op, " zmm5, zmm30, zmm31"),
                concat!($op, " zmm6, zmm30, zmm31"),
                concat!($op, " zmm7, zmm30, zmm31"),
                concat!($op, " zmm8, zmm30, zmm31"),
                concat!($op, " zmm9, zmm30, zmm31"),
                concat!($op, " zmm10, zmm30, zmm31"),
                concat!($op, " zmm11, zmm30, zmm31"),
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iterations => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm30") _, out("zmm31") _,
                options(nostack, nomem),
            );
        }
    };
}

#[cfg(target_arch = "x86_64")]
twelve_chains!(fma_loop, "avx512f", "vfmadd231ps");
#[cfg(target_arch = "x86_64")]
twelve_chains!(bf16_dot_loop, "avx512bf16", "vdpbf16ps");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_instructions_run_where_the_cpu_has_them() {
        let Some(r) = measure() else { return };
        assert!(r.f32_fma.is_finite() && r.f32_fma > 0.0, "{r:?}");
        if let Some(bf16) = r.bf16_dot {
            assert!(bf16.is_finite() && bf16 > 0.0, "{r:?}");
        }
    }
}
