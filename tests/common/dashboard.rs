//! A `watch` daemon that also serves its dashboard, on three runs of fixture checkpoints, and
//! clients for it: shared by the dashboard tests and the load benchmark.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{copy_dir, fixture, repo};

/// The runs: name, fixture checkpoint, baseline.
pub const RUNS: [(&str, &str, Option<&str>); 3] = [
    ("transformer", "olmo2", None),
    ("hybrid", "hybrid_norope", Some("transformer")),
    ("gdn", "gdn_only", Some("transformer")),
];

/// A temp folder with an evalset source, three run folders and a watch config that serves
/// on a port of the system's choice.
pub struct Watched {
    /// Keeps the folder.
    pub tmp: tempfile::TempDir,
    daemon: Option<Child>,
    /// The dashboard's root URL, once the daemon logged it.
    pub url: String,
}

impl Watched {
    /// Writes the config (`top` at its top level, `tables` at its end) and starts `watch`;
    /// returns once the dashboard is up. `corpus`: `small` (a short document, quick jobs) or `default`
    /// (the shipped data/eval, jobs of seconds).
    pub fn start(corpus: &str, top: &str, tables: &str) -> Watched {
        let tmp = tempfile::tempdir().expect("tmp");
        let sources = if corpus == "small" {
            let dir = tmp.path().join("corpus/prose");
            fs::create_dir_all(&dir).expect("mkdir");
            let text = fs::read_to_string(repo().join("data/eval/prose/01-harbor-strike.txt"))
                .expect("corpus");
            fs::write(
                dir.join("doc.txt"),
                text.chars().take(1500).collect::<String>(),
            )
            .expect("write");
            tmp.path().join("corpus")
        } else {
            repo().join("data/eval")
        };
        let mut cfg = format!(
            "db = \"mon.db\"\nresamples = 20\nserve = \"127.0.0.1:0\"\n{top}\n\
             [daemon]\nsettle_secs = 0.3\nrescan_secs = 1\n\
             [[evalsets]]\nname = \"default\"\ndir = \"evalset\"\nsources = [{sources:?}]\n\
             tokenizer = {:?}\nwindow = 256\n",
            repo().join("tests/fixtures/tokenizer.json")
        );
        for (name, _, baseline) in RUNS {
            fs::create_dir_all(tmp.path().join("runs").join(name)).expect("mkdir");
            cfg += &format!(
                "[[runs]]\nname = \"{name}\"\narch = \"{name}\"\ndir = \"runs/{name}\"\n\
                 tokens_per_step = 1000\n"
            );
            if let Some(b) = baseline {
                cfg += &format!("baseline = \"{b}\"\n");
            }
        }
        cfg += tables;
        fs::write(tmp.path().join("w.toml"), cfg).expect("config");
        let log = fs::File::create(tmp.path().join("watch.log")).expect("log");
        let daemon = Command::new(env!("CARGO_BIN_EXE_filtermon"))
            .args(["--log-format", "json", "watch", "--config"])
            .arg(tmp.path().join("w.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn filtermon watch");
        let mut w = Watched {
            tmp,
            daemon: Some(daemon),
            url: String::new(),
        };
        let log = w.path("watch.log");
        let deadline = Instant::now() + Duration::from_secs(120);
        w.url = loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let url = text.lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(
                    v["fields"]["url"]
                        .as_str()?
                        .trim_end_matches('/')
                        .to_string(),
                )
            });
            if let Some(u) = url {
                break u;
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        w
    }

    /// A path in the temp folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Copies the run's fixture checkpoint in as `step{step}`.
    pub fn add_checkpoint(&self, run: &str, step: u64) {
        let (_, fix, _) = RUNS.iter().find(|r| r.0 == run).expect("a known run");
        copy_dir(&fixture(fix), &self.path(&format!("runs/{run}/step{step}")));
    }

    /// Jobs done, from the db (0 before it has any).
    pub fn done(&self) -> i64 {
        self.query("SELECT COUNT(*) FROM jobs WHERE state = 'done'")
            .unwrap_or(0)
    }

    /// One number from the db.
    pub fn query(&self, sql: &str) -> Option<i64> {
        let db = rusqlite::Connection::open_with_flags(
            self.path("mon.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        db.query_row(sql, [], |r| r.get(0)).ok()
    }

    /// Scoring seconds of every done job, in the order they finished.
    pub fn score_secs(&self) -> Vec<f64> {
        let db = rusqlite::Connection::open_with_flags(
            self.path("mon.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("db");
        let mut st = db
            .prepare("SELECT score_secs FROM jobs WHERE state = 'done' ORDER BY finished_at")
            .expect("query");
        st.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// Waits until `n` jobs are done.
    pub fn wait_done(&self, n: i64, timeout: Duration) {
        wait_for(&format!("{n} jobs done"), timeout, || self.done() >= n);
    }

    /// Stops the daemon (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let _ = d.wait();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// Polls `cond` until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Latency of every API request.
    pub latencies: Vec<Duration>,
    /// Failed requests and streams, with why.
    pub errors: Vec<String>,
    /// Change events received per client (besides `hello`).
    pub events: Vec<usize>,
}

impl LoadReport {
    /// The `q` quantile of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// `clients` clients for `duration`, each with an open event stream, polling `/api/runs`
/// and `/api/curves` every `poll`, as an open page would.
pub async fn load(url: &str, clients: usize, duration: Duration, poll: Duration) -> LoadReport {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let mut tasks = Vec::new();
    for i in 0..clients {
        let http = http.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut report = LoadReport::default();
            let until = tokio::time::Instant::now() + duration;
            let events = tokio::spawn(count_events(
                http.clone(),
                format!("{url}/api/events"),
                until,
            ));
            let paths = [
                "/api/runs",
                "/api/curves?evalset=default&filter=all",
                "/api/alerts",
            ];
            let mut k = i;
            // Spread the clients over the first interval, as pages opened at different times.
            tokio::time::sleep(poll.mul_f64(i as f64 / clients as f64)).await;
            while tokio::time::Instant::now() < until {
                let path = paths[k % paths.len()];
                k += 1;
                let t = Instant::now();
                match http.get(format!("{url}{path}")).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => report.latencies.push(t.elapsed()),
                        Err(e) => report.errors.push(format!("{path}: body: {e}")),
                    },
                    Ok(r) => report.errors.push(format!("{path}: status {}", r.status())),
                    Err(e) => report.errors.push(format!("{path}: {e}")),
                }
                tokio::time::sleep(poll).await;
            }
            match events.await {
                Ok(Ok(n)) => report.events.push(n),
                Ok(Err(e)) => report.errors.push(format!("event stream: {e}")),
                Err(e) => report.errors.push(format!("event stream task: {e}")),
            }
            report
        }));
    }
    let mut all = LoadReport::default();
    for t in tasks {
        let r = t.await.expect("client task");
        all.latencies.extend(r.latencies);
        all.errors.extend(r.errors);
        all.events.extend(r.events);
    }
    all
}

/// Reads an event stream until `until`; returns the change events seen after `hello`.
async fn count_events(
    http: reqwest::Client,
    url: String,
    until: tokio::time::Instant,
) -> Result<usize, String> {
    use futures_util::StreamExt;
    let resp = http.get(&url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut hello = false;
    loop {
        match tokio::time::timeout_at(until, body.next()).await {
            Err(_) => break,
            Ok(None) => return Err("the stream ended early".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(chunk))) => {
                text.push_str(&String::from_utf8_lossy(&chunk));
                hello |= text.contains("event: hello");
            }
        }
    }
    if !hello {
        return Err("no hello event".into());
    }
    Ok(text.matches("event: ").count() - 1)
}
