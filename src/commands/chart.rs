//! `filtermon chart`: the report from a store, on demand.

use std::io::Write as _;

use crate::commands::cli::ChartArgs;
use crate::monitor::charts::{render, ChartOptions};
use crate::store::Store;

/// Runs the command.
pub fn run(args: &ChartArgs) -> anyhow::Result<()> {
    let store = Store::open_existing(&args.db)?;
    let opts = ChartOptions {
        x: args.x,
        log_x: args.log_x,
    };
    let index = render(&store, &args.out, &opts, None)?;
    writeln!(std::io::stdout(), "{}", index.display())?;
    Ok(())
}
