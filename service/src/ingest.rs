//! Ingest: a full snapshot (diffed against the stored state to derive life events) or a
//! change feed (applied line by line after the stored feed position to the stored records it
//! names, not the whole register), validated whole and written in one store transaction.

use chrono::{DateTime, FixedOffset};

use oshirase_engine::feed;
use oshirase_engine::population::{parse_snapshot_records, DataError, DataErrors};
use oshirase_engine::resident::Resident;
use oshirase_store::{IngestBatch, IngestKind, IngestOutcome, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Invalid(DataErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an ingest did, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestReport {
    pub kind: IngestKind,
    pub rows_in: usize,
    pub outcome: IngestOutcome,
    /// Lines left out with `skip_invalid` (their errors), to be corrected and sent again.
    pub rejected: Vec<DataError>,
    /// Feed lines skipped because the stored feed position is past them.
    pub already_applied: usize,
}

/// The `format` of the header, to tell a feed from a snapshot. Only the first value of the
/// line is read: data after it is the parser's to report, with its column.
fn first_line_format(text: &str) -> Option<String> {
    // A byte order mark before the header is allowed, as the parsers allow it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().find(|l| !l.trim().is_empty())?;
    let v: serde_json::Value = serde_json::Deserializer::from_str(first)
        .into_iter()
        .next()?
        .ok()?;
    v.get("format")?.as_str().map(str::to_owned)
}

/// Ingests `text` (read from `source`). With `skip_invalid`, valid feed lines are applied
/// and the invalid ones returned in the report; without it, any invalid line rejects all.
pub async fn ingest(
    store: &Store,
    source: &str,
    text: &str,
    skip_invalid: bool,
    now: DateTime<FixedOffset>,
) -> Result<IngestReport, IngestError> {
    // Another ingest committing between our read and our write would make what we write
    // stale: read again and retry. Each try is all or nothing.
    let mut tries = 0;
    loop {
        match ingest_once(store, source, text, skip_invalid, now).await {
            Err(IngestError::Store(StoreError::Conflict { .. })) if tries < MAX_TRIES => {
                tries += 1;
                tracing::info!(
                    source,
                    tries,
                    "another ingest came first; reading the register again"
                );
            }
            other => return other,
        }
    }
}

/// Tries of an ingest that keeps meeting newer ingests.
const MAX_TRIES: u32 = 20;

async fn ingest_once(
    store: &Store,
    source: &str,
    text: &str,
    skip_invalid: bool,
    now: DateTime<FixedOffset>,
) -> Result<IngestReport, IngestError> {
    match first_line_format(text).as_deref() {
        Some("oshirase-changes") => ingest_feed(store, source, text, skip_invalid, now).await,
        Some("oshirase-snapshot") => ingest_snapshot(store, source, text, skip_invalid, now).await,
        other => Err(IngestError::Invalid(DataErrors(vec![DataError {
            source: source.to_owned(),
            line: 1,
            field: Some("format".into()),
            resident: None,
            message: format!(
                "{} is neither \"oshirase-snapshot\" nor \"oshirase-changes\"",
                other.map_or(
                    "a missing format".to_owned(),
                    oshirase_engine::shown::quoted
                )
            ),
        }]))),
    }
}

async fn ingest_snapshot(
    store: &Store,
    source: &str,
    text: &str,
    skip_invalid: bool,
    now: DateTime<FixedOffset>,
) -> Result<IngestReport, IngestError> {
    // A snapshot is all or nothing even with --skip-invalid: a resident left out would look
    // as if they had left the register.
    let snapshot = match parse_snapshot_records(text, source) {
        Ok(s) => s,
        Err(e) => {
            if skip_invalid {
                tracing::warn!("--skip-invalid applies to change feeds; a snapshot is taken whole");
            }
            return Err(IngestError::Invalid(e));
        }
    };
    let read_at = store.latest_batch().await?;
    let old = store.residents().await?;
    let as_of = snapshot.header.as_of;
    let events = feed::diff(&old, &snapshot.residents, as_of);
    // The stored records the snapshot leaves out stay: the register they make with it must
    // be valid too, or the service could not read it back.
    snapshot
        .check_onto(&old, source, &events)
        .map_err(IngestError::Invalid)?;
    let new = snapshot.residents;
    let outcome = store
        .apply_ingest(IngestBatch {
            source,
            kind: IngestKind::Snapshot,
            content: text.as_bytes(),
            as_of: Some(as_of),
            rows_in: new.len(),
            state: &new,
            events: &events,
            feed_position: None,
            read_at: Some(read_at),
            now,
        })
        .await?;
    Ok(IngestReport {
        kind: IngestKind::Snapshot,
        rows_in: new.len(),
        outcome,
        rejected: Vec::new(),
        already_applied: 0,
    })
}

async fn ingest_feed(
    store: &Store,
    source: &str,
    text: &str,
    skip_invalid: bool,
    now: DateTime<FixedOffset>,
) -> Result<IngestReport, IngestError> {
    let (parsed, mut rejected) = if skip_invalid {
        feed::parse_feed_lenient(text, source)
    } else {
        (
            feed::parse_feed(text, source).map_err(IngestError::Invalid)?,
            Vec::new(),
        )
    };
    let read_at = store.latest_batch().await?;
    let position = store.feed_position(source).await?.unwrap_or(0);
    let total = parsed.len();
    let pending = parsed.after(position);
    let already_applied = total - pending.len();
    // Only the records the lines name, their households and the records they refer to: a
    // line costs the size of what it touches, not of the register.
    let current = feed_part(store, &pending).await?;
    let applied = if skip_invalid {
        let (applied, more) = feed::apply_to_part_lenient(&current, &pending, source)
            .map_err(IngestError::Invalid)?;
        rejected.extend(more);
        applied
    } else {
        feed::apply_to_part(&current, &pending, source).map_err(IngestError::Invalid)?
    };
    let last_seq = pending.last_seq().map(|s| s as i64);
    let outcome = store
        .apply_ingest(IngestBatch {
            source,
            kind: IngestKind::Changes,
            content: text.as_bytes(),
            as_of: None,
            rows_in: pending.len(),
            state: &applied.residents,
            events: &applied.events,
            feed_position: last_seq.or(Some(position)),
            read_at: Some(read_at),
            now,
        })
        .await?;
    rejected.sort_by_key(|e| e.line);
    Ok(IngestReport {
        kind: IngestKind::Changes,
        rows_in: total,
        outcome,
        rejected,
        already_applied,
    })
}

/// The part of the stored register `feed` needs: the records it names, every record of the
/// households it names or those records belong to, and the records any of them refer to
/// (guardians, proxies), which must exist.
async fn feed_part(store: &Store, feed: &feed::Feed) -> Result<Vec<Resident>, StoreError> {
    fn owned<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
        ids.map(str::to_owned).collect()
    }
    // New records and corrections bring their own references into `needs`.
    let needs = feed::Needs::of(feed);
    let named = store
        .residents_named(&owned(needs.residents.iter().map(|r| r.as_str())), &[])
        .await?;
    let mut households = needs.households.clone();
    households.extend(named.iter().filter_map(|r| r.household_id().cloned()));
    let mut part = store
        .residents_named(&[], &owned(households.iter().map(|h| h.as_str())))
        .await?;
    part.extend(named);
    // What the records read so far refer to, and no query has read yet.
    let mut refs = feed::Needs::default();
    for r in &part {
        refs.add_references(r);
    }
    let have: std::collections::HashSet<&str> = part.iter().map(|r| r.id.as_str()).collect();
    // (Named ids that were not found need not be asked for again.)
    let missing = owned(
        refs.residents
            .iter()
            .filter(|r| !have.contains(r.as_str()) && !needs.residents.contains(*r))
            .map(|r| r.as_str()),
    );
    let extra = store.residents_named(&missing, &[]).await?;
    part.extend(extra);
    // Each record once, in id order, whatever query found it.
    part.sort_by(|a, b| a.id.cmp(&b.id));
    part.dedup_by(|a, b| a.id == b.id);
    Ok(part)
}
