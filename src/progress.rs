//! Progress bars that share stderr with log lines.
//!
//! A command that shows several bars at once makes its [`MultiProgress`] the active display
//! ([`activate`]). Until the guard drops, log lines are written between redraws (indicatif's
//! `suspend`) and bars made elsewhere — the scoring bar of [`crate::engine::score`], drawn by the
//! daemon's worker thread — join that display instead of drawing over it.

use std::io::{self, Write};
use std::sync::RwLock;

use indicatif::{MultiProgress, ProgressBar};
use tracing_subscriber::fmt::MakeWriter;

static ACTIVE: RwLock<Option<MultiProgress>> = RwLock::new(None);

fn active() -> Option<MultiProgress> {
    // A poisoned lock only means a panic elsewhere; the slot itself is still valid.
    ACTIVE.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn set_active(multi: Option<MultiProgress>) {
    *ACTIVE.write().unwrap_or_else(|p| p.into_inner()) = multi;
}

/// Keeps a display active until dropped.
#[must_use = "the display is active only while the guard lives"]
pub struct Active(());

impl Drop for Active {
    fn drop(&mut self) {
        set_active(None);
    }
}

/// Makes `multi` the display of log lines and of bars made with [`attach`].
pub fn activate(multi: &MultiProgress) -> Active {
    set_active(Some(multi.clone()));
    Active(())
}

/// `bar` as a line of the active display, or on its own when none is active.
pub fn attach(bar: ProgressBar) -> ProgressBar {
    match active() {
        Some(multi) => multi.add(bar),
        None => bar,
    }
}

/// The log writer: stderr, with the active display cleared around each line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

/// One log line being written by [`LogWriter`].
#[derive(Debug)]
pub struct LogLine;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine
    }
}

impl Write for LogLine {
    /// The formatter hands over a whole event at once, so one event is one redraw.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match active() {
            Some(multi) => multi.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
