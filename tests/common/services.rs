//! The test services: a real PostgreSQL server and a real one-node Slurm, started once per test
//! process by `scripts/services.sh up` (the same script `.ci/run` runs) under `target/services`.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::repo;

/// The test services: a PostgreSQL server and a one-node Slurm.
#[derive(Debug, Clone)]
pub struct Services {
    /// The admin URL (user `postgres`, database `postgres`).
    pub postgres: String,
    /// The cluster's `slurm.conf`, for `SLURM_CONF`.
    pub slurm_conf: PathBuf,
}

/// Where the services live: `target/services` of the build's target folder.
fn services_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                repo().join(t)
            }
        }
        _ => repo().join("target"),
    };
    target.join("services")
}

/// Runs `scripts/services.sh up DIR` and reads `DIR/env`.
fn start() -> Result<Services, String> {
    let dir = services_dir();
    let script = repo().join("scripts/services.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("up")
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`{} up {}` failed ({}): {}",
            script.display(),
            dir.display(),
            out.status,
            stderr.trim()
        ));
    }
    let env = dir.join("env");
    let text =
        std::fs::read_to_string(&env).map_err(|e| format!("cannot read {}: {e}", env.display()))?;
    let mut postgres = None;
    let mut slurm_conf = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("FILTERMON_TEST_POSTGRES", v)) => postgres = Some(v.to_string()),
            Some(("SLURM_CONF", v)) => slurm_conf = Some(PathBuf::from(v)),
            _ => {}
        }
    }
    match (postgres, slurm_conf) {
        (Some(postgres), Some(slurm_conf)) => Ok(Services {
            postgres,
            slurm_conf,
        }),
        _ => Err(format!(
            "{} lacks FILTERMON_TEST_POSTGRES or SLURM_CONF: {text:?}",
            env.display()
        )),
    }
}

/// Starts (once per test process) `scripts/services.sh up target/services` and parses its env
/// file. Returns None when `FILTERMON_SKIP_CLUSTER=1` is set (and says on stderr that the test
/// was skipped and why); otherwise panics with the script's message when the services cannot
/// start — never skips silently.
pub fn services() -> Option<&'static Services> {
    if std::env::var("FILTERMON_SKIP_CLUSTER").as_deref() == Ok("1") {
        let test = std::thread::current()
            .name()
            .unwrap_or("this test")
            .to_string();
        // Straight to the process's stderr: the test harness captures `eprintln!` of tests
        // that pass, and a skip must show.
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test}: FILTERMON_SKIP_CLUSTER=1, so no PostgreSQL and Slurm test services \
             (scripts/services.sh) were started"
        );
        return None;
    }
    static SERVICES: OnceLock<Result<Services, String>> = OnceLock::new();
    match SERVICES.get_or_init(start) {
        Ok(s) => Some(s),
        Err(e) => panic!(
            "the test services did not start: {e}\n(set FILTERMON_SKIP_CLUSTER=1 to skip the tests \
             that need them)"
        ),
    }
}

/// `psql` on `url`, stopping at the first error, without the user's `.psqlrc`.
pub fn psql(url: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url]);
    cmd
}

/// Runs `cmd` to completion and returns its stdout; panics with its stderr when it fails.
fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    stdout_ok(out, what)
}

/// The stdout of a finished command; panics with its stderr when it failed.
pub fn stdout_ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs SQL statements on `url` with `psql`, one `-c` each; panics when one fails.
pub fn sql(url: &str, statements: &[&str]) -> String {
    let mut cmd = psql(url);
    for st in statements {
        cmd.args(["-c", st]);
    }
    run_ok(cmd, &format!("psql {statements:?}"))
}

/// Ends every other session on `url`'s database: what a restart or failover of the server
/// does to its clients.
pub fn cut_connections(url: &str) {
    sql(
        url,
        &["SELECT pg_terminate_backend(pid) FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()"],
    );
}

/// A new, empty database on the test server with a unique name derived from `name` (plus pid
/// and a counter), returned as its URL.
pub fn fresh_database(s: &Services, name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("_{}_{n}", std::process::id());
    // An identifier without quoting: lowercase letters, digits and `_`, at most 63 bytes.
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "t_");
    }
    base.truncate(63 - suffix.len());
    let db = format!("{base}{suffix}");
    // A pid of an earlier run of the tests may come back against the same server: drop its
    // leftover first (two `-c`, as CREATE DATABASE cannot run in a transaction block).
    let mut cmd = psql(&s.postgres);
    cmd.args([
        "-c",
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        "-c",
        &format!("CREATE DATABASE {db}"),
    ]);
    run_ok(cmd, &format!("psql creating database {db}"));
    let (server, _) = s
        .postgres
        .rsplit_once('/')
        .expect("the admin URL ends in /postgres");
    format!("{server}/{db}")
}

/// `program` (`sbatch`, `squeue`, `scontrol`, `scancel`, …) with `SLURM_CONF` set to the test
/// cluster's.
pub fn slurm_command(s: &Services, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("SLURM_CONF", &s.slurm_conf);
    cmd
}
