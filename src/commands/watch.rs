//! `filtermon watch`: the daemon, and the dashboard beside it when the config says `serve`.

use crate::commands::cli::WatchArgs;
use crate::monitor::config::WatchConfig;
use crate::monitor::serve::Server;
use crate::store::Store;

/// Runs the command.
pub fn run(args: &WatchArgs) -> anyhow::Result<()> {
    let config = WatchConfig::load(&args.config)?;
    let server = match &config.serve {
        Some(settings) => {
            // The dashboard reads an existing store: create it before the daemon does.
            Store::open(&config.db)?;
            Some(Server::start(&config.db, settings.clone())?)
        }
        None => None,
    };
    let watched = crate::monitor::daemon::run(&config);
    if let Some(server) = server {
        server.stop()?;
    }
    watched
}
