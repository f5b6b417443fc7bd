//! Storage (docs/architecture.md#storage): one diesel connection type over SQLite and PostgreSQL,
//! chosen by the URL scheme; an r2d2 pool with per-connection setup; blocking work in
//! `spawn_blocking`; embedded migrations per backend; write transactions that serialise correctly
//! on both.
//!
//! Writes go through [`Db::write`]. On PostgreSQL that is a pooled connection. SQLite allows
//! one writer at a time, and connections that compete for it sleep in SQLite's busy handler
//! (1, 2, 5 ... 100 ms) instead of queueing, which made the latency tail of every write path
//! (measured in docs/benchmarks.md). So on SQLite one thread per database owns the writing
//! connection and takes writes from a queue, group-committed: the writes waiting when it comes
//! round run in one `BEGIN IMMEDIATE` transaction, each of their [`write_transaction`]s a
//! savepoint (a failing one rolls back alone), and every caller is answered after the `COMMIT`,
//! so no one sees a write that could still be lost. Short reads ([`Db::read`]) skip the
//! blocking pool on SQLite. Calls beyond the pool's size wait in arrival order ([`Db::run`]).

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use diesel::{
    connection::{AnsiTransactionManager, SimpleConnection, TransactionManager},
    pg::PgConnection,
    prelude::*,
    r2d2::{ManageConnection, R2D2Connection},
    result::{DatabaseErrorKind, Error as DieselError},
    sqlite::SqliteConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

mod batch;
mod cached_sql;
mod types;
pub use batch::Batcher;
pub use cached_sql::{Binds, CachedSql, Chain};
pub use types::DbUuid;

/// A connection to either backend. Queries written with diesel's DSL work on both; the few
/// that cannot (upsert, `FOR UPDATE`, batch insert) match on the variant.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// Embedded SQLite (the default, `sqlite://path`).
    Sqlite(SqliteConnection),
    /// PostgreSQL (`postgres://...`), for production.
    Postgres(PgConnection),
}

impl DbConnection {
    /// Which backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            DbConnection::Sqlite(_) => Backend::Sqlite,
            DbConnection::Postgres(_) => Backend::Postgres,
        }
    }
}

/// The two supported backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A parsed database URL. Unknown schemes are refused: diesel's own `establish` would treat any
/// string as a SQLite path.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://relative/or/absolute/path.db` (or `sqlite:path`).
    Sqlite(PathBuf),
    /// `postgres://` or `postgresql://` URL, passed to libpq as is.
    Postgres(String),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            // The URL may carry a password.
            DatabaseUrl::Postgres(_) => f.write_str("postgres://<redacted>"),
        }
    }
}

impl DatabaseUrl {
    /// Parses a URL by its scheme.
    pub fn parse(url: &str) -> Result<Self, DbError> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() || path == ":memory:" {
                // An in-memory database is private to one connection: a pool would see several.
                return Err(DbError::Config(DbCause::from("sqlite needs a file path, e.g. sqlite://data/identity.db")));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        Err(DbError::Config(DbCause::from("database URL must start with sqlite:// or postgres://")))
    }

    /// The URL of another database on the same PostgreSQL server: the same scheme, user,
    /// password, host and port, the path replaced by `database`, and the query kept whole, so
    /// that the connection parameters in it (`sslmode=verify-full`, `sslrootcert=...`, README
    /// "PostgreSQL over TLS") apply to the new database too. Tests create a database per test
    /// this way from `MEDINS_TEST_POSTGRES_URL`. `database` is a plain name (letters, digits,
    /// `_`); SQLite URLs have no server and are refused.
    pub fn with_database(&self, database: &str) -> Result<DatabaseUrl, DbError> {
        let DatabaseUrl::Postgres(url) = self else {
            return Err(DbError::Config(DbCause::from("only a postgres:// URL names databases on a server")));
        };
        if database.is_empty() || !database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(DbError::Config(DbCause::from("a database name is letters, digits and '_'")));
        }
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| DbError::Config(DbCause::from("no '://' in the URL")))?;
        // The query starts at the first '?' (libpq's own URI parser splits there too); the
        // authority ends at the first '/' before it.
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let authority = before_query.split_once('/').map_or(before_query, |(authority, _)| authority);
        let mut out = format!("{scheme}://{authority}/{database}");
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        Ok(DatabaseUrl::Postgres(out))
    }

    /// The URL as libpq or the SQLite path takes it (it may carry a password: never log it).
    pub fn expose(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }

    /// The backend of this URL.
    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Storage errors, split by what the caller can do about them. Each keeps its cause whole
/// (`source()`: diesel's error, the pool's, or a sentence of ours), for the one log line
/// written where the failure is answered. `C` is [`DbCause`] everywhere but in an expression
/// that names a sentence of ours as a `String` (`DbError::Query(format!(..))`): `?` and `into`
/// turn that `DbError<String>` into a `DbError`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError<C = DbCause> {
    /// The database cannot be reached (pool timeout, connection refused, dropped): retryable.
    #[error("database unavailable")]
    Unavailable(#[source] C),
    /// A transaction lost to a concurrent one (serialization failure, deadlock, SQLite busy)
    /// and nothing of it was kept: running it again may succeed ([`retry_conflicts`]).
    #[error("database conflict")]
    Conflict(#[source] C),
    /// A query failed for another reason: a fault of ours.
    #[error("database query failed")]
    Query(#[source] C),
    /// Bad configuration (URL, path).
    #[error("database configuration")]
    Config(#[source] C),
}

/// Why a [`DbError`] happened: an error kept whole (with its own `source()` chain), or a
/// sentence of ours (`"...".into()`). Cheap to clone.
#[derive(Clone)]
pub struct DbCause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl DbCause {
    /// Keeps `error` whole.
    pub fn of(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        DbCause(Arc::new(error))
    }
}

impl std::fmt::Debug for DbCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for DbCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DbCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<DbError<String>> for DbError {
    fn from(error: DbError<String>) -> Self {
        match error {
            DbError::Unavailable(text) => DbError::Unavailable(text.into()),
            DbError::Conflict(text) => DbError::Conflict(text.into()),
            DbError::Query(text) => DbError::Query(text.into()),
            DbError::Config(text) => DbError::Config(text.into()),
        }
    }
}

impl From<String> for DbCause {
    fn from(text: String) -> Self {
        DbCause(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(text)))
    }
}

impl From<&str> for DbCause {
    fn from(text: &str) -> Self {
        text.to_owned().into()
    }
}

impl From<DieselError> for DbError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => DbError::Unavailable(DbCause::of(error)),
            _ if conflict_of(&error).is_some() => DbError::Conflict(DbCause::of(error)),
            _ => DbError::Query(DbCause::of(error)),
        }
    }
}

/// The r2d2 manager: picks the backend from the URL and sets each new connection up.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    url: DatabaseUrl,
}

/// The URI that opens the SQLite database at `path` only if the file exists (`mode=rw`).
/// [`Db::connect`] creates the file; after that a missing file means the database was lost,
/// and no connection, whichever thread opens it and whenever, may silently start an empty one.
fn open_existing(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            // The characters that end or escape the path part of an SQLite URI.
            '%' | '?' | '#' => uri.push_str(&format!("%{:02X}", c as u32)),
            c => uri.push(c),
        }
    }
    uri.push_str("?mode=rw");
    uri
}

/// Refuses work on a deleted SQLite database: a connection opened before the file was deleted
/// still answers, from a file no one will ever read again.
fn require_sqlite_file(path: &Path) -> Result<(), DbError> {
    if path.exists() { Ok(()) } else { Err(DbError::Unavailable(DbCause::from("the SQLite database file is missing"))) }
}

/// Deadlocks are recognised by PostgreSQL's English message ([`conflict_of`]): says so, once per
/// process, when the server would answer in another language (they would then not be retried).
fn warn_unless_english_messages(conn: &mut PgConnection) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        lc_messages: String,
    }
    let Ok(setting) =
        diesel::sql_query("SELECT current_setting('lc_messages') AS lc_messages").get_result::<Setting>(conn)
    else {
        return;
    };
    if !english_messages(&setting.lc_messages) {
        WARNED.call_once(|| {
            tracing::warn!(
                lc_messages = %setting.lc_messages,
                "PostgreSQL lc_messages is not English: deadlocks (40P01) will not be recognised and retried"
            );
        });
    }
}

/// Whether an `lc_messages` value makes PostgreSQL answer in English (empty: the server's
/// environment, English unless configured otherwise).
fn english_messages(lc_messages: &str) -> bool {
    let lower = lc_messages.to_ascii_lowercase();
    lower.is_empty() || lower == "c" || lower == "posix" || lower.starts_with("c.") || lower.starts_with("en")
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn =
                    SqliteConnection::establish(&open_existing(path)).map_err(diesel::r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the writer; busy_timeout makes writers queue
                // instead of failing; foreign keys are off by default in SQLite.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
                     PRAGMA foreign_keys = ON;",
                )
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => {
                let mut conn = PgConnection::establish(url).map_err(diesel::r2d2::Error::ConnectionError)?;
                conn.batch_execute("SET TIME ZONE 'UTC'").map_err(diesel::r2d2::Error::QueryError)?;
                warn_unless_english_messages(&mut conn);
                Ok(DbConnection::Postgres(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Maximum connections.
    pub max_size: u32,
    /// How long a checkout waits before the call fails UNAVAILABLE.
    pub connection_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_size: 16, connection_timeout: Duration::from_secs(5) }
    }
}

/// Migrations of one service, one set per backend. Functions, because `EmbeddedMigrations` is
/// neither `Clone` nor `Copy`: pass `|| MY_CONST_MIGRATIONS`.
#[derive(Clone, Copy)]
pub struct Migrations {
    /// `migrations/<service>/sqlite`.
    pub sqlite: fn() -> EmbeddedMigrations,
    /// `migrations/<service>/postgres`.
    pub postgres: fn() -> EmbeddedMigrations,
}

/// The database of one service: a pool plus what the health check needs, and on SQLite the
/// queue of the writer thread.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<ConnectionManager>,
    /// One permit per pooled connection, taken before [`Db::run`] hands work to the blocking
    /// pool: callers beyond the pool's size queue here, in arrival order, instead of as blocked
    /// threads on r2d2's condition variable, which wakes them in no particular order (the
    /// latency tail under load) and costs a thread and its wake-ups per waiting call.
    permits: Arc<tokio::sync::Semaphore>,
    /// How long a call waits for a connection before it is refused (UNAVAILABLE).
    connection_timeout: Duration,
    url: Arc<DatabaseUrl>,
    writer: Option<tokio::sync::mpsc::Sender<QueuedWrite>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Db {
    /// Connects a pool. Does not fail when the database is down: connections are made lazily,
    /// so the service can start, report NOT_SERVING and recover when the database comes back.
    pub fn connect(url: &str, options: &PoolOptions) -> Result<Db, DbError> {
        let url = DatabaseUrl::parse(url)?;
        if let DatabaseUrl::Sqlite(path) = &url
            && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| DbError::Config(DbCause::from(format!("cannot create {}: {e}", parent.display()))))?;
        }
        if let DatabaseUrl::Sqlite(path) = &url {
            // Created here (SQLite takes an empty file as a new database), so that from now on a
            // missing file means the database was lost: `run` refuses rather than recreate it.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| DbError::Config(DbCause::from(format!("cannot create {}: {e}", path.display()))))?;
        }
        let pool = r2d2::Pool::builder()
            .max_size(options.max_size)
            .min_idle(Some(0))
            .connection_timeout(options.connection_timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(PoolErrorLogger))
            .build_unchecked(ConnectionManager { url: url.clone() });
        let writer = match &url {
            DatabaseUrl::Sqlite(path) => {
                Some(sqlite_writer::start(ConnectionManager { url: url.clone() }, path.clone())?)
            }
            DatabaseUrl::Postgres(_) => None,
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(options.max_size as usize));
        Ok(Db { pool, permits, connection_timeout: options.connection_timeout, url: Arc::new(url), writer })
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.url.backend()
    }

    /// Runs blocking diesel work on the blocking pool with an owned pooled connection.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let waited = tokio::time::timeout(self.connection_timeout, self.permits.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = waited else {
            return Err(DbError::Unavailable(DbCause::from("timed out waiting for a database connection")).into());
        };
        let pool = self.pool.clone();
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            // Held until the work is done, even when the caller has stopped waiting.
            let _permit = permit;
            if let DatabaseUrl::Sqlite(path) = &*url {
                require_sqlite_file(path)?;
            }
            let mut conn = pool.get().map_err(|e| DbError::Unavailable(DbCause::of(e)))?;
            work(&mut conn)
        })
        .await
        .map_err(|join| E::from(DbError::Query(DbCause::from(format!("database task failed: {join}")))))?
    }

    /// Runs a short read: an indexed lookup of a row or a few, nothing that scans. On SQLite such
    /// a read is microseconds of in-process work on the page cache, less than handing it to the
    /// blocking pool and back costs (two thread wake-ups per call: 40% of insurance-svc's CPU
    /// in the issue-code benchmark, docs/benchmarks.md), so it runs on the calling thread when a
    /// pooled connection is idle at once. WAL readers do not wait for the writer. Otherwise, and
    /// always on PostgreSQL (a network round trip), it is [`Db::run`].
    pub async fn read<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        if let DatabaseUrl::Sqlite(path) = &*self.url
            && let Some(mut conn) = self.pool.try_get()
        {
            require_sqlite_file(path)?;
            return work(&mut conn);
        }
        self.run(work).await
    }

    /// Runs `work`, which writes (in [`write_transaction`]s), where writes belong, and returns
    /// once what it wrote is committed. On PostgreSQL that is a pooled connection, as
    /// [`Db::run`]. On SQLite it is the writer thread (see the module documentation): `work` runs
    /// inside the batch transaction, which already holds the write lock, and each
    /// [`write_transaction`] in it is a savepoint, rolled back alone when it fails.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<DieselError> + Send + 'static,
    {
        let Some(writer) = &self.writer else {
            return self.run(work).await;
        };
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let job: QueuedWrite = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => sqlite_writer::isolated(conn, work),
                Err(error) => Err(E::from(error.clone())),
            };
            Box::new(move |committed: Result<(), &DbError>| {
                let result = match (result, committed) {
                    (Ok(_), Err(error)) => Err(E::from(error.clone())),
                    (result, _) => result,
                };
                // The caller may have gone (deadline, cancellation): the write stands regardless.
                let _ = answer.send(result);
            })
        });
        let stopped = || E::from(DbError::Unavailable(DbCause::from("the database writer has stopped")));
        writer.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Runs the backend's pending migrations; on PostgreSQL under an advisory lock so that
    /// replicas starting together do not race.
    pub async fn migrate(&self, migrations: Migrations) -> Result<usize, DbError> {
        self.run(move |conn| {
            let applied = match conn {
                DbConnection::Sqlite(inner) => inner.run_pending_migrations((migrations.sqlite)()).map(|v| v.len()),
                DbConnection::Postgres(inner) => {
                    inner.batch_execute("SELECT pg_advisory_lock(7426001)")?;
                    let result = inner.run_pending_migrations((migrations.postgres)()).map(|v| v.len());
                    inner.batch_execute("SELECT pg_advisory_unlock(7426001)")?;
                    result
                }
            };
            applied.map_err(|e| DbError::Query(DbCause::from(format!("migration failed: {e}"))))
        })
        .await
    }

    /// Reverts every applied migration (newest first); returns how many. For tests that prove
    /// each `down.sql` undoes its `up.sql`, and for operators rebuilding a scratch database.
    pub async fn revert_all_migrations(&self, migrations: Migrations) -> Result<usize, DbError> {
        self.run(move |conn| {
            let reverted = match conn {
                DbConnection::Sqlite(inner) => inner.revert_all_migrations((migrations.sqlite)()).map(|v| v.len()),
                DbConnection::Postgres(inner) => inner.revert_all_migrations((migrations.postgres)()).map(|v| v.len()),
            };
            reverted.map_err(|e| DbError::Query(DbCause::from(format!("revert failed: {e}"))))
        })
        .await
    }

    /// Whether the database answers now. For SQLite also checks that the file is still where it
    /// was opened: a deleted or moved file means writes go nowhere anyone will read.
    pub async fn is_reachable(&self, timeout: Duration) -> bool {
        if let DatabaseUrl::Sqlite(path) = &*self.url
            && !Path::new(path).exists()
        {
            return false;
        }
        let pool = self.pool.clone();
        let check = tokio::task::spawn_blocking(move || match pool.get_timeout(timeout) {
            Ok(mut conn) => conn.ping().is_ok(),
            Err(_) => false,
        });
        matches!(tokio::time::timeout(timeout + Duration::from_secs(1), check).await, Ok(Ok(true)))
    }
}

#[derive(Debug)]
struct PoolErrorLogger;

impl r2d2::HandleError<diesel::r2d2::Error> for PoolErrorLogger {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        // Connection errors name hosts and databases, never personal data.
        tracing::warn!(error = %error, "database connection error");
    }
}

/// Runs `work` in a transaction that takes the write lock at its start: `BEGIN IMMEDIATE` on
/// SQLite (a deferred transaction that reads then writes can fail to upgrade its lock), a plain
/// transaction on PostgreSQL (where row locks and constraints serialise). Inside a transaction
/// (as in [`Db::write`]) it is a savepoint. Rolled back (to the savepoint) on error.
///
/// An outermost transaction that loses to a concurrent one ([`conflict_of`]: serialization
/// failure, deadlock, SQLite busy) was rolled back whole, so it is run again through
/// [`retry_conflicts`]; `work` must therefore only write through `conn` (anything it computes
/// is computed again). A savepoint is not retried: its conflict is the enclosing
/// transaction's, which the database has aborted.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, mut work: F) -> Result<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: From<DieselError> + TransientConflict,
{
    if transaction_depth_of(conn)? > 0 {
        return transaction_once(conn, &mut work);
    }
    retry_conflicts(|| transaction_once(conn, &mut work))
}

fn transaction_once<T, E, F>(conn: &mut DbConnection, work: &mut F) -> Result<T, E>
where
    F: FnMut(&mut DbConnection) -> Result<T, E>,
    E: From<DieselError>,
{
    type Manager = <DbConnection as Connection>::TransactionManager;
    let outermost_sqlite = match conn {
        DbConnection::Sqlite(inner) => transaction_depth(inner)? == 0,
        DbConnection::Postgres(_) => false,
    };
    match conn {
        DbConnection::Sqlite(inner) if outermost_sqlite => {
            AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?
        }
        _ => Manager::begin_transaction(conn)?,
    }
    match work(conn) {
        Ok(value) => {
            if let Err(error) = Manager::commit_transaction(conn) {
                sqlite_writer::note_rollback();
                return Err(error.into());
            }
            Ok(value)
        }
        Err(error) => {
            // The work's error is the one worth reporting; a failed rollback marks the
            // connection broken and r2d2 drops it.
            let _ = Manager::rollback_transaction(conn);
            sqlite_writer::note_rollback();
            Err(error)
        }
    }
}

/// How deep in transactions `conn` is (0: autocommit).
fn transaction_depth_of(conn: &mut DbConnection) -> Result<u32, DieselError> {
    match conn {
        DbConnection::Sqlite(inner) => transaction_depth(inner),
        DbConnection::Postgres(inner) => Ok(AnsiTransactionManager::transaction_manager_status_mut(inner)
            .transaction_depth()?
            .map_or(0, |depth| depth.get())),
    }
}

/// Why a statement or transaction failed only because of a concurrent one, with nothing of it
/// kept, so that running it again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// PostgreSQL SQLSTATE 40001: a serializable (or repeatable read) transaction could not be
    /// ordered with a concurrent one.
    Serialization,
    /// PostgreSQL SQLSTATE 40P01: the server broke a lock cycle by aborting this transaction.
    Deadlock,
    /// SQLite `SQLITE_BUSY` / `SQLITE_LOCKED`: another connection held the lock past
    /// `busy_timeout`.
    Busy,
}

/// PostgreSQL's message for SQLSTATE 40P01. diesel names 40001 (`SerializationFailure`) but
/// reports 40P01 as `Unknown` with no SQLSTATE, so a deadlock is known by its message: the
/// server's `lc_messages` must be English (`C`, `POSIX` or `en_*`, the default of a `C`
/// cluster), which [`ConnectionManager`] checks on each new connection (README, Configuration).
const PG_DEADLOCK_MESSAGE: &str = "deadlock detected";

/// SQLite's messages for `SQLITE_BUSY` and `SQLITE_LOCKED`, which diesel reports as `Unknown`.
const SQLITE_BUSY_MESSAGES: [&str; 2] = ["database is locked", "database table is locked"];

/// Classifies a diesel error: `Some` when it is a [`Conflict`] (retry), `None` for everything
/// else (constraint violations, bad SQL, a lost connection: not retried here).
pub fn conflict_of(error: &DieselError) -> Option<Conflict> {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => Some(Conflict::Serialization),
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            if message.starts_with(PG_DEADLOCK_MESSAGE) {
                Some(Conflict::Deadlock)
            } else if SQLITE_BUSY_MESSAGES.iter().any(|busy| message.starts_with(busy)) {
                Some(Conflict::Busy)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// An error that can say whether it is a [`Conflict`] that survived conversion into it (diesel's
/// error, [`DbError::Conflict`], and the services' `ApiError` with reason TRANSACTION_CONFLICT).
pub trait TransientConflict {
    /// Whether running the failed statement or transaction again may succeed.
    fn is_transient_conflict(&self) -> bool;
}

impl TransientConflict for DieselError {
    fn is_transient_conflict(&self) -> bool {
        conflict_of(self).is_some()
    }
}

impl TransientConflict for DbError {
    fn is_transient_conflict(&self) -> bool {
        matches!(self, DbError::Conflict(_))
    }
}

/// Most runs of one statement or transaction that keeps losing to concurrent ones.
pub const CONFLICT_ATTEMPTS: u32 = 8;
/// The first retry waits up to this long; each further one up to twice as long as the last.
const CONFLICT_BACKOFF_BASE: Duration = Duration::from_millis(2);
/// No retry waits longer than this.
const CONFLICT_BACKOFF_CAP: Duration = Duration::from_millis(100);

/// The one retry of both services' writes (docs/architecture.md#storage): runs `attempt` again
/// while it fails with a [`TransientConflict`], at most [`CONFLICT_ATTEMPTS`] runs in all, sleeping
/// a random time ("full jitter": uniform in zero to 2, 4, 8 ... at most 100 ms) between runs so
/// that the transactions that collided do not collide again in step. Any other outcome is
/// returned at once; so is the last conflict, which callers answer ABORTED /
/// TRANSACTION_CONFLICT. `attempt` must be safe to run again after a conflict: a whole
/// transaction (rolled back by the database), or one autocommit statement. Blocking: call it
/// on a database thread ([`Db::run`], [`Db::write`]), never on the async runtime.
pub fn retry_conflicts<T, E, F>(mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Result<T, E>,
    E: TransientConflict,
{
    let mut run = 1;
    loop {
        match attempt() {
            Err(error) if error.is_transient_conflict() && run < CONFLICT_ATTEMPTS => {
                std::thread::sleep(conflict_backoff(run));
                run += 1;
            }
            outcome => return outcome,
        }
    }
}

/// The wait after the `run`-th conflicting run (1-based).
fn conflict_backoff(run: u32) -> Duration {
    use rand::Rng;
    let ceiling = CONFLICT_BACKOFF_BASE.saturating_mul(1 << run.min(16)).min(CONFLICT_BACKOFF_CAP);
    rand::thread_rng().gen_range(Duration::ZERO..=ceiling)
}

fn transaction_depth(conn: &mut SqliteConnection) -> Result<u32, DieselError> {
    Ok(AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth()?.map_or(0, |depth| depth.get()))
}

/// The SQLite writer's batch transaction that the calling code runs in (see the module
/// documentation): which batch, and how many savepoints have been rolled back in it so far. Code
/// that keeps state in memory for the length of a batch (the audit log's partition heads,
/// `crate::audit::store`) knows from `id` when that state is stale, and from `rollbacks` when
/// rows it wrote may have been undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterBatch {
    /// Distinct for every batch of this writer thread.
    pub id: u64,
    /// Savepoints rolled back in this batch so far.
    pub rollbacks: u64,
}

/// The writer batch the calling code runs in: `Some` only on a SQLite writer thread, inside a
/// batch transaction.
pub fn writer_batch() -> Option<WriterBatch> {
    sqlite_writer::current()
}

/// Work to run in the writer's batch transaction after every write of the batch and before its
/// `COMMIT`. If it fails, the whole batch is rolled back and every caller gets the error.
pub type BeforeCommit = Box<dyn FnOnce(&mut DbConnection) -> Result<(), DbError>>;

/// Registers `hook` to run before the `COMMIT` of the current writer batch, once per `key`
/// (a second registration under the same key in the same batch is dropped). Returns `false`,
/// registering nothing, outside a writer batch ([`writer_batch`] is `None`). A hook runs
/// whether or not the write that registered it was rolled back, so it must read what it
/// needs from the database or from state it checks against [`writer_batch`].
pub fn before_commit(key: &'static str, hook: BeforeCommit) -> bool {
    sqlite_writer::register(key, hook)
}

/// A write queued for the SQLite writer. Called with the writer's connection inside the batch
/// transaction (or with the reason there is none), it runs and returns how to answer its caller
/// once the outcome of the batch's `COMMIT` is known.
type QueuedWrite = Box<dyn FnOnce(Result<&mut DbConnection, &DbError>) -> AnswerCaller + Send>;
type AnswerCaller = Box<dyn FnOnce(Result<(), &DbError>) + Send>;

mod sqlite_writer {
    //! The thread that owns a SQLite database's writing connection.

    use super::*;
    use std::cell::{Cell, RefCell};

    /// The batch transaction this thread runs, while it runs one.
    struct Batch {
        id: u64,
        rollbacks: u64,
        hooks: Vec<(&'static str, BeforeCommit)>,
    }

    thread_local! {
        static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
        static BATCHES: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn current() -> Option<WriterBatch> {
        BATCH.with_borrow(|batch| batch.as_ref().map(|b| WriterBatch { id: b.id, rollbacks: b.rollbacks }))
    }

    pub(super) fn register(key: &'static str, hook: BeforeCommit) -> bool {
        BATCH.with_borrow_mut(|batch| match batch {
            Some(batch) => {
                if !batch.hooks.iter().any(|(k, _)| *k == key) {
                    batch.hooks.push((key, hook));
                }
                true
            }
            None => false,
        })
    }

    /// Counts a savepoint rolled back (or a release that failed) in the current batch; nothing
    /// outside one.
    pub(super) fn note_rollback() {
        BATCH.with_borrow_mut(|batch| {
            if let Some(batch) = batch {
                batch.rollbacks += 1;
            }
        });
    }

    fn start_batch() {
        let id = BATCHES.get() + 1;
        BATCHES.set(id);
        BATCH.set(Some(Batch { id, rollbacks: 0, hooks: Vec::new() }));
    }

    /// Runs the batch's [`before_commit`] hooks in the order registered; the first failure
    /// stops them.
    fn run_hooks(conn: &mut DbConnection) -> Result<(), DbError> {
        loop {
            // Taken out first: a hook may ask for the batch or register another.
            let hooks = BATCH.with_borrow_mut(|batch| batch.as_mut().map(|b| std::mem::take(&mut b.hooks)));
            let Some(hooks) = hooks.filter(|hooks| !hooks.is_empty()) else { return Ok(()) };
            for (_, hook) in hooks {
                hook(conn)?;
            }
        }
    }

    /// Most writes in one transaction: a bound on what one failed `COMMIT` takes with it and
    /// on the wait of the first write of a batch.
    const MAX_BATCH: usize = 64;
    /// Writes waiting for the writer before callers wait to queue (backpressure).
    const QUEUE: usize = 1024;

    /// Least time between two checkpoints: the WAL frames of ~50 ms of writes go to the
    /// database file at once.
    const CHECKPOINT_PAUSE: Duration = Duration::from_millis(50);
    /// WAL frames (pages of 4 KiB) past which the checkpointer restarts the WAL: ~32 MiB.
    const RESTART_FRAMES: i32 = 8192;
    /// Bytes a WAL file is trimmed back to after a restart.
    const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
    /// The writer connection's page cache, KiB (memory it takes only as the pages are used).
    const WRITER_CACHE_KIB: i64 = 16 * 1024;

    /// Starts the writer thread of the database at `path`, and its checkpointer; both stop when
    /// every [`Db`] clone (every sender) is gone.
    pub(super) fn start(
        manager: ConnectionManager,
        path: PathBuf,
    ) -> Result<tokio::sync::mpsc::Sender<QueuedWrite>, DbError> {
        let (sender, queue) = tokio::sync::mpsc::channel(QUEUE);
        // Capacity one: requests made while a checkpoint runs or pauses fold into one.
        let (wrote, checkpoint_due) = std::sync::mpsc::sync_channel::<()>(1);
        let thread_failed =
            |e: std::io::Error| DbError::Config(DbCause::from(format!("cannot start a SQLite thread: {e}")));
        let checkpointer = manager.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_when_due(checkpointer, checkpoint_due))
            .map_err(thread_failed)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(manager, path, queue, wrote))
            .map_err(thread_failed)?;
        Ok(sender)
    }

    fn run(
        manager: ConnectionManager,
        path: PathBuf,
        mut queue: tokio::sync::mpsc::Receiver<QueuedWrite>,
        wrote: std::sync::mpsc::SyncSender<()>,
    ) {
        let mut conn: Option<DbConnection> = None;
        let mut batch: Vec<QueuedWrite> = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            commit_batch(&manager, &path, &mut conn, &mut batch);
            let _ = wrote.try_send(());
        }
    }

    /// Copies committed WAL frames into the database file (a PASSIVE checkpoint: it never makes
    /// the writer wait) after writes, at most once per [`CHECKPOINT_PAUSE`]. SQLite would
    /// otherwise checkpoint inside the `COMMIT` that crosses 1,000 WAL pages, fsync included,
    /// with every caller of that batch waiting; the writer's connection has that turned off.
    ///
    /// A PASSIVE checkpoint never lets the WAL start again from its beginning while the writer
    /// keeps committing (there is always a frame it has not copied yet), so under steady load
    /// the WAL grew without end (10 GB in a minute of `medins-bench settle`), and every commit
    /// wrote to fresh file pages the kernel had to zero first (a third of the writer's time).
    /// Once the WAL holds more than [`RESTART_FRAMES`], a RESTART checkpoint waits for the
    /// batch being written and for readers of older frames, copies what is left (little: the
    /// passive rounds did the rest), and makes the next commit write from the WAL's start;
    /// the writer's `journal_size_limit` then trims a WAL that grew before.
    fn checkpoint_when_due(manager: ConnectionManager, due: std::sync::mpsc::Receiver<()>) {
        let mut conn: Option<DbConnection> = None;
        while due.recv().is_ok() {
            // Fails while the file is missing (connections never create it: `open_existing`).
            if conn.is_none() {
                conn = manager.connect().ok();
            }
            if let Some(open) = &mut conn
                && let Err(error) = checkpoint(open)
            {
                tracing::warn!(%error, "SQLite checkpoint failed; retrying after the next write");
                conn = None;
            }
            std::thread::sleep(CHECKPOINT_PAUSE);
        }
    }

    /// One checkpoint round: PASSIVE, then RESTART when the WAL has grown past
    /// [`RESTART_FRAMES`].
    fn checkpoint(conn: &mut DbConnection) -> QueryResult<()> {
        #[derive(QueryableByName)]
        struct Checkpointed {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            log: i32,
        }
        let passive = diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result::<Checkpointed>(conn)?;
        if passive.log > RESTART_FRAMES {
            diesel::sql_query("PRAGMA wal_checkpoint(RESTART)").get_result::<Checkpointed>(conn)?;
        }
        Ok(())
    }

    /// Runs and commits `batch` (emptying it) and answers every caller.
    fn commit_batch(
        manager: &ConnectionManager,
        path: &Path,
        slot: &mut Option<DbConnection>,
        batch: &mut Vec<QueuedWrite>,
    ) {
        type Manager = <DbConnection as Connection>::TransactionManager;
        let conn = match open(manager, path, slot) {
            Ok(conn) => conn,
            Err(error) => {
                for job in batch.drain(..) {
                    job(Err(&error))(Err(&error));
                }
                return;
            }
        };
        // Another process (the CLI, a backup) may hold the lock past busy_timeout: the shared
        // retry, not an error for every caller of the batch.
        let began = match conn {
            DbConnection::Sqlite(inner) => {
                retry_conflicts(|| AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE"))
            }
            DbConnection::Postgres(_) => unreachable!("the writer thread serves SQLite only"),
        };
        if let Err(error) = began {
            let error = DbError::from(error);
            for job in batch.drain(..) {
                job(Err(&error))(Err(&error));
            }
            drop_if_broken(slot);
            return;
        }
        start_batch();
        let answers: Vec<AnswerCaller> = batch.drain(..).map(|job| job(Ok(&mut *conn))).collect();
        let committed = match depth(conn) {
            Ok(1) => run_hooks(conn).and_then(|()| match depth(conn) {
                Ok(1) => Manager::commit_transaction(conn).map_err(DbError::from),
                Ok(_) => Err(DbError::Query(DbCause::from("a commit hook left the batch transaction unbalanced"))),
                Err(error) => Err(error.into()),
            }),
            Ok(_) => Err(DbError::Query(DbCause::from("a write left the batch transaction unbalanced"))),
            Err(error) => Err(error.into()),
        };
        BATCH.set(None);
        if committed.is_err() {
            // Roll the whole batch back (every caller gets the error); a connection that cannot
            // is dropped below, which rolls back too.
            while matches!(depth(conn), Ok(depth) if depth > 0) {
                if Manager::rollback_transaction(conn).is_err() {
                    break;
                }
            }
        }
        for answer in answers {
            answer(committed.as_ref().map(|_| ()));
        }
        drop_if_broken(slot);
    }

    fn open<'c>(
        manager: &ConnectionManager,
        path: &Path,
        slot: &'c mut Option<DbConnection>,
    ) -> Result<&'c mut DbConnection, DbError> {
        if let Err(missing) = require_sqlite_file(path) {
            *slot = None;
            return Err(missing);
        }
        if slot.is_none() {
            let mut conn = manager.connect().map_err(|e| DbError::Unavailable(DbCause::of(e)))?;
            // The checkpointer thread checkpoints instead (see `checkpoint_when_due`); savepoint
            // journals stay in memory instead of a temporary file; the WAL restarted after a
            // long run is trimmed back. The page cache is larger than SQLite's 2 MiB default:
            // this connection writes every index, and with 2 MiB the leaves its inserts land on
            // were read back from the file on most calls (`readDbPage`, an eighth of the
            // writer's time in the settle benchmark; docs/benchmarks.md). It stays valid between
            // batches, since no other connection writes.
            conn.batch_execute(&format!(
                "PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}; \
                 PRAGMA cache_size = -{WRITER_CACHE_KIB}"
            ))?;
            *slot = Some(conn);
        }
        Ok(slot.as_mut().expect("connected above"))
    }

    /// Runs `work` inside the batch transaction. Its [`write_transaction`]s are savepoints
    /// there; when it fails or panics, any it left open are rolled back, so the next write
    /// starts clean. As on PostgreSQL, where `work` runs in autocommit, a statement outside a
    /// `write_transaction` is not undone by a later failure of `work`. (No savepoint of its own
    /// around `work`: a second level made every page it touched be journaled twice, 5% of the
    /// writer's CPU in the settle benchmark.)
    pub(super) fn isolated<T, E>(
        conn: &mut DbConnection,
        work: impl FnOnce(&mut DbConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbError> + From<DieselError>,
    {
        type Manager = <DbConnection as Connection>::TransactionManager;
        let batch_depth = depth(conn)?;
        let result = catch_unwind(AssertUnwindSafe(|| work(&mut *conn)))
            .unwrap_or_else(|_| Err(E::from(DbError::Query(DbCause::from("a database task panicked")))));
        let result = match result {
            Ok(_) if depth(conn)? != batch_depth => {
                Err(E::from(DbError::Query(DbCause::from("a write left a savepoint open"))))
            }
            result => result,
        };
        if result.is_err() {
            while depth(conn)? > batch_depth {
                note_rollback();
                Manager::rollback_transaction(conn)?;
            }
        }
        result
    }

    fn depth(conn: &mut DbConnection) -> Result<u32, DieselError> {
        match conn {
            DbConnection::Sqlite(inner) => transaction_depth(inner),
            DbConnection::Postgres(_) => unreachable!("the writer thread serves SQLite only"),
        }
    }

    fn drop_if_broken(slot: &mut Option<DbConnection>) {
        if let Some(conn) = slot
            && (depth(conn).map_or(true, |depth| depth > 0) || conn.is_broken())
        {
            *slot = None;
        }
    }
}

/// Why a write transaction failed: an answer for the caller, or a lost race on a unique index
/// (a concurrent transaction inserted the same key first), after which [`write_retrying`] runs
/// the whole transaction again. Serialization failures and deadlocks are `Api` errors with
/// reason TRANSACTION_CONFLICT, retried inside by [`write_transaction`] ([`retry_conflicts`]).
/// `?` on a diesel error makes a unique violation `Raced`: match it first where a unique index
/// means an answer instead (a reused face session, a code already used).
#[derive(Debug)]
pub enum TxError {
    /// The caller's answer.
    Api(crate::ApiError),
    /// A unique index refused this run's insert: run again, and see the winner's row.
    Raced,
}

impl TransientConflict for TxError {
    fn is_transient_conflict(&self) -> bool {
        matches!(self, TxError::Api(error) if error.is_transient_conflict())
    }
}

impl From<crate::ApiError> for TxError {
    fn from(error: crate::ApiError) -> Self {
        TxError::Api(error)
    }
}

impl From<DbError> for TxError {
    fn from(error: DbError) -> Self {
        TxError::Api(error.into())
    }
}

impl From<DieselError> for TxError {
    fn from(error: DieselError) -> Self {
        if is_unique_violation(&error) { TxError::Raced } else { TxError::Api(error.into()) }
    }
}

/// Most runs of one write transaction that keeps losing unique-index races.
pub const RACE_ATTEMPTS: u32 = 3;

/// The one retry of a write that can lose a race (docs/architecture.md, "Storage"): runs `work`
/// in a [`write_transaction`] (serialization failures, deadlocks and SQLite busy are retried
/// there, with backoff), and runs the whole transaction again when it ended [`TxError::Raced`],
/// at most [`RACE_ATTEMPTS`] times in all: the next run reads the winner's row and answers from
/// it. `raced` is the answer when every run lost. Blocking, like [`write_transaction`].
pub fn write_retrying<T, F>(
    conn: &mut DbConnection,
    mut work: F,
    raced: impl FnOnce() -> crate::ApiError,
) -> crate::ApiResult<T>
where
    F: FnMut(&mut DbConnection) -> Result<T, TxError>,
{
    for _ in 0..RACE_ATTEMPTS {
        match write_transaction(conn, &mut work) {
            Ok(value) => return Ok(value),
            Err(TxError::Raced) => continue,
            Err(TxError::Api(error)) => return Err(error),
        }
    }
    Err(raced())
}

/// The one row lock of both services (docs/architecture.md, "Storage"): `$query.first(conn)`
/// as an `Option`, holding the row until the transaction ends — `FOR UPDATE` (or the lock method
/// named, e.g. `for_no_key_update`) on PostgreSQL, nothing more on SQLite, whose
/// `BEGIN IMMEDIATE` ([`write_transaction`]) already holds the database's single write lock.
/// Call it inside a write transaction. A macro, because diesel's lock-clause types are not
/// nameable in a generic function's bounds.
///
/// ```ignore
/// let row = first_locked!(conn, accounts::table.find(DbUuid(id)).select(AccountRow::as_select()))?;
/// ```
#[macro_export]
macro_rules! first_locked {
    ($conn:expr, $query:expr) => {
        $crate::first_locked!($conn, $query, for_update)
    };
    ($conn:expr, $query:expr, $lock:ident) => {{
        use ::diesel::{OptionalExtension as _, QueryDsl as _, RunQueryDsl as _};
        match $conn {
            $crate::db::DbConnection::Sqlite(conn) => $query.first(conn).optional(),
            $crate::db::DbConnection::Postgres(conn) => $query.$lock().first(conn).optional(),
        }
    }};
}

/// A lock on an application-chosen key until the transaction ends, for decisions that no single
/// row stands for yet (a new claim of an ID number): `pg_advisory_xact_lock(key)` on
/// PostgreSQL, nothing more on SQLite (see [`first_locked!`](crate::first_locked)).
pub fn lock_key(conn: &mut DbConnection, key: i64) -> Result<(), DieselError> {
    let DbConnection::Postgres(inner) = conn else { return Ok(()) };
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)").bind::<diesel::sql_types::BigInt, _>(key).execute(inner)?;
    Ok(())
}

/// Whether a diesel error is a unique-constraint violation (a concurrent duplicate lost a race).
pub fn is_unique_violation(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
}

/// Whether a diesel error is a check-constraint violation.
pub fn is_check_violation(error: &DieselError) -> bool {
    matches!(error, DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, _))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_chosen_by_scheme_and_unknown_schemes_refused() {
        assert_eq!(DatabaseUrl::parse("sqlite://data/x.db").unwrap().backend(), Backend::Sqlite);
        assert_eq!(DatabaseUrl::parse("postgres://u@h/db").unwrap().backend(), Backend::Postgres);
        assert_eq!(DatabaseUrl::parse("postgresql://u@h/db").unwrap().backend(), Backend::Postgres);
        assert!(DatabaseUrl::parse("mysql://u@h/db").is_err());
        assert!(DatabaseUrl::parse("data/x.db").is_err());
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
    }

    #[test]
    fn sqlite_connections_never_create_the_database_file() {
        assert_eq!(open_existing(Path::new("/d/a%b?c#d.db")), "file:/d/a%25b%3Fc%23d.db?mode=rw");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd name?#%.db");
        let manager = ConnectionManager { url: DatabaseUrl::Sqlite(path.clone()) };
        assert!(manager.connect().is_err(), "no file, no connection");
        assert!(!path.exists());
        std::fs::File::create(&path).unwrap();
        manager.connect().expect("an existing file opens");
    }

    #[test]
    fn another_database_keeps_user_host_port_and_the_tls_parameters() {
        let with = |url: &str, db: &str| DatabaseUrl::parse(url).unwrap().with_database(db).map(|u| u.expose());
        assert_eq!(
            with(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=verify-full&sslrootcert=/tmp/pg.x/tls/ca.pem",
                "t_1"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/t_1?sslmode=verify-full&sslrootcert=/tmp/pg.x/tls/ca.pem"
        );
        assert_eq!(with("postgresql://u:pw@db.example:6432/a", "b").unwrap(), "postgresql://u:pw@db.example:6432/b");
        assert_eq!(with("postgres://u@h", "b").unwrap(), "postgres://u@h/b");
        assert_eq!(with("postgres://u@h?sslmode=require", "b").unwrap(), "postgres://u@h/b?sslmode=require");
        assert_eq!(with("postgres://u@[::1]:5432/a?x=1/2", "b").unwrap(), "postgres://u@[::1]:5432/b?x=1/2");
        assert!(matches!(with("postgres://u@h/a", "b; DROP"), Err(DbError::Config(_))));
        assert!(matches!(with("postgres://u@h/a", ""), Err(DbError::Config(_))));
        assert!(matches!(with("sqlite://a.db", "b"), Err(DbError::Config(_))));
    }

    #[test]
    fn postgres_url_is_redacted_in_debug() {
        let url = DatabaseUrl::parse("postgres://user:secret@h/db").unwrap();
        assert!(!format!("{url:?}").contains("secret"));
    }

    #[tokio::test]
    async fn sqlite_pool_runs_queries_and_reports_a_deleted_file_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = Db::connect(&format!("sqlite://{}", path.display()), &PoolOptions::default()).unwrap();
        let one: i32 = db
            .run(|conn| {
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
                    .get_result(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        assert_eq!(one, 1);
        // A read finds the connection `run` left idle and runs on this thread.
        let two: i32 = db
            .read(|conn| {
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("2"))
                    .get_result(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        assert_eq!(two, 2);
        assert!(db.is_reachable(Duration::from_secs(1)).await);
        std::fs::remove_file(&path).unwrap();
        assert!(!db.is_reachable(Duration::from_secs(1)).await);
        let refused = db
            .run(|conn| {
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
                    .get_result::<i32>(conn)
                    .map_err(DbError::from)
            })
            .await;
        assert!(matches!(refused, Err(DbError::Unavailable(_))), "a pooled connection must not serve a lost file");
        let refused = db
            .read(|conn| {
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
                    .get_result::<i32>(conn)
                    .map_err(DbError::from)
            })
            .await;
        assert!(matches!(refused, Err(DbError::Unavailable(_))), "nor an inline read");
        assert!(!path.exists(), "the lost file is not silently recreated empty");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_beyond_the_pool_wait_their_turn_in_arrival_order_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        let options = PoolOptions { max_size: 1, connection_timeout: Duration::from_millis(400) };
        let db = Db::connect(&url, &options).unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = |ms: u64, n: usize| {
            let (db, order) = (db.clone(), order.clone());
            tokio::spawn(async move {
                db.run(move |_conn| {
                    std::thread::sleep(Duration::from_millis(ms));
                    order.lock().unwrap().push(n);
                    Ok::<_, DbError>(())
                })
                .await
            })
        };
        let first = hold(150, 0);
        let mut queued = Vec::new();
        for n in 1..=5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            queued.push(hold(1, n));
        }
        first.await.unwrap().unwrap();
        for call in queued {
            call.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5], "served in arrival order");

        // A call that cannot get the one connection within the timeout is refused.
        let long = hold(1_000, 6);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = db.run(|_conn| Ok::<_, DbError>(())).await;
        assert!(matches!(refused, Err(DbError::Unavailable(_))), "{refused:?}");
        long.await.unwrap().unwrap();
    }

    fn sqlite_db(dir: &tempfile::TempDir) -> Db {
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        Db::connect(&url, &PoolOptions::default()).unwrap()
    }

    fn insert(conn: &mut DbConnection, n: i32) -> Result<usize, DbError> {
        Ok(diesel::sql_query(format!("INSERT INTO t (n) VALUES ({n})")).execute(conn)?)
    }

    fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
        Ok(diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>("(SELECT COUNT(*) FROM t)"))
            .get_result(conn)?)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sqlite_writes_commit_or_roll_back_each_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(&dir);
        db.write(|conn| Ok::<_, DbError>(conn.batch_execute("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")?))
            .await
            .unwrap();
        // 200 writers at once, so that batches form: every third fails after writing a row, one
        // panics; the others must all be committed and nothing of the failed ones kept.
        let writes = (0..200).map(|n| {
            let db = db.clone();
            tokio::spawn(async move {
                db.write(move |conn| {
                    write_transaction(conn, |conn| {
                        insert(conn, n)?;
                        if n == 7 {
                            panic!("a bug in one write");
                        }
                        if n % 3 == 0 {
                            return Err(DbError::Query(DbCause::from("refused after writing")));
                        }
                        Ok(())
                    })
                })
                .await
            })
        });
        let results = futures::future::join_all(writes).await;
        let ok = results.iter().filter(|result| matches!(result, Ok(Ok(())))).count();
        let expected = (0..200).filter(|n| n % 3 != 0 && *n != 7).count();
        assert_eq!(ok, expected);
        // Every answered success is in the database, and nothing else.
        assert_eq!(db.run(count).await.unwrap(), expected as i64);
        // A unique violation inside one write does not disturb the next ones.
        let duplicate = db.write(|conn| write_transaction(conn, |conn| insert(conn, 1))).await;
        assert!(duplicate.is_err());
        db.write(|conn| write_transaction(conn, |conn| insert(conn, 1000))).await.unwrap();
        assert_eq!(db.run(count).await.unwrap(), expected as i64 + 1);
    }

    #[tokio::test]
    async fn sqlite_is_built_with_the_query_planner_stability_guarantee() {
        // See .cargo/config.toml: without it every `.first()` re-prepares its statement.
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(&dir);
        let options: Vec<String> = db
            .run(|conn| {
                #[derive(QueryableByName)]
                struct CompileOption {
                    #[diesel(sql_type = diesel::sql_types::Text)]
                    compile_options: String,
                }
                let rows: Vec<CompileOption> = diesel::sql_query("PRAGMA compile_options").load(conn)?;
                Ok::<_, DbError>(rows.into_iter().map(|row| row.compile_options).collect())
            })
            .await
            .unwrap();
        assert!(options.iter().any(|option| option == "ENABLE_QPSG"), "{options:?}");
    }

    #[tokio::test]
    async fn the_checkpointer_moves_committed_writes_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(&dir);
        db.write(|conn| Ok::<_, DbError>(conn.batch_execute("CREATE TABLE t (n INTEGER NOT NULL UNIQUE, pad BLOB)")?))
            .await
            .unwrap();
        for n in 0..200 {
            db.write(move |conn| {
                Ok::<_, DbError>(conn.batch_execute(&format!("INSERT INTO t VALUES ({n}, zeroblob(8192))"))?)
            })
            .await
            .unwrap();
        }
        // The writer's connection never checkpoints (wal_autocheckpoint = 0): only the
        // checkpointer thread can bring 1.6 MB of rows from the WAL into the database file.
        let file = dir.path().join("w.db");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).unwrap().len() < 1_600_000 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn database_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn conflicts_are_told_apart_from_every_other_failure() {
        let serialization = database_error(DatabaseErrorKind::SerializationFailure, "could not serialize access");
        assert_eq!(conflict_of(&serialization), Some(Conflict::Serialization));
        let deadlock = database_error(DatabaseErrorKind::Unknown, "deadlock detected");
        assert_eq!(conflict_of(&deadlock), Some(Conflict::Deadlock));
        assert_eq!(
            conflict_of(&database_error(DatabaseErrorKind::Unknown, "database is locked")),
            Some(Conflict::Busy)
        );
        let table_locked = database_error(DatabaseErrorKind::Unknown, "database table is locked: accounts");
        assert_eq!(conflict_of(&table_locked), Some(Conflict::Busy));
        // Not conflicts: running them again cannot help, or is not ours to decide here.
        for other in [
            database_error(DatabaseErrorKind::UniqueViolation, "duplicate key value violates unique constraint"),
            database_error(DatabaseErrorKind::CheckViolation, "new row violates check constraint"),
            database_error(DatabaseErrorKind::ForeignKeyViolation, "violates foreign key constraint"),
            database_error(DatabaseErrorKind::ClosedConnection, "server closed the connection unexpectedly"),
            database_error(DatabaseErrorKind::Unknown, "syntax error at or near \"deadlock\""),
            database_error(DatabaseErrorKind::Unknown, "relation \"deadlock detected\" does not exist"),
            DieselError::NotFound,
            DieselError::RollbackTransaction,
        ] {
            assert_eq!(conflict_of(&other), None, "{other}");
            assert!(!DbError::from(other).is_transient_conflict());
        }
        // A conflict stays recognisable through each conversion callers make.
        let db_error = DbError::from(database_error(DatabaseErrorKind::Unknown, "deadlock detected"));
        assert!(matches!(db_error, DbError::Conflict(_)) && db_error.is_transient_conflict());
        let api = crate::ApiError::from(db_error);
        assert_eq!((api.code(), api.reason()), (tonic::Code::Aborted, crate::Reason::TransactionConflict));
        assert!(api.is_transient_conflict());
        assert!(!crate::ApiError::from(DbError::Query(DbCause::from("x"))).is_transient_conflict());
        assert!(!crate::ApiError::from(DbError::Unavailable(DbCause::from("x"))).is_transient_conflict());
    }

    #[test]
    fn conflicts_are_retried_a_bounded_number_of_times_and_nothing_else_is() {
        let conflict = || database_error(DatabaseErrorKind::SerializationFailure, "could not serialize access");
        let mut runs = 0;
        let outcome: Result<(), DieselError> = retry_conflicts(|| {
            runs += 1;
            Err(conflict())
        });
        assert!(outcome.is_err());
        assert_eq!(runs, CONFLICT_ATTEMPTS, "bounded");

        let mut runs = 0;
        let outcome = retry_conflicts(|| {
            runs += 1;
            if runs < 3 { Err(conflict()) } else { Ok(runs) }
        });
        assert_eq!(outcome.unwrap(), 3, "run again until it succeeds");

        let mut runs = 0;
        let outcome: Result<(), DieselError> = retry_conflicts(|| {
            runs += 1;
            Err(database_error(DatabaseErrorKind::UniqueViolation, "duplicate key"))
        });
        assert!(outcome.is_err());
        assert_eq!(runs, 1, "a non-conflict is answered at once");

        for run in 1..=CONFLICT_ATTEMPTS {
            let wait = conflict_backoff(run);
            assert!(wait <= CONFLICT_BACKOFF_CAP && wait <= CONFLICT_BACKOFF_BASE * (1 << run), "{run}: {wait:?}");
        }
        // Jittered: not the same wait every time.
        let waits: std::collections::HashSet<_> = (0..50).map(|_| conflict_backoff(5)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn only_english_server_messages_are_taken_for_recognisable() {
        for english in ["", "C", "POSIX", "C.UTF-8", "en_US.UTF-8", "en_GB"] {
            assert!(english_messages(english), "{english}");
        }
        for other in ["de_DE.UTF-8", "zh_CN.UTF-8", "fr_FR"] {
            assert!(!english_messages(other), "{other}");
        }
    }

    #[tokio::test]
    async fn sqlite_busy_is_a_conflict_and_an_outermost_write_transaction_outlasts_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(&dir);
        db.write(|conn| Ok::<_, DbError>(conn.batch_execute("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")?))
            .await
            .unwrap();
        let manager = ConnectionManager { url: DatabaseUrl::Sqlite(dir.path().join("w.db")) };
        let mut holder = manager.connect().unwrap();
        let mut impatient = manager.connect().unwrap();
        impatient.batch_execute("PRAGMA busy_timeout = 0").unwrap();
        holder.batch_execute("BEGIN IMMEDIATE").unwrap();
        let busy = impatient.batch_execute("BEGIN IMMEDIATE").unwrap_err();
        assert_eq!(conflict_of(&busy), Some(Conflict::Busy), "{busy}");
        // The holder lets go while the retry waits: the write goes through.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            holder.batch_execute("COMMIT").unwrap();
        });
        let written = write_transaction(&mut impatient, |conn| insert(conn, 1));
        release.join().unwrap();
        assert_eq!(written.unwrap(), 1);
        assert_eq!(count(&mut impatient).unwrap(), 1);
    }

    /// Runs on PostgreSQL when `MEDINS_TEST_POSTGRES_URL` is set (as `.ci/pg.sh` does).
    #[test]
    fn a_postgres_deadlock_is_recognised_and_both_transactions_commit_through_the_retry() {
        let Some(url) = std::env::var("MEDINS_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty()) else {
            eprintln!("skipped: MEDINS_TEST_POSTGRES_URL is not set");
            return;
        };
        let manager = ConnectionManager { url: DatabaseUrl::parse(&url).unwrap() };
        let table = format!("deadlock_{}", uuid::Uuid::now_v7().simple());
        let mut admin = manager.connect().unwrap();
        admin
            .batch_execute(&format!(
                "CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO {table} VALUES (1, 0), (2, 0)"
            ))
            .unwrap();
        let both_hold_one = std::sync::Barrier::new(2);
        let seen = std::sync::Mutex::new(Vec::new());
        // Each takes one row, waits until the other has taken the other row, then asks for it:
        // a lock cycle PostgreSQL breaks by aborting one of them with 40P01.
        let crossed = |first: i32, second: i32| {
            let mut conn = manager.connect().unwrap();
            let mut runs = 0;
            let outcome = write_transaction(&mut conn, |conn| -> Result<(), DbError> {
                runs += 1;
                let bump = |conn: &mut DbConnection, id: i32| {
                    diesel::sql_query(format!("UPDATE {table} SET n = n + 1 WHERE id = {id}")).execute(conn)
                };
                bump(conn, first)?;
                if runs == 1 {
                    both_hold_one.wait();
                }
                bump(conn, second).inspect_err(|error| seen.lock().unwrap().push(conflict_of(error)))?;
                Ok(())
            });
            (outcome, runs)
        };
        let (left, right) = std::thread::scope(|scope| {
            let left = scope.spawn(|| crossed(1, 2));
            let right = scope.spawn(|| crossed(2, 1));
            (left.join().unwrap(), right.join().unwrap())
        });
        let rows: Vec<(i32, i32)> = {
            #[derive(QueryableByName)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Integer)]
                id: i32,
                #[diesel(sql_type = diesel::sql_types::Integer)]
                n: i32,
            }
            let rows: Vec<Row> =
                diesel::sql_query(format!("SELECT id, n FROM {table} ORDER BY id")).load(&mut admin).unwrap();
            rows.into_iter().map(|row| (row.id, row.n)).collect()
        };
        admin.batch_execute(&format!("DROP TABLE {table}")).unwrap();
        assert!(left.0.is_ok() && right.0.is_ok(), "{:?} {:?}", left.0, right.0);
        // PostgreSQL aborts one of the two; its rerun may even meet the other again (it can take
        // the freed row before the other wakes), so more than one rerun is possible: each is
        // caused by one deadlock, and nothing else was retried.
        let seen = seen.into_inner().unwrap();
        assert!(!seen.is_empty() && seen.iter().all(|conflict| *conflict == Some(Conflict::Deadlock)), "{seen:?}");
        assert_eq!(left.1 + right.1, 2 + seen.len(), "one rerun per deadlock ({} + {} runs)", left.1, right.1);
        assert_eq!(rows, vec![(1, 2), (2, 2)], "each committed exactly once");
    }

    #[tokio::test]
    async fn sqlite_writes_to_a_deleted_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite_db(&dir);
        db.write(|conn| Ok::<_, DbError>(conn.batch_execute("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")?))
            .await
            .unwrap();
        std::fs::remove_file(dir.path().join("w.db")).unwrap();
        let refused = db.write(|conn| insert(conn, 1)).await;
        assert!(matches!(refused, Err(DbError::Unavailable(_))), "{refused:?}");
        assert!(!dir.path().join("w.db").exists());
    }

    diesel::table! {
        locked_rows (id) {
            id -> Text,
            n -> Integer,
        }
    }

    #[test]
    fn a_lost_unique_race_runs_the_transaction_again_and_stops_after_three_runs() {
        let mut conn = DbConnection::Sqlite(SqliteConnection::establish(":memory:").unwrap());
        conn.batch_execute("CREATE TABLE locked_rows (id TEXT PRIMARY KEY, n INTEGER NOT NULL)").unwrap();
        let id = types::DbUuid(uuid::Uuid::now_v7());
        // The first run loses (its insert hits the unique index: a "concurrent" winner's row is
        // already there); the second reads the winner's row and answers from it.
        diesel::insert_into(locked_rows::table)
            .values((locked_rows::id.eq(id), locked_rows::n.eq(7)))
            .execute(&mut conn)
            .unwrap();
        let mut runs = 0;
        let found = write_retrying(
            &mut conn,
            |conn| {
                runs += 1;
                if runs == 1 {
                    diesel::insert_into(locked_rows::table)
                        .values((locked_rows::id.eq(id), locked_rows::n.eq(1)))
                        .execute(conn)?;
                }
                Ok(locked_rows::table.find(id).select(locked_rows::n).first::<i32>(conn)?)
            },
            || crate::ApiError::internal("raced"),
        );
        assert_eq!((found.unwrap(), runs), (7, 2));
        // Always losing: three runs, then the caller's answer.
        let mut runs = 0;
        let lost = write_retrying(
            &mut conn,
            |conn| -> Result<(), TxError> {
                runs += 1;
                diesel::insert_into(locked_rows::table)
                    .values((locked_rows::id.eq(id), locked_rows::n.eq(1)))
                    .execute(conn)?;
                Ok(())
            },
            || crate::ApiError::already_exists(crate::Reason::AlreadyBound, "raced"),
        );
        assert_eq!((lost.unwrap_err().reason(), runs), (crate::Reason::AlreadyBound, RACE_ATTEMPTS));
        // Any other failure is answered at once, and rolled back.
        let mut runs = 0;
        let failed = write_retrying(
            &mut conn,
            |conn| -> Result<(), TxError> {
                runs += 1;
                diesel::update(locked_rows::table).set(locked_rows::n.eq(0)).execute(conn)?;
                Err(crate::ApiError::not_found(crate::Reason::PersonNotFound, "no").into())
            },
            || crate::ApiError::internal("raced"),
        );
        assert_eq!((failed.unwrap_err().reason(), runs), (crate::Reason::PersonNotFound, 1));
        assert_eq!(locked_rows::table.select(locked_rows::n).first::<i32>(&mut conn).unwrap(), 7);
    }

    #[test]
    fn a_locked_row_is_read_on_sqlite_and_held_until_commit_on_postgres() {
        let mut sqlite = DbConnection::Sqlite(SqliteConnection::establish(":memory:").unwrap());
        sqlite.batch_execute("CREATE TABLE locked_rows (id TEXT PRIMARY KEY, n INTEGER NOT NULL)").unwrap();
        let id = types::DbUuid(uuid::Uuid::now_v7());
        diesel::insert_into(locked_rows::table)
            .values((locked_rows::id.eq(id), locked_rows::n.eq(3)))
            .execute(&mut sqlite)
            .unwrap();
        let n = write_transaction(&mut sqlite, |conn| -> Result<_, DbError> {
            lock_key(conn, 42)?;
            Ok(first_locked!(conn, locked_rows::table.find(id).select(locked_rows::n))?)
        });
        assert_eq!(n.unwrap(), Some(3));
        let missing = write_transaction(&mut sqlite, |conn| -> Result<Option<i32>, DbError> {
            Ok(first_locked!(conn, locked_rows::table.find(types::DbUuid(uuid::Uuid::nil())).select(locked_rows::n))?)
        });
        assert_eq!(missing.unwrap(), None);

        let Some(url) = std::env::var("MEDINS_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty()) else {
            eprintln!("skipped: MEDINS_TEST_POSTGRES_URL is not set");
            return;
        };
        let manager = ConnectionManager { url: DatabaseUrl::parse(&url).unwrap() };
        let schema = format!("locked_{}", uuid::Uuid::now_v7().simple());
        let mut holder = manager.connect().unwrap();
        let mut other = manager.connect().unwrap();
        holder
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema}; \
                 CREATE TABLE locked_rows (id TEXT PRIMARY KEY, n INTEGER NOT NULL); \
                 INSERT INTO locked_rows VALUES ('{id}', 3)"
            ))
            .unwrap();
        other.batch_execute(&format!("SET search_path TO {schema}")).unwrap();
        #[derive(QueryableByName)]
        struct Got {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            got: bool,
        }
        // What another transaction can take while the holder's transaction runs.
        let mut others_view = || {
            let row = other.batch_execute("BEGIN; SELECT n FROM locked_rows FOR UPDATE NOWAIT; COMMIT");
            if row.is_err() {
                other.batch_execute("ROLLBACK").unwrap();
            }
            let key = diesel::sql_query("SELECT pg_try_advisory_xact_lock(42) AS got").get_result::<Got>(&mut other);
            (row.is_ok(), key.unwrap().got)
        };
        for lock in [false, true] {
            let seen = write_transaction(&mut holder, |conn| -> Result<_, DbError> {
                let n = if lock {
                    lock_key(conn, 42)?;
                    first_locked!(conn, locked_rows::table.find(id).select(locked_rows::n))?
                } else {
                    locked_rows::table.find(id).select(locked_rows::n).first(conn).optional()?
                };
                Ok((n, others_view()))
            });
            // Unlocked, the other transaction takes both; locked, it takes neither.
            assert_eq!(seen.unwrap(), (Some(3), (!lock, !lock)), "locked: {lock}");
        }
        // After the commit both are free again.
        assert_eq!(others_view(), (true, true));
        holder.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).unwrap();
    }
}
