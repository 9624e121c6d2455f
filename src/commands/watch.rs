//! `filtermon watch`: the daemon.

use crate::commands::cli::WatchArgs;
use crate::monitor::config::WatchConfig;

/// Runs the command.
pub fn run(args: &WatchArgs) -> anyhow::Result<()> {
    let config = WatchConfig::load(&args.config)?;
    crate::monitor::daemon::run(&config)
}
