//! One module per subcommand: argument handling and output around the library stages.
//!
//! Output goes to stdout through `writeln!` with its error returned, not `println!`, which
//! panics when the reader has gone (`filtermon export … | head`); `main` turns that error
//! into a quiet exit 0.

pub mod alerts;
pub mod bench;
pub mod chart;
pub mod cli;
pub mod compare;
pub mod demo;
pub mod export;
pub mod migrate;
pub mod parity;
pub mod prepare;
pub mod probe;
pub mod score;
pub mod serve;
pub mod status;
pub mod watch;
pub mod worker;
