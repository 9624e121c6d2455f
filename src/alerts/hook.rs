//! The `on_alert` hook: a shell command that gets each new firing as one JSON object on
//! stdin. It runs on its own thread so a slow hook never delays scoring, and a hook that
//! fails or outlives its timeout is logged and killed, never fatal.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::one_line;

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

/// A thread that runs the hook for each payload sent to it, in order.
pub struct HookRunner {
    tx: Option<Sender<String>>,
    thread: Option<JoinHandle<()>>,
}

impl HookRunner {
    /// Starts the thread.
    pub fn start(command: String, timeout: Duration) -> anyhow::Result<HookRunner> {
        let (tx, rx) = mpsc::channel::<String>();
        let thread = std::thread::Builder::new()
            .name("alert-hook".into())
            .spawn(move || {
                for payload in rx {
                    if let Err(e) = run_hook(&command, &payload, timeout) {
                        tracing::error!(error = %one_line(&e), "alert hook");
                    }
                }
            })?;
        Ok(HookRunner {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues one payload.
    pub fn send(&self, payload: String) {
        if let Some(tx) = &self.tx {
            if tx.send(payload).is_err() {
                tracing::error!("the alert hook thread is gone; payload dropped");
            }
        }
    }
}

impl Drop for HookRunner {
    /// Lets queued payloads finish (each bounded by the timeout).
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
