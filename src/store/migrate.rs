//! `migrate`: copies an SQLite store whole into another, empty store (a team's PostgreSQL
//! database), in one transaction, and checks every table's row count after the commit.

use anyhow::Context;

use super::sql::{params, Dialect, Exec, Tx, Value};
use super::{Location, Store, TABLES};
use crate::error::input_error;

/// Rows read from the source and inserted with one statement: few enough that the
/// parameters of one statement stay far below PostgreSQL's 65,535.
const BATCH: usize = 200;

/// One table's rows in the source and in the target after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// Table name.
    pub table: &'static str,
    /// Rows in the source.
    pub source: u64,
    /// Rows in the target.
    pub target: u64,
}

/// Tables with an id column whose next value the target must continue from.
const ID_TABLES: &[&str] = &["runs", "evalsets", "checkpoints", "jobs", "alerts"];

/// Copies every row of the SQLite store `from` into the empty store `to` (created and
/// migrated when new), then counts both. The source is migrated to the current schema first,
/// so both hold the same columns. A target that already holds rows is refused: merging two
/// stores' ids is not a copy.
pub fn copy(from: &Location, to: &Location) -> anyhow::Result<Vec<TableCount>> {
    if from.sqlite_path().is_none() {
        return Err(input_error(format!(
            "--from {from}: migrate copies from an SQLite file"
        )));
    }
    if from == to {
        return Err(input_error("--from and --to are the same store"));
    }
    let source = Store::open_existing(from)?;
    let target = Store::open(to)?;
    for table in TABLES {
        let n = count(&target, table)?;
        if n > 0 {
            return Err(input_error(format!(
                "--to {to}: already holds {n} rows in {table}; migrate copies into an empty store"
            )));
        }
    }
    target
        .db
        .transaction(|tx| {
            for table in TABLES {
                copy_table(&source, tx, table).with_context(|| format!("copying {table}"))?;
            }
            if tx.dialect() == Dialect::Postgres {
                for table in ID_TABLES {
                    // Rows copied with their ids leave the identity sequence behind them.
                    tx.query_one(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                                           COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                        ),
                        params![],
                    )?;
                }
            }
            Ok(())
        })
        .with_context(|| format!("copying {from} into {to}"))?;
    TABLES
        .iter()
        .map(|&table| {
            Ok(TableCount {
                table,
                source: count(&source, table)?,
                target: count(&target, table)?,
            })
        })
        .collect()
}

fn count(store: &Store, table: &str) -> anyhow::Result<u64> {
    store
        .db
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), params![])?
        .get(0)
}

/// Copies one table in batches of [`BATCH`] rows, in the source's rowid order.
fn copy_table(source: &Store, tx: &Tx<'_>, table: &str) -> anyhow::Result<()> {
    let columns: Vec<String> = source
        .db
        .query(&format!("PRAGMA table_info({table})"), params![])?
        .iter()
        .map(|r| r.get(1))
        .collect::<anyhow::Result<_>>()?;
    let list = columns.join(", ");
    let mut after = i64::MIN;
    loop {
        let rows = source.db.query(
            &format!(
                "SELECT rowid, {list} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}"
            ),
            params![after],
        )?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0)?;
        let mut values: Vec<Value> = Vec::with_capacity(rows.len() * columns.len());
        let mut tuples = Vec::with_capacity(rows.len());
        for row in rows {
            let start = values.len();
            values.extend(row.into_values().into_iter().skip(1));
            let marks: Vec<String> = (start + 1..=values.len())
                .map(|i| format!("?{i}"))
                .collect();
            tuples.push(format!("({})", marks.join(", ")));
        }
        tx.execute(
            &format!("INSERT INTO {table} ({list}) VALUES {}", tuples.join(", ")),
            &values,
        )?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[test]
    fn a_store_is_copied_whole_into_an_empty_one_and_never_into_a_full_one() {
        let (dir, mut store, es) = testing::store(4);
        let a = testing::run(&mut store, "a", None);
        let b = testing::run(&mut store, "b", Some("a"));
        for (run, step) in [(a, 10), (a, 20), (b, 10)] {
            testing::scored(&mut store, run, es, step, false, &[1.0, 2.0, 3.0, 4.0]);
        }
        drop(store);
        let from = Location::Sqlite(dir.path().join("m.db"));
        let to = Location::Sqlite(dir.path().join("copy.db"));
        let counts = copy(&from, &to).expect("copy");
        assert!(counts.iter().all(|c| c.source == c.target), "{counts:?}");
        let checkpoints = counts
            .iter()
            .find(|c| c.table == "checkpoints")
            .expect("row");
        assert_eq!(checkpoints.target, 3);

        let (source, target) = (
            Store::open_existing(&from).expect("from"),
            Store::open_existing(&to).expect("to"),
        );
        assert_eq!(
            source.results(None).expect("a"),
            target.results(None).expect("b")
        );
        assert_eq!(
            source.status().expect("a").runs,
            target.status().expect("b").runs
        );

        let again = copy(&from, &to).expect_err("the target is not empty");
        assert!(again.to_string().contains("already holds"), "{again}");
    }
}
