//! One SQL interface over the store's two backends: SQLite (an embedded file, the default)
//! and PostgreSQL (a server that daemons and workers on several nodes share).
//!
//! The store writes its SQL once, in the subset both engines run, with SQLite's `?N`
//! placeholders; [`Dialect::Postgres`] rewrites those to `$N` and the schema's SQLite type
//! names to PostgreSQL's. Values cross as the five SQLite storage classes ([`Value`]): the
//! PostgreSQL side binds each to the type the server asks for, so the store never spells a
//! backend's types.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::error::input_error;

/// Where a store lives: an SQLite file, or a PostgreSQL database given by its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A database file (created on first open).
    Sqlite(PathBuf),
    /// A `postgres://` (or `postgresql://`) URL.
    Postgres(String),
}

impl Location {
    /// Reads `--db` and the config's `db`: a `postgres://` URL, else a file path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }

    /// The SQLite file, if the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }
}

impl std::str::FromStr for Location {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Location::parse(s))
    }
}

/// Shown in logs and errors: a URL's password is masked.
impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&mask_password(url)),
        }
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::Sqlite(p.clone())
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::Sqlite(p)
    }
}

impl From<&Location> for Location {
    fn from(l: &Location) -> Location {
        l.clone()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// The engine behind a connection, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// A statement written for SQLite, as this engine runs it: `?N` placeholders become
    /// `$N`, and in DDL the SQLite type names become PostgreSQL's (64-bit integers, doubles,
    /// byte arrays, identity keys). Text inside quotes is left alone.
    pub fn translate(self, sql: &str) -> String {
        if self == Dialect::Sqlite {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut quoted = false;
        let mut word = String::new();
        let mut chars = sql.chars().peekable();
        let flush = |word: &mut String, out: &mut String| {
            out.push_str(match word.to_ascii_uppercase().as_str() {
                "INTEGER" => "BIGINT",
                "REAL" => "DOUBLE PRECISION",
                "BLOB" => "BYTEA",
                _ => word.as_str(),
            });
            word.clear();
        };
        while let Some(c) = chars.next() {
            if quoted {
                out.push(c);
                quoted = c != '\'';
                continue;
            }
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            flush(&mut word, &mut out);
            match c {
                '\'' => {
                    quoted = true;
                    out.push(c);
                }
                '?' => {
                    out.push('$');
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        out.push(*d);
                        chars.next();
                    }
                }
                _ => out.push(c),
            }
        }
        flush(&mut word, &mut out);
        // A store id is an identity column there (explicit ids, as `migrate` copies, allowed).
        out.replace(
            "BIGINT PRIMARY KEY",
            "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        )
    }
}

/// A value as the store reads and writes it: SQLite's storage classes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A Rust value bound as a statement parameter.
pub trait ToValue {
    /// The value to bind.
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                // Counts and steps beyond i64 do not occur; saturate rather than wrap.
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u64, usize);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Statement parameters: `params![a, b]` binds `a` to `?1` and `b` to `?2`.
macro_rules! params {
    ($($x:expr),* $(,)?) => {
        &[$($crate::store::sql::ToValue::to_value(&$x)),*] as &[$crate::store::sql::Value]
    };
}
pub(crate) use params;

/// A Rust value read from a result column.
pub trait FromValue: Sized {
    /// The value, or why the column does not hold one.
    fn from_value(v: Value) -> anyhow::Result<Self>;
}

impl FromValue for Value {
    fn from_value(v: Value) -> anyhow::Result<Self> {
        Ok(v)
    }
}

impl FromValue for i64 {
    fn from_value(v: Value) -> anyhow::Result<Self> {
        match v {
            Value::Int(i) => Ok(i),
            other => anyhow::bail!("expected an integer, found {other:?}"),
        }
    }
}

macro_rules! unsigned_from_value {
    ($($t:ty),*) => {$(
        /// Negative values (never written by the store) read as 0.
        impl FromValue for $t {
            fn from_value(v: Value) -> anyhow::Result<Self> {
                let i = i64::from_value(v)?.max(0);
                Ok(<$t>::try_from(i).unwrap_or(<$t>::MAX))
            }
        }
    )*};
}
unsigned_from_value!(u32, u64, usize);

impl FromValue for bool {
    fn from_value(v: Value) -> anyhow::Result<Self> {
        Ok(i64::from_value(v)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(v: Value) -> anyhow::Result<Self> {
        match v {
            Value::Real(x) => Ok(x),
            // An aggregate over a REAL column of whole numbers can come back as an integer.
            Value::Int(i) => Ok(i as f64),
            other => anyhow::bail!("expected a number, found {other:?}"),
        }
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> anyhow::Result<Self> {
        match v {
            Value::Text(s) => Ok(s),
            other => anyhow::bail!("expected text, found {other:?}"),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Value) -> anyhow::Result<Self> {
        match v {
            Value::Blob(b) => Ok(b),
            other => anyhow::bail!("expected bytes, found {other:?}"),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> anyhow::Result<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `i`, converted.
    pub fn get<T: FromValue>(&self, i: usize) -> anyhow::Result<T> {
        let v = self
            .0
            .get(i)
            .cloned()
            .with_context(|| format!("no column {i} in a row of {}", self.0.len()))?;
        T::from_value(v).with_context(|| format!("column {i}"))
    }

    /// Every column.
    pub fn into_values(self) -> Vec<Value> {
        self.0
    }
}

/// Runs statements: a connection, or a transaction on one.
pub trait Exec {
    /// The engine.
    fn dialect(&self) -> Dialect;

    /// Runs one statement written for SQLite; returns the rows it affected, and its result
    /// rows when `rows` is set.
    fn run(&self, sql: &str, params: &[Value], rows: bool) -> anyhow::Result<(usize, Vec<Row>)>;

    /// Runs several `;`-separated statements without parameters.
    fn batch(&self, sql: &str) -> anyhow::Result<()>;

    /// Runs a statement; returns the rows it affected.
    fn execute(&self, sql: &str, params: &[Value]) -> anyhow::Result<usize> {
        Ok(self.run(sql, params, false)?.0)
    }

    /// Every row of a query.
    fn query(&self, sql: &str, params: &[Value]) -> anyhow::Result<Vec<Row>> {
        Ok(self.run(sql, params, true)?.1)
    }

    /// The first row of a query, if any.
    fn query_opt(&self, sql: &str, params: &[Value]) -> anyhow::Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row of a query that returns one.
    fn query_one(&self, sql: &str, params: &[Value]) -> anyhow::Result<Row> {
        self.query_opt(sql, params)?
            .context("the query returned no row")
    }
}

/// A connection to either backend.
pub enum Db {
    /// An SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL session.
    Postgres(Box<PgSession>),
}

/// A PostgreSQL client (it needs `&mut`; the store reads through `&self`), reconnected
/// before a statement when the server closed the last connection (a restart or failover of
/// the server must not end a daemon that runs for weeks; the statement that met the closed
/// connection fails and its caller retries).
///
/// The client closes its connection on drop by blocking on a runtime of its own, which tokio
/// forbids on a runtime's thread, where the dashboard may drop a connection: there it is
/// closed on a thread of its own.
pub struct PgSession {
    client: Option<RefCell<postgres::Client>>,
    config: postgres::Config,
    shown: String,
}

impl PgSession {
    fn connect(config: postgres::Config, shown: String) -> anyhow::Result<PgSession> {
        let client = config.connect(postgres::NoTls).map_err(|e| {
            input_error(format!(
                "{shown}: cannot connect to PostgreSQL: {}",
                pg_error_text(&e)
            ))
        })?;
        Ok(PgSession {
            client: Some(RefCell::new(client)),
            config,
            shown,
        })
    }

    /// The client, connected again first if the server closed its connection.
    fn live(&self) -> anyhow::Result<std::cell::RefMut<'_, postgres::Client>> {
        let cell = self
            .client
            .as_ref()
            .expect("the client is only taken on drop");
        let mut client = cell.borrow_mut();
        if client.is_closed() {
            *client = self.config.connect(postgres::NoTls).map_err(|e| {
                anyhow::anyhow!(
                    "{}: the connection was closed and cannot be opened again: {}",
                    self.shown,
                    pg_error_text(&e)
                )
            })?;
            tracing::warn!(db = %self.shown, "connection to PostgreSQL opened again");
        }
        Ok(client)
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                std::thread::spawn(move || drop(client));
            }
        }
    }
}

/// How a connection is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write; an SQLite file is created when missing.
    Create,
    /// Read and write an existing store.
    Existing,
    /// Read only.
    ReadOnly,
}

/// How long a PostgreSQL connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Db {
    /// Connects. Failures a user can fix (a missing file, a bad URL, an unreachable server,
    /// a refused login) are input errors: one line, exit 2.
    pub fn connect(location: &Location, access: Access) -> anyhow::Result<Db> {
        match location {
            Location::Sqlite(path) => Db::open_sqlite(path, access),
            Location::Postgres(url) => Db::open_postgres(url, access, location),
        }
    }

    fn open_sqlite(path: &Path, access: Access) -> anyhow::Result<Db> {
        use rusqlite::OpenFlags;
        let shown = path.display();
        let flags = match access {
            Access::Create => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        input_error(format!("{}: cannot create folder: {e}", parent.display()))
                    })?;
                }
                OpenFlags::default()
            }
            Access::Existing | Access::ReadOnly if !path.is_file() => {
                return Err(input_error(format!("{shown}: no such database")));
            }
            Access::Existing => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        };
        let conn = rusqlite::Connection::open_with_flags(path, flags)
            .map_err(|e| input_error(format!("{shown}: cannot open database: {e}")))?;
        // Several daemons and readers share one file: wait for locks rather than fail.
        conn.busy_timeout(Duration::from_secs(30))?;
        if access != Access::ReadOnly {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| input_error(format!("{shown}: not a usable SQLite database: {e}")))?;
            if !mode.eq_ignore_ascii_case("wal") {
                anyhow::bail!("{shown}: cannot switch to WAL mode (got {mode})");
            }
            conn.pragma_update(None, "foreign_keys", true)?;
        }
        Ok(Db::Sqlite(conn))
    }

    fn open_postgres(url: &str, access: Access, shown: &Location) -> anyhow::Result<Db> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| input_error(format!("{shown}: not a PostgreSQL URL: {e}")))?;
        // A password kept out of the config file, as libpq's own clients take it; Slurm
        // workers inherit it with the daemon's environment.
        if config.get_password().is_none() {
            if let Some(password) = std::env::var_os("PGPASSWORD") {
                config.password(password.as_encoded_bytes());
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("filtermon");
        }
        // The server's notices ("already exists, skipping") are not the user's business.
        let mut options = config.get_options().unwrap_or_default().to_string();
        options += " -c client_min_messages=warning";
        if access == Access::ReadOnly {
            options += " -c default_transaction_read_only=on";
        }
        config.options(&options);
        Ok(Db::Postgres(Box::new(PgSession::connect(
            config,
            shown.to_string(),
        )?)))
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`, rolled back otherwise.
    /// On SQLite the transaction takes the write lock at once (`BEGIN IMMEDIATE`), so two
    /// writers never interleave; on PostgreSQL it is READ COMMITTED, and statements that
    /// must not race lock their rows (`FOR UPDATE`).
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            Db::Sqlite(conn) => {
                conn.execute_batch("BEGIN IMMEDIATE")?;
                match f(&Tx::Sqlite(conn)) {
                    Ok(v) => {
                        conn.execute_batch("COMMIT")?;
                        Ok(v)
                    }
                    Err(e) => {
                        // The error that stopped the transaction is the one worth reporting.
                        let _ = conn.execute_batch("ROLLBACK");
                        Err(e)
                    }
                }
            }
            Db::Postgres(session) => {
                let mut client = session.live()?;
                let tx = Tx::Postgres(RefCell::new(client.transaction().map_err(pg_error)?));
                let v = f(&tx)?;
                let Tx::Postgres(tx) = tx else {
                    unreachable!("built as Postgres above")
                };
                tx.into_inner().commit().map_err(pg_error)?;
                Ok(v)
            }
        }
    }
}

impl Exec for Db {
    fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    fn run(&self, sql: &str, params: &[Value], rows: bool) -> anyhow::Result<(usize, Vec<Row>)> {
        match self {
            Db::Sqlite(conn) => sqlite_run(conn, sql, params, rows),
            Db::Postgres(session) => pg_run(&mut *session.live()?, sql, params, rows),
        }
    }

    fn batch(&self, sql: &str) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(session) => pg_batch(&mut *session.live()?, sql),
        }
    }
}

/// An open transaction ([`Db::transaction`]).
pub enum Tx<'a> {
    /// On SQLite: the connection, inside `BEGIN IMMEDIATE`.
    Sqlite(&'a rusqlite::Connection),
    /// On PostgreSQL.
    Postgres(RefCell<postgres::Transaction<'a>>),
}

impl Exec for Tx<'_> {
    fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    fn run(&self, sql: &str, params: &[Value], rows: bool) -> anyhow::Result<(usize, Vec<Row>)> {
        match self {
            Tx::Sqlite(conn) => sqlite_run(conn, sql, params, rows),
            Tx::Postgres(cell) => pg_run(&mut *cell.borrow_mut(), sql, params, rows),
        }
    }

    fn batch(&self, sql: &str) -> anyhow::Result<()> {
        match self {
            Tx::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Tx::Postgres(cell) => pg_batch(&mut *cell.borrow_mut(), sql),
        }
    }
}

fn sqlite_run(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
    rows: bool,
) -> anyhow::Result<(usize, Vec<Row>)> {
    use rusqlite::types::{ToSqlOutput, ValueRef};
    let mut st = conn.prepare_cached(sql)?;
    let bound: Vec<ToSqlOutput<'_>> = params
        .iter()
        .map(|v| {
            ToSqlOutput::Borrowed(match v {
                Value::Null => ValueRef::Null,
                Value::Int(i) => ValueRef::Integer(*i),
                Value::Real(x) => ValueRef::Real(*x),
                Value::Text(s) => ValueRef::Text(s.as_bytes()),
                Value::Blob(b) => ValueRef::Blob(b),
            })
        })
        .collect();
    let bound = rusqlite::params_from_iter(bound.iter());
    if !rows {
        return Ok((st.execute(bound)?, Vec::new()));
    }
    let columns = st.column_count();
    let mut out = Vec::new();
    let mut cursor = st.query(bound)?;
    while let Some(r) = cursor.next()? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Int(i),
                ValueRef::Real(x) => Value::Real(x),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        out.push(Row(values));
    }
    Ok((out.len(), out))
}

fn pg_run<C: postgres::GenericClient>(
    client: &mut C,
    sql: &str,
    params: &[Value],
    rows: bool,
) -> anyhow::Result<(usize, Vec<Row>)> {
    let sql = Dialect::Postgres.translate(sql);
    let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
    if !rows {
        let n = client.execute(sql.as_str(), &bound).map_err(pg_error)?;
        return Ok((usize::try_from(n).unwrap_or(usize::MAX), Vec::new()));
    }
    let found = client.query(sql.as_str(), &bound).map_err(pg_error)?;
    let mut out = Vec::with_capacity(found.len());
    for r in &found {
        let mut values = Vec::with_capacity(r.len());
        for (i, col) in r.columns().iter().enumerate() {
            values.push(pg_value(r, i, col.type_())?);
        }
        out.push(Row(values));
    }
    Ok((out.len(), out))
}

fn pg_batch<C: postgres::GenericClient>(client: &mut C, sql: &str) -> anyhow::Result<()> {
    client
        .batch_execute(&Dialect::Postgres.translate(sql))
        .map_err(pg_error)
}

/// Column `i` of a PostgreSQL row as a [`Value`].
fn pg_value(r: &postgres::Row, i: usize, ty: &Type) -> anyhow::Result<Value> {
    let v = match *ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => r
            .try_get::<_, Option<i32>>(i)?
            .map(|x| Value::Int(x.into())),
        Type::INT2 => r
            .try_get::<_, Option<i16>>(i)?
            .map(|x| Value::Int(x.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)?
            .map(|x| Value::Int(x.into())),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Value::Real),
        Type::FLOAT4 => r
            .try_get::<_, Option<f32>>(i)?
            .map(|x| Value::Real(x.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        }
        Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        ref other => anyhow::bail!("column {i} has type {other}, which the store never reads"),
    };
    Ok(v.unwrap_or(Value::Null))
}

/// A PostgreSQL error with the server's own message (the client's display of a server
/// error is only "db error").
fn pg_error(e: postgres::Error) -> anyhow::Error {
    anyhow::anyhow!(pg_error_text(&e))
}

fn pg_error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// Binds a [`Value`] as whatever type the server inferred for the parameter.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT4) => (*i as f32).to_sql(ty, out),
            (Value::Int(i), &Type::TEXT | &Type::VARCHAR) => i.to_string().to_sql(ty, out),
            (Value::Real(x), &Type::FLOAT8) => x.to_sql(ty, out),
            (Value::Real(x), &Type::FLOAT4) => (*x as f32).to_sql(ty, out),
            (Value::Text(s), _) => s.as_str().to_sql(ty, out),
            (Value::Blob(b), _) => b.as_slice().to_sql(ty, out),
            (v, ty) => Err(format!("cannot bind {v:?} as {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_statements_take_numbered_parameters_and_wide_types() {
        let sql = "CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL, b BLOB, n integer);
                   SELECT '?1 REAL' FROM t WHERE id = ?1 AND x > ?12 AND y = ?";
        assert_eq!(
            Dialect::Postgres.translate(sql),
            "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
             x DOUBLE PRECISION, b BYTEA, n BIGINT);
                   SELECT '?1 REAL' FROM t WHERE id = $1 AND x > $12 AND y = $"
        );
        assert_eq!(Dialect::Sqlite.translate(sql), sql);
        // Column names that merely contain a type name are kept.
        assert_eq!(
            Dialect::Postgres.translate("SELECT real_loss, blobs FROM t"),
            "SELECT real_loss, blobs FROM t"
        );
    }

    #[test]
    fn locations_and_masked_passwords() {
        assert_eq!(
            Location::parse("postgres://u:pw@h:5432/db"),
            Location::Postgres("postgres://u:pw@h:5432/db".into())
        );
        assert_eq!(
            Location::parse("m.db"),
            Location::Sqlite(PathBuf::from("m.db"))
        );
        assert_eq!(
            Location::parse("postgresql://u:pw@h/db").to_string(),
            "postgresql://u:***@h/db"
        );
        assert_eq!(
            Location::parse("postgres://u@h/db").to_string(),
            "postgres://u@h/db"
        );
    }

    #[test]
    fn values_round_trip_through_sqlite() {
        let db = Db::Sqlite(rusqlite::Connection::open_in_memory().expect("db"));
        db.batch("CREATE TABLE t (i INTEGER, x REAL, s TEXT, b BLOB)")
            .expect("table");
        let blob = vec![1u8, 2, 3];
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            params![7u32, 1.5, "hi", blob],
        )
        .expect("insert");
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            params![None::<i64>, None::<f64>, None::<String>, None::<Vec<u8>>],
        )
        .expect("insert nulls");
        let rows = db
            .query("SELECT i, x, s, b FROM t ORDER BY i IS NULL", params![])
            .expect("rows");
        assert_eq!(rows[0].get::<u64>(0).expect("i"), 7);
        assert_eq!(rows[0].get::<f64>(1).expect("x"), 1.5);
        assert_eq!(rows[0].get::<String>(2).expect("s"), "hi");
        assert_eq!(rows[0].get::<Vec<u8>>(3).expect("b"), blob);
        assert_eq!(rows[1].get::<Option<i64>>(0).expect("null"), None);
        assert!(rows[1].get::<i64>(0).is_err(), "NULL is not an integer");
    }

    #[test]
    fn a_failed_transaction_leaves_nothing() {
        let db = Db::Sqlite(rusqlite::Connection::open_in_memory().expect("db"));
        db.batch("CREATE TABLE t (i INTEGER)").expect("table");
        let r: anyhow::Result<()> = db.transaction(|tx| {
            tx.execute("INSERT INTO t VALUES (1)", params![])?;
            anyhow::bail!("stop")
        });
        assert!(r.is_err());
        let n: i64 = db
            .query_one("SELECT COUNT(*) FROM t", params![])
            .and_then(|r| r.get(0))
            .expect("count");
        assert_eq!(n, 0);
    }
}
