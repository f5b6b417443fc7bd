//! Storage (DESIGN.md 7): one diesel connection type over SQLite and PostgreSQL, chosen by the
//! URL scheme; an r2d2 pool with per-connection setup; blocking work in `spawn_blocking`;
//! embedded migrations per backend; write transactions that serialise correctly on both.

use std::{
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
                return Err(DbError::Config("sqlite needs a file path, e.g. sqlite://data/identity.db".into()));
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        Err(DbError::Config("database URL must start with sqlite:// or postgres://".into()))
    }

    /// The backend of this URL.
    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Storage errors, split by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached (pool timeout, connection refused, dropped): retryable.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed for another reason: a fault of ours.
    #[error("database query failed: {0}")]
    Query(String),
    /// Bad configuration (URL, path).
    #[error("database configuration: {0}")]
    Config(String),
}

impl From<DieselError> for DbError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            ) => DbError::Unavailable(error.to_string()),
            _ => DbError::Query(error.to_string()),
        }
    }
}

/// The r2d2 manager: picks the backend from the URL and sets each new connection up.
#[derive(Debug)]
pub struct ConnectionManager {
    url: DatabaseUrl,
}

impl ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
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

/// The database of one service: a pool plus what the health check needs.
#[derive(Clone)]
pub struct Db {
    pool: r2d2::Pool<ConnectionManager>,
    url: Arc<DatabaseUrl>,
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
                .map_err(|e| DbError::Config(format!("cannot create {}: {e}", parent.display())))?;
        }
        if let DatabaseUrl::Sqlite(path) = &url {
            // Created here (SQLite takes an empty file as a new database), so that from now on a
            // missing file means the database was lost: `run` refuses rather than recreate it.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| DbError::Config(format!("cannot create {}: {e}", path.display())))?;
        }
        let pool = r2d2::Pool::builder()
            .max_size(options.max_size)
            .min_idle(Some(0))
            .connection_timeout(options.connection_timeout)
            .test_on_check_out(false)
            .error_handler(Box::new(PoolErrorLogger))
            .build_unchecked(ConnectionManager { url: url.clone() });
        Ok(Db { pool, url: Arc::new(url) })
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
        let pool = self.pool.clone();
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || {
            // A pooled connection to a deleted SQLite file still answers, from a file no one will
            // ever read again, and a new connection would create an empty one: refuse instead.
            if let DatabaseUrl::Sqlite(path) = &*url
                && !path.exists()
            {
                return Err(DbError::Unavailable("the SQLite database file is missing".into()).into());
            }
            let mut conn = pool.get().map_err(|e| DbError::Unavailable(e.to_string()))?;
            work(&mut conn)
        })
        .await
        .map_err(|join| E::from(DbError::Query(format!("database task failed: {join}"))))?
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
            applied.map_err(|e| DbError::Query(format!("migration failed: {e}")))
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
            reverted.map_err(|e| DbError::Query(format!("revert failed: {e}")))
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
/// transaction on PostgreSQL (where row locks and constraints serialise). Rolled back on error.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<DieselError>,
{
    type Manager = <DbConnection as Connection>::TransactionManager;
    match conn {
        DbConnection::Sqlite(inner) => AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?,
        DbConnection::Postgres(_) => Manager::begin_transaction(conn)?,
    }
    match work(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(error) => {
            // The work's error is the one worth reporting; a failed rollback marks the
            // connection broken and r2d2 drops it.
            let _ = Manager::rollback_transaction(conn);
            Err(error)
        }
    }
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
        assert!(!path.exists(), "the lost file is not silently recreated empty");
    }
}
