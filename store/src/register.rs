//! The register in the store: ingest batches (records, households, life events, feed
//! positions) written in one transaction, and the register read back whole or as what later
//! batches changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, FixedOffset, NaiveDate};
use rayon::prelude::*;
use sqlx::{AssertSqlSafe, Row};

use oshirase_engine::population::{EventKind, LifeEvent};
use oshirase_engine::resident::Resident;

use super::{hash_hex, now_text, q, Result, Store, StoreError, Val};

/// What an ingest batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestKind {
    /// A whole register, diffed against the stored one.
    Snapshot,
    /// A change feed: lines applied after the stored feed position.
    Changes,
}

impl IngestKind {
    /// The name stored in `ingest_batches.kind` and shown to operators.
    pub fn name(self) -> &'static str {
        match self {
            IngestKind::Snapshot => "snapshot",
            IngestKind::Changes => "changes",
        }
    }
}

/// One ingest, as `Store::apply_ingest` writes it.
#[derive(Debug, Clone, Copy)]
pub struct IngestBatch<'a> {
    /// The file name or feed source; a change feed's position is kept per source.
    pub source: &'a str,
    pub kind: IngestKind,
    /// The bytes ingested: their hash makes the same content twice a no-op.
    pub content: &'a [u8],
    /// A snapshot's register date.
    pub as_of: Option<NaiveDate>,
    /// Lines read (a snapshot's records, a feed's pending lines).
    pub rows_in: usize,
    /// The new state of the records the batch concerns.
    pub state: &'a [Resident],
    pub events: &'a [LifeEvent],
    /// A change feed's last applied `seq`.
    pub feed_position: Option<i64>,
    /// The latest batch when `state` was read (`Store::latest_batch`): if another ingest
    /// committed since, `apply_ingest` refuses with `StoreError::Conflict` instead of
    /// writing records derived from a stale register (a lost update). `None` when `state`
    /// does not depend on what is stored.
    pub read_at: Option<i64>,
    pub now: DateTime<FixedOffset>,
}

/// A record of an ingest whose stored form changes.
struct ChangedRecord<'a> {
    record: &'a Resident,
    json: String,
    hash: String,
    /// Whether a stored version is replaced (and so goes to history).
    replaces: bool,
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

pub(crate) fn resident_from_json(id: &str, record: &str) -> Result<Resident> {
    // Which field is bad is unknown here: none of the record's values goes into the error.
    serde_json::from_str(record).map_err(|e| StoreError::Corrupt {
        what: "resident record",
        detail: format!(
            "{id}: {}",
            oshirase_engine::shown::without_values(&e.to_string())
        ),
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

/// What one ingest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    /// `None` when the same content was ingested before: nothing changed.
    pub batch_id: Option<i64>,
    pub rows_changed: usize,
    pub events: usize,
    /// Change events written for agencies.
    pub agency_events: usize,
}

impl Store {
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
    /// events, the feed position and the batch row. The same content (by hash) twice is a
    /// no-op. `state` may be the whole register (a snapshot) or only the records a change
    /// feed touched.
    pub async fn apply_ingest(&self, batch: IngestBatch<'_>) -> Result<IngestOutcome> {
        let content_hash = hash_hex(batch.content);
        let mut tx = self.begin_write("starting an ingest").await?;
        let seen = sqlx::query(self.sql("SELECT id FROM ingest_batches WHERE content_hash = $1"))
            .bind(content_hash.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("checking for a repeated ingest"))?;
        if let Some(read) = batch.read_at {
            // Ingests take turns from here: on PostgreSQL this lock (SQLite's write lock
            // already serializes them) makes the check below and the write one step.
            if self.backend == super::Backend::Postgres {
                sqlx::query("LOCK TABLE ingest_batches IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .map_err(q("waiting for other ingests"))?;
            }
            let latest: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM ingest_batches")
                .fetch_one(&mut *tx)
                .await
                .map_err(q("reading the latest batch"))?
                .try_get("id")
                .map_err(q("reading the latest batch"))?;
            if latest != read {
                return Err(StoreError::Conflict {
                    read,
                    committed: latest,
                });
            }
        }
        if seen.is_some() {
            return Ok(IngestOutcome {
                batch_id: None,
                rows_changed: 0,
                events: 0,
                agency_events: 0,
            });
        }
        let changed = self.changed_records(&mut tx, batch.state).await?;
        // Read before the records are replaced: the items changed need the old versions.
        let item_changes = match self.exchange.clone() {
            Some(x) => {
                let records: Vec<(&Resident, bool)> =
                    changed.iter().map(|c| (c.record, c.replaces)).collect();
                let found =
                    super::exchange::item_changes(self, &mut tx, &x, &records, batch.events)
                        .await?;
                Some((x, found))
            }
            None => None,
        };
        let batch_id = self
            .record_batch(&mut tx, &batch, content_hash, changed.len())
            .await?;
        let touched: BTreeSet<&str> = changed
            .iter()
            .filter_map(|c| c.record.household_id().map(|h| h.as_str()))
            .collect();
        let rows_changed = changed.len();
        self.write_residents(&mut tx, changed, batch_id).await?;
        self.write_households(&mut tx, batch.state, &touched, batch_id)
            .await?;
        let new_events = self.write_events(&mut tx, batch.events, batch_id).await?;
        let mut agency_events = 0;
        if let Some((x, found)) = &item_changes {
            agency_events =
                super::exchange::write_changes(self, &mut tx, x, found, batch_id, batch.now)
                    .await?;
        }
        if let Some(seq) = batch.feed_position {
            sqlx::query(self.sql(
                "INSERT INTO feed_positions (source, last_seq) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET last_seq = excluded.last_seq",
            ))
            .bind(batch.source.to_owned())
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
            agency_events,
        })
    }

    /// The records of `state` whose serialized form differs from the stored one (or that are
    /// not stored), each serialized and hashed once.
    async fn changed_records<'a>(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        state: &'a [Resident],
    ) -> Result<Vec<ChangedRecord<'a>>> {
        let stored = self.stored_hashes(tx, state).await?;
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
        for (record, (json, hash)) in state.iter().zip(encoded) {
            match stored.get(record.id.as_str()) {
                Some(old) if *old == hash => {}
                old => changed.push(ChangedRecord {
                    record,
                    json,
                    hash,
                    replaces: old.is_some(),
                }),
            }
        }
        Ok(changed)
    }

    async fn record_batch(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        batch: &IngestBatch<'_>,
        content_hash: String,
        rows_changed: usize,
    ) -> Result<i64> {
        sqlx::query(self.sql(
            "INSERT INTO ingest_batches (source, kind, content_hash, as_of, rows_in, rows_changed, events, applied_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        ))
        .bind(batch.source.to_owned())
        .bind(batch.kind.name().to_owned())
        .bind(content_hash)
        .bind(batch.as_of.map(|d| d.to_string()))
        .bind(batch.rows_in as i64)
        .bind(rows_changed as i64)
        .bind(batch.events.len() as i64)
        .bind(now_text(batch.now))
        .fetch_one(&mut **tx)
        .await
        .map_err(q("recording the ingest batch"))?
        .try_get("id")
        .map_err(q("recording the ingest batch"))
    }

    /// Writes the changed records; the versions they replace go to history first.
    async fn write_residents(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        changed: Vec<ChangedRecord<'_>>,
        batch_id: i64,
    ) -> Result<()> {
        let replaced: Vec<String> = changed
            .iter()
            .filter(|c| c.replaces)
            .map(|c| c.record.id.as_str().to_owned())
            .collect();
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
                .execute(&mut **tx)
                .await
                .map_err(q("writing resident history"))?;
        }
        let rows = changed
            .into_iter()
            .map(|c| {
                vec![
                    Val::Text(c.record.id.as_str().to_owned()),
                    Val::OptText(c.record.household_id().map(|h| h.as_str().to_owned())),
                    Val::Text(c.record.status.name().to_owned()),
                    Val::Text(c.json),
                    Val::Text(c.hash),
                    Val::Int(batch_id),
                ]
            })
            .collect();
        self.insert_rows(
            tx,
            "INSERT INTO residents (id, household_id, status, record, record_hash, batch_id) VALUES ",
            " ON CONFLICT (id) DO UPDATE SET household_id = excluded.household_id, status = excluded.status,
               record = excluded.record, record_hash = excluded.record_hash, batch_id = excluded.batch_id",
            rows,
            "writing residents",
        )
        .await?;
        Ok(())
    }

    /// The households `touched` by the batch, recomputed from the new state.
    async fn write_households(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        state: &[Resident],
        touched: &BTreeSet<&str>,
        batch_id: i64,
    ) -> Result<()> {
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
        let rows = touched
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
            tx,
            "INSERT INTO households (id, householder_id, members, batch_id) VALUES ",
            " ON CONFLICT (id) DO UPDATE SET householder_id = excluded.householder_id,
               members = excluded.members, batch_id = excluded.batch_id",
            rows,
            "writing households",
        )
        .await?;
        Ok(())
    }

    /// Writes the events not stored yet; returns how many were new.
    async fn write_events(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        events: &[LifeEvent],
        batch_id: i64,
    ) -> Result<usize> {
        let rows = events
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
        let n = self
            .insert_rows(
                tx,
                "INSERT INTO life_events (id, kind, subject, date, recorded, batch_id) VALUES ",
                " ON CONFLICT (id) DO NOTHING",
                rows,
                "writing life events",
            )
            .await?;
        Ok(n as usize)
    }

    /// The life events stored by the batches after `after` up to `upto`: what a run that
    /// read batch `after` did not see.
    pub async fn arrivals(&self, after: i64, upto: i64) -> Result<Vec<LifeEvent>> {
        let rows = sqlx::query(self.sql(
            "SELECT id, kind, subject, date, recorded FROM life_events
             WHERE batch_id > $1 AND batch_id <= $2 ORDER BY id",
        ))
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading the events of new batches"))?;
        rows.iter().map(event_from_row).collect()
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
}
