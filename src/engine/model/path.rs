//! Which kernels a forward pass runs: the host's, tuned for the CPU, or tensor ops that keep
//! every intermediate on the model's device.

use candle_core::Device;

/// The environment variable that forces the device path on the CPU (`1`), so that the kernels a
/// GPU runs are tested where no GPU is.
pub const FORCE_DEVICE_PATH: &str = "FILTERMON_DEVICE_PATH";

/// Where the recurrence and the NLL run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecPath {
    /// Plain-Rust kernels on host memory: the Gated DeltaNet recurrence parallel over heads,
    /// log-sum-exp and ranks over logits copied to the host. Fastest on the CPU.
    Host,
    /// Candle tensor ops only: between the token ids and the per-token scores of a slice,
    /// nothing leaves the device.
    Device,
}

impl ExecPath {
    /// `host` or `device`, as reports name it.
    pub fn name(self) -> &'static str {
        match self {
            ExecPath::Host => "host",
            ExecPath::Device => "device",
        }
    }

    /// The device path on any non-CPU device, and on the CPU when `FILTERMON_DEVICE_PATH=1`.
    pub fn for_device(device: &Device) -> Self {
        let forced = std::env::var(FORCE_DEVICE_PATH).is_ok_and(|v| v == "1");
        if forced || !device.is_cpu() {
            ExecPath::Device
        } else {
            ExecPath::Host
        }
    }
}
