//! Checkpoint weights with shape checks, dtype conversion and name aliases, from memory-mapped
//! safetensors files or an OLMo-core native folder, always asked for by Hugging Face name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::olmo_core::NativeSource;
use crate::error::input_error;

/// Where the tensors come from.
enum Source {
    /// Safetensors files and, per tensor name, the index of the file holding it.
    Safetensors {
        files: Vec<(PathBuf, MmapedSafetensors)>,
        routing: HashMap<String, usize>,
    },
    /// An OLMo-core step folder.
    Native(NativeSource),
    /// N(0, 0.02) noise of the requested shape (benchmarks of model shapes without files).
    Random,
}

/// The tensors of one checkpoint, possibly spread over several files.
pub struct Weights {
    source: Source,
    dtype: DType,
    device: Device,
    origin: PathBuf,
}

impl Weights {
    /// Maps every file; `origin` names the checkpoint in messages.
    pub fn open(
        origin: &Path,
        files: &[PathBuf],
        dtype: DType,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut mapped = Vec::with_capacity(files.len());
        let mut routing = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            // SAFETY: the file is mapped read-only; filtermon never writes checkpoint files, and a
            // checkpoint is only scored once the writer has finished with it.
            let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
                input_error(format!(
                    "{}: not a readable safetensors file: {e}",
                    path.display()
                ))
            })?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            mapped.push((path.clone(), st));
        }
        Ok(Self {
            source: Source::Safetensors {
                files: mapped,
                routing,
            },
            dtype,
            device: device.clone(),
            origin: origin.to_path_buf(),
        })
    }

    /// The model weights of an OLMo-core step folder.
    pub fn native(source: NativeSource, dtype: DType, device: &Device) -> Self {
        Self {
            origin: source.dir().to_path_buf(),
            source: Source::Native(source),
            dtype,
            device: device.clone(),
        }
    }

    /// A source that answers every request with N(0, 0.02) noise of the requested shape.
    pub fn random(dtype: DType, device: &Device) -> Self {
        Self {
            source: Source::Random,
            dtype,
            device: device.clone(),
            origin: PathBuf::from("<random>"),
        }
    }

    /// The checkpoint these weights belong to.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The dtype every tensor is converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether any of `names` exists.
    pub fn contains<S: AsRef<str>>(&self, names: &[S]) -> bool {
        match &self.source {
            Source::Random => true,
            Source::Safetensors { routing, .. } => {
                names.iter().any(|n| routing.contains_key(n.as_ref()))
            }
            Source::Native(src) => names.iter().any(|n| src.contains(n.as_ref())),
        }
    }

    /// The first of `names` that exists, checked against `shape`, in the model dtype.
    pub fn get<S: AsRef<str>>(&self, names: &[S], shape: &[usize]) -> anyhow::Result<Tensor> {
        self.get_as(names, shape, self.dtype)
    }

    /// Like [`Weights::get`] but converted to `dtype` (parameters kept in f32 by the reference).
    pub fn get_as<S: AsRef<str>>(
        &self,
        names: &[S],
        shape: &[usize],
        dtype: DType,
    ) -> anyhow::Result<Tensor> {
        if let Source::Random = self.source {
            return Ok(Tensor::randn(0f32, 0.02, shape, &self.device)?.to_dtype(dtype)?);
        }
        let (name, t, file) = self.load(names)?;
        if t.dims() != shape {
            return Err(input_error(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                file.display(),
                t.dims()
            )));
        }
        t.to_dtype(dtype)
            .and_then(|t| t.to_device(&self.device))
            .with_context(|| format!("{}: tensor `{name}`", file.display()))
    }

    /// Raw tensor by any alias without a shape check (for tensors assembled from parts).
    pub fn get_raw<S: AsRef<str>>(&self, names: &[S]) -> anyhow::Result<Tensor> {
        Ok(self.load(names)?.1)
    }

    /// The first of `names` that exists, on the CPU in its stored dtype, with the file (or for
    /// OLMo-core, the folder) it came from, for messages.
    fn load<'a, S: AsRef<str>>(&self, names: &'a [S]) -> anyhow::Result<(&'a str, Tensor, &Path)> {
        let found = names.iter().map(AsRef::as_ref).find_map(|n| {
            let t = match &self.source {
                Source::Random => Some(Err(anyhow::anyhow!("random weights have no files"))),
                Source::Safetensors { files, routing } => routing.get(n).map(|&i| {
                    let (path, st) = &files[i];
                    st.load(n, &Device::Cpu)
                        .map(|t| (t, path.as_path()))
                        .map_err(|e| input_error(format!("{}: tensor `{n}`: {e}", path.display())))
                }),
                Source::Native(src) => src.load(n).map(|r| r.map(|t| (t, src.dir()))),
            };
            t.map(|t| t.map(|(t, file)| (n, t, file)))
        });
        found.unwrap_or_else(|| {
            let all: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
            let also = if all.len() > 1 {
                format!(" (nor {})", all[1..].join(", "))
            } else {
                String::new()
            };
            Err(input_error(format!(
                "{}: tensor `{}` not found{also}",
                self.origin.display(),
                all.first().copied().unwrap_or("")
            )))
        })
    }
}
