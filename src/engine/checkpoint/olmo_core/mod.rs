//! OLMo-core's native checkpoints (`stepN/` folders), read directly with no conversion.
//!
//! A step folder holds `config.json` (the experiment config, the model's under `model`),
//! `.metadata.json`, `train/rankR.pt` and `model_and_optim/`, a torch.distributed.checkpoint
//! folder. Only its `model.` entries are read; pickled data goes through a restricted reader
//! that never runs code.

pub mod config;
pub mod distcp;
pub mod names;
pub mod pickle;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use serde_json::Value;

use super::sources::{checked, WeightError};
use crate::engine::model::spec::NormPlacement;
use crate::error::input_error;
use config::{BlockNaming, NativeModel};
use distcp::{DcpFolder, TensorEntry};

/// The DCP folder inside a step folder.
pub const MODEL_AND_OPTIM: &str = "model_and_optim";

/// Whether `dir` looks like an OLMo-core step folder (as opposed to a Hugging Face one).
pub fn is_native(dir: &Path) -> bool {
    dir.join(MODEL_AND_OPTIM).is_dir()
}

/// Whether a native step folder is complete: `.metadata.json`, `config.json` (which OLMo-core's
/// config saver writes only after the `stepN-tmp` rename) and a `model_and_optim/.metadata`
/// that ends its pickle. Folder names are the caller's concern.
pub fn is_complete(dir: &Path) -> bool {
    dir.join(".metadata.json").is_file()
        && dir.join("config.json").is_file()
        && ends_with_stop(&dir.join(MODEL_AND_OPTIM).join(".metadata"))
}

/// Whether the file's last byte is pickle's STOP opcode; only that byte is read, as the index of
/// a large model's checkpoint runs to megabytes.
fn ends_with_stop(path: &Path) -> bool {
    let mut last = [0u8; 1];
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)
        })
        .is_ok_and(|()| last[0] == b'.')
}

/// Reads the `model` object of `dir/config.json` and maps it.
pub fn load_model_config(dir: &Path) -> anyhow::Result<NativeModel> {
    let path = dir.join("config.json");
    let bad = |why: String| input_error(format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let model = v
        .get("model")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `model` object (not an OLMo-core experiment config)".into()))?;
    config::parse(model).map_err(|e| bad(e.to_string()))
}

/// The model weights of a step folder, served under Hugging Face names.
pub struct NativeSource {
    folder: DcpFolder,
    blocks: Vec<(BlockNaming, NormPlacement)>,
}

impl NativeSource {
    /// Indexes `dir/model_and_optim` for `model`'s tensors.
    pub fn open(dir: &Path, model: &NativeModel) -> anyhow::Result<Self> {
        let folder = DcpFolder::open(&dir.join(MODEL_AND_OPTIM), "model.")?;
        if folder.is_empty() {
            return Err(input_error(format!(
                "{}: no `model.` tensors in the checkpoint",
                folder.dir().display()
            )));
        }
        let blocks = model
            .naming
            .iter()
            .zip(&model.spec.layers)
            .map(|(n, l)| (*n, l.norm))
            .collect();
        Ok(Self { folder, blocks })
    }

    fn entry(&self, hf: &str) -> Option<(String, &TensorEntry)> {
        let name = names::native_name(hf, &self.blocks)?;
        let e = self.folder.entry(&name)?;
        Some((name, e))
    }

    /// Whether the tensor HF calls `hf` exists.
    pub fn contains(&self, hf: &str) -> bool {
        self.entry(hf).is_some()
    }

    /// The tensor HF calls `hf`, on the CPU in its saved dtype; `None` when absent.
    pub fn load(&self, hf: &str) -> Option<anyhow::Result<Tensor>> {
        let (name, _) = self.entry(hf)?;
        Some(self.folder.load(&name))
    }

    /// Where the tensors live, for messages.
    pub fn dir(&self) -> &Path {
        self.folder.dir()
    }

    /// The tensor HF calls `hf`, or the error naming it.
    fn tensor(&self, hf: &str) -> Result<Tensor, WeightError> {
        match self.load(hf) {
            Some(Ok(t)) => Ok(t),
            Some(Err(e)) => Err(WeightError::Native(e)),
            None => Err(WeightError::NotFound {
                origin: self.dir().to_path_buf(),
                tensor: hf.to_string(),
            }),
        }
    }
}

impl SimpleBackend for NativeSource {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        checked(self.tensor(name)?, &s, self.dir(), name)?
            .to_dtype(dtype)?
            .to_device(dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}
