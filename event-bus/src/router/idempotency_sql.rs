//! The idempotency store in SQL (PostgreSQL or SQLite, through sqlx); see
//! [`SqlIdempotencyStore`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Database, Pool, Postgres, Sqlite, Transaction};

use super::idempotency::{IdempotencyKey, IdempotencyStore};
use crate::BusError;

/// Default name of the table of a [`SqlIdempotencyStore`].
pub const DEFAULT_SQL_IDEMPOTENCY_TABLE: &str = "meshwork_handled";
/// Longest table name a [`SqlIdempotencyConfig`] accepts (so that the names derived from it
/// fit PostgreSQL's 63-byte identifiers).
pub const MAX_SQL_TABLE_NAME_LEN: usize = 48;

/// Settings of a [`SqlIdempotencyStore`].
///
/// ```
/// use meshwork_event_bus::SqlIdempotencyConfig;
///
/// let config = SqlIdempotencyConfig::builder()
///     .table("billing_handled")
///     .create_table(false)
///     .build()?;
/// assert_eq!(config.table, "billing_handled");
/// assert!(SqlIdempotencyConfig::builder().table("x; DROP TABLE y").build().is_err());
/// # Ok::<(), meshwork_event_bus::BusError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlIdempotencyConfig {
    /// The table of handled messages.
    pub table: String,
    /// Create the table (and its index) when missing; when off, a missing table is a
    /// [`BusError::MissingTopology`] at construction.
    pub create_table: bool,
}

impl Default for SqlIdempotencyConfig {
    fn default() -> Self {
        SqlIdempotencyConfig {
            table: DEFAULT_SQL_IDEMPOTENCY_TABLE.to_owned(),
            create_table: true,
        }
    }
}

impl SqlIdempotencyConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> SqlIdempotencyConfigBuilder {
        SqlIdempotencyConfigBuilder {
            config: SqlIdempotencyConfig::default(),
        }
    }

    /// Checks every field; [`SqlIdempotencyConfigBuilder::build`] calls this.
    ///
    /// ```
    /// use meshwork_event_bus::SqlIdempotencyConfig;
    ///
    /// assert!(SqlIdempotencyConfig::default().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), BusError> {
        let table = &self.table;
        if table.is_empty() {
            return Err(BusError::invalid("table", "", "must not be empty"));
        }
        if table.len() > MAX_SQL_TABLE_NAME_LEN {
            return Err(BusError::invalid(
                "table",
                table.as_str(),
                "must be at most 48 characters",
            ));
        }
        let mut bytes = table.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(BusError::invalid(
                "table",
                table.as_str(),
                "must start with a lowercase ASCII letter or '_' and hold only lowercase ASCII letters, digits and '_'",
            ));
        }
        Ok(())
    }
}

/// Builds a validated [`SqlIdempotencyConfig`].
///
/// ```
/// use meshwork_event_bus::SqlIdempotencyConfig;
///
/// let err = SqlIdempotencyConfig::builder().table("").build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid table \"\": must not be empty");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SqlIdempotencyConfigBuilder {
    config: SqlIdempotencyConfig,
}

impl SqlIdempotencyConfigBuilder {
    /// The table of handled messages. Default [`DEFAULT_SQL_IDEMPOTENCY_TABLE`]
    /// (`meshwork_handled`); 1 to 48 characters, lowercase ASCII letters, digits and `_`,
    /// not starting with a digit (a schema comes from the connection's `search_path`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.config.table = table.into();
        self
    }

    /// Create the table when missing. Default on; when off, the table must exist.
    pub fn create_table(mut self, create: bool) -> Self {
        self.config.create_table = create;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<SqlIdempotencyConfig, BusError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// An [`IdempotencyStore`] in a SQL table, on PostgreSQL (`SqlIdempotencyStore<Postgres>`)
/// or SQLite (`SqlIdempotencyStore<Sqlite>`), able to record a message as handled in the same
/// transaction as the handler's own writes. Cheap to clone (clones share the pool).
///
/// ```no_run
/// use meshwork_event_bus::{
///     IdempotencyKey, IdempotencyStore, MessageId, SqlIdempotencyConfig, SqlIdempotencyStore,
/// };
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::SqlitePool::connect("sqlite:///var/lib/app/app.db?mode=rwc").await?;
/// let store = SqlIdempotencyStore::sqlite(pool, SqlIdempotencyConfig::default()).await?;
/// let key = IdempotencyKey::new("billing", MessageId::new());
/// store.record(&key).await?;
/// assert!(store.is_handled(&key).await?);
/// store.purge(Duration::from_secs(7 * 24 * 3600)).await?;
/// # Ok(())
/// # }
/// ```
///
/// ## The table
/// One row per handled (group, message id), in a table named by
/// [`SqlIdempotencyConfig::table`] (default `meshwork_handled`), created with an index on
/// `handled_at` when missing (unless [`SqlIdempotencyConfigBuilder::create_table`] is off):
///
/// ```sql
/// -- PostgreSQL
/// CREATE TABLE IF NOT EXISTS "meshwork_handled" (
///     group_name TEXT NOT NULL,
///     message_id TEXT NOT NULL,
///     handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
///     PRIMARY KEY (group_name, message_id)
/// );
/// -- SQLite: the same, with handled_at INTEGER (Unix milliseconds, set by the database)
/// ```
///
/// `record` is `INSERT ... ON CONFLICT DO NOTHING`, so recording twice is not an error;
/// `is_handled` is `SELECT EXISTS(...)`. Rows stay until [`SqlIdempotencyStore::purge`]
/// removes those older than a TTL: call it from a periodic task.
///
/// ## Exactly-once effects on the same database
/// The router records a message only after its handler succeeded, so a crash between the
/// handler's commit and the record handles the message again on redelivery. A handler whose
/// effects live in the same database closes that gap with
/// [`record_in`](SqlIdempotencyStore::record_in): it records the message **first** in its own
/// transaction, then makes its change, then commits. Both commit or neither does:
/// * a handler that fails (or crashes) rolls back its change *and* the mark, so the
///   redelivery is handled again;
/// * a duplicate handled concurrently waits on the row lock of the first (PostgreSQL) or on
///   the write lock (SQLite), then sees `record_in` answer `false`: it rolls back and returns
///   `Ok`, and the router acknowledges it.
///
/// Recording first also matters on SQLite: a transaction whose first statement writes waits
/// for the write lock (up to the connection's `busy_timeout`), while one that read first can
/// fail with `SQLITE_BUSY` when another writer committed meanwhile. (An in-memory SQLite
/// database is private to one connection: give its pool `max_connections(1)`.)
///
/// ```no_run
/// use meshwork_event_bus::{
///     BoxError, IdempotencyKey, Message, Outputs, Route, SqlIdempotencyConfig,
///     SqlIdempotencyStore,
/// };
/// use sqlx::{PgPool, Postgres};
///
/// async fn credit(
///     pool: PgPool,
///     store: SqlIdempotencyStore<Postgres>,
///     message: Message,
/// ) -> Result<Outputs, BoxError> {
///     let amount: i64 = std::str::from_utf8(message.payload())?.parse()?;
///     let mut tx = pool.begin().await?;
///     // First: claim the message in this transaction.
///     if !store.record_in(&mut tx, &IdempotencyKey::new("ledger", message.id())).await? {
///         return Ok(Outputs::none()); // handled already; `tx` rolls back when dropped
///     }
///     sqlx::query("UPDATE accounts SET balance = balance + $1 WHERE id = 1")
///         .bind(amount)
///         .execute(&mut *tx)
///         .await?;
///     tx.commit().await?; // the change and the mark, together
///     Ok(Outputs::none())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let pool = PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// let store = SqlIdempotencyStore::postgres(pool.clone(), SqlIdempotencyConfig::default()).await?;
/// let route = {
///     let store = store.clone();
///     Route::new("credit", "payments", "ledger", move |m: Message| {
///         credit(pool.clone(), store.clone(), m)
///     })
/// };
/// // Router::builder(bus.clone(), bus).idempotency(store).route(route)...
/// # let _ = route;
/// # Ok(())
/// # }
/// ```
pub struct SqlIdempotencyStore<DB: Database> {
    pool: Pool<DB>,
    table: Arc<str>,
    sql: Arc<Queries>,
}

/// The statements of one store, built once from its validated table name.
#[derive(Debug)]
struct Queries {
    table_exists: Arc<str>,
    /// The name `table_exists` binds: quoted for PostgreSQL's `to_regclass`, bare for SQLite.
    table_exists_arg: String,
    create_table: Arc<str>,
    create_index: Arc<str>,
    is_handled: Arc<str>,
    insert: Arc<str>,
    purge: Arc<str>,
}

impl Queries {
    fn postgres(table: &str) -> Queries {
        Queries {
            table_exists: "SELECT to_regclass($1) IS NOT NULL".into(),
            table_exists_arg: format!("\"{table}\""),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" (\
                 group_name TEXT NOT NULL, \
                 message_id TEXT NOT NULL, \
                 handled_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
                 PRIMARY KEY (group_name, message_id))"
            )
            .into(),
            create_index: format!(
                "CREATE INDEX IF NOT EXISTS \"{table}_handled_at\" ON \"{table}\" (handled_at)"
            )
            .into(),
            is_handled: format!(
                "SELECT EXISTS (SELECT 1 FROM \"{table}\" WHERE group_name = $1 AND message_id = $2)"
            )
            .into(),
            insert: format!(
                "INSERT INTO \"{table}\" (group_name, message_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING"
            )
            .into(),
            purge: format!(
                "DELETE FROM \"{table}\" WHERE handled_at < now() - make_interval(secs => $1)"
            )
            .into(),
        }
    }

    fn sqlite(table: &str) -> Queries {
        // Unix milliseconds by the database's clock, so every replica agrees.
        const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
        Queries {
            table_exists: "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)"
                .into(),
            table_exists_arg: table.to_owned(),
            create_table: format!(
                "CREATE TABLE IF NOT EXISTS \"{table}\" (\
                 group_name TEXT NOT NULL, \
                 message_id TEXT NOT NULL, \
                 handled_at INTEGER NOT NULL DEFAULT ({NOW_MS}), \
                 PRIMARY KEY (group_name, message_id)) WITHOUT ROWID"
            )
            .into(),
            create_index: format!(
                "CREATE INDEX IF NOT EXISTS \"{table}_handled_at\" ON \"{table}\" (handled_at)"
            )
            .into(),
            is_handled: format!(
                "SELECT EXISTS (SELECT 1 FROM \"{table}\" WHERE group_name = ?1 AND message_id = ?2)"
            )
            .into(),
            insert: format!(
                "INSERT INTO \"{table}\" (group_name, message_id) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING"
            )
            .into(),
            purge: format!(
                "DELETE FROM \"{table}\" WHERE handled_at < {NOW_MS} - CAST(?1 * 1000.0 AS INTEGER)"
            )
            .into(),
        }
    }
}

impl<DB: Database> SqlIdempotencyStore<DB> {
    /// The table this store keeps its marks in.
    ///
    /// ```no_run
    /// use meshwork_event_bus::{SqlIdempotencyConfig, SqlIdempotencyStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// let store = SqlIdempotencyStore::postgres(pool, SqlIdempotencyConfig::default()).await?;
    /// assert_eq!(store.table(), "meshwork_handled");
    /// # Ok(())
    /// # }
    /// ```
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The pool this store uses.
    ///
    /// ```no_run
    /// use meshwork_event_bus::{SqlIdempotencyConfig, SqlIdempotencyStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test").await?;
    /// let store = SqlIdempotencyStore::postgres(pool, SqlIdempotencyConfig::default()).await?;
    /// let tx = store.pool().begin().await?;
    /// # drop(tx);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }
}

fn purge_secs(older_than: Duration) -> Result<f64, BusError> {
    if older_than.is_zero() {
        return Err(BusError::invalid(
            "purge older_than",
            "0s",
            "must be greater than zero",
        ));
    }
    Ok(older_than.as_secs_f64())
}

fn sql_error(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> BusError {
    let context = context.into();
    move |e| BusError::backend(context, e)
}

/// The inherent API and the [`IdempotencyStore`] impl of one database; the two differ only in
/// their types and SQL text.
macro_rules! sql_store {
    ($db:ty, $ctor:ident, $name:literal, $pool:literal, $url:literal) => {
        impl SqlIdempotencyStore<$db> {
            #[doc = concat!("A store on ", $name, " over `pool`, creating its table and index \
                when missing (unless `config.create_table` is off).")]
            ///
            /// Fails with [`BusError::Invalid`] for a bad config, with
            /// [`BusError::MissingTopology`] when the table is missing and creating it is off,
            /// and with [`BusError::Backend`] when the database fails.
            ///
            /// ```no_run
            /// use meshwork_event_bus::{SqlIdempotencyConfig, SqlIdempotencyStore};
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
            #[doc = concat!("let pool = ", $pool, "::connect(\"", $url, "\").await?;")]
            #[doc = concat!("let store = SqlIdempotencyStore::", stringify!($ctor),
                                        "(pool, SqlIdempotencyConfig::default()).await?;")]
            /// # let _ = store;
            /// # Ok(())
            /// # }
            /// ```
            pub async fn $ctor(
                pool: Pool<$db>,
                config: SqlIdempotencyConfig,
            ) -> Result<Self, BusError> {
                config.validate()?;
                let store = SqlIdempotencyStore {
                    pool,
                    sql: Arc::new(Queries::$ctor(&config.table)),
                    table: config.table.into(),
                };
                if config.create_table {
                    store.create_table().await?;
                } else if !store.table_exists().await? {
                    return Err(BusError::MissingTopology {
                        what: "idempotency table",
                        name: store.table.to_string(),
                    });
                }
                Ok(store)
            }

            async fn table_exists(&self) -> Result<bool, BusError> {
                sqlx::query_scalar::<_, bool>(AssertSqlSafe(self.sql.table_exists.clone()))
                    .bind(self.sql.table_exists_arg.as_str())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(sql_error(format!(
                        "checking for the idempotency table '{}'",
                        self.table
                    )))
            }

            async fn create_table(&self) -> Result<(), BusError> {
                let created = async {
                    sqlx::query(AssertSqlSafe(self.sql.create_table.clone()))
                        .execute(&self.pool)
                        .await?;
                    sqlx::query(AssertSqlSafe(self.sql.create_index.clone()))
                        .execute(&self.pool)
                        .await
                }
                .await;
                let Err(e) = created else { return Ok(()) };
                // Another process creating the same table at the same moment can make
                // `IF NOT EXISTS` fail on the catalog; the table is there all the same.
                if let Ok(true) = self.table_exists().await {
                    return Ok(());
                }
                Err(sql_error(format!(
                    "creating the idempotency table '{}'",
                    self.table
                ))(e))
            }

            /// Records `key` inside the caller's transaction `tx`, so that the mark commits or
            /// rolls back together with the handler's own writes. Record **first**, before
            /// the business change, so that a concurrent duplicate waits for this
            /// transaction.
            ///
            /// Answers `true` when this transaction recorded the key, and `false` when it was
            /// recorded (and committed) already: the message was handled elsewhere, so roll
            /// back and return `Ok` from the handler. See [`SqlIdempotencyStore`].
            ///
            /// ```no_run
            /// use meshwork_event_bus::{
            ///     IdempotencyKey, MessageId, SqlIdempotencyConfig, SqlIdempotencyStore,
            /// };
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
            #[doc = concat!("# let pool = ", $pool, "::connect(\"", $url, "\").await?;")]
            #[doc = concat!("# let store = SqlIdempotencyStore::", stringify!($ctor),
                                        "(pool.clone(), SqlIdempotencyConfig::default()).await?;")]
            /// let key = IdempotencyKey::new("ledger", MessageId::new());
            /// let mut tx = pool.begin().await?;
            /// if store.record_in(&mut tx, &key).await? {
            ///     sqlx::query("UPDATE accounts SET balance = balance + 10 WHERE id = 1")
            ///         .execute(&mut *tx)
            ///         .await?;
            ///     tx.commit().await?;
            /// }
            /// # Ok(())
            /// # }
            /// ```
            pub async fn record_in(
                &self,
                tx: &mut Transaction<'_, $db>,
                key: &IdempotencyKey,
            ) -> Result<bool, BusError> {
                let done = sqlx::query(AssertSqlSafe(self.sql.insert.clone()))
                    .bind(key.group())
                    .bind(key.message_id().to_string())
                    .execute(&mut **tx)
                    .await
                    .map_err(sql_error(format!(
                        "recording message {} of group '{}' in '{}'",
                        key.message_id(),
                        key.group(),
                        self.table
                    )))?;
                Ok(done.rows_affected() == 1)
            }

            /// Deletes the marks recorded more than `older_than` ago (by the database's
            /// clock) and answers how many went. `older_than` must be greater than zero, and
            /// longer than duplicates can arrive.
            ///
            /// ```no_run
            /// use meshwork_event_bus::{SqlIdempotencyConfig, SqlIdempotencyStore};
            /// use std::time::Duration;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
            #[doc = concat!("# let pool = ", $pool, "::connect(\"", $url, "\").await?;")]
            #[doc = concat!("# let store = SqlIdempotencyStore::", stringify!($ctor),
                                        "(pool, SqlIdempotencyConfig::default()).await?;")]
            /// let purged = store.purge(Duration::from_secs(7 * 24 * 3600)).await?;
            /// println!("forgot {purged} handled messages");
            /// # Ok(())
            /// # }
            /// ```
            pub async fn purge(&self, older_than: Duration) -> Result<u64, BusError> {
                let secs = purge_secs(older_than)?;
                let done = sqlx::query(AssertSqlSafe(self.sql.purge.clone()))
                    .bind(secs)
                    .execute(&self.pool)
                    .await
                    .map_err(sql_error(format!("purging '{}'", self.table)))?;
                Ok(done.rows_affected())
            }
        }

        impl IdempotencyStore for SqlIdempotencyStore<$db> {
            fn is_handled(
                &self,
                key: &IdempotencyKey,
            ) -> impl Future<Output = Result<bool, BusError>> + Send {
                let query =
                    sqlx::query_scalar::<_, bool>(AssertSqlSafe(self.sql.is_handled.clone()))
                        .bind(key.group().to_owned())
                        .bind(key.message_id().to_string());
                let context = format!(
                    "looking up message {} of group '{}' in '{}'",
                    key.message_id(),
                    key.group(),
                    self.table
                );
                let pool = self.pool.clone();
                async move { query.fetch_one(&pool).await.map_err(sql_error(context)) }
            }

            fn record(
                &self,
                key: &IdempotencyKey,
            ) -> impl Future<Output = Result<(), BusError>> + Send {
                let query = sqlx::query(AssertSqlSafe(self.sql.insert.clone()))
                    .bind(key.group().to_owned())
                    .bind(key.message_id().to_string());
                let context = format!(
                    "recording message {} of group '{}' in '{}'",
                    key.message_id(),
                    key.group(),
                    self.table
                );
                let pool = self.pool.clone();
                async move {
                    query
                        .execute(&pool)
                        .await
                        .map(drop)
                        .map_err(sql_error(context))
                }
            }
        }
    };
}

sql_store!(
    Postgres,
    postgres,
    "PostgreSQL",
    "sqlx::PgPool",
    "postgres://postgres@127.0.0.1:5432/test"
);
sql_store!(
    Sqlite,
    sqlite,
    "SQLite",
    "sqlx::SqlitePool",
    "sqlite:///var/lib/app/app.db?mode=rwc"
);

impl<DB: Database> Clone for SqlIdempotencyStore<DB> {
    fn clone(&self) -> Self {
        SqlIdempotencyStore {
            pool: self.pool.clone(),
            table: self.table.clone(),
            sql: self.sql.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for SqlIdempotencyStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlIdempotencyStore")
            .field("database", &DB::NAME)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        for good in ["meshwork_handled", "_t", "t1", &"a".repeat(48)] {
            assert!(
                SqlIdempotencyConfig::builder().table(good).build().is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            "1t",
            "Handled",
            "a-b",
            "a.b",
            "t\"; DROP TABLE x; --",
            "ü",
            &"a".repeat(49),
        ] {
            let err = SqlIdempotencyConfig::builder()
                .table(bad)
                .build()
                .unwrap_err();
            assert!(err.to_string().starts_with("invalid table"), "{err}");
        }
    }

    #[test]
    fn purge_needs_a_positive_age() {
        assert!(purge_secs(Duration::ZERO).is_err());
        assert_eq!(purge_secs(Duration::from_millis(1500)).unwrap(), 1.5);
    }

    #[test]
    fn queries_quote_the_table() {
        let q = Queries::postgres("t");
        assert!(q.insert.contains("INSERT INTO \"t\""));
        assert!(q.insert.ends_with("ON CONFLICT DO NOTHING"));
        let q = Queries::sqlite("t");
        assert!(q.create_table.contains("WITHOUT ROWID"));
    }
}
