//! Position tables (RoPE cos/sin, attention masks, chunk masks) built once per model, length and
//! layer type, on the model's device, so that a forward pass copies nothing from the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor};

/// What a table is for. Within one model every attention layer of a type (full or sliding
/// with the same window) shares one RoPE configuration, so the window identifies the layer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKey {
    /// f32 `(cos, sin)`, `[seq, head_dim / 2]`.
    Rope {
        /// The layer type's sliding window (`None`: full attention).
        window: Option<usize>,
        /// Positions `0..seq`.
        seq: usize,
    },
    /// Additive mask `[seq, seq]`: 0 where a query sees a key, −∞ elsewhere.
    AttentionMask {
        /// Sliding window, keys including the current one (`None`: causal only).
        window: Option<usize>,
        /// Queries and keys `0..seq`.
        seq: usize,
        /// The dtype of the scores it is added to.
        dtype: DType,
    },
    /// f32 lower and strictly lower masks `[chunk, chunk]` of the chunked delta rule, and the
    /// identity of the chunk's next power of two.
    ChunkMasks {
        /// Chunk length.
        chunk: usize,
    },
}

/// Built tables by what they are for and where they live.
type Cache = HashMap<(TableKey, DeviceKey), Vec<Tensor>>;

/// A model's shared cache of position tables; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    cache: Arc<Mutex<Cache>>,
}

/// Tables on different devices never mix (a model lives on one, but a cache may outlive a move).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DeviceKey {
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl DeviceKey {
    fn of(device: &Device) -> Self {
        match device.location() {
            candle_core::DeviceLocation::Cpu => DeviceKey::Cpu,
            candle_core::DeviceLocation::Cuda { gpu_id } => DeviceKey::Cuda(gpu_id),
            candle_core::DeviceLocation::Metal { gpu_id } => DeviceKey::Metal(gpu_id),
        }
    }
}

impl Tables {
    /// The tables under `key` on `device`, built by `build` on the first call.
    pub fn get(
        &self,
        key: TableKey,
        device: &Device,
        build: impl FnOnce() -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let full_key = (key, DeviceKey::of(device));
        // A poisoned lock only means another thread panicked while building; the map itself
        // holds only finished tables.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(&full_key) {
            return Ok(t.clone());
        }
        let built = build()?;
        cache.insert(full_key, built.clone());
        Ok(built)
    }
}
