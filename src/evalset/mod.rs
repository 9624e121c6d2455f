//! Evaluation sets: documents cut into windows, every token labeled (DESIGN §5).

pub mod filter;
pub mod labels;
pub mod reader;
