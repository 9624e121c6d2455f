//! A watch daemon on temp folders: the config and run folders of a test, the daemon's JSON
//! log, waiting on conditions with a deadline, and its store (an SQLite file, or a
//! PostgreSQL database where a test gives one) read directly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use filtermon::store::sql::{Access, Db, Exec, Row, ToValue, Value as SqlValue};
use filtermon::store::Location;
use serde_json::Value;

use super::repo;

/// The filtermon binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_filtermon");
/// The settle period of every test config, in seconds.
pub const SETTLE: f64 = 1.0;
/// Result rows per scored checkpoint: the built-in filters plus the one user filter of every
/// test config, then the recall metrics of a document evalset (5 recall-cliff bins, copy-1…16
/// and the COPY-5 miss rate).
pub const FILTERS: i64 = 8 + 22;

/// A temp folder with a small corpus, run folders and a config.
pub struct Env {
    /// The temp folder; removed on drop.
    pub tmp: tempfile::TempDir,
    /// The store the config names.
    pub db: Location,
}

impl Env {
    /// `corpus`: `small` (one short document) or `default` (the shipped data/eval, for
    /// scores that take long enough to be interrupted).
    pub fn new(corpus: &str, runs: &[(&str, &str)], daemon: &str) -> Env {
        Env::with_store(corpus, runs, daemon, None)
    }

    /// As [`Env::new`], with the store at a `postgres://` URL when one is given.
    pub fn with_store(
        corpus: &str,
        runs: &[(&str, &str)],
        daemon: &str,
        postgres: Option<String>,
    ) -> Env {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = match postgres {
            Some(url) => Location::Postgres(url),
            None => Location::Sqlite(tmp.path().join("state/mon.db")),
        };
        let db_key = match &db {
            Location::Postgres(url) => url.clone(),
            Location::Sqlite(_) => "state/mon.db".into(),
        };
        let sources = if corpus == "small" {
            let dir = tmp.path().join("corpus/prose");
            fs::create_dir_all(&dir).expect("mkdir");
            let text = fs::read_to_string(repo().join("data/eval/prose/01-harbor-strike.txt"))
                .expect("corpus");
            let cut: String = text.chars().take(1500).collect();
            fs::write(dir.join("doc.txt"), cut).expect("write");
            tmp.path().join("corpus")
        } else {
            repo().join("data/eval")
        };
        let mut cfg = format!(
            "db = {db_key:?}\nresamples = 20\n[daemon]\nsettle_secs = {SETTLE}\n\
             rescan_secs = 3\nlease_secs = 5\nretry_secs = 0.2\nmax_attempts = 2\n{daemon}\n\
             [[evalsets]]\nname = \"default\"\ndir = \"evalset\"\nsources = [{sources:?}]\n\
             tokenizer = {:?}\nwindow = 256\n[filters]\nadj_adv = \"upos in {{ADJ, ADV}}\"\n",
            repo().join("tests/fixtures/tokenizer.json")
        );
        for (name, extra) in runs {
            fs::create_dir_all(tmp.path().join("runs").join(name)).expect("mkdir");
            cfg += &format!(
                "[[runs]]\nname = \"{name}\"\narch = \"transformer\"\ndir = \"runs/{name}\"\n\
                 tokens_per_step = 1000\n{extra}\n"
            );
        }
        fs::write(tmp.path().join("w.toml"), cfg).expect("config");
        Env { tmp, db }
    }

    /// A path in the temp folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Starts `filtermon watch` on the config, its JSON log in `log`.
    pub fn spawn(&self, log: &str) -> Child {
        self.command(log).spawn().expect("spawn filtermon watch")
    }

    /// `filtermon watch` on the config, its JSON log in `log`, ready to spawn.
    pub fn command(&self, log: &str) -> Command {
        let log = fs::File::create(self.path(log)).expect("log");
        let mut cmd = Command::new(BIN);
        cmd.args(["--log-format", "json", "watch", "--config"])
            .arg(self.path("w.toml"))
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    /// As [`Env::new`], on a fresh database of the test PostgreSQL named after `name`; `None`
    /// when the cluster tests are skipped.
    pub fn on_postgres(
        name: &str,
        corpus: &str,
        runs: &[(&str, &str)],
        daemon: &str,
    ) -> Option<Env> {
        let url = super::services::fresh_database(super::services::services()?, name);
        Some(Env::with_store(corpus, runs, daemon, Some(url)))
    }

    /// The store as `--db` takes it: the file's path, or the URL.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match &self.db {
            Location::Sqlite(path) => path.clone().into_os_string(),
            Location::Postgres(url) => url.into(),
        }
    }

    /// The daemon's store; panics when it does not exist (a test must not create it).
    pub fn db(&self) -> Db {
        Db::connect(&self.db, Access::Existing).expect("db")
    }

    /// The rows of a query on the daemon's store.
    pub fn rows(&self, sql: &str, params: &[&dyn ToValue]) -> Vec<Row> {
        let params: Vec<SqlValue> = params.iter().map(|p| p.to_value()).collect();
        self.db().query(sql, &params).expect(sql)
    }

    /// A number from the db; -1 while the daemon has not created the db or its tables.
    pub fn query_i64(&self, sql: &str) -> i64 {
        Db::connect(&self.db, Access::Existing)
            .and_then(|db| db.query_one(sql, &[])?.get(0))
            .unwrap_or(-1)
    }

    /// Waits until a daemon has logged that it is watching.
    pub fn wait_started(&self, log: &str) {
        self.wait_for("the daemon to start", Duration::from_secs(60), |e| {
            !events(&e.path(log), "watching").is_empty()
        });
    }

    /// Waits until `cond` holds; panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&Env) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `(checkpoint, state, attempts, error)` of every job.
    pub fn jobs(&self) -> Vec<(String, String, i64, Option<String>)> {
        if self.query_i64("SELECT COUNT(*) FROM jobs") < 0 {
            return Vec::new();
        }
        self.rows(
            "SELECT c.name, j.state, j.attempts, j.error FROM jobs j
             JOIN checkpoints c ON c.id = j.checkpoint_id ORDER BY c.name",
            &[],
        )
        .iter()
        .map(|r| {
            (
                r.get(0).expect("name"),
                r.get(1).expect("state"),
                r.get(2).expect("attempts"),
                r.get(3).expect("error"),
            )
        })
        .collect()
    }

    pub fn done(&self, checkpoint: &str) -> bool {
        self.query_i64(&format!(
            "SELECT COUNT(*) FROM jobs j JOIN checkpoints c ON c.id = j.checkpoint_id
             WHERE c.name = '{checkpoint}' AND j.state = 'done'"
        )) == 1
    }

    /// Checkpoint names of the "scored" events in a daemon's JSON log.
    pub fn scored_events(&self, log: &str) -> Vec<String> {
        events(&self.path(log), "scored")
            .iter()
            .map(|e| e["span"]["checkpoint"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

/// The events of a JSON log whose message is `message`.
pub fn events(log: &Path, message: &str) -> Vec<Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .collect()
}

/// Sends `signal` (`-TERM`, `-KILL`) to a child.
pub fn kill(child: &mut Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {signal} failed");
}

/// Stops a daemon with SIGTERM and checks that it exits 0.
pub fn stop(child: &mut Child) {
    kill(child, "-TERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "daemon exit status");
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}
