//! A reader that leaves early (`filtermon export … | head -1`) ends a command quietly: exit 0
//! and nothing on stderr, as other Unix tools do. Every command here writes far more than a
//! pipe buffers, so it is still writing when the pipe is closed.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use filtermon::analysis::stats::aggregate::FilterResult;
use filtermon::store::alerts::Firing;
use filtermon::store::{NewCheckpoint, RunRow};

mod common;
use common::store_with_one_evalset;

const BIN: &str = env!("CARGO_BIN_EXE_filtermon");
const RUNS: usize = 10;
const FILTERS: usize = 200;
/// Alerts on the first this many filters of each run.
const ALERTING_FILTERS: usize = 60;

/// A store of `RUNS` runs, one scored checkpoint each with `FILTERS` results, and an alert
/// with a long message on `ALERTING_FILTERS` of them: hundreds of KB from each command.
fn build_store(path: &Path) {
    let (mut store, es, losses) = store_with_one_evalset(path);
    let filters: Vec<String> = (0..FILTERS).map(|i| format!("filter_{i:03}")).collect();
    for r in 0..RUNS {
        let name = format!("run{r}");
        let run = store
            .upsert_run(&RunRow {
                name: name.clone(),
                arch: "transformer".into(),
                dir: format!("/runs/{name}"),
                baseline: None,
                tokens_per_step: 4096,
            })
            .expect("run");
        let ck = NewCheckpoint {
            name: "step1000".into(),
            path: format!("/runs/{name}/step1000"),
            step: 1000,
            tokens: 1000 * 4096,
            anneal: false,
        };
        store.add_checkpoint(run, &ck, &[es]).expect("checkpoint");
        let job = store
            .lease("test", 60.0, &[run], &[es])
            .expect("lease")
            .expect("a job");
        let results: Vec<FilterResult> = filters
            .iter()
            .map(|f| FilterResult {
                filter: f.clone(),
                definition: "all".into(),
                domain: None,
                mean: 3.0,
                n: 1000,
                ci_lo: 2.9,
                ci_hi: 3.1,
                top1: 0.3,
                top5: 0.6,
            })
            .collect();
        assert!(store
            .complete(&job, "test", &results, &losses, 0.1)
            .expect("complete"));
        for f in &filters[..ALERTING_FILTERS] {
            store
                .record_alert(&Firing {
                    rule: "gap".into(),
                    run: name.clone(),
                    evalset: "web".into(),
                    evalset_id: es,
                    filter: f.clone(),
                    checkpoint_id: job.checkpoint_id,
                    checkpoint: "step1000".into(),
                    step: 1000,
                    tokens: 1000 * 4096,
                    value: 0.5,
                    threshold: 0.1,
                    message: format!("{name} trails its baseline on {f} {}", "by far ".repeat(25)),
                })
                .expect("alert");
        }
    }
}

/// Runs filtermon with `args` (and `input` on stdin), reads one line of its output, closes
/// the pipe, and returns the first line, the exit status and stderr.
fn read_one_line_then_close(args: &[&str], input: Option<Vec<u8>>) -> (String, ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn filtermon");
    let feeder = child.stdin.take().zip(input).map(|(mut stdin, bytes)| {
        // The command stops reading once its output is closed: a failed write is expected.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read one line");
    // The reader (and the pipe's read end) is dropped here.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("filtermon {args:?} still runs after its output was closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(f) = feeder {
        f.join().expect("feeder");
    }
    (first, status, stderr_reader.join().expect("stderr"))
}

/// What went wrong when `args` lost its reader after one line; None when it ended quietly.
fn noisy_exit(args: &[&str], input: Option<Vec<u8>>) -> Option<String> {
    let (first, status, stderr) = read_one_line_then_close(args, input);
    if first.is_empty() {
        return Some(format!("{args:?} wrote nothing"));
    }
    (status.code() != Some(0) || !stderr.is_empty())
        .then(|| format!("{args:?}: {status}, stderr: {stderr:?}"))
}

#[test]
fn export_status_and_alerts_end_quietly_when_their_reader_leaves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let db = tmp.path().join("mon.db");
    build_store(&db);
    let db = db.to_str().expect("utf8");
    let noisy: Vec<String> = [
        &["export", "--db", db, "--format", "csv"][..],
        &["export", "--db", db, "--format", "jsonl"],
        &["status", "--db", db],
        &["status", "--db", db, "--json"],
        &["alerts", "--db", db],
        &["alerts", "--db", db, "--json"],
    ]
    .into_iter()
    .filter_map(|args| noisy_exit(args, None))
    .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
}

#[test]
fn tag_ends_quietly_when_its_reader_leaves() {
    let text = "The old harbor master counted the boats before the storm came in.\n";
    let words = "the boats came in\n";
    let noisy: Vec<String> = [
        noisy_exit(&["tag"], Some(text.repeat(20_000).into_bytes())),
        noisy_exit(
            &["tag", "--pretokenized"],
            Some(words.repeat(50_000).into_bytes()),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
}

#[test]
fn the_demo_ends_quietly_when_its_reader_leaves() {
    // Its first line comes at once and its next once the corpus is generated: by then the
    // reader has gone.
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("demo");
    let out = out.to_str().expect("utf8");
    let noisy = noisy_exit(&["demo", "--quick", "--out", out], None);
    assert!(noisy.is_none(), "{noisy:?}");
}
