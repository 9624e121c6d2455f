//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver): the
//! overview lists every run, a curve chart draws every run's series, and a result the
//! running `watch` commits appears on the open page without a reload.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Where they
//! cannot be had, `FILTERMON_SKIP_BROWSER=1` skips this test; without it, their absence fails
//! the test with that advice.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

mod common;
use common::dashboard::{wait_for, Watched, RUNS};

/// The first of `names` found on PATH.
fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| executable(p))
    })
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(chromedriver: &Path, log: &Path) -> (Driver, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    wait_for("chromedriver to listen", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (Driver(child), port)
}

/// Evaluates `script` (a function body) in the page until it returns something truthy.
async fn until(c: &Client, what: &str, timeout: Duration, script: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.expect("script");
        let truthy = !matches!(&v, Value::Null | Value::Bool(false))
            && v.as_array().is_none_or(|a| !a.is_empty());
        if truthy {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the page's event stream is open.
async fn live(c: &Client) {
    until(
        c,
        "the live indicator",
        Duration::from_secs(20),
        "return document.getElementById('live').textContent === 'live';",
    )
    .await;
}

/// `[label, points drawn]` of every series but x of the first chart on the page.
const SERIES: &str = "const c = (window.filtermon || {}).charts && window.filtermon.charts[0];
    if (!c) return null;
    return c.series.slice(1).map((s, i) => [s.label, c.data[i + 1].filter((v) => v !== null).length]);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_lists_runs_draws_every_series_and_updates_live() {
    if std::env::var_os("FILTERMON_SKIP_BROWSER").is_some() {
        eprintln!("skipped: FILTERMON_SKIP_BROWSER is set");
        return;
    }
    let (Some(chromium), Some(chromedriver)) = (
        which(&["chromium", "chromium-browser", "google-chrome"]),
        which(&["chromedriver"]),
    ) else {
        panic!(
            "the browser test needs headless Chromium and its WebDriver: \
             apt-get install chromium chromium-driver (or set FILTERMON_SKIP_BROWSER=1 to skip)"
        );
    };
    let w = Watched::start("small", "", "");
    for (run, _, _) in RUNS {
        w.add_checkpoint(run, 100);
    }
    w.wait_done(3, Duration::from_secs(120));

    let (_driver, port) = start_driver(&chromedriver, &w.path("chromedriver.log"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"],
        }),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with headless Chromium");

    // The overview lists every run.
    c.goto(&format!("{}/", w.url)).await.expect("open /");
    let listed = until(
        &c,
        "the runs table",
        Duration::from_secs(20),
        "return [...document.querySelectorAll('#runs tbody tr')].map((r) => r.dataset.run);",
    )
    .await;
    let mut names: Vec<&str> = RUNS.iter().map(|r| r.0).collect();
    names.sort();
    assert_eq!(listed, json!(names));
    live(&c).await;
    std::fs::write(
        w.path("overview.png"),
        c.screenshot().await.expect("screenshot"),
    )
    .expect("save");

    // The curve chart draws a series for every run.
    c.goto(&format!("{}/curves?evalset=default&filter=all", w.url))
        .await
        .expect("open /curves");
    let series = until(&c, "the loss chart", Duration::from_secs(20), SERIES).await;
    for (run, _, _) in RUNS {
        assert!(
            series
                .as_array()
                .expect("series")
                .iter()
                .any(|s| s[0] == run && s[1] == 1),
            "{run} has one point in {series}"
        );
    }
    live(&c).await;

    // A new result shows on the open page, which is not reloaded (the marker survives).
    c.execute("window.notReloaded = true; return true;", vec![])
        .await
        .expect("mark");
    w.add_checkpoint("transformer", 200);
    // Measured from when this test sees the commit in the db (within 50 ms of it).
    w.wait_done(4, Duration::from_secs(60));
    let committed = Instant::now();
    let shown = until(
        &c,
        "the new point on the chart",
        Duration::from_secs(30),
        "const c = window.filtermon.charts[0];
         if (!c) return false;
         const i = c.series.findIndex((s) => s.label === 'transformer');
         return i > 0 && c.data[i].filter((v) => v !== null).length === 2;",
    )
    .await;
    let latency = committed.elapsed();
    assert_eq!(shown, json!(true));
    assert!(
        latency < Duration::from_secs(5),
        "shown {latency:?} after the commit"
    );
    let kept = c
        .execute("return window.notReloaded === true;", vec![])
        .await
        .expect("marker");
    assert_eq!(kept, json!(true), "the page was not reloaded");
    let shot = w.path("curves.png");
    std::fs::write(&shot, c.screenshot().await.expect("screenshot")).expect("save");
    eprintln!(
        "new result on the page {latency:?} after its commit; screenshots: {} and {}",
        w.path("overview.png").display(),
        shot.display()
    );
    if let Some(dir) = std::env::var_os("FILTERMON_SCREENSHOTS") {
        for name in ["overview.png", "curves.png"] {
            std::fs::copy(w.path(name), Path::new(&dir).join(name)).expect("copy screenshot");
        }
    }
    c.close().await.expect("close the session");
}
