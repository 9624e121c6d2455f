//! `filtermon watch`: the daemon, and the dashboard beside it when the config says `serve`.

use crate::commands::cli::{LogFormat, WatchArgs};
use crate::monitor::config::WatchConfig;
use crate::monitor::daemon::RunOptions;
use crate::monitor::serve::Server;
use crate::store::Store;

/// Runs the command; `log_format` is the daemon's, which its Slurm workers get too.
pub fn run(args: &WatchArgs, log_format: LogFormat) -> anyhow::Result<()> {
    let config = WatchConfig::load(&args.config)?;
    let server = match &config.serve {
        Some(settings) => {
            // The dashboard reads an existing store: create it before the daemon does.
            Store::open(&config.db)?;
            Some(Server::start(&config.db, settings.clone())?)
        }
        None => None,
    };
    let worker_args = match log_format {
        LogFormat::Human => Vec::new(),
        LogFormat::Json => vec!["--log-format".into(), "json".into()],
    };
    let watched = crate::monitor::daemon::run(&config, &RunOptions { worker_args });
    if let Some(server) = server {
        server.stop()?;
    }
    watched
}
