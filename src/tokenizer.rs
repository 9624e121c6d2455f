//! Loading a checkpoint's `tokenizer.json` and encoding documents.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::input_error;

/// Loads a Hugging Face `tokenizer.json`.
pub fn load(path: &Path) -> anyhow::Result<Tokenizer> {
    if !path.is_file() {
        return Err(input_error(format!(
            "{}: no such tokenizer file",
            path.display()
        )));
    }
    Tokenizer::from_file(path).map_err(|e| {
        input_error(format!(
            "{}: not a usable tokenizer.json: {e}",
            path.display()
        ))
    })
}

/// Token ids of `text`, without special tokens.
pub fn encode(tok: &Tokenizer, text: &str) -> anyhow::Result<Vec<u32>> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing failed: {e}"))?;
    Ok(enc.get_ids().to_vec())
}
