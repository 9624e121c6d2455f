//! `filtermon serve`: the live dashboard of a store, until SIGINT/SIGTERM.

use crate::commands::cli::ServeArgs;
use crate::monitor::serve::{ServeSettings, Server};

/// Runs the command.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = ServeSettings::new(args.addr, args.token.clone(), args.private)?;
    Server::start(&args.db, settings)?.serve_until_signal()
}
