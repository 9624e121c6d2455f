//! Measures the demo pipeline's CPU costs: corpus generation, BPE training, encoding, and the
//! training throughput of the three twins. Run with
//! `cargo run --release --example train_throughput -- [BATCH] [SEQ] [STEPS] [HIDDEN] [VOCAB]`
//! (hidden a multiple of 32; 4 layers, SwiGLU 3× wide).

use std::sync::Arc;
use std::time::Instant;

use filtermon::engine::model::twins::{self, Twin, TwinShape};
use filtermon::engine::train::optim::AdamWConfig;
use filtermon::engine::train::schedule::Schedule;
use filtermon::engine::train::{bpe, Event, RunOutput, TrainConfig, Trainer};
use filtermon::evalset::corpus_gen::{Corpus, CorpusConfig, RepeatConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (batch, seq, steps) = (
        args.first().copied().unwrap_or(16),
        args.get(1).copied().unwrap_or(256),
        args.get(2).copied().unwrap_or(10),
    );
    let hidden = args.get(3).copied().unwrap_or(128);
    let vocab = args.get(4).copied().unwrap_or(4096);
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    let corpus = Corpus::generate(&CorpusConfig {
        seed: 1,
        train_chars: 4_000_000,
        eval_chars: 200_000,
        repeats: RepeatConfig::default(),
    });
    println!("corpus 4 MB: {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let tok_path = dir.path().join("tokenizer.json");
    bpe::train(
        corpus.train.iter().map(|d| d.text.as_str()),
        vocab,
        &tok_path,
    )?;
    println!("bpe {vocab}: {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let tok = filtermon::evalset::tokenizer::load(&tok_path)?;
    let stream = Arc::new(bpe::token_stream(
        &tok,
        corpus.train.iter().map(|d| d.text.as_str()),
    )?);
    println!(
        "encode: {:.2}s, {} tokens ({:.2} chars/token)",
        t.elapsed().as_secs_f64(),
        stream.len(),
        4_000_000.0 / stream.len() as f64
    );
    let shape = TwinShape {
        hidden_size: hidden,
        num_heads: hidden / 32,
        intermediate_size: 3 * hidden,
        ..TwinShape::demo(vocab, seq)
    };
    for twin in Twin::ALL {
        let cfg = TrainConfig {
            batch_size: batch,
            seq_len: seq,
            schedule: Schedule {
                peak_lr: 3e-3,
                warmup_steps: 5,
                total_steps: steps,
                checkpoint_every: steps,
                anneal_every: 0,
                anneal_steps: 0,
            },
            adamw: AdamWConfig::default(),
            seed: 1,
        };
        let out = RunOutput {
            dir: dir.path().join(twin.name()),
            tokenizer: tok_path.clone(),
        };
        let mut trainer = Trainer::new(twins::config(twin, &shape), Arc::clone(&stream), cfg, out)?;
        let t = Instant::now();
        let mut last = 0.0;
        trainer.run(&mut |e| {
            if let Event::Step { loss, .. } = e {
                last = *loss;
            }
        })?;
        println!(
            "{:12} params {:>9}  {:>8.0} tok/s  ({} steps of {}x{} in {:.1}s incl. checkpoint; loss {last:.3})",
            twin.name(),
            trainer.parameter_count(),
            trainer.tokens_per_sec(),
            steps,
            batch,
            seq,
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
