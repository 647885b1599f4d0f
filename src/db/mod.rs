//! sqlx query functions, one file per table group. Nothing here knows about HTTP.

pub mod chain;
pub mod events;
pub mod idempotency;
pub mod merchants;
pub mod payments;
pub mod sessions;
pub mod sub_merchants;
pub mod sweeps;
pub mod webhooks;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// Whose rows: one merchant in one mode. Every merchant-facing query is limited to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub merchant_id: uuid::Uuid,
    pub livemode: bool,
}

/// Which rows a list asks for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: i64,
    pub offset: i64,
}

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database named in `url` when it does not exist yet.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL names no database"))?
        .to_owned();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
        name
    )
    .fetch_one(&mut admin)
    .await?;
    if !exists {
        // A name cannot be a bind parameter: quoted as an identifier instead.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::raw_sql(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await?;
    Ok(())
}

/// A pooled connection idle this long is pinged before it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(10);

pub async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.log_statements(tracing::log::LevelFilter::Trace);
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(5))
        // A connection in steady use is not pinged before each use (a round trip per query);
        // one idle for a while is, since Postgres or the network may have dropped it.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Creates the database if needed, connects, and applies pending migrations.
pub async fn prepare(url: &str) -> anyhow::Result<PgPool> {
    ensure_database(url).await?;
    let pool = connect(url).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// True when the error is a violation of the named constraint.
pub fn is_constraint(e: &sqlx::Error, name: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some(name))
}

/// Whether a PostgreSQL server answers at the URL's host (any database will do).
pub async fn connect_admin_probe(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?.database("postgres");
    let conn = tokio::time::timeout(Duration::from_secs(3), options.connect()).await??;
    conn.close().await?;
    Ok(())
}
