//! Checkpoint folders: finding their files, mapping their config, loading their weights.

pub mod discover;
pub mod hf_config;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::Value;

use crate::error::input_error;
use crate::model::spec::ModelSpec;
use crate::model::CausalLm;
use weights::Weights;

/// A Hugging Face-format checkpoint folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The folder.
    pub dir: PathBuf,
    /// The architecture from `config.json`.
    pub spec: ModelSpec,
    /// The safetensors files holding the weights.
    pub weight_files: Vec<PathBuf>,
}

impl Checkpoint {
    /// Reads `config.json` and finds the weight files (`model.safetensors`, or the shards
    /// named by `model.safetensors.index.json`).
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
        let spec = hf_config::load(&config)?;
        let weight_files = weight_files(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            spec,
            weight_files,
        })
    }

    /// Maps the weights and builds the model.
    pub fn load_model(&self, dtype: DType, device: &Device) -> anyhow::Result<CausalLm> {
        let w = Weights::open(&self.dir, &self.weight_files, dtype, device)?;
        CausalLm::load(&self.spec, &w)
    }

    /// `tokenizer.json` of this checkpoint.
    pub fn tokenizer_path(&self) -> anyhow::Result<PathBuf> {
        let p = self.dir.join("tokenizer.json");
        if p.is_file() {
            Ok(p)
        } else {
            Err(input_error(format!(
                "{}: no tokenizer.json",
                self.dir.display()
            )))
        }
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
