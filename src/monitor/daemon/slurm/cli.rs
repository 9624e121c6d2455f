//! Slurm's commands as the daemon calls them (`sbatch`, `squeue`, `scontrol`), and the parsing
//! of what they print. They find the cluster as any Slurm command does (`SLURM_CONF` or the
//! system's configuration).

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::input_error;

/// Longest wait for one Slurm command. Its own RPC timeouts are shorter; this only keeps a
/// wedged command from stopping the supervisor for good.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The states in which a worker job counts as live: it holds or will hold a worker.
const LIVE_STATES: [&str; 4] = ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"];

/// A job as `squeue` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Slurm job id.
    pub id: String,
    /// State, e.g. `PENDING`.
    pub state: String,
}

impl QueuedJob {
    /// Whether it holds or will hold a worker.
    pub fn is_live(&self) -> bool {
        LIVE_STATES.contains(&self.state.as_str())
    }
}

/// How a worker job ended, from `scontrol show job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedJob {
    /// Final state, e.g. `COMPLETED`, `CANCELLED`, `TIMEOUT`.
    pub state: String,
    /// Exit code and signal, `code:signal`.
    pub exit_code: String,
}

/// Checks that `sbatch` can be run; an input error (exit 2) when it cannot.
pub fn check_sbatch() -> anyhow::Result<()> {
    match run(Command::new("sbatch").arg("--version")) {
        Ok(_) => Ok(()),
        Err(e) => Err(input_error(format!(
            "executor.kind = \"slurm\" needs Slurm's commands: {}",
            crate::error::one_line(&e)
        ))),
    }
}

/// Asks Slurm whether it would accept the job of `script` (`sbatch --test-only`), without
/// submitting it; its message when it would not.
pub fn test_only(script: &Path) -> anyhow::Result<()> {
    run(Command::new("sbatch").arg("--test-only").arg(script)).map(|_| ())
}

/// Submits `script`; returns the job id.
pub fn submit(script: &Path) -> anyhow::Result<String> {
    let out = run(Command::new("sbatch").arg("--parsable").arg(script))?;
    parse_parsable(&String::from_utf8_lossy(&out.stdout))
}

/// The jobs named `name`, as `squeue` lists them.
pub fn jobs_named(name: &str) -> anyhow::Result<Vec<QueuedJob>> {
    let out = run(Command::new("squeue").args([
        "--noheader",
        &format!("--name={name}"),
        "--format=%i|%T",
    ]))?;
    parse_squeue(&String::from_utf8_lossy(&out.stdout))
}

/// How job `id` ended; None when Slurm no longer knows it (its record is kept for
/// `MinJobAge`).
pub fn ended(id: &str) -> Option<EndedJob> {
    let out = run(Command::new("scontrol").args(["show", "job", "-o", id])).ok()?;
    parse_scontrol(&String::from_utf8_lossy(&out.stdout))
}

/// The job id of `sbatch --parsable`'s output: `id` or `id;cluster`.
pub fn parse_parsable(stdout: &str) -> anyhow::Result<String> {
    let id = stdout.trim().split(';').next().unwrap_or_default();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        anyhow::bail!("sbatch printed no job id: {:?}", stdout.trim());
    }
    Ok(id.to_string())
}

/// `squeue --noheader --format=%i|%T` output: one `id|STATE` per line.
pub fn parse_squeue(stdout: &str) -> anyhow::Result<Vec<QueuedJob>> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('|') {
            Some((id, state)) if !id.trim().is_empty() && !state.trim().is_empty() => {
                Ok(QueuedJob {
                    id: id.trim().to_string(),
                    state: state.trim().to_string(),
                })
            }
            _ => anyhow::bail!("unexpected squeue line {l:?}"),
        })
        .collect()
}

/// `JobState` and `ExitCode` of `scontrol show job -o` output.
pub fn parse_scontrol(stdout: &str) -> Option<EndedJob> {
    let field = |key: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    Some(EndedJob {
        state: field("JobState=")?,
        exit_code: field("ExitCode=").unwrap_or_default(),
    })
}

/// Runs a Slurm command to its end (at most [`TIMEOUT`]); its output when it exits 0, else an
/// error with its message on one line.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => anyhow::anyhow!("{program}: not found on PATH"),
            _ => anyhow::Error::new(e).context(format!("cannot run {program}")),
        })?;
    // The outputs are a few lines: they fit in the pipes until the command has exited.
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() >= TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{program} did not answer within {} s", TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("reading the output of {program}"))?;
    if !out.status.success() {
        let msg = message(&String::from_utf8_lossy(&out.stderr));
        anyhow::bail!(
            "{program}: {}",
            msg.unwrap_or_else(|| out.status.to_string())
        );
    }
    Ok(out)
}

/// A Slurm command's stderr on one line: its lines joined by `; `, without the
/// `sbatch: error: ` prefixes; None when it is empty.
pub fn message(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| {
            let l = l.trim();
            l.split_once(": error: ").map_or(l, |(_, rest)| rest)
        })
        .filter(|l| !l.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_and_live_states() {
        let jobs = parse_squeue(
            "12|RUNNING\n13|PENDING\n 14|COMPLETING \n15|CONFIGURING\n16|SUSPENDED\n\n",
        )
        .expect("parse");
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["12", "13", "14", "15", "16"]);
        let live: Vec<bool> = jobs.iter().map(QueuedJob::is_live).collect();
        assert_eq!(live, [true, true, true, true, false]);
        assert!(parse_squeue("").expect("empty").is_empty());
        assert!(parse_squeue("12 RUNNING\n").is_err());
        assert!(parse_squeue("|RUNNING\n").is_err());
    }

    #[test]
    fn sbatch_parsable_output() {
        assert_eq!(parse_parsable("42\n").expect("id"), "42");
        assert_eq!(parse_parsable("42;cluster\n").expect("id"), "42");
        assert!(parse_parsable("").is_err());
        assert!(parse_parsable("Submitted batch job 42").is_err());
    }

    #[test]
    fn scontrol_job_state() {
        let line = "JobId=6 JobName=filtermon-x UserId=root(0) JobState=CANCELLED Reason=None \
                    ExitCode=0:15 RunTime=00:00:01 Command=/a b/worker.sbatch";
        assert_eq!(
            parse_scontrol(line),
            Some(EndedJob {
                state: "CANCELLED".into(),
                exit_code: "0:15".into()
            })
        );
        assert_eq!(
            parse_scontrol("slurm_load_jobs error: Invalid job id"),
            None
        );
    }

    #[test]
    fn messages_on_one_line() {
        assert_eq!(
            message(
                "sbatch: error: invalid partition specified: nope\n\
                 allocation failure: Invalid partition name specified\n"
            ),
            Some(
                "invalid partition specified: nope; allocation failure: Invalid partition name \
                 specified"
                    .into()
            )
        );
        assert_eq!(message("\n"), None);
    }

    #[test]
    fn a_missing_command_says_so() {
        let e = run(&mut Command::new("filtermon-no-such-command")).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "filtermon-no-such-command: not found on PATH"
        );
        let e = run(Command::new("sh").args(["-c", "echo 'x: error: bad' >&2; exit 3"]))
            .expect_err("fails");
        assert_eq!(e.to_string(), "sh: bad");
        let e = run(Command::new("sh").args(["-c", "exit 3"])).expect_err("fails");
        assert_eq!(e.to_string(), "sh: exit status: 3");
    }
}
