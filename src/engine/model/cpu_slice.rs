//! A tensor's data as the host kernels (candle custom ops on the CPU) read it.

use candle_core::{CpuStorage, Layout, Result};

/// The f32 elements a contiguous tensor's layout covers; `op` and `what` name the kernel and
/// the operand in the error for any other tensor.
pub fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("{op} takes f32 {what}")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous {what}")
    };
    Ok(&all[start..end])
}
