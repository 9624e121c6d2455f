//! Loading a checkpoint's `tokenizer.json` and encoding documents.

use std::any::Any;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::InputError;

/// Why a `tokenizer.json` cannot be used, with the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// No file at the path.
    #[error("{}: no such tokenizer file", path.display())]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The file cannot be read as text.
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it gave.
        error: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{}: not valid JSON: {error}", path.display())]
    NotJson {
        /// The file.
        path: PathBuf,
        /// What decoding it gave.
        error: serde_json::Error,
    },
    /// The tokenizers library panicked on the file.
    #[error(
        "{}: not a usable tokenizer.json: the tokenizers library failed on it: {message}",
        path.display()
    )]
    LibraryPanicked {
        /// The file.
        path: PathBuf,
        /// The panic's message.
        message: String,
    },
    /// JSON the tokenizers library refuses.
    #[error("{}: not a usable tokenizer.json: {error}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What the library said.
        error: tokenizers::Error,
    },
}

/// Loads a Hugging Face `tokenizer.json`. A failure is a [`TokenizerError`] inside an
/// [`InputError`], so that a `?` into `anyhow` keeps it an exit-2 error.
pub fn load(path: &Path) -> Result<Tokenizer, InputError> {
    load_typed(path).map_err(InputError::new)
}

fn load_typed(path: &Path) -> Result<Tokenizer, TokenizerError> {
    if !path.is_file() {
        return Err(TokenizerError::Missing {
            path: path.to_path_buf(),
        });
    }
    let text = read(path)?;
    // Decoded here first: tokenizers panics instead of failing on some malformed JSON inside its
    // `decoder` (cut short, or a lone surrogate escape), where well-formed JSON of the wrong shape
    // is an error. A full decode, since skipping (`IgnoredAny`) lets a lone surrogate through.
    decode(path, &text)?;
    catching(|| text.parse::<Tokenizer>())
        .map_err(|payload| TokenizerError::LibraryPanicked {
            path: path.to_path_buf(),
            message: panic_message(payload.as_ref()),
        })?
        .map_err(|error| TokenizerError::Unusable {
            path: path.to_path_buf(),
            error,
        })
}

fn read(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|error| TokenizerError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn decode(path: &Path, text: &str) -> Result<serde_json::Value, TokenizerError> {
    serde_json::from_str(text).map_err(|error| TokenizerError::NotJson {
        path: path.to_path_buf(),
        error,
    })
}

thread_local! {
    /// Set while [`catching`] runs, so that the panic hook stays silent for what it catches.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic. The tokenizers library panics on some damaged files instead of
/// failing (a BPE merge whose parts do not fit its vocabulary, found by the fuzzer); those must
/// be input errors, not crashes.
fn catching<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    CATCHING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    result
}

/// The text a panic was raised with; `panic!` payloads are a `&str` or a `String`.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "it panicked".to_string())
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
/// A failure is a [`TokenizerError`] inside an [`InputError`].
pub fn hash(path: &Path) -> Result<String, InputError> {
    let text = read(path).map_err(InputError::new)?;
    let v = decode(path, &text).map_err(InputError::new)?;
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
