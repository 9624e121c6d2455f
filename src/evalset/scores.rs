//! Per-token scores laid over an evalset's tokens: what the engine produces and every later
//! stage reads.

/// Scores of every token of an evalset, by global token index. Position-0 tokens have no
/// prefix: their loss is NaN and they are never counted.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalScores {
    /// NLL in nats.
    pub loss: Vec<f32>,
    /// Argmax hit.
    pub top1: Vec<bool>,
    /// Top-5 hit.
    pub top5: Vec<bool>,
}
