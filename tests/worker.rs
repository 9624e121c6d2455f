//! `filtermon worker` run by hand, beside a `watch` with `kind = "slurm"` on the real one-node
//! test Slurm ([`common::services`]) whose worker jobs are submitted held (`--hold`): they pend
//! and never start, so the hand-run worker does their work, and the daemon's submissions can be
//! counted without workers racing it. `tests/slurm.rs` lets Slurm start them.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::daemon::{events, kill, stop, Env, BIN};
use common::services::{services, slurm_command, Services};
use common::{assert_input_error, copy_dir, fixture};

/// An env whose config runs its scoring in held Slurm jobs (`executor` keys besides the kind
/// and `extra`).
fn slurm_env(corpus: &str, runs: &[(&str, &str)], executor: &str) -> Env {
    Env::new(
        corpus,
        runs,
        &format!(
            "grace_secs = 0\n[executor]\nkind = \"slurm\"\n\
             extra = [\"--hold\", \"--comment=test\"]\n{executor}"
        ),
    )
}

/// The daemon's worker jobs in Slurm, as `id|STATE`, by the job name its script gives them.
fn slurm_jobs(s: &Services, env: &Env) -> Vec<String> {
    let Ok(script) = fs::read_to_string(env.path("slurm/worker.sbatch")) else {
        return Vec::new();
    };
    let name = script
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --job-name="))
        .expect("job name");
    let out = slurm_command(s, "squeue")
        .args(["--noheader", "--format=%i|%T", "--name", name])
        .output()
        .expect("squeue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut jobs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    jobs.sort();
    jobs
}

/// Cancels the daemon's held jobs, so that none outlives the test.
fn cancel(s: &Services, env: &Env) {
    let ids: Vec<String> = slurm_jobs(s, env)
        .iter()
        .filter_map(|j| j.split('|').next().map(str::to_string))
        .collect();
    if !ids.is_empty() {
        let ok = slurm_command(s, "scancel")
            .args(&ids)
            .status()
            .expect("scancel");
        assert!(ok.success(), "scancel {ids:?}");
    }
}

/// Cancels the held jobs when a test ends, failed ones too.
struct Cleanup<'a>(&'a Services, &'a Env);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // A second panic here would abort the test binary; a failed cleanup leaves jobs held.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cancel(self.0, self.1)));
    }
}

/// `watch` on the env's config with the test Slurm, its JSON log in `log`.
fn daemon(s: &Services, env: &Env, log: &str) -> Child {
    env.command(log)
        .env("SLURM_CONF", &s.slurm_conf)
        .spawn()
        .expect("spawn filtermon watch")
}

/// `filtermon worker` on the env's config, its JSON log in `log`.
fn worker(env: &Env, log: &str, extra: &[&str]) -> Child {
    let log = fs::File::create(env.path(log)).expect("log");
    Command::new(BIN)
        .args(["--log-format", "json", "worker", "--config"])
        .arg(env.path("w.toml"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn filtermon worker")
}

#[test]
fn watch_submits_one_job_per_due_job_up_to_max_jobs_and_a_worker_by_hand_scores_them() {
    let Some(s) = services() else { return };
    let env = slurm_env(
        "small",
        &[("a", ""), ("b", "baseline = \"a\"")],
        "max_jobs = 2\nworker_idle_secs = 30",
    );
    let _cleanup = Cleanup(s, &env);
    let mut daemon = daemon(s, &env, "d.log");
    env.wait_started("d.log");
    let script = fs::read_to_string(env.path("slurm/worker.sbatch")).expect("script");
    assert!(script.starts_with("#!/bin/bash\n#SBATCH --job-name=filtermon-"));
    assert!(
        script.contains("\n#SBATCH --hold\n#SBATCH --comment=test\n#SBATCH --export=ALL\nexec ")
    );
    assert!(script.ends_with(&format!(
        " --log-format json worker --config {}\n",
        env.path("w.toml").display()
    )));
    assert!(
        slurm_jobs(s, &env).is_empty(),
        "no job queued, no worker job"
    );

    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    copy_dir(&fixture("olmo2"), &env.path("runs/b/step100"));
    copy_dir(&fixture("gdn_only"), &env.path("runs/b/step200"));
    env.wait_for("two jobs submitted", Duration::from_secs(30), |e| {
        slurm_jobs(s, e).len() == 2
    });
    // Several ticks later still two: pending jobs count as live, and max_jobs caps them.
    env.wait_for("three jobs queued", Duration::from_secs(30), |e| {
        e.jobs().len() == 3
    });
    std::thread::sleep(Duration::from_secs(5));
    let held = slurm_jobs(s, &env);
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.iter().all(|j| j.ends_with("|PENDING")), "{held:?}");
    let mut submitted: Vec<String> = events(&env.path("d.log"), "worker job submitted")
        .iter()
        .map(|e| format!("{}|PENDING", e["fields"]["slurm_job"].as_str().expect("id")))
        .collect();
    submitted.sort();
    assert_eq!(submitted, held, "the jobs in Slurm are the ones submitted");

    // The workers never start: one by hand does their work, exactly as they would.
    let started = Instant::now();
    let mut hand = worker(&env, "w.log", &["--idle-secs", "1"]);
    let status = hand.wait().expect("wait");
    assert_eq!(
        status.code(),
        Some(0),
        "a worker exits 0 when the queue is idle"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let mut scored: Vec<String> = events(&env.path("w.log"), "scored")
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["span"]["run"].as_str().unwrap_or("?"),
                e["span"]["checkpoint"].as_str().unwrap_or("?")
            )
        })
        .collect();
    scored.sort();
    assert_eq!(scored, ["a/step100", "b/step100", "b/step200"]);
    assert_eq!(
        events(
            &env.path("w.log"),
            "no job due for the idle time; worker exits"
        )
        .len(),
        1
    );
    for (name, state, attempts, error) in env.jobs() {
        assert_eq!(
            (state.as_str(), attempts, error),
            ("done", 1, None),
            "{name}"
        );
    }

    // The daemon does the work after the workers' commits: paired gaps and charts.
    env.wait_for("the paired gaps of b", Duration::from_secs(30), |e| {
        e.query_i64("SELECT COUNT(*) FROM paired_gaps") > 0
    });
    env.wait_for("the report", Duration::from_secs(30), |e| {
        e.path("charts/index.html").is_file()
    });
    assert!(events(&env.path("d.log"), "scored").is_empty());

    // The jobs leave Slurm's queue: logged as ended, and nothing new submitted for an idle queue.
    cancel(s, &env);
    env.wait_for("both jobs logged as ended", Duration::from_secs(30), |e| {
        events(&e.path("d.log"), "worker job ended").len() == 2
    });
    let ended = events(&env.path("d.log"), "worker job ended");
    assert_eq!(ended[0]["fields"]["state"], "CANCELLED");
    std::thread::sleep(Duration::from_secs(3));
    assert!(slurm_jobs(s, &env).is_empty(), "no job for an idle queue");
    stop(&mut daemon);
}

#[test]
fn sigterm_returns_a_workers_job_to_the_queue_at_once_and_exits_0() {
    let Some(s) = services() else { return };
    let env = slurm_env("default", &[("a", "")], "max_jobs = 1");
    let _cleanup = Cleanup(s, &env);
    let mut first = daemon(s, &env, "d.log");
    env.wait_started("d.log");
    copy_dir(&fixture("gdn_only"), &env.path("runs/a/step100"));
    env.wait_for(
        "the job queued and a worker submitted",
        Duration::from_secs(30),
        |e| e.jobs().len() == 1 && slurm_jobs(s, e).len() == 1,
    );
    let held = slurm_jobs(s, &env);
    let id = held[0].split('|').next().expect("id").to_string();
    // A restarted daemon finds its jobs by name: the same config, the same job name.
    stop(&mut first);
    let mut second = daemon(s, &env, "d2.log");
    env.wait_for("the job found again", Duration::from_secs(30), |e| {
        let found = events(
            &e.path("d2.log"),
            "worker jobs of this config already in Slurm",
        );
        found.first().map(|f| f["fields"]["jobs"].clone()) == Some(id.clone().into())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(slurm_jobs(s, &env), held, "no second submission");

    let mut hand = worker(&env, "w.log", &[]);
    env.wait_for("the worker scoring", Duration::from_secs(60), |e| {
        !events(&e.path("w.log"), "scoring").is_empty()
    });
    let signalled = Instant::now();
    kill(&mut hand, "-TERM");
    let status = hand.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "returned at once, not after the score: {:?}",
        signalled.elapsed()
    );
    assert_eq!(
        env.jobs(),
        [("step100".to_string(), "queued".to_string(), 0, None)]
    );
    stop(&mut second);
    cancel(s, &env);
}

#[test]
fn slurm_start_errors_and_bad_executor_keys_exit_2_with_one_line() {
    let Some(s) = services() else { return };
    let env = slurm_env("small", &[("a", "")], "partition = \"nope\"");
    let run = |path: &str| {
        Command::new(BIN)
            .args(["watch", "--config"])
            .arg(env.path("w.toml"))
            .env("PATH", path)
            .env("SLURM_CONF", &s.slurm_conf)
            .output()
            .expect("run")
    };
    let path = std::env::var("PATH").unwrap_or_default();
    // No Slurm at all.
    let empty = env.path("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    assert_input_error(
        &run(&empty.display().to_string()),
        &["executor.kind = \"slurm\"", "sbatch: not found on PATH"],
    );
    // A job Slurm rejects: a partition the cluster does not have.
    assert_input_error(
        &run(&path),
        &[
            "worker.sbatch: Slurm would not run the worker job",
            "invalid partition specified: nope",
        ],
    );
    assert!(slurm_jobs(s, &env).is_empty());

    // Slurm keys under a local executor.
    let cfg = fs::read_to_string(env.path("w.toml")).expect("config");
    fs::write(
        env.path("w.toml"),
        cfg.replace("kind = \"slurm\"", "kind = \"local\""),
    )
    .expect("config");
    assert_input_error(
        &run(&path),
        &[
            "w.toml:",
            "executor.partition: only used with kind = \"slurm\"",
        ],
    );
    let out = Command::new(BIN)
        .args(["worker", "--config"])
        .arg(env.path("w.toml"))
        .output()
        .expect("run");
    assert_input_error(&out, &["executor.partition"]);

    fs::write(env.path("w.toml"), cfg.replace("partition = \"nope\"", "")).expect("config");
    let bad_idle = Command::new(BIN)
        .args(["worker", "--idle-secs", "0", "--config"])
        .arg(env.path("w.toml"))
        .output()
        .expect("run");
    assert_input_error(&bad_idle, &["--idle-secs: must be a number of seconds > 0"]);
}
