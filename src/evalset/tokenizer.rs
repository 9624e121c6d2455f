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
    catching(|| text.parse::<Tokenizer>())
        .map_err(|panic| {
            input_error(format!(
                "{}: not a usable tokenizer.json: the tokenizers library failed on it: {panic}",
                path.display()
            ))
        })?
        .map_err(|e| {
            input_error(format!(
                "{}: not a usable tokenizer.json: {e}",
                path.display()
            ))
        })
}

thread_local! {
    /// Set while [`catching`] runs, so that the panic hook stays silent for what it catches.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into its message. The tokenizers library panics on some damaged
/// files instead of failing (a BPE merge whose parts do not fit its vocabulary, found by the
/// fuzzer); those must be input errors, not crashes.
fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CATCHING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "it panicked".to_string())
    })
}

/// Installs a panic hook that is silent for the panics [`load`] turns into errors and is the
/// default hook otherwise, so that such an error stays one line.
pub fn quiet_caught_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CATCHING.with(|c| c.get()) {
            default(info);
        }
    }));
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
