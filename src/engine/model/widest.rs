//! Row kernels compiled for AVX-512 where the CPU has it, and the bf16 conversions of the host
//! kernels built on them.

use half::bf16;
use rayon::prelude::*;

/// Runs a row kernel compiled for AVX-512 where the CPU has it: the crate targets baseline
/// x86-64, whose 4-wide SSE2 is all the compiler may use for these loops otherwise.
macro_rules! widest {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use widest;

widest! {
    /// `dst = src` widened to f32.
    pub fn widen_row(src: &[bf16], dst: &mut [f32]) = widen_row_body;
}

#[inline(always)]
fn widen_row_body(src: &[bf16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = to_f32(*s);
    }
}

widest! {
    /// `dst = src` rounded to the nearest bf16 (ties to even), as `bf16::from_f32` rounds.
    pub fn narrow_row(src: &[f32], dst: &mut [bf16]) = narrow_row_body;
}

#[inline(always)]
fn narrow_row_body(src: &[f32], dst: &mut [bf16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = to_bf16(s);
    }
}

widest! {
    /// Rounds every value to the nearest bf16, in place.
    pub fn round_row(values: &mut [f32]) = round_row_body;
}

#[inline(always)]
fn round_row_body(values: &mut [f32]) {
    for v in values {
        *v = to_f32(to_bf16(*v));
    }
}

widest! {
    /// `out = x + y`, summed in f32 and rounded once to bf16.
    pub fn add_row(x: &[bf16], y: &[bf16], out: &mut [bf16]) = add_row_body;
}

#[inline(always)]
fn add_row_body(x: &[bf16], y: &[bf16], out: &mut [bf16]) {
    for ((o, a), b) in out.iter_mut().zip(x).zip(y) {
        *o = to_bf16(to_f32(*a) + to_f32(*b));
    }
}

/// Elements one task converts or adds in [`narrow`], [`widen`], [`round_to_bf16`] and [`add`]:
/// enough to pay for the task.
pub const GRAIN: usize = 1 << 14;

/// Rounds every value to the nearest bf16, in place and in parallel.
pub fn round_to_bf16(values: &mut [f32]) {
    values.par_chunks_mut(GRAIN).for_each(round_row);
}

/// `src` rounded to bf16, in parallel.
pub fn narrow(src: &[f32]) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; src.len()];
    out.par_chunks_mut(GRAIN)
        .zip(src.par_chunks(GRAIN))
        .for_each(|(o, s)| narrow_row(s, o));
    out
}

/// `src` widened to f32, in parallel.
pub fn widen(src: &[bf16]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(GRAIN)
        .zip(src.par_chunks(GRAIN))
        .for_each(|(o, s)| widen_row(s, o));
    out
}

/// `x + y` elementwise, summed in f32 and rounded once to bf16, in parallel.
pub fn add(x: &[bf16], y: &[bf16]) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; x.len().min(y.len())];
    out.par_chunks_mut(GRAIN)
        .zip(x.par_chunks(GRAIN).zip(y.par_chunks(GRAIN)))
        .for_each(|(o, (x, y))| add_row(x, y, o));
    out
}

/// `v` widened to f32 (exactly), in a form the compiler vectorises in a loop.
#[inline(always)]
pub fn to_f32(v: bf16) -> f32 {
    f32::from_bits(u32::from(v.to_bits()) << 16)
}

/// `v` rounded to bf16, in a form the compiler vectorises in a loop: NaN stays NaN (quiet),
/// the rest to nearest, ties to even.
#[inline(always)]
pub fn to_bf16(v: f32) -> bf16 {
    let b = v.to_bits();
    let bits = if v.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
    };
    bf16::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_the_half_crate() {
        let values: Vec<f32> = (0..20_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .chain([
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                0.0,
                -0.0,
                f32::MAX,
            ])
            .collect();
        let mut narrow = vec![bf16::ZERO; values.len()];
        narrow_row(&values, &mut narrow);
        for (n, v) in narrow.iter().zip(&values) {
            let want = bf16::from_f32(*v);
            assert!(
                n.to_bits() == want.to_bits() || (n.is_nan() && want.is_nan()),
                "{v}"
            );
        }
        let mut wide = vec![0f32; values.len()];
        widen_row(&narrow, &mut wide);
        for (w, n) in wide.iter().zip(&narrow) {
            assert_eq!(w.to_bits(), n.to_f32().to_bits());
        }
        let mut rounded = values.clone();
        round_row(&mut rounded);
        for (r, w) in rounded.iter().zip(&wide) {
            assert!(r.to_bits() == w.to_bits() || (r.is_nan() && w.is_nan()));
        }
        let mut sums = vec![bf16::ZERO; narrow.len()];
        let reversed: Vec<bf16> = narrow.iter().rev().copied().collect();
        add_row(&narrow, &reversed, &mut sums);
        for ((s, a), b) in sums.iter().zip(&narrow).zip(&reversed) {
            let want = bf16::from_f32(a.to_f32() + b.to_f32());
            assert!(s.to_bits() == want.to_bits() || (s.is_nan() && want.is_nan()));
        }
    }
}
