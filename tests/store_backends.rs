//! The store's contract, run the same on both backends: an SQLite file and a real PostgreSQL
//! database (the test server of `scripts/services.sh`). Leases come in order and exactly
//! once under concurrent workers, results commit once and only under a held lease, dead
//! leases are reclaimed, alerts are stored once, paired gaps are replaced, and a read-only
//! store refuses writes.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use filtermon::analysis::stats::aggregate::FilterResult;
use filtermon::analysis::stats::paired::PairedDiff;
use filtermon::evalset::scores::EvalScores;
use filtermon::store::alerts::Firing;
use filtermon::store::jobs::{Job, RetryPolicy};
use filtermon::store::losses::{encode, EncodedLosses};
use filtermon::store::paired_gaps::Pairing;
use filtermon::store::{EvalsetRow, Location, NewCheckpoint, RunRow, Store};

mod common;
use common::services::{fresh_database, services};

/// Runs a scenario on a fresh SQLite file and on a fresh PostgreSQL database.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn sqlite() {
                let dir = tempfile::tempdir().expect("tmp");
                super::$scenario(&super::Location::Sqlite(dir.path().join("m.db")));
            }

            #[test]
            fn postgres() {
                let Some(s) = super::services() else { return };
                let url = super::fresh_database(s, stringify!($scenario));
                super::$scenario(&super::Location::Postgres(url));
            }
        }
    )*};
}

on_both_backends!(
    leases_come_in_order_and_results_commit_once_under_the_lease,
    concurrent_workers_score_every_job_exactly_once,
    dead_leases_are_reclaimed_and_a_late_result_is_refused,
    alerts_are_stored_once_and_acknowledged,
    paired_gaps_are_replaced_not_duplicated,
    a_read_only_store_reads_and_refuses_writes,
);

const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    max_lost_leases: 5,
    backoff: 0.0,
};

/// A store with one evalset and run `a`; returns it with the run's and evalset's ids.
fn setup(location: &Location) -> (Store, i64, i64) {
    let mut store = Store::open(location).expect("open");
    let es = store
        .upsert_evalset(&EvalsetRow {
            name: "e".into(),
            hash: "h".into(),
            tokenizer_hash: "t".into(),
            dir: "/e".into(),
            tokens: 3,
        })
        .expect("evalset");
    let run = store
        .upsert_run(&RunRow {
            name: "a".into(),
            arch: "transformer".into(),
            dir: "/a".into(),
            baseline: None,
            tokens_per_step: 10,
        })
        .expect("run");
    (store, run, es)
}

fn add(store: &mut Store, run: i64, es: i64, step: u64, anneal: bool) -> usize {
    let name = format!("step{step}{}", if anneal { "-anneal" } else { "" });
    store
        .add_checkpoint(
            run,
            &NewCheckpoint {
                path: format!("/a/{name}"),
                name,
                step,
                tokens: step * 10,
                anneal,
            },
            &[es],
        )
        .expect("checkpoint")
}

fn losses() -> EncodedLosses {
    encode(&EvalScores {
        loss: vec![f32::NAN, 1.0, 2.0],
        top1: vec![false, true, false],
        top5: vec![false, true, true],
    })
    .expect("encode")
}

fn result(filter: &str, mean: f64) -> FilterResult {
    FilterResult {
        filter: filter.into(),
        definition: filter.into(),
        domain: None,
        mean,
        n: 2,
        ci_lo: mean - 0.5,
        ci_hi: mean + 0.5,
        top1: 0.5,
        top5: 1.0,
    }
}

fn lease(store: &mut Store, owner: &str, run: i64, es: i64) -> Option<Job> {
    store.lease(owner, 60.0, &[run], &[es]).expect("lease")
}

fn leases_come_in_order_and_results_commit_once_under_the_lease(location: &Location) {
    let (mut store, run, es) = setup(location);
    assert_eq!(add(&mut store, run, es, 30, false), 1);
    assert_eq!(add(&mut store, run, es, 10, false), 1);
    assert_eq!(add(&mut store, run, es, 20, true), 1);
    assert_eq!(
        add(&mut store, run, es, 20, true),
        0,
        "a checkpoint is queued once"
    );

    let first = lease(&mut store, "me", run, es).expect("job");
    assert_eq!(
        (first.checkpoint.as_str(), first.attempts),
        ("step20-anneal", 1)
    );
    // Filters are listed in the job's order, not by name.
    let results = [result("zeta", 1.5), result("alpha", 2.5)];
    assert!(!store
        .complete(&first, "someone else", &results, &losses(), 1.0)
        .expect("complete"));
    assert!(store
        .complete(&first, "me", &results, &losses(), 1.0)
        .expect("complete"));
    assert!(
        !store
            .complete(&first, "me", &results, &losses(), 1.0)
            .expect("again"),
        "a job commits once"
    );
    let stored: Vec<(String, Option<f64>)> = store
        .results(None)
        .expect("results")
        .into_iter()
        .map(|r| (r.filter, r.mean))
        .collect();
    assert_eq!(
        stored,
        [
            ("zeta".to_string(), Some(1.5)),
            ("alpha".to_string(), Some(2.5))
        ]
    );
    let scores = store
        .token_scores(first.checkpoint_id, es)
        .expect("read")
        .expect("stored");
    assert_eq!(scores.loss[1..], [1.0, 2.0]);
    assert_eq!(scores.top5, [false, true, true]);

    let order: Vec<String> = std::iter::from_fn(|| lease(&mut store, "me", run, es))
        .map(|j| j.checkpoint)
        .collect();
    assert_eq!(order, ["step10", "step30"], "then the oldest step first");
    let counts = store.queue_counts().expect("counts");
    assert_eq!((counts.done, counts.running, counts.queued), (1, 2, 0));
}

fn concurrent_workers_score_every_job_exactly_once(location: &Location) {
    const JOBS: u64 = 24;
    const WORKERS: usize = 4;
    let (mut store, run, es) = setup(location);
    for step in 1..=JOBS {
        add(&mut store, run, es, step, false);
    }
    let start = Arc::new(Barrier::new(WORKERS));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (location, start) = (location.clone(), start.clone());
            std::thread::spawn(move || {
                let mut store = Store::open_existing(&location).expect("worker store");
                let owner = format!("worker{w}");
                start.wait();
                let mut committed = Vec::new();
                while let Some(job) = lease(&mut store, &owner, run, es) {
                    let results = [result("all", job.step as f64)];
                    if store
                        .complete(&job, &owner, &results, &losses(), 0.0)
                        .expect("complete")
                    {
                        committed.push(job.id);
                    }
                }
                committed
            })
        })
        .collect();
    let mut by_job: HashMap<i64, usize> = HashMap::new();
    for w in workers {
        for id in w.join().expect("worker") {
            *by_job.entry(id).or_default() += 1;
        }
    }
    assert_eq!(by_job.len() as u64, JOBS, "every job was committed");
    assert!(
        by_job.values().all(|&n| n == 1),
        "and each once: {by_job:?}"
    );
    let rows = store.results(None).expect("results");
    assert_eq!(rows.len() as u64, JOBS);
    assert!(rows.iter().all(|r| r.mean == Some(r.step as f64)));
}

fn dead_leases_are_reclaimed_and_a_late_result_is_refused(location: &Location) {
    let (mut store, run, es) = setup(location);
    add(&mut store, run, es, 10, false);
    // Leased by a worker whose lease has already run out (killed, or cut off).
    let lost = store
        .lease("gone", -1.0, &[run], &[es])
        .expect("lease")
        .expect("job");
    assert_eq!(store.reclaim(POLICY).expect("reclaim"), 1);
    let again = lease(&mut store, "alive", run, es).expect("re-queued");
    assert_eq!(
        (again.id, again.attempts),
        (lost.id, 1),
        "the lost lease cost no attempt"
    );
    assert!(
        !store
            .complete(&lost, "gone", &[result("all", 9.0)], &losses(), 1.0)
            .expect("late"),
        "the dead worker's late result is refused"
    );
    assert!(store
        .complete(&again, "alive", &[result("all", 1.0)], &losses(), 1.0)
        .expect("complete"));
    let status = store.status().expect("status");
    assert_eq!(status.runs[0].checkpoints.done, 1);
    assert_eq!(store.results(None).expect("results")[0].mean, Some(1.0));
}

fn alerts_are_stored_once_and_acknowledged(location: &Location) {
    let (mut store, run, es) = setup(location);
    add(&mut store, run, es, 10, false);
    let job = lease(&mut store, "me", run, es).expect("job");
    let firing = Firing {
        rule: "rise".into(),
        run: "a".into(),
        evalset: "e".into(),
        evalset_id: es,
        filter: "all".into(),
        checkpoint_id: job.checkpoint_id,
        checkpoint: job.checkpoint.clone(),
        step: 10,
        tokens: 100,
        value: 0.2,
        threshold: 0.1,
        message: "all rose".into(),
    };
    let id = store
        .record_alert(&firing)
        .expect("record")
        .expect("new firing");
    assert_eq!(store.record_alert(&firing).expect("repeat"), None);
    assert_eq!(store.undelivered_alerts().expect("undelivered").len(), 1);
    store.mark_alert_delivered(id).expect("delivered");
    store.ack_alert(id).expect("ack");
    assert!(
        store.ack_alert(id + 1000).is_err(),
        "an unknown id is refused"
    );
    let alerts = store.alerts().expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].acked_at.is_some() && alerts[0].delivered_at.is_some());
    assert_eq!(alerts[0].firing, firing);
    assert!(store.undelivered_alerts().expect("undelivered").is_empty());
}

fn paired_gaps_are_replaced_not_duplicated(location: &Location) {
    let (mut store, run, es) = setup(location);
    add(&mut store, run, es, 10, false);
    add(&mut store, run, es, 20, false);
    let ck = lease(&mut store, "me", run, es).expect("job").checkpoint_id;
    let base = lease(&mut store, "me", run, es).expect("job").checkpoint_id;
    let pairing = Pairing {
        checkpoint: ck,
        baseline: base,
    };
    for mean in [0.5, 0.25] {
        let gap = PairedDiff {
            mean,
            lo: mean - 0.1,
            hi: mean + 0.1,
            n: 7,
        };
        store
            .record_paired_gaps(pairing, es, &[("all".into(), gap)])
            .expect("gaps");
    }
    let gaps = store.paired_gaps().expect("gaps");
    assert_eq!(gaps.len(), 1);
    let gap = &gaps[&(ck, es, "all".to_string())];
    assert_eq!((gap.mean, gap.n), (0.25, 7));
}

fn a_read_only_store_reads_and_refuses_writes(location: &Location) {
    let (mut store, run, es) = setup(location);
    add(&mut store, run, es, 10, false);
    drop(store);
    // Opening again neither migrates twice nor loses anything.
    let mut again = Store::open(location).expect("reopen");
    assert_eq!(add(&mut again, run, es, 10, false), 0);
    let reader = Store::open_read_only(location).expect("read only");
    assert_eq!(reader.queue_counts().expect("counts").queued, 1);
    assert!(reader.data_version().is_ok());
    let mut reader = reader;
    assert!(
        reader.set_primary_filters(&["all".into()]).is_err(),
        "a read-only store refuses writes"
    );
    assert!(again.integrity_ok().expect("check"));
}

const BIN: &str = env!("CARGO_BIN_EXE_filtermon");

fn filtermon(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run filtermon")
}

/// Every result of a store as `export` writes it (JSONL).
fn export(db: &str) -> String {
    let out = filtermon(&["export", "--db", db, "--format", "jsonl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn migrate_copies_an_sqlite_store_into_postgres_whole_and_refuses_a_full_target() {
    let Some(s) = services() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("m.db");
    let source = Location::Sqlite(file.clone());
    // Two scored checkpoints, an open one, an alert and a paired gap: every table has rows.
    let (mut store, run, es) = setup(&source);
    for step in [10, 20, 30] {
        add(&mut store, run, es, step, false);
    }
    let mut ids = Vec::new();
    for mean in [2.0, 1.5] {
        let job = lease(&mut store, "me", run, es).expect("job");
        let results = [result("all", mean), result("copy", mean / 2.0)];
        assert!(store
            .complete(&job, "me", &results, &losses(), 1.0)
            .expect("complete"));
        ids.push(job.checkpoint_id);
    }
    let gap = PairedDiff {
        mean: -0.5,
        lo: -0.6,
        hi: -0.4,
        n: 2,
    };
    store
        .record_paired_gaps(
            Pairing {
                checkpoint: ids[1],
                baseline: ids[0],
            },
            es,
            &[("all".into(), gap)],
        )
        .expect("gap");
    store
        .set_primary_filters(&["copy".into()])
        .expect("primary");
    alerts_are_stored_once_and_acknowledged(&source);
    drop(store);

    let url = fresh_database(s, "migrate");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = filtermon(&["migrate", "--from", file_arg, "--to", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every table's rows match"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["results", "4", "4"]),
        "{stdout}"
    );
    assert_eq!(
        export(file_arg),
        export(&url),
        "the copy exports the same results"
    );

    // The copied store goes on: new ids continue after the copied ones.
    let target = Location::Postgres(url.clone());
    let mut copied = Store::open_existing(&target).expect("copy");
    assert_eq!(add(&mut copied, run, es, 40, false), 1);
    let counts = copied.queue_counts().expect("counts");
    assert_eq!((counts.done, counts.running, counts.queued), (2, 1, 1));

    let again = filtermon(&["migrate", "--from", file_arg, "--to", &url]);
    common::assert_input_error(&again, &["already holds"]);
}

#[test]
fn unreachable_or_refusing_postgres_is_one_line_and_exit_2() {
    let Some(s) = services() else { return };
    // Port 1 on loopback: nothing listens there.
    let out = filtermon(&[
        "status",
        "--db",
        "postgres://postgres@127.0.0.1:1/none?connect_timeout=5",
    ]);
    common::assert_input_error(&out, &["cannot connect to PostgreSQL"]);
    // The server answers but refuses the login: a role that does not exist.
    let (host_port, _) = s
        .postgres
        .trim_start_matches("postgres://postgres@")
        .split_once('/')
        .expect("test URL");
    let refused = format!("postgres://nobody:secret@{host_port}/postgres");
    let out = filtermon(&["status", "--db", &refused]);
    common::assert_input_error(&out, &["cannot connect to PostgreSQL", "nobody", "***"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("secret"),
        "the password is never shown"
    );
    // A wrong password (the test server checks this user's).
    common::services::sql(
        &s.postgres,
        &[
            // Kept across runs: it owns the databases of earlier ones.
            "DO $$ BEGIN CREATE ROLE filtermon_password;
             EXCEPTION WHEN duplicate_object THEN NULL; END $$",
            "ALTER ROLE filtermon_password LOGIN PASSWORD 'right'",
        ],
    );
    let wrong = format!("postgres://filtermon_password:wrong@{host_port}/postgres");
    let out = filtermon(&["status", "--db", &wrong]);
    common::assert_input_error(
        &out,
        &[
            "cannot connect to PostgreSQL",
            "password authentication failed",
        ],
    );
    // The right password from the environment, as libpq's clients take it, on a database
    // of that user's.
    let own = fresh_database(s, "password");
    let db_name = own.rsplit('/').next().expect("database name");
    common::services::sql(
        &s.postgres,
        &[&format!(
            "ALTER DATABASE {db_name} OWNER TO filtermon_password"
        )],
    );
    let no_password = format!("postgres://filtermon_password@{host_port}/{db_name}");
    let out = std::process::Command::new(BIN)
        .args(["status", "--db", &no_password])
        .env("PGPASSWORD", "right")
        .output()
        .expect("run filtermon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = filtermon(&["status", "--db", "postgres://u@[bad"]);
    common::assert_input_error(&out, &["not a PostgreSQL URL"]);
}

#[test]
fn a_postgres_connection_the_server_closed_is_opened_again() {
    let Some(s) = services() else { return };
    let url = fresh_database(s, "reconnect");
    let location = Location::Postgres(url.clone());
    let (mut store, run, es) = setup(&location);
    add(&mut store, run, es, 10, false);
    // What a server restart does to every session.
    common::services::cut_connections(&url);
    // The statement that meets the closed connection fails; the next one reconnects.
    let first = store.queue_counts();
    let counts = match first {
        Ok(c) => c,
        Err(_) => store.queue_counts().expect("reconnected"),
    };
    assert_eq!(counts.queued, 1);
    assert_eq!(lease(&mut store, "me", run, es).map(|j| j.step), Some(10));
}
