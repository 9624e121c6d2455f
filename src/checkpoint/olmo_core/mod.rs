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

use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use crate::error::input_error;
use crate::model::spec::NormPlacement;
use config::{BlockNaming, NativeModel};
use distcp::{DcpFolder, TensorEntry};

/// The DCP folder inside a step folder.
pub const MODEL_AND_OPTIM: &str = "model_and_optim";

/// Whether `dir` looks like an OLMo-core step folder (as opposed to a Hugging Face one).
pub fn is_native(dir: &Path) -> bool {
    dir.join(MODEL_AND_OPTIM).is_dir()
}

/// The step of a folder named `stepN` (never `stepN-tmp`, which OLMo-core renames when done).
pub fn step_of(dir: &Path) -> Option<u64> {
    let name = dir.file_name()?.to_str()?;
    let digits = name.strip_prefix("step")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether a native step folder is complete and may be scored: named `stepN`, with
/// `.metadata.json`, `config.json` and a `model_and_optim/.metadata` that ends its pickle.
pub fn is_ready(dir: &Path) -> bool {
    let metadata = dir.join(MODEL_AND_OPTIM).join(".metadata");
    step_of(dir).is_some()
        && dir.join(".metadata.json").is_file()
        && dir.join("config.json").is_file()
        && std::fs::read(&metadata).is_ok_and(|b| b.last() == Some(&b'.'))
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
    config::parse(model).map_err(bad)
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
}
