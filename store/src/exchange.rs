//! Agencies told of updates (①) in the store: the register items each ingest changed, the
//! agencies and their event streams, pseudonyms, interest, the change events written in the
//! ingest's own transaction (a transactional outbox), the streams' delivery cursors, and the
//! record of what was provided about a person.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, FixedOffset, NaiveDate};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::{AssertSqlSafe, Row};

use oshirase_engine::ids::ResidentId;
use oshirase_engine::items::{self, ItemCode};
use oshirase_engine::population::{EventKind, LifeEvent};
use oshirase_engine::purposes::{Exchange, Following};
use oshirase_engine::resident::Resident;

use super::{parse_time, q, utc_text, Backend, Result, Store, StoreError, Val};

/// Interest in everybody of the municipality (`agency_interests.resident_id`).
const EVERYONE: &str = "*";

/// An agency as the operator registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencySpec {
    pub id: String,
    pub name: String,
    /// Where its events are posted; `None`: it pulls only.
    pub endpoint: Option<String>,
    /// The JSON Web Key Set its client assertions are checked with.
    pub client_jwks: String,
    /// The data-item dictionary version it reads: it never receives a newer item.
    pub dictionary_version: u32,
    /// The purposes it holds, one event stream each.
    pub purposes: Vec<String>,
}

/// A registered agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agency {
    pub spec: AgencySpec,
    pub enabled: bool,
    pub verified_at: Option<DateTime<FixedOffset>>,
}

/// One (agency, purpose) event stream and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub agency_id: String,
    pub purpose_id: String,
    pub endpoint: Option<String>,
    pub last_seq: i64,
    pub delivered_seq: i64,
    /// Failed attempts at the event after `delivered_seq`.
    pub attempts: i64,
    pub next_attempt_at: DateTime<FixedOffset>,
    pub last_error: Option<String>,
    pub last_delivered_at: Option<DateTime<FixedOffset>>,
    pub last_sent_at: Option<DateTime<FixedOffset>>,
    /// Events given up on (dead letters); they stay readable through the pull API.
    pub dead: i64,
}

/// A change event as stored. Carries no personal data: `subject` is the agency's pseudonym.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencyEvent {
    pub agency_id: String,
    pub purpose_id: String,
    pub seq: i64,
    /// The CloudEvents `type`.
    pub kind: String,
    pub subject: String,
    pub local_gov_code: String,
    pub items: Vec<ItemCode>,
    pub dictionary_version: u32,
    pub time: DateTime<FixedOffset>,
    /// pending | delivered | dead
    pub state: String,
}

/// Interest an agency registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterestSpec {
    pub agency_id: String,
    pub purpose_id: String,
    /// `None`: everybody in the municipality (where the purpose allows it).
    pub resident: Option<ResidentId>,
    /// `None`: every item the purpose allows.
    pub items: Option<BTreeSet<ItemCode>>,
    /// The interest holds through this day.
    pub valid_to: NaiveDate,
}

/// A stored interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    pub spec: InterestSpec,
    pub created_at: DateTime<FixedOffset>,
    pub updated_at: DateTime<FixedOffset>,
}

/// What was provided about a person: an event or a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub resident_id: String,
    pub at: DateTime<FixedOffset>,
    /// `agency` or `party`.
    pub accessor_kind: String,
    pub accessor_id: String,
    pub accessor_name: String,
    /// The purpose (or grant) it was provided under.
    pub basis: String,
    /// `event` or `pull`.
    pub action: String,
    pub items: Vec<ItemCode>,
    /// `provided`, or `withheld` when the items were held back (a support measure).
    pub outcome: String,
}

/// How a delivery run on a stream ended (`Store::settle_stream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamProgress {
    /// Every event up to here is settled.
    pub settled_upto: i64,
    /// Events of the settled range that were given up on, with the reason.
    pub dead: Vec<(i64, String)>,
    /// The next event failed: when to try it again, and why.
    pub retry: Option<(DateTime<FixedOffset>, String)>,
    /// Events the endpoint accepted in this run.
    pub delivered: usize,
    /// When something (an event or a heartbeat) was last sent.
    pub sent_at: Option<DateTime<FixedOffset>>,
    /// A heartbeat that failed: shown as the stream's last error, not retried (the next one
    /// comes after the interval).
    pub heartbeat_error: Option<String>,
}

/// An agency's pseudonyms: an HMAC of a register key under the agency's own key, so two
/// agencies cannot link their pseudonyms and nobody can reverse one. The key is set up once
/// (`Store::pseudonyms`), then each name costs one hash.
#[derive(Clone)]
pub struct Pseudonyms {
    mac: Hmac<Sha256>,
}

impl Pseudonyms {
    fn new(key: &[u8]) -> Pseudonyms {
        Pseudonyms {
            mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    /// The agency's name for `id`: a resident id, or another register key (a household's,
    /// as `household:H0001`).
    pub fn of(&self, id: &str) -> String {
        let digest = self
            .mac
            .clone()
            .chain_update(id.as_bytes())
            .finalize()
            .into_bytes();
        // 128 bits are ample against collisions within one agency's persons.
        super::hex(&digest[..16])
    }
}

fn hex_decode(what: &'static str, s: &str) -> Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::Corrupt {
                    what,
                    detail: "not hex".into(),
                })
        })
        .collect()
}

fn codes_text(items: &BTreeSet<ItemCode>) -> String {
    items
        .iter()
        .map(ItemCode::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_codes(what: &'static str, text: &str) -> Result<Vec<ItemCode>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            ItemCode::parse(s).map_err(|e| StoreError::Corrupt {
                what,
                detail: e.to_string(),
            })
        })
        .collect()
}

fn opt_time(what: &'static str, t: Option<String>) -> Result<Option<DateTime<FixedOffset>>> {
    t.map(|t| parse_time(what, &t)).transpose()
}

/// The items one ingest changed for one person.
pub(crate) struct PersonChange<'a> {
    pub record: &'a Resident,
    pub items: BTreeSet<ItemCode>,
    pub event_type: &'static str,
}

/// The changes of one ingest, for `apply_ingest`: old records are read inside its transaction
/// before they are replaced.
pub(crate) async fn item_changes<'a>(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    exchange: &Exchange,
    changed: &[(&'a Resident, bool)],
    events: &[LifeEvent],
) -> Result<Vec<PersonChange<'a>>> {
    // The first batch of an empty register is the baseline: nothing "changed" for anybody.
    let any = sqlx::query("SELECT id FROM residents LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(q("checking for a baseline"))?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let replaced: Vec<String> = changed
        .iter()
        .filter(|(_, replaces)| *replaces)
        .map(|(r, _)| r.id.as_str().to_owned())
        .collect();
    let mut old: BTreeMap<String, Resident> = BTreeMap::new();
    for chunk in replaced.chunks(1000) {
        let sql = store.in_list(
            "SELECT id, record FROM residents WHERE id IN (",
            chunk.len(),
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query
            .fetch_all(&mut **tx)
            .await
            .map_err(q("reading replaced records"))?
        {
            let id: String = row.try_get("id").map_err(q("reading replaced records"))?;
            let record: String = row
                .try_get("record")
                .map_err(q("reading replaced records"))?;
            let r = super::register::resident_from_json(&id, &record)?;
            old.insert(id, r);
        }
    }
    let mut kinds: BTreeMap<&str, Vec<EventKind>> = BTreeMap::new();
    for e in events {
        kinds.entry(e.subject.as_str()).or_default().push(e.kind);
    }
    let mut out = Vec::new();
    for (record, _) in changed {
        let items = exchange
            .dictionary
            .changed(old.get(record.id.as_str()), record);
        if items.is_empty() {
            continue;
        }
        let kinds = kinds.get(record.id.as_str()).map_or(&[][..], Vec::as_slice);
        out.push(PersonChange {
            record,
            items,
            event_type: items::event_type(kinds),
        });
    }
    Ok(out)
}

/// Who one stream follows: everybody (with the items asked), and persons by resident id.
#[derive(Default)]
struct StreamInterest {
    everyone: Option<Option<BTreeSet<ItemCode>>>,
    persons: HashMap<String, Option<BTreeSet<ItemCode>>>,
}

struct OpenStream {
    agency_id: String,
    purpose_id: String,
    last_seq: i64,
    dictionary_version: u32,
    names: Pseudonyms,
}

/// Writes the changes and, for every stream whose interest covers a changed person and whose
/// permitted items meet the changed ones, one event with the stream's next sequence number.
/// Runs inside the ingest's transaction: an ingest that commits has its events, one that rolls
/// back has none. Returns the number of events written.
pub(crate) async fn write_changes(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    exchange: &Exchange,
    changes: &[PersonChange<'_>],
    batch_id: i64,
    now: DateTime<FixedOffset>,
) -> Result<usize> {
    if changes.is_empty() {
        return Ok(0);
    }
    let rows = changes
        .iter()
        .map(|c| {
            vec![
                Val::Int(batch_id),
                Val::Text(c.record.id.as_str().to_owned()),
                Val::Text(codes_text(&c.items)),
                Val::Text(c.event_type.to_owned()),
            ]
        })
        .collect();
    store
        .insert_rows(
            tx,
            "INSERT INTO register_item_changes (batch_id, resident_id, items, event_type) VALUES ",
            "",
            rows,
            "writing the changed items",
        )
        .await?;

    // The streams, locked for this transaction on PostgreSQL: two ingests at once must not
    // hand out the same sequence number (SQLite's write lock already serializes them).
    let sql = match store.backend {
        Backend::Postgres => store.sql(
            "SELECT s.agency_id, s.purpose_id, s.last_seq, a.dictionary_version, a.pseudonym_key
             FROM agency_subscriptions s JOIN agencies a ON a.id = s.agency_id
             WHERE s.enabled = 1 AND a.enabled = 1 ORDER BY s.agency_id, s.purpose_id FOR UPDATE OF s",
        ),
        Backend::Sqlite => store.sql(
            "SELECT s.agency_id, s.purpose_id, s.last_seq, a.dictionary_version, a.pseudonym_key
             FROM agency_subscriptions s JOIN agencies a ON a.id = s.agency_id
             WHERE s.enabled = 1 AND a.enabled = 1 ORDER BY s.agency_id, s.purpose_id",
        ),
    };
    let what = "reading the event streams";
    let mut streams = Vec::new();
    for row in sqlx::query(sql)
        .fetch_all(&mut **tx)
        .await
        .map_err(q(what))?
    {
        let version: i64 = row.try_get("dictionary_version").map_err(q(what))?;
        let key: String = row.try_get("pseudonym_key").map_err(q(what))?;
        streams.push(OpenStream {
            agency_id: row.try_get("agency_id").map_err(q(what))?,
            purpose_id: row.try_get("purpose_id").map_err(q(what))?,
            last_seq: row.try_get("last_seq").map_err(q(what))?,
            dictionary_version: u32::try_from(version).unwrap_or(0),
            names: Pseudonyms::new(&hex_decode("agency pseudonym key", &key)?),
        });
    }
    if streams.is_empty() {
        return Ok(0);
    }

    // Interest valid today: (agency, purpose, resident or everyone) -> its items.
    let today = now
        .with_timezone(&oshirase_engine::clock::jst())
        .date_naive()
        .to_string();
    let what = "reading interest";
    // Per stream: the municipality-wide interest and the persons', by resident id.
    let mut interest: HashMap<(String, String), StreamInterest> = HashMap::new();
    let mut add = |row: &sqlx::any::AnyRow| -> Result<()> {
        let valid_to: String = row.try_get("valid_to").map_err(q(what))?;
        if valid_to < today {
            return Ok(());
        }
        let items: Option<String> = row.try_get("items").map_err(q(what))?;
        let items = items
            .map(|t| parse_codes("interest items", &t).map(|v| v.into_iter().collect()))
            .transpose()?;
        let who: String = row.try_get("resident_id").map_err(q(what))?;
        let stream = interest
            .entry((
                row.try_get("agency_id").map_err(q(what))?,
                row.try_get("purpose_id").map_err(q(what))?,
            ))
            .or_default();
        if who == EVERYONE {
            stream.everyone = Some(items);
        } else {
            stream.persons.insert(who, items);
        }
        Ok(())
    };
    for row in sqlx::query(store.sql(
        "SELECT agency_id, purpose_id, resident_id, items, valid_to FROM agency_interests WHERE resident_id = $1",
    ))
    .bind(EVERYONE)
    .fetch_all(&mut **tx)
    .await
    .map_err(q(what))?
    {
        add(&row)?;
    }
    let ids: Vec<String> = changes
        .iter()
        .map(|c| c.record.id.as_str().to_owned())
        .collect();
    for chunk in ids.chunks(1000) {
        let sql = store.in_list(
            "SELECT agency_id, purpose_id, resident_id, items, valid_to FROM agency_interests WHERE resident_id IN (",
            chunk.len(),
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(&mut **tx).await.map_err(q(what))? {
            add(&row)?;
        }
    }
    if interest.is_empty() {
        return Ok(0);
    }

    let time = utc_text(now);
    let mut events = Vec::new();
    let mut pseudonyms = Vec::new();
    let mut advanced = Vec::new();
    for s in &mut streams {
        let Some(purpose) = exchange.purpose(&s.purpose_id) else {
            // A purpose no longer in the table gives nothing; `agency list` shows the stream.
            continue;
        };
        let Some(follows) = interest.get(&(s.agency_id.clone(), s.purpose_id.clone())) else {
            continue;
        };
        // The whole municipality's reach, once per stream (the purpose must allow it).
        let everyone = follows
            .everyone
            .as_ref()
            .filter(|_| purpose.following == Following::Municipality)
            .map(|items| exchange.permitted(purpose, s.dictionary_version, items.as_ref()));
        let first = s.last_seq;
        for c in changes {
            let id = c.record.id.as_str();
            let own;
            let (permitted, wide) = match follows.persons.get(id) {
                Some(items) => {
                    own = exchange.permitted(purpose, s.dictionary_version, items.as_ref());
                    (&own, false)
                }
                None => match &everyone {
                    Some(p) => (p, true),
                    None => continue,
                },
            };
            let items: BTreeSet<ItemCode> = permitted.intersection(&c.items).cloned().collect();
            if items.is_empty() {
                continue;
            }
            s.last_seq += 1;
            let subject = s.names.of(id);
            // A person's own interest was registered with their pseudonym; a municipality-wide
            // follower first learns of the person from this event.
            if wide {
                pseudonyms.push(vec![
                    Val::Text(s.agency_id.clone()),
                    Val::Text(subject.clone()),
                    Val::Text(id.to_owned()),
                    Val::Text(time.clone()),
                ]);
            }
            events.push(vec![
                Val::Text(s.agency_id.clone()),
                Val::Text(s.purpose_id.clone()),
                Val::Int(s.last_seq),
                Val::Text(c.event_type.to_owned()),
                Val::Text(subject),
                Val::Text(id.to_owned()),
                Val::Text(c.record.address.local_gov_code.to_string()),
                Val::Text(codes_text(&items)),
                Val::Int(i64::from(s.dictionary_version)),
                Val::Int(batch_id),
                Val::Text(time.clone()),
            ]);
        }
        if s.last_seq > first {
            advanced.push((s.agency_id.clone(), s.purpose_id.clone(), s.last_seq));
        }
    }
    let written = events.len();
    store
        .insert_rows(
            tx,
            "INSERT INTO agency_pseudonyms (agency_id, pseudonym, resident_id, issued_at) VALUES ",
            " ON CONFLICT DO NOTHING",
            pseudonyms,
            "issuing pseudonyms",
        )
        .await?;
    store
        .insert_rows(
            tx,
            "INSERT INTO agency_events (agency_id, purpose_id, seq, type, subject, resident_id, local_gov_code,
               items, dictionary_version, batch_id, time, state) VALUES ",
            "",
            events
                .into_iter()
                .map(|mut row| {
                    row.push(Val::Text("pending".into()));
                    row
                })
                .collect(),
            "writing agency events",
        )
        .await?;
    for (agency, purpose, last) in advanced {
        sqlx::query(store.sql(
            "UPDATE agency_subscriptions SET last_seq = $1 WHERE agency_id = $2 AND purpose_id = $3",
        ))
        .bind(last)
        .bind(agency)
        .bind(purpose)
        .execute(&mut **tx)
        .await
        .map_err(q("advancing an event stream"))?;
    }
    Ok(written)
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<AgencyEvent> {
    let what = "reading agency events";
    let version: i64 = row.try_get("dictionary_version").map_err(q(what))?;
    let items: String = row.try_get("items").map_err(q(what))?;
    let time: String = row.try_get("time").map_err(q(what))?;
    Ok(AgencyEvent {
        agency_id: row.try_get("agency_id").map_err(q(what))?,
        purpose_id: row.try_get("purpose_id").map_err(q(what))?,
        seq: row.try_get("seq").map_err(q(what))?,
        kind: row.try_get("type").map_err(q(what))?,
        subject: row.try_get("subject").map_err(q(what))?,
        local_gov_code: row.try_get("local_gov_code").map_err(q(what))?,
        items: parse_codes("agency event items", &items)?,
        dictionary_version: u32::try_from(version).unwrap_or(0),
        time: parse_time("agency event time", &time)?,
        state: row.try_get("state").map_err(q(what))?,
    })
}

fn stream_from_row(row: &sqlx::any::AnyRow) -> Result<Stream> {
    let what = "reading event streams";
    let next: String = row.try_get("next_attempt_at").map_err(q(what))?;
    Ok(Stream {
        agency_id: row.try_get("agency_id").map_err(q(what))?,
        purpose_id: row.try_get("purpose_id").map_err(q(what))?,
        endpoint: row.try_get("endpoint").map_err(q(what))?,
        last_seq: row.try_get("last_seq").map_err(q(what))?,
        delivered_seq: row.try_get("delivered_seq").map_err(q(what))?,
        attempts: row.try_get("attempts").map_err(q(what))?,
        next_attempt_at: parse_time("stream retry time", &next)?,
        last_error: row.try_get("last_error").map_err(q(what))?,
        last_delivered_at: opt_time(
            "stream delivery time",
            row.try_get("last_delivered_at").map_err(q(what))?,
        )?,
        last_sent_at: opt_time(
            "stream send time",
            row.try_get("last_sent_at").map_err(q(what))?,
        )?,
        dead: row.try_get("dead").map_err(q(what))?,
    })
}

const STREAM_COLUMNS: &str =
    "s.agency_id, s.purpose_id, a.endpoint, s.last_seq, s.delivered_seq, s.attempts,
    s.next_attempt_at, s.last_error, s.last_delivered_at, s.last_sent_at, s.dead";

fn random_key() -> Result<String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| StoreError::Corrupt {
        what: "the system's random source",
        detail: e.to_string(),
    })?;
    Ok(super::hex(&key))
}

impl Store {
    /// Registers an agency or updates it: its streams are those of `spec.purposes` (a purpose
    /// it no longer holds keeps its stream, disabled, with its sequence). The pseudonym key is
    /// made once and never changes (the agency's pseudonyms stay the same).
    pub async fn upsert_agency(&self, spec: &AgencySpec, now: DateTime<FixedOffset>) -> Result<()> {
        let mut tx = self.begin_write("registering an agency").await?;
        let what = "registering an agency";
        let key = random_key()?;
        sqlx::query(self.sql(
            "INSERT INTO agencies (id, name, endpoint, client_jwks, dictionary_version, pseudonym_key, enabled, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, client_jwks = excluded.client_jwks,
               dictionary_version = excluded.dictionary_version, enabled = 1,
               verified_at = CASE WHEN agencies.endpoint IS NOT DISTINCT FROM excluded.endpoint THEN agencies.verified_at ELSE NULL END,
               endpoint = excluded.endpoint",
        ))
        .bind(spec.id.clone())
        .bind(spec.name.clone())
        .bind(spec.endpoint.clone())
        .bind(spec.client_jwks.clone())
        .bind(i64::from(spec.dictionary_version))
        .bind(key)
        .bind(utc_text(now))
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        sqlx::query(self.sql("UPDATE agency_subscriptions SET enabled = 0 WHERE agency_id = $1"))
            .bind(spec.id.clone())
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        for purpose in &spec.purposes {
            sqlx::query(self.sql(
                "INSERT INTO agency_subscriptions (agency_id, purpose_id, enabled, last_seq, delivered_seq,
                   attempts, next_attempt_at, dead) VALUES ($1, $2, 1, 0, 0, 0, $3, 0)
                 ON CONFLICT (agency_id, purpose_id) DO UPDATE SET enabled = 1",
            ))
            .bind(spec.id.clone())
            .bind(purpose.clone())
            .bind(utc_text(now))
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        }
        tx.commit().await.map_err(q(what))
    }

    /// Records that the agency's endpoint answered the verification handshake.
    pub async fn mark_agency_verified(&self, id: &str, now: DateTime<FixedOffset>) -> Result<()> {
        sqlx::query(self.sql("UPDATE agencies SET verified_at = $1 WHERE id = $2"))
            .bind(utc_text(now))
            .bind(id.to_owned())
            .execute(&self.pool)
            .await
            .map_err(q("recording an endpoint's verification"))?;
        Ok(())
    }

    /// Every registered agency, in id order.
    pub async fn agencies(&self) -> Result<Vec<Agency>> {
        self.agencies_where(None).await
    }

    /// One agency.
    pub async fn agency(&self, id: &str) -> Result<Option<Agency>> {
        Ok(self.agencies_where(Some(id)).await?.into_iter().next())
    }

    async fn agencies_where(&self, id: Option<&str>) -> Result<Vec<Agency>> {
        let what = "reading agencies";
        let rows = sqlx::query(self.sql(
            "SELECT id, name, endpoint, client_jwks, dictionary_version, enabled, verified_at
             FROM agencies WHERE ($1 IS NULL OR id = $1) ORDER BY id",
        ))
        .bind(id.map(str::to_owned))
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?;
        let purposes = sqlx::query(
            "SELECT agency_id, purpose_id FROM agency_subscriptions WHERE enabled = 1 ORDER BY agency_id, purpose_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?;
        let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in purposes {
            held.entry(p.try_get("agency_id").map_err(q(what))?)
                .or_default()
                .push(p.try_get("purpose_id").map_err(q(what))?);
        }
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(q(what))?;
                let version: i64 = r.try_get("dictionary_version").map_err(q(what))?;
                let enabled: i64 = r.try_get("enabled").map_err(q(what))?;
                Ok(Agency {
                    spec: AgencySpec {
                        purposes: held.remove(&id).unwrap_or_default(),
                        id,
                        name: r.try_get("name").map_err(q(what))?,
                        endpoint: r.try_get("endpoint").map_err(q(what))?,
                        client_jwks: r.try_get("client_jwks").map_err(q(what))?,
                        dictionary_version: u32::try_from(version).unwrap_or(0),
                    },
                    enabled: enabled == 1,
                    verified_at: opt_time(
                        "agency verification time",
                        r.try_get("verified_at").map_err(q(what))?,
                    )?,
                })
            })
            .collect()
    }

    /// The agency's pseudonyms, its key read once; `None` for an unknown agency.
    pub async fn pseudonyms(&self, agency: &str) -> Result<Option<Pseudonyms>> {
        let row = sqlx::query(self.sql("SELECT pseudonym_key FROM agencies WHERE id = $1"))
            .bind(agency.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a pseudonym key"))?;
        row.map(|r| {
            let k: String = r
                .try_get("pseudonym_key")
                .map_err(q("reading a pseudonym key"))?;
            hex_decode("agency pseudonym key", &k).map(|k| Pseudonyms::new(&k))
        })
        .transpose()
    }

    /// Issues (or gives again) the agency's pseudonym of a resident: what the municipality
    /// hands an agency that has a case for the person. `None` for an unknown agency.
    pub async fn issue_pseudonym(
        &self,
        agency: &str,
        resident: &ResidentId,
        now: DateTime<FixedOffset>,
    ) -> Result<Option<String>> {
        let Some(names) = self.pseudonyms(agency).await? else {
            return Ok(None);
        };
        let p = names.of(resident.as_str());
        sqlx::query(self.sql(
            "INSERT INTO agency_pseudonyms (agency_id, pseudonym, resident_id, issued_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        ))
        .bind(agency.to_owned())
        .bind(p.clone())
        .bind(resident.as_str().to_owned())
        .bind(utc_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("issuing a pseudonym"))?;
        Ok(Some(p))
    }

    /// The resident an agency's pseudonym names, if it was issued to that agency.
    pub async fn resolve_pseudonym(
        &self,
        agency: &str,
        pseudonym: &str,
    ) -> Result<Option<ResidentId>> {
        let row = sqlx::query(self.sql(
            "SELECT resident_id FROM agency_pseudonyms WHERE agency_id = $1 AND pseudonym = $2",
        ))
        .bind(agency.to_owned())
        .bind(pseudonym.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(q("resolving a pseudonym"))?;
        row.map(|r| {
            let id: String = r
                .try_get("resident_id")
                .map_err(q("resolving a pseudonym"))?;
            ResidentId::parse(&id).map_err(|e| StoreError::Corrupt {
                what: "pseudonym",
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Registers interest (or renews it: the items and the end date are replaced). A person's
    /// interest issues the agency's pseudonym of them, which its events name.
    pub async fn register_interest(
        &self,
        i: &InterestSpec,
        now: DateTime<FixedOffset>,
    ) -> Result<()> {
        if let Some(r) = &i.resident {
            self.issue_pseudonym(&i.agency_id, r, now).await?;
        }
        sqlx::query(self.sql(
            "INSERT INTO agency_interests (agency_id, purpose_id, resident_id, items, valid_to, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (agency_id, purpose_id, resident_id) DO UPDATE SET items = excluded.items,
               valid_to = excluded.valid_to, updated_at = excluded.updated_at",
        ))
        .bind(i.agency_id.clone())
        .bind(i.purpose_id.clone())
        .bind(i.resident.as_ref().map_or(EVERYONE, |r| r.as_str()).to_owned())
        .bind(i.items.as_ref().map(codes_text))
        .bind(i.valid_to.to_string())
        .bind(utc_text(now))
        .execute(&self.pool)
        .await
        .map_err(q("registering interest"))?;
        Ok(())
    }

    /// Ends an interest at once. Whether there was one.
    pub async fn remove_interest(
        &self,
        agency: &str,
        purpose: &str,
        resident: Option<&ResidentId>,
    ) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "DELETE FROM agency_interests WHERE agency_id = $1 AND purpose_id = $2 AND resident_id = $3",
        ))
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .bind(resident.map_or(EVERYONE, |r| r.as_str()).to_owned())
        .execute(&self.pool)
        .await
        .map_err(q("removing interest"))?;
        Ok(done.rows_affected() > 0)
    }

    /// The interest that covers a resident for (agency, purpose) on `day`: the person's own,
    /// or the whole municipality's when `municipality_wide` (the purpose allows it).
    pub async fn interest_covering(
        &self,
        agency: &str,
        purpose: &str,
        resident: &ResidentId,
        municipality_wide: bool,
        day: NaiveDate,
    ) -> Result<Option<Interest>> {
        let what = "reading interest";
        let rows = sqlx::query(self.sql(
            "SELECT agency_id, purpose_id, resident_id, items, valid_to, created_at, updated_at
             FROM agency_interests WHERE agency_id = $1 AND purpose_id = $2 AND (resident_id = $3 OR resident_id = $4)
             AND valid_to >= $5 ORDER BY resident_id DESC",
        ))
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .bind(resident.as_str().to_owned())
        .bind(EVERYONE)
        .bind(day.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?;
        for r in rows {
            let who: String = r.try_get("resident_id").map_err(q(what))?;
            if who == EVERYONE && !municipality_wide {
                continue;
            }
            return interest_from_row(&r).map(Some);
        }
        Ok(None)
    }

    /// An agency's interests, in (purpose, resident) order.
    pub async fn interests(&self, agency: &str) -> Result<Vec<Interest>> {
        let rows = sqlx::query(self.sql(
            "SELECT agency_id, purpose_id, resident_id, items, valid_to, created_at, updated_at
             FROM agency_interests WHERE agency_id = $1 ORDER BY purpose_id, resident_id",
        ))
        .bind(agency.to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading interest"))?;
        rows.iter().map(interest_from_row).collect()
    }

    /// The events of a stream after `after`, in sequence order, at most `limit`.
    pub async fn agency_events_after(
        &self,
        agency: &str,
        purpose: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AgencyEvent>> {
        let rows = sqlx::query(self.sql(
            "SELECT agency_id, purpose_id, seq, type, subject, local_gov_code, items, dictionary_version, time, state
             FROM agency_events WHERE agency_id = $1 AND purpose_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        ))
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading agency events"))?;
        rows.iter().map(event_from_row).collect()
    }

    /// The first sequence number still kept in a stream (older ones were archived).
    pub async fn first_kept_seq(&self, agency: &str, purpose: &str) -> Result<Option<i64>> {
        let row = sqlx::query(self.sql(
            "SELECT MIN(seq) AS first FROM agency_events WHERE agency_id = $1 AND purpose_id = $2",
        ))
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .fetch_one(&self.pool)
        .await
        .map_err(q("reading agency events"))?;
        row.try_get("first").map_err(q("reading agency events"))
    }

    /// An agency's streams (or every stream), for its status and for operators.
    pub async fn streams(&self, agency: Option<&str>) -> Result<Vec<Stream>> {
        let sql = format!(
            "SELECT {STREAM_COLUMNS} FROM agency_subscriptions s JOIN agencies a ON a.id = s.agency_id
             WHERE s.enabled = 1 AND ($1 IS NULL OR s.agency_id = $1) ORDER BY s.agency_id, s.purpose_id"
        );
        let rows = sqlx::query(self.sql_built(sql))
            .bind(agency.map(str::to_owned))
            .fetch_all(&self.pool)
            .await
            .map_err(q("reading event streams"))?;
        rows.iter().map(stream_from_row).collect()
    }

    /// Claims up to `limit` streams for `worker` until `lease_until`: enabled, with a verified
    /// endpoint, not held by another worker, and either with events due or silent since
    /// `heartbeat_before` (a heartbeat is due).
    pub async fn claim_streams(
        &self,
        worker: &str,
        limit: i64,
        now: DateTime<FixedOffset>,
        lease_until: DateTime<FixedOffset>,
        heartbeat_before: DateTime<FixedOffset>,
    ) -> Result<Vec<Stream>> {
        let pick = "SELECT s2.agency_id, s2.purpose_id FROM agency_subscriptions s2 JOIN agencies a2 ON a2.id = s2.agency_id
               WHERE s2.enabled = 1 AND a2.enabled = 1 AND a2.endpoint IS NOT NULL AND a2.verified_at IS NOT NULL
                 AND (s2.lease_until IS NULL OR s2.lease_until < $3)
                 AND ((s2.last_seq > s2.delivered_seq AND s2.next_attempt_at <= $3)
                      OR (s2.last_seq = s2.delivered_seq
                          AND (s2.last_sent_at IS NULL OR s2.last_sent_at < $4)))
               ORDER BY s2.next_attempt_at LIMIT $5";
        let sql = match self.backend {
            Backend::Postgres => format!(
                "UPDATE agency_subscriptions SET lease_holder = $1, lease_until = $2
                 WHERE (agency_id, purpose_id) IN ({pick} FOR UPDATE OF s2 SKIP LOCKED)
                 RETURNING agency_id, purpose_id"
            ),
            Backend::Sqlite => format!(
                "UPDATE agency_subscriptions SET lease_holder = $1, lease_until = $2
                 WHERE (agency_id, purpose_id) IN ({pick})
                 RETURNING agency_id, purpose_id"
            ),
        };
        let what = "claiming event streams";
        let mut tx = self.begin_write(what).await?;
        let claimed = sqlx::query(self.sql_built(sql))
            .bind(worker.to_owned())
            .bind(utc_text(lease_until))
            .bind(utc_text(now))
            .bind(utc_text(heartbeat_before))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(q(what))?;
        let mut out = Vec::new();
        for row in claimed {
            let agency: String = row.try_get("agency_id").map_err(q(what))?;
            let purpose: String = row.try_get("purpose_id").map_err(q(what))?;
            let sql = format!(
                "SELECT {STREAM_COLUMNS} FROM agency_subscriptions s JOIN agencies a ON a.id = s.agency_id
                 WHERE s.agency_id = $1 AND s.purpose_id = $2"
            );
            let row = sqlx::query(self.sql_built(sql))
                .bind(agency)
                .bind(purpose)
                .fetch_one(&mut *tx)
                .await
                .map_err(q(what))?;
            out.push(stream_from_row(&row)?);
        }
        tx.commit().await.map_err(q(what))?;
        Ok(out)
    }

    /// Settles a delivery run on a stream and releases it. Does nothing (returns false) when
    /// the worker no longer holds the stream: another took it over and will send again.
    pub async fn settle_stream(
        &self,
        worker: &str,
        agency: &str,
        purpose: &str,
        progress: &StreamProgress,
        now: DateTime<FixedOffset>,
    ) -> Result<bool> {
        let what = "settling an event stream";
        let mut tx = self.begin_write(what).await?;
        let row = sqlx::query(self.sql(
            "SELECT delivered_seq, lease_holder FROM agency_subscriptions WHERE agency_id = $1 AND purpose_id = $2",
        ))
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .fetch_optional(&mut *tx)
        .await
        .map_err(q(what))?;
        let Some(row) = row else { return Ok(false) };
        let holder: Option<String> = row.try_get("lease_holder").map_err(q(what))?;
        if holder.as_deref() != Some(worker) {
            return Ok(false);
        }
        let from: i64 = row.try_get("delivered_seq").map_err(q(what))?;
        let upto = progress.settled_upto.max(from);
        let at = utc_text(now);
        if upto > from {
            sqlx::query(self.sql(
                "UPDATE agency_events SET state = 'delivered', delivered_at = $1
                 WHERE agency_id = $2 AND purpose_id = $3 AND seq > $4 AND seq <= $5",
            ))
            .bind(at.clone())
            .bind(agency.to_owned())
            .bind(purpose.to_owned())
            .bind(from)
            .bind(upto)
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        }
        for (seq, reason) in &progress.dead {
            sqlx::query(self.sql(
                "UPDATE agency_events SET state = 'dead', delivered_at = NULL, last_error = $1
                 WHERE agency_id = $2 AND purpose_id = $3 AND seq = $4",
            ))
            .bind(reason.clone())
            .bind(agency.to_owned())
            .bind(purpose.to_owned())
            .bind(*seq)
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        }
        let advanced = upto > from;
        // The next attempt: a retry's time; now when the cursor moved; else as it was (a
        // heartbeat must not cut an event's backoff short).
        let next = match &progress.retry {
            Some((at, _)) => Some(utc_text(*at)),
            None if advanced => Some(utc_text(now)),
            None => None,
        };
        // The last error: a retry's reason, else the last dead letter's, else a failed
        // heartbeat's; cleared by anything accepted; else as it was.
        let error: Option<Option<String>> = if let Some((_, r)) = &progress.retry {
            Some(Some(r.clone()))
        } else if let Some((seq, r)) = progress.dead.last() {
            Some(Some(format!("event {seq}: {r}")))
        } else if let Some(h) = &progress.heartbeat_error {
            Some(Some(h.clone()))
        } else if progress.delivered > 0 || progress.sent_at.is_some() {
            Some(None)
        } else {
            None
        };
        sqlx::query(self.sql(
            "UPDATE agency_subscriptions SET delivered_seq = $1,
               attempts = CASE WHEN $2 = 1 THEN 0 ELSE attempts END + $3,
               next_attempt_at = COALESCE($4, next_attempt_at),
               last_error = CASE WHEN $5 = 1 THEN $6 ELSE last_error END,
               last_delivered_at = CASE WHEN $7 = 1 THEN $8 ELSE last_delivered_at END,
               last_sent_at = COALESCE($9, last_sent_at),
               dead = dead + $10, lease_holder = NULL, lease_until = NULL
             WHERE agency_id = $11 AND purpose_id = $12",
        ))
        .bind(upto)
        .bind(i64::from(advanced))
        .bind(i64::from(progress.retry.is_some()))
        .bind(next)
        .bind(i64::from(error.is_some()))
        .bind(error.flatten())
        .bind(i64::from(progress.delivered > 0))
        .bind(at)
        .bind(progress.sent_at.map(utc_text))
        .bind(progress.dead.len() as i64)
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        tx.commit().await.map_err(q(what))?;
        Ok(true)
    }

    /// A pull-only agency (no endpoint) read its stream up to `upto`: those events reached it,
    /// so they are delivered, in the resident's record, and archived in their time.
    pub async fn settle_read(
        &self,
        agency: &str,
        purpose: &str,
        upto: i64,
        now: DateTime<FixedOffset>,
    ) -> Result<()> {
        let what = "recording events read";
        let mut tx = self.begin_write(what).await?;
        let done = sqlx::query(self.sql(
            "UPDATE agency_events SET state = 'delivered', delivered_at = $1
             WHERE agency_id = $2 AND purpose_id = $3 AND seq <= $4 AND state = 'pending'",
        ))
        .bind(utc_text(now))
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .bind(upto)
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        if done.rows_affected() > 0 {
            sqlx::query(self.sql(
                "UPDATE agency_subscriptions SET delivered_seq = $1, last_delivered_at = $2, attempts = 0
                 WHERE agency_id = $3 AND purpose_id = $4 AND delivered_seq < $1",
            ))
            .bind(upto)
            .bind(utc_text(now))
            .bind(agency.to_owned())
            .bind(purpose.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        }
        tx.commit().await.map_err(q(what))
    }

    /// Sends a stream's events again from `after` (an operator's replay): the cursor goes
    /// back, and every event after it is delivered again with its own id.
    pub async fn rewind_stream(&self, agency: &str, purpose: &str, after: i64) -> Result<bool> {
        let done = sqlx::query(self.sql(
            "UPDATE agency_subscriptions SET delivered_seq = $1, attempts = 0, last_error = NULL
             WHERE agency_id = $2 AND purpose_id = $3 AND $1 < delivered_seq AND $1 >= 0",
        ))
        .bind(after)
        .bind(agency.to_owned())
        .bind(purpose.to_owned())
        .execute(&self.pool)
        .await
        .map_err(q("rewinding an event stream"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records what was provided (or withheld) about a person.
    pub async fn log_provision(&self, p: &Provision) -> Result<()> {
        sqlx::query(self.sql(
            "INSERT INTO access_log (resident_id, at, accessor_kind, accessor_id, accessor_name, basis, action, items, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ))
        .bind(p.resident_id.clone())
        .bind(utc_text(p.at))
        .bind(p.accessor_kind.clone())
        .bind(p.accessor_id.clone())
        .bind(p.accessor_name.clone())
        .bind(p.basis.clone())
        .bind(p.action.clone())
        .bind(codes_text(&p.items.iter().cloned().collect()))
        .bind(p.outcome.clone())
        .execute(&self.pool)
        .await
        .map_err(q("recording a provision"))?;
        Ok(())
    }

    /// What was provided about a resident, newest first: the events delivered (one still
    /// pending or given up on has not reached the agency) and every logged pull or archived
    /// event.
    pub async fn provisions(&self, resident: &ResidentId) -> Result<Vec<Provision>> {
        let what = "reading what was provided";
        let mut out = Vec::new();
        for row in sqlx::query(self.sql(
            "SELECT e.time, e.agency_id, a.name, e.purpose_id, e.items FROM agency_events e
             JOIN agencies a ON a.id = e.agency_id WHERE e.resident_id = $1 AND e.state = 'delivered'",
        ))
        .bind(resident.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?
        {
            let time: String = row.try_get("time").map_err(q(what))?;
            let items: String = row.try_get("items").map_err(q(what))?;
            out.push(Provision {
                resident_id: resident.as_str().to_owned(),
                at: parse_time("agency event time", &time)?,
                accessor_kind: "agency".into(),
                accessor_id: row.try_get("agency_id").map_err(q(what))?,
                accessor_name: row.try_get("name").map_err(q(what))?,
                basis: row.try_get("purpose_id").map_err(q(what))?,
                action: "event".into(),
                items: parse_codes("agency event items", &items)?,
                outcome: "provided".into(),
            });
        }
        for row in sqlx::query(self.sql(
            "SELECT at, accessor_kind, accessor_id, accessor_name, basis, action, items, outcome
             FROM access_log WHERE resident_id = $1",
        ))
        .bind(resident.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?
        {
            let at: String = row.try_get("at").map_err(q(what))?;
            let items: String = row.try_get("items").map_err(q(what))?;
            out.push(Provision {
                resident_id: resident.as_str().to_owned(),
                at: parse_time("access log time", &at)?,
                accessor_kind: row.try_get("accessor_kind").map_err(q(what))?,
                accessor_id: row.try_get("accessor_id").map_err(q(what))?,
                accessor_name: row.try_get("accessor_name").map_err(q(what))?,
                basis: row.try_get("basis").map_err(q(what))?,
                action: row.try_get("action").map_err(q(what))?,
                items: parse_codes("access log items", &items)?,
                outcome: row.try_get("outcome").map_err(q(what))?,
            });
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.at));
        Ok(out)
    }

    /// Moves the delivered events older than `before` into the access log (the resident's
    /// record keeps them) and deletes the settled ones from the streams (a dead letter was
    /// never sent; it goes with them). Returns how many.
    pub async fn archive_agency_events(&self, before: DateTime<FixedOffset>) -> Result<u64> {
        let what = "archiving agency events";
        let mut tx = self.begin_write(what).await?;
        let cutoff = utc_text(before);
        sqlx::query(self.sql(
            "INSERT INTO access_log (resident_id, at, accessor_kind, accessor_id, accessor_name, basis, action, items, outcome)
             SELECT e.resident_id, e.time, 'agency', e.agency_id, a.name, e.purpose_id, 'event', e.items, 'provided'
             FROM agency_events e JOIN agencies a ON a.id = e.agency_id
             WHERE e.time < $1 AND e.state = 'delivered'",
        ))
        .bind(cutoff.clone())
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        let done = sqlx::query(
            self.sql("DELETE FROM agency_events WHERE time < $1 AND state <> 'pending'"),
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        tx.commit().await.map_err(q(what))?;
        Ok(done.rows_affected())
    }

    /// Spends a client assertion's `jti`: false when it was used before (a replay). Expired
    /// ones are forgotten, since an expired assertion is refused anyway.
    pub async fn spend_assertion(
        &self,
        agency: &str,
        jti: &str,
        expires_at: DateTime<FixedOffset>,
        now: DateTime<FixedOffset>,
    ) -> Result<bool> {
        let what = "recording a client assertion";
        let mut tx = self.begin_write(what).await?;
        sqlx::query(self.sql("DELETE FROM agency_assertions WHERE expires_at < $1"))
            .bind(utc_text(now))
            .execute(&mut *tx)
            .await
            .map_err(q(what))?;
        let done = sqlx::query(self.sql(
            "INSERT INTO agency_assertions (agency_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        ))
        .bind(agency.to_owned())
        .bind(jti.to_owned())
        .bind(utc_text(expires_at))
        .execute(&mut *tx)
        .await
        .map_err(q(what))?;
        tx.commit().await.map_err(q(what))?;
        Ok(done.rows_affected() == 1)
    }

    /// A resident's record as the register held it at the end of `day` (the version written
    /// by the last batch applied that day or before), or `None` if not yet on it.
    pub async fn resident_as_of(
        &self,
        id: &ResidentId,
        day: NaiveDate,
    ) -> Result<Option<Resident>> {
        let what = "reading a record as of a day";
        // Applied times are RFC 3339 with the offset they were written with; the day ends at
        // midnight in Tokyo, i.e. 15:00 UTC: compare instants, not text.
        let end = oshirase_engine::clock::in_tokyo(
            oshirase_engine::calendar::day_after(day),
            chrono::NaiveTime::MIN,
        );
        let rows = sqlx::query(self.sql(
            "SELECT r.record, b.applied_at FROM residents r JOIN ingest_batches b ON b.id = r.batch_id WHERE r.id = $1
             UNION ALL
             SELECT h.record, b.applied_at FROM resident_history h JOIN ingest_batches b ON b.id = h.batch_id
             WHERE h.resident_id = $1",
        ))
        .bind(id.as_str().to_owned())
        .fetch_all(&self.pool)
        .await
        .map_err(q(what))?;
        let mut best: Option<(DateTime<FixedOffset>, String)> = None;
        for row in rows {
            let applied: String = row.try_get("applied_at").map_err(q(what))?;
            let applied = parse_time("batch time", &applied)?;
            if applied >= end {
                continue;
            }
            if best.as_ref().is_none_or(|(t, _)| applied > *t) {
                best = Some((applied, row.try_get("record").map_err(q(what))?));
            }
        }
        best.map(|(_, record)| super::register::resident_from_json(id.as_str(), &record))
            .transpose()
    }
}

fn interest_from_row(r: &sqlx::any::AnyRow) -> Result<Interest> {
    let what = "reading interest";
    let who: String = r.try_get("resident_id").map_err(q(what))?;
    let items: Option<String> = r.try_get("items").map_err(q(what))?;
    let valid_to: String = r.try_get("valid_to").map_err(q(what))?;
    let created: String = r.try_get("created_at").map_err(q(what))?;
    let updated: String = r.try_get("updated_at").map_err(q(what))?;
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "interest",
        detail,
    };
    Ok(Interest {
        spec: InterestSpec {
            agency_id: r.try_get("agency_id").map_err(q(what))?,
            purpose_id: r.try_get("purpose_id").map_err(q(what))?,
            resident: if who == EVERYONE {
                None
            } else {
                Some(ResidentId::parse(&who).map_err(|e| corrupt(e.to_string()))?)
            },
            items: items
                .map(|t| parse_codes("interest items", &t).map(|v| v.into_iter().collect()))
                .transpose()?,
            valid_to: valid_to
                .parse()
                .map_err(|e: chrono::ParseError| corrupt(e.to_string()))?,
        },
        created_at: parse_time("interest time", &created)?,
        updated_at: parse_time("interest time", &updated)?,
    })
}
