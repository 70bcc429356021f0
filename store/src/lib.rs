//! The store: the only code that runs SQL. One set of semantics on SQLite (a WAL file, the
//! embedded default) and PostgreSQL (by URL), through sqlx's `Any` driver with a migration set
//! per backend. Dates are ISO text and records JSON text, so both backends see the same values.
//!
//! Idempotency lives here: a decision's key is the primary key of `decisions`, and a day's
//! decisions, drafts, recommendations, outbox rows and watermark row are written in one
//! transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Row, SqlSafeStr, SqlStr};

use oshirase_engine::eval::Decision;
use oshirase_engine::population::{EventKind, LifeEvent};
use oshirase_engine::resident::Resident;

mod contacts;
mod portal;

pub use contacts::{PortalPreferences, PushSubscription};

pub use portal::*;

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
}

type Result<T> = std::result::Result<T, StoreError>;

fn q(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { what, source }
}

/// An outbox row claimed by a worker, with the decision it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub decision_key: String,
    pub recipient: String,
    pub channel: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub deadline: Option<NaiveDate>,
    /// The decision as stored (title, rendered messages, recipients, …).
    pub decision: serde_json::Value,
    /// The recipient's register record now (contact points, consents), if they are on it.
    pub resident: Option<Resident>,
    /// The preferences the recipient saved in the portal, if any; they override the record's.
    pub preferences: Option<PortalPreferences>,
}

/// How an attempt ended, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Delivered,
    /// Try again at this time (UTC text from `utc_text`).
    RetryAt {
        at: String,
        reason: String,
    },
    /// Given up: the row is a dead letter with the reason.
    Dead {
        reason: String,
    },
    /// The address or subscription no longer exists.
    Gone {
        reason: String,
    },
    /// Not an attempt: held until `at` (quiet hours, the daily cap); attempts are unchanged.
    Deferred {
        at: String,
        reason: String,
    },
    /// Not sent: the recipient no longer accepts this channel (a preference set after the
    /// decision). The portal still has the notice.
    Muted {
        reason: String,
    },
}

/// An outbox row for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub decision_key: String,
    pub recipient: String,
    pub channel: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
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

/// What some ingest batches changed in the register (`Store::register_changes`).
#[derive(Debug, Default)]
pub struct RegisterChanges {
    /// The records the batches wrote, new or new versions.
    pub residents: Vec<Resident>,
    /// Every stored event of the people concerned, whichever batch wrote it.
    pub events: Vec<LifeEvent>,
}

fn resident_from_row(row: &sqlx::any::AnyRow) -> Result<Resident> {
    let id: String = row.try_get("id").map_err(q("reading residents"))?;
    let record: String = row.try_get("record").map_err(q("reading residents"))?;
    resident_from_json(&id, &record)
}

fn resident_from_json(id: &str, record: &str) -> Result<Resident> {
    serde_json::from_str(record).map_err(|e| StoreError::Corrupt {
        what: "resident record",
        detail: format!("{id}: {e}"),
    })
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<LifeEvent> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "life event",
        detail,
    };
    let get = |c: &str| {
        row.try_get::<String, _>(c)
            .map_err(q("reading life events"))
    };
    let kind: EventKind = serde_json::from_value(serde_json::Value::String(get("kind")?))
        .map_err(|e| corrupt(e.to_string()))?;
    let subject = oshirase_engine::ids::ResidentId::parse(&get("subject")?)
        .map_err(|e| corrupt(e.to_string()))?;
    let date = get("date")?
        .parse()
        .map_err(|e: chrono::ParseError| corrupt(e.to_string()))?;
    let recorded = get("recorded")?
        .parse()
        .map_err(|e: chrono::ParseError| corrupt(e.to_string()))?;
    Ok(LifeEvent {
        kind,
        subject,
        date,
        recorded,
        id: get("id")?,
    })
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
    backend: Backend,
}

/// What one ingest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// `None` when the same content was ingested before: nothing changed.
    pub batch_id: Option<i64>,
    pub rows_changed: usize,
    pub events: usize,
}

/// What committing one day did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DayCommit {
    /// Decisions written now.
    pub inserted: usize,
    /// Decisions whose key was already stored (a re-run, or another instance).
    pub already_decided: usize,
}

/// A stored decision, as tests and operators read it back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredDecision {
    pub key: String,
    pub rule: String,
    pub rule_set: String,
    pub notify_on: String,
    pub critical: bool,
}

/// Outbox times are UTC with a fixed format, so that text comparison is time order on both
/// backends.
pub fn utc_text(t: DateTime<FixedOffset>) -> String {
    t.with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_text(now: DateTime<FixedOffset>) -> String {
    now.to_rfc3339()
}

fn hash_hex(bytes: &[u8]) -> String {
    // Table-driven: one `format!` per byte was a visible share of a large ingest.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
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
        let options = AnyConnectOptions::from_str(&connect_url).map_err(open_err)?;
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
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            // Opening a PostgreSQL connection takes about 0.1 s: keep them all open, so that
            // an event never waits for one (the pool otherwise opened one now and then in
            // the middle of a run, the slowest events of the event benchmark).
            .min_connections(if backend == Backend::Postgres { max } else { 0 })
            .after_connect(move |conn, _| {
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
            .connect_with(options)
            .await
            .map_err(open_err)?;
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
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// SQL is written once with `$1` placeholders; SQLite spells them `?1`.
    fn sql(&self, sql: &'static str) -> SqlStr {
        match self.backend {
            Backend::Postgres => sql.into_sql_str(),
            // Only fixed SQL from this file comes here; the replacement keeps it fixed.
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
        while let Some(first) = rows.peek() {
            let cols = first.len();
            // The rows of this statement, taken by value: each value moves into the query.
            let chunk: Vec<Vec<Val>> = rows.by_ref().take(1000).collect();
            let mut sql = String::with_capacity(head.len() + tail.len() + chunk.len() * cols * 7);
            sql.push_str(head);
            for i in 0..chunk.len() {
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
            for row in chunk {
                for v in row {
                    query = match v {
                        Val::Text(s) => query.bind(s),
                        Val::OptText(s) => query.bind(s),
                        Val::Int(n) => query.bind(n),
                    };
                }
            }
            affected += query
                .execute(&mut **tx)
                .await
                .map_err(q(what))?
                .rows_affected();
        }
        Ok(affected)
    }

    /// Every stored resident record, in id order.
    pub async fn residents(&self) -> Result<Vec<Resident>> {
        let rows = sqlx::query("SELECT id, record FROM residents ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading residents"))?;
        rows.iter().map(resident_from_row).collect()
    }

    /// The stored records with one of `ids`, and every stored record (any status) of the
    /// `households`, each once, in id order: what a change feed reads instead of the whole
    /// register.
    pub async fn residents_named(
        &self,
        ids: &[String],
        households: &[String],
    ) -> Result<Vec<Resident>> {
        let mut records: BTreeMap<String, String> = BTreeMap::new();
        for (head, keys) in [
            ("SELECT id, record FROM residents WHERE id IN (", ids),
            (
                "SELECT id, record FROM residents WHERE household_id IN (",
                households,
            ),
        ] {
            for row in self.fetch_in(head, keys, "reading residents").await? {
                let id: String = row.try_get("id").map_err(q("reading residents"))?;
                let record: String = row.try_get("record").map_err(q("reading residents"))?;
                records.insert(id, record);
            }
        }
        records
            .into_iter()
            .map(|(id, record)| resident_from_json(&id, &record))
            .collect()
    }

    /// Every stored life event.
    pub async fn events(&self) -> Result<Vec<LifeEvent>> {
        let rows =
            sqlx::query("SELECT id, kind, subject, date, recorded FROM life_events ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(q("reading life events"))?;
        rows.iter().map(event_from_row).collect()
    }

    /// What the ingest batches after `after` up to `upto` changed: the records they wrote and
    /// every stored event (of any batch) of the people those records or their new events
    /// concern. With these `Population::apply` brings a register read at `after` up to date.
    pub async fn register_changes(&self, after: i64, upto: i64) -> Result<RegisterChanges> {
        let rows = sqlx::query(self.sql(
            "SELECT id, record FROM residents WHERE batch_id > $1 AND batch_id <= $2 ORDER BY id",
        ))
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading changed residents"))?;
        let residents = rows
            .iter()
            .map(resident_from_row)
            .collect::<Result<Vec<_>>>()?;
        let mut subjects: BTreeSet<String> =
            residents.iter().map(|r| r.id.as_str().to_owned()).collect();
        for row in sqlx::query(
            self.sql("SELECT subject FROM life_events WHERE batch_id > $1 AND batch_id <= $2"),
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading new life events"))?
        {
            subjects.insert(row.try_get("subject").map_err(q("reading life events"))?);
        }
        let subjects: Vec<String> = subjects.into_iter().collect();
        let events = self
            .fetch_in(
                "SELECT id, kind, subject, date, recorded FROM life_events WHERE subject IN (",
                &subjects,
                "reading life events",
            )
            .await?
            .iter()
            .map(event_from_row)
            .collect::<Result<_>>()?;
        Ok(RegisterChanges { residents, events })
    }

    /// The last applied `seq` of a change feed source.
    pub async fn feed_position(&self, source: &str) -> Result<Option<i64>> {
        let row = sqlx::query(self.sql("SELECT last_seq FROM feed_positions WHERE source = $1"))
            .bind(source.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading the feed position"))?;
        row.map(|r| r.try_get::<i64, _>("last_seq"))
            .transpose()
            .map_err(q("reading the feed position"))
    }

    /// The stored hash of each record of `state` that is stored. A small state (a change
    /// feed's records) is looked up by id; a large one (a snapshot) reads every hash at once.
    async fn stored_hashes(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        state: &[Resident],
    ) -> Result<HashMap<String, String>> {
        let read = |rows: Vec<sqlx::any::AnyRow>, into: &mut HashMap<String, String>| {
            for r in rows {
                into.insert(
                    r.try_get("id").map_err(q("reading resident hashes"))?,
                    r.try_get("record_hash")
                        .map_err(q("reading resident hashes"))?,
                );
            }
            Ok::<_, StoreError>(())
        };
        let mut stored = HashMap::new();
        if state.len() > 10_000 {
            let rows = sqlx::query("SELECT id, record_hash FROM residents")
                .fetch_all(&mut **tx)
                .await
                .map_err(q("reading resident hashes"))?;
            read(rows, &mut stored)?;
            return Ok(stored);
        }
        for chunk in state.chunks(1000) {
            let sql = self.in_list(
                "SELECT id, record_hash FROM residents WHERE id IN (",
                chunk.len(),
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                query = query.bind(r.id.as_str().to_owned());
            }
            let rows = query
                .fetch_all(&mut **tx)
                .await
                .map_err(q("reading resident hashes"))?;
            read(rows, &mut stored)?;
        }
        Ok(stored)
    }

    /// Writes one ingest in one transaction: the new state of every changed resident (the
    /// version it replaces goes to `resident_history`), the households they touch, the life
    /// events, and the batch row. The same content (by hash) twice is a no-op. `state` may be
    /// the whole register (a snapshot) or only the records a change feed touched.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_ingest(
        &self,
        source: &str,
        kind: &str,
        content: &[u8],
        as_of: Option<NaiveDate>,
        rows_in: usize,
        state: &[Resident],
        events: &[LifeEvent],
        feed_position: Option<i64>,
        now: DateTime<FixedOffset>,
    ) -> Result<IngestOutcome> {
        let content_hash = hash_hex(content);
        let mut tx = self.pool.begin().await.map_err(q("starting an ingest"))?;
        let seen = sqlx::query(self.sql("SELECT id FROM ingest_batches WHERE content_hash = $1"))
            .bind(content_hash.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("checking for a repeated ingest"))?;
        if seen.is_some() {
            return Ok(IngestOutcome {
                batch_id: None,
                rows_changed: 0,
                events: 0,
            });
        }
        let stored = self.stored_hashes(&mut tx, state).await?;
        // Serializing and hashing each record is independent of the others: on every core.
        let encoded: Vec<(String, String)> = state
            .par_iter()
            .map(|r| {
                let json = serde_json::to_string(r).map_err(|e| StoreError::Corrupt {
                    what: "resident record",
                    detail: e.to_string(),
                })?;
                let h = hash_hex(json.as_bytes());
                Ok((json, h))
            })
            .collect::<Result<_>>()?;
        let mut changed = Vec::new();
        for (r, (json, h)) in state.iter().zip(encoded) {
            match stored.get(r.id.as_str()) {
                Some(old) if *old == h => {}
                old => changed.push((r, json, h, old.is_some())),
            }
        }
        drop(stored);
        let batch_id: i64 = sqlx::query(self.sql(
            "INSERT INTO ingest_batches (source, kind, content_hash, as_of, rows_in, rows_changed, events, applied_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        ))
        .bind(source.to_owned())
        .bind(kind.to_owned())
        .bind(content_hash)
        .bind(as_of.map(|d| d.to_string()))
        .bind(rows_in as i64)
        .bind(changed.len() as i64)
        .bind(events.len() as i64)
        .bind(now_text(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(q("recording the ingest batch"))?
        .try_get("id")
        .map_err(q("recording the ingest batch"))?;

        let mut touched: BTreeSet<&str> = BTreeSet::new();
        let mut resident_rows = Vec::with_capacity(changed.len());
        let mut replaced: Vec<String> = Vec::new();
        let rows_changed = changed.len();
        for (r, json, h, existed) in changed {
            let id = r.id.as_str().to_owned();
            if existed {
                replaced.push(id.clone());
            }
            resident_rows.push(vec![
                Val::Text(id),
                Val::OptText(r.household_id().map(|h| h.as_str().to_owned())),
                Val::Text(r.status.name().to_owned()),
                Val::Text(json),
                Val::Text(h),
                Val::Int(batch_id),
            ]);
            if let Some(h) = r.household_id() {
                touched.insert(h.as_str());
            }
        }
        // History keeps the versions that were replaced, each with the batch that wrote it;
        // the current version is the resident row. A first load replaces nothing and so
        // writes no history: copying a million records into it was a third of the work.
        for chunk in replaced.chunks(1000) {
            let sql = self.in_list(
                "INSERT INTO resident_history (resident_id, batch_id, record)
                 SELECT id, batch_id, record FROM residents WHERE id IN (",
                chunk.len(),
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.clone());
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(q("writing resident history"))?;
        }
        self.insert_rows(
            &mut tx,
            "INSERT INTO residents (id, household_id, status, record, record_hash, batch_id) VALUES ",
            " ON CONFLICT (id) DO UPDATE SET household_id = excluded.household_id, status = excluded.status,
               record = excluded.record, record_hash = excluded.record_hash, batch_id = excluded.batch_id",
            resident_rows,
            "writing residents",
        )
        .await?;
        // Households touched by this batch, recomputed from the new state.
        let mut households: BTreeMap<&str, (Option<&str>, i64)> = BTreeMap::new();
        for r in state.iter().filter(|r| r.is_current()) {
            if let Some(h) = r.household_id().filter(|h| touched.contains(h.as_str())) {
                let e = households.entry(h.as_str()).or_insert((None, 0));
                e.1 += 1;
                if r.is_householder() {
                    e.0 = Some(r.id.as_str());
                }
            }
        }
        let household_rows = touched
            .iter()
            .map(|id| {
                let (head, members) = households.get(id).copied().unwrap_or((None, 0));
                vec![
                    Val::Text((*id).to_owned()),
                    Val::OptText(head.map(str::to_owned)),
                    Val::Int(members),
                    Val::Int(batch_id),
                ]
            })
            .collect();
        self.insert_rows(
            &mut tx,
            "INSERT INTO households (id, householder_id, members, batch_id) VALUES ",
            " ON CONFLICT (id) DO UPDATE SET householder_id = excluded.householder_id,
               members = excluded.members, batch_id = excluded.batch_id",
            household_rows,
            "writing households",
        )
        .await?;
        let event_rows = events
            .iter()
            .map(|e| {
                vec![
                    Val::Text(e.id.clone()),
                    Val::Text(e.kind.name().to_owned()),
                    Val::Text(e.subject.as_str().to_owned()),
                    Val::Text(e.date.to_string()),
                    Val::Text(e.recorded.to_string()),
                    Val::Int(batch_id),
                ]
            })
            .collect();
        let new_events = self
            .insert_rows(
                &mut tx,
                "INSERT INTO life_events (id, kind, subject, date, recorded, batch_id) VALUES ",
                " ON CONFLICT (id) DO NOTHING",
                event_rows,
                "writing life events",
            )
            .await? as usize;
        if let Some(seq) = feed_position {
            sqlx::query(self.sql(
                "INSERT INTO feed_positions (source, last_seq) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET last_seq = excluded.last_seq",
            ))
            .bind(source.to_owned())
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(q("writing the feed position"))?;
        }
        tx.commit().await.map_err(q("committing the ingest"))?;
        Ok(IngestOutcome {
            batch_id: Some(batch_id),
            rows_changed,
            events: new_events,
        })
    }

    /// The newest ingest batch id (0 when nothing was ingested): the scheduler re-evaluates
    /// today when it grows.
    pub async fn latest_batch(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM ingest_batches")
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the latest batch"))?;
        row.try_get::<i64, _>("id")
            .map_err(q("reading the latest batch"))
    }

    /// Records a rule-set version (content hash) the first time it is used.
    pub async fn record_rule_set(
        &self,
        version: &str,
        rules: usize,
        source: &str,
        now: DateTime<FixedOffset>,
    ) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "INSERT INTO rule_sets (version, rules, source, loaded_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (version) DO NOTHING",
        ))
        .bind(version.to_owned())
        .bind(rules as i64)
        .bind(source.to_owned())
        .bind(now_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("recording the rule set"))?;
        Ok(done.rows_affected() == 1)
    }

    /// The last day the scheduler completed.
    pub async fn watermark(&self) -> Result<Option<NaiveDate>> {
        let row = sqlx::query("SELECT MAX(day) AS day FROM scheduler_days")
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the watermark"))?;
        let day: Option<String> = row.try_get("day").map_err(q("reading the watermark"))?;
        day.map(|d| {
            d.parse()
                .map_err(|e: chrono::ParseError| StoreError::Corrupt {
                    what: "watermark",
                    detail: e.to_string(),
                })
        })
        .transpose()
    }

    /// Writes a day's decisions with their drafts, recommendations and outbox rows, and the
    /// day's watermark row, in ONE transaction. A key already stored is left alone: re-runs
    /// and concurrent instances never decide twice.
    pub async fn commit_day(
        &self,
        day: NaiveDate,
        rule_set: &str,
        decisions: impl IntoIterator<Item = &Decision>,
        now: DateTime<FixedOffset>,
    ) -> Result<DayCommit> {
        let due = utc_text(now);
        let now = now_text(now);
        let mut tx = self.pool.begin().await.map_err(q("starting a day"))?;
        let insert = self.sql(
            "INSERT INTO decisions (key, rule, rule_version, rule_set, subject, occurrence, notify_on, deadline,
               staff_review, critical, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (key) DO NOTHING",
        );
        let draft =
            self.sql("INSERT INTO drafts (decision_key, fields, updated_at) VALUES ($1, $2, $3)");
        let rec = self.sql("INSERT INTO recommendations (decision_key, rule_id) VALUES ($1, $2)");
        let outbox = self.sql(
            "INSERT INTO outbox (decision_key, recipient, channel, next_attempt_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (decision_key, recipient, channel) DO NOTHING",
        );
        let mut commit = DayCommit::default();
        // Keys in one order everywhere, so two instances never deadlock on each other.
        let mut sorted: Vec<&Decision> = decisions.into_iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        for d in sorted {
            let body = serde_json::to_string(d).map_err(|e| StoreError::Corrupt {
                what: "decision",
                detail: e.to_string(),
            })?;
            let done = sqlx::query(insert.clone())
                .bind(d.key.as_str().to_owned())
                .bind(d.rule.as_str().to_owned())
                .bind(i64::from(d.rule_version))
                .bind(rule_set.to_owned())
                .bind(d.subject.as_str().to_owned())
                .bind(d.occurrence.to_string())
                .bind(d.notify_on.to_string())
                .bind(d.deadline.map(|x| x.to_string()))
                .bind(d.staff_review.clone())
                .bind(i64::from(d.critical))
                .bind(body)
                .bind(now.clone())
                .execute(&mut *tx)
                .await
                .map_err(q("writing a decision"))?;
            if done.rows_affected() == 0 {
                commit.already_decided += 1;
                continue;
            }
            commit.inserted += 1;
            let fields = serde_json::to_string(&d.prefill).map_err(|e| StoreError::Corrupt {
                what: "draft",
                detail: e.to_string(),
            })?;
            sqlx::query(draft.clone())
                .bind(d.key.as_str().to_owned())
                .bind(fields)
                .bind(now.clone())
                .execute(&mut *tx)
                .await
                .map_err(q("writing a draft"))?;
            for r in &d.recommend {
                sqlx::query(rec.clone())
                    .bind(d.key.as_str().to_owned())
                    .bind(r.as_str().to_owned())
                    .execute(&mut *tx)
                    .await
                    .map_err(q("writing a recommendation"))?;
            }
            let mut rows: Vec<(String, &str)> = Vec::new();
            for r in &d.recipients {
                for c in &r.channels {
                    rows.push((r.id.as_str().to_owned(), c.name()));
                }
            }
            if d.staff_review.is_some() {
                rows.push(("staff".to_owned(), "staff"));
            }
            for (recipient, channel) in rows {
                sqlx::query(outbox.clone())
                    .bind(d.key.as_str().to_owned())
                    .bind(recipient)
                    .bind(channel.to_owned())
                    .bind(due.clone())
                    .execute(&mut *tx)
                    .await
                    .map_err(q("writing an outbox row"))?;
            }
        }
        sqlx::query(self.sql(
            "INSERT INTO scheduler_days (day, rule_set, decisions, completed_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (day) DO UPDATE SET decisions = scheduler_days.decisions + excluded.decisions,
               rule_set = excluded.rule_set, completed_at = excluded.completed_at",
        ))
        .bind(day.to_string())
        .bind(rule_set.to_owned())
        .bind(commit.inserted as i64)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(q("writing the watermark"))?;
        tx.commit().await.map_err(q("committing the day"))?;
        Ok(commit)
    }

    /// Claims up to `limit` due rows of `channel` for `worker` until `lease_until`. On
    /// PostgreSQL rows locked by another claimer are skipped (`FOR UPDATE SKIP LOCKED`); SQLite
    /// serializes writers, so its claims never overlap either.
    pub async fn claim_outbox(
        &self,
        channel: &str,
        worker: &str,
        limit: i64,
        now: DateTime<FixedOffset>,
        lease_until: DateTime<FixedOffset>,
    ) -> Result<Vec<OutboxItem>> {
        let sql = match self.backend {
            Backend::Postgres => self.sql(
                // `= ANY(ARRAY(…))` keeps the planner on the primary key instead of hashing
                // the whole table against the batch.
                "UPDATE outbox SET lease_until = $1, leased_by = $2 WHERE id = ANY(ARRAY(
                   SELECT id FROM outbox WHERE channel = $3 AND state = 'pending' AND next_attempt_at <= $4
                     AND (lease_until IS NULL OR lease_until < $4)
                   ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED)) RETURNING id",
            ),
            Backend::Sqlite => self.sql(
                "UPDATE outbox SET lease_until = $1, leased_by = $2 WHERE id IN (
                   SELECT id FROM outbox WHERE channel = $3 AND state = 'pending' AND next_attempt_at <= $4
                     AND (lease_until IS NULL OR lease_until < $4)
                   ORDER BY id LIMIT $5) RETURNING id",
            ),
        };
        let lease = utc_text(lease_until);
        let claimed: Vec<i64> = sqlx::query(sql)
            .bind(lease)
            .bind(worker.to_owned())
            .bind(channel.to_owned())
            .bind(utc_text(now))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .and_then(|rows| rows.iter().map(|r| r.try_get("id")).collect())
            .map_err(q("claiming outbox rows"))?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // The claimed rows with their decisions, the recipients' records and saved preferences
        // in one read by id (the worker's checks then need no query per row).
        let mut sql = self.in_list(
            "SELECT o.id, o.decision_key, o.recipient, o.channel, o.attempts, d.body, d.deadline,
                    r.record, p.channels, p.email_consent, p.webpush_consent
             FROM outbox o JOIN decisions d ON d.key = o.decision_key
               LEFT JOIN residents r ON r.id = o.recipient
               LEFT JOIN resident_preferences p ON p.resident_id = o.recipient
             WHERE o.id IN (",
            claimed.len(),
        );
        sql.push_str(" ORDER BY o.id");
        // Fixed text and placeholders only.
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in &claimed {
            query = query.bind(*id);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading claimed outbox rows"))?;
        let corrupt = |what| {
            move |e: serde_json::Error| StoreError::Corrupt {
                what,
                detail: e.to_string(),
            }
        };
        rows.iter()
            .map(|r| {
                let read = q("reading claimed outbox rows");
                let get = |c: &str| r.try_get::<String, _>(c);
                let opt = |c: &str| r.try_get::<Option<String>, _>(c);
                let (deadline, record, channels) = (
                    opt("deadline").map_err(read)?,
                    opt("record").map_err(q("reading claimed outbox rows"))?,
                    opt("channels").map_err(q("reading claimed outbox rows"))?,
                );
                let preferences = match channels {
                    None => None,
                    Some(c) => {
                        let flag = |col: &str| {
                            r.try_get::<i64, _>(col)
                                .map(|v| v != 0)
                                .map_err(q("reading claimed outbox rows"))
                        };
                        Some(PortalPreferences {
                            channels: serde_json::from_str(&c).map_err(corrupt("preferences"))?,
                            email_consent: flag("email_consent")?,
                            webpush_consent: flag("webpush_consent")?,
                        })
                    }
                };
                let text = |c: &str| get(c).map_err(q("reading claimed outbox rows"));
                Ok(OutboxItem {
                    id: r.try_get("id").map_err(q("reading claimed outbox rows"))?,
                    decision_key: text("decision_key")?,
                    recipient: text("recipient")?,
                    channel: text("channel")?,
                    attempts: r
                        .try_get("attempts")
                        .map_err(q("reading claimed outbox rows"))?,
                    deadline: deadline.and_then(|x| x.parse().ok()),
                    decision: serde_json::from_str(&text("body")?)
                        .map_err(corrupt("decision body"))?,
                    resident: record
                        .map(|x| serde_json::from_str(&x))
                        .transpose()
                        .map_err(corrupt("resident record"))?,
                    preferences,
                })
            })
            .collect()
    }

    /// Records attempts and settles rows in one transaction, those `worker` still holds;
    /// returns their ids (a row missing from the answer was taken over by another worker).
    /// Delivered rows, the common case, settle with one statement for the whole batch.
    pub async fn settle_outbox_batch(
        &self,
        worker: &str,
        settles: &[(i64, Settle)],
        now: DateTime<FixedOffset>,
    ) -> Result<BTreeSet<i64>> {
        let now_t = utc_text(now);
        let mut held = BTreeSet::new();
        let mut attempts: Vec<Vec<Val>> = Vec::new();
        let mut tx = self.pool.begin().await.map_err(q("settling outbox rows"))?;
        let delivered: Vec<i64> = settles
            .iter()
            .filter(|(_, s)| *s == Settle::Delivered)
            .map(|(id, _)| *id)
            .collect();
        for chunk in delivered.chunks(1000) {
            let mut sql = self.in_list(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, last_error = NULL,
                   lease_until = NULL, leased_by = NULL WHERE id IN (",
                chunk.len(),
            );
            sql.push_str(" AND leased_by = ");
            self.push_placeholder(&mut sql, chunk.len() + 1);
            sql.push_str(" RETURNING id");
            // Fixed text and placeholders only.
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            query = query.bind(worker.to_owned());
            for row in query
                .fetch_all(&mut *tx)
                .await
                .map_err(q("settling delivered rows"))?
            {
                let id: i64 = row.try_get("id").map_err(q("settling delivered rows"))?;
                held.insert(id);
                attempts.push(vec![
                    Val::Int(id),
                    Val::Text(now_t.clone()),
                    Val::Text("delivered".into()),
                    Val::OptText(None),
                ]);
            }
        }
        for (id, settle) in settles.iter().filter(|(_, s)| *s != Settle::Delivered) {
            let (state, next, error, outcome) = match settle {
                Settle::Delivered => unreachable!("settled above"),
                Settle::RetryAt { at, reason } => {
                    ("pending", Some(at.clone()), Some(reason.clone()), "retry")
                }
                Settle::Dead { reason } => ("dead", None, Some(reason.clone()), "dead"),
                Settle::Gone { reason } => ("gone", None, Some(reason.clone()), "gone"),
                Settle::Deferred { at, reason } => (
                    "pending",
                    Some(at.clone()),
                    Some(reason.clone()),
                    "deferred",
                ),
                Settle::Muted { reason } => ("muted", None, Some(reason.clone()), "muted"),
            };
            // A deferral is not an attempt: it does not count towards giving up.
            let counted = i64::from(!matches!(settle, Settle::Deferred { .. }));
            let done = sqlx::query(self.sql(
                "UPDATE outbox SET state = $1, attempts = attempts + $6, next_attempt_at = COALESCE($2, next_attempt_at),
                   last_error = $3, lease_until = NULL, leased_by = NULL
                 WHERE id = $4 AND leased_by = $5",
            ))
            .bind(state.to_owned())
            .bind(next)
            .bind(error.clone())
            .bind(*id)
            .bind(worker.to_owned())
            .bind(counted)
            .execute(&mut *tx)
            .await
            .map_err(q("settling an outbox row"))?;
            if done.rows_affected() > 0 {
                held.insert(*id);
                attempts.push(vec![
                    Val::Int(*id),
                    Val::Text(now_t.clone()),
                    Val::Text(outcome.to_owned()),
                    Val::OptText(error),
                ]);
            }
        }
        if !attempts.is_empty() {
            self.insert_rows(
                &mut tx,
                "INSERT INTO delivery_attempts (outbox_id, attempted_at, outcome, detail) VALUES ",
                "",
                attempts,
                "recording delivery attempts",
            )
            .await?;
        }
        tx.commit().await.map_err(q("settling outbox rows"))?;
        Ok(held)
    }

    /// Outbox rows, optionally only those in `state`, in id order.
    pub async fn outbox_rows(&self, state: Option<&str>) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(self.sql(
            "SELECT id, decision_key, recipient, channel, state, attempts, next_attempt_at, last_error
             FROM outbox WHERE ($1 IS NULL OR state = $1) ORDER BY id",
        ))
        .bind(state.map(str::to_owned))
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing the outbox"))?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    decision_key: r.try_get("decision_key")?,
                    recipient: r.try_get("recipient")?,
                    channel: r.try_get("channel")?,
                    state: r.try_get("state")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    last_error: r.try_get("last_error")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("listing the outbox"))
    }

    /// Puts dead letters (all, or those in `ids`) back in the queue, due now.
    pub async fn retry_outbox(&self, ids: &[i64], now: DateTime<FixedOffset>) -> Result<u64> {
        let now = utc_text(now);
        let mut n = 0;
        if ids.is_empty() {
            n += sqlx::query(self.sql(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $1, lease_until = NULL, leased_by = NULL WHERE state = 'dead'",
            ))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(q("retrying dead letters"))?
            .rows_affected();
        } else {
            for id in ids {
                n += sqlx::query(self.sql(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = $1, lease_until = NULL, leased_by = NULL
                     WHERE id = $2 AND state IN ('dead', 'gone')",
                ))
                .bind(now.clone())
                .bind(*id)
                .execute(&self.pool)
                .await
                .map_err(q("retrying an outbox row"))?
                .rows_affected();
            }
        }
        Ok(n)
    }

    /// Every stored decision, in key order.
    pub async fn decisions(&self) -> Result<Vec<StoredDecision>> {
        let rows = sqlx::query(
            "SELECT key, rule, rule_set, notify_on, critical FROM decisions ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading decisions"))?;
        rows.iter()
            .map(|r| {
                Ok(StoredDecision {
                    key: r.try_get("key")?,
                    rule: r.try_get("rule")?,
                    rule_set: r.try_get("rule_set")?,
                    notify_on: r.try_get("notify_on")?,
                    critical: r.try_get::<i64, _>("critical")? != 0,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("reading decisions"))
    }

    /// Row counts of the main tables, for summaries and tests.
    pub async fn counts(&self) -> Result<BTreeMap<&'static str, i64>> {
        let mut out = BTreeMap::new();
        for table in [
            "residents",
            "life_events",
            "decisions",
            "drafts",
            "recommendations",
            "outbox",
            "delivery_attempts",
            "scheduler_days",
            "ingest_batches",
        ] {
            let row = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM {table}")))
                .fetch_one(&self.pool)
                .await
                .map_err(q("counting rows"))?;
            out.insert(
                table,
                row.try_get::<i64, _>("n").map_err(q("counting rows"))?,
            );
        }
        Ok(out)
    }

    /// Outbox rows per channel (for the demo summary).
    pub async fn outbox_by_channel(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query(
            "SELECT channel, COUNT(*) AS n FROM outbox GROUP BY channel ORDER BY channel",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q("counting the outbox"))?;
        rows.iter()
            .map(|r| Ok((r.try_get("channel")?, r.try_get("n")?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .map_err(q("counting the outbox"))
    }

    /// Stored decision bodies (JSON) of up to `limit` decisions, one per rule, for examples.
    pub async fn sample_bodies(&self, limit: i64) -> Result<Vec<serde_json::Value>> {
        let rows = sqlx::query(self.sql(
            "SELECT body FROM decisions WHERE key IN (SELECT MIN(key) FROM decisions GROUP BY rule)
             ORDER BY key LIMIT $1",
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading decisions"))?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body").map_err(q("reading decisions"))?;
                serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                    what: "decision body",
                    detail: e.to_string(),
                })
            })
            .collect()
    }
}
