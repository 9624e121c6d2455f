//! Checkpoint folders: finding their files, mapping their config, loading their weights.
//!
//! Two formats: Hugging Face folders (`config.json`, safetensors, `tokenizer.json`) and
//! OLMo-core's native `stepN/` folders (see [`olmo_core`]), which hold no tokenizer.

pub mod hf_config;
pub mod olmo_core;
pub mod sources;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::engine::model::spec::ModelSpec;
use crate::engine::model::CausalLm;
use crate::error::input_error;
use sources::SafetensorsFiles;

/// How a checkpoint stores its weights.
#[derive(Debug, Clone)]
pub enum Format {
    /// Safetensors files: `model.safetensors` or the shards an index names.
    HuggingFace {
        /// The files, in index order.
        weight_files: Vec<PathBuf>,
    },
    /// An OLMo-core step folder, with the naming of its blocks.
    OlmoCore(olmo_core::config::NativeModel),
}

/// A checkpoint folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The folder.
    pub dir: PathBuf,
    /// The architecture from `config.json`.
    pub spec: ModelSpec,
    /// Where the weights are.
    pub format: Format,
}

impl Checkpoint {
    /// Reads `config.json` and finds the weights: for a Hugging Face folder `model.safetensors`
    /// or the shards named by `model.safetensors.index.json`; for an OLMo-core step folder the
    /// model config under `model` (the weights are indexed when loaded).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            return Err(input_error(format!(
                "{}: not a checkpoint folder",
                dir.display()
            )));
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(input_error(format!("{}: no config.json", dir.display())));
        }
        if olmo_core::is_native(dir) {
            let model = olmo_core::load_model_config(dir)?;
            return Ok(Self {
                dir: dir.to_path_buf(),
                spec: model.spec.clone(),
                format: Format::OlmoCore(model),
            });
        }
        let spec = hf_config::load(&config)?;
        let weight_files = weight_files(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            spec,
            format: Format::HuggingFace { weight_files },
        })
    }

    /// The weights, mapped, as a [`VarBuilder`] that converts to `dtype` on `device`; always
    /// asked for by Hugging Face name.
    pub fn weights(&self, dtype: DType, device: &Device) -> anyhow::Result<VarBuilder<'static>> {
        Ok(match &self.format {
            Format::HuggingFace { weight_files } => {
                let files = SafetensorsFiles::open(&self.dir, weight_files)
                    .map_err(|e| input_error(e.to_string()))?;
                sources::var_builder(files, dtype, device)
            }
            Format::OlmoCore(model) => {
                let native = olmo_core::NativeSource::open(&self.dir, model)?;
                sources::var_builder(native, dtype, device)
            }
        })
    }

    /// Maps the weights and builds the model.
    pub fn load_model(&self, dtype: DType, device: &Device) -> anyhow::Result<CausalLm> {
        sources::build(&self.spec, self.weights(dtype, device)?, &self.dir)
    }

    /// Whether the weights are Hugging Face safetensors (as opposed to an OLMo-core folder).
    pub fn is_hugging_face(&self) -> bool {
        matches!(self.format, Format::HuggingFace { .. })
    }

    /// `tokenizer.json` of this checkpoint.
    pub fn tokenizer_path(&self) -> anyhow::Result<PathBuf> {
        let p = self.dir.join("tokenizer.json");
        if p.is_file() {
            Ok(p)
        } else if let Format::OlmoCore(_) = self.format {
            Err(input_error(format!(
                "{}: OLMo-core checkpoints hold no tokenizer.json; pass --tokenizer \
                 (or set the run's `tokenizer` in the watch config)",
                self.dir.display()
            )))
        } else {
            Err(input_error(format!(
                "{}: no tokenizer.json",
                self.dir.display()
            )))
        }
    }

    /// `given` when set, else the folder's own `tokenizer.json`; its vocabulary must fit the
    /// embedding, or token ids could index past it.
    pub fn resolve_tokenizer(&self, given: Option<&Path>) -> anyhow::Result<PathBuf> {
        let path = match given {
            Some(p) => p.to_path_buf(),
            None => self.tokenizer_path()?,
        };
        let tok = crate::evalset::tokenizer::load(&path)?;
        let n = tok.get_vocab_size(true);
        if n > self.spec.vocab_size {
            return Err(input_error(format!(
                "{}: tokenizer has {n} tokens but the embedding of {} has only {} rows",
                path.display(),
                self.dir.display(),
                self.spec.vocab_size
            )));
        }
        Ok(path)
    }
}

/// The safetensors files of a folder, in index order.
pub fn weight_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return shard_files(&index);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(input_error(format!(
        "{}: no model.safetensors or model.safetensors.index.json",
        dir.display()
    )))
}

/// The shards an index names (each once, in first-seen order); every one must exist.
pub fn shard_files(index: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let bad = |why: String| input_error(format!("{}: {why}", index.display()));
    let text = std::fs::read_to_string(index).map_err(|e| bad(format!("cannot read: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let name = file
            .as_str()
            .ok_or_else(|| bad(format!("`weight_map.{tensor}` is not a file name")))?;
        if name.contains('/') || name.contains('\\') || name == ".." {
            return Err(bad(format!("shard `{name}` is not a plain file name")));
        }
        let path = dir.join(name);
        if !files.contains(&path) {
            if !path.is_file() {
                return Err(bad(format!(
                    "shard `{name}` (holding `{tensor}`) is missing"
                )));
            }
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    Ok(files)
}
