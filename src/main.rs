//! The `filtermon` binary: parse the command line, set up logging, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use filtermon::commands;
use filtermon::commands::cli::{Cli, Command, LogFormat};
use filtermon::error::{is_broken_pipe, is_input_error, one_line};

fn main() -> ExitCode {
    keep_freed_memory();
    filtermon::evalset::tokenizer::quiet_caught_panics();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The demo shows progress bars: its default is warnings only, so that the embedded
    // daemon's per-job lines do not bury them (RUST_LOG still decides when set).
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    let result = match &cli.command {
        Command::Prepare(a) => commands::prepare::run(a),
        Command::Probe(a) => commands::probe::run(a),
        Command::Score(a) => commands::score::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Parity(a) => commands::parity::run(a),
        Command::Tagger(c) => filtermon::evalset::tagger::cli::run_tagger(c),
        Command::Tag(a) => filtermon::evalset::tagger::cli::run_tag(a),
        Command::Watch(a) => commands::watch::run(a, cli.log_format),
        Command::Worker(a) => commands::worker::run(a),
        Command::Status(a) => commands::status::run(a),
        Command::Export(a) => commands::export::run(a),
        Command::Chart(a) => commands::chart::run(a),
        Command::Alerts(a) => commands::alerts::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Migrate(a) => commands::migrate::run(a),
        Command::Demo(a) => commands::demo::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout has gone (`filtermon export … | head`): it wanted no more, so
        // this is no failure, and `head` and the shell expect silence. Exit 0 rather than
        // restoring SIGPIPE's default (death by signal, status 141), which would also kill the
        // daemon when an alert hook exits without reading its stdin.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(if is_input_error(&e) { 2 } else { 1 })
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(filtermon::progress::LogWriter);
    match format {
        // Colour codes only where a terminal reads them, not in log files.
        LogFormat::Human => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// glibc's malloc serves each block above its adaptive mmap threshold from a fresh mapping and
/// hands freed heap tops back to the kernel, so every forward pass page-faulted most of its
/// tensors in again (measured: ~5% of CPU scoring time, and a higher peak RSS). Blocks up to
/// 64 MiB now come from the heap, and up to 256 MiB of freed heap is kept for reuse.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Other allocators keep their own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
