//! The `on_alert` hook: a shell command that gets each new firing as one JSON object on
//! stdin. It runs on its own thread so a slow hook never delays scoring, and a hook that
//! fails or outlives its timeout is logged and killed, never fatal.
//!
//! A firing is marked delivered in the store only after the hook exited 0 for it. One that
//! failed, timed out or was cut short by the daemon's death stays undelivered and is handed
//! to the hook again at the next start (once per start, so a hook that keeps failing costs
//! one run per firing per start, never a loop); the payload's `id` lets a hook drop a repeat.

use std::io::Write;

use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::one_line;
use crate::store::{Location, Store};

/// Runs `command` with `sh -c`, `payload` on stdin, and waits at most `timeout`.
pub fn run_hook(command: &str, payload: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting the alert hook {command:?}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin closes the pipe early; that is its choice.
        let _ = stdin.write_all(payload.as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            anyhow::bail!("alert hook {command:?} failed: {status}");
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "alert hook {command:?} ran past its {:.1} s timeout and was killed",
                timeout.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A thread that runs the hook for each firing sent to it, in order, and marks each one the
/// hook accepted as delivered in the store.
pub struct HookRunner {
    tx: Option<Sender<(i64, String)>>,
    thread: Option<JoinHandle<()>>,
}

impl HookRunner {
    /// Starts the thread, with its own connection to the store at `db`.
    pub fn start(command: String, timeout: Duration, db: &Location) -> anyhow::Result<HookRunner> {
        let mut store =
            Store::open_existing(db).with_context(|| format!("opening {db} for the alert hook"))?;
        let (tx, rx) = mpsc::channel::<(i64, String)>();
        let thread = std::thread::Builder::new()
            .name("alert-hook".into())
            .spawn(move || {
                for (id, payload) in rx {
                    if let Err(e) = run_hook(&command, &payload, timeout) {
                        tracing::error!(alert = id, error = %one_line(&e),
                            retry = "at the next start", "alert hook");
                        continue;
                    }
                    // Unmarked, the firing goes to the hook again at the next start: a
                    // repeat, which the hook can tell by its id, rather than a loss.
                    if let Err(e) = store.mark_alert_delivered(id) {
                        tracing::error!(alert = id, error = %one_line(&e),
                            "cannot record the alert as delivered; it will be sent again");
                    }
                }
            })?;
        Ok(HookRunner {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues the firing `id` with its payload.
    pub fn send(&self, id: i64, payload: String) {
        if let Some(tx) = &self.tx {
            if tx.send((id, payload)).is_err() {
                tracing::error!(
                    alert = id,
                    "the alert hook thread is gone; the firing waits for the next start"
                );
            }
        }
    }
}

impl Drop for HookRunner {
    /// Lets queued firings finish (each bounded by the timeout), so a shutdown waits for them.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stdin_and_reports_failure_and_timeout() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("got.json");
        let cmd = format!("cat > '{}'", out.display());
        run_hook(&cmd, r#"{"rule":"r"}"#, Duration::from_secs(5)).expect("hook");
        let got = std::fs::read_to_string(&out).expect("written");
        assert_eq!(got.trim(), r#"{"rule":"r"}"#);
        assert!(run_hook("exit 3", "{}", Duration::from_secs(5)).is_err());
        let t = Instant::now();
        let e = run_hook("sleep 5", "{}", Duration::from_millis(200)).expect_err("timeout");
        assert!(e.to_string().contains("timeout"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4));
    }
}
