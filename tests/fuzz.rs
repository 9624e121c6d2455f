//! Mutation fuzzing of every parser that reads files other programs wrote: the pickled
//! OLMo-core `.metadata`, `.distcp` blobs, safetensors headers, watch configs, filter
//! expressions, JSONL documents and `tokenizer.json`.
//!
//! cargo-fuzz needs a nightly toolchain, so this is a small engine of its own: seeded
//! (deterministic) random mutations of the real fixture files — bit flips, interesting bytes,
//! truncation, chunk duplication and insertion, dictionary tokens, and length fields
//! overwritten with huge values. Every input must return (an error is fine) without a panic,
//! within a time bound, and without one allocation above a cap: a huge length field must be
//! checked against the data before anything is sized by it. A few mutated inputs per parser
//! also go through the real binary, which must exit 2 with a one-line error.
//!
//! The normal test run fuzzes a few thousand inputs per parser; `FILTERMON_FUZZ_SECS=N` runs
//! each target for N seconds instead and prints its counts (`scripts/fuzz.sh`). Inputs that
//! once failed live in `tests/fuzz_regressions/<target>/` and are replayed first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use filtermon::engine::checkpoint::olmo_core::distcp::{BLOB_CLASSES, METADATA_CLASSES};
use filtermon::engine::checkpoint::olmo_core::pickle;
use filtermon::engine::checkpoint::Checkpoint;
use filtermon::evalset::filter::{builtin_filters, Filter};
use filtermon::evalset::reader::{CorpusReader, ReaderOptions};
use filtermon::monitor::config::WatchConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------------
// Allocation cap: the fixtures are kilobytes, so any single allocation above this comes from a
// length read out of the input. Unwinding out of an allocator is not allowed, so the only
// possible report is a message and an abort; the message names the file holding the input.

const ALLOC_CAP: usize = 1 << 30;

struct CappedAlloc;

thread_local! {
    /// Index into `TARGETS` of the target this thread fuzzes; `usize::MAX` elsewhere.
    static CURRENT: Cell<usize> = const { Cell::new(usize::MAX) };
}

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_size(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_size(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// Aborts on an allocation above the cap, naming the target; written without allocating.
fn check_size(size: usize) {
    if size <= ALLOC_CAP {
        return;
    }
    let target = CURRENT.with(Cell::get);
    let mut err = std::io::stderr();
    let _ = err.write_all(b"\nfuzz: allocation above the cap, input in target/fuzz-current/");
    let _ = err.write_all(
        TARGETS
            .get(target)
            .map_or("(unknown)", |t| t.name)
            .as_bytes(),
    );
    let _ = err.write_all(b".bin\n");
    std::process::abort();
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// Values that tend to sit on boundaries.
const INTERESTING: [u8; 6] = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];

/// Little-endian lengths that no fixture file can satisfy.
const HUGE: [u64; 6] = [
    u64::MAX,
    u64::MAX / 2,
    1 << 40,
    u32::MAX as u64,
    i64::MAX as u64 + 1,
    (1 << 31) - 1,
];

/// One input, mutated 1–4 times from a seed.
fn mutate(rng: &mut StdRng, seed: &[u8], target: &Target) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        mutate_once(rng, &mut d, target);
    }
    d
}

fn mutate_once(rng: &mut StdRng, d: &mut Vec<u8>, target: &Target) {
    let len = d.len();
    match rng.random_range(0..9) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            d[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            d[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        2 if len > 0 => {
            let i = rng.random_range(0..len);
            d[i] = rng.random();
        }
        3 => d.truncate(rng.random_range(0..=len)),
        4 if len > 0 => {
            // Duplicate a chunk somewhere else.
            let a = rng.random_range(0..len);
            let b = rng.random_range(a..=len.min(a + 64));
            let chunk = d[a..b].to_vec();
            let at = rng.random_range(0..=len);
            d.splice(at..at, chunk);
        }
        5 => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..=16);
            let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            d.splice(at..at, junk);
        }
        6 if !target.dict.is_empty() => {
            let tok = target.dict[rng.random_range(0..target.dict.len())].as_bytes();
            let at = rng.random_range(0..=len);
            if rng.random_bool(0.5) || len == 0 {
                d.splice(at..at, tok.iter().copied());
            } else {
                let end = (at + tok.len()).min(len);
                d.splice(at..end, tok.iter().copied());
            }
        }
        7 => overwrite_length(rng, d, target),
        _ if len > 1 => {
            // Remove a chunk.
            let a = rng.random_range(0..len);
            let b = rng.random_range(a..=len.min(a + 32));
            d.drain(a..b);
        }
        _ => d.push(rng.random()),
    }
}

/// Puts a huge value where a length field is, or may be: the positions the target knows of,
/// else anywhere.
fn overwrite_length(rng: &mut StdRng, d: &mut [u8], target: &Target) {
    let fields = (target.length_fields)(d);
    let (at, width) = match fields.len() {
        0 if d.is_empty() => return,
        0 => (rng.random_range(0..d.len()), [4, 8][rng.random_range(0..2)]),
        n => fields[rng.random_range(0..n)],
    };
    let v = HUGE[rng.random_range(0..HUGE.len())].to_le_bytes();
    let end = (at + width).min(d.len());
    d[at..end].copy_from_slice(&v[..end - at]);
}

fn no_fields(_: &[u8]) -> Vec<(usize, usize)> {
    Vec::new()
}

/// The 8-byte header length of a safetensors file.
fn safetensors_fields(_: &[u8]) -> Vec<(usize, usize)> {
    vec![(0, 8)]
}

/// Length operands of BINUNICODE (`X`), BINBYTES (`B`), BINUNICODE8 (0x8d), FRAME (0x95) and
/// BININT (`J`, the `length`/`offset` ints of storage entries). A byte that only looks like
/// one of them is fine: the field is overwritten all the same.
fn pickle_fields(d: &[u8]) -> Vec<(usize, usize)> {
    d.iter()
        .enumerate()
        .filter_map(|(i, &b)| match b {
            b'X' | b'B' | b'J' => Some((i + 1, 4)),
            0x8d | 0x95 => Some((i + 1, 8)),
            _ => None,
        })
        .filter(|&(at, w)| at + w <= d.len())
        .collect()
}

/// The size and offset fields of a zip archive (every `.distcp` chunk is one), plus the
/// pickle's.
fn distcp_fields(d: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for i in 0..d.len().saturating_sub(4) {
        match &d[i..i + 4] {
            // Local header: compressed and uncompressed size.
            b"PK\x03\x04" => out.extend([(i + 18, 4), (i + 22, 4), (i + 26, 2), (i + 28, 2)]),
            // Central directory: sizes and the local header offset.
            b"PK\x01\x02" => out.extend([(i + 20, 4), (i + 24, 4), (i + 42, 4), (i + 28, 2)]),
            // End of central directory: its size and offset.
            b"PK\x05\x06" => out.extend([(i + 12, 4), (i + 16, 4), (i + 10, 2)]),
            _ => {}
        }
    }
    out.extend(pickle_fields(d));
    out.retain(|&(at, w)| at + w <= d.len());
    out
}

// ---------------------------------------------------------------------------------------------
// Targets.

/// What one call of a parser did.
enum Outcome {
    Ok,
    Err,
}

type Run = fn(&Workspace, &[u8]) -> Outcome;

struct Target {
    name: &'static str,
    /// Seed files (repository-relative), or inline seeds.
    seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens worth splicing in (grammar words of text formats).
    dict: &'static [&'static str],
    length_fields: fn(&[u8]) -> Vec<(usize, usize)>,
    /// Prepares the target's scratch folder once per worker.
    setup: fn(&Path),
    run: Run,
    /// Inputs in the normal test run.
    short_count: usize,
}

struct Workspace {
    dir: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Replaces a file's contents. Truncating to zero and rewriting makes the file system flush the
/// file on close (milliseconds each); writing over it and setting its length does not.
fn overwrite(path: &Path, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open input file");
    f.write_all(data).expect("write input");
    f.set_len(data.len() as u64).expect("set input length");
}

fn outcome<T, E>(r: Result<T, E>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(_) => Outcome::Err,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("scratch folder");
    for e in std::fs::read_dir(from).expect("fixture folder").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_tree(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy fixture");
        }
    }
}

const OLMO_CORE: &str = "tests/fixtures/olmo_core";
/// The classes either kind of pickle may name.
fn dcp_classes() -> Vec<&'static str> {
    METADATA_CLASSES
        .iter()
        .chain(BLOB_CLASSES)
        .copied()
        .collect()
}

fn pickle_seeds() -> Vec<Vec<u8>> {
    let mut s: Vec<Vec<u8>> = ["transformer", "hybrid", "gdn"]
        .iter()
        .map(|m| {
            read(&format!(
                "{OLMO_CORE}/{m}/step100/model_and_optim/.metadata"
            ))
        })
        .collect();
    s.push(read(&format!("{OLMO_CORE}/broken/missing_chunk.metadata")));
    // The `data.pkl` of the last archive in each `.distcp` file.
    for f in DISTCP_FILES {
        let blob = read(&format!(
            "{OLMO_CORE}/transformer/step100/model_and_optim/{f}"
        ));
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(blob)).expect("a zip archive");
        let name = zip
            .file_names()
            .filter_map(Result::ok)
            .find(|n| n.ends_with("/data.pkl"))
            .map(|n| n.into_owned())
            .expect("data.pkl");
        let mut pkl = Vec::new();
        std::io::Read::read_to_end(&mut zip.by_name(&name).expect("data.pkl"), &mut pkl)
            .expect("read data.pkl");
        s.push(pkl);
    }
    s
}

fn run_pickle(_: &Workspace, data: &[u8]) -> Outcome {
    outcome(pickle::parse(data, &dcp_classes()))
}

/// One inner file of a copied fixture folder is replaced by the input, the folder opened the
/// way `score` opens it, and the original put back.
fn with_file<T>(ws: &Workspace, rel: &str, data: &[u8], f: impl FnOnce() -> T) -> T {
    let path = ws.dir.join("ckpt").join(rel);
    let original = std::fs::read(&path).expect("scratch file");
    overwrite(&path, data);
    let r = f();
    overwrite(&path, &original);
    r
}

fn load_checkpoint(dir: &Path) -> anyhow::Result<()> {
    let ck = Checkpoint::open(dir)?;
    ck.load_model(DType::F32, &Device::Cpu)?;
    Ok(())
}

fn setup_native(dir: &Path) {
    copy_tree(
        &repo().join(OLMO_CORE).join("transformer/step100"),
        &dir.join("ckpt"),
    );
}

const DISTCP_FILES: [&str; 6] = [
    "__0_0.distcp",
    "__0_1.distcp",
    "__0_2.distcp",
    "__0_3.distcp",
    "__0_4.distcp",
    "__0_5.distcp",
];

/// Seeds: the index and each blob, behind a tag byte that says which file the input replaces
/// (mutations of the tag pick another file, which is fine).
fn distcp_seeds() -> Vec<Vec<u8>> {
    let dir = format!("{OLMO_CORE}/transformer/step100/model_and_optim");
    let mut out = Vec::new();
    for (tag, f) in std::iter::once(".metadata").chain(DISTCP_FILES).enumerate() {
        let mut d = vec![tag as u8];
        d.extend(read(&format!("{dir}/{f}")));
        out.push(d);
    }
    out
}

/// The file an input of the `distcp` target replaces, from its first byte.
fn distcp_file(tag: u8) -> String {
    match tag as usize {
        0 => "model_and_optim/.metadata".into(),
        t => format!(
            "model_and_optim/{}",
            DISTCP_FILES[(t - 1) % DISTCP_FILES.len()]
        ),
    }
}

fn run_distcp(ws: &Workspace, data: &[u8]) -> Outcome {
    let Some((&tag, body)) = data.split_first() else {
        return Outcome::Err;
    };
    let dir = ws.dir.join("ckpt");
    with_file(ws, &distcp_file(tag), body, || {
        outcome(load_checkpoint(&dir))
    })
}

const HF: &str = "tests/fixtures/hf/olmo2";

fn setup_hf(dir: &Path) {
    copy_tree(&repo().join(HF), &dir.join("ckpt"));
}

fn safetensors_seeds() -> Vec<Vec<u8>> {
    vec![read(&format!("{HF}/model.safetensors"))]
}

fn run_safetensors(ws: &Workspace, data: &[u8]) -> Outcome {
    let dir = ws.dir.join("ckpt");
    with_file(ws, "model.safetensors", data, || {
        outcome(load_checkpoint(&dir))
    })
}

fn toml_seeds() -> Vec<Vec<u8>> {
    vec![
        read("watch-configs/demo.toml"),
        read("watch-configs/olmo-1b-ladder.toml"),
    ]
}

fn run_toml(ws: &Workspace, data: &[u8]) -> Outcome {
    let path = ws.dir.join("watch.toml");
    overwrite(&path, data);
    outcome(WatchConfig::load(&path))
}

const FILTER_EXPRS: &[&str] = &[
    "upos in {ADJ, ADV} & repeat_len == 0",
    "domain == \"python\" & close_bracket",
    "!(content | function) & repeat_len < 3",
    "repeat_len >= 5 & (open_bracket | close_bracket)",
    "upos == NOUN | upos == PROPN",
    "domain in {\"prose\", \"html\"} & !content",
];

fn filter_seeds() -> Vec<Vec<u8>> {
    builtin_filters()
        .into_iter()
        .map(|(_, e)| e)
        .chain(FILTER_EXPRS.iter().copied())
        .map(|e| e.as_bytes().to_vec())
        .collect()
}

fn run_filter(_: &Workspace, data: &[u8]) -> Outcome {
    let expr = String::from_utf8_lossy(data);
    let domains = ["prose".to_string(), "python".to_string()];
    outcome(Filter::compile("fuzzed", &expr, &domains))
}

fn jsonl_seeds() -> Vec<Vec<u8>> {
    let all = read("data/sample.jsonl");
    // Whole lines of the sample, a few at a time, keep each input small.
    let lines: Vec<&[u8]> = all.split_inclusive(|&b| b == b'\n').collect();
    lines.chunks(3).map(|c| c.concat()).collect()
}

fn run_jsonl(ws: &Workspace, data: &[u8]) -> Outcome {
    let path = ws.dir.join("docs.jsonl");
    overwrite(&path, data);
    let mut result = Outcome::Ok;
    for skip_bad in [false, true] {
        let opts = ReaderOptions {
            skip_bad,
            ..ReaderOptions::default()
        };
        let Ok(reader) = CorpusReader::open(&[&path], opts) else {
            return Outcome::Err;
        };
        // A reader that never ends would hang `prepare`: it cannot yield more items than lines.
        let limit = data.iter().filter(|&&b| b == b'\n').count() + 2;
        let mut n = 0;
        for doc in reader {
            n += 1;
            assert!(
                n <= limit,
                "the reader yields more items than the file has lines"
            );
            if doc.is_err() {
                result = Outcome::Err;
                break;
            }
        }
    }
    result
}

fn tokenizer_seeds() -> Vec<Vec<u8>> {
    vec![read("tests/fixtures/tokenizer.json")]
}

fn run_tokenizer(ws: &Workspace, data: &[u8]) -> Outcome {
    let path = ws.dir.join("tokenizer.json");
    overwrite(&path, data);
    match filtermon::evalset::tokenizer::load(&path) {
        Ok(tok) => outcome(filtermon::evalset::tokenizer::encode(
            &tok,
            "def f(x):\n    return [x, {'a': 1}]  # Ünïcödé",
        )),
        Err(_) => Outcome::Err,
    }
}

fn setup_none(_: &Path) {}

const JSON_DICT: &[&str] = &[
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "true",
    "1e999",
    "-0",
    "18446744073709551616",
    "\n",
    "\r",
    "\u{feff}",
    "\u{10ffff}",
    "\"text\"",
    "\"id\"",
    "\"domain\"",
];
const TOML_DICT: &[&str] = &[
    "[[",
    "]]",
    "[",
    "]",
    "=",
    "\"",
    "'''",
    "\"\"\"",
    "{",
    "}",
    ",",
    ".",
    "\n",
    "#",
    "1e999",
    "-1",
    "9223372036854775808",
    "0x",
    "nan",
    "inf",
    "true",
    "1979-05-27T07:32:00Z",
    "[runs.x]",
    "baseline",
    "tokens_per_step",
    "evalsets",
    "db",
    "dir",
    "tokenizer",
    "\\u",
];
const FILTER_DICT: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "!",
    "&",
    "|",
    "==",
    "!=",
    ">=",
    "<",
    "in",
    ",",
    "\"",
    "\\",
    "repeat_len",
    "upos",
    "domain",
    "content",
    "99999999999999999999",
    "-1",
    " ",
    "(((((",
    "é",
];

const TARGETS: &[Target] = &[
    Target {
        name: "pickle",
        seeds: pickle_seeds,
        dict: &[],
        length_fields: pickle_fields,
        setup: setup_none,
        run: run_pickle,
        short_count: 5000,
    },
    Target {
        name: "distcp",
        seeds: distcp_seeds,
        dict: &[],
        length_fields: distcp_fields,
        setup: setup_native,
        run: run_distcp,
        short_count: 1500,
    },
    Target {
        name: "safetensors",
        seeds: safetensors_seeds,
        dict: &[
            "{",
            "}",
            "\"",
            "[",
            "]",
            ":",
            ",",
            "F32",
            "BF16",
            "data_offsets",
            "shape",
        ],
        length_fields: safetensors_fields,
        setup: setup_hf,
        run: run_safetensors,
        short_count: 3000,
    },
    Target {
        name: "toml",
        seeds: toml_seeds,
        dict: TOML_DICT,
        length_fields: no_fields,
        setup: setup_none,
        run: run_toml,
        short_count: 3000,
    },
    Target {
        name: "filter",
        seeds: filter_seeds,
        dict: FILTER_DICT,
        length_fields: no_fields,
        setup: setup_none,
        run: run_filter,
        short_count: 5000,
    },
    Target {
        name: "jsonl",
        seeds: jsonl_seeds,
        dict: JSON_DICT,
        length_fields: no_fields,
        setup: setup_none,
        run: run_jsonl,
        short_count: 3000,
    },
    Target {
        name: "tokenizer",
        seeds: tokenizer_seeds,
        dict: JSON_DICT,
        length_fields: no_fields,
        setup: setup_none,
        run: run_tokenizer,
        short_count: 3000,
    },
];

// ---------------------------------------------------------------------------------------------
// The engine: panics are caught and recorded per thread, a watchdog reports a stuck input.

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics in fuzz threads are recorded, not printed: each becomes a test failure with its input.
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CURRENT.with(Cell::get) == usize::MAX {
                default(info);
                return;
            }
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg} at {at}")));
        }));
    });
}

fn time_limit() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(2)
    }
}

fn current_dir() -> PathBuf {
    repo().join("target/fuzz-current")
}

/// Counts of one target's run.
#[derive(Default)]
struct Stats {
    inputs: usize,
    errors: usize,
    ok: usize,
    max_time: Duration,
}

/// Started-at time (ms since `epoch`, 0 when idle) of the input each target is running.
struct Watch {
    epoch: Instant,
    started_ms: Vec<AtomicU64>,
    done: AtomicBool,
}

fn spawn_watchdog(watch: Arc<Watch>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let limit = time_limit().as_millis() as u64;
        while !watch.done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let now = watch.epoch.elapsed().as_millis() as u64;
            for (i, s) in watch.started_ms.iter().enumerate() {
                let t = s.load(Ordering::Relaxed);
                if t != 0 && now.saturating_sub(t) > limit {
                    eprintln!(
                        "fuzz: target `{}` spent over {limit} ms on one input; \
                         it is in target/fuzz-current/{}.bin",
                        TARGETS[i].name, TARGETS[i].name
                    );
                    std::process::exit(101);
                }
            }
        }
    })
}

/// Runs one input; `Err` describes a panic.
fn run_one(
    idx: usize,
    ws: &Workspace,
    data: &[u8],
    watch: &Watch,
    stats: &mut Stats,
) -> Result<(), String> {
    let t = &TARGETS[idx];
    // Kept on disk while it runs, so that a hang or an abort leaves the input behind.
    overwrite(&current_dir().join(format!("{}.bin", t.name)), data);
    let start = Instant::now();
    watch.started_ms[idx].store(
        (watch.epoch.elapsed().as_millis() as u64).max(1),
        Ordering::Relaxed,
    );
    let r = catch_unwind(AssertUnwindSafe(|| (t.run)(ws, data)));
    watch.started_ms[idx].store(0, Ordering::Relaxed);
    let took = start.elapsed();
    stats.inputs += 1;
    stats.max_time = stats.max_time.max(took);
    match r {
        Ok(Outcome::Ok) => stats.ok += 1,
        Ok(Outcome::Err) => stats.errors += 1,
        Err(_) => {
            let msg = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            return Err(msg);
        }
    }
    Ok(())
}

/// Fuzzes one target: regressions first, then seeds, then mutations until `budget` runs out.
fn fuzz_target(idx: usize, budget: Budget, watch: &Watch) -> Result<Stats, String> {
    let t = &TARGETS[idx];
    CURRENT.with(|c| c.set(idx));
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    (t.setup)(scratch.path());
    let ws = Workspace {
        dir: scratch.path().to_path_buf(),
    };
    let seeds = (t.seeds)();
    let mut stats = Stats::default();
    let fail = |data: &[u8], msg: String| {
        let keep = current_dir().join(format!("{}-panic.bin", t.name));
        let _ = std::fs::write(&keep, data);
        format!(
            "target `{}` panicked: {msg} (input saved to {})",
            t.name,
            keep.display()
        )
    };
    for data in regressions(t.name).iter().chain(&seeds) {
        run_one(idx, &ws, data, watch, &mut stats).map_err(|m| fail(data, m))?;
    }
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + idx as u64);
    let start = Instant::now();
    loop {
        let more = match budget {
            Budget::Inputs => stats.inputs < t.short_count,
            Budget::Time(d) => start.elapsed() < d,
        };
        if !more {
            break;
        }
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let data = mutate(&mut rng, seed, t);
        run_one(idx, &ws, &data, watch, &mut stats).map_err(|m| fail(&data, m))?;
    }
    CURRENT.with(|c| c.set(usize::MAX));
    Ok(stats)
}

/// Saved inputs of `tests/fuzz_regressions/<target>/`.
fn regressions(name: &str) -> Vec<Vec<u8>> {
    let dir = repo().join("tests/fuzz_regressions").join(name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// A target's index, its counts or failure, and how long it ran.
type TargetResult = (usize, Result<Stats, String>, Duration);

#[derive(Clone, Copy)]
enum Budget {
    /// Each target's `short_count`.
    Inputs,
    /// This long per target.
    Time(Duration),
}

#[test]
fn fuzz_parsers() {
    quiet_panics();
    std::fs::create_dir_all(current_dir()).expect("target/fuzz-current");
    let budget = match std::env::var("FILTERMON_FUZZ_SECS") {
        Ok(s) => Budget::Time(Duration::from_secs(
            s.parse()
                .expect("FILTERMON_FUZZ_SECS is a number of seconds"),
        )),
        Err(_) => Budget::Inputs,
    };
    let only = std::env::var("FILTERMON_FUZZ_ONLY").ok();
    let watch = Arc::new(Watch {
        epoch: Instant::now(),
        started_ms: TARGETS.iter().map(|_| AtomicU64::new(0)).collect(),
        done: AtomicBool::new(false),
    });
    let dog = spawn_watchdog(watch.clone());
    // Two workers take targets in turn: the machines this runs on have two cores or more.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<TargetResult>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= TARGETS.len() {
                    break;
                }
                if only
                    .as_deref()
                    .is_some_and(|o| !o.split(',').any(|n| n == TARGETS[i].name))
                {
                    continue;
                }
                let start = Instant::now();
                let r = fuzz_target(i, budget, &watch);
                CURRENT.with(|c| c.set(usize::MAX));
                let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                all.push((i, r, start.elapsed()));
            });
        }
    });
    watch.done.store(true, Ordering::Relaxed);
    let _ = dog.join();
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.0);
    let mut failures = Vec::new();
    for (i, r, took) in results {
        match r {
            Ok(s) => println!(
                "fuzz {:<12} inputs {:>7}  errors {:>7}  ok {:>6}  max/input {:>8.1} ms  total {:>6.1} s",
                TARGETS[i].name,
                s.inputs,
                s.errors,
                s.ok,
                s.max_time.as_secs_f64() * 1e3,
                took.as_secs_f64()
            ),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Huge length fields must be refused quickly, before anything is sized by them.

fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    assert!(
        start.elapsed() < time_limit(),
        "{what} took {:?}",
        start.elapsed()
    );
    r
}

#[test]
fn huge_lengths_are_refused() {
    // Pickle: BINUNICODE, BINBYTES and BINUNICODE8 lengths far past the data.
    for p in [
        &b"\x80\x04X\xff\xff\xff\xffabc."[..],
        b"\x80\x04B\xff\xff\xff\x7fabc.",
        b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xffabc.",
        b"\x80\x04\x8d\x00\x00\x00\x00\x00\x01\x00\x00abc.",
        b"\x80\x04\x8a\xffabc.",
    ] {
        let r = quick("pickle", || pickle::parse(p, &dcp_classes()));
        assert!(r.is_err(), "{p:?}");
    }
    // Safetensors: the 8-byte header length.
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = Workspace {
        dir: tmp.path().to_path_buf(),
    };
    setup_hf(&ws.dir);
    let st = read(&format!("{HF}/model.safetensors"));
    for huge in HUGE {
        let mut d = st.clone();
        d[..8].copy_from_slice(&huge.to_le_bytes());
        let r = quick("safetensors", || run_safetensors(&ws, &d));
        assert!(matches!(r, Outcome::Err), "header length {huge}");
    }
    // distcp: every 7th zip size or offset field of each blob (a field of the local header, or
    // of an archive no tensor of the model is read from, may be ignored: those load fine).
    setup_native(&ws.dir);
    let mut errors = 0;
    for tag in 1..=DISTCP_FILES.len() as u8 {
        let blob = read(&format!(
            "{OLMO_CORE}/transformer/step100/{}",
            distcp_file(tag)
        ));
        for (k, (at, w)) in distcp_fields(&blob).into_iter().enumerate().step_by(7) {
            let mut d = vec![tag];
            d.extend(&blob);
            let v = HUGE[k % HUGE.len()].to_le_bytes();
            d[1 + at..1 + at + w].copy_from_slice(&v[..w]);
            if let Outcome::Err = quick("distcp", || run_distcp(&ws, &d)) {
                errors += 1;
            }
        }
    }
    assert!(errors > 10, "only {errors} huge zip fields refused");
}

#[test]
fn pickle_expansion_is_bounded() {
    // One memoized 1000-item tuple passed to 20000 calls: 20M copied ids from 300 kB, unless
    // the reader stops it.
    let mut p = b"\x80\x04(".to_vec();
    p.extend(std::iter::repeat_n(b'N', 1000));
    p.extend(b"t\x94");
    for _ in 0..20_000 {
        p.extend(b"ctorch\nSize\nh\x00R");
    }
    p.push(b'.');
    let err = quick("pickle", || pickle::parse(&p, &["torch.Size"]))
        .expect_err("too large")
        .to_string();
    assert!(err.contains("expands"), "{err}");
}

/// Tensor shapes and chunk sizes of the index (`torch.Size((BININT2, BININT1))` in the fixture)
/// made huge: the index or its chunks must be refused before a buffer of that size is allocated
/// or an offset overflows.
#[test]
fn huge_shapes_in_the_index_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = Workspace {
        dir: tmp.path().to_path_buf(),
    };
    setup_native(&ws.dir);
    let meta = read(&format!(
        "{OLMO_CORE}/transformer/step100/model_and_optim/.metadata"
    ));
    for huge in [1i64 << 40, 1 << 62, i64::MAX] {
        let mut long1 = vec![0x8a, 8];
        long1.extend(huge.to_le_bytes());
        let mut patched = Vec::new();
        let mut n = 0;
        let mut i = 0;
        while i < meta.len() {
            // `BININT2 lo hi BININT1 v TUPLE2`: a two-dimensional size.
            if meta[i] == b'M' && meta.get(i + 3) == Some(&b'K') && meta.get(i + 5) == Some(&0x86) {
                patched.extend(&long1);
                i += 3;
                n += 1;
            } else {
                patched.push(meta[i]);
                i += 1;
            }
        }
        assert!(n > 4, "found {n} size tuples");
        let mut input = vec![0u8];
        input.extend(&patched);
        let r = quick("huge shape", || run_distcp(&ws, &input));
        assert!(matches!(r, Outcome::Err), "shape dimension {huge}");
    }
}

// ---------------------------------------------------------------------------------------------
// Through the binary: mutated inputs exit 2 (or 0 when still valid) with one line on stderr.

fn filtermon(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_filtermon"))
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run filtermon");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_exit(what: &str, code: i32, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "{what}: {stderr}"
    );
    assert!(code == 0 || code == 2, "{what}: exit {code}: {stderr}");
    if code == 2 {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{what}: {stderr}");
        assert!(lines[0].starts_with("error: "), "{what}: {stderr}");
    }
}

/// `n` mutated inputs of each target, written where the command reads them.
#[test]
fn cli_errors_are_one_line() {
    let n = 4;
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let docs = t.join("docs.jsonl");
    std::fs::write(&docs, &jsonl_seeds()[0]).expect("docs");
    let tok = repo().join("tests/fixtures/tokenizer.json");
    let os = |p: &Path| p.as_os_str().to_owned();
    let by_name = |name: &str| TARGETS.iter().position(|t| t.name == name).expect("target");
    let inputs = |name: &str| {
        let target = &TARGETS[by_name(name)];
        let seeds = (target.seeds)();
        let mut rng = StdRng::seed_from_u64(0xc11);
        (0..n)
            .map(|_| {
                let seed = &seeds[rng.random_range(0..seeds.len())];
                mutate(&mut rng, seed, target)
            })
            .collect::<Vec<_>>()
    };
    let mut case = 0;
    let mut next_dir = || {
        case += 1;
        t.join(format!("case{case}"))
    };

    // Checkpoints: mutated index or blob of a native folder, mutated safetensors of an HF one.
    let native_cases = inputs("distcp")
        .into_iter()
        .filter_map(|d| {
            d.split_first()
                .map(|(&tag, body)| (distcp_file(tag), body.to_vec()))
        })
        .chain(
            inputs("pickle")
                .into_iter()
                .map(|d| ("model_and_optim/.metadata".to_string(), d)),
        );
    for (rel, body) in native_cases {
        let ws = next_dir();
        setup_native(&ws);
        std::fs::write(ws.join("ckpt").join(&rel), &body).expect("input");
        let (code, err) = filtermon(&[
            "score".as_ref(),
            &os(&ws.join("ckpt")),
            "--tokenizer".as_ref(),
            &os(&tok),
            "--input".as_ref(),
            &os(&docs),
            "--token-losses".as_ref(),
            &os(&ws.join("losses.jsonl")),
        ]);
        assert_clean_exit(&format!("score (olmo-core, {rel})"), code, &err);
    }
    for d in inputs("safetensors") {
        let ws = next_dir();
        setup_hf(&ws);
        std::fs::write(ws.join("ckpt/model.safetensors"), &d).expect("input");
        let (code, err) = filtermon(&[
            "score".as_ref(),
            &os(&ws.join("ckpt")),
            "--input".as_ref(),
            &os(&docs),
            "--token-losses".as_ref(),
            &os(&ws.join("losses.jsonl")),
        ]);
        assert_clean_exit("score (safetensors)", code, &err);
    }
    for d in inputs("toml") {
        let ws = next_dir();
        std::fs::create_dir_all(&ws).expect("case");
        let cfg = ws.join("watch.toml");
        std::fs::write(&cfg, &d).expect("input");
        let (code, err) = filtermon(&["status".as_ref(), "--config".as_ref(), &os(&cfg)]);
        // A config that stays valid names a store that does not exist yet: still exit 2.
        assert_clean_exit("status --config", code, &err);
    }
    for d in inputs("filter") {
        let ws = next_dir();
        std::fs::create_dir_all(&ws).expect("case");
        let filters = ws.join("filters.toml");
        let mut text = b"[filters]\nfuzzed = '''".to_vec();
        text.extend(&d);
        text.extend(b"'''\n");
        std::fs::write(&filters, &text).expect("input");
        let (code, err) = filtermon(&[
            "prepare".as_ref(),
            "--input".as_ref(),
            &os(&docs),
            "--tokenizer".as_ref(),
            &os(&tok),
            "--out".as_ref(),
            &os(&ws.join("evalset")),
            "--filters".as_ref(),
            &os(&filters),
        ]);
        assert_clean_exit("prepare --filters", code, &err);
    }
    for (kind, d) in inputs("jsonl")
        .into_iter()
        .map(|d| ("jsonl", d))
        .chain(inputs("tokenizer").into_iter().map(|d| ("tokenizer", d)))
    {
        let ws = next_dir();
        std::fs::create_dir_all(&ws).expect("case");
        let (input, tokenizer) = if kind == "jsonl" {
            let p = ws.join("docs.jsonl");
            std::fs::write(&p, &d).expect("input");
            (p, tok.clone())
        } else {
            let p = ws.join("tokenizer.json");
            std::fs::write(&p, &d).expect("input");
            (docs.clone(), p)
        };
        let (code, err) = filtermon(&[
            "prepare".as_ref(),
            "--input".as_ref(),
            &os(&input),
            "--tokenizer".as_ref(),
            &os(&tokenizer),
            "--out".as_ref(),
            &os(&ws.join("evalset")),
        ]);
        assert_clean_exit(&format!("prepare ({kind})"), code, &err);
    }
}
