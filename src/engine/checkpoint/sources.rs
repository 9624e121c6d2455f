//! Where a model's tensors come from, as [`VarBuilder`] backends: memory-mapped safetensors
//! files, random initialisation, tensors held in memory, and a recorder of what the loader asks
//! for. (OLMo-core folders are [`super::olmo_core::NativeSource`].)
//!
//! Backends return candle errors; a [`WeightError`] travels inside one and [`build`] turns it
//! back into an input error, so that a bad checkpoint exits 2 with one line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::engine::model::spec::ModelSpec;
use crate::engine::model::{CausalLm, LoadError};
use crate::error::input_error;

/// A checkpoint's tensors that cannot be read as the model needs them.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// A file that safetensors cannot map or parse.
    #[error("{}: not a readable safetensors file: {message}", file.display())]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why.
        message: String,
    },
    /// A tensor the model needs is in no file.
    #[error("{}: tensor `{tensor}` not found", origin.display())]
    NotFound {
        /// The checkpoint.
        origin: PathBuf,
        /// The tensor's Hugging Face name.
        tensor: String,
    },
    /// A tensor of the wrong shape.
    #[error("{}: tensor `{tensor}` has shape {got:?}, expected {expected:?}", file.display())]
    Shape {
        /// The file holding it.
        file: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Its shape.
        got: Vec<usize>,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// A tensor whose bytes cannot be read.
    #[error("{}: tensor `{tensor}`: {message}", file.display())]
    Unloadable {
        /// The file holding it.
        file: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// Why.
        message: String,
    },
    /// An error of the OLMo-core reader, already carrying its file and kind.
    #[error(transparent)]
    Native(anyhow::Error),
    /// A request this source cannot answer.
    #[error("{}: raw tensors are not available from this source", origin.display())]
    NoRawTensors {
        /// The source's name.
        origin: PathBuf,
    },
}

impl From<WeightError> for candle_core::Error {
    /// Carried through candle's error, to be recovered by type in [`build`].
    fn from(e: WeightError) -> Self {
        candle_core::Error::WrappedContext {
            wrapped: Box::new(e),
            context: String::new(),
        }
    }
}

/// A [`VarBuilder`] over `backend`, converting to `dtype` on `device`.
pub fn var_builder(
    backend: impl SimpleBackend + 'static,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// Builds the model of `spec` from `vb`; `origin` names the checkpoint in messages.
///
/// The boundary between candle's errors and the process's: a [`WeightError`] or a
/// [`LoadError`] anywhere inside the candle error becomes an input error (exit 2).
pub fn build(spec: &ModelSpec, vb: VarBuilder, origin: &Path) -> anyhow::Result<CausalLm> {
    CausalLm::new(spec, vb).map_err(|e| into_anyhow(e, origin))
}

/// `e` as an `anyhow` error, typed errors of loading recovered (see [`build`]).
fn into_anyhow(e: candle_core::Error, origin: &Path) -> anyhow::Error {
    use candle_core::Error;
    match e {
        Error::WithBacktrace { inner, .. } => into_anyhow(*inner, origin),
        Error::Context { inner, context } => {
            into_anyhow(*inner, origin).context(context.to_string())
        }
        Error::WrappedContext { wrapped, context } => match wrapped.downcast::<WeightError>() {
            Ok(w) => match *w {
                WeightError::Native(e) => e,
                w => input_error(w.to_string()),
            },
            Err(other) => match other.downcast::<LoadError>() {
                Ok(l) => input_error(format!("{}: {l}", origin.display())),
                Err(other) => anyhow::anyhow!("{other}: {context}"),
            },
        },
        other => anyhow::Error::new(other),
    }
}

/// Memory-mapped safetensors files, with every tensor routed to the file that holds it.
pub struct SafetensorsFiles {
    origin: PathBuf,
    files: Vec<(PathBuf, MmapedSafetensors)>,
    routing: HashMap<String, usize>,
}

impl SafetensorsFiles {
    /// Maps every file; `origin` names the checkpoint in messages.
    pub fn open(origin: &Path, files: &[PathBuf]) -> Result<Self, WeightError> {
        let mut mapped = Vec::with_capacity(files.len());
        let mut routing = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            // SAFETY: the file is mapped read-only; filtermon never writes checkpoint files, and a
            // checkpoint is only scored once the writer has finished with it.
            let st =
                unsafe { MmapedSafetensors::new(path) }.map_err(|e| WeightError::Unreadable {
                    file: path.clone(),
                    message: e.to_string(),
                })?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            mapped.push((path.clone(), st));
        }
        Ok(Self {
            origin: origin.to_path_buf(),
            files: mapped,
            routing,
        })
    }

    /// The tensor as stored, on the CPU, with the file holding it.
    fn load(&self, name: &str) -> Result<(&Path, Tensor), WeightError> {
        let (file, st) = self
            .routing
            .get(name)
            .and_then(|&i| self.files.get(i))
            .ok_or_else(|| WeightError::NotFound {
                origin: self.origin.clone(),
                tensor: name.to_string(),
            })?;
        let t = st
            .load(name, &Device::Cpu)
            .map_err(|e| WeightError::Unloadable {
                file: file.clone(),
                tensor: name.to_string(),
                message: e.to_string(),
            })?;
        Ok((file, t))
    }
}

impl SimpleBackend for SafetensorsFiles {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (file, t) = self.load(name)?;
        checked(t, &s, file, name)?
            .to_dtype(dtype)?
            .to_device(dev)
            .map_err(|e| e.context(format!("{}: tensor `{name}`", file.display())))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name)?.1.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }
}

/// `t` when it has shape `s`, else the error naming `file` and `name`.
pub(crate) fn checked(
    t: Tensor,
    s: &Shape,
    file: &Path,
    name: &str,
) -> Result<Tensor, WeightError> {
    if t.dims() == s.dims() {
        Ok(t)
    } else {
        Err(WeightError::Shape {
            file: file.to_path_buf(),
            tensor: name.to_string(),
            got: t.dims().to_vec(),
            expected: s.dims().to_vec(),
        })
    }
}

/// Answers every request with N(0, 0.02) noise of the requested shape (benchmarks of model
/// shapes without files).
pub struct Random;

impl SimpleBackend for Random {
    fn get(
        &self,
        s: Shape,
        _: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, _: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(WeightError::NoRawTensors {
            origin: PathBuf::from("<random>"),
        }
        .into())
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Answers every request with zeros and notes the name and shape asked for, so that the loader
/// itself says which tensors a spec needs.
#[derive(Clone, Default)]
pub struct Recording {
    log: Arc<Mutex<Vec<Requested>>>,
}

/// The name and shape of one requested tensor.
pub type Requested = (String, Vec<usize>);

impl Recording {
    /// The `(name, shape)` of every tensor requested so far, in request order.
    pub fn recorded(&self) -> Vec<Requested> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut log) = self.log.lock() {
            log.push((name.to_string(), s.dims().to_vec()));
        }
        Tensor::zeros(s, dtype, dev)
    }

    fn get_unchecked(&self, _: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(WeightError::NoRawTensors {
            origin: PathBuf::from("<recording>"),
        }
        .into())
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{is_input_error, one_line};

    #[test]
    fn loading_errors_come_back_as_one_line_input_errors() {
        let origin = Path::new("ckpt");
        let not_found: candle_core::Error = WeightError::NotFound {
            origin: origin.to_path_buf(),
            tensor: "model.norm.weight".into(),
        }
        .into();
        let concatenated: candle_core::Error = LoadError::ConcatenatedShape {
            tensors: "model.layers.0.linear_attn.{q,k,v}_conv1d.weight".into(),
            got: vec![5, 1, 4],
            expected: vec![6, 1, 4],
        }
        .into();
        let cases = [
            (not_found.bt(), "ckpt: tensor `model.norm.weight` not found"),
            (
                concatenated.context("layer 0"),
                "layer 0: ckpt: tensors `model.layers.0.linear_attn.{q,k,v}_conv1d.weight` \
                 concatenate to shape [5, 1, 4], expected [6, 1, 4]",
            ),
        ];
        for (e, want) in cases {
            let e = into_anyhow(e, origin);
            assert!(is_input_error(&e));
            assert_eq!(one_line(&e), want);
        }
        let other = into_anyhow(candle_core::Error::Msg("out of memory".into()), origin);
        assert!(!is_input_error(&other));
    }
}
