//! `prepare` throughput on about 1M tokens on one core:
//! `cargo bench --bench prepare` (goal: under 30 s).
//!
//! The corpus is the shipped `data/eval` sources repeated until 1M tokens; the reference
//! figure printed beside it is raw tokenization alone, measured in the same run.

use std::path::Path;
use std::time::Instant;

use filtermon::evalset::prepare::{prepare, PrepareOptions};
use filtermon::evalset::reader::{CorpusReader, ReaderOptions};

const TARGET_TOKENS: usize = 1_000_000;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tok_path = root.join("tests/fixtures/tokenizer.json");
    let tok = filtermon::evalset::tokenizer::load(&tok_path)?;
    let docs: Vec<_> = CorpusReader::open(&[root.join("data/eval")], ReaderOptions::default())?
        .collect::<Result<_, _>>()?;
    let tmp = tempfile::tempdir()?;
    let corpus = tmp.path().join("corpus.jsonl");
    let mut lines = String::new();
    let (mut tokens, mut copy) = (0usize, 0usize);
    while tokens < TARGET_TOKENS {
        for d in &docs {
            tokens += filtermon::evalset::tokenizer::encode(&tok, &d.text)?.len();
            let line = serde_json::json!({"id": format!("{}#{copy}", d.id), "domain": d.domain, "text": d.text});
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        copy += 1;
    }
    std::fs::write(&corpus, &lines)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let start = Instant::now();
    for d in &docs {
        for _ in 0..copy {
            filtermon::evalset::tokenizer::encode(&tok, &d.text)?;
        }
    }
    let tokenize_only = start.elapsed().as_secs_f64();
    let opts = PrepareOptions {
        inputs: vec![corpus],
        tokenizer: tok_path,
        out: tmp.path().join("es"),
        window: 2048,
        reader: ReaderOptions::default(),
    };
    let start = Instant::now();
    let prepared = pool.install(|| prepare(&opts))?;
    let secs = start.elapsed().as_secs_f64();
    let n = prepared.evalset.len();
    println!(
        "prepare: {n} tokens in {secs:.2} s on one core ({:.0} tokens/s); tokenization alone {tokenize_only:.2} s; ratio {:.1}x",
        n as f64 / secs,
        secs / tokenize_only
    );
    Ok(())
}
