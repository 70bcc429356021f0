//! The store: the only code that runs SQL. One set of semantics on SQLite (a WAL file, the
//! embedded default) and PostgreSQL (by URL), through sqlx's `Any` driver with a migration set
//! per backend. Dates are ISO text and records JSON text, so both backends see the same values.
//!
//! Idempotency lives here: a decision's key is the primary key of `decisions`, and a day's
//! decisions, drafts, recommendations, outbox rows and watermark row are written in one
//! transaction.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, SqlSafeStr, SqlStr};

mod contacts;
mod days;
mod exchange;
mod failover;
mod office;
mod outbox;
mod portal;
mod register;
mod sessions;
mod sharing;
mod staff;

pub use contacts::{PortalPreferences, PushSubscription};
pub use days::{DayCommit, StoredDecision};
pub use exchange::{
    Agency, AgencyEvent, AgencySpec, Interest, InterestSpec, Provision, Pseudonyms, Stream,
    StreamProgress,
};
pub use office::{
    check_transition, role_ja, Application, ApplicationCount, ApplicationStatus, Correction,
    StatusChange, StatusEntry, StatusOutcome, TransitionError, MAX_STATUS_MESSAGE,
};
pub use outbox::{ApplicationNews, OutboxItem, OutboxRow, OutboxState, Settle};
pub use portal::*;
pub use register::{IngestBatch, IngestKind, IngestOutcome, RegisterChanges};
pub use sessions::PortalSession;
pub use sharing::{
    DueRevocation, Grant, NewGrant, PartySpec, Spend, TokenOutcome, TokenRequest, DETAILS_TYPE,
};
pub use staff::{
    Handled, ResidentNotice, ResidentOverview, WorkItem, WorkKind, WorkList, MAX_STAFF_NOTE,
    QUEUE_PAGE,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the database {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error while {what}: {source}")]
    Query {
        what: &'static str,
        source: sqlx::Error,
    },
    #[error("stored data is unreadable ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A failure passed on by a part of the store that runs apart (the token writer).
    #[error("database error while {what}: {detail}")]
    Failed { what: &'static str, detail: String },
    #[error("no database at {path}: `oshirase ingest` or `oshirase run` creates one")]
    Missing { path: String },
    /// Another ingest committed after this one read the register: its state may be stale.
    /// Read again and retry.
    #[error("another ingest (batch {committed}) committed after this one read the register (batch {read})")]
    Conflict { read: i64, committed: i64 },
}

type Result<T> = std::result::Result<T, StoreError>;

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// A value bound in a multi-row insert.
enum Val {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A URL with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where write transactions begin (`begin_write`): on SQLite one connection, so that
    /// this process's writers take turns without the busy handler; on PostgreSQL the pool.
    writer: AnyPool,
    backend: Backend,
    /// The data-item dictionary and purposes: with them an ingest records the items it
    /// changed and writes the agencies' events (`Store::with_exchange`).
    exchange: Option<std::sync::Arc<oshirase_engine::purposes::Exchange>>,
    /// SQLite's token requests go to their writer thread (`sharing::TokenWriter`).
    tokens: Option<sharing::TokenWriter>,
}

/// What the store keeps of a secret it must recognise but never give away (a session id,
/// an authorization code, a refresh token): its SHA-256, in hex.
pub fn secret_digest(secret: &str) -> String {
    hash_hex(secret.as_bytes())
}

/// Outbox times are UTC with a fixed format, so that text comparison is time order on both
/// backends.
pub fn utc_text(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A time this store wrote with `utc_text`.
fn parse_time(what: &'static str, t: &str) -> Result<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(t).map_err(|e| StoreError::Corrupt {
        what,
        detail: format!("{t:?}: {e}"),
    })
}

fn now_text(now: DateTime<FixedOffset>) -> String {
    now.to_rfc3339()
}

fn hash_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex. Table-driven: one `format!` per byte was a visible share of a large ingest.
fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

/// A pool of `max` connections; on SQLite each set up for WAL, waiting for the write lock,
/// foreign keys and a large page cache. Following a primary among several hosts, a
/// connection opened before the primary moved is dropped instead of used.
fn pool_options(
    backend: Backend,
    max: u32,
    primary: Option<std::sync::Arc<failover::Primary>>,
) -> AnyPoolOptions {
    let mut options = AnyPoolOptions::new().max_connections(max);
    if let Some(primary) = primary {
        options = options.before_acquire(move |_, meta| {
            let fresh = !primary.stale(meta.age);
            Box::pin(async move { Ok(fresh) })
        });
    }
    options.after_connect(move |conn, _| {
        Box::pin(async move {
            if backend == Backend::Sqlite {
                // WAL lets readers work during a day's write; the busy timeout lets a
                // second process wait for the lock instead of failing.
                sqlx::query("PRAGMA journal_mode=WAL")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA busy_timeout=30000")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("PRAGMA foreign_keys=ON")
                    .execute(&mut *conn)
                    .await?;
                // 64 MiB of page cache (the default is 2 MB): a large ingest's
                // transaction otherwise spills pages to the file before it commits.
                sqlx::query("PRAGMA cache_size=-65536")
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        })
    })
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates. `url` is `sqlite://PATH`,
    /// `sqlite::memory:`, a plain file path, or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let url = if url.contains("://") || url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let open_err = |source| StoreError::Open {
            url: redact(&url),
            source,
        };
        let mut connect_url = url.clone();
        if backend == Backend::Sqlite
            && !connect_url.contains("mode=")
            && !connect_url.contains(":memory:")
        {
            connect_url.push_str(if connect_url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        // Several hosts: the first that takes writes, followed when it moves (`failover`).
        let primary =
            match failover::hosts(&url) {
                Some(hosts) => Some(failover::Primary::find(hosts).await.map_err(|detail| {
                    StoreError::Failed {
                        what: "finding the database primary",
                        detail,
                    }
                })?),
                None => None,
            };
        let options = match &primary {
            Some(p) => p.options(),
            None => AnyConnectOptions::from_str(&connect_url).map_err(open_err)?,
        };
        // One direct attempt first: a pool would keep retrying an unreachable server until its
        // timeout, where the operator wants the reason at once.
        use sqlx::{ConnectOptions, Connection};
        options
            .connect()
            .await
            .map_err(open_err)?
            .close()
            .await
            .map_err(open_err)?;
        let max = if backend == Backend::Sqlite { 4 } else { 8 };
        let pool = pool_options(backend, max, primary.clone())
            // Opening a PostgreSQL connection takes about 0.1 s: keep them all open, so that
            // an event never waits for one (the pool otherwise opened one now and then in
            // the middle of a run, the slowest events of the event benchmark).
            .min_connections(if backend == Backend::Postgres { max } else { 0 })
            .connect_with(options.clone())
            .await
            .map_err(open_err)?;
        // SQLite lets one transaction write at a time. Writers of this process queue for one
        // connection of their own, in order, instead of each taking a pooled connection and
        // sleeping in SQLite's busy handler (1, 2, 5 … 100 ms steps) while the lock is free
        // again. Other processes on the same file still wait in the busy handler. A memory
        // database is one per connection, so it keeps the one pool.
        let writer = if backend == Backend::Sqlite && !connect_url.contains(":memory:") {
            pool_options(backend, 1, None)
                .connect_with(options)
                .await
                .map_err(open_err)?
        } else {
            pool.clone()
        };
        let migrate = |source| StoreError::Migrate {
            url: redact(&url),
            source,
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite")
                .run(&pool)
                .await
                .map_err(migrate)?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres")
                .run(&pool)
                .await
                .map_err(migrate)?,
        }
        if let Some(p) = primary {
            p.watch(vec![pool.clone()]);
        }
        let mut store = Store {
            pool,
            writer,
            backend,
            exchange: None,
            tokens: None,
        };
        if backend == Backend::Sqlite && !connect_url.contains(":memory:") {
            store.tokens = Some(sharing::TokenWriter::start(store.clone())?);
        }
        Ok(store)
    }

    /// The store that records, with every ingest, which register items changed for whom and
    /// writes the change events of the agencies whose interest covers them.
    pub fn with_exchange(
        mut self,
        exchange: std::sync::Arc<oshirase_engine::purposes::Exchange>,
    ) -> Store {
        self.exchange = Some(exchange);
        self
    }

    pub fn exchange(&self) -> Option<&oshirase_engine::purposes::Exchange> {
        self.exchange.as_deref()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// A transaction that writes. On SQLite it takes the write lock as it begins
    /// (`BEGIN IMMEDIATE`), waiting for another writer up to the busy timeout: a deferred
    /// transaction that reads first and then writes would get SQLITE_BUSY at its first
    /// write, at once, because SQLite cannot wait there without risking a deadlock.
    /// PostgreSQL locks rows, not the database: a plain `BEGIN`.
    async fn begin_write(
        &self,
        what: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.writer.begin().await,
        }
        .map_err(q(what))
    }

    /// SQL is written once with `$1` placeholders; SQLite spells them `?1`.
    fn sql(&self, sql: &'static str) -> SqlStr {
        match self.backend {
            Backend::Postgres => sql.into_sql_str(),
            Backend::Sqlite => self.sql_built(sql.to_owned()),
        }
    }

    /// `sql` for a statement put together from fixed text of this crate (a shared column
    /// list, a subquery): never from a value, so it stays safe.
    fn sql_built(&self, sql: String) -> SqlStr {
        match self.backend {
            Backend::Postgres => AssertSqlSafe(sql).into_sql_str(),
            Backend::Sqlite => AssertSqlSafe(sql.replace('$', "?")).into_sql_str(),
        }
    }

    /// Appends the `n`th placeholder of a statement built at run time: `$n`, or an anonymous
    /// `?` on SQLite, which looks numbered parameters up one by one (quadratic in a statement
    /// of thousands).
    fn push_placeholder(&self, sql: &mut String, n: usize) {
        match self.backend {
            Backend::Postgres => {
                use std::fmt::Write;
                let _ = write!(sql, "${n}");
            }
            Backend::Sqlite => sql.push('?'),
        }
    }

    /// `head` followed by `n` placeholders separated by commas (numbered from 1) and `)`:
    /// the `IN (…)` list of a statement built at run time from fixed text.
    fn in_list(&self, head: &str, n: usize) -> String {
        let mut sql = String::from(head);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push_placeholder(&mut sql, i + 1);
        }
        sql.push(')');
        sql
    }

    /// The rows of `head` (a query ending in `IN (`) for all of `keys`, a thousand keys a
    /// statement.
    async fn fetch_in(
        &self,
        head: &str,
        keys: &[String],
        what: &'static str,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        let mut rows = Vec::new();
        for chunk in keys.chunks(1000) {
            let mut query = sqlx::query(AssertSqlSafe(self.in_list(head, chunk.len())));
            for k in chunk {
                query = query.bind(k.clone());
            }
            rows.extend(query.fetch_all(&self.pool).await.map_err(q(what))?);
        }
        Ok(rows)
    }

    /// Inserts `rows` with multi-row `VALUES` lists, a thousand rows a statement: one round
    /// trip per thousand instead of per row. The SQL is fixed text plus placeholders only.
    async fn insert_rows(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        head: &'static str,
        tail: &'static str,
        rows: Vec<Vec<Val>>,
        what: &'static str,
    ) -> Result<u64> {
        let mut affected = 0;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            // The rows of this statement, taken by value: each value moves into the query.
            let chunk: Vec<Vec<Val>> = rows.by_ref().take(1000).collect();
            affected += self
                .values_statement(head, tail, chunk)
                .execute(&mut **tx)
                .await
                .map_err(q(what))?
                .rows_affected();
        }
        Ok(affected)
    }

    /// `head (…), (…) tail` with a placeholder for each value of `rows` (at most a thousand),
    /// the values bound.
    fn values_statement(
        &self,
        head: &'static str,
        tail: &'static str,
        rows: Vec<Vec<Val>>,
    ) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let cols = rows.first().map_or(0, Vec::len);
        let mut sql = String::with_capacity(head.len() + tail.len() + rows.len() * cols * 7);
        sql.push_str(head);
        for i in 0..rows.len() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            for c in 0..cols {
                if c > 0 {
                    sql.push_str(", ");
                }
                self.push_placeholder(&mut sql, i * cols + c + 1);
            }
            sql.push(')');
        }
        sql.push_str(tail);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for row in rows {
            for v in row {
                query = match v {
                    Val::Text(s) => query.bind(s),
                    Val::OptText(s) => query.bind(s),
                    Val::Int(n) => query.bind(n),
                };
            }
        }
        query
    }
}
