//! Memory-mapped safetensors weights with shape checks, dtype conversion and name aliases.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::input_error;

/// The tensors of one checkpoint, possibly spread over several files.
pub struct Weights {
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// tensor name → index into `files`
    routing: HashMap<String, usize>,
    /// Fabricate every requested tensor (benchmarks of model shapes without files).
    random: bool,
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
            files: mapped,
            routing,
            random: false,
            dtype,
            device: device.clone(),
            origin: origin.to_path_buf(),
        })
    }

    /// A source that answers every request with N(0, 0.02) noise of the requested shape.
    pub fn random(dtype: DType, device: &Device) -> Self {
        Self {
            files: Vec::new(),
            routing: HashMap::new(),
            random: true,
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
        self.random || names.iter().any(|n| self.routing.contains_key(n.as_ref()))
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
        if self.random {
            return Ok(Tensor::randn(0f32, 0.02, shape, &self.device)?.to_dtype(dtype)?);
        }
        let (name, file) = self.locate(names)?;
        let (path, st) = &self.files[file];
        let t = st
            .load(name, &Device::Cpu)
            .map_err(|e| input_error(format!("{}: tensor `{name}`: {e}", path.display())))?;
        if t.dims() != shape {
            return Err(input_error(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                path.display(),
                t.dims()
            )));
        }
        t.to_dtype(dtype)
            .and_then(|t| t.to_device(&self.device))
            .with_context(|| format!("{}: tensor `{name}`", path.display()))
    }

    /// Raw tensor by any alias without a shape check (for tensors assembled from parts).
    pub fn get_raw<S: AsRef<str>>(&self, names: &[S]) -> anyhow::Result<Tensor> {
        let (name, file) = self.locate(names)?;
        let (path, st) = &self.files[file];
        st.load(name, &Device::Cpu)
            .map_err(|e| input_error(format!("{}: tensor `{name}`: {e}", path.display())))
    }

    fn locate<'a, S: AsRef<str>>(&self, names: &'a [S]) -> anyhow::Result<(&'a str, usize)> {
        names
            .iter()
            .find_map(|n| self.routing.get(n.as_ref()).map(|&i| (n.as_ref(), i)))
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
