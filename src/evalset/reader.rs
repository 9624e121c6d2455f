//! Streaming corpus readers: files and folders of documents, each with a domain.
//!
//! # Inputs
//!
//! * `.jsonl`, `.jsonl.gz` (one or more gzip members), `.jsonl.zst`: one JSON object
//!   per line, read line by line (a file is never held in memory whole). The text,
//!   id and domain fields are configurable ([`ReaderOptions`]). A document without an
//!   id (absent or `null`) is named `STEM:LINE`, where `STEM` is the file name
//!   without its `.jsonl…` suffix and `LINE` is 1-based; an integer id is used as
//!   its decimal text. Without a domain the document gets
//!   [`ReaderOptions::default_domain`], or `default`. Blank lines are skipped.
//! * `.txt`: one document per file, whose domain is
//!   [`ReaderOptions::default_domain`] when given, else the name of the folder the
//!   file is in. Its id is its path relative to the folder that was walked, without
//!   `.txt` (`prose/harbor`), or the file stem when the file was named directly.
//! * Folders: walked recursively; every supported file, in sorted path order.
//!   Other files and names starting with `.` are ignored.
//!
//! # Errors
//!
//! A malformed JSONL line (invalid UTF-8 or JSON, not an object, a text field that
//! is missing or not a string, an id or domain of the wrong type) or a `.txt` file
//! that is not UTF-8 is a [`BadDocument`] inside an [`InputError`](crate::error::InputError),
//! reading `FILE:LINE: reason` — unless [`ReaderOptions::skip_bad`] is set, in which case it
//! is counted ([`CorpusReader::skipped`]), its reason kept
//! ([`CorpusReader::skip_reasons`], the first [`MAX_SKIP_REASONS`]), and reading
//! goes on. Errors that stop reading (a file that cannot be opened, a read or
//! decompression failure) are yielded once; the iterator then ends.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::Value;

use crate::error::{input_error, input_error_from};

/// A malformed document: a JSONL line or a `.txt` file.
#[derive(Debug, thiserror::Error)]
pub enum BadDocument {
    /// A JSONL line that is not a document.
    #[error("{}:{line}: {error}", path.display())]
    Line {
        /// The JSONL file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong with it.
        error: LineError,
    },
    /// A `.txt` file that is not UTF-8.
    #[error("{}: not valid UTF-8 (byte {byte})", path.display())]
    TextNotUtf8 {
        /// The file.
        path: PathBuf,
        /// Offset of the first byte that is not.
        byte: usize,
    },
}

/// Why a JSONL line is not a document.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line's bytes are not UTF-8.
    #[error("not valid UTF-8 (byte {byte})")]
    NotUtf8 {
        /// Offset in the line of the first byte that is not.
        byte: usize,
    },
    /// The line is not JSON.
    #[error("invalid JSON: {error}")]
    InvalidJson {
        /// What decoding it gave.
        error: serde_json::Error,
    },
    /// The line is JSON, but not an object.
    #[error("expected a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found, with its article.
        found: &'static str,
    },
    /// No text field, or a `null` one.
    #[error("missing text field `{field}`")]
    MissingText {
        /// The name of the text field.
        field: String,
    },
    /// A text field that is not a string.
    #[error("text field `{field}` is {found}, not a string")]
    TextNotString {
        /// The name of the text field.
        field: String,
        /// The JSON type found, with its article.
        found: &'static str,
    },
    /// An id that is neither a string nor an integer.
    #[error("id field `{field}` is {found}, not a string")]
    IdNotString {
        /// The name of the id field.
        field: String,
        /// The JSON type found, with its article.
        found: &'static str,
    },
    /// A domain that is not a string.
    #[error("domain field `{field}` is {found}, not a string")]
    DomainNotString {
        /// The name of the domain field.
        field: String,
        /// The JSON type found, with its article.
        found: &'static str,
    },
}

/// How many skip reasons a reader keeps.
pub const MAX_SKIP_REASONS: usize = 10;

/// Deepest folder nesting walked; guards against symlink cycles.
const MAX_DEPTH: usize = 64;

/// One document of a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Unique name within the corpus (see the module docs for defaults).
    pub id: String,
    /// The domain the document belongs to (`prose`, `python`, ...).
    pub domain: String,
    /// The document's text.
    pub text: String,
}

/// How to read a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// JSONL field holding the text (default `text`).
    pub text_field: String,
    /// JSONL field holding the document id (default `id`).
    pub id_field: String,
    /// JSONL field holding the domain (default `domain`).
    pub domain_field: String,
    /// Domain for JSONL lines without one and for every `.txt` file.
    pub default_domain: Option<String>,
    /// Count and skip malformed lines and files instead of failing.
    pub skip_bad: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            text_field: "text".into(),
            id_field: "id".into(),
            domain_field: "domain".into(),
            default_domain: None,
            skip_bad: false,
        }
    }
}

/// File kinds the reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.jsonl`
    Jsonl,
    /// `.jsonl.gz`
    JsonlGz,
    /// `.jsonl.zst`
    JsonlZst,
    /// `.txt`
    Text,
}

impl Format {
    /// The format of a file, from its name; `None` when unsupported.
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        Self::SUFFIXES
            .iter()
            .find(|(s, _)| name.ends_with(s) && name.len() > s.len())
            .map(|(_, f)| *f)
    }

    const SUFFIXES: [(&'static str, Format); 4] = [
        (".jsonl", Format::Jsonl),
        (".jsonl.gz", Format::JsonlGz),
        (".jsonl.zst", Format::JsonlZst),
        (".txt", Format::Text),
    ];

    fn suffix_len(self) -> usize {
        Self::SUFFIXES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or(0, |(s, _)| s.len())
    }
}

/// A file to read, with the name `.txt` documents get.
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    format: Format,
    /// For `.txt`: the document id.
    text_id: String,
}

/// An open JSONL stream.
struct JsonlStream {
    path: PathBuf,
    stem: String,
    reader: Box<dyn BufRead>,
    line: usize,
    buf: Vec<u8>,
}

/// Iterator over the documents of files and folders; see the module docs.
pub struct CorpusReader {
    sources: VecDeque<Source>,
    current: Option<JsonlStream>,
    opts: ReaderOptions,
    skipped: usize,
    reasons: Vec<String>,
    done: bool,
}

impl CorpusReader {
    /// Lists the files under `paths` (files or folders, in the given order); reads
    /// nothing yet.
    ///
    /// # Errors
    ///
    /// [`InputError`](crate::error::InputError)s for a missing path, a file named
    /// directly whose type is unsupported, or a folder holding no supported file.
    pub fn open<P: AsRef<Path>>(paths: &[P], opts: ReaderOptions) -> Result<Self> {
        let mut sources = VecDeque::new();
        for p in paths {
            let p = p.as_ref();
            let meta = std::fs::metadata(p)
                .map_err(|e| input_error(format!("{}: cannot open: {e}", p.display())))?;
            if meta.is_dir() {
                let mut files = Vec::new();
                walk(p, 0, &mut files)?;
                files.sort_by(|a, b| a.0.cmp(&b.0));
                if files.is_empty() {
                    crate::bail_input!(
                        "{}: no .jsonl, .jsonl.gz, .jsonl.zst or .txt files in this folder",
                        p.display()
                    );
                }
                for (path, format) in files {
                    let text_id = relative_id(p, &path, format);
                    sources.push_back(Source {
                        path,
                        format,
                        text_id,
                    });
                }
            } else {
                let Some(format) = Format::of(p) else {
                    crate::bail_input!(
                        "{}: unsupported file type (expected .jsonl, .jsonl.gz, .jsonl.zst or .txt)",
                        p.display()
                    );
                };
                let text_id = stem(p, format);
                sources.push_back(Source {
                    path: p.to_path_buf(),
                    format,
                    text_id,
                });
            }
        }
        Ok(CorpusReader {
            sources,
            current: None,
            opts,
            skipped: 0,
            reasons: Vec::new(),
            done: false,
        })
    }

    /// The files still to be read (all of them before the first `next`).
    pub fn pending_files(&self) -> impl Iterator<Item = &Path> {
        self.sources.iter().map(|s| s.path.as_path())
    }

    /// Malformed lines or files skipped so far (with [`ReaderOptions::skip_bad`]).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The reasons for the first [`MAX_SKIP_REASONS`] skips, as `FILE:LINE: reason`.
    pub fn skip_reasons(&self) -> &[String] {
        &self.reasons
    }

    /// A malformed input: an error, or a skip when `skip_bad`. `None` means "skipped".
    fn bad(&mut self, err: BadDocument) -> Option<Result<Document>> {
        if self.opts.skip_bad {
            self.skipped += 1;
            if self.reasons.len() < MAX_SKIP_REASONS {
                self.reasons.push(err.to_string());
            }
            None
        } else {
            self.done = true;
            Some(Err(input_error_from(err)))
        }
    }

    fn fatal(&mut self, err: anyhow::Error) -> Option<Result<Document>> {
        Some(self.fatal_item(err))
    }

    /// Ends reading: the error is the last item.
    fn fatal_item(&mut self, err: anyhow::Error) -> Result<Document> {
        self.done = true;
        self.current = None;
        Err(err)
    }

    fn read_text_file(&mut self, src: Source) -> Option<Result<Document>> {
        let bytes = match std::fs::read(&src.path) {
            Ok(b) => b,
            Err(e) => {
                return self.fatal(input_error(format!(
                    "{}: cannot read: {e}",
                    src.path.display()
                )))
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                return self.bad(BadDocument::TextNotUtf8 {
                    path: src.path,
                    byte: e.utf8_error().valid_up_to(),
                });
            }
        };
        let domain = self.opts.default_domain.clone().unwrap_or_else(|| {
            src.path
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .unwrap_or("default")
                .to_string()
        });
        Some(Ok(Document {
            id: src.text_id,
            domain,
            text: strip_bom(text),
        }))
    }

    fn open_jsonl(&mut self, src: &Source) -> Result<JsonlStream> {
        let file = File::open(&src.path)
            .map_err(|e| input_error(format!("{}: cannot open: {e}", src.path.display())))?;
        let raw: Box<dyn Read> = match src.format {
            Format::JsonlGz => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
            Format::JsonlZst => Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| {
                input_error(format!(
                    "{}: cannot start zstd decoding: {e}",
                    src.path.display()
                ))
            })?),
            _ => Box::new(file),
        };
        Ok(JsonlStream {
            path: src.path.clone(),
            stem: stem(&src.path, src.format),
            reader: Box::new(BufReader::with_capacity(1 << 16, raw)),
            line: 0,
            buf: Vec::new(),
        })
    }

    /// Reads the open JSONL stream up to its next document, skip or end.
    fn next_jsonl_line(&mut self) -> Step {
        let Some(stream) = self.current.as_mut() else {
            return Step::EndOfFile;
        };
        loop {
            stream.buf.clear();
            stream.line += 1;
            match stream.reader.read_until(b'\n', &mut stream.buf) {
                Ok(0) => {
                    self.current = None;
                    return Step::EndOfFile;
                }
                Ok(_) => {}
                Err(e) => {
                    let msg = format!("{}:{}: read error: {e}", stream.path.display(), stream.line);
                    return Step::Item(self.fatal_item(input_error(msg)));
                }
            }
            let mut line: &[u8] = &stream.buf;
            if stream.line == 1 {
                line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return match parse_line(line, &self.opts, &stream.stem, stream.line) {
                Ok(doc) => Step::Item(Ok(doc)),
                Err(error) => {
                    let err = BadDocument::Line {
                        path: stream.path.clone(),
                        line: stream.line,
                        error,
                    };
                    match self.bad(err) {
                        Some(err) => Step::Item(err),
                        None => Step::Skipped,
                    }
                }
            };
        }
    }
}

/// What one read of a JSONL stream produced.
enum Step {
    Item(Result<Document>),
    Skipped,
    EndOfFile,
}

impl Iterator for CorpusReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.current.is_some() {
                match self.next_jsonl_line() {
                    Step::Item(item) => return Some(item),
                    Step::Skipped | Step::EndOfFile => continue,
                }
            }
            let src = self.sources.pop_front()?;
            if src.format == Format::Text {
                match self.read_text_file(src) {
                    Some(item) => return Some(item),
                    None => continue,
                }
            }
            match self.open_jsonl(&src) {
                Ok(stream) => self.current = Some(stream),
                Err(e) => return self.fatal(e),
            }
        }
    }
}

/// Parses one non-blank JSONL line; the caller adds the file and line to the error.
fn parse_line(
    line: &[u8],
    opts: &ReaderOptions,
    stem: &str,
    line_no: usize,
) -> std::result::Result<Document, LineError> {
    let line = std::str::from_utf8(line).map_err(|e| LineError::NotUtf8 {
        byte: e.valid_up_to(),
    })?;
    let value: Value =
        serde_json::from_str(line).map_err(|error| LineError::InvalidJson { error })?;
    let Value::Object(mut obj) = value else {
        return Err(LineError::NotAnObject {
            found: json_type(&value),
        });
    };
    let text = match obj.remove(&opts.text_field) {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return Err(LineError::MissingText {
                field: opts.text_field.clone(),
            })
        }
        Some(other) => {
            return Err(LineError::TextNotString {
                field: opts.text_field.clone(),
                found: json_type(&other),
            })
        }
    };
    let id = match obj.remove(&opts.id_field) {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        None | Some(Value::Null) => format!("{stem}:{line_no}"),
        Some(other) => {
            return Err(LineError::IdNotString {
                field: opts.id_field.clone(),
                found: json_type(&other),
            })
        }
    };
    let domain = match obj.remove(&opts.domain_field) {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => opts
            .default_domain
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        Some(other) => {
            return Err(LineError::DomainNotString {
                field: opts.domain_field.clone(),
                found: json_type(&other),
            })
        }
    };
    Ok(Document { id, domain, text })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Format)>) -> Result<()> {
    if depth > MAX_DEPTH {
        crate::bail_input!(
            "{}: folders nested deeper than {MAX_DEPTH} (a symlink cycle?)",
            dir.display()
        );
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| input_error(format!("{}: cannot list: {e}", dir.display())))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| input_error(format!("{}: cannot list: {e}", dir.display())))?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follows symlinks, so linked data folders are read too.
        let meta = std::fs::metadata(&path)
            .map_err(|e| input_error(format!("{}: cannot open: {e}", path.display())))?;
        if meta.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if let Some(format) = Format::of(&path) {
            out.push((path, format));
        }
    }
    Ok(())
}

/// The file name without its format suffix.
fn stem(path: &Path, format: Format) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let keep = name.len().saturating_sub(format.suffix_len());
    // Suffixes are ASCII, so `keep` falls on a character boundary.
    name.get(..keep).unwrap_or(&name).to_string()
}

/// `root/a/b.txt` → `a/b`, with `/` separators on every platform.
fn relative_id(root: &Path, path: &Path, format: Format) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = stem(Path::new(last.as_str()), format);
    }
    parts.join("/")
}

fn strip_bom(text: String) -> String {
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}
