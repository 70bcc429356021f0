//! Register change feeds (JSON Lines) and snapshot diffs: validated changes applied to a
//! population, producing the life events they imply. Format: docs/change-feed.md.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::ids::{HouseholdId, ResidentId};
use crate::population::{parse_json_line, DataError, DataErrors, EventKind, LifeEvent, Population};
use crate::resident::{Address, HouseholdLink, Relationship, Resident, Status};

pub const FEED_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedHeader {
    format: String,
    schema_version: u32,
    #[serde(default)]
    #[allow(dead_code)]
    local_gov_code: Option<crate::ids::LocalGovCode>,
}

/// One register change, by kind (異動事由).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// 出生: the child's record.
    Birth { record: Box<Resident> },
    /// 転入: the newcomer's record.
    MoveIn { record: Box<Resident> },
    /// 死亡.
    Death { resident: ResidentId },
    /// 転出.
    MoveOut { resident: ResidentId },
    /// 転居: a new address inside the municipality.
    AddressChange {
        resident: ResidentId,
        address: Address,
    },
    /// 世帯主変更: a new householder and, optionally, new 続柄 for other members.
    HouseholderChange {
        household: HouseholdId,
        new_householder: ResidentId,
        #[serde(default)]
        relationships: HashMap<ResidentId, Relationship>,
    },
    /// 世帯分離: residents leave for a new household.
    HouseholdSplit {
        residents: Vec<ResidentId>,
        household: HouseholdId,
        relationships: HashMap<ResidentId, Relationship>,
    },
    /// 世帯合併: residents join an existing household.
    HouseholdMerge {
        residents: Vec<ResidentId>,
        household: HouseholdId,
        relationships: HashMap<ResidentId, Relationship>,
    },
    /// 修正: top-level record fields replaced (the id cannot change).
    Correction {
        resident: ResidentId,
        fields: serde_json::Map<String, serde_json::Value>,
    },
}

/// A change with its place in the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedLine {
    /// Line number in the file (for errors).
    pub line: usize,
    pub seq: u64,
    /// The day the change took effect.
    pub date: NaiveDate,
    /// The day it reached the register (never before `date`).
    pub recorded: NaiveDate,
    pub change: Change,
}

/// A parsed feed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feed {
    pub lines: Vec<FeedLine>,
}

impl Feed {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Lines after `seq` (those not applied yet).
    pub fn after(&self, seq: i64) -> Feed {
        Feed {
            lines: self
                .lines
                .iter()
                .filter(|l| l.seq as i64 > seq)
                .cloned()
                .collect(),
        }
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.lines.last().map(|l| l.seq)
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    seq: u64,
    date: NaiveDate,
    #[serde(default)]
    recorded: Option<NaiveDate>,
}

fn parse_line(n: usize, line: &str, source: &str) -> Result<FeedLine, DataError> {
    let err = |field: Option<String>, message: String| DataError {
        source: source.to_owned(),
        line: n,
        field,
        message,
    };
    let mut value: serde_json::Map<String, serde_json::Value> =
        parse_json_line(line).map_err(|(f, m)| err(f, m))?;
    // The envelope fields are common to every kind; the rest is the change itself.
    let mut envelope = serde_json::Map::new();
    for k in ["seq", "date", "recorded"] {
        if let Some(v) = value.remove(k) {
            envelope.insert(k.to_owned(), v);
        }
    }
    let env: Envelope = serde_path_to_error::deserialize(serde_json::Value::Object(envelope))
        .map_err(|e| err(Some(e.path().to_string()), e.inner().to_string()))?;
    if env.seq == 0 {
        return Err(err(Some("seq".into()), "must be 1 or more".into()));
    }
    let recorded = env.recorded.unwrap_or(env.date);
    if recorded < env.date {
        return Err(err(
            Some("recorded".into()),
            format!("{recorded} is before the change's date {}", env.date),
        ));
    }
    if !crate::calendar::supported(env.date) || !crate::calendar::supported(recorded) {
        return Err(err(
            Some("date".into()),
            "outside the supported years".into(),
        ));
    }
    let change: Change = serde_path_to_error::deserialize(serde_json::Value::Object(value))
        .map_err(|e| {
            err(
                Some(e.path().to_string()).filter(|p| p != "."),
                e.inner().to_string(),
            )
        })?;
    Ok(FeedLine {
        line: n,
        seq: env.seq,
        date: env.date,
        recorded,
        change,
    })
}

/// Parses a feed, returning the valid lines and every invalid line's error.
pub fn parse_feed_lenient(text: &str, source: &str) -> (Feed, Vec<DataError>) {
    let mut errors = Vec::new();
    let mut feed = Feed::default();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        None => errors.push(DataError {
            source: source.to_owned(),
            line: 1,
            field: None,
            message: "empty feed: line 1 must be the header {\"format\":\"oshirase-changes\",…}".into(),
        }),
        Some((n, line)) => match parse_json_line::<FeedHeader>(line) {
            Ok(h) if h.format == "oshirase-changes" && h.schema_version == FEED_SCHEMA_VERSION => {}
            Ok(h) => errors.push(DataError {
                source: source.to_owned(),
                line: n + 1,
                field: Some("format".into()),
                message: format!(
                    "{:?} version {} is not a change feed this release reads (oshirase-changes version {FEED_SCHEMA_VERSION})",
                    h.format, h.schema_version
                ),
            }),
            Err((field, message)) => errors.push(DataError {
                source: source.to_owned(),
                line: n + 1,
                field,
                message: format!("{message} (line 1 must be the feed header)"),
            }),
        },
    }
    let mut last_seq = 0;
    for (n, line) in lines {
        match parse_line(n + 1, line, source) {
            Ok(l) if l.seq <= last_seq => errors.push(DataError {
                source: source.to_owned(),
                line: n + 1,
                field: Some("seq".into()),
                message: format!("{} does not follow {last_seq}: seq must increase", l.seq),
            }),
            Ok(l) => {
                last_seq = l.seq;
                feed.lines.push(l);
            }
            Err(e) => errors.push(e),
        }
    }
    (feed, errors)
}

/// Parses a feed; any invalid line rejects the whole feed, with every error listed.
pub fn parse_feed(text: &str, source: &str) -> Result<Feed, DataErrors> {
    let (feed, errors) = parse_feed_lenient(text, source);
    if errors.is_empty() {
        Ok(feed)
    } else {
        Err(DataErrors(errors))
    }
}

/// The state after a feed, and the life events it implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub residents: Vec<Resident>,
    pub events: Vec<LifeEvent>,
}

struct State {
    residents: Vec<Resident>,
    by_id: HashMap<ResidentId, usize>,
    /// Feed line that last touched each resident (0: untouched), for validation errors.
    touched: Vec<usize>,
    events: Vec<LifeEvent>,
}

impl State {
    fn new(current: &[Resident]) -> Self {
        let residents = current.to_vec();
        let by_id = residents
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        let touched = vec![0; residents.len()];
        Self {
            residents,
            by_id,
            touched,
            events: Vec::new(),
        }
    }

    fn current(&self, id: &ResidentId) -> Option<usize> {
        self.by_id
            .get(id)
            .copied()
            .filter(|&i| self.residents[i].is_current())
    }

    fn household_members(&self, h: &HouseholdId) -> Vec<usize> {
        (0..self.residents.len())
            .filter(|&i| {
                self.residents[i].is_current() && self.residents[i].household_id() == Some(h)
            })
            .collect()
    }

    fn set_relationships(
        &mut self,
        l: &FeedLine,
        household: &HouseholdId,
        rels: &HashMap<ResidentId, Relationship>,
        required: &[ResidentId],
    ) -> Result<(), String> {
        for id in required {
            if !rels.contains_key(id) {
                return Err(format!("relationships: no 続柄 for {id}"));
            }
        }
        let mut ids: Vec<&ResidentId> = rels.keys().collect();
        ids.sort();
        for id in ids {
            let i = self
                .current(id)
                .ok_or_else(|| format!("relationships: no current resident {id}"))?;
            let r = &mut self.residents[i];
            let in_household = r.household_id() == Some(household) || required.contains(id);
            if !in_household {
                return Err(format!(
                    "relationships: {id} is not in household {household}"
                ));
            }
            r.household = Some(HouseholdLink {
                id: household.clone(),
                relationship: rels[id].clone(),
            });
            self.touched[i] = l.line;
        }
        Ok(())
    }

    fn apply(&mut self, l: &FeedLine) -> Result<(), (String, String)> {
        let e = |field: &str, msg: String| (field.to_owned(), msg);
        let unknown =
            |field: &str, id: &dyn std::fmt::Display| e(field, format!("no current resident {id}"));
        match &l.change {
            Change::Birth { record } | Change::MoveIn { record } => {
                let kind = if matches!(l.change, Change::Birth { .. }) {
                    EventKind::Birth
                } else {
                    EventKind::MoveIn
                };
                if self.current(&record.id).is_some() {
                    return Err(e(
                        "record.id",
                        format!("{} is already a current resident", record.id),
                    ));
                }
                let mut r = (**record).clone();
                let (since, reason) = if kind == EventKind::Birth {
                    (r.birth_date, crate::resident::ResidentReason::Birth)
                } else {
                    (l.date, crate::resident::ResidentReason::MoveIn)
                };
                if kind == EventKind::Birth && r.birth_date != l.date {
                    return Err(e(
                        "record.birth_date",
                        format!("{} is not the birth's date {}", r.birth_date, l.date),
                    ));
                }
                r.status = Status::Resident {
                    since: Some(since),
                    reason: Some(reason),
                    recorded: (l.recorded > since).then_some(l.recorded),
                };
                self.events
                    .push(LifeEvent::new(kind, r.id.clone(), l.date, Some(l.recorded)));
                match self.by_id.get(&r.id).copied() {
                    // A former resident coming back keeps their id.
                    Some(i) => {
                        self.residents[i] = r;
                        self.touched[i] = l.line;
                    }
                    None => {
                        self.by_id.insert(r.id.clone(), self.residents.len());
                        self.residents.push(r);
                        self.touched.push(l.line);
                    }
                }
            }
            Change::Death { resident } | Change::MoveOut { resident } => {
                let i = self
                    .current(resident)
                    .ok_or_else(|| unknown("resident", resident))?;
                let death = matches!(l.change, Change::Death { .. });
                let recorded = (l.recorded > l.date).then_some(l.recorded);
                self.residents[i].status = if death {
                    Status::Deceased {
                        date: l.date,
                        recorded,
                    }
                } else {
                    Status::MovedOut {
                        date: l.date,
                        recorded,
                    }
                };
                self.touched[i] = l.line;
                let kind = if death {
                    EventKind::Death
                } else {
                    EventKind::MoveOut
                };
                self.events.push(LifeEvent::new(
                    kind,
                    resident.clone(),
                    l.date,
                    Some(l.recorded),
                ));
            }
            Change::AddressChange { resident, address } => {
                let i = self
                    .current(resident)
                    .ok_or_else(|| unknown("resident", resident))?;
                self.residents[i].address = address.clone();
                self.touched[i] = l.line;
            }
            Change::HouseholderChange {
                household,
                new_householder,
                relationships,
            } => {
                let members = self.household_members(household);
                if members.is_empty() {
                    return Err(e(
                        "household",
                        format!("no household {household} with current residents"),
                    ));
                }
                let h = self
                    .current(new_householder)
                    .ok_or_else(|| unknown("new_householder", new_householder))?;
                if !members.contains(&h) {
                    return Err(e(
                        "new_householder",
                        format!("{new_householder} is not in household {household}"),
                    ));
                }
                for &m in &members {
                    let id = &self.residents[m].id;
                    if self.residents[m].is_householder()
                        && m != h
                        && !relationships.contains_key(id)
                    {
                        return Err(e(
                            "relationships",
                            format!("the present 世帯主 {id} needs a new 続柄 in relationships"),
                        ));
                    }
                }
                let mut rels = relationships.clone();
                rels.insert(
                    new_householder.clone(),
                    Relationship::parse("世帯主").expect("valid"),
                );
                self.set_relationships(l, household, &rels, &[])
                    .map_err(|m| e("relationships", m))?;
                self.events.push(LifeEvent::new(
                    EventKind::HouseholderChange,
                    new_householder.clone(),
                    l.date,
                    Some(l.recorded),
                ));
            }
            Change::HouseholdSplit {
                residents,
                household,
                relationships,
            } => {
                if !self.household_members(household).is_empty() {
                    return Err(e(
                        "household",
                        format!("household {household} already exists; use household_merge"),
                    ));
                }
                for id in residents {
                    self.current(id).ok_or_else(|| unknown("residents", id))?;
                }
                self.set_relationships(l, household, relationships, residents)
                    .map_err(|m| e("relationships", m))?;
            }
            Change::HouseholdMerge {
                residents,
                household,
                relationships,
            } => {
                if self.household_members(household).is_empty() {
                    return Err(e(
                        "household",
                        format!("no household {household} with current residents"),
                    ));
                }
                for id in residents {
                    self.current(id).ok_or_else(|| unknown("residents", id))?;
                }
                self.set_relationships(l, household, relationships, residents)
                    .map_err(|m| e("relationships", m))?;
            }
            Change::Correction { resident, fields } => {
                let i = *self
                    .by_id
                    .get(resident)
                    .ok_or_else(|| e("resident", format!("no resident {resident}")))?;
                if fields.contains_key("id") {
                    return Err(e(
                        "fields.id",
                        "an id cannot be corrected; register a new record".into(),
                    ));
                }
                let mut json = serde_json::to_value(&self.residents[i])
                    .map_err(|x| e("fields", x.to_string()))?;
                if let Some(obj) = json.as_object_mut() {
                    for (k, v) in fields {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                let r: Resident = serde_path_to_error::deserialize(json)
                    .map_err(|x| (format!("fields.{}", x.path()), x.inner().to_string()))?;
                self.residents[i] = r;
                self.touched[i] = l.line;
            }
        }
        Ok(())
    }
}

/// Applies each line it can; returns the state, the rejected lines' errors, and the errors of
/// the final state as a whole (which no skipping can fix).
fn apply_lines(
    current: &[Resident],
    feed: &Feed,
    source: &str,
) -> (Applied, Vec<DataError>, Vec<DataError>) {
    let mut state = State::new(current);
    let mut errors = Vec::new();
    for l in &feed.lines {
        // A rejected line must leave no trace: work on a copy, keep it only on success.
        let before = (
            state.residents.clone(),
            state.by_id.clone(),
            state.touched.clone(),
            state.events.len(),
        );
        if let Err((field, message)) = state.apply(l) {
            errors.push(DataError {
                source: source.to_owned(),
                line: l.line,
                field: Some(field),
                message,
            });
            state.residents = before.0;
            state.by_id = before.1;
            state.touched = before.2;
            state.events.truncate(before.3);
        }
    }
    // The final state must be a valid register (one 世帯主 per household, known guardians…).
    let lines = state.touched.clone();
    let invalid = match Population::build(
        state.residents.clone(),
        &lines,
        source,
        state.events.clone(),
    ) {
        Ok(_) => Vec::new(),
        Err(DataErrors(e)) => e,
    };
    (
        Applied {
            residents: state.residents,
            events: state.events,
        },
        errors,
        invalid,
    )
}

/// Applies every line of `feed` to `current`; any rejected line rejects the whole feed.
pub fn apply(current: &[Resident], feed: &Feed, source: &str) -> Result<Applied, DataErrors> {
    let (applied, mut errors, invalid) = apply_lines(current, feed, source);
    errors.extend(invalid);
    if errors.is_empty() {
        Ok(applied)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(DataErrors(errors))
    }
}

/// Applies the lines that can be applied and returns the others' errors; fails whole only
/// if the resulting register is invalid.
pub fn apply_lenient(
    current: &[Resident],
    feed: &Feed,
    source: &str,
) -> Result<(Applied, Vec<DataError>), DataErrors> {
    let (applied, errors, invalid) = apply_lines(current, feed, source);
    if invalid.is_empty() {
        Ok((applied, errors))
    } else {
        Err(DataErrors(invalid))
    }
}

/// Life events between two full snapshots. Events carry their own dates; `recorded` comes from
/// the record (never guessed from `as_of`, so an old birth in a first load is not "late").
/// A household whose current 世帯主 changed gives a householder change on `as_of`.
pub fn diff(old: &[Resident], new: &[Resident], as_of: NaiveDate) -> Vec<LifeEvent> {
    let old_by_id: HashMap<&ResidentId, &Resident> = old.iter().map(|r| (&r.id, r)).collect();
    let mut events = Vec::new();
    for r in new {
        let before = old_by_id.get(&r.id).copied();
        let was_current = before.is_some_and(Resident::is_current);
        let recorded = r.status.recorded();
        match &r.status {
            Status::Resident { since, reason, .. } if !was_current => match reason {
                Some(crate::resident::ResidentReason::Birth) => events.push(LifeEvent::new(
                    EventKind::Birth,
                    r.id.clone(),
                    r.birth_date,
                    recorded,
                )),
                Some(crate::resident::ResidentReason::MoveIn) => events.push(LifeEvent::new(
                    EventKind::MoveIn,
                    r.id.clone(),
                    since.unwrap_or(as_of),
                    recorded,
                )),
                _ => {}
            },
            Status::Deceased { date, .. } if before.is_none() || was_current => events.push(
                LifeEvent::new(EventKind::Death, r.id.clone(), *date, recorded),
            ),
            Status::MovedOut { date, .. } if before.is_none() || was_current => events.push(
                LifeEvent::new(EventKind::MoveOut, r.id.clone(), *date, recorded),
            ),
            _ => {}
        }
    }
    let heads = |list: &[Resident]| -> HashMap<HouseholdId, ResidentId> {
        list.iter()
            .filter(|r| r.is_current() && r.is_householder())
            .filter_map(|r| Some((r.household_id()?.clone(), r.id.clone())))
            .collect()
    };
    let (old_heads, new_heads) = (heads(old), heads(new));
    let mut changed: Vec<(&HouseholdId, &ResidentId)> = new_heads
        .iter()
        .filter(|(h, id)| old_heads.get(*h).is_some_and(|o| o != *id))
        .collect();
    changed.sort();
    for (_, id) in changed {
        events.push(LifeEvent::new(
            EventKind::HouseholderChange,
            id.clone(),
            as_of,
            None,
        ));
    }
    events
}
