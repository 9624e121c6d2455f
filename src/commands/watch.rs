//! `filtermon watch`: the daemon.

use crate::cli::WatchArgs;
use crate::config::WatchConfig;

/// Runs the command.
pub fn run(args: &WatchArgs) -> anyhow::Result<()> {
    let config = WatchConfig::load(&args.config)?;
    crate::daemon::run(&config)
}
