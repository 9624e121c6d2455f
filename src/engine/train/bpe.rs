//! Training a small byte-level BPE tokenizer (GPT-2 style, as Olmo's) with the `tokenizers`
//! crate, and turning documents into one training token stream.

use std::path::Path;

use anyhow::Context;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::error::input_error;

/// The end-of-text token; id 0, the `eos_token_id` of the demo configs.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Trains a byte-level BPE of `vocab_size` tokens (256 byte symbols, the end-of-text token and
/// merges) on `texts` and writes it to `out` as `tokenizer.json`.
pub fn train<I, S>(texts: I, vocab_size: usize, out: &Path) -> anyhow::Result<()>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    if vocab_size < 257 {
        return Err(input_error(format!(
            "a byte-level BPE needs at least 257 tokens, not {vocab_size}"
        )));
    }
    let eot = AddedToken::from(END_OF_TEXT, true);
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![eot.clone()])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_post_processor(Some(ByteLevel::default().trim_offsets(false)))
            .with_decoder(Some(ByteLevel::default()))
            .build()
            .map_err(|e| anyhow::anyhow!("building the tokenizer: {e}"))?;
    tok.train(&mut trainer, texts)
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    tok.add_special_tokens(&[eot]);
    tok.save(out, false)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    Ok(())
}

/// Every text's ids, each followed by the end-of-text id: the training stream.
pub fn token_stream<I, S>(tok: &Tokenizer, texts: I) -> anyhow::Result<Vec<u32>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let eot = tok
        .token_to_id(END_OF_TEXT)
        .with_context(|| format!("the tokenizer has no {END_OF_TEXT} token"))?;
    let mut ids = Vec::new();
    for text in texts {
        ids.extend(crate::evalset::tokenizer::encode(tok, text.as_ref())?);
        ids.push(eot);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evalset::corpus_gen::{Corpus, CorpusConfig, RepeatConfig};

    #[test]
    fn trained_tokenizer_round_trips_and_loads() -> anyhow::Result<()> {
        let corpus = Corpus::generate(&CorpusConfig {
            seed: 3,
            train_chars: 30_000,
            eval_chars: 2_000,
            repeats: RepeatConfig::default(),
        });
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokenizer.json");
        train(corpus.train.iter().map(|d| d.text.as_str()), 600, &path)?;
        let tok = crate::evalset::tokenizer::load(&path)?;
        assert_eq!(tok.token_to_id(END_OF_TEXT), Some(0));
        assert!(tok.get_vocab_size(true) <= 600 && tok.get_vocab_size(true) > 400);
        for d in &corpus.eval {
            let ids = crate::evalset::tokenizer::encode(&tok, &d.text)?;
            let back = tok
                .decode(&ids, false)
                .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
            assert_eq!(back, d.text);
        }
        let odd = "naïve café — ∑ {x} </p>\n\t";
        let ids = crate::evalset::tokenizer::encode(&tok, odd)?;
        assert_eq!(
            tok.decode(&ids, false)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            odd
        );
        let stream = token_stream(&tok, ["a b", "c"])?;
        assert_eq!(stream.iter().filter(|&&t| t == 0).count(), 2);
        Ok(())
    }
}
