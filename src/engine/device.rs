//! `--device` parsing.

use candle_core::Device;

use crate::error::input_error;

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse(spec: &str) -> anyhow::Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n.parse::<usize>().map_err(|_| {
                    input_error(format!("--device {s}: expected cuda:N with N a GPU index"))
                })?,
                None => 0,
            };
            cuda(ordinal)
        }
        other => Err(input_error(format!(
            "--device {other}: expected cpu or cuda:N"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> anyhow::Result<Device> {
    let device = Device::new_cuda(ordinal).map_err(|e| {
        // The error's own message is the one line a user needs; its captured backtrace is not.
        let e = match e {
            candle_core::Error::WithBacktrace { inner, .. } => *inner,
            e => e,
        };
        input_error(format!("--device cuda:{ordinal}: {e}"))
    })?;
    if let Device::Cuda(cuda) = &device {
        // SAFETY: cudarc's per-buffer events guard tensors shared across streams. filtermon
        // issues a device's work from the thread that created its tensors (a worker loads its
        // own model), on candle's one stream per thread, so stream order alone is enough; the
        // events cost an allocation pair per tensor and a wait and record per kernel argument.
        unsafe { cuda.disable_event_tracking() };
        keep_freed_memory(cuda)?;
    }
    Ok(device)
}

/// The device's stream-ordered memory pool, which candle's allocations come from.
#[cfg(feature = "cuda")]
fn memory_pool(
    cuda: &candle_core::CudaDevice,
) -> anyhow::Result<cudarc::driver::sys::CUmemoryPool> {
    let dev = cuda.cuda_stream().context().cu_device();
    // SAFETY: `dev` comes from a live context.
    unsafe { cudarc::driver::result::device::get_mem_pool(dev) }
        .map_err(|e| anyhow::anyhow!("CUDA memory pool: {e}"))
}

/// Keeps freed buffers in the pool, as PyTorch's caching allocator does. With the driver's
/// default release threshold of 0 every synchronisation (one per slice of scores) hands the
/// pool back, and the next forward pass maps its gigabytes again.
#[cfg(feature = "cuda")]
fn keep_freed_memory(cuda: &candle_core::CudaDevice) -> anyhow::Result<()> {
    let pool = memory_pool(cuda)?;
    let mut threshold = u64::MAX;
    // SAFETY: a valid pool, and the release threshold attribute is a u64.
    unsafe {
        cudarc::driver::result::mem_pool::set_attribute(
            pool,
            cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .map_err(|e| anyhow::anyhow!("CUDA memory pool release threshold: {e}"))
}

/// Waits for the device, then gives the memory it keeps for freed buffers back to the driver:
/// what an idle daemon does after dropping its model, so that it holds no GPU memory beside
/// training but its CUDA context. Nothing to do on the CPU.
pub fn release_cached_memory(device: &Device) -> anyhow::Result<()> {
    device.synchronize()?;
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let pool = memory_pool(cuda)?;
        // SAFETY: a valid pool; trimming only releases memory no allocation holds.
        unsafe { cudarc::driver::result::mem_pool::trim_to(pool, 0) }
            .map_err(|e| anyhow::anyhow!("CUDA memory pool trim: {e}"))?;
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: usize) -> anyhow::Result<Device> {
    Err(input_error(format!(
        "--device cuda:{ordinal}: this filtermon was built without the `cuda` feature"
    )))
}

/// Weight and activation precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl DTypeArg {
    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DTypeArg::F32 => candle_core::DType::F32,
            DTypeArg::Bf16 => candle_core::DType::BF16,
            DTypeArg::F16 => candle_core::DType::F16,
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DTypeArg::F32 => "f32",
            DTypeArg::Bf16 => "bf16",
            DTypeArg::F16 => "f16",
        }
    }
}
