//! The test services are real: PostgreSQL answers queries on a fresh database, and the one-node
//! Slurm runs a batch job to completion (scripts/services.sh, tests/common/services.rs).

use std::time::{Duration, Instant};

mod common;
use common::services::{fresh_database, psql, services, slurm_command, stdout_ok};

#[test]
fn postgres_answers_on_a_fresh_database() {
    let Some(s) = services() else { return };
    let a = fresh_database(s, "cluster-services");
    let b = fresh_database(s, "cluster-services");
    assert_ne!(a, b, "two fresh databases share a URL");
    for url in [&a, &b] {
        let out = psql(url)
            .args(["-At", "-c", "SELECT 1, current_database()"])
            .output()
            .expect("run psql");
        let got = stdout_ok(out, "psql SELECT 1");
        let db = url.rsplit('/').next().expect("a database in the URL");
        assert_eq!(got.trim(), format!("1|{db}"));
        assert!(db.starts_with("cluster_services_"), "{db}");
    }
    // Fresh means empty: no tables but the catalogue's.
    let out = psql(&a)
        .args([
            "-At",
            "-c",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        ])
        .output()
        .expect("run psql");
    assert_eq!(stdout_ok(out, "psql count").trim(), "0");
}

/// `scontrol show job -o ID`'s `JobState=`.
fn job_state(s: &common::services::Services, id: &str) -> String {
    let out = slurm_command(s, "scontrol")
        .args(["show", "job", "-o", id])
        .output()
        .expect("run scontrol");
    let text = stdout_ok(out, "scontrol show job");
    text.split_whitespace()
        .find_map(|f| f.strip_prefix("JobState="))
        .unwrap_or_else(|| panic!("no JobState in {text:?}"))
        .to_string()
}

#[test]
fn slurm_runs_a_batch_job_to_completion() {
    let Some(s) = services() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_file = tmp.path().join("hi.out");
    let out = slurm_command(s, "sbatch")
        .arg("--parsable")
        .arg("--job-name=cluster-services")
        .arg(format!("--chdir={}", tmp.path().display()))
        .arg(format!("--output={}", out_file.display()))
        .args(["--wrap", "echo hi"])
        .output()
        .expect("run sbatch");
    let parsed = stdout_ok(out, "sbatch");
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let id = parsed
        .trim()
        .split(';')
        .next()
        .expect("a job id")
        .to_string();
    assert!(id.parse::<u64>().is_ok(), "sbatch printed {parsed:?}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut state = job_state(s, &id);
    while state != "COMPLETED" {
        assert!(
            matches!(
                state.as_str(),
                "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING"
            ),
            "job {id} ended {state}"
        );
        assert!(
            Instant::now() < deadline,
            "job {id} still {state} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
        state = job_state(s, &id);
    }
    let text = std::fs::read_to_string(&out_file)
        .unwrap_or_else(|e| panic!("{}: {e}", out_file.display()));
    assert_eq!(text.trim(), "hi");

    // Gone from the queue (other tests' jobs may be there).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = slurm_command(s, "squeue")
            .args(["-h", "-o", "%i"])
            .output()
            .expect("run squeue");
        let queue = stdout_ok(out, "squeue");
        if !queue.lines().any(|l| l.trim() == id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still in squeue after 30 s: {queue}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
