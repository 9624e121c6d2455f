//! Error kinds that decide the process exit code.
//!
//! Anything the user can fix (a bad file, flag or config) is an [`InputError`]
//! somewhere in the `anyhow` chain and exits with code 2; everything else exits 1.
//!
//! Modules describe their failures with their own typed errors and wrap them with
//! [`InputError::new`] (or [`input_error_from`]) where the failure is the input's fault. This
//! module imports nothing from the crate, so it cannot name those types: the wrapped error is
//! kept whole and found again with [`InputError::downcast_ref`] or [`find`].

use std::error::Error;
use std::fmt;

/// A problem with the user's input: files, flags, configs, data.
#[derive(Debug)]
pub struct InputError(Reason);

#[derive(Debug)]
enum Reason {
    Message(String),
    Typed(Box<dyn Error + Send + Sync + 'static>),
}

impl InputError {
    /// An input error that is only a message.
    pub fn msg(msg: impl Into<String>) -> Self {
        Self(Reason::Message(msg.into()))
    }

    /// An input error that is a module's typed error; it reads exactly as `err` does.
    pub fn new<E: Error + Send + Sync + 'static>(err: E) -> Self {
        Self(Reason::Typed(Box::new(err)))
    }

    /// The typed error given to [`InputError::new`], if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        match &self.0 {
            Reason::Message(_) => None,
            Reason::Typed(e) => e.downcast_ref(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Reason::Message(m) => f.write_str(m),
            Reason::Typed(e) => e.fmt(f),
        }
    }
}

impl Error for InputError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.0 {
            Reason::Message(_) => None,
            // The wrapped error's own text is this one's, so the chain continues below it:
            // `one_line` would otherwise print that text twice.
            Reason::Typed(e) => e.source(),
        }
    }
}

/// Builds an `anyhow::Error` that exits with code 2.
pub fn input_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError::msg(msg))
}

/// Builds an `anyhow::Error` that exits with code 2 from a module's typed error.
pub fn input_error_from<E: Error + Send + Sync + 'static>(err: E) -> anyhow::Error {
    anyhow::Error::new(InputError::new(err))
}

/// The first `E` in the chain, whether it stands there itself or inside an [`InputError`].
pub fn find<E: Error + 'static>(err: &anyhow::Error) -> Option<&E> {
    err.chain().find_map(|e| {
        e.downcast_ref::<E>()
            .or_else(|| e.downcast_ref::<InputError>()?.downcast_ref())
    })
}

/// Returns early with an [`InputError`], formatted like `format!`.
#[macro_export]
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err($crate::error::input_error(format!($($arg)*)))
    };
}

/// True when any error in the chain is an [`InputError`].
pub fn is_input_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<InputError>().is_some())
}

/// The whole chain on one line: `outer: inner: root`.
pub fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err
        .chain()
        .map(|e| e.to_string().replace('\n', " "))
        .collect();
    parts.join(": ")
}

/// The 1-based line of byte `offset` in `text`, for `file:line: key: …` errors.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// True when the error comes from writing to a pipe whose reader has gone, e.g. stdout under
/// `filtermon export … | head`.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        let kind = e
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            // serde_json keeps the io::Error of a failed write out of the chain.
            .or_else(|| e.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Typed {
        #[error("{file}: bad")]
        Bad { file: String },
        #[error("{file}: cannot read")]
        Read {
            file: String,
            #[source]
            error: std::io::Error,
        },
    }

    #[test]
    fn a_typed_error_exits_2_reads_once_and_stays_reachable() {
        let e = input_error_from(Typed::Bad {
            file: "a.bin".into(),
        })
        .context("opening");
        assert!(is_input_error(&e));
        assert_eq!(one_line(&e), "opening: a.bin: bad");
        assert!(matches!(find::<Typed>(&e), Some(Typed::Bad { file }) if file == "a.bin"));
        assert!(find::<std::io::Error>(&e).is_none());

        let io = std::io::Error::other("disk gone");
        let e = input_error_from(Typed::Read {
            file: "b.bin".into(),
            error: io,
        });
        assert_eq!(one_line(&e), "b.bin: cannot read: disk gone");
        assert!(find::<std::io::Error>(&e).is_some());
    }

    #[test]
    fn messages_and_other_errors_keep_their_exit_codes() {
        let e = input_error("bad flag");
        assert!(is_input_error(&e));
        assert!(find::<Typed>(&e).is_none());
        assert_eq!(one_line(&e), "bad flag");
        assert!(!is_input_error(&anyhow::anyhow!("bug")));
    }
}
