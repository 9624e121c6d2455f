//! Writing checkpoint folders the way OLMo-core does: into `NAME-tmp`, renamed to `NAME` once
//! complete, so a watcher never sees a half-written `NAME`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use super::params::Params;
use crate::error::input_error;

/// Writes `config.json`, `model.safetensors` and `tokenizer.json` into `run_dir/name`.
///
/// A leftover `name-tmp` (from an interrupted write) is replaced; an existing `name` is an error,
/// as a monitor may already have scored it.
pub fn write(
    run_dir: &Path,
    name: &str,
    config: &Value,
    params: &Params,
    tokenizer: &Path,
) -> anyhow::Result<PathBuf> {
    let done = run_dir.join(name);
    if done.exists() {
        return Err(input_error(format!(
            "{}: checkpoint already exists (write runs into a fresh folder)",
            done.display()
        )));
    }
    let tmp = run_dir.join(format!("{name}-tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let text = serde_json::to_string_pretty(config)?;
    fs::write(tmp.join("config.json"), text + "\n")
        .with_context(|| format!("writing {}", tmp.join("config.json").display()))?;
    params.save(&tmp.join("model.safetensors"))?;
    fs::copy(tokenizer, tmp.join("tokenizer.json"))
        .with_context(|| format!("copying {}", tokenizer.display()))?;
    fs::rename(&tmp, &done)
        .with_context(|| format!("renaming {} to {}", tmp.display(), done.display()))?;
    tracing::info!(checkpoint = %done.display(), "checkpoint written");
    Ok(done)
}
