//! The store (DESIGN §6): runs, evalsets, checkpoints, per-filter results, per-token loss
//! vectors, the job queue and alerts, in an SQLite file or a PostgreSQL database
//! ([`sql::Location`]), through one interface ([`sql`]).
//!
//! An SQLite file runs in WAL mode so readers (`status`, `export`, charts) never block the
//! daemon. The schema is versioned (SQLite's `PRAGMA user_version`, a one-row table on
//! PostgreSQL); [`MIGRATIONS`] takes any older store to the current version on open.

pub mod activity;
pub mod alerts;
pub mod curves;
pub mod detail;
pub mod jobs;
pub mod losses;
pub mod migrate;
pub mod paired_gaps;
pub mod report;
pub mod sql;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::error::input_error;
pub use sql::Location;
use sql::{params, Access, Db, Dialect, Exec};

/// One schema step.
pub struct Migration {
    /// The schema change, in SQL both engines run (SQLite's type names, which
    /// [`Dialect::translate`] widens for PostgreSQL).
    pub schema: &'static str,
    /// What the step does to rows an older SQLite store already holds, where that needs
    /// SQLite's own SQL. A PostgreSQL store is always created at the newest version (or filled
    /// by `migrate` from a migrated SQLite file), so it never holds such rows.
    pub sqlite_rows: Option<&'static str>,
}

/// Schema migrations; entry `i` takes a store from version `i` to `i + 1`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        schema: r"
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
        sqlite_rows: None,
    },
    Migration {
        schema: r"
ALTER TABLE alerts ADD COLUMN acked_at REAL;
CREATE UNIQUE INDEX alerts_once ON alerts (rule, checkpoint_id, evalset_id, filter);
",
        sqlite_rows: None,
    },
    Migration {
        schema: r"
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
        sqlite_rows: None,
    },
    // Firings stored before delivery was tracked were handed to the hook of their day, so
    // they count as delivered: a first start on this version must not replay old alerts.
    Migration {
        schema: r"
ALTER TABLE alerts ADD COLUMN delivered_at REAL;
UPDATE alerts SET delivered_at = fired_at;
ALTER TABLE jobs ADD COLUMN lost_leases INTEGER NOT NULL DEFAULT 0;
",
        sqlite_rows: None,
    },
    Migration {
        schema: r"
CREATE TABLE primary_filters (filter TEXT PRIMARY KEY);
",
        sqlite_rows: None,
    },
    // Result rows keep the order of their job's filter list, which SQLite held in its rowid
    // and PostgreSQL has no stable equivalent of.
    Migration {
        schema: "ALTER TABLE results ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;",
        sqlite_rows: Some(
            "UPDATE results SET pos = rowid - (SELECT MIN(o.rowid) FROM results o
             WHERE o.checkpoint_id = results.checkpoint_id AND o.evalset_id = results.evalset_id);",
        ),
    },
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
    db: Db,
}

/// Every table, parents before children: the order `migrate` copies them in.
pub const TABLES: &[&str] = &[
    "runs",
    "evalsets",
    "checkpoints",
    "jobs",
    "results",
    "token_losses",
    "alerts",
    "paired_gaps",
    "primary_filters",
];

/// The key that serialises migrations of one PostgreSQL database across processes.
const MIGRATION_LOCK: i64 = 0x6669_6c74_6572;

impl Store {
    /// Opens (creating an SQLite file and its folder if needed) and migrates the store.
    pub fn open(location: impl Into<Location>) -> anyhow::Result<Store> {
        Store::connect(&location.into(), Access::Create)
    }

    /// Opens an existing store; a missing SQLite file is an input error rather than a new
    /// store.
    pub fn open_existing(location: impl Into<Location>) -> anyhow::Result<Store> {
        Store::connect(&location.into(), Access::Existing)
    }

    /// Opens an existing store for reading only, as the dashboard does beside a writing
    /// daemon. It is never migrated: a schema of another version is an input error (opening
    /// it once with [`Store::open_existing`] migrates it).
    pub fn open_read_only(location: impl Into<Location>) -> anyhow::Result<Store> {
        let location = location.into();
        let store = Store {
            db: Db::connect(&location, Access::ReadOnly)?,
        };
        let version = store
            .schema_version()
            .map_err(|e| input_error(format!("{location}: not a usable store: {e:#}")))?;
        if version != MIGRATIONS.len() {
            return Err(input_error(format!(
                "{location}: schema version {version}, this filtermon reads version {}",
                MIGRATIONS.len()
            )));
        }
        Ok(store)
    }

    /// Which engine the store runs on.
    pub fn dialect(&self) -> Dialect {
        self.db.dialect()
    }

    /// A number that changes whenever another connection commits, so that a reader can wait
    /// for new results without reading the tables: SQLite's `PRAGMA data_version`; on
    /// PostgreSQL the snapshot's next transaction id, which moves with every write
    /// transaction of the server (a change elsewhere costs the reader one needless look).
    pub fn data_version(&self) -> anyhow::Result<i64> {
        let sql = match self.dialect() {
            Dialect::Sqlite => "PRAGMA data_version",
            Dialect::Postgres => "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
        };
        self.db.query_one(sql, params![])?.get(0)
    }

    fn connect(location: &Location, access: Access) -> anyhow::Result<Store> {
        let mut store = Store {
            db: Db::connect(location, access)?,
        };
        store
            .migrate()
            .with_context(|| format!("{location}: migrating the schema"))?;
        Ok(store)
    }

    fn schema_version(&self) -> anyhow::Result<usize> {
        stored_version(&self.db)
    }

    fn migrate(&mut self) -> anyhow::Result<()> {
        self.db.transaction(|tx| {
            if tx.dialect() == Dialect::Postgres {
                // Two daemons starting on a new database must not both create the tables.
                tx.execute("SELECT pg_advisory_xact_lock(?1)", params![MIGRATION_LOCK])?;
                tx.batch("CREATE TABLE IF NOT EXISTS filtermon_schema (version BIGINT NOT NULL)")?;
            }
            let version = stored_version(tx)?;
            if version > MIGRATIONS.len() {
                return Err(input_error(format!(
                    "schema version {version} is newer than this filtermon knows ({})",
                    MIGRATIONS.len()
                )));
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
                tx.batch(m.schema)
                    .with_context(|| format!("migration to version {}", i + 1))?;
                if let (Some(rows), Dialect::Sqlite) = (m.sqlite_rows, tx.dialect()) {
                    tx.batch(rows)
                        .with_context(|| format!("migration to version {}", i + 1))?;
                }
            }
            let current = i64::try_from(MIGRATIONS.len())?;
            match tx.dialect() {
                Dialect::Sqlite => tx.batch(&format!("PRAGMA user_version = {current}"))?,
                Dialect::Postgres => {
                    tx.execute("DELETE FROM filtermon_schema", params![])?;
                    tx.execute(
                        "INSERT INTO filtermon_schema (version) VALUES (?1)",
                        params![current],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Records a run (or updates its label, folder and baseline); returns its id.
    pub fn upsert_run(&mut self, run: &RunRow) -> anyhow::Result<i64> {
        self.db
            .query_one(
                "INSERT INTO runs (name, arch, dir, baseline, tokens_per_step) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET arch = ?2, dir = ?3, baseline = ?4, tokens_per_step = ?5
                 RETURNING id",
                params![run.name, run.arch, run.dir, run.baseline, run.tokens_per_step],
            )?
            .get(0)
    }

    /// Records an evalset by content hash; returns its id.
    pub fn upsert_evalset(&mut self, es: &EvalsetRow) -> anyhow::Result<i64> {
        self.db
            .query_one(
                "INSERT INTO evalsets (name, hash, tokenizer_hash, dir, tokens, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (hash) DO UPDATE SET name = ?1, dir = ?4
                 RETURNING id",
                params![
                    es.name,
                    es.hash,
                    es.tokenizer_hash,
                    es.dir,
                    es.tokens,
                    now()
                ],
            )?
            .get(0)
    }

    /// Records a ready checkpoint and queues one job per evalset, in one transaction.
    /// Returns the number of jobs that were new (0 when another daemon got there first).
    pub fn add_checkpoint(
        &mut self,
        run_id: i64,
        ck: &NewCheckpoint,
        evalset_ids: &[i64],
    ) -> anyhow::Result<usize> {
        self.db.transaction(|tx| {
            let t = now();
            tx.execute(
                "INSERT INTO checkpoints (run_id, name, path, step, tokens, kind, ready_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (run_id, name) DO NOTHING",
                params![
                    run_id,
                    ck.name,
                    ck.path,
                    ck.step,
                    ck.tokens,
                    if ck.anneal { "anneal" } else { "stable" },
                    t
                ],
            )?;
            let ck_id: i64 = tx
                .query_one(
                    "SELECT id FROM checkpoints WHERE run_id = ?1 AND name = ?2",
                    params![run_id, ck.name],
                )?
                .get(0)?;
            let mut added = 0;
            for &es in evalset_ids {
                added += tx.execute(
                    "INSERT INTO jobs (checkpoint_id, evalset_id, state, priority, queued_at)
                     VALUES (?1, ?2, 'queued', ?3, ?4) ON CONFLICT DO NOTHING",
                    params![ck_id, es, ck.anneal, t],
                )?;
            }
            Ok(added)
        })
    }

    /// Names of the checkpoints of a run that are already recorded.
    pub fn checkpoint_names(&self, run_id: i64) -> anyhow::Result<Vec<String>> {
        self.db
            .query(
                "SELECT name FROM checkpoints WHERE run_id = ?1",
                params![run_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Id of a run by name.
    pub fn run_id(&self, name: &str) -> anyhow::Result<Option<i64>> {
        self.db
            .query_opt("SELECT id FROM runs WHERE name = ?1", params![name])?
            .map(|r| r.get(0))
            .transpose()
    }

    /// The store is sound: SQLite's `PRAGMA integrity_check` passes; a PostgreSQL server
    /// keeps its own pages sound, so there it answers a query.
    pub fn integrity_ok(&self) -> anyhow::Result<bool> {
        match self.dialect() {
            Dialect::Sqlite => {
                let s: String = self
                    .db
                    .query_one("PRAGMA integrity_check", params![])?
                    .get(0)?;
                Ok(s == "ok")
            }
            Dialect::Postgres => Ok(self.db.query_one("SELECT 1", params![]).is_ok()),
        }
    }
}

/// The schema version: SQLite's `user_version`; on PostgreSQL a one-row table (0 when the
/// database is new and has none).
fn stored_version(db: &dyn Exec) -> anyhow::Result<usize> {
    let version: i64 = match db.dialect() {
        Dialect::Sqlite => db.query_one("PRAGMA user_version", params![])?.get(0)?,
        Dialect::Postgres => {
            let exists: bool = db
                .query_one(
                    "SELECT to_regclass('filtermon_schema') IS NOT NULL",
                    params![],
                )?
                .get(0)?;
            if !exists {
                return Ok(0);
            }
            db.query_opt("SELECT version FROM filtermon_schema", params![])?
                .map_or(Ok(0), |r| r.get(0))?
        }
    };
    Ok(usize::try_from(version)?)
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
        let mut store = Store::open(dir.path().join("m.db")).expect("store");
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
        let store = Store::open(dir.path().join("sub/m.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn migrates_once_and_reopens() {
        let (dir, store) = temp_store();
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
        drop(store);
        let again = Store::open_existing(dir.path().join("sub/m.db")).expect("reopen");
        assert!(again.integrity_ok().expect("check"));
        assert!(Store::open_existing(dir.path().join("none.db")).is_err());
    }

    #[test]
    fn version_3_gains_delivery_and_lost_lease_columns_with_old_firings_delivered() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("old.db");
        {
            let conn = rusqlite::Connection::open(&path).expect("create");
            for m in &MIGRATIONS[..3] {
                conn.execute_batch(m.schema).expect("old schema");
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
                     fired_at) VALUES ('r', 1, 1, 1, 'all', 'm', 1234.5);
                 INSERT INTO results (checkpoint_id, evalset_id, filter, definition, n, scored_at)
                     VALUES (1, 1, 'all', 'all', 4, 0), (1, 1, 'copy', 'copy', 2, 0);",
            )
            .expect("old rows");
        }
        let store = Store::open(&path).expect("migrate");
        assert_eq!(store.schema_version().expect("version"), MIGRATIONS.len());
        let row = |sql: &str| store.db.query_one(sql, params![]).expect(sql);
        let delivered: Option<f64> = row("SELECT delivered_at FROM alerts")
            .get(0)
            .expect("alert");
        assert_eq!(delivered, Some(1234.5), "old firings are not replayed");
        let job = row("SELECT attempts, lost_leases FROM jobs");
        let (attempts, lost): (i64, i64) = (job.get(0).expect("a"), job.get(1).expect("l"));
        assert_eq!((attempts, lost), (1, 0));
        let positions: Vec<i64> = store
            .db
            .query("SELECT pos FROM results ORDER BY filter", params![])
            .expect("results")
            .iter()
            .map(|r| r.get(0).expect("pos"))
            .collect();
        assert_eq!(positions, [0, 1], "old results keep their order");
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
