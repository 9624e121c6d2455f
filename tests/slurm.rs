//! The Slurm executor end to end: `watch` with `kind = "slurm"` on a real one-node Slurm and a
//! PostgreSQL store ([`common::services`]); every checkpoint is scored by a `filtermon worker`
//! job that Slurm started. Skipped when `FILTERMON_SKIP_CLUSTER=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::daemon::{events, stop, unix_now, Env, BIN, SETTLE};
use common::services::{fresh_database, services, slurm_command, Services};
use common::{copy_dir, fixture};

/// Worker jobs at most: more than the one-node test cluster runs at once (its CPUs), so one
/// pends, and a pending job must count as live.
const MAX_JOBS: usize = 3;

/// Worker idle time before it exits.
const IDLE_SECS: f64 = 3.0;

/// A checkpoint as `(run, folder name)`.
type Key = (String, String);

fn key(run: &str, checkpoint: &str) -> Key {
    (run.to_string(), checkpoint.to_string())
}

/// `(slurm job id, event)` of every event with `message` in the workers' Slurm output files.
fn worker_events(env: &Env, message: &str) -> Vec<(String, Value)> {
    let Ok(dir) = fs::read_dir(env.path("slurm")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir {
        let path = e.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(id) = name
            .strip_prefix("worker-")
            .and_then(|n| n.strip_suffix(".out"))
        else {
            continue;
        };
        for ev in events(&path, message) {
            out.push((id.to_string(), ev));
        }
    }
    out
}

/// The run and checkpoint of a worker's job event.
fn job_key(ev: &Value) -> Key {
    key(
        ev["span"]["run"].as_str().expect("run"),
        ev["span"]["checkpoint"].as_str().expect("checkpoint"),
    )
}

/// A worker job scoring a checkpoint of run b or c that nobody has scored yet, and that
/// checkpoint.
fn mid_job(env: &Env) -> Option<(String, Key)> {
    let done: BTreeSet<Key> = worker_events(env, "scored")
        .iter()
        .map(|(_, ev)| job_key(ev))
        .collect();
    worker_events(env, "scoring")
        .into_iter()
        .map(|(id, ev)| (id, job_key(&ev)))
        .find(|(_, k)| k.0 != "a" && !done.contains(k))
}

/// The Slurm job ids that a daemon's log says it submitted.
fn submitted(env: &Env, log: &str) -> Vec<String> {
    events(&env.path(log), "worker job submitted")
        .iter()
        .map(|e| e["fields"]["slurm_job"].as_str().expect("id").to_string())
        .collect()
}

/// The live jobs named `name`; asserts that there are never more than `MAX_JOBS`.
fn live(s: &Services, name: &str) -> BTreeSet<String> {
    let out = slurm_command(s, "squeue")
        .args(["--noheader", &format!("--name={name}"), "--format=%i|%T"])
        .output()
        .expect("squeue");
    assert!(out.status.success(), "squeue: {out:?}");
    let ids: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .filter(|(_, state)| ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"].contains(state))
        .map(|(id, _)| id.to_string())
        .collect();
    assert!(
        ids.len() <= MAX_JOBS,
        "{} live worker jobs, more than max_jobs = {MAX_JOBS}: {ids:?}",
        ids.len()
    );
    ids
}

/// Checkpoints by state over every run, from `filtermon status --json`.
fn states(env: &Env) -> BTreeMap<String, u64> {
    let out = Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(env.path("w.toml"))
        .output()
        .expect("status");
    let mut counts = BTreeMap::new();
    let Ok(json) = serde_json::from_slice::<Value>(&out.stdout) else {
        return counts;
    };
    for run in json["runs"].as_array().into_iter().flatten() {
        for (state, n) in run["checkpoints"].as_object().into_iter().flatten() {
            *counts.entry(state.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    counts
}

#[test]
fn slurm_workers_score_every_checkpoint_once_across_a_cancelled_worker_and_a_daemon_restart() {
    let Some(s) = services() else { return };
    let db = fresh_database(s, "slurm_executor");
    let env = Env::with_store(
        "default",
        &[
            ("a", ""),
            ("b", "baseline = \"a\""),
            ("c", "baseline = \"a\""),
        ],
        &format!(
            "grace_secs = 5\n[executor]\nkind = \"slurm\"\nmax_jobs = {MAX_JOBS}\n\
             worker_idle_secs = {IDLE_SECS}"
        ),
        Some(db),
    );
    let spawn = |log: &str| {
        env.command(log)
            .env("SLURM_CONF", &s.slurm_conf)
            .spawn()
            .expect("spawn filtermon watch")
    };

    let mut daemon = spawn("d1.log");
    env.wait_started("d1.log");
    let script = events(&env.path("d1.log"), "Slurm worker script written");
    let name = script[0]["fields"]["job_name"]
        .as_str()
        .expect("job name")
        .to_string();
    let text = fs::read_to_string(env.path("slurm/worker.sbatch")).expect("script");
    assert!(
        text.contains(&format!("#SBATCH --job-name={name}\n"))
            && text.contains(" worker --config "),
        "{text}"
    );
    assert!(
        live(s, &name).is_empty(),
        "no worker job before any checkpoint"
    );

    // A backlog, so that workers are busy through the cancel and the restart.
    let mut ready: BTreeMap<Key, f64> = BTreeMap::new();
    for (run, step, model) in [
        ("a", 100, "olmo2"),
        ("b", 100, "hybrid_norope"),
        ("c", 100, "gdn_only"),
        ("a", 200, "olmo2"),
        ("c", 200, "gdn_only"),
    ] {
        let folder = format!("step{step}");
        copy_dir(&fixture(model), &env.path(&format!("runs/{run}/{folder}")));
        ready.insert(key(run, &folder), unix_now() + SETTLE);
    }

    // Cancel a worker while it scores a job: one of the slower hybrid or GDN checkpoints.
    env.wait_for(
        "a worker scoring run b or c",
        Duration::from_secs(120),
        |e| {
            live(s, &name);
            mid_job(e).is_some()
        },
    );
    let (cancelled, cancelled_key) = mid_job(&env).expect("a worker mid-job");
    let ok = slurm_command(s, "scancel")
        .arg(&cancelled)
        .status()
        .expect("scancel")
        .success();
    assert!(ok, "scancel {cancelled}");
    let cancelled_log = env.path(&format!("slurm/worker-{cancelled}.out"));
    env.wait_for(
        "the cancelled worker to return its job",
        Duration::from_secs(30),
        |_| !events(&cancelled_log, "worker stopped").is_empty(),
    );
    assert_eq!(
        events(
            &cancelled_log,
            "stop requested; returning the current job to the queue"
        )
        .len(),
        1
    );

    // Restart the daemon while workers run: the new one finds them and submits no duplicate.
    let before = live(s, &name);
    assert!(!before.is_empty(), "workers are running at the restart");
    stop(&mut daemon);
    assert!(
        !live(s, &name).is_empty(),
        "a stopped daemon leaves its worker jobs running"
    );
    let first = submitted(&env, "d1.log");
    let mut daemon = spawn("d2.log");
    env.wait_started("d2.log");
    env.wait_for(
        "the restarted daemon to list its worker jobs",
        Duration::from_secs(30),
        |e| {
            live(s, &name);
            !events(
                &e.path("d2.log"),
                "worker jobs of this config already in Slurm",
            )
            .is_empty()
        },
    );
    let found = events(
        &env.path("d2.log"),
        "worker jobs of this config already in Slurm",
    );
    let found: BTreeSet<String> = found[0]["fields"]["jobs"]
        .as_str()
        .expect("jobs")
        .split(',')
        .map(str::to_string)
        .collect();
    assert!(
        found.iter().all(|id| first.contains(id)),
        "found {found:?}, submitted {first:?}"
    );

    // A checkpoint found by the restarted daemon.
    copy_dir(&fixture("hybrid_norope"), &env.path("runs/b/step200"));
    ready.insert(key("b", "step200"), unix_now() + SETTLE);

    let total = ready.len() as u64;
    env.wait_for("every checkpoint scored", Duration::from_secs(600), |e| {
        live(s, &name);
        let st = states(e);
        st.get("done") == Some(&total)
            && ["queued", "running", "failed"]
                .iter()
                .all(|k| st.get(*k).copied().unwrap_or(0) == 0)
    });
    // Idle workers exit on their own; nobody cancels them.
    env.wait_for(
        "the workers to exit when idle",
        Duration::from_secs(60),
        |_| live(s, &name).is_empty(),
    );
    stop(&mut daemon);

    // Each checkpoint scored exactly once, each by a worker job that the daemons submitted.
    let second = submitted(&env, "d2.log");
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a job id submitted twice: {all:?}"
    );
    let scored = worker_events(&env, "scored");
    let mut keys: Vec<Key> = scored.iter().map(|(_, ev)| job_key(ev)).collect();
    keys.sort();
    let want: Vec<Key> = ready.keys().cloned().collect();
    assert_eq!(keys, want, "every checkpoint scored once");
    for (id, ev) in &scored {
        assert!(all.contains(id), "job {id} was not submitted by a daemon");
        assert!(
            !(id == &cancelled && job_key(ev) == cancelled_key),
            "the cancelled worker committed its job"
        );
    }
    let ran: BTreeSet<String> = fs::read_dir(env.path("slurm"))
        .expect("logs")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("worker-")?
                    .strip_suffix(".out")?
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        ran,
        distinct.iter().map(|s| s.to_string()).collect(),
        "every submitted job ran and wrote its output file"
    );
    for log in ["d1.log", "d2.log"] {
        assert!(
            events(&env.path(log), "scored").is_empty(),
            "the daemon scores nothing itself"
        );
    }
    // Latency through Slurm: the worker's own measure (committed − found ready − scoring), and
    // from outside (committed − copied − settle − scoring).
    let mut fastest = f64::INFINITY;
    for (id, ev) in &scored {
        let k = job_key(ev);
        let latency = ev["fields"]["latency_secs"].as_f64().expect("latency");
        fastest = fastest.min(latency);
        let score = ev["fields"]["score_secs"].as_f64().expect("score");
        let committed = timestamp_secs(ev["timestamp"].as_str().expect("timestamp"));
        let outside = committed - ready[&k] - score;
        eprintln!(
            "{}/{} (job {id}): ready→committed minus scoring {latency:.2} s; from the copy \
             {outside:.2} s; scoring {score:.2} s",
            k.0, k.1
        );
    }
    // The first checkpoints waited for no other job, only for a worker job to be submitted and
    // to start; the later ones also queued behind the backlog.
    assert!(
        fastest < 10.0,
        "ready→committed minus scoring: {fastest} s at best"
    );
}

/// Unix seconds of an RFC 3339 UTC timestamp as tracing writes it (`2026-01-02T03:04:05.678Z`).
fn timestamp_secs(ts: &str) -> f64 {
    let (date, time) = ts
        .trim_end_matches('Z')
        .split_once('T')
        .expect("a timestamp");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().expect("date")).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t: Vec<f64> = time.split(':').map(|p| p.parse().expect("time")).collect();
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}
