//! `filtermon demo`: four tiny runs trained and monitored live (see [`crate::demo`]).

use crate::commands::cli::DemoArgs;
use crate::demo::{self, Plan};

/// Runs the command.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    // Training (this thread) and scoring (the daemon's worker) should get one core each: candle
    // sizes its thread pools from RAYON_NUM_THREADS when they are first used, and two pools of
    // spinning workers on two shared cores halve throughput. Nothing has computed yet and no
    // other thread runs, so setting it here reaches every pool.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    demo::run(&args.out, &plan, args.force, args.serve)
}
