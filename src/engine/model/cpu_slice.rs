//! A tensor's data as the host kernels (candle custom ops on the CPU) read it.

use candle_core::{CpuStorage, Layout, Result, WithDType};

/// The elements of type `T` a contiguous tensor's layout covers; `op` and `what` name the
/// kernel and the operand in the error for any other tensor.
pub fn contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<&'a [T]> {
    let Ok(all) = storage.as_slice::<T>() else {
        candle_core::bail!("{op} takes {} {what}", T::DTYPE.as_str())
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} takes contiguous {what}")
    };
    Ok(&all[start..end])
}
