//! `filtermon serve`: the live dashboard of a store, until SIGINT/SIGTERM.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::Context;

use crate::commands::cli::ServeArgs;
use crate::monitor::serve::{ServeSettings, Server};

/// Runs the command.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = ServeSettings::new(args.addr, args.token.clone(), args.private)?;
    let server = Server::start(&args.db, settings)?;
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    // Either a signal or the server ending on its own (an error) ends the command.
    while !server.is_finished() {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    server.stop()
}
