//! `filtermon compare`: score two checkpoints on one evalset and write the paired analysis.

use std::path::Path;

use candle_core::Device;

use crate::checkpoint::Checkpoint;
use crate::cli::{CompareArgs, TagLevel};
use crate::compare::report::{self, EvalsetInfo, RunInfo, Side};
use crate::compare::{compare, derive, plots, CompareOptions, PairedInput};
use crate::error::input_error;
use crate::evalset::categories::{CategorySet, Kind};
use crate::evalset::export::{write_category_map, write_labeled_dataset};
use crate::evalset::filter::{compile_filters, load_filter_file};
use crate::evalset::prepare::TokenTexts;
use crate::evalset::EvalSet;
use crate::score::{score_evalset, EvalScores};
use crate::{device, tokenizer};

/// Runs the command.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let device = device::parse(&args.device)?;
    let es = EvalSet::open(&args.evalset)?;
    let ckpt_a = Checkpoint::open(&args.checkpoint_a)?;
    let ckpt_b = Checkpoint::open(&args.checkpoint_b)?;
    let (tok_a, tok_b) = (ckpt_a.tokenizer_path()?, ckpt_b.tokenizer_path()?);
    let (hash_a, hash_b) = (tokenizer::hash(&tok_a)?, tokenizer::hash(&tok_b)?);
    if hash_a != hash_b {
        return Err(input_error(format!(
            "the checkpoints' tokenizers differ ({} is {hash_a}, {} is {hash_b}): \
             their losses are over different token sequences",
            tok_a.display(),
            tok_b.display()
        )));
    }
    es.check_tokenizer(&tok_a)?;
    let user = match &args.filters {
        Some(p) => load_filter_file(p)?,
        None => Vec::new(),
    };
    let filters = compile_filters(&user, es.domains())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| input_error(format!("{}: cannot create: {e}", args.out.display())))?;

    let a = score(&ckpt_a, &es, args, &device)?;
    let b = score(&ckpt_b, &es, args, &device)?;

    let (a_name, b_name) = names(args);
    let labels = es.labels()?;
    let docs = es.token_docs();
    let input = PairedInput {
        labels: &labels,
        docs: &docs,
        doc_count: es.header().docs.len(),
        domains: es.domains(),
        filters: &filters,
    };
    let opts = CompareOptions {
        resamples: args.resamples,
        seed: args.seed,
    };
    let c = compare(&input, &a, &b, opts)?;

    let tok = tokenizer::load(&tok_a)?;
    let texts = TokenTexts::new(&tok);
    write_labeled_dataset(
        &es,
        &texts,
        &labels,
        Some((&a, &b)),
        &args.out.join("labeled_dataset.jsonl"),
    )?;
    let set = CategorySet::new(es.domains(), &filters);
    write_category_map(
        &es,
        &texts,
        &labels,
        &set,
        &args.out.join("token_category_map.csv"),
    )?;
    plots::draw(&c, &a_name, &b_name, &args.out.join("comparison_plots.png"))?;

    let derived = match args.derive_filter {
        Some(k) => {
            let kind = match args.derive_level {
                TagLevel::Upos => Kind::Upos,
                TagLevel::Tag => Kind::Tag,
            };
            match derive::derive(&c, usize::from(k), kind) {
                Some(d) => {
                    let path = args.out.join("derived_filters.toml");
                    std::fs::write(&path, derive::render(&d, &c, &a_name, &b_name)?)
                        .map_err(|e| input_error(format!("{}: {e}", path.display())))?;
                    if d.picked.len() < usize::from(k) {
                        tracing::warn!(
                            "only {} {} categories favour {b_name} with an interval above zero; the filter uses those",
                            d.picked.len(),
                            kind.name()
                        );
                    }
                    Some((d, path))
                }
                None => {
                    tracing::warn!(
                        "no {} category favours {b_name} with an interval above zero: no filter derived",
                        kind.name()
                    );
                    None
                }
            }
        }
        None => None,
    };

    let warnings = report::small_category_warnings(&c);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let side = |name: &str, p: &Path| Side {
        name: name.to_owned(),
        source: p.display().to_string(),
    };
    let (side_a, side_b) = (
        side(&a_name, &args.checkpoint_a),
        side(&b_name, &args.checkpoint_b),
    );
    let info = EvalsetInfo {
        id: es.id().to_owned(),
        dir: es.dir().display().to_string(),
        tokenizer_hash: es.tokenizer_hash().to_owned(),
    };
    report::write_metrics(
        &c,
        &RunInfo {
            a: &side_a,
            b: &side_b,
            evalset: &info,
            opts,
            derived: derived.as_ref().map(|(d, p)| (d, p.as_path())),
        },
        &args.out.join("metrics.json"),
    )?;

    print!("{}", report::decision_table(&c, &a_name, &b_name));
    if let Some((d, path)) = &derived {
        println!(
            "derived filter {} = \"{}\" in {}",
            d.name,
            d.expression,
            path.display()
        );
    }
    println!(
        "compared {a_name} (A) and {b_name} (B) on {} tokens of evalset {}; gap = A − B, > 0: B better; artifacts in {}",
        c.tokens,
        es.id(),
        args.out.display()
    );
    Ok(())
}

fn score(
    ckpt: &Checkpoint,
    es: &EvalSet,
    args: &CompareArgs,
    device: &Device,
) -> anyhow::Result<EvalScores> {
    // One model in memory at a time: it is dropped when this returns.
    let model = ckpt.load_model(args.dtype.dtype(), device)?;
    let (scores, speed) = score_evalset(&model, es, args.batch, device)?;
    tracing::info!(
        checkpoint = %ckpt.dir.display(),
        tokens = speed.tokens,
        tokens_per_s = speed.tokens as f64 / speed.seconds.max(1e-9),
        "scored"
    );
    Ok(scores)
}

/// Display names: the flags, else the folder names (told apart when they coincide).
fn names(args: &CompareArgs) -> (String, String) {
    let folder = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let a = args
        .a_name
        .clone()
        .unwrap_or_else(|| folder(&args.checkpoint_a));
    let b = args
        .b_name
        .clone()
        .unwrap_or_else(|| folder(&args.checkpoint_b));
    if a == b {
        (format!("{a} (A)"), format!("{b} (B)"))
    } else {
        (a, b)
    }
}
