//! `filtermon demo --quick` end to end: the real binary trains four runs (the three twins and
//! the planted regression) while its embedded daemon scores them; the checks read the folder
//! and the SQLite store it leaves.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};

mod common;
use common::{filtermon, parse_jsonl};
use filtermon::evalset::filter::builtin_filters;

/// The filter the demo's watch config adds.
const USER_FILTER: &str = "adj_adv_nocopy";
const RUNS: [&str; 4] = ["transformer", "hybrid", "gdn", "transformer-swa"];

/// The built-in filters, as the library defines them.
fn built_in() -> Vec<&'static str> {
    builtin_filters()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// `(run, folder)` of every checkpoint folder on disk; panics on a leftover `-tmp` folder.
fn checkpoint_folders(out: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for run in RUNS {
        for e in std::fs::read_dir(out.join("runs").join(run)).expect("run folder") {
            let name = e.expect("entry").file_name().to_string_lossy().to_string();
            assert!(!name.ends_with("-tmp"), "{run}/{name} was never renamed");
            assert!(name.starts_with("step"), "{run}/{name}: not a checkpoint");
            found.insert((run.to_string(), name));
        }
    }
    found
}

fn query<T: rusqlite::types::FromSql>(db: &Connection, sql: &str) -> Vec<Vec<T>> {
    let mut st = db.prepare(sql).expect("query");
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn quick_demo_scores_every_checkpoint_once_on_every_filter() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("demo");
    let out_str = out.to_str().expect("utf-8 path");
    let started = Instant::now();
    let run = filtermon(&["demo", "--quick", "--out", out_str]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    eprintln!("demo --quick took {:.1}s", started.elapsed().as_secs_f64());

    // Every folder the trainers wrote, and nothing else, is a checkpoint of the store.
    let folders = checkpoint_folders(&out);
    for run in RUNS {
        let names: Vec<&String> = folders
            .iter()
            .filter(|(r, _)| r == run)
            .map(|(_, n)| n)
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("-anneal")),
            "{run}: {names:?}"
        );
        assert!(
            names.iter().any(|n| !n.ends_with("-anneal")),
            "{run}: {names:?}"
        );
    }
    let db =
        Connection::open_with_flags(out.join("filtermon.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("db");
    let stored: BTreeSet<(String, String)> = query::<String>(
        &db,
        "SELECT r.name, c.name FROM checkpoints c JOIN runs r ON r.id = c.run_id",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    assert_eq!(stored, folders);

    // Scored exactly once each on both evalsets (the generated text and the probe): one done
    // job per pair, nothing failed or retried.
    let jobs = query::<i64>(
        &db,
        "SELECT COUNT(*), SUM(j.state = 'done'), SUM(j.attempts), COUNT(DISTINCT j.checkpoint_id),
                COUNT(DISTINCT j.evalset_id), SUM(j.error IS NOT NULL)
         FROM jobs j",
    );
    let n = folders.len() as i64;
    assert_eq!(
        jobs[0],
        [2 * n, 2 * n, 2 * n, n, 2, 0],
        "jobs, done, attempts, checkpoints, evalsets, errors"
    );

    // Every checkpoint has a result row per filter (built-ins and the config's own), each with
    // tokens and a finite mean; runs are compared on the same tokens.
    let filters: Vec<String> = built_in()
        .iter()
        .chain(&[USER_FILTER])
        .map(|f| format!("'{f}'"))
        .collect();
    let only_filters = format!(
        "filter IN ({}) AND evalset_id = (SELECT id FROM evalsets WHERE name = 'demo')",
        filters.join(", ")
    );
    let per_checkpoint = query::<i64>(
        &db,
        &format!(
            "SELECT COUNT(*), SUM(n > 0 AND mean IS NOT NULL AND mean > 0 AND mean < 20)
             FROM results WHERE {only_filters} GROUP BY checkpoint_id"
        ),
    );
    assert_eq!(per_checkpoint.len() as i64, n);
    for row in &per_checkpoint {
        assert_eq!(row, &[filters.len() as i64; 2]);
    }
    let counts = query::<i64>(
        &db,
        &format!("SELECT COUNT(DISTINCT n) FROM results WHERE {only_filters} GROUP BY filter"),
    );
    assert_eq!(counts.len(), filters.len());
    assert!(
        counts.iter().all(|c| c[0] == 1),
        "token counts differ between checkpoints"
    );

    // Per-token losses of every checkpoint, covering the whole evalset.
    let losses = query::<i64>(
        &db,
        "SELECT COUNT(*), SUM(t.tokens = e.tokens), SUM(length(t.loss) > 0)
         FROM token_losses t JOIN evalsets e ON e.id = t.evalset_id",
    );
    assert_eq!(losses[0], [2 * n, 2 * n, 2 * n]);

    // The probe's retrieval gain at each of its three gaps, for every checkpoint.
    let gains = query::<i64>(
        &db,
        "SELECT COUNT(*) FROM results r JOIN evalsets e ON e.id = r.evalset_id
         WHERE e.name = 'probe' AND r.filter LIKE 'recall.gain@%' AND r.mean IS NOT NULL",
    );
    assert_eq!(gains[0], [3 * n]);

    // Paired gaps to the transformer at every hybrid and GDN checkpoint (the runs step in
    // lockstep), equal to the difference of the stored means over the same tokens, inside
    // their interval.
    let gaps = query::<f64>(
        &db,
        &format!(
            "SELECT g.gap, res.mean - base.mean, g.ci_lo, g.ci_hi
             FROM paired_gaps g
             JOIN results res ON res.checkpoint_id = g.checkpoint_id
                 AND res.evalset_id = g.evalset_id AND res.filter = g.filter
             JOIN results base ON base.checkpoint_id = g.baseline_checkpoint_id
                 AND base.evalset_id = g.evalset_id AND base.filter = g.filter
             WHERE g.filter IN ({}) AND g.evalset_id = (SELECT id FROM evalsets WHERE name = 'demo')",
            filters.join(", ")
        ),
    );
    let others = folders.iter().filter(|(r, _)| r != "transformer").count();
    assert_eq!(gaps.len(), others * filters.len());
    for g in &gaps {
        assert!(
            (g[0] - g[1]).abs() < 1e-6,
            "paired {} vs means {}",
            g[0],
            g[1]
        );
        assert!(g[2] <= g[0] && g[0] <= g[3], "{g:?}");
    }

    // The report the daemon drew: each filter's loss and gap charts, the probe's gain
    // snapshot, all present as PNG and SVG.
    let index = std::fs::read_to_string(out.join("charts/index.html")).expect("index.html");
    let mut wanted: Vec<String> = built_in()
        .iter()
        .chain(&[USER_FILTER])
        .flat_map(|f| [format!("demo/{f}.png"), format!("demo/{f}-gap.png")])
        .collect();
    wanted.extend([
        "probe/recall-gain.png".into(),
        "probe/recall-gain-gap.png".into(),
    ]);
    for png in &wanted {
        assert!(
            index.contains(&format!("src=\"{png}\"")),
            "index lacks {png}"
        );
        let bytes = std::fs::read(out.join("charts").join(png)).expect(png);
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
        let svg = out.join("charts").join(png.replace(".png", ".svg"));
        assert!(svg.is_file(), "{}", svg.display());
    }

    // The summary: one line per filter, every run's annealed loss and the gaps.
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("filter "))
        .collect();
    for f in built_in().iter().chain(&[USER_FILTER]) {
        let line = table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(*f))
            .unwrap_or_else(|| panic!("no summary line for {f}:\n{stdout}"));
        let numbers = line
            .split_whitespace()
            .skip(1)
            .filter(|w| w.parse::<f64>().is_ok());
        assert_eq!(numbers.count(), 1 + RUNS.len() + RUNS.len() - 1, "{line}");
    }
    assert!(stdout.contains("charts/index.html"), "{stdout}");
    drop(db);

    // `status` shows the headline recall rows; the cliff and copy-n rows only with --recall.
    let db_path = out.join("filtermon.db");
    let db_str = db_path.to_str().expect("utf-8 path");
    let brief = filtermon(&["status", "--db", db_str]);
    let brief = String::from_utf8_lossy(&brief.stdout);
    let full = filtermon(&["status", "--db", db_str, "--recall"]);
    let full = String::from_utf8_lossy(&full.stdout);
    for text in [&brief, &full] {
        assert!(text.contains("recall.gain@"), "{text}");
        assert!(text.contains("recall.copy5_miss"), "{text}");
    }
    assert!(!brief.contains("recall.copy_n@1 "), "{brief}");
    assert!(brief.contains("more recall rows"), "{brief}");
    assert!(full.contains("recall.copy_n@1 "), "{full}");
    assert!(!full.contains("more recall rows"), "{full}");

    // `export` carries the paired gaps: every hybrid row of a filter has one.
    let export = filtermon(&[
        "export", "--db", db_str, "--format", "jsonl", "--run", "hybrid",
    ]);
    let rows = parse_jsonl(&String::from_utf8_lossy(&export.stdout));
    let with_gap = rows
        .iter()
        .filter(|r| {
            r["evalset"] == "demo" && built_in().contains(&r["filter"].as_str().unwrap_or(""))
        })
        .inspect(|r| assert!(r["gap"].as_f64().is_some_and(f64::is_finite), "{r}"))
        .count();
    assert_eq!(with_gap, n as usize / RUNS.len() * built_in().len());

    // The detection table: every run with a baseline, on every filter with paired gaps, and
    // the planted regression's line in the summary.
    let detect = filtermon(&["status", "--detect", "--json", "--db", db_str]);
    assert!(detect.status.success());
    let detections: serde_json::Value =
        serde_json::from_slice(&detect.stdout).expect("detections JSON");
    let rows = detections.as_array().expect("array");
    for run in &RUNS[1..] {
        for f in built_in() {
            assert!(
                rows.iter()
                    .any(|d| d["run"] == *run && d["filter"] == f && d["evalset"] == "demo"),
                "no detection row of {run} on {f}"
            );
        }
    }
    assert!(rows.iter().all(|d| d["baseline"] == "transformer"));
    assert!(
        rows.iter()
            .any(|d| d["filter"] == "copy5" && d["primary"] == true),
        "copy5 is the demo's primary filter"
    );
    assert!(
        stdout.contains("detection of a regression against transformer"),
        "{stdout}"
    );
    assert!(
        stdout.contains("planted regression (transformer-swa, 8-token attention window)"),
        "{stdout}"
    );

    // A second demo into the same folder needs --force, and then starts from nothing: the
    // store holds only the new runs' checkpoints, each scored once.
    let again = filtermon(&["demo", "--quick", "--out", out_str]);
    assert_eq!(again.status.code(), Some(2));
    let again = filtermon(&["demo", "--quick", "--force", "--out", out_str]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let db = Connection::open_with_flags(&db_path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db");
    let jobs = query::<i64>(&db, "SELECT COUNT(*), SUM(attempts) FROM jobs");
    assert_eq!(jobs[0], [2 * n, 2 * n]);
    assert_eq!(checkpoint_folders(&out), folders);
}

#[test]
fn refuses_an_out_folder_it_must_not_touch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).expect("mkdir");
    std::fs::write(foreign.join("notes.txt"), "mine").expect("write");
    let earlier = tmp.path().join("earlier");
    std::fs::create_dir(&earlier).expect("mkdir");
    std::fs::write(earlier.join("filtermon-demo.json"), "{}").expect("write");
    std::fs::write(earlier.join("watch.toml"), "kept").expect("write");

    for (dir, force, why) in [
        (&file, false, "not a folder"),
        (&foreign, true, "not a filtermon demo folder"),
        (&earlier, false, "--force"),
    ] {
        let mut args = vec!["demo", "--quick", "--out", dir.to_str().expect("utf-8")];
        if force {
            args.push("--force");
        }
        let run = filtermon(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{}: {stderr}", dir.display());
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).expect("kept"),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(earlier.join("watch.toml")).expect("kept"),
        "kept"
    );
}
