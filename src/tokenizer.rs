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
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("{}: cannot read: {e}", path.display())))?;
    // Decoded here first: tokenizers panics instead of failing on some malformed JSON inside its
    // `decoder` (cut short, or a lone surrogate escape), where well-formed JSON of the wrong shape
    // is an error. A full decode, since skipping (`IgnoredAny`) lets a lone surrogate through.
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| input_error(format!("{}: not valid JSON: {e}", path.display())))?;
    text.parse::<Tokenizer>().map_err(|e| {
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

/// Identity of a tokenizer: SHA-256 over its vocabulary, merges, normalizer and
/// pre-tokenizer, in a key-order-independent serialisation (16 hex digits).
pub fn hash(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("{}: cannot read: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| input_error(format!("{}: not valid JSON: {e}", path.display())))?;
    let null = serde_json::Value::Null;
    let model = v.get("model").unwrap_or(&null);
    let mut canon = String::new();
    for part in [
        model.get("type").unwrap_or(&null),
        model.get("vocab").unwrap_or(&null),
        model.get("merges").unwrap_or(&null),
        v.get("normalizer").unwrap_or(&null),
        v.get("pre_tokenizer").unwrap_or(&null),
    ] {
        canonical(part, &mut canon);
        canon.push('\n');
    }
    use sha2::Digest;
    Ok(hex::encode(&sha2::Sha256::digest(canon.as_bytes())[..8]))
}

/// JSON with object keys sorted, whatever order the file had them in.
fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[*k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
