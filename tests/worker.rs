//! `filtermon worker` run by hand, beside a `watch` with `kind = "slurm"` whose Slurm is a
//! stand-in: shell scripts named `sbatch`, `squeue` and `scontrol` first on `PATH`, which
//! record submissions and list them as pending jobs that never start. So these tests need no
//! cluster: the real one is `tests/slurm.rs`.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::daemon::{events, kill, stop, Env, BIN};
use common::{assert_input_error, copy_dir, fixture};

/// Writes the stand-in Slurm commands to `<env>/fake-slurm`; returns the `PATH` that puts
/// them first. Submitted jobs are lines `id|PENDING` of `<env>/fake-slurm/jobs`; `sbatch
/// --test-only` fails when the file `reject` is there.
fn fake_slurm(env: &Env) -> String {
    let dir = env.path("fake-slurm");
    fs::create_dir_all(&dir).expect("mkdir");
    let d = dir.display();
    let sbatch = format!(
        r#"#!/bin/sh
case "$1" in
  --version) echo "slurm 0.0 (stand-in)" ;;
  --test-only)
    if [ -e "{d}/reject" ]; then
      echo "sbatch: error: invalid partition specified: nope" >&2
      echo "allocation failure: Invalid partition name specified" >&2
      exit 1
    fi
    echo "sbatch: Job 1 to start at now using 1 processors on nodes x in partition debug" >&2 ;;
  --parsable)
    n=$(( $(cat "{d}/jobs" 2>/dev/null | wc -l) + 101 ))
    echo "$n|PENDING" >> "{d}/jobs"
    echo "$2" > "{d}/script"
    echo "$n" ;;
  *) exit 2 ;;
esac
"#
    );
    let squeue = format!("#!/bin/sh\ncat \"{d}/jobs\" 2>/dev/null || true\n");
    let scontrol = "#!/bin/sh\necho \"JobId=$4 JobState=CANCELLED Reason=None ExitCode=0:15\"\n";
    for (name, text) in [
        ("sbatch", sbatch.as_str()),
        ("squeue", &squeue),
        ("scontrol", scontrol),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).expect("write");
        make_executable(&path);
    }
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The jobs "submitted" to the stand-in Slurm.
fn fake_jobs(env: &Env) -> Vec<String> {
    fs::read_to_string(env.path("fake-slurm/jobs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// An env whose config runs its scoring in Slurm jobs (`executor` keys besides the kind).
fn slurm_env(corpus: &str, runs: &[(&str, &str)], executor: &str) -> Env {
    Env::new(
        corpus,
        runs,
        &format!("grace_secs = 0\n[executor]\nkind = \"slurm\"\n{executor}"),
    )
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
    let env = slurm_env(
        "small",
        &[("a", ""), ("b", "baseline = \"a\"")],
        "max_jobs = 2\nworker_idle_secs = 30\nextra = [\"--comment=test\"]",
    );
    let path = fake_slurm(&env);
    let mut daemon = env
        .command("d.log")
        .env("PATH", &path)
        .spawn()
        .expect("spawn");
    env.wait_started("d.log");
    let script = fs::read_to_string(env.path("slurm/worker.sbatch")).expect("script");
    assert!(script.starts_with("#!/bin/bash\n#SBATCH --job-name=filtermon-"));
    assert!(script.contains("\n#SBATCH --comment=test\n#SBATCH --export=ALL\nexec "));
    assert!(script.ends_with(&format!(
        " --log-format json worker --config {}\n",
        env.path("w.toml").display()
    )));
    assert!(fake_jobs(&env).is_empty(), "no job queued, no worker job");

    copy_dir(&fixture("olmo2"), &env.path("runs/a/step100"));
    copy_dir(&fixture("olmo2"), &env.path("runs/b/step100"));
    copy_dir(&fixture("gdn_only"), &env.path("runs/b/step200"));
    env.wait_for("two jobs submitted", Duration::from_secs(30), |e| {
        fake_jobs(e).len() == 2
    });
    // Several ticks later still two: pending jobs count as live, and max_jobs caps them.
    env.wait_for("three jobs queued", Duration::from_secs(30), |e| {
        e.jobs().len() == 3
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(fake_jobs(&env), ["101|PENDING", "102|PENDING"]);
    let submitted = events(&env.path("d.log"), "worker job submitted");
    assert_eq!(submitted.len(), 2);
    assert_eq!(submitted[0]["fields"]["slurm_job"], "101");

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
    fs::write(env.path("fake-slurm/jobs"), "").expect("empty");
    env.wait_for("both jobs logged as ended", Duration::from_secs(30), |e| {
        events(&e.path("d.log"), "worker job ended").len() == 2
    });
    let ended = events(&env.path("d.log"), "worker job ended");
    assert_eq!(ended[0]["fields"]["state"], "CANCELLED");
    std::thread::sleep(Duration::from_secs(3));
    assert!(fake_jobs(&env).is_empty(), "no job for an idle queue");
    stop(&mut daemon);
}

#[test]
fn sigterm_returns_a_workers_job_to_the_queue_at_once_and_exits_0() {
    let env = slurm_env("default", &[("a", "")], "max_jobs = 1");
    let path = fake_slurm(&env);
    let mut daemon = env
        .command("d.log")
        .env("PATH", &path)
        .spawn()
        .expect("spawn");
    env.wait_started("d.log");
    copy_dir(&fixture("gdn_only"), &env.path("runs/a/step100"));
    env.wait_for(
        "the job queued and a worker submitted",
        Duration::from_secs(30),
        |e| e.jobs().len() == 1 && fake_jobs(e).len() == 1,
    );
    // A restarted daemon finds its jobs by name: the same config, the same job name.
    stop(&mut daemon);
    let mut daemon = env
        .command("d2.log")
        .env("PATH", &path)
        .spawn()
        .expect("spawn");
    env.wait_for("the job found again", Duration::from_secs(30), |e| {
        let found = events(
            &e.path("d2.log"),
            "worker jobs of this config already in Slurm",
        );
        found.first().map(|f| f["fields"]["jobs"].clone()) == Some("101".into())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fake_jobs(&env), ["101|PENDING"], "no second submission");

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
    stop(&mut daemon);
}

#[test]
fn slurm_start_errors_and_bad_executor_keys_exit_2_with_one_line() {
    let env = slurm_env("small", &[("a", "")], "partition = \"nope\"");
    let run = |path: &str| {
        Command::new(BIN)
            .args(["watch", "--config"])
            .arg(env.path("w.toml"))
            .env("PATH", path)
            .output()
            .expect("run")
    };
    // No Slurm at all.
    let empty = env.path("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    assert_input_error(
        &run(&empty.display().to_string()),
        &["executor.kind = \"slurm\"", "sbatch: not found on PATH"],
    );
    // A job Slurm rejects.
    let path = fake_slurm(&env);
    fs::write(env.path("fake-slurm/reject"), "").expect("write");
    assert_input_error(
        &run(&path),
        &[
            "worker.sbatch: Slurm would not run the worker job: sbatch: invalid partition \
             specified: nope; allocation failure: Invalid partition name specified",
        ],
    );
    assert!(fake_jobs(&env).is_empty());

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
