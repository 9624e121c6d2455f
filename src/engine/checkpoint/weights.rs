//! Checkpoint weights with shape checks, dtype conversion and name aliases, from memory-mapped
//! safetensors files or an OLMo-core native folder, always asked for by Hugging Face name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::olmo_core::NativeSource;
use crate::error::input_error;

/// The tensors of one checkpoint, possibly spread over several files.
pub struct Weights {
    source: Source,
    dtype: DType,
    device: Device,
    origin: PathBuf,
}

/// Where tensors come from.
enum Source {
    /// Memory-mapped safetensors files, with tensor name → index into `files`.
    Files {
        files: Vec<(PathBuf, MmapedSafetensors)>,
        routing: HashMap<String, usize>,
    },
    /// An OLMo-core step folder.
    Native(NativeSource),
    /// Fabricate every requested tensor (benchmarks of model shapes without files).
    Random,
    /// Tensors held in memory, e.g. the trainer's variables: a model loaded from them shares
    /// their storage, so autograd tracks every op back to them.
    Tensors(HashMap<String, Tensor>),
    /// Answer every request with zeros and note the first name and shape asked for, so that
    /// the loader itself says which tensors a spec needs.
    Recording(Mutex<Vec<(String, Vec<usize>)>>),
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
        Ok(Self::with_source(
            Source::Files {
                files: mapped,
                routing,
            },
            origin,
            dtype,
            device,
        ))
    }

    /// The model weights of an OLMo-core step folder.
    pub fn native(source: NativeSource, dtype: DType, device: &Device) -> Self {
        let origin = source.dir().to_path_buf();
        Self::with_source(Source::Native(source), &origin, dtype, device)
    }

    /// A source that answers every request with N(0, 0.02) noise of the requested shape.
    pub fn random(dtype: DType, device: &Device) -> Self {
        Self::with_source(Source::Random, Path::new("<random>"), dtype, device)
    }

    /// A source over named in-memory tensors (same dtype and device as requested: a model
    /// loaded from them then uses the tensors themselves, not copies).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, dtype: DType, device: &Device) -> Self {
        Self::with_source(
            Source::Tensors(tensors),
            Path::new("<memory>"),
            dtype,
            device,
        )
    }

    /// A source that records what a loader asks for (see [`Weights::recorded`]).
    pub fn recording(dtype: DType, device: &Device) -> Self {
        Self::with_source(
            Source::Recording(Mutex::new(Vec::new())),
            Path::new("<recording>"),
            dtype,
            device,
        )
    }

    /// The `(name, shape)` of every tensor requested so far from a [`Weights::recording`]
    /// source, in request order, by the first alias asked for; empty for other sources.
    pub fn recorded(&self) -> Vec<(String, Vec<usize>)> {
        match &self.source {
            Source::Recording(log) => log.lock().map(|l| l.clone()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn with_source(source: Source, origin: &Path, dtype: DType, device: &Device) -> Self {
        Self {
            source,
            dtype,
            device: device.clone(),
            origin: origin.to_path_buf(),
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
            Source::Files { routing, .. } => names.iter().any(|n| routing.contains_key(n.as_ref())),
            Source::Tensors(map) => names.iter().any(|n| map.contains_key(n.as_ref())),
            Source::Native(src) => names.iter().any(|n| src.contains(n.as_ref())),
            Source::Random | Source::Recording(_) => true,
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
        match &self.source {
            Source::Random => {
                return Ok(Tensor::randn(0f32, 0.02, shape, &self.device)?.to_dtype(dtype)?)
            }
            Source::Recording(log) => {
                let name = names.first().map_or("", AsRef::as_ref);
                if let Ok(mut log) = log.lock() {
                    log.push((name.to_string(), shape.to_vec()));
                }
                return Ok(Tensor::zeros(shape, dtype, &self.device)?);
            }
            Source::Files { .. } | Source::Tensors(_) | Source::Native(_) => {}
        }
        let (name, t, at) = self.load(names)?;
        if t.dims() != shape {
            return Err(input_error(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                at.display(),
                t.dims()
            )));
        }
        t.to_dtype(dtype)
            .and_then(|t| t.to_device(&self.device))
            .with_context(|| format!("{}: tensor `{name}`", at.display()))
    }

    /// Raw tensor by any alias without a shape check (for tensors assembled from parts).
    pub fn get_raw<S: AsRef<str>>(&self, names: &[S]) -> anyhow::Result<Tensor> {
        Ok(self.load(names)?.1)
    }

    /// The first of `names` that exists, as stored, with the file (or origin) holding it.
    fn load<'a, S: AsRef<str>>(&self, names: &'a [S]) -> anyhow::Result<(&'a str, Tensor, &Path)> {
        match &self.source {
            Source::Files { files, routing } => {
                let (name, file) = self.locate(names, |n| routing.get(n).copied())?;
                let (path, st) = &files[file];
                let t = st.load(name, &Device::Cpu).map_err(|e| {
                    input_error(format!("{}: tensor `{name}`: {e}", path.display()))
                })?;
                Ok((name, t, path.as_path()))
            }
            Source::Tensors(map) => {
                let (name, t) = self.locate(names, |n| map.get(n).cloned())?;
                Ok((name, t, self.origin.as_path()))
            }
            Source::Native(src) => {
                let (name, t) = self.locate(names, |n| src.load(n))?;
                Ok((name, t?, src.dir()))
            }
            Source::Random | Source::Recording(_) => Err(input_error(format!(
                "{}: raw tensors are not available from this source",
                self.origin.display()
            ))),
        }
    }

    /// The first of `names` that `find` resolves, or an error naming every alias.
    fn locate<'a, S: AsRef<str>, T>(
        &self,
        names: &'a [S],
        find: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<(&'a str, T)> {
        names
            .iter()
            .find_map(|n| find(n.as_ref()).map(|t| (n.as_ref(), t)))
            .ok_or_else(|| {
                let all: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
                let also = if all.len() > 1 {
                    format!(" (nor {})", all[1..].join(", "))
                } else {
                    String::new()
                };
                input_error(format!(
                    "{}: tensor `{}` not found{also}",
                    self.origin.display(),
                    all.first().copied().unwrap_or("")
                ))
            })
    }
}
