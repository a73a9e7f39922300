//! The SQL idempotency store against a real PostgreSQL server over loopback
//! (`MESHWORK_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`;
//! `bash scripts/services.sh` starts it) and against SQLite in a temporary file. Every test
//! uses its own random table (and SQLite file), so the tests run in parallel.
//!
//! Each case runs on both databases: the `postgres` and `sqlite` modules hold the same tests.

use std::error::Error as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meshwork_event_bus::{
    BoxError, BusError, FailurePolicy, IdempotencyKey, IdempotencyStore, MemoryBus, Message,
    MessageId, Outputs, Publisher, Router, RouterEvent, SqlIdempotencyConfig, SqlIdempotencyStore,
};
use meshwork_retry::Backoff;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use tokio::time::{Instant, sleep};

// ---------------------------------------------------------------- helpers

fn postgres_url() -> String {
    std::env::var("MESHWORK_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A pool on the test database; fails the test, saying how to start PostgreSQL, when it is
/// unreachable.
async fn postgres_pool() -> PgPool {
    let url = postgres_url();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await;
    match pool {
        Ok(pool) => pool,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url} (MESHWORK_POSTGRES_URL): {e}.\n\
             These tests need a real PostgreSQL server with that database. Start it (and create \
             the database) with `bash scripts/services.sh`, or with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` and \
             `createdb -h 127.0.0.1 -U postgres test`, or point MESHWORK_POSTGRES_URL at one."
        ),
    }
}

/// A SQLite database file that is deleted (with its journal files) when dropped.
struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn sqlite_pool() -> (SqlitePool, TempDb) {
    let path = std::env::temp_dir().join(format!("meshwork-idempotency-{}.db", MessageId::new()));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("can't create the SQLite database {}: {e}", path.display()));
    (pool, TempDb(path))
}

/// A fresh table name, so parallel tests never share a table.
fn table() -> String {
    format!("mw_{}", MessageId::new().as_uuid().simple())
}

fn config(table: &str) -> SqlIdempotencyConfig {
    SqlIdempotencyConfig::builder()
        .table(table)
        .build()
        .unwrap()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Waits (up to 30 s) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// A failure policy that redelivers after 100 ms, without in-process retries.
fn quick_redelivery() -> FailurePolicy {
    FailurePolicy::builder()
        .no_in_process_retry()
        .redelivery_backoff(Backoff::constant(Duration::from_millis(100)))
        .build()
        .unwrap()
}

/// The same tests for each database. `$setup` gives `(pool, guard)`; `$ctor` builds the
/// store; `$age` is SQL that ages every mark of a table by two hours.
macro_rules! store_tests {
    ($db:ty, $setup:expr, $ctor:ident, $age:literal) => {
        use super::*;

        type Store = SqlIdempotencyStore<$db>;

        async fn store(pool: &sqlx::Pool<$db>) -> Store {
            Store::$ctor(pool.clone(), config(&table())).await.unwrap()
        }

        async fn count(pool: &sqlx::Pool<$db>, sql: String) -> i64 {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .fetch_one(pool)
                .await
                .unwrap()
        }

        async fn execute(pool: &sqlx::Pool<$db>, sql: String) {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await
                .unwrap();
        }

        /// Drops the tables of a test (PostgreSQL keeps them otherwise).
        async fn drop_tables(pool: &sqlx::Pool<$db>, tables: &[&str]) {
            for t in tables {
                execute(pool, format!("DROP TABLE IF EXISTS \"{t}\"")).await;
            }
        }

        /// A business table with one row per credited message.
        async fn ledger(pool: &sqlx::Pool<$db>) -> String {
            let name = format!("{}_ledger", table());
            execute(
                pool,
                format!(
                    "CREATE TABLE \"{name}\" (message_id TEXT PRIMARY KEY, amount BIGINT NOT NULL)"
                ),
            )
            .await;
            name
        }

        async fn credit(
            tx: &mut sqlx::Transaction<'_, $db>,
            ledger: &str,
            id: MessageId,
            amount: i64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO \"{ledger}\" (message_id, amount) VALUES ($1, $2)"
            )))
            .bind(id.to_string())
            .bind(amount)
            .execute(&mut **tx)
            .await
            .map(drop)
        }

        #[tokio::test]
        async fn a_recorded_key_is_handled_and_recording_twice_is_fine() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let key = IdempotencyKey::new("billing", MessageId::new());
            assert!(!store.is_handled(&key).await.unwrap());
            store.record(&key).await.unwrap();
            store.record(&key).await.unwrap();
            assert!(store.is_handled(&key).await.unwrap());
            let other = IdempotencyKey::new("billing", MessageId::new());
            assert!(!store.is_handled(&other).await.unwrap());
            let other_group = IdempotencyKey::new("shipping", key.message_id());
            assert!(!store.is_handled(&other_group).await.unwrap());
            let rows = count(&pool, format!("SELECT COUNT(*) FROM \"{}\"", store.table())).await;
            assert_eq!(rows, 1);
            drop_tables(&pool, &[store.table()]).await;
        }

        #[tokio::test]
        async fn the_table_is_created_when_missing_unless_turned_off() {
            let (pool, _guard) = $setup.await;
            let name = table();
            let off = SqlIdempotencyConfig::builder()
                .table(name.as_str())
                .create_table(false)
                .build()
                .unwrap();
            let err = Store::$ctor(pool.clone(), off.clone()).await.unwrap_err();
            assert!(matches!(err, BusError::MissingTopology { .. }), "{err:?}");
            assert!(err.to_string().contains(&name), "{err}");

            let a = Store::$ctor(pool.clone(), config(&name)).await.unwrap();
            // Creating again, and using an existing table with creation off, both work.
            let b = Store::$ctor(pool.clone(), config(&name)).await.unwrap();
            let c = Store::$ctor(pool.clone(), off).await.unwrap();
            let key = IdempotencyKey::new("g", MessageId::new());
            a.record(&key).await.unwrap();
            assert!(b.is_handled(&key).await.unwrap());
            assert!(c.is_handled(&key).await.unwrap());
            drop_tables(&pool, &[&name]).await;
        }

        #[tokio::test]
        async fn record_in_commits_together_with_the_business_change() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let ledger = ledger(&pool).await;
            let id = MessageId::new();
            let key = IdempotencyKey::new("ledger", id);

            let mut tx = pool.begin().await.unwrap();
            assert!(store.record_in(&mut tx, &key).await.unwrap());
            credit(&mut tx, &ledger, id, 10).await.unwrap();
            // Not visible before the commit.
            assert!(!store.is_handled(&key).await.unwrap());
            tx.commit().await.unwrap();

            assert!(store.is_handled(&key).await.unwrap());
            assert_eq!(
                count(&pool, format!("SELECT COUNT(*) FROM \"{ledger}\"")).await,
                1
            );
            // The router's own record afterwards is a no-op.
            store.record(&key).await.unwrap();
            drop_tables(&pool, &[store.table(), &ledger]).await;
        }

        #[tokio::test]
        async fn a_failed_handler_rolls_back_both_and_the_retry_records() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let ledger = ledger(&pool).await;
            let id = MessageId::new();
            let key = IdempotencyKey::new("ledger", id);

            // The handler records, writes, then fails: dropping the transaction rolls back.
            let mut tx = pool.begin().await.unwrap();
            assert!(store.record_in(&mut tx, &key).await.unwrap());
            credit(&mut tx, &ledger, id, 10).await.unwrap();
            drop(tx);
            assert!(!store.is_handled(&key).await.unwrap());
            assert_eq!(
                count(&pool, format!("SELECT COUNT(*) FROM \"{ledger}\"")).await,
                0
            );

            // The redelivery is handled again.
            let mut tx = pool.begin().await.unwrap();
            assert!(store.record_in(&mut tx, &key).await.unwrap());
            credit(&mut tx, &ledger, id, 10).await.unwrap();
            tx.commit().await.unwrap();
            assert!(store.is_handled(&key).await.unwrap());

            // A later copy finds it recorded: `false`, and it writes nothing.
            let mut tx = pool.begin().await.unwrap();
            assert!(!store.record_in(&mut tx, &key).await.unwrap());
            tx.rollback().await.unwrap();
            assert_eq!(
                count(&pool, format!("SELECT COUNT(*) FROM \"{ledger}\"")).await,
                1
            );
            drop_tables(&pool, &[store.table(), &ledger]).await;
        }

        #[tokio::test]
        async fn concurrent_duplicates_in_transactions_apply_once() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let ledger = ledger(&pool).await;
            let id = MessageId::new();
            let applied = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (pool, store, ledger, applied) =
                    (pool.clone(), store.clone(), ledger.clone(), applied.clone());
                tasks.push(tokio::spawn(async move {
                    let key = IdempotencyKey::new("ledger", id);
                    let mut tx = pool.begin().await.unwrap();
                    if !store.record_in(&mut tx, &key).await.unwrap() {
                        return;
                    }
                    // Hold the claim a while, so the others wait on it.
                    sleep(Duration::from_millis(100)).await;
                    // The message id is the ledger's primary key: a second apply would fail.
                    credit(&mut tx, &ledger, id, 10).await.unwrap();
                    tx.commit().await.unwrap();
                    applied.fetch_add(1, Ordering::SeqCst);
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(applied.load(Ordering::SeqCst), 1);
            assert_eq!(
                count(&pool, format!("SELECT COUNT(*) FROM \"{ledger}\"")).await,
                1
            );
            drop_tables(&pool, &[store.table(), &ledger]).await;
        }

        #[tokio::test]
        async fn purge_removes_only_marks_older_than_the_ttl() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let old = IdempotencyKey::new("g", MessageId::new());
            store.record(&old).await.unwrap();
            execute(&pool, format!($age, t = store.table())).await;
            let new = IdempotencyKey::new("g", MessageId::new());
            store.record(&new).await.unwrap();

            assert_eq!(store.purge(Duration::from_secs(3 * 3600)).await.unwrap(), 0);
            assert_eq!(store.purge(Duration::from_secs(3600)).await.unwrap(), 1);
            assert!(!store.is_handled(&old).await.unwrap());
            assert!(store.is_handled(&new).await.unwrap());
            let err = store.purge(Duration::ZERO).await.unwrap_err();
            assert!(matches!(err, BusError::Invalid { .. }), "{err:?}");
            drop_tables(&pool, &[store.table()]).await;
        }

        #[tokio::test]
        async fn database_errors_are_backend_errors_with_the_sqlx_error_as_source() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            // The table vanishes under the store.
            drop_tables(&pool, &[store.table()]).await;
            let key = IdempotencyKey::new("g", MessageId::new());
            let err = store.is_handled(&key).await.unwrap_err();
            assert!(matches!(err, BusError::Backend { .. }), "{err:?}");
            assert!(err.to_string().contains(store.table()), "{err}");
            let source = err.source().expect("a source");
            assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source:?}");
            let err = store.record(&key).await.unwrap_err();
            assert!(
                matches!(err, BusError::Backend { .. }),
                "{}",
                error_chain(&err)
            );
        }

        // ------------------------------------------------------------ with the router

        #[tokio::test]
        async fn a_message_published_twice_has_one_side_effect() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let bus = MemoryBus::new();
            let effects = Arc::new(AtomicUsize::new(0));
            let duplicates = Arc::new(AtomicUsize::new(0));
            let (e, d) = (effects.clone(), duplicates.clone());
            let running = Router::builder(bus.clone(), bus.clone())
                .idempotency(store.clone())
                .on_event(move |event: &RouterEvent<'_>| {
                    if let RouterEvent::Duplicate { .. } = event {
                        d.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .handler("charge", "payments", "billing", move |_m: Message| {
                    let e = e.clone();
                    async move {
                        e.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, BoxError>(Outputs::none())
                    }
                })
                .build()
                .unwrap()
                .start();

            let m = Message::new("charge 10");
            bus.publish("payments", vec![m.clone()]).await.unwrap();
            eventually("the first copy handled", || bus.backlog("payments") == 0).await;
            bus.publish("payments", vec![m.clone()]).await.unwrap();
            bus.publish("payments", vec![Message::new("charge 10")])
                .await
                .unwrap();
            eventually("all settled", || bus.backlog("payments") == 0).await;

            assert_eq!(effects.load(Ordering::SeqCst), 2);
            assert_eq!(duplicates.load(Ordering::SeqCst), 1);
            let key = IdempotencyKey::new("billing", m.id());
            assert!(store.is_handled(&key).await.unwrap());
            running.shutdown(Duration::from_secs(5)).await;
            drop_tables(&pool, &[store.table()]).await;
        }

        /// The documented pattern: the handler records in its own transaction with its
        /// business change. A first attempt that fails after writing rolls both back; the
        /// redelivery applies once; a later duplicate is skipped.
        #[tokio::test]
        async fn a_transactional_handler_that_fails_is_handled_again_on_redelivery() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let ledger = ledger(&pool).await;
            let bus = MemoryBus::new();
            let calls = Arc::new(AtomicUsize::new(0));
            let handler = {
                let (pool, store, ledger, calls) =
                    (pool.clone(), store.clone(), ledger.clone(), calls.clone());
                move |m: Message| {
                    let (pool, store, ledger) = (pool.clone(), store.clone(), ledger.clone());
                    let attempt = calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let amount: i64 = std::str::from_utf8(m.payload())?.parse()?;
                        let mut tx = pool.begin().await?;
                        let key = IdempotencyKey::new("ledger", m.id());
                        if !store.record_in(&mut tx, &key).await? {
                            return Ok(Outputs::none());
                        }
                        credit(&mut tx, &ledger, m.id(), amount).await?;
                        if attempt == 0 {
                            // Fails after writing: `tx` is dropped, both roll back.
                            return Err::<Outputs, BoxError>("ledger service hiccup".into());
                        }
                        tx.commit().await?;
                        Ok(Outputs::none())
                    }
                }
            };
            let running = Router::builder(bus.clone(), bus.clone())
                .idempotency(store.clone())
                .policy(quick_redelivery())
                .handler("credit", "payments", "ledger", handler)
                .build()
                .unwrap()
                .start();

            let m = Message::new("10");
            let key = IdempotencyKey::new("ledger", m.id());
            bus.publish("payments", vec![m.clone()]).await.unwrap();
            eventually("handled on redelivery", || {
                calls.load(Ordering::SeqCst) >= 2
            })
            .await;
            eventually("acked", || bus.backlog("payments") == 0).await;
            assert!(store.is_handled(&key).await.unwrap());
            assert_eq!(
                count(&pool, format!("SELECT COUNT(*) FROM \"{ledger}\"")).await,
                1
            );

            // A later duplicate is skipped before the handler.
            bus.publish("payments", vec![m]).await.unwrap();
            eventually("the duplicate acked", || bus.backlog("payments") == 0).await;
            assert_eq!(calls.load(Ordering::SeqCst), 2);
            assert_eq!(
                count(&pool, format!("SELECT COUNT(*) FROM \"{ledger}\"")).await,
                1
            );
            running.shutdown(Duration::from_secs(5)).await;
            drop_tables(&pool, &[store.table(), &ledger]).await;
        }

        #[tokio::test]
        async fn a_failed_first_handling_is_not_recorded_and_is_handled_again() {
            let (pool, _guard) = $setup.await;
            let store = store(&pool).await;
            let bus = MemoryBus::new();
            let calls = Arc::new(AtomicUsize::new(0));
            let effects = Arc::new(AtomicUsize::new(0));
            let (c, e) = (calls.clone(), effects.clone());
            let running = Router::builder(bus.clone(), bus.clone())
                .idempotency(store.clone())
                .policy(quick_redelivery())
                .handler("charge", "payments", "billing", move |_m: Message| {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    let e = e.clone();
                    async move {
                        if n == 0 {
                            return Err::<Outputs, BoxError>("card service down".into());
                        }
                        e.fetch_add(1, Ordering::SeqCst);
                        Ok(Outputs::none())
                    }
                })
                .build()
                .unwrap()
                .start();

            let m = Message::new("charge 10");
            let key = IdempotencyKey::new("billing", m.id());
            bus.publish("payments", vec![m.clone()]).await.unwrap();
            eventually("the failed first attempt", || {
                calls.load(Ordering::SeqCst) >= 1
            })
            .await;
            if effects.load(Ordering::SeqCst) == 0 {
                assert!(
                    !store.is_handled(&key).await.unwrap(),
                    "recorded although it failed"
                );
            }
            eventually("handled on redelivery", || {
                effects.load(Ordering::SeqCst) == 1
            })
            .await;
            eventually("acked", || bus.backlog("payments") == 0).await;
            assert!(store.is_handled(&key).await.unwrap());
            running.shutdown(Duration::from_secs(5)).await;
            drop_tables(&pool, &[store.table()]).await;
        }
    };
}

mod postgres {
    async fn setup() -> (sqlx::PgPool, ()) {
        (super::postgres_pool().await, ())
    }

    store_tests!(
        sqlx::Postgres,
        setup(),
        postgres,
        "UPDATE \"{t}\" SET handled_at = handled_at - interval '2 hours'"
    );

    #[tokio::test]
    async fn an_unreachable_server_is_a_backend_error() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy("postgres://postgres@127.0.0.1:1/test")
            .unwrap();
        let err = Store::postgres(pool, SqlIdempotencyConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, BusError::Backend { .. }), "{err:?}");
        assert!(
            err.to_string().contains("creating the idempotency table"),
            "{err}"
        );
        let source = err.source().expect("a source");
        assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source:?}");
    }
}

mod sqlite {
    store_tests!(
        sqlx::Sqlite,
        sqlite_pool(),
        sqlite,
        "UPDATE \"{t}\" SET handled_at = handled_at - 7200000"
    );
}
