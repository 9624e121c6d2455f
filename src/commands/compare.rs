//! `filtermon compare`: score two checkpoints on one evalset and write the paired analysis.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::analysis::compare::derive::DerivedFilter;
use crate::analysis::compare::report::{self, EvalsetInfo, RunInfo, Side};
use crate::analysis::compare::{compare, derive, plots, CompareOptions, Comparison, PairedInput};
use crate::commands::cli::{CompareArgs, TagLevel};
use crate::engine::checkpoint::Checkpoint;
use crate::engine::device;
use crate::engine::scorer::{check_evalset_tokenizer, ScoreSettings, Scorer};
use crate::error::input_error;
use crate::evalset::categories::{CategorySet, Kind};
use crate::evalset::export::{write_category_map, write_labeled_dataset};
use crate::evalset::filter::{compile_filters, load_filter_file};
use crate::evalset::prepare::{tokenizer_file, TokenTexts};
use crate::evalset::scores::EvalScores;
use crate::evalset::tokenizer;
use crate::evalset::EvalSet;
use crate::store::losses::StoredScores;
use crate::store::{Location, Store};

/// Where the two score vectors come from, resolved.
struct Scored {
    es: EvalSet,
    a: EvalScores,
    b: EvalScores,
    /// The tokenizer both sides share (for token texts).
    tokenizer: PathBuf,
    /// What A and B are, for reports: folder paths or `RUN@STEP`.
    sources: (String, String),
    /// Default display names.
    names: (String, String),
}

/// Runs the command.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let Scored {
        es,
        a,
        b,
        tokenizer: tok_a,
        sources,
        names: default_names,
    } = match (&args.db, &args.checkpoint_a, &args.checkpoint_b) {
        (Some(db), _, _) => from_store(args, db)?,
        (None, Some(ca), Some(cb)) => from_checkpoints(args, ca, cb)?,
        _ => {
            return Err(input_error(
                "give two checkpoints, or --db with --a and --b",
            ))
        }
    };
    let user = match &args.filters {
        Some(p) => load_filter_file(p)?,
        None => Vec::new(),
    };
    let filters = compile_filters(&user, es.domains())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| input_error(format!("{}: cannot create: {e}", args.out.display())))?;
    let (a_name, b_name) = names(args, default_names);
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

    let derived = derive_filter(args, &c, &a_name, &b_name)?;

    let warnings = report::small_category_warnings(&c);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let side = |name: &str, source: &str| Side {
        name: name.to_owned(),
        source: source.to_owned(),
    };
    let (side_a, side_b) = (side(&a_name, &sources.0), side(&b_name, &sources.1));
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

    let mut out = std::io::stdout().lock();
    write!(out, "{}", report::decision_table(&c, &a_name, &b_name))?;
    if let Some((d, path)) = &derived {
        writeln!(
            out,
            "derived filter {} = \"{}\" in {}",
            d.name,
            d.expression,
            path.display()
        )?;
    }
    writeln!(
        out,
        "compared {a_name} (A) and {b_name} (B) on {} tokens of evalset {}; gap = A − B, > 0: B better; artifacts in {}",
        c.tokens,
        es.id(),
        args.out.display()
    )?;
    Ok(())
}

/// `--derive-filter K`: the filter of the K categories that most favour B, written beside the
/// other artifacts; `None` when not asked for or when no category favours B.
fn derive_filter(
    args: &CompareArgs,
    c: &Comparison,
    a_name: &str,
    b_name: &str,
) -> anyhow::Result<Option<(DerivedFilter, PathBuf)>> {
    let Some(k) = args.derive_filter else {
        return Ok(None);
    };
    let kind = match args.derive_level {
        TagLevel::Upos => Kind::Upos,
        TagLevel::Tag => Kind::Tag,
    };
    let Some(d) = derive::derive(c, usize::from(k), kind) else {
        tracing::warn!(
            "no {} category favours {b_name} with an interval above zero: no filter derived",
            kind.name()
        );
        return Ok(None);
    };
    let path = args.out.join("derived_filters.toml");
    std::fs::write(&path, derive::render(&d, c, a_name, b_name)?)
        .map_err(|e| input_error(format!("{}: {e}", path.display())))?;
    if d.picked.len() < usize::from(k) {
        tracing::warn!(
            "only {} {} categories favour {b_name} with an interval above zero; the filter uses those",
            d.picked.len(),
            kind.name()
        );
    }
    Ok(Some((d, path)))
}

/// Scores both checkpoints on the evalset, one model in memory at a time.
fn from_checkpoints(args: &CompareArgs, path_a: &Path, path_b: &Path) -> anyhow::Result<Scored> {
    let evalset = args
        .evalset
        .as_ref()
        .ok_or_else(|| input_error("--evalset DIR is needed to score checkpoints"))?;
    let mut scorer = Scorer::new(ScoreSettings {
        device: device::parse(&args.runtime.device)?,
        dtype: args.runtime.dtype.dtype(),
        batch: args.runtime.batch,
    });
    let es = EvalSet::open(evalset)?;
    let ckpt_a = Checkpoint::open(path_a)?;
    let ckpt_b = Checkpoint::open(path_b)?;
    let given = args.tokenizer.as_deref();
    // Both sides are checked before either is scored, so that a mismatch costs no scoring.
    let tok_a = check_evalset_tokenizer(&ckpt_a, &es, given)?;
    let tok_b = check_evalset_tokenizer(&ckpt_b, &es, given)?;
    let tokenizer = tok_a.or(tok_b).ok_or_else(|| {
        input_error(format!(
            "neither {} nor {} holds a tokenizer.json to show tokens with; pass --tokenizer",
            path_a.display(),
            path_b.display()
        ))
    })?;
    let mut score = |ckpt: &Checkpoint| -> anyhow::Result<EvalScores> {
        let (scores, speed) = scorer.score_checked_evalset(ckpt, &es)?;
        tracing::info!(
            checkpoint = %ckpt.dir.display(),
            tokens = speed.tokens,
            tokens_per_s = speed.tokens as f64 / speed.seconds.max(1e-9),
            "scored"
        );
        Ok(scores)
    };
    let (a, b) = (score(&ckpt_a)?, score(&ckpt_b)?);
    Ok(Scored {
        es,
        a,
        b,
        tokenizer,
        sources: (path_a.display().to_string(), path_b.display().to_string()),
        names: (folder_name(path_a), folder_name(path_b)),
    })
}

/// Reads both sides' per-token losses from a store, without scoring.
fn from_store(args: &CompareArgs, db: &Location) -> anyhow::Result<Scored> {
    let store = Store::open_existing(db)?;
    let wanted = args.evalset.as_deref().map(EvalSet::open).transpose()?;
    let hash = wanted.as_ref().map(|es| es.id().to_owned());
    let side = |spec: &Option<String>| -> anyhow::Result<(String, StoredScores)> {
        let spec = spec
            .as_deref()
            .ok_or_else(|| input_error("--db needs --a and --b"))?;
        let (run, which) = spec
            .split_once('@')
            .ok_or_else(|| input_error(format!("`{spec}`: expected RUN@STEP or RUN@CHECKPOINT")))?;
        Ok((
            spec.to_owned(),
            store.stored_scores(run, which, hash.as_deref())?,
        ))
    };
    let (spec_a, a) = side(&args.a)?;
    let (spec_b, b) = side(&args.b)?;
    if a.evalset_hash != b.evalset_hash {
        return Err(input_error(format!(
            "{spec_a} and {spec_b} were scored on different evalsets ({} and {}); pick one with --evalset",
            a.evalset_hash, b.evalset_hash
        )));
    }
    let es = match wanted {
        Some(es) => es,
        None => EvalSet::open(&a.evalset_dir)?,
    };
    // Scored already, so only the token texts need a tokenizer: the evalset's, as both sides'.
    let tok = tokenizer_file(&a.checkpoint)?;
    es.check_tokenizer(&tok)?;
    es.check_tokenizer(&tokenizer_file(&b.checkpoint)?)?;
    Ok(Scored {
        es,
        a: a.scores,
        b: b.scores,
        tokenizer: tok,
        sources: (spec_a.clone(), spec_b.clone()),
        names: (spec_a, spec_b),
    })
}

fn folder_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Display names: the flags, else the defaults (told apart when they coincide).
fn names(args: &CompareArgs, (a, b): (String, String)) -> (String, String) {
    let a = args.a_name.clone().unwrap_or(a);
    let b = args.b_name.clone().unwrap_or(b);
    if a == b {
        (format!("{a} (A)"), format!("{b} (B)"))
    } else {
        (a, b)
    }
}
