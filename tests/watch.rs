//! The monitor end to end: the real binary on temp folders, real checkpoint files and a
//! real SQLite db (a real PostgreSQL one where a test says so). Checkpoints appear while the
//! daemon runs.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use filtermon::store::Store;
use serde_json::Value;

mod common;
use common::daemon::{events, kill, stop, unix_now, Env, BIN, FILTERS, SETTLE};
use common::{
    assert_input_error, assert_tb_points_match, copy_dir, expected_tb_points, fixture, parse_jsonl,
    read_jsonl, read_tb_with_filtermon, read_tb_with_tensorboard, repo, tensorboard_python,
    TbPoint,
};
use filtermon::monitor::tensorboard::event_file::own_files;

/// Writes a file in `parts` chunks with pauses shorter than the settle period.
fn write_slowly(from: &Path, to: &Path, parts: usize) {
    let bytes = fs::read(from).expect("read");
    let mut f = fs::File::create(to).expect("create");
    for (i, chunk) in bytes.chunks(bytes.len().div_ceil(parts)).enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        f.write_all(chunk).expect("write");
        f.flush().expect("flush");
    }
}

#[test]
fn checkpoints_appearing_over_time_are_each_scored_once_when_complete() {
    let env = Env::new("small", &[("a", ""), ("b", "inbox = \"inbox\"")], "");
    fs::create_dir_all(env.path("runs/b/inbox")).expect("mkdir");
    let mut daemon = env.spawn("d.log");
    env.wait_started("d.log");
    // When each checkpoint's last byte was written (or its event announced).
    let mut last_write: Vec<(&str, f64)> = Vec::new();

    // Written first, so that they sit unchanged longer than any later checkpoint: once a later
    // one is queued, each of these would have been too, were it eligible.
    // Written as stepN-tmp, then renamed: ready at the rename, never scored as -tmp.
    copy_dir(&fixture("gdn_only"), &env.path("runs/a/step300-tmp"));
    // Announced by an inbox event; not scored before the event however long it sits.
    copy_dir(&fixture("olmo2"), &env.path("runs/b/step400"));
    let queued = |name: &'static str| move |e: &Env| e.jobs().iter().any(|j| j.0 == name);

    // Copied whole.
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    last_write.push(("step100", unix_now()));

    // Written slowly, shard by shard, each shard in pieces.
    let src = fixture("hybrid_norope_sharded");
    let dst = env.path("runs/a/step200");
    fs::create_dir_all(&dst).expect("mkdir");
    for name in [
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
    ] {
        fs::copy(src.join(name), dst.join(name)).expect("copy");
    }
    for i in 1..=5 {
        let shard = format!("model-0000{i}-of-00005.safetensors");
        write_slowly(&src.join(&shard), &dst.join(&shard), 2);
    }
    last_write.push(("step200", unix_now()));

    env.wait_for("step200 queued", Duration::from_secs(30), queued("step200"));
    assert!(!env.jobs().iter().any(|j| j.0.starts_with("step300")));
    fs::rename(env.path("runs/a/step300-tmp"), env.path("runs/a/step300")).expect("rename");
    last_write.push(("step300", unix_now()));

    env.wait_for("step300 queued", Duration::from_secs(30), queued("step300"));
    assert!(!env.jobs().iter().any(|j| j.0 == "step400"));
    fs::write(env.path("runs/b/inbox/step-400.ready.json"), "{}").expect("event");
    last_write.push(("step400", unix_now()));

    let names = ["step100", "step200", "step300", "step400"];
    env.wait_for("all four scored", Duration::from_secs(60), |e| {
        names.iter().all(|n| e.done(n))
    });
    stop(&mut daemon);

    for (name, state, attempts, error) in env.jobs() {
        assert_eq!(
            (state.as_str(), attempts, error),
            ("done", 1, None),
            "{name} was scored once, without a failed attempt on a partial checkpoint"
        );
    }
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM results"), 4 * FILTERS);
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM token_losses"), 4);
    let mut scored = env.scored_events("d.log");
    scored.sort();
    assert_eq!(scored, names);
    assert_eq!(
        env.query_i64("SELECT tokens FROM checkpoints WHERE name = 'step300'"),
        300_000
    );

    // Latency: the daemon's own measure (results committed − found ready − scoring time).
    for e in events(&env.path("d.log"), "scored") {
        let latency = e["fields"]["latency_secs"].as_f64().expect("latency");
        eprintln!(
            "{}: ready→committed minus scoring: {latency:.3} s (scoring {:.3} s)",
            e["span"]["checkpoint"], e["fields"]["score_secs"]
        );
        assert!(latency < 1.0, "latency {latency} s");
    }
    // From outside: results committed − last write − settle − scoring time.
    for (name, written) in last_write {
        let job = &env.rows(
            "SELECT j.finished_at, j.score_secs FROM jobs j JOIN checkpoints c
             ON c.id = j.checkpoint_id WHERE c.name = ?1",
            &[&name],
        )[0];
        let (finished, score): (f64, f64) = (job.get(0).expect("at"), job.get(1).expect("secs"));
        // A renamed folder's files were already quiet, and an event vouches for its folder.
        let settle = if name == "step300" || name == "step400" {
            0.0
        } else {
            SETTLE
        };
        let latency = finished - written - settle - score;
        eprintln!("{name}: last write→committed minus settle and scoring: {latency:.3} s");
        assert!(latency < 1.0, "{name}: {latency} s");
    }
}

/// `(filter, scored_at)` rows of a query.
fn filters_and_times(env: &Env, sql: &str) -> Vec<(String, f64)> {
    env.rows(sql, &[])
        .iter()
        .map(|r| (r.get(0).expect("filter"), r.get(1).expect("scored_at")))
        .collect()
}

#[test]
fn kill_9_mid_score_leaves_a_sound_db_and_the_job_scored_once_after_restart() {
    kill_9_mid_score(Env::new("default", &[("a", "")], ""));
}

#[test]
fn on_postgres_kill_9_mid_score_leaves_the_job_scored_once_after_restart() {
    let Some(env) = Env::on_postgres("kill9", "default", &[("a", "")], "") else {
        return;
    };
    kill_9_mid_score(env);
}

/// A daemon killed with SIGKILL while it scores leaves no partial results, and the restarted
/// daemon scores the job once.
fn kill_9_mid_score(env: Env) {
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    let mut daemon = env.spawn("d1.log");
    env.wait_for("step100 scored", Duration::from_secs(120), |e| {
        e.done("step100")
    });
    let before = filters_and_times(
        &env,
        "SELECT filter, scored_at FROM results ORDER BY filter",
    );

    copy_dir(&fixture("gdn_only"), &env.path("runs/a/step200"));
    env.wait_for("step200 being scored", Duration::from_secs(30), |e| {
        e.jobs()
            .iter()
            .any(|j| j.0 == "step200" && j.1 == "running")
    });
    // Killed once the worker has begun scoring it, not merely leased it.
    env.wait_for("step200's scoring started", Duration::from_secs(30), |e| {
        events(&e.path("d1.log"), "scoring")
            .iter()
            .any(|v| v["span"]["checkpoint"] == "step200")
    });
    kill(&mut daemon, "-KILL");
    daemon.wait().expect("wait");

    let store = Store::open_existing(&env.db).expect("store");
    assert!(store.integrity_ok().expect("check"), "the store is sound");
    drop(store);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM results r JOIN checkpoints c ON c.id = r.checkpoint_id WHERE c.name = 'step200'"),
        0,
        "the interrupted score left no partial results"
    );

    let mut again = env.spawn("d2.log");
    env.wait_for(
        "step200 scored after restart",
        Duration::from_secs(120),
        |e| e.done("step200"),
    );
    stop(&mut again);
    let after = filters_and_times(
        &env,
        "SELECT filter, scored_at FROM results r JOIN checkpoints c
         ON c.id = r.checkpoint_id WHERE c.name = 'step100' ORDER BY filter",
    );
    assert_eq!(before, after, "step100's results are untouched");
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM results"), 2 * FILTERS);
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM jobs"), 2);
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM checkpoints"), 2);
    assert_eq!(env.scored_events("d2.log"), ["step200"]);
    let job = &env.rows(
        "SELECT j.attempts, j.lost_leases FROM jobs j
         JOIN checkpoints c ON c.id = j.checkpoint_id WHERE c.name = 'step200'",
        &[],
    )[0];
    let (attempts, lost): (i64, i64) = (job.get(0).expect("attempts"), job.get(1).expect("lost"));
    assert_eq!(
        (attempts, lost),
        (1, 1),
        "the kill cost a lost lease, not one of the job's attempts"
    );
}

#[test]
fn sigterm_returns_the_running_job_to_the_queue_and_exits_0() {
    let env = Env::new("default", &[("a", "")], "grace_secs = 0");
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    let mut daemon = env.spawn("d.log");
    env.wait_for("step100 being scored", Duration::from_secs(60), |e| {
        e.jobs().iter().any(|j| j.1 == "running")
    });
    stop(&mut daemon);
    assert_eq!(
        env.jobs(),
        [("step100".to_string(), "queued".to_string(), 0, None)]
    );
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM results"), 0);
}

#[test]
fn sigterm_returns_every_workers_running_job_to_the_queue_and_exits_0() {
    let env = Env::new("default", &[("a", "")], "grace_secs = 0");
    let cfg = fs::read_to_string(env.path("w.toml")).expect("config");
    fs::write(
        env.path("w.toml"),
        format!("devices = [\"cpu\", \"cpu\"]\n{cfg}"),
    )
    .expect("config");
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    copy_dir(&fixture("gdn_only"), &env.path("runs/a/step200"));
    let mut daemon = env.spawn("d.log");
    env.wait_for(
        "both checkpoints being scored",
        Duration::from_secs(60),
        |e| e.jobs().iter().filter(|j| j.1 == "running").count() == 2,
    );
    stop(&mut daemon);
    assert_eq!(
        env.jobs(),
        [
            ("step100".to_string(), "queued".to_string(), 0, None),
            ("step200".to_string(), "queued".to_string(), 0, None)
        ]
    );
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM results"), 0);
}

#[test]
fn a_corrupt_checkpoint_fails_with_its_error_and_the_others_are_scored() {
    let env = Env::new("small", &[("a", "")], "");
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step200"));
    fs::write(
        env.path("runs/a/step200/model.safetensors"),
        b"not a safetensors file",
    )
    .expect("corrupt");
    copy_dir(&fixture("olmo3_gqa_swa"), &env.path("runs/a/step300"));
    let mut daemon = env.spawn("d.log");
    env.wait_for(
        "step200 failed, the others done",
        Duration::from_secs(60),
        |e| {
            let jobs = e.jobs();
            jobs.len() == 3
                && jobs
                    .iter()
                    .all(|j| j.1 == "done" || (j.0 == "step200" && j.1 == "failed"))
        },
    );
    stop(&mut daemon);
    let jobs = env.jobs();
    let (_, _, attempts, error) = &jobs[1];
    assert_eq!(*attempts, 2, "retried up to max_attempts");
    let error = error.as_deref().expect("error recorded");
    assert!(error.contains("step200"), "{error}");

    let out = Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(env.path("w.toml"))
        .output()
        .expect("status");
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(status["runs"][0]["checkpoints"]["done"], 2);
    assert_eq!(status["runs"][0]["checkpoints"]["failed"], 1);
    assert_eq!(status["failures"][0]["checkpoint"], "step200");
    assert_eq!(status["runs"][0]["latest"][0]["checkpoint"], "step300");

    let out = Command::new(BIN)
        .args(["status", "--db"])
        .arg(env.path("state/mon.db"))
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 done, 0 queued, 0 running, 1 failed"),
        "{text}"
    );
    assert!(text.contains("failed for good"), "{text}");
}

#[test]
fn olmo_core_step_folders_are_scored_with_the_runs_tokenizer() {
    let tok = format!(
        "tokenizer = {:?}",
        repo().join("tests/fixtures/tokenizer.json")
    );
    let env = Env::new("small", &[("native", &tok), ("untokenized", "")], "");
    let native = repo().join("tests/fixtures/olmo_core/hybrid/step100");
    // As OLMo-core saves: written under `stepN-tmp`, then renamed.
    for run in ["native", "untokenized"] {
        let tmp = env.path(&format!("runs/{run}/step100-tmp"));
        copy_dir(&native, &tmp);
        fs::rename(&tmp, env.path(&format!("runs/{run}/step100"))).expect("rename");
    }
    let mut daemon = env.spawn("d.log");
    env.wait_for("both jobs settled", Duration::from_secs(60), |e| {
        let jobs = e.jobs();
        jobs.len() == 2 && jobs.iter().all(|j| j.1 == "done" || j.1 == "failed")
    });
    stop(&mut daemon);
    let done = env.query_i64(
        "SELECT COUNT(*) FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id
         JOIN runs r ON r.id = c.run_id WHERE r.name = 'native' AND j.state = 'done'",
    );
    assert_eq!(done, 1, "the native run's checkpoint is scored");
    let error: String = env.rows(
        "SELECT j.error FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id
         JOIN runs r ON r.id = c.run_id WHERE r.name = 'untokenized'",
        &[],
    )[0]
    .get(0)
    .expect("the untokenized run's job failed");
    assert!(error.contains("hold no tokenizer.json"), "{error}");
}

/// Six checkpoints of every architecture in run `a`, ready at once; their step folders' names.
fn backlog_of_six(env: &Env) -> [&'static str; 6] {
    let names = [
        "step100", "step200", "step300", "step400", "step500", "step600",
    ];
    let fixtures = [
        "olmo2",
        "gdn_only",
        "hybrid_rope",
        "olmo3_yarn",
        "hybrid_norope",
        "olmo3_gqa_swa",
    ];
    for (n, f) in names.iter().zip(fixtures) {
        copy_dir(&fixture(f), &env.path(&format!("runs/a/{n}")));
    }
    names
}

#[test]
fn two_daemons_on_one_db_never_score_a_job_twice() {
    two_daemons(Env::new("small", &[("a", "")], ""));
}

#[test]
fn on_postgres_two_daemons_never_score_a_job_twice() {
    let Some(env) = Env::on_postgres("two_daemons", "small", &[("a", "")], "") else {
        return;
    };
    two_daemons(env);
}

/// Two daemons on one store share a backlog; each job is scored by exactly one, once.
fn two_daemons(env: Env) {
    let names = backlog_of_six(&env);
    // The first daemon creates the db and prepares the evalset; the second joins it.
    let mut one = env.spawn("d1.log");
    env.wait_started("d1.log");
    let mut two = env.spawn("d2.log");
    env.wait_for("all scored", Duration::from_secs(90), |e| {
        names.iter().all(|n| e.done(n))
    });
    stop(&mut one);
    stop(&mut two);
    let mut scored = env.scored_events("d1.log");
    scored.extend(env.scored_events("d2.log"));
    scored.sort();
    assert_eq!(scored, names, "each job scored by exactly one daemon, once");
    assert!(env.jobs().iter().all(|j| j.2 == 1));
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM results"), 6 * FILTERS);
}

#[test]
fn two_workers_share_the_backlog_and_score_each_job_once() {
    let env = Env::new("small", &[("a", "")], "");
    // `cpu` listed twice: two CPU workers in one daemon. A second evalset gives every
    // checkpoint two jobs.
    let cfg = fs::read_to_string(env.path("w.toml")).expect("config");
    let second = format!(
        "[[evalsets]]\nname = \"short\"\ndir = \"evalset2\"\nsources = [{:?}]\n\
         tokenizer = {:?}\nwindow = 64\n",
        env.path("corpus"),
        repo().join("tests/fixtures/tokenizer.json")
    );
    fs::write(
        env.path("w.toml"),
        format!("devices = [\"cpu\", \"cpu\"]\n{cfg}{second}"),
    )
    .expect("config");
    let names = backlog_of_six(&env);
    let mut daemon = env.spawn("d.log");
    env.wait_for("all twelve jobs done", Duration::from_secs(120), |e| {
        e.query_i64("SELECT COUNT(*) FROM jobs WHERE state = 'done'") == 12
    });
    stop(&mut daemon);

    // Every (checkpoint, evalset) scored once, by one worker or the other.
    let mut scored: Vec<(String, String)> = Vec::new();
    let mut workers: Vec<String> = Vec::new();
    for e in events(&env.path("d.log"), "scored") {
        let field = |v: &Value, k: &str| v[k].as_str().unwrap_or("?").to_string();
        scored.push((
            field(&e["span"], "checkpoint"),
            field(&e["span"], "evalset"),
        ));
        let worker = e["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "worker"))
            .map(|s| field(s, "device"))
            .expect("a scored event inside its worker's span");
        workers.push(worker);
    }
    scored.sort();
    let mut expected: Vec<(String, String)> = names
        .iter()
        .flat_map(|n| {
            [
                (n.to_string(), "default".into()),
                (n.to_string(), "short".into()),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(scored, expected, "each job scored exactly once");
    workers.sort();
    workers.dedup();
    assert_eq!(workers, ["cpu#0", "cpu#1"], "both workers leased jobs");
    assert!(env.jobs().iter().all(|j| j.1 == "done" && j.2 == 1));
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM results"), 12 * FILTERS);
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM token_losses"), 12);
    assert!(
        env.path("charts/index.html").is_file(),
        "the report was drawn"
    );
}

#[test]
fn device_and_devices_together_or_no_device_exit_2_with_the_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("w.toml");
    let rest = "db = \"m.db\"\n[[evalsets]]\nname = \"e\"\ndir = \"e\"\n[[runs]]\n\
                name = \"r\"\narch = \"rnn\"\ndir = \"r\"\ntokens_per_step = 1\n";
    for (head, needle) in [
        (
            "device = \"cpu\"\ndevices = [\"cpu\"]\n",
            "w.toml:2: devices: give either `device` or `devices`, not both",
        ),
        ("devices = []\n", "w.toml:1: devices: is empty"),
        (
            "devices = [\"cuda:1\", \"cuda:1\"]\n",
            "w.toml:1: devices[1]: cuda:1 is listed twice",
        ),
    ] {
        fs::write(&cfg, format!("{head}{rest}")).expect("write");
        assert_watch_refuses(&cfg, needle);
    }
}

/// `watch` on `cfg` exits 2 with one line holding `needle`, and creates no store beside it.
fn assert_watch_refuses(cfg: &Path, needle: &str) {
    let out = Command::new(BIN)
        .args(["watch", "--config"])
        .arg(cfg)
        .output()
        .expect("run");
    assert_input_error(&out, &[needle]);
    let db = cfg.with_file_name("m.db");
    assert!(!db.exists(), "nothing started");
}

#[test]
fn a_run_folder_that_is_a_file_a_bad_filter_or_device_exit_2_with_line_and_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("w.toml");
    fs::write(tmp.path().join("r"), "not a folder").expect("write");
    let rest = "db = \"m.db\"\n[[evalsets]]\nname = \"e\"\ndir = \"e\"\n[[runs]]\n\
                name = \"r\"\narch = \"rnn\"\ndir = \"r\"\ntokens_per_step = 1\n";
    let not_a_folder = format!(
        "w.toml:8: runs[0].dir: {} is not a folder",
        tmp.path().join("r").display()
    );
    for (text, needle) in [
        (rest.to_string(), not_a_folder.as_str()),
        (
            format!("device = \"tpu\"\n{rest}"),
            "w.toml:1: device: expected cpu, cuda or cuda:N",
        ),
        (
            format!("{rest}[filters]\nx = \"colour == 3\"\n"),
            "w.toml:11: filters.x: filter 'colour == 3': column 1: unknown label 'colour'",
        ),
    ] {
        fs::write(&cfg, text).expect("write");
        assert_watch_refuses(&cfg, needle);
    }
}

#[test]
fn a_run_folder_that_does_not_exist_yet_is_waited_for_and_status_says_so() {
    let env = Env::new("small", &[("a", "")], "");
    fs::remove_dir(env.path("runs/a")).expect("rmdir");
    let mut daemon = env.spawn("d.log");
    env.wait_started("d.log");
    let warned = events(
        &env.path("d.log"),
        "run folder does not exist yet; waiting for it",
    );
    assert_eq!(warned.len(), 1, "one warning at start");
    assert_eq!(warned[0]["level"], "WARN");
    assert_eq!(warned[0]["fields"]["run"], "a");

    let status = |json: bool| {
        let out = Command::new(BIN)
            .arg("status")
            .args(json.then_some("--json"))
            .arg("--config")
            .arg(env.path("w.toml"))
            .output()
            .expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let waiting = format!(
        "run a (transformer): {} (waiting for its folder)\n",
        env.path("runs/a").display()
    );
    assert!(status(false).contains(&waiting), "{}", status(false));
    let json: Value = serde_json::from_str(&status(true)).expect("json");
    assert_eq!(json["runs"][0]["waiting_for_folder"], true);

    // The run starts: its folder and first checkpoint appear, and are watched and scored.
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    env.wait_for("step100 scored", Duration::from_secs(60), |e| {
        e.done("step100")
    });
    stop(&mut daemon);
    let text = status(false);
    assert!(
        text.contains(&format!(
            "run a (transformer): {}\n",
            env.path("runs/a").display()
        )),
        "{text}"
    );
    let json: Value = serde_json::from_str(&status(true)).expect("json");
    assert_eq!(json["runs"][0]["waiting_for_folder"], false);
}

#[test]
fn export_writes_one_row_per_result() {
    let env = Env::new("small", &[("a", "")], "");
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step7-anneal"));
    let mut daemon = env.spawn("d.log");
    env.wait_for("scored", Duration::from_secs(60), |e| {
        e.done("step7-anneal")
    });
    stop(&mut daemon);
    let export = |args: &[&str]| {
        Command::new(BIN)
            .args(["export", "--db"])
            .arg(env.path("state/mon.db"))
            .args(args)
            .output()
            .expect("export")
    };
    let out = export(&["--format", "csv"]);
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "run,arch,step,tokens,kind,checkpoint,evalset,filter,mean,n,ci_lo,ci_hi,top1,top5,scored_at,\
         gap,gap_ci_lo,gap_ci_hi"
    );
    assert_eq!(lines.len() as i64, 1 + FILTERS);
    assert!(lines[1].starts_with("a,transformer,7,7000,anneal,step7-anneal,default,all,"));

    let out = export(&["--format", "jsonl", "--run", "a"]);
    let rows = parse_jsonl(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rows.len() as i64, FILTERS);
    assert_eq!(rows[7]["filter"], "adj_adv");
    assert!(rows[0]["scored_at"].as_str().expect("time").ends_with('Z'));
    assert!(
        rows[0]["gap"].is_null(),
        "a run without a baseline has no gap"
    );

    let out = export(&["--format", "csv", "--run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn tensorboard_scalars_are_appended_as_results_commit_and_written_once_across_restarts() {
    let env = Env::new("small", &[("a", ""), ("b", "baseline = \"a\"")], "");
    let cfg = fs::read_to_string(env.path("w.toml")).expect("config");
    fs::write(env.path("w.toml"), format!("tensorboard = \"tb\"\n{cfg}")).expect("config");
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step7"));
    copy_dir(&fixture("gdn_only"), &env.path("runs/b/step7"));
    copy_dir(&fixture("olmo2"), &env.path("runs/b/step9-anneal"));
    let mut daemon = env.spawn("d1.log");
    env.wait_for("all three scored", Duration::from_secs(90), |e| {
        e.query_i64("SELECT COUNT(*) FROM jobs WHERE state = 'done'") == 3
    });
    stop(&mut daemon);

    let out = Command::new(BIN)
        .args(["export", "--format", "jsonl", "--db"])
        .arg(env.path("state/mon.db"))
        .output()
        .expect("export");
    let want = expected_tb_points(&parse_jsonl(&String::from_utf8_lossy(&out.stdout)));
    assert!(want
        .iter()
        .any(|p| p.0 == "b" && p.1 == "filtermon/default/all/gap"));
    assert!(want.iter().any(|p| p.0 == "b/anneal"));
    let tb = env.path("tb");
    let python = tensorboard_python();
    let check = |want: &[TbPoint]| {
        assert_tb_points_match(&read_tb_with_filtermon(&tb), want, "filtermon's reader");
        if let Some(py) = &python {
            let got = read_tb_with_tensorboard(py, &tb);
            assert_tb_points_match(&got, want, "TensorBoard's reader");
        }
    };
    let files = |run: &str| own_files(&tb.join(run)).expect("list");
    check(&want);
    for run in ["a", "b", "b/anneal"] {
        assert_eq!(
            files(run).len(),
            1,
            "{run}: one file for the daemon's start"
        );
    }

    // A restart with nothing new writes nothing, not even an empty file.
    let mut daemon = env.spawn("d2.log");
    env.wait_started("d2.log");
    stop(&mut daemon);
    check(&want);
    assert_eq!(files("b").len(), 1);

    // A crash mid-append tears the tail of a file; the next start writes what it lost into a
    // file of its own, and nothing else again.
    let torn = files("b").remove(0);
    let bytes = fs::read(&torn).expect("read");
    fs::write(&torn, &bytes[..bytes.len() - 3]).expect("tear");
    assert_eq!(read_tb_with_filtermon(&tb).len(), want.len() - 1);
    let mut daemon = env.spawn("d3.log");
    env.wait_started("d3.log");
    stop(&mut daemon);
    check(&want);
    assert_eq!(files("b").len(), 2);
    assert_eq!(files("a").len(), 1);
}

#[test]
fn config_and_db_errors_exit_2_with_the_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("w.toml");
    fs::write(
        &cfg,
        "db = \"m.db\"\n[[evalsets]]\nname = \"e\"\ndir = \"e\"\n[[runs]]\nname = \"r\"\n\
         arch = \"rnn\"\ndir = \"r\"\ntokens_per_step = 1\nsettle = 3\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["watch", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("w.toml:10: runs[0].settle: unknown field `settle`"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["status", "--db"])
        .arg(tmp.path().join("missing.db"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("missing.db").exists());
}

#[test]
fn compare_reads_stored_losses_without_rescoring() {
    compare_from_store(Env::new("small", &[("tf", ""), ("hy", "")], ""));
}

#[test]
fn on_postgres_compare_reads_stored_losses_without_rescoring() {
    let Some(env) = Env::on_postgres("compare", "small", &[("tf", ""), ("hy", "")], "") else {
        return;
    };
    compare_from_store(env);
}

/// `compare --db` on two checkpoints the daemon scored reads their stored per-token losses.
fn compare_from_store(env: Env) {
    // Cluster-robust statistics need more than one document.
    let text = fs::read_to_string(repo().join("data/eval/prose/02-the-lighthouse-keeper.txt"));
    let cut: String = text.expect("corpus").chars().take(1500).collect();
    fs::write(env.path("corpus/prose/doc2.txt"), cut).expect("write");
    copy_dir(&fixture("olmo2"), &env.path("runs/tf/step5"));
    copy_dir(&fixture("hybrid_rope"), &env.path("runs/hy/step5"));
    let mut daemon = env.spawn("d.log");
    env.wait_for("both scored", Duration::from_secs(90), |e| {
        e.query_i64("SELECT COUNT(*) FROM jobs WHERE state = 'done'") == 2
    });
    stop(&mut daemon);
    let out = env.path("cmp");
    let res = Command::new(BIN)
        .args(["compare", "--db"])
        .arg(env.db_arg())
        .args([
            "--a",
            "tf@5",
            "--b",
            "hy@step5",
            "--resamples",
            "50",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("compare");
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let metrics: Value =
        serde_json::from_str(&fs::read_to_string(out.join("metrics.json")).expect("metrics"))
            .expect("json");
    assert_eq!(metrics["a"]["name"], "tf@5");
    for f in [
        "comparison_plots.png",
        "labeled_dataset.jsonl",
        "token_category_map.csv",
    ] {
        assert!(
            fs::metadata(out.join(f)).expect(f).len() > 0,
            "{f} is empty"
        );
    }
    // The stored losses are the scorer's: the labeled dataset's loss_a matches `score`.
    let rows = read_jsonl(&out.join("labeled_dataset.jsonl"));
    assert!(rows.iter().any(|r| r["loss_a"].as_f64().is_some()));

    let missing = Command::new(BIN)
        .args(["compare", "--db"])
        .arg(env.db_arg())
        .args(["--a", "tf@5", "--b", "hy@99", "--out"])
        .arg(&out)
        .output()
        .expect("compare");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("hy@99"));
}

#[test]
fn alerts_fire_once_reach_the_hook_and_the_report_follows_each_commit() {
    let rules = "[[alerts]]\nname = \"any-gap\"\nrule = \"gap\"\nmax_gap = -1000.0\n\
                 filters = [\"all\"]\n\
                 [[alerts]]\nname = \"flip\"\nrule = \"sign_flip\"\nfilters = [\"all\"]\n\
                 [[alerts]]\nname = \"rise\"\nrule = \"rise\"\nmin_delta = 0.0\n";
    let env = Env::new(
        "small",
        &[("base", ""), ("other", "baseline = \"base\"")],
        rules,
    );
    let hook_out = env.path("hook.jsonl");
    let cfg = fs::read_to_string(env.path("w.toml")).expect("config");
    let hook = format!(
        "primary = [\"copy5\"]\non_alert = \"cat >> '{}'\"\n",
        hook_out.display()
    );
    fs::write(env.path("w.toml"), hook + &cfg).expect("config");
    for (run, ck) in [
        ("base", "step100"),
        ("base", "step200"),
        ("base", "step300-anneal"),
        ("other", "step100"),
        ("other", "step200"),
    ] {
        copy_dir(&fixture("olmo2"), &env.path(&format!("runs/{run}/{ck}")));
    }
    let mut daemon = env.spawn("d.log");
    let alerts = |e: &Env| e.query_i64("SELECT COUNT(*) FROM alerts");
    env.wait_for("five scored and two alerts", Duration::from_secs(90), |e| {
        e.query_i64("SELECT COUNT(*) FROM jobs WHERE state = 'done'") == 5 && alerts(e) == 2
    });
    // The hook runs on its own thread; give it a moment.
    env.wait_for("the hook output", Duration::from_secs(10), |e| {
        fs::read_to_string(e.path("hook.jsonl")).is_ok_and(|s| s.lines().count() == 2)
    });
    stop(&mut daemon);

    // Same weights everywhere: every gap is 0 (above −1000, never a sign change), and the
    // annealed base checkpoint has no earlier annealed one to rise from.
    let lines = fs::read_to_string(&hook_out).expect("hook output");
    let mut fired: Vec<(String, String)> = Vec::new();
    for line in lines.lines() {
        let v: Value = serde_json::from_str(line).expect("one JSON object per firing");
        for key in [
            "rule",
            "run",
            "filter",
            "checkpoint",
            "step",
            "tokens",
            "value",
            "threshold",
            "message",
        ] {
            assert!(!v[key].is_null(), "hook payload lacks {key}: {v}");
        }
        assert_eq!(
            (&v["rule"], &v["run"], &v["filter"]),
            (&"any-gap".into(), &"other".into(), &"all".into())
        );
        assert_eq!(v["value"].as_f64(), Some(0.0));
        fired.push((
            v["checkpoint"].as_str().unwrap_or("").into(),
            v["tokens"].to_string(),
        ));
    }
    fired.sort();
    assert_eq!(
        fired,
        vec![
            ("step100".to_string(), "100000".to_string()),
            ("step200".to_string(), "200000".to_string())
        ]
    );
    let warned = events(
        &env.path("d.log"),
        "other is 0.0000 nats worse than base on all (default) at 100000 tokens (limit -1000)",
    );
    assert_eq!(warned.len(), 1, "each firing is logged once at WARN");
    assert_eq!(warned[0]["level"], "WARN");

    // The report: every chart the index names exists, as PNG and SVG.
    let index = fs::read_to_string(env.path("charts/index.html")).expect("index.html");
    assert!(index.contains("any-gap"), "the alert list is in the report");
    let charts: Vec<&str> = index
        .split("src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    // A loss and a gap chart per filter, one over-training chart per recall row that has
    // tokens, and the recall cliff and copy-n snapshots with their gaps (no probe, so no gain
    // charts).
    let recall_rows = env.query_i64(
        "SELECT COUNT(DISTINCT filter) FROM results WHERE filter LIKE 'recall.%' AND mean IS NOT NULL",
    );
    assert!(recall_rows > 0);
    assert_eq!(charts.len() as i64, 2 * 8 + recall_rows + 4);
    for png in charts {
        assert!(env.path(&format!("charts/{png}")).is_file(), "{png}");
        let svg = png.replace(".png", ".svg");
        assert!(env.path(&format!("charts/{svg}")).is_file(), "{svg}");
    }

    // A restart re-evaluates every rule and stores nothing twice.
    // Its catch-up evaluates the rules, then redraws the report: a newer report means the
    // rules have run.
    let report = env.path("charts/index.html");
    let drawn = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).expect("report");
    let before_restart = drawn(&report);
    let mut again = env.spawn("d2.log");
    env.wait_started("d2.log");
    env.wait_for("the restart's report", Duration::from_secs(30), |_| {
        drawn(&report) > before_restart
    });
    stop(&mut again);
    assert_eq!(alerts(&env), 2);
    assert_eq!(
        fs::read_to_string(&hook_out).expect("hook").lines().count(),
        2
    );

    // The detection table: `other` is `base` itself, so no filter detects a regression, and
    // each (filter, kind) with paired gaps has its row.
    let db = env.path("state/mon.db");
    let detect = |format: &str| {
        let out = Command::new(BIN)
            .args(["export", "--detect", "--format", format, "--db"])
            .arg(&db)
            .output()
            .expect("export");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let csv = detect("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("run,baseline,evalset,filter,kind,primary,checkpoints,first_detected,lead")
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter()
            .any(|l| l.starts_with("other,base,default,copy5,stable,true,")),
        "{csv}"
    );
    assert!(
        rows.iter().all(|l| l.ends_with(",,")),
        "nothing detected: {csv}"
    );
    let jsonl = parse_jsonl(&detect("jsonl"));
    assert_eq!(jsonl.len(), rows.len());
    assert!(jsonl
        .iter()
        .all(|d| d["first_detected"].is_null() && d["lead"].is_null()));
    let status = Command::new(BIN)
        .args(["status", "--detect", "--db"])
        .arg(&db)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("copy5 *"),
        "{text}"
    );
    let index = fs::read_to_string(env.path("charts/index.html")).expect("index.html");
    assert!(
        index.contains("Detection of a regression"),
        "the report has the table"
    );

    // Listing and acknowledging.
    let out = Command::new(BIN)
        .args(["alerts", "--json", "--db"])
        .arg(&db)
        .output()
        .expect("alerts");
    assert!(out.status.success());
    let listed = parse_jsonl(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|a| a["acked_at"].is_null()));
    let id = listed[0]["id"].as_i64().expect("id");
    let ack = Command::new(BIN)
        .args(["alerts", "--ack", &id.to_string(), "--db"])
        .arg(&db)
        .status()
        .expect("ack");
    assert!(ack.success());
    assert_eq!(
        env.query_i64(&format!(
            "SELECT acked_at IS NOT NULL FROM alerts WHERE id = {id}"
        )),
        1
    );
    let missing = Command::new(BIN)
        .args(["alerts", "--ack", "999", "--db"])
        .arg(&db)
        .output()
        .expect("ack");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no alert with id 999"));
}

/// A baseline run and another run, with a `gap` rule that fires on every checkpoint of the
/// other run (any gap exceeds −1000).
fn gap_alert_env() -> Env {
    let rules = "[[alerts]]\nname = \"any-gap\"\nrule = \"gap\"\nmax_gap = -1000.0\n\
                 filters = [\"all\"]\n";
    Env::new(
        "small",
        &[("base", ""), ("other", "baseline = \"base\"")],
        rules,
    )
}

#[test]
fn a_hook_that_fails_or_hangs_is_logged_and_scoring_goes_on() {
    let env = gap_alert_env();
    let cfg = fs::read_to_string(env.path("w.toml")).expect("config");
    // The first firing hangs past the timeout, the second fails.
    let marker = env.path("hung-once");
    let hook = format!(
        "on_alert = \"if [ -e '{m}' ]; then exit 7; else touch '{m}'; sleep 30; fi\"\n\
         on_alert_timeout_secs = 0.5\n",
        m = marker.display()
    );
    fs::write(env.path("w.toml"), hook + &cfg).expect("config");
    copy_dir(&fixture("olmo2"), &env.path("runs/base/step100"));
    copy_dir(&fixture("olmo2"), &env.path("runs/other/step100"));
    let mut daemon = env.spawn("d.log");
    env.wait_for("the first alert", Duration::from_secs(60), |e| {
        e.query_i64("SELECT COUNT(*) FROM alerts") == 1
    });
    copy_dir(&fixture("olmo2"), &env.path("runs/base/step200"));
    copy_dir(&fixture("olmo2"), &env.path("runs/other/step200"));
    env.wait_for(
        "all four scored and two alerts",
        Duration::from_secs(60),
        |e| {
            e.query_i64("SELECT COUNT(*) FROM jobs WHERE state = 'done'") == 4
                && e.query_i64("SELECT COUNT(*) FROM alerts") == 2
        },
    );
    let hook_errors = |e: &Env| {
        fs::read_to_string(e.path("d.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "alert hook")
            .map(|v| v["fields"]["error"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    env.wait_for("both hook errors logged", Duration::from_secs(10), |e| {
        hook_errors(e).len() == 2
    });
    stop(&mut daemon);
    let errors = hook_errors(&env);
    assert!(errors[0].contains("timeout and was killed"), "{errors:?}");
    assert!(errors[1].contains("failed: exit status: 7"), "{errors:?}");
}

#[test]
fn firings_whose_hook_was_cut_short_by_kill_9_reach_the_hook_after_restart() {
    let env = gap_alert_env();
    let (pids, started, release, out) = (
        env.path("hook.pids"),
        env.path("hook-started"),
        env.path("release"),
        env.path("hook.jsonl"),
    );
    // The hook notes its pid, then holds each firing until `release` exists, and only then
    // passes it on: the daemon dies while the first firing's hook runs and the second waits
    // behind it, so neither hook run ever exits 0.
    let hook = format!(
        "on_alert = '''echo $$ >> \"{}\"; p=$(cat); touch \"{}\"; \
         while [ ! -e \"{}\" ]; do sleep 0.05; done; printf '%s\\n' \"$p\" >> \"{}\"'''\n\
         on_alert_timeout_secs = 60\n",
        pids.display(),
        started.display(),
        release.display(),
        out.display()
    );
    let cfg = fs::read_to_string(env.path("w.toml")).expect("config");
    fs::write(env.path("w.toml"), hook + &cfg).expect("config");
    for run in ["base", "other"] {
        for ck in ["step100", "step200"] {
            copy_dir(&fixture("olmo2"), &env.path(&format!("runs/{run}/{ck}")));
        }
    }
    let mut daemon = env.spawn("d1.log");
    env.wait_for(
        "two firings stored and the first one's hook running",
        Duration::from_secs(90),
        |e| e.query_i64("SELECT COUNT(*) FROM alerts") == 2 && started.exists(),
    );
    kill(&mut daemon, "-KILL");
    daemon.wait().expect("wait");
    // A crash takes the hook down too (an orphaned hook finishing on its own would hide
    // the loss).
    for pid in fs::read_to_string(&pids)
        .expect("hook pids")
        .split_whitespace()
    {
        let ok = Command::new("kill")
            .args(["-KILL", pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "the hook {pid} was still running");
    }
    assert!(!out.exists(), "no firing got through the hook yet");

    fs::remove_file(&started).expect("rm");
    let mut again = env.spawn("d2.log");
    env.wait_for("a hook run after restart", Duration::from_secs(60), |_| {
        started.exists()
    });
    fs::write(&release, "").expect("release");
    env.wait_for("every firing at the hook", Duration::from_secs(30), |_| {
        fs::read_to_string(&out).is_ok_and(|s| s.lines().count() >= 2)
    });
    env.wait_for(
        "every firing marked delivered",
        Duration::from_secs(10),
        |e| e.query_i64("SELECT COUNT(*) FROM alerts WHERE delivered_at IS NULL") == 0,
    );
    stop(&mut again);

    let mut delivered: Vec<i64> = fs::read_to_string(&out)
        .expect("hook output")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("one JSON object per firing");
            v["id"].as_i64().expect("id")
        })
        .collect();
    delivered.sort();
    let stored: Vec<i64> = env
        .rows("SELECT id FROM alerts ORDER BY id", &[])
        .iter()
        .map(|r| r.get(0).expect("id"))
        .collect();
    assert_eq!(
        delivered, stored,
        "each stored firing reached the hook once"
    );
    let resent = events(
        &env.path("d2.log"),
        "alerts not yet delivered sent to the hook again",
    );
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0]["fields"]["alerts"], 2);
}

#[test]
fn on_postgres_the_daemon_outlives_its_connections_being_cut() {
    let Some(env) = Env::on_postgres("cut_connections", "small", &[("a", "")], "") else {
        return;
    };
    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    let mut daemon = env.spawn("d.log");
    env.wait_for("step100 scored", Duration::from_secs(60), |e| {
        e.done("step100")
    });
    // What a restart or failover of the server does to every session of the daemon.
    common::services::cut_connections(env.db_arg().to_str().expect("a URL"));
    copy_dir(&fixture("gdn_only"), &env.path("runs/a/step200"));
    env.wait_for(
        "step200 scored after the cut",
        Duration::from_secs(90),
        |e| e.done("step200"),
    );
    stop(&mut daemon);
    assert_eq!(env.scored_events("d.log"), ["step100", "step200"]);
}
