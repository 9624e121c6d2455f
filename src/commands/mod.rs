//! One module per subcommand: argument handling and output around the library stages.

pub mod alerts;
pub mod bench;
pub mod chart;
pub mod compare;
pub mod demo;
pub mod export;
pub mod parity;
pub mod prepare;
pub mod probe;
pub mod score;
pub mod status;
pub mod watch;
