//! bf16 products on the CPU's BF16 dot-product instruction (AVX512-BF16's `vdpbf16ps`), where
//! the CPU has it.
//!
//! One instruction multiplies 32 bf16 pairs and adds them two by two into 16 f32 lanes: twice
//! the products of an f32 FMA of the same width, with no widening pass over either operand.
//! The weight is packed one panel of [`NR`] output columns at a time into the pairs the
//! instruction reads (two consecutive inner indices of one output side by side); the
//! activations are read where they lie, each pair of consecutive values broadcast to every
//! lane. Each panel stays in the core's cache while every row of the activations passes it.
//!
//! Sums run in f32, as on the widened path ([`super::widened`]): a product of two bf16 values
//! is exact in f32. The instruction treats subnormal inputs and results as zero, so results
//! can differ from the widened path's beyond the order of the sums only near 1e-38.

use std::arch::x86_64::{
    __m256i, __m512, __m512bh, __m512i, _mm256_storeu_si256, _mm512_cvtneps_pbh, _mm512_dpbf16_ps,
    _mm512_loadu_si512, _mm512_mask_i32gather_epi32, _mm512_mask_storeu_ps, _mm512_set1_epi32,
    _mm512_setzero_ps, _mm512_setzero_si512, _mm512_storeu_ps, _mm512_storeu_si512, _mm_prefetch,
    _MM_HINT_T0,
};

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use half::{bf16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::cpu_slice::contiguous;
use super::products::{Shared, View};

/// f32 lanes of one vector.
const LANES: usize = 16;
/// Vectors of output columns in one register tile.
const NV: usize = 4;
/// Output columns of one packed panel.
const NR: usize = NV * LANES;
/// Activation rows of one register tile: `MR × NV` accumulators, `NV` weight vectors and one
/// broadcast fill 29 of the 32 vector registers.
const MR: usize = 6;

/// Whether this CPU runs [`product`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// A product's output element: f32, or bf16 rounded to nearest even from the f32 sum.
pub trait Out: Copy + Send + Sync {
    /// Writes the first `lanes` (1 to 16) of `sum` at `dst`.
    ///
    /// # Safety
    /// The CPU has AVX512-F and AVX512-BF16; `dst` is valid for `lanes` writes.
    unsafe fn store(dst: *mut Self, sum: __m512, lanes: usize);
}

impl Out for f32 {
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn store(dst: *mut f32, sum: __m512, lanes: usize) {
        // SAFETY: the caller vouches for the CPU and for `lanes` elements at `dst`.
        unsafe {
            if lanes == LANES {
                _mm512_storeu_ps(dst, sum);
            } else {
                _mm512_mask_storeu_ps(dst, (1u16 << lanes) - 1, sum);
            }
        }
    }
}

impl Out for bf16 {
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn store(dst: *mut bf16, sum: __m512, lanes: usize) {
        // SAFETY: the caller vouches for the CPU and for `lanes` elements at `dst`; 16 bf16
        // values are 256 bits.
        unsafe {
            let narrow: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(sum));
            if lanes == LANES {
                _mm256_storeu_si256(dst.cast(), narrow);
            } else {
                let mut all = [bf16::ZERO; LANES];
                _mm256_storeu_si256(all.as_mut_ptr().cast(), narrow);
                std::ptr::copy_nonoverlapping(all.as_ptr(), dst, lanes);
            }
        }
    }
}

/// `x · wᵀ` into the row-major `rows × n` matrix `out`, for bf16 `x` (`rows × k`, rows
/// contiguous) and `w` (`n × k`, any strides), on rayon's threads: each panel packed as it is
/// needed.
///
/// # Panics
/// If the CPU lacks AVX512-BF16 (see [`available`]), `x`'s columns are not adjacent, or an
/// operand is smaller than its view.
pub fn product<O: Out>(
    out: &mut [O],
    x: View<bf16>,
    w: View<bf16>,
    (rows, n, k): (usize, usize, usize),
) {
    assert!(
        out.len() >= rows * n,
        "bf16 dot product: the output is smaller than the result"
    );
    // SAFETY: `out` holds the result (checked above) and is borrowed mutably.
    unsafe { by_panels(out.as_mut_ptr(), n, x, Panels::Pack(w), (rows, n, k), true) }
}

/// [`product`] on the calling thread alone, into the row-major `rows × n` matrix at `dst`
/// whose rows are `dst_rs` apart: for small products inside parallel tasks of their own.
///
/// # Safety
/// `dst` must be valid for writes at every `i · dst_rs + j` (`i < rows`, `j < n`), and nothing
/// else may access those elements until this returns.
///
/// # Panics
/// As [`product`].
pub unsafe fn product_at<O: Out>(
    dst: *mut O,
    dst_rs: usize,
    x: View<bf16>,
    w: View<bf16>,
    shape: (usize, usize, usize),
) {
    // SAFETY: the caller vouches for `dst`.
    unsafe { by_panels(dst, dst_rs, x, Panels::Pack(w), shape, false) }
}

/// [`product`] with a weight packed beforehand.
///
/// # Panics
/// As [`product`].
pub fn packed_product<O: Out>(out: &mut [O], x: View<bf16>, w: &Packed, rows: usize) {
    assert!(
        out.len() >= rows * w.n,
        "bf16 dot product: the output is smaller than the result"
    );
    // SAFETY: `out` holds the result (checked above) and is borrowed mutably.
    unsafe {
        by_panels(
            out.as_mut_ptr(),
            w.n,
            x,
            Panels::Packed(w),
            (rows, w.n, w.k),
            true,
        )
    }
}

/// Where each panel of the weight comes from.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// Packed from this view, panel by panel, as the product needs it.
    Pack(View<'a, bf16>),
    /// Packed once, in advance.
    Packed(&'a Packed),
}

/// The product on `w`'s panels into the matrix at `dst` (rows `dst_rs` apart), one task per
/// panel: on rayon's threads when `parallel`, else on this one. Every output element is
/// written, none read, so `dst` may be uninitialised.
///
/// # Safety
/// As [`product_at`].
unsafe fn by_panels<O: Out>(
    dst: *mut O,
    dst_rs: usize,
    x: View<bf16>,
    w: Panels,
    (rows, n, k): (usize, usize, usize),
    parallel: bool,
) {
    assert!(available(), "bf16 dot product: this CPU has no AVX512-BF16");
    let w_holds = match w {
        Panels::Pack(w) => w.holds(n, k),
        Panels::Packed(w) => w.dims() == (n, k),
    };
    assert!(
        x.cs == 1 && x.holds(rows, k) && w_holds,
        "bf16 dot product: an operand is smaller than its view"
    );
    if rows == 0 || n == 0 {
        return;
    }
    let pairs = k.div_ceil(2);
    let a = x.data.reinterpret_cast();
    let c = Shared(dst);
    let panel_task = |p: usize| {
        let j0 = p * NR;
        let cols = NR.min(n - j0);
        let tiles = |panel: &[u32]| {
            for i0 in (0..rows).step_by(MR) {
                let tile = Tile {
                    a: &a[i0 * x.rs..],
                    a_rs: x.rs,
                    k,
                    panel,
                    c: c.at(i0 * dst_rs + j0),
                    c_rs: dst_rs,
                    cols,
                };
                // SAFETY: the CPU has AVX512-BF16 (checked above); this task alone writes
                // columns `j0 .. j0 + cols`, which the caller vouches for.
                unsafe {
                    match MR.min(rows - i0) {
                        6 => tile.run::<6>(),
                        5 => tile.run::<5>(),
                        4 => tile.run::<4>(),
                        3 => tile.run::<3>(),
                        2 => tile.run::<2>(),
                        _ => tile.run::<1>(),
                    }
                }
            }
        };
        match w {
            Panels::Packed(w) => tiles(w.panel(p)),
            Panels::Pack(w) => PANEL.with_borrow_mut(|panel| {
                // Kept from product to product: a fresh buffer of this size costs page faults.
                panel.resize(pairs * NR, 0);
                pack(panel, w, j0, cols, k);
                tiles(panel)
            }),
        }
    };
    let panels = 0..n.div_ceil(NR);
    if parallel {
        panels.into_par_iter().for_each(panel_task);
    } else {
        panels.for_each(panel_task);
    }
}

/// A weight `n × k` packed once into the panels [`product`] packs at every call, for weights
/// multiplied many times: a loaded checkpoint's projections and LM head. It takes the place of
/// the weight (the same two bytes an element, but for the last panel's padding).
pub struct Packed {
    /// Panel `p` at `p · ⌈k/2⌉ · NR`, laid out as [`pack`] writes it.
    panels: Vec<u32>,
    /// Outputs.
    n: usize,
    /// Inner width.
    k: usize,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({}×{} bf16)", self.n, self.k)
    }
}

impl Packed {
    /// Packs `w` (`n × k`, any strides), panels shared between rayon's threads.
    ///
    /// # Panics
    /// If the CPU lacks AVX512-BF16 or `w` is smaller than its view.
    pub fn new(w: View<bf16>, (n, k): (usize, usize)) -> Self {
        assert!(available(), "bf16 dot product: this CPU has no AVX512-BF16");
        assert!(
            w.holds(n, k),
            "bf16 dot product: the weight is smaller than its view"
        );
        let size = k.div_ceil(2) * NR;
        let mut panels = vec![0u32; n.div_ceil(NR) * size];
        panels
            .par_chunks_mut(size.max(1))
            .enumerate()
            .for_each(|(p, panel)| pack(panel, w, p * NR, NR.min(n - p * NR), k));
        Self { panels, n, k }
    }

    /// `(n, k)`: outputs and inner width.
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Panel `p`.
    fn panel(&self, p: usize) -> &[u32] {
        let size = self.k.div_ceil(2) * NR;
        &self.panels[p * size..][..size]
    }

    /// The weight as it was before packing, row-major `n × k`.
    pub fn unpack(&self) -> Vec<bf16> {
        let mut w = vec![bf16::ZERO; self.n * self.k];
        for (j, row) in w.chunks_exact_mut(self.k.max(1)).enumerate() {
            let panel = self.panel(j / NR);
            for (i, v) in row.iter_mut().enumerate() {
                let pair = panel[i / 2 * NR + j % NR];
                *v = bf16::from_bits((pair >> (16 * (i % 2))) as u16);
            }
        }
        w
    }
}

/// `x · wᵀ` for a bf16 CPU tensor `x: [rows, k]` (any layout) and a packed `w` (`n × k`),
/// rounded to bf16: `[rows, n]`.
impl CustomOp1 for Packed {
    fn name(&self) -> &'static str {
        "bf16-packed-linear"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<bf16>(xs, xl, "bf16 packed linear", "activations")?;
        let (rows, k) = xl.shape().dims2()?;
        if k != self.k {
            candle_core::bail!(
                "bf16 packed linear: {rows}×{k} by a weight of {}×{}",
                self.n,
                self.k
            )
        }
        let mut out = Vec::with_capacity(rows * self.n);
        // SAFETY: the spare capacity holds `rows × n` elements, which the product writes,
        // every one, so they are initialised when the length covers them.
        unsafe {
            let dst = out.spare_capacity_mut().as_mut_ptr().cast::<bf16>();
            by_panels(
                dst,
                self.n,
                View::rows(x, k),
                Panels::Packed(self),
                (rows, self.n, k),
                true,
            );
            out.set_len(rows * self.n);
        }
        Ok((CpuStorage::BF16(out), Shape::from((rows, self.n))))
    }
}

thread_local! {
    /// Each thread's packed panel.
    static PANEL: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Columns `j0 .. j0 + cols` of `w` (`n × k`) into `panel` as bf16 pairs: element `kp · NR + j`
/// holds `w[j0 + j][2 kp]` in its low half and `w[j0 + j][2 kp + 1]` in its high half. Columns
/// past `cols` and an odd `k`'s last high half are zero.
fn pack(panel: &mut [u32], w: View<bf16>, j0: usize, cols: usize, k: usize) {
    let bits = |v: &bf16| u32::from(v.to_bits());
    if w.rs == 1 {
        // Stored `[in, out]`: each pair interleaves two contiguous runs.
        for (kp, dst) in panel.chunks_exact_mut(NR).enumerate() {
            let lo = &w.data[2 * kp * w.cs + j0..][..cols];
            if 2 * kp + 1 < k {
                let hi = &w.data[(2 * kp + 1) * w.cs + j0..][..cols];
                for ((d, l), h) in dst.iter_mut().zip(lo).zip(hi) {
                    *d = bits(l) | bits(h) << 16;
                }
            } else {
                for (d, l) in dst.iter_mut().zip(lo) {
                    *d = bits(l);
                }
            }
            dst[cols..].fill(0);
        }
        return;
    }
    if w.cs == 1 && w.rs.is_multiple_of(2) {
        // SAFETY: the CPU has AVX512-F ([`product`] checked); the view holds the panel's rows.
        unsafe { gather_pairs(panel, w, j0, cols, k) };
        return;
    }
    // Any other strides: one element at a time.
    let at = |j: usize, i: usize| {
        if j < cols && i < k {
            bits(&w.data[(j0 + j) * w.rs + i * w.cs])
        } else {
            0
        }
    };
    for (kp, dst) in panel.chunks_exact_mut(NR).enumerate() {
        for (j, d) in dst.iter_mut().enumerate() {
            *d = at(j, 2 * kp) | at(j, 2 * kp + 1) << 16;
        }
    }
}

/// [`pack`] for a weight stored `[out, in]` with an even row stride: the panel's rows first
/// fetched into the cache in order (gathers across rows defeat the prefetchers), then each pair
/// index of sixteen outputs one 32-bit gather, the panel written in order.
///
/// # Safety
/// The CPU has AVX512-F; `w` holds rows `j0 .. j0 + cols` of `k`, and `w.cs == 1`.
#[target_feature(enable = "avx512f")]
unsafe fn gather_pairs(panel: &mut [u32], w: View<bf16>, j0: usize, cols: usize, k: usize) {
    assert!(panel.len() >= k.div_ceil(2) * NR && cols <= NR);
    let rows = w.data[j0 * w.rs..].as_ptr();
    let mut offsets = [0i32; NR];
    for (j, o) in offsets.iter_mut().enumerate().take(cols) {
        // Rows fit in an i32 of bf16 elements for any weight under 2³¹ elements.
        *o = (j * w.rs) as i32;
        for line in (0..k).step_by(32) {
            // SAFETY: inside row `j`, which the view holds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(rows.add(j * w.rs + line).cast()) };
        }
    }
    let masks: [u16; NV] =
        std::array::from_fn(|v| ((1u32 << cols.saturating_sub(v * LANES).min(LANES)) - 1) as u16);
    // SAFETY: each `offsets` vector is 512 bits; the gathers read lanes under their mask only,
    // each two bf16 values `2 kp`, `2 kp + 1 < k` of a row the view holds; the stores stay
    // inside the panel (asserted above).
    unsafe {
        let offsets: [__m512i; NV] =
            std::array::from_fn(|v| _mm512_loadu_si512(offsets[v * LANES..].as_ptr().cast()));
        for kp in 0..k / 2 {
            let at = rows.add(2 * kp).cast::<i32>();
            for v in 0..NV {
                let pairs = _mm512_mask_i32gather_epi32::<2>(
                    _mm512_setzero_si512(),
                    masks[v],
                    offsets[v],
                    at,
                );
                _mm512_storeu_si512(panel.as_mut_ptr().add(kp * NR + v * LANES).cast(), pairs);
            }
        }
    }
    if k % 2 == 1 {
        let dst = &mut panel[(k / 2) * NR..][..NR];
        for (j, d) in dst.iter_mut().enumerate() {
            *d = if j < cols {
                u32::from(w.data[(j0 + j) * w.rs + k - 1].to_bits())
            } else {
                0
            };
        }
    }
}

/// One register tile: up to [`MR`] rows of the activations against one packed panel.
struct Tile<'a, O> {
    /// The tile's first activation row, as bf16 bits.
    a: &'a [u16],
    a_rs: usize,
    k: usize,
    panel: &'a [u32],
    /// The tile's first output element.
    c: *mut O,
    c_rs: usize,
    /// Output columns that exist (the panel's others are padding).
    cols: usize,
}

impl<O: Out> Tile<'_, O> {
    /// Writes the `R × cols` products.
    ///
    /// # Safety
    /// The CPU has AVX512-F and AVX512-BF16; `a` holds `R` rows of `k`; `c` is valid for
    /// writes of `R` rows of `cols`, `c_rs` apart, that nothing else accesses meanwhile.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn run<const R: usize>(&self) {
        assert!(
            R <= MR && (R - 1) * self.a_rs + self.k <= self.a.len(),
            "bf16 dot tile: rows out of range"
        );
        assert!(self.panel.len() >= self.k.div_ceil(2) * NR);
        let (a, panel) = (self.a.as_ptr(), self.panel.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let full = self.k / 2;
        for kp in 0..full {
            // SAFETY: `2 kp + 1 < k` and `kp < pairs`, inside both operands (asserted above).
            unsafe {
                let at = |r: usize| a.add(r * self.a_rs + 2 * kp).cast::<i32>().read_unaligned();
                step::<R>(&mut acc, panel.add(kp * NR), at);
            }
        }
        if self.k % 2 == 1 {
            // The last column has no partner; the panel's high half is zero there.
            // SAFETY: `k − 1` is inside every row and `full < pairs`.
            unsafe {
                let at = |r: usize| i32::from(*a.add(r * self.a_rs + self.k - 1));
                step::<R>(&mut acc, panel.add(full * NR), at);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, sum) in row.iter().enumerate() {
                let lanes = self.cols.saturating_sub(v * LANES).min(LANES);
                if lanes > 0 {
                    // SAFETY: the caller vouches for `R` rows of `cols` at `c`.
                    unsafe { O::store(self.c.add(r * self.c_rs + v * LANES), *sum, lanes) };
                }
            }
        }
    }
}

/// One pair of inner indices: `acc[r][v] += pair(r) · panel[v]`, where `pair(r)` is row `r`'s
/// two bf16 values as one 32-bit word.
///
/// # Safety
/// The CPU has AVX512-F and AVX512-BF16; `panel` is valid for [`NR`] reads.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn step<const R: usize>(
    acc: &mut [[__m512; NV]; R],
    panel: *const u32,
    pair: impl Fn(usize) -> i32,
) {
    // SAFETY: the caller vouches for the panel; the casts reinterpret 512 bits as 512 bits.
    unsafe {
        let mut b = [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); NV];
        for (v, b) in b.iter_mut().enumerate() {
            *b = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                panel.add(v * LANES).cast(),
            ));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair(r)));
            for (sum, b) in row.iter_mut().zip(&b) {
                *sum = _mm512_dpbf16_ps(*sum, a, *b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Result, Tensor};

    /// `x · wᵀ` in f64 from the widened bf16 values, one dot product at a time.
    fn reference(x: &Tensor, w: &Tensor) -> Result<Vec<f64>> {
        let x: Vec<Vec<f32>> = x.to_dtype(DType::F32)?.to_vec2()?;
        let w: Vec<Vec<f32>> = w.to_dtype(DType::F32)?.to_vec2()?;
        Ok(x.iter()
            .flat_map(|xr| {
                w.iter().map(move |wr| {
                    xr.iter()
                        .zip(wr)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum()
                })
            })
            .collect())
    }

    #[test]
    fn matches_the_exact_product_of_the_bf16_values() -> Result<()> {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return Ok(());
        }
        let dev = Device::Cpu;
        // Rows not a multiple of the tile's, outputs not a multiple of the panel's, an odd
        // inner width; then the even width.
        for (rows, n, k) in [(13, 2 * NR + 7, 37), (7, NR, 64), (1, 3, 1)] {
            let x = Tensor::randn(0f32, 1., (rows, k), &dev)?.to_dtype(DType::BF16)?;
            let stored = Tensor::randn(0f32, 1., (n, k), &dev)?.to_dtype(DType::BF16)?;
            let transposed = stored.t()?.contiguous()?.t()?;
            // Rows one element longer than k: an even stride with an odd k, or the reverse.
            let wider = Tensor::randn(0f32, 1., (n, k + 1), &dev)?.to_dtype(DType::BF16)?;
            let narrowed = wider.narrow(1, 0, k)?;
            let xs = x.to_vec2::<bf16>()?.concat();
            for w in [&stored, &transposed, &narrowed] {
                let want = reference(&x, w)?;
                let (ws, wl) = w.storage_and_layout();
                let candle_core::Storage::Cpu(candle_core::CpuStorage::BF16(wd)) = &*ws else {
                    panic!("a bf16 CPU tensor")
                };
                let mut got = vec![f32::NAN; rows * n];
                product(
                    &mut got,
                    View::rows(&xs, k),
                    View::over(wd, wl),
                    (rows, n, k),
                );
                for (g, r) in got.iter().zip(&want) {
                    // f32 sums of k exact products, in another order than the reference's.
                    let tol = 1e-6 * k as f64 * (1. + r.abs());
                    assert!(
                        (f64::from(*g) - r).abs() <= tol,
                        "{g} vs {r} ({rows}×{n}×{k})"
                    );
                }
                // Packed once: the same panels, so the same sums; and the weight comes back.
                let packed = Packed::new(View::over(wd, wl), (n, k));
                let mut once = vec![f32::NAN; rows * n];
                packed_product(&mut once, View::rows(&xs, k), &packed, rows);
                assert_eq!(
                    once, got,
                    "packed once vs at every product ({rows}×{n}×{k})"
                );
                assert_eq!(packed.unpack(), w.to_vec2::<bf16>()?.concat());
            }
        }
        Ok(())
    }
}
