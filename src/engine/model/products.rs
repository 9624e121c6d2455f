//! Matrix products on f32 slices for the host kernels: small products inside their own
//! parallel tasks (attention blocks, GDN chunks), and the LM head's logits written into a buffer
//! of their own. `gemm` on strided views, without a candle tensor per product.

use candle_core::Layout;
use gemm::{gemm, Parallelism};

/// A matrix inside a slice: element `(r, c)` is `data[r · rs + c · cs]`.
#[derive(Debug)]
pub struct View<'a, T = f32> {
    /// The elements, from the matrix's first.
    pub data: &'a [T],
    /// From one row to the next.
    pub rs: usize,
    /// From one column to the next.
    pub cs: usize,
}

// Derived `Clone`/`Copy` would ask the same of `T`; a view only copies its reference.
impl<T> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for View<'_, T> {}

impl<'a, T> View<'a, T> {
    /// A row-major matrix whose rows are `rs` apart.
    pub fn rows(data: &'a [T], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }

    /// The transpose of a row-major matrix whose rows are `rs` apart.
    pub fn transposed(data: &'a [T], rs: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: rs,
        }
    }

    /// The matrix a 2-D layout lays over `data`.
    pub fn over(data: &'a [T], layout: &Layout) -> Self {
        let stride = layout.stride();
        Self {
            data: &data[layout.start_offset()..],
            rs: stride[0],
            cs: stride[1],
        }
    }

    /// The transpose of this matrix, on the same elements.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every element of an `r × c` matrix lies inside the slice.
    pub fn holds(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// An output buffer shared by parallel tasks, each of which writes elements no other task
/// accesses, while the buffer outlives them all.
pub struct Shared<T>(pub *mut T);

// Derived `Clone`/`Copy` would ask the same of `T`; the wrapper only copies its pointer.
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<T> {}

// SAFETY: the tasks sharing the buffer write disjoint elements of it (its users' contract).
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The element at `offset`, which the caller keeps inside the buffer; a method, so that
    /// closures capture the whole (`Sync`) wrapper rather than its raw pointer.
    pub fn at(self, offset: usize) -> *mut T {
        self.0.wrapping_add(offset)
    }
}

/// How a product lands in its destination.
#[derive(Debug, Clone, Copy)]
pub enum Land {
    /// `dst = lhs · rhs`
    Set,
    /// `dst = keep · dst + sign · lhs · rhs`
    Add {
        /// Factor on what `dst` held.
        keep: f32,
        /// Factor on the product.
        sign: f32,
    },
}

/// `lhs · rhs` (`m × k` by `k × n`) into the row-major `m × n` matrix at `dst`, whose rows are
/// `dst_rs` apart, on `threads` threads.
///
/// # Safety
/// `dst` must be valid for reads and writes at every `i · dst_rs + j` (`i < m`, `j < n`), and
/// nothing else may access those elements until this returns.
pub unsafe fn product_at(
    dst: *mut f32,
    dst_rs: usize,
    (m, n, k): (usize, usize, usize),
    lhs: View,
    rhs: View,
    land: Land,
    threads: usize,
) {
    assert!(
        lhs.holds(m, k) && rhs.holds(k, n),
        "matrix product: an operand is smaller than its view"
    );
    let (read, keep, sign) = match land {
        Land::Set => (false, 0.0, 1.0),
        Land::Add { keep, sign } => (true, keep, sign),
    };
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the operands hold every element the product reads (checked above); the caller
    // vouches for `dst`.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            read,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            keep,
            sign,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// [`product_at`] into a slice, which must hold the whole `m × n` destination.
pub fn product(
    dst: &mut [f32],
    dst_rs: usize,
    shape: (usize, usize, usize),
    lhs: View,
    rhs: View,
    land: Land,
    threads: usize,
) {
    let (m, n, _) = shape;
    assert!(
        View::rows(dst, dst_rs).holds(m, n),
        "matrix product: the destination is smaller than the result"
    );
    // SAFETY: `dst` holds the result (checked above) and is borrowed mutably, so nothing else
    // touches it.
    unsafe { product_at(dst.as_mut_ptr(), dst_rs, shape, lhs, rhs, land, threads) }
}
