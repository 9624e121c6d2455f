//! The SQLite store (DESIGN §6): runs, evalsets, checkpoints, per-filter results,
//! per-token loss vectors, the job queue and alerts.
//!
//! The database runs in WAL mode so readers (`status`, `export`, charts) never block the
//! daemon. The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] takes any
//! older database to the current version on open.

pub mod activity;
pub mod alerts;
pub mod curves;
pub mod detail;
pub mod jobs;
pub mod losses;
pub mod paired_gaps;
pub mod report;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::error::input_error;

/// Schema migrations; entry `i` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    arch TEXT NOT NULL,
    dir TEXT NOT NULL,
    baseline TEXT,
    tokens_per_step INTEGER NOT NULL
);
CREATE TABLE evalsets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    tokenizer_hash TEXT NOT NULL,
    dir TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    added_at REAL NOT NULL
);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    step INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('stable', 'anneal')),
    ready_at REAL NOT NULL,
    UNIQUE (run_id, name)
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
    evalset_id INTEGER NOT NULL REFERENCES evalsets(id),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    priority INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    not_before REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    queued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    score_secs REAL,
    UNIQUE (checkpoint_id, evalset_id)
);
CREATE INDEX jobs_by_state ON jobs (state, priority DESC, not_before);
CREATE TABLE results (
    checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
    evalset_id INTEGER NOT NULL REFERENCES evalsets(id),
    filter TEXT NOT NULL,
    definition TEXT NOT NULL,
    mean REAL,
    n INTEGER NOT NULL,
    ci_lo REAL,
    ci_hi REAL,
    top1 REAL,
    top5 REAL,
    scored_at REAL NOT NULL,
    PRIMARY KEY (checkpoint_id, evalset_id, filter)
);
CREATE TABLE token_losses (
    checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
    evalset_id INTEGER NOT NULL REFERENCES evalsets(id),
    codec TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    loss BLOB NOT NULL,
    top1 BLOB NOT NULL,
    top5 BLOB NOT NULL,
    PRIMARY KEY (checkpoint_id, evalset_id)
);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    run_id INTEGER REFERENCES runs(id),
    checkpoint_id INTEGER REFERENCES checkpoints(id),
    evalset_id INTEGER REFERENCES evalsets(id),
    filter TEXT,
    message TEXT NOT NULL,
    details TEXT,
    fired_at REAL NOT NULL
);
",
    r"
ALTER TABLE alerts ADD COLUMN acked_at REAL;
CREATE UNIQUE INDEX alerts_once ON alerts (rule, checkpoint_id, evalset_id, filter);
",
    r"
CREATE TABLE paired_gaps (
    checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
    baseline_checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
    evalset_id INTEGER NOT NULL REFERENCES evalsets(id),
    filter TEXT NOT NULL,
    gap REAL,
    n INTEGER NOT NULL,
    ci_lo REAL,
    ci_hi REAL,
    PRIMARY KEY (checkpoint_id, evalset_id, filter)
);
",
    // Firings stored before delivery was tracked were handed to the hook of their day, so
    // they count as delivered: a first start on this version must not replay old alerts.
    r"
ALTER TABLE alerts ADD COLUMN delivered_at REAL;
UPDATE alerts SET delivered_at = fired_at;
ALTER TABLE jobs ADD COLUMN lost_leases INTEGER NOT NULL DEFAULT 0;
",
    r"
CREATE TABLE primary_filters (filter TEXT PRIMARY KEY);
",
];

/// Seconds since the Unix epoch: every time in the store.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A run as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// Unique name.
    pub name: String,
    /// Architecture label.
    pub arch: String,
    /// Checkpoint folder.
    pub dir: String,
    /// Baseline run name.
    pub baseline: Option<String>,
    /// Tokens per step.
    pub tokens_per_step: u64,
}

/// An evalset as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalsetRow {
    /// Config name.
    pub name: String,
    /// Content hash.
    pub hash: String,
    /// Tokenizer hash.
    pub tokenizer_hash: String,
    /// Folder.
    pub dir: String,
    /// Tokens.
    pub tokens: u64,
}

/// A checkpoint found ready on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckpoint {
    /// Folder name (unique within the run).
    pub name: String,
    /// Full path.
    pub path: String,
    /// Training step.
    pub step: u64,
    /// Tokens seen.
    pub tokens: u64,
    /// Annealed (true) or stable.
    pub anneal: bool,
}

/// A connection to the store.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating it and its folder if needed) and migrates the database.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                input_error(format!("{}: cannot create folder: {e}", parent.display()))
            })?;
        }
        Store::connect(path, OpenFlags::default())
    }

    /// Opens an existing database; a missing file is an input error rather than a new db.
    pub fn open_existing(path: &Path) -> anyhow::Result<Store> {
        if !path.is_file() {
            return Err(input_error(format!("{}: no such database", path.display())));
        }
        Store::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    /// Opens an existing database for reading only, as the dashboard does beside a writing
    /// daemon. It is never migrated: a schema of another version is an input error (opening
    /// it once with [`Store::open_existing`] migrates it).
    pub fn open_read_only(path: &Path) -> anyhow::Result<Store> {
        if !path.is_file() {
            return Err(input_error(format!("{}: no such database", path.display())));
        }
        let shown = path.display();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| input_error(format!("{shown}: cannot open database: {e}")))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| input_error(format!("{shown}: not a usable SQLite database: {e}")))?;
        if usize::try_from(version).ok() != Some(MIGRATIONS.len()) {
            return Err(input_error(format!(
                "{shown}: schema version {version}, this filtermon reads version {}",
                MIGRATIONS.len()
            )));
        }
        Ok(Store { conn })
    }

    /// SQLite's `PRAGMA data_version`: it changes whenever another connection commits, so a
    /// reader can wait for new results without reading the tables.
    pub fn data_version(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn connect(path: &Path, flags: OpenFlags) -> anyhow::Result<Store> {
        let shown = path.display();
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| input_error(format!("{shown}: cannot open database: {e}")))?;
        // Several daemons and readers share one file: wait for locks rather than fail.
        conn.busy_timeout(Duration::from_secs(30))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| input_error(format!("{shown}: not a usable SQLite database: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!("{shown}: cannot switch to WAL mode (got {mode})");
        }
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut store = Store { conn };
        store
            .migrate()
            .with_context(|| format!("{shown}: migrating the schema"))?;
        Ok(store)
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let version = usize::try_from(version)?;
        if version > MIGRATIONS.len() {
            return Err(input_error(format!(
                "schema version {version} is newer than this filtermon knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)
                .with_context(|| format!("migration to version {}", i + 1))?;
        }
        tx.pragma_update(None, "user_version", i64::try_from(MIGRATIONS.len())?)?;
        tx.commit()?;
        Ok(())
    }

    /// Records a run (or updates its label, folder and baseline); returns its id.
    pub fn upsert_run(&mut self, run: &RunRow) -> anyhow::Result<i64> {
        let tps = i64::try_from(run.tokens_per_step)?;
        Ok(self.conn.query_row(
            "INSERT INTO runs (name, arch, dir, baseline, tokens_per_step) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET arch = ?2, dir = ?3, baseline = ?4, tokens_per_step = ?5
             RETURNING id",
            params![run.name, run.arch, run.dir, run.baseline, tps],
            |r| r.get(0),
        )?)
    }

    /// Records an evalset by content hash; returns its id.
    pub fn upsert_evalset(&mut self, es: &EvalsetRow) -> anyhow::Result<i64> {
        let tokens = i64::try_from(es.tokens)?;
        Ok(self.conn.query_row(
            "INSERT INTO evalsets (name, hash, tokenizer_hash, dir, tokens, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (hash) DO UPDATE SET name = ?1, dir = ?4
             RETURNING id",
            params![es.name, es.hash, es.tokenizer_hash, es.dir, tokens, now()],
            |r| r.get(0),
        )?)
    }

    /// Records a ready checkpoint and queues one job per evalset, in one transaction.
    /// Returns the number of jobs that were new (0 when another daemon got there first).
    pub fn add_checkpoint(
        &mut self,
        run_id: i64,
        ck: &NewCheckpoint,
        evalset_ids: &[i64],
    ) -> anyhow::Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let t = now();
        tx.execute(
            "INSERT INTO checkpoints (run_id, name, path, step, tokens, kind, ready_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (run_id, name) DO NOTHING",
            params![
                run_id,
                ck.name,
                ck.path,
                i64::try_from(ck.step)?,
                i64::try_from(ck.tokens)?,
                if ck.anneal { "anneal" } else { "stable" },
                t
            ],
        )?;
        let ck_id: i64 = tx.query_row(
            "SELECT id FROM checkpoints WHERE run_id = ?1 AND name = ?2",
            params![run_id, ck.name],
            |r| r.get(0),
        )?;
        let mut added = 0;
        for &es in evalset_ids {
            added += tx.execute(
                "INSERT INTO jobs (checkpoint_id, evalset_id, state, priority, queued_at)
                 VALUES (?1, ?2, 'queued', ?3, ?4) ON CONFLICT DO NOTHING",
                params![ck_id, es, i64::from(ck.anneal), t],
            )?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Names of the checkpoints of a run that are already recorded.
    pub fn checkpoint_names(&self, run_id: i64) -> anyhow::Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM checkpoints WHERE run_id = ?1")?;
        let names = st
            .query_map([run_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(names)
    }

    /// Id of a run by name.
    pub fn run_id(&self, name: &str) -> anyhow::Result<Option<i64>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM runs WHERE name = ?1", [name], |r| r.get(0))
            .optional()?)
    }

    /// `PRAGMA integrity_check` passes.
    pub fn integrity_ok(&self) -> anyhow::Result<bool> {
        let s: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        Ok(s == "ok")
    }
}

/// Stores built by hand for the unit tests of what reads them.
#[cfg(test)]
pub(crate) mod testing {
    use super::{EvalsetRow, NewCheckpoint, RunRow, Store};
    use crate::analysis::stats::aggregate::FilterResult;
    use crate::evalset::scores::EvalScores;
    use crate::store::losses::encode;

    /// A fresh store in a temporary folder, with one evalset of `tokens` tokens; returns the
    /// folder (keep it alive), the store and the evalset id.
    pub(crate) fn store(tokens: usize) -> (tempfile::TempDir, Store, i64) {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = Store::open(&dir.path().join("m.db")).expect("store");
        let es = store
            .upsert_evalset(&EvalsetRow {
                name: "e".into(),
                hash: "h".into(),
                tokenizer_hash: "t".into(),
                dir: "/e".into(),
                tokens: tokens as u64,
            })
            .expect("evalset");
        (dir, store, es)
    }

    /// Adds a run (`baseline` by name) and returns its id.
    pub(crate) fn run(store: &mut Store, name: &str, baseline: Option<&str>) -> i64 {
        store
            .upsert_run(&RunRow {
                name: name.into(),
                arch: "hybrid".into(),
                dir: format!("/{name}"),
                baseline: baseline.map(str::to_owned),
                tokens_per_step: 10,
            })
            .expect("run")
    }

    /// Adds a checkpoint at `step` (tokens = 10 × step) and commits its score on `es`:
    /// per-token `losses` (position 0 unscored) and an `all` row with their mean. Returns the
    /// checkpoint id.
    pub(crate) fn scored(
        store: &mut Store,
        run: i64,
        es: i64,
        step: u64,
        anneal: bool,
        losses: &[f32],
    ) -> i64 {
        let suffix = if anneal { "-anneal" } else { "" };
        let ck = NewCheckpoint {
            name: format!("step{step}{suffix}"),
            path: format!("/r/step{step}{suffix}"),
            step,
            tokens: step * 10,
            anneal,
        };
        store.add_checkpoint(run, &ck, &[es]).expect("checkpoint");
        let job = store
            .lease("t", 60.0, &[run], &[es])
            .expect("lease")
            .expect("job");
        let loss: Vec<f32> = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| if i == 0 { f32::NAN } else { l })
            .collect();
        let mean = loss[1..].iter().map(|&l| f64::from(l)).sum::<f64>() / (loss.len() - 1) as f64;
        let scores = EvalScores {
            top1: vec![false; loss.len()],
            top5: vec![false; loss.len()],
            loss,
        };
        let result = FilterResult {
            filter: "all".into(),
            definition: "all".into(),
            domain: None,
            mean,
            n: losses.len() - 1,
            ci_lo: mean,
            ci_hi: mean,
            top1: 0.0,
            top5: 0.0,
        };
        let encoded = encode(&scores).expect("encode");
        assert!(store
            .complete(&job, "t", &[result], &encoded, 0.0)
            .expect("complete"));
        job.checkpoint_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(&dir.path().join("sub/m.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn migrates_once_and_reopens() {
        let (dir, store) = temp_store();
        let v: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v as usize, MIGRATIONS.len());
        drop(store);
        let again = Store::open_existing(&dir.path().join("sub/m.db")).expect("reopen");
        assert!(again.integrity_ok().expect("check"));
        assert!(Store::open_existing(&dir.path().join("none.db")).is_err());
    }

    #[test]
    fn version_3_gains_delivery_and_lost_lease_columns_with_old_firings_delivered() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).expect("create");
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).expect("old schema");
            }
            conn.pragma_update(None, "user_version", 3)
                .expect("version");
            conn.execute_batch(
                "INSERT INTO runs VALUES (1, 'a', 'hybrid', '/a', NULL, 10);
                 INSERT INTO evalsets VALUES (1, 'e', 'h', 't', '/e', 5, 0);
                 INSERT INTO checkpoints VALUES (1, 1, 'step1', '/a/step1', 1, 10, 'stable', 0);
                 INSERT INTO jobs (checkpoint_id, evalset_id, state, priority, attempts, queued_at)
                     VALUES (1, 1, 'queued', 0, 1, 0);
                 INSERT INTO alerts (rule, run_id, checkpoint_id, evalset_id, filter, message,
                     fired_at) VALUES ('r', 1, 1, 1, 'all', 'm', 1234.5);",
            )
            .expect("old rows");
        }
        let store = Store::open(&path).expect("migrate");
        let v: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v as usize, MIGRATIONS.len());
        let delivered: Option<f64> = store
            .conn
            .query_row("SELECT delivered_at FROM alerts", [], |r| r.get(0))
            .expect("alert");
        assert_eq!(delivered, Some(1234.5), "old firings are not replayed");
        let (attempts, lost): (i64, i64) = store
            .conn
            .query_row("SELECT attempts, lost_leases FROM jobs", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("job");
        assert_eq!((attempts, lost), (1, 0));
        assert!(store.integrity_ok().expect("check"));
    }

    #[test]
    fn checkpoints_and_jobs_are_added_once() {
        let (_dir, mut store, es) = testing::store(5);
        let run_id = testing::run(&mut store, "a", None);
        assert_eq!(
            testing::run(&mut store, "a", None),
            run_id,
            "a run is stored once"
        );
        let ck = NewCheckpoint {
            name: "step1".into(),
            path: "/x/step1".into(),
            step: 1,
            tokens: 10,
            anneal: false,
        };
        assert_eq!(store.add_checkpoint(run_id, &ck, &[es]).expect("add"), 1);
        assert_eq!(store.add_checkpoint(run_id, &ck, &[es]).expect("add"), 0);
        assert_eq!(
            store.checkpoint_names(run_id).expect("names"),
            vec!["step1"]
        );
    }
}
