//! A validated population: snapshot parsing with per-line errors, whole-file checks, the
//! indexes evaluation uses (birth date, household), and life events derived from statuses.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ids::{HouseholdId, LocalGovCode, ResidentId};
use crate::resident::{Resident, ResidentReason, Status};

/// The one snapshot schema version this release reads.
pub const SNAPSHOT_SCHEMA_VERSION: u32 = 1;

/// A problem in a snapshot, with its place. The message never holds personal data (a name,
/// an address, contact details) nor a long value whole ([`crate::shown`]): the line, the
/// field and the resident id say where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub source: String,
    pub line: usize,
    pub field: Option<String>,
    /// The record the problem is about, where it is known.
    pub resident: Option<ResidentId>,
    pub message: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.source, self.line)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(id) = &self.resident {
            write!(f, " (resident {id})")?;
        }
        Ok(())
    }
}

/// All the problems found in one input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DataErrors(pub Vec<DataError>);

impl fmt::Display for DataErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotHeader {
    pub format: String,
    pub schema_version: u32,
    #[serde(deserialize_with = "crate::resident::date")]
    pub as_of: NaiveDate,
    #[serde(default)]
    pub local_gov_code: Option<LocalGovCode>,
}

/// Kinds of life event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Birth,
    Death,
    MoveIn,
    MoveOut,
    HouseholderChange,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Birth => "birth",
            EventKind::Death => "death",
            EventKind::MoveIn => "move_in",
            EventKind::MoveOut => "move_out",
            EventKind::HouseholderChange => "householder_change",
        }
    }
}

/// A life event about one resident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifeEvent {
    pub kind: EventKind,
    pub subject: ResidentId,
    /// The day it happened: the occurrence of rules it triggers.
    pub date: NaiveDate,
    /// The day it reached the register (a birth after the 出生届, a death after the 死亡届);
    /// never before `date`. A notice cannot go out before this day.
    pub recorded: NaiveDate,
    /// Stable id: the occurrence part of a decision key.
    pub id: String,
}

impl LifeEvent {
    pub fn new(
        kind: EventKind,
        subject: ResidentId,
        date: NaiveDate,
        recorded: Option<NaiveDate>,
    ) -> Self {
        let id = format!("{}-{}-{}", kind.name(), subject, date);
        Self {
            kind,
            subject,
            date,
            recorded: recorded.unwrap_or(date).max(date),
            id,
        }
    }
}

/// An event in the population's indexes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventEntry {
    pub kind: EventKind,
    pub subject: usize,
    pub date: NaiveDate,
    pub recorded: NaiveDate,
    pub id: String,
}

impl EventEntry {
    fn of(e: LifeEvent, subject: usize) -> Self {
        Self {
            kind: e.kind,
            subject,
            date: e.date,
            recorded: e.recorded,
            id: e.id,
        }
    }
}

/// The events a record's status tells of: a birth on this register, a move in, a death, a
/// move out.
fn derived_events(r: &Resident) -> Vec<LifeEvent> {
    let recorded = r.status.recorded();
    let event = |kind, date| LifeEvent::new(kind, r.id.clone(), date, recorded);
    let mut out = Vec::new();
    // A birth is on the register from the birth date, whatever the record's status now.
    if let Status::Resident { reason, since, .. } = r.status {
        if reason == Some(ResidentReason::Birth) || since == Some(r.birth_date) {
            out.push(event(EventKind::Birth, r.birth_date));
        }
    }
    match r.status {
        Status::Resident {
            since: Some(since),
            reason: Some(ResidentReason::MoveIn),
            ..
        } => out.push(event(EventKind::MoveIn, since)),
        Status::Deceased { date, .. } => out.push(event(EventKind::Death, date)),
        Status::MovedOut { date, .. } => out.push(event(EventKind::MoveOut, date)),
        _ => {}
    }
    out
}

/// The same event may arrive twice (derived from a status and stored by an ingest that saw
/// it arrive late): one entry per id, the latest `recorded`, which is when the register
/// really learned of it.
fn latest_per_id(mut entries: Vec<EventEntry>) -> Vec<EventEntry> {
    entries.sort_by(|a, b| {
        (a.kind, a.subject, a.date, &a.id)
            .cmp(&(b.kind, b.subject, b.date, &b.id))
            .then(b.recorded.cmp(&a.recorded))
    });
    entries.dedup_by(|later, first| later.id == first.id);
    entries
}

/// An event about a person the register does not have.
fn no_subject(source: &str, e: &LifeEvent) -> DataError {
    DataError {
        source: source.to_owned(),
        line: 0,
        field: Some("events.subject".into()),
        resident: None,
        message: format!(
            "no record {:?} for the {} event",
            e.subject.as_str(),
            e.kind.name()
        ),
    }
}

fn insert_sorted<T: Ord>(v: &mut Vec<T>, x: T) {
    let at = v.binary_search(&x).unwrap_or_else(|at| at);
    v.insert(at, x);
}

fn remove_sorted(v: Option<&mut Vec<usize>>, x: usize) {
    if let Some(v) = v {
        if let Ok(at) = v.binary_search(&x) {
            v.remove(at);
        }
    }
}

/// Positions by id, and the records of each household, in position order.
pub type Checked = (HashMap<ResidentId, usize>, HashMap<HouseholdId, Vec<usize>>);

/// Residents with the indexes the evaluator needs. Changed only by `apply`, with the records
/// an ingest wrote.
#[derive(Debug, Default, Clone)]
pub struct Population {
    residents: Vec<Resident>,
    by_id: HashMap<ResidentId, usize>,
    households: HashMap<HouseholdId, Vec<usize>>,
    /// Residents who can be subjects (not `external`), by birth date.
    by_birth: BTreeMap<NaiveDate, Vec<usize>>,
    /// Events by the day they happened.
    events: BTreeMap<NaiveDate, Vec<EventEntry>>,
    /// Events that reached the register after the day they happened, by that later day.
    late_events: BTreeMap<NaiveDate, Vec<EventEntry>>,
}

impl Population {
    /// Builds and validates a population. `lines[i]` is the source line of `residents[i]`,
    /// used in error messages.
    pub fn build(
        residents: Vec<Resident>,
        lines: &[usize],
        source: &str,
        extra_events: Vec<LifeEvent>,
    ) -> Result<Self, DataErrors> {
        let (by_id, households) = Self::check(&residents, lines, source, &extra_events)?;
        Ok(Self::index(residents, by_id, households, extra_events))
    }

    /// Checks records alone and together (ids, households, references, dates), as `build`
    /// does, without building the indexes evaluation needs. `lines` as for `build`.
    pub fn check(
        residents: &[Resident],
        lines: &[usize],
        source: &str,
        extra_events: &[LifeEvent],
    ) -> Result<Checked, DataErrors> {
        let mut errors = Vec::new();
        let err = |i: usize, field: &str, message: String| DataError {
            source: source.to_owned(),
            line: lines.get(i).copied().unwrap_or(0),
            field: Some(field.to_owned()),
            resident: residents.get(i).map(|r| r.id.clone()),
            message,
        };
        let mut by_id = HashMap::with_capacity(residents.len());
        for (i, r) in residents.iter().enumerate() {
            if let Some(first) = by_id.insert(r.id.clone(), i) {
                errors.push(err(
                    i,
                    "id",
                    format!(
                        "duplicate id {:?} (first on line {})",
                        r.id.as_str(),
                        lines.get(first).copied().unwrap_or(0)
                    ),
                ));
            }
        }
        let mut households: HashMap<HouseholdId, Vec<usize>> = HashMap::new();
        for (i, r) in residents.iter().enumerate() {
            let external = matches!(r.status, Status::External);
            match (&r.household, external) {
                (Some(h), false) => households.entry(h.id.clone()).or_default().push(i),
                (None, false) => errors.push(err(
                    i,
                    "household",
                    "required for every record that is not `external`".into(),
                )),
                (Some(_), true) => errors.push(err(
                    i,
                    "household",
                    "an `external` record is not on this register and has no household".into(),
                )),
                (None, true) => {}
            }
            for (k, g) in r.guardians.iter().enumerate() {
                let field = format!("guardians[{k}].id");
                if g.id == r.id {
                    errors.push(err(
                        i,
                        &field,
                        "a person cannot be their own guardian".into(),
                    ));
                } else if !by_id.contains_key(&g.id) {
                    errors.push(err(
                        i,
                        &field,
                        format!("no record {:?} in this snapshot", g.id.as_str()),
                    ));
                }
            }
            for (k, p) in r.proxies.iter().enumerate() {
                let field = format!("proxies[{k}].id");
                if p.id == r.id {
                    errors.push(err(i, &field, "a person cannot be their own proxy".into()));
                } else if !by_id.contains_key(&p.id) {
                    errors.push(err(
                        i,
                        &field,
                        format!("no record {:?} in this snapshot", p.id.as_str()),
                    ));
                }
                if p.scopes.is_empty() {
                    errors.push(err(
                        i,
                        &format!("proxies[{k}].scopes"),
                        "must name at least one category or \"all\"".into(),
                    ));
                }
            }
            let range = format!(
                "outside the supported years {}-{}",
                crate::calendar::MIN_YEAR,
                crate::calendar::MAX_YEAR
            );
            if !crate::calendar::supported(r.birth_date) {
                errors.push(err(i, "birth_date", format!("{} is {range}", r.birth_date)));
            }
            if let Some(d) = r.status.date().filter(|d| !crate::calendar::supported(*d)) {
                errors.push(err(i, "status", format!("{d} is {range}")));
            }
            if r.status
                .recorded()
                .zip(r.status.date())
                .is_some_and(|(rec, d)| rec < d)
            {
                errors.push(err(
                    i,
                    "status.recorded",
                    "is before the date of the change itself".into(),
                ));
            }
            match r.status {
                Status::Deceased { date, .. } | Status::MovedOut { date, .. }
                    if date < r.birth_date =>
                {
                    errors.push(err(
                        i,
                        "status.date",
                        format!("{date} is before the birth date {}", r.birth_date),
                    ));
                }
                Status::Resident {
                    since: Some(since), ..
                } if since < r.birth_date => {
                    errors.push(err(
                        i,
                        "status.since",
                        format!("{since} is before the birth date {}", r.birth_date),
                    ));
                }
                _ => {}
            }
        }
        let mut hh_ids: Vec<&HouseholdId> = households.keys().collect();
        hh_ids.sort();
        for hid in hh_ids {
            let members = &households[hid];
            let current: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| residents[i].is_current())
                .collect();
            let heads: Vec<usize> = current
                .iter()
                .copied()
                .filter(|&i| residents[i].is_householder())
                .collect();
            if heads.len() > 1 {
                errors.push(err(
                    heads[1],
                    "household.relationship",
                    format!(
                        "household {:?} has {} current 世帯主 ({}); exactly one is allowed",
                        hid.as_str(),
                        heads.len(),
                        heads
                            .iter()
                            .map(|&i| residents[i].id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            // Right after a householder dies or leaves, the household has no 世帯主 until the
            // 世帯主変更届 is filed; any other household without one is an error.
            let head_left = members
                .iter()
                .any(|&i| !residents[i].is_current() && residents[i].is_householder());
            if heads.is_empty() && !current.is_empty() && !head_left {
                errors.push(err(
                    current[0],
                    "household.relationship",
                    format!("household {:?} has no 世帯主", hid.as_str()),
                ));
            }
        }
        for e in extra_events {
            if !by_id.contains_key(&e.subject) {
                errors.push(no_subject(source, e));
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(DataErrors(errors));
        }

        Ok((by_id, households))
    }

    /// The indexes over records already checked: births, and events derived from the
    /// statuses merged with the stored ones.
    fn index(
        residents: Vec<Resident>,
        by_id: HashMap<ResidentId, usize>,
        households: HashMap<HouseholdId, Vec<usize>>,
        extra_events: Vec<LifeEvent>,
    ) -> Self {
        let mut by_birth: BTreeMap<NaiveDate, Vec<usize>> = BTreeMap::new();
        let mut entries: Vec<EventEntry> = Vec::new();
        for (i, r) in residents.iter().enumerate() {
            if matches!(r.status, Status::External) {
                continue;
            }
            by_birth.entry(r.birth_date).or_default().push(i);
            entries.extend(derived_events(r).into_iter().map(|e| EventEntry::of(e, i)));
        }
        for e in extra_events {
            let i = by_id[&e.subject];
            entries.push(EventEntry::of(e, i));
        }
        let mut events: BTreeMap<NaiveDate, Vec<EventEntry>> = BTreeMap::new();
        let mut late_events: BTreeMap<NaiveDate, Vec<EventEntry>> = BTreeMap::new();
        for e in latest_per_id(entries) {
            if e.recorded > e.date {
                late_events.entry(e.recorded).or_default().push(e.clone());
            }
            events.entry(e.date).or_default().push(e);
        }
        Self {
            residents,
            by_id,
            households,
            by_birth,
            events,
            late_events,
        }
    }

    /// Brings the population up to date with records written since it was built (new ones or
    /// new versions; the register never deletes a record) and the events stored with them.
    /// `stored_events` are ALL the stored events of every subject among `changed` and
    /// `new_events`, old and new: the events of a subject are rebuilt from its record and
    /// these, exactly as `build` would. Records were checked when they were ingested.
    pub fn apply(
        &mut self,
        changed: Vec<Resident>,
        stored_events: Vec<LifeEvent>,
    ) -> Result<(), DataErrors> {
        // Checked before anything changes: an error leaves the population as it was.
        let new_ids: std::collections::HashSet<&ResidentId> =
            changed.iter().map(|r| &r.id).collect();
        let orphans: Vec<DataError> = stored_events
            .iter()
            .filter(|e| !self.by_id.contains_key(&e.subject) && !new_ids.contains(&e.subject))
            .map(|e| no_subject("store", e))
            .collect();
        if !orphans.is_empty() {
            return Err(DataErrors(orphans));
        }
        let mut stale_days: Vec<NaiveDate> = Vec::new();
        let mut subjects: Vec<usize> = Vec::new();
        for r in changed {
            let i = match self.by_id.get(&r.id) {
                Some(&i) => {
                    let old = std::mem::replace(&mut self.residents[i], r);
                    if !matches!(old.status, Status::External) {
                        if let Some(h) = old.household_id() {
                            remove_sorted(self.households.get_mut(h), i);
                        }
                        remove_sorted(self.by_birth.get_mut(&old.birth_date), i);
                    }
                    for e in derived_events(&old) {
                        stale_days.extend([e.date, e.recorded]);
                    }
                    i
                }
                None => {
                    let i = self.residents.len();
                    self.by_id.insert(r.id.clone(), i);
                    self.residents.push(r);
                    i
                }
            };
            let r = &self.residents[i];
            // As in `build`: `external` records are in no household and are never subjects.
            if !matches!(r.status, Status::External) {
                if let Some(h) = r.household_id() {
                    insert_sorted(self.households.entry(h.clone()).or_default(), i);
                }
                insert_sorted(self.by_birth.entry(r.birth_date).or_default(), i);
            }
            subjects.push(i);
        }
        let mut entries: Vec<EventEntry> = Vec::new();
        for e in stored_events {
            let i = self.by_id[&e.subject];
            stale_days.extend([e.date, e.recorded]);
            subjects.push(i);
            entries.push(EventEntry::of(e, i));
        }
        subjects.sort_unstable();
        subjects.dedup();
        // Every entry of these subjects sits on a day of an event derived from their old
        // record or of a stored event: drop them there, then add what they are now.
        stale_days.sort_unstable();
        stale_days.dedup();
        for day in &stale_days {
            for index in [&mut self.events, &mut self.late_events] {
                if let Some(v) = index.get_mut(day) {
                    v.retain(|e| subjects.binary_search(&e.subject).is_err());
                    if v.is_empty() {
                        index.remove(day);
                    }
                }
            }
        }
        for &i in &subjects {
            let r = &self.residents[i];
            if !matches!(r.status, Status::External) {
                entries.extend(derived_events(r).into_iter().map(|e| EventEntry::of(e, i)));
            }
        }
        for e in latest_per_id(entries) {
            if e.recorded > e.date {
                insert_sorted(self.late_events.entry(e.recorded).or_default(), e.clone());
            }
            insert_sorted(self.events.entry(e.date).or_default(), e);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.residents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.residents.is_empty()
    }

    pub fn residents(&self) -> &[Resident] {
        &self.residents
    }

    /// The records, without the indexes (for callers that store them).
    pub fn into_residents(self) -> Vec<Resident> {
        self.residents
    }

    pub fn get(&self, i: usize) -> &Resident {
        &self.residents[i]
    }

    pub fn index_of(&self, id: &ResidentId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// All records of a household, current or not, in snapshot order.
    pub fn household(&self, id: &HouseholdId) -> &[usize] {
        self.households.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Other members of `i`'s household on the register on day `d`.
    pub fn housemates(&self, i: usize, d: NaiveDate) -> Vec<usize> {
        match self.residents[i].household_id() {
            Some(h) => self
                .household(h)
                .iter()
                .copied()
                .filter(|&j| j != i && self.residents[j].on_register(d))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The 世帯主 of `i`'s household on the register on day `d`.
    pub fn householder(&self, i: usize, d: NaiveDate) -> Option<usize> {
        let h = self.residents[i].household_id()?;
        self.household(h)
            .iter()
            .copied()
            .find(|&j| self.residents[j].is_householder() && self.residents[j].on_register(d))
    }

    /// Subjects born within `from..=to`.
    /// The spouse of resident `i` on the register on `d`, as the household shows it: the
    /// householder's 妻/夫 (未届 included) for the householder, the householder for that
    /// spouse. Nobody else's spouse can be read from a 住民票.
    pub fn spouse(&self, i: usize, d: NaiveDate) -> Option<usize> {
        let is_householders_spouse = |j: usize| {
            self.residents[j]
                .household
                .as_ref()
                .is_some_and(|h| h.relationship.is_householders_spouse())
        };
        if self.residents[i].is_householder() {
            self.housemates(i, d)
                .into_iter()
                .find(|&j| is_householders_spouse(j))
        } else if is_householders_spouse(i) {
            self.householder(i, d)
        } else {
            None
        }
    }

    pub fn born_between(&self, from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = usize> + '_ {
        self.by_birth
            .range(from..=to)
            .flat_map(|(_, v)| v.iter().copied())
    }

    /// Every possible subject (all records but `external` ones).
    pub fn subjects(&self) -> impl Iterator<Item = usize> + '_ {
        self.by_birth.values().flat_map(|v| v.iter().copied())
    }

    /// Events of `kind` that happened on `date`.
    pub fn events_on(
        &self,
        kind: EventKind,
        date: NaiveDate,
    ) -> impl Iterator<Item = &EventEntry> + '_ {
        self.events
            .get(&date)
            .into_iter()
            .flatten()
            .filter(move |e| e.kind == kind)
    }

    /// Events of `kind` that reached the register on `date`, later than they happened.
    pub fn events_recorded_late_on(
        &self,
        kind: EventKind,
        date: NaiveDate,
    ) -> impl Iterator<Item = &EventEntry> + '_ {
        self.late_events
            .get(&date)
            .into_iter()
            .flatten()
            .filter(move |e| e.kind == kind)
    }

    /// The event `id` that happened on `date`, if the population has it.
    pub fn event(&self, date: NaiveDate, id: &str) -> Option<&EventEntry> {
        self.events.get(&date)?.iter().find(|e| e.id == id)
    }

    /// All events of a subject (for `explain`).
    pub fn events_of(&self, i: usize) -> Vec<&EventEntry> {
        self.events
            .values()
            .flatten()
            .filter(|e| e.subject == i)
            .collect()
    }
}

/// A parsed snapshot.
#[derive(Debug)]
pub struct Snapshot {
    pub header: SnapshotHeader,
    pub population: Population,
}

/// A snapshot's lines parsed: the header if it is good, the records with their line
/// numbers, and the problems of every bad line.
struct ParsedLines {
    header: Option<SnapshotHeader>,
    residents: Vec<Resident>,
    lines: Vec<usize>,
    errors: Vec<DataError>,
}

fn parse_lines(text: &str, source: &str) -> Result<ParsedLines, DataErrors> {
    // A byte order mark, as some exports write, is not part of the header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut errors = Vec::new();
    let mut lines_iter = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = match lines_iter.next() {
        None => {
            return Err(DataErrors(vec![DataError {
                source: source.to_owned(),
                line: 1,
                field: None,
                resident: None,
                message:
                    "empty snapshot: line 1 must be the header {\"format\":\"oshirase-snapshot\",…}"
                        .into(),
            }]))
        }
        Some((n, line)) => match parse_json_line::<SnapshotHeader>(line) {
            Ok(h) if h.format != "oshirase-snapshot" => {
                errors.push(DataError {
                    source: source.to_owned(),
                    line: n + 1,
                    field: Some("format".into()),
                    resident: None,
                    message: format!(
                        "{} is not \"oshirase-snapshot\"",
                        crate::shown::quoted(&h.format)
                    ),
                });
                None
            }
            Ok(h) if h.schema_version != SNAPSHOT_SCHEMA_VERSION => {
                errors.push(DataError {
                    source: source.to_owned(),
                    line: n + 1,
                    field: Some("schema_version".into()),
                    resident: None,
                    message: format!(
                        "schema version {} is not supported; this release reads version {SNAPSHOT_SCHEMA_VERSION}",
                        h.schema_version
                    ),
                });
                None
            }
            Ok(h) => Some(h),
            Err((field, message)) => {
                errors.push(DataError {
                    source: source.to_owned(),
                    line: n + 1,
                    field,
                    resident: None,
                    message: format!("{message} (line 1 must be the snapshot header)"),
                });
                None
            }
        },
    };
    // Records are independent of each other until they are checked together: parse them on
    // every core (half of a large ingest was this).
    let numbered: Vec<(usize, &str)> = lines_iter.collect();
    let parsed: Vec<_> = numbered
        .par_iter()
        .map(|(n, line)| {
            let r = parse_json_line::<Resident>(line);
            // A bad record is named by its id, where that much of it reads.
            let id = r.as_ref().err().and_then(|_| record_id(line));
            (*n, r, id)
        })
        .collect();
    let mut residents = Vec::with_capacity(parsed.len());
    let mut lines = Vec::with_capacity(parsed.len());
    for (n, r, id) in parsed {
        match r {
            Ok(r) => {
                residents.push(r);
                lines.push(n + 1);
            }
            Err((field, message)) => errors.push(DataError {
                source: source.to_owned(),
                line: n + 1,
                field,
                resident: id,
                message,
            }),
        }
    }
    Ok(ParsedLines {
        header,
        residents,
        lines,
        errors,
    })
}

/// The problems of a snapshot: its bad lines, then what checking the records together found.
fn snapshot_errors(mut errors: Vec<DataError>, checked: Result<(), DataErrors>) -> DataErrors {
    if let Err(DataErrors(more)) = checked {
        errors.extend(more);
    }
    errors.sort_by_key(|e| e.line);
    DataErrors(errors)
}

/// Parses snapshot text into a population. Every bad line is reported; nothing is returned if
/// any line is bad.
pub fn parse_snapshot(text: &str, source: &str) -> Result<Snapshot, DataErrors> {
    let p = parse_lines(text, source)?;
    let population = Population::build(p.residents, &p.lines, source, Vec::new());
    match (p.header, population) {
        (Some(header), Ok(population)) if p.errors.is_empty() => {
            Ok(Snapshot { header, population })
        }
        (_, pop) => Err(snapshot_errors(p.errors, pop.map(|_| ()))),
    }
}

/// A snapshot's records, checked, without the indexes evaluation needs (what an ingest
/// stores).
#[derive(Debug)]
pub struct SnapshotRecords {
    pub header: SnapshotHeader,
    pub residents: Vec<Resident>,
    /// The source line of each record.
    pub lines: Vec<usize>,
}

impl SnapshotRecords {
    /// Checks the register this snapshot leaves when stored over `stored`: its records, and
    /// the stored records it does not hold, which stay as they are. A snapshot valid on its
    /// own can still contradict those (a new 世帯主 for a household whose stored one it left
    /// out). Errors name the snapshot line, or for a stored record line 0 and its id.
    pub fn check_onto(
        &self,
        stored: &[Resident],
        source: &str,
        events: &[LifeEvent],
    ) -> Result<(), DataErrors> {
        let held: std::collections::HashSet<&ResidentId> =
            self.residents.iter().map(|r| &r.id).collect();
        // The stored records first, so that of two records in conflict the one reported is
        // the snapshot's, with its line.
        let kept: Vec<&Resident> = stored.iter().filter(|r| !held.contains(&r.id)).collect();
        if kept.is_empty() {
            // The register is the snapshot, checked when it was parsed.
            return Ok(());
        }
        let register: Vec<Resident> = kept
            .iter()
            .map(|r| (*r).clone())
            .chain(self.residents.iter().cloned())
            .collect();
        // Record i is "line" i + 1 for the check, so each error names its record.
        let places: Vec<usize> = (1..=register.len()).collect();
        let Err(DataErrors(errors)) = Population::check(&register, &places, source, events) else {
            return Ok(());
        };
        let mut errors: Vec<DataError> = errors
            .into_iter()
            .map(|mut e| {
                let Some(i) = e.line.checked_sub(1).filter(|&i| i < register.len()) else {
                    return e;
                };
                e.line = i
                    .checked_sub(kept.len())
                    .map_or(0, |j| self.lines.get(j).copied().unwrap_or(0));
                let mut left_out: Vec<&str> = Vec::new();
                if i < kept.len() {
                    left_out.push(register[i].id.as_str());
                }
                // A household problem may come from stored members the snapshot left out.
                if e.field
                    .as_deref()
                    .is_some_and(|f| f.starts_with("household"))
                {
                    let h = register[i].household_id();
                    left_out.extend(
                        kept.iter()
                            .filter(|r| r.is_current() && r.household_id() == h)
                            .map(|r| r.id.as_str())
                            .filter(|id| *id != register[i].id.as_str()),
                    );
                }
                if !left_out.is_empty() {
                    let verb = if left_out.len() == 1 { "is" } else { "are" };
                    e.message.push_str(&format!(
                        "; {} {verb} stored and not in this snapshot, which leaves {} as stored",
                        left_out.join(", "),
                        if left_out.len() == 1 { "it" } else { "them" },
                    ));
                }
                e
            })
            .collect();
        errors.sort_by_key(|e| e.line);
        Err(DataErrors(errors))
    }
}

/// Parses and checks snapshot text as `parse_snapshot` does, giving the header and the
/// records without the indexes evaluation needs (what an ingest stores).
pub fn parse_snapshot_records(text: &str, source: &str) -> Result<SnapshotRecords, DataErrors> {
    let p = parse_lines(text, source)?;
    let checked = Population::check(&p.residents, &p.lines, source, &[]).map(|_| ());
    match p.header {
        Some(header) if p.errors.is_empty() && checked.is_ok() => Ok(SnapshotRecords {
            header,
            residents: p.residents,
            lines: p.lines,
        }),
        _ => Err(snapshot_errors(p.errors, checked)),
    }
}

/// Input bytes as UTF-8 text, or an error naming the line and column of the first byte that
/// is not UTF-8.
pub fn utf8_text<'a>(bytes: &'a [u8], source: &str) -> Result<&'a str, DataErrors> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = std::str::from_utf8(&good[line_start..]).map_or(0, |s| s.chars().count()) + 1;
        DataErrors(vec![DataError {
            source: source.to_owned(),
            line: good.iter().filter(|&&b| b == b'\n').count() + 1,
            field: None,
            resident: None,
            message: format!(
                "column {column}: byte 0x{:02x} is not UTF-8; the file must be UTF-8 text",
                bytes[e.valid_up_to()]
            ),
        }])
    })
}

/// Reads and parses a snapshot file.
pub fn load_snapshot(path: &Path) -> Result<Snapshot, DataErrors> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        DataErrors(vec![DataError {
            source: source.clone(),
            line: 0,
            field: None,
            resident: None,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse_snapshot(utf8_text(&bytes, &source)?, &source)
}

/// Deserializes the one JSON value of a line, returning the failing field path and a
/// message. Anything but white space after the value is an error: two lines joined by a
/// lost line break would otherwise lose the second.
pub(crate) fn parse_json_line<T: serde::de::DeserializeOwned>(
    line: &str,
) -> Result<T, (Option<String>, String)> {
    let de = &mut serde_json::Deserializer::from_str(line);
    let crate::resident::Object(value) =
        serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let path = e.path().to_string();
            let message =
                crate::shown::message_about(&path, &strip_position(&e.into_inner().to_string()));
            ((path != ".").then(|| crate::shown::cap(&path)), message)
        })?;
    de.end().map_err(|e| {
        (
            None,
            format!(
                "column {}: data after the end of the JSON object; a line holds exactly one (a lost line break?)",
                char_column(line, e.column())
            ),
        )
    })?;
    Ok(value)
}

/// The id of a record line that did not parse, if the line is JSON with a valid `id`.
pub(crate) fn record_id(line: &str) -> Option<ResidentId> {
    #[derive(Deserialize)]
    struct Id {
        id: ResidentId,
    }
    let mut values = serde_json::Deserializer::from_str(line).into_iter::<Id>();
    values.next()?.ok().map(|r| r.id)
}

/// serde_json counts columns in bytes from 1; people and editors count characters.
fn char_column(line: &str, byte_column: usize) -> usize {
    let end = byte_column.saturating_sub(1).min(line.len());
    line.get(..end)
        .map_or(byte_column, |before| before.chars().count() + 1)
}

/// serde_json appends " at line 1 column N"; the caller reports the real line.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#;

    fn rec(id: &str, hh: &str, rel: &str, extra: &str) -> String {
        format!(
            r#"{{"id":"{id}","name":{{"kanji":"山田 太郎","kana":"ヤマダ タロウ"}},"birth_date":"1980-05-01","sex":1,"status":{{"kind":"resident"}},"address":{{"local_gov_code":"133621","text":"東京都利島村1番地"}},"household":{{"id":"{hh}","relationship":"{rel}"}}{extra}}}"#
        )
    }

    fn errors_of(text: &str) -> Vec<String> {
        parse_snapshot(text, "t.jsonl")
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_valid_household_parses_and_is_indexed() {
        let text = [
            HEADER.to_string(),
            rec("R1", "H1", "世帯主", ""),
            rec("R2", "H1", "子", r#","guardians":[{"id":"R1"}]"#),
        ]
        .join("\n");
        let s = parse_snapshot(&text, "t.jsonl").unwrap();
        assert_eq!(s.population.len(), 2);
        let d = "2026-10-01".parse().unwrap();
        assert_eq!(s.population.householder(1, d), Some(0));
        assert_eq!(s.population.housemates(0, d), vec![1]);
        // Before the child's birth only the householder was there.
        assert!(s
            .population
            .housemates(0, "1980-04-30".parse().unwrap())
            .is_empty());
    }

    #[test]
    fn every_bad_line_is_reported_with_line_and_field() {
        let text = [
            HEADER.to_string(),
            rec("R1", "H1", "世帯主", ""),
            rec("R2", "H1", "孫", ""),
            rec("R3", "H2", "世帯主", "").replace("133621", "133622"),
            rec("R4", "H3", "世帯主", "").replace("1980-05-01", "2023-02-29"),
            rec("R5", "H4", "世帯主", r#","colour":"blue""#),
            rec("R6", "H5", "世帯主", r#","guardians":[{"id":"R99"}]"#),
        ]
        .join("\n");
        let errs = errors_of(&text);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0].starts_with("t.jsonl:3: field `household.relationship`: unknown 続柄 \"孫\""),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("t.jsonl:4: field `address.local_gov_code`: check digit"),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with("t.jsonl:5: field `birth_date`"),
            "{}",
            errs[2]
        );
        assert!(
            errs[3].contains("t.jsonl:6:") && errs[3].contains("unknown field `colour`"),
            "{}",
            errs[3]
        );
        assert_eq!(
            errs[4],
            "t.jsonl:7: field `guardians[0].id`: no record \"R99\" in this snapshot (resident R6)"
        );
    }

    #[test]
    fn a_record_with_data_after_it_is_refused_with_its_column() {
        let first = rec("R1", "H1", "世帯主", "");
        let column = first.chars().count() + 1;
        let text = [
            HEADER.to_string(),
            format!("{first}{}", rec("R2", "H2", "世帯主", "")),
            format!("{},", rec("R3", "H3", "世帯主", "")),
        ]
        .join("\n");
        let errs = errors_of(&text);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].starts_with(&format!("t.jsonl:2: column {column}: ")),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with(&format!("t.jsonl:3: column {column}: ")),
            "{}",
            errs[1]
        );
        let header = format!("{HEADER}{{}}\n{first}");
        let errs = errors_of(&header);
        assert!(errs[0].starts_with("t.jsonl:1: column 71: "), "{}", errs[0]);
    }

    #[test]
    fn lenient_values_are_refused_with_their_line_and_field() {
        let base = rec("R1", "H1", "世帯主", "");
        let with = |extra: &str| rec("R1", "H1", "世帯主", extra);
        let status = |s: &str| base.replace(r#"{"kind":"resident"}"#, s);
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            (base.replace("1980-05-01", "+1980-05-01"), Some("birth_date"), "YYYY-MM-DD"),
            (base.replace("1980-05-01", "1980-5-1"), Some("birth_date"), "YYYY-MM-DD"),
            (base.replace("1980-05-01", " 1980-05-01"), Some("birth_date"), "YYYY-MM-DD"),
            (base.replace("1980-05-01", "1980-05-01 "), Some("birth_date"), "YYYY-MM-DD"),
            (
                status(r#"{"kind":"deceased","date":"2026-01-01","recorded":"2301-01-01"}"#),
                Some("status.recorded"),
                "outside the supported years",
            ),
            (
                status(r#"{"kind":"resident","since":"1970-01-01","reason":"move_in"}"#),
                Some("status.since"),
                "before the birth date",
            ),
            (
                with(r#","proxies":[{"id":"R2","scopes":["pension","pensoin"]}]"#),
                Some("proxies[0].scopes[1]"),
                "pension",
            ),
            (
                with(r#","proxies":[{"id":"R2","scopes":["all"],"until":"2027-1-31"}]"#),
                Some("proxies[0].until"),
                "YYYY-MM-DD",
            ),
            (with(r#","attributes":{"":true}"#), Some("attributes"), "empty"),
            (with(r#","attributes":{" ":true}"#), Some("attributes"), "empty"),
            (with(r#","guardians":{"id":"R2"}"#), Some("guardians"), "sequence"),
            (with(r#","guardians":[["R2"]]"#), Some("guardians[0]"), "object"),
            (
                base.replace(
                    r#"{"kanji":"山田 太郎","kana":"ヤマダ タロウ"}"#,
                    r#"["山田 太郎","ヤマダ タロウ"]"#,
                ),
                Some("name"),
                "object",
            ),
            (
                r#"["R1",{"kanji":"山田 太郎","kana":"ヤマダ タロウ"},"1980-05-01",1,{"kind":"resident"},{"local_gov_code":"133621","text":"x"},{"id":"H1","relationship":"世帯主"}]"#.to_string(),
                None,
                "object",
            ),
        ];
        for (line, field, want) in cases {
            let text = [
                HEADER.to_string(),
                line.clone(),
                rec("R2", "H2", "世帯主", ""),
            ]
            .join("\n");
            let errs = match parse_snapshot(&text, "t.jsonl") {
                Ok(_) => panic!("accepted: {line}"),
                Err(e) => e.0,
            };
            assert_eq!(errs.len(), 1, "{line}: {errs:#?}");
            assert_eq!(
                (errs[0].line, errs[0].field.as_deref()),
                (2, field),
                "{line}: {}",
                errs[0]
            );
            assert!(
                errs[0].message.contains(want),
                "{line}\n  want {want:?}\n  got {}",
                errs[0]
            );
        }
        let header = HEADER.replace("2026-10-01", "2026-10-1");
        let errs = errors_of(&[header, base.clone()].join("\n"));
        assert!(errs[0].starts_with("t.jsonl:1: field `as_of`"), "{errs:?}");
    }

    #[test]
    fn a_byte_order_mark_before_the_header_is_ignored() {
        let text = format!("\u{feff}{HEADER}\n{}", rec("R1", "H1", "世帯主", ""));
        let s = parse_snapshot(&text, "t.jsonl").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.population.len(), 1);
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut bytes = format!("{HEADER}\n{}\n", rec("R1", "H1", "世帯主", "")).into_bytes();
        bytes.extend_from_slice(b"{\"id\":\"R2\",\"name\":\"\xff\"}\n");
        std::fs::write(&path, bytes).unwrap();
        let errs = load_snapshot(&path).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 3, "{}", errs[0]);
        assert!(errs[0].message.contains("UTF-8"), "{}", errs[0]);
    }

    #[test]
    fn errors_never_echo_personal_data_or_whole_values() {
        let base = rec("R1", "H1", "世帯主", "");
        let long_kana = "山田".repeat(500_000);
        let long_key = "k".repeat(10_000);
        let long_relation = "孫".repeat(10_000);
        let cases: Vec<(String, &str, &str)> = vec![
            // (line, field, what must not appear)
            (
                base.replace("ヤマダ タロウ", &long_kana),
                "name.kana",
                "山田山田",
            ),
            (
                base.replace("ヤマダ タロウ", "Yamada Taro"),
                "name.kana",
                "Yamada",
            ),
            (
                base.replace(
                    r#"{"kanji":"山田 太郎","kana":"ヤマダ タロウ"}"#,
                    r#""山田 太郎""#,
                ),
                "name",
                "山田",
            ),
            (
                base.replace(r#""text":"東京都利島村1番地""#, r#""text":7"#),
                "address.text",
                "7",
            ),
            (
                base.replace(
                    r#""text":"東京都利島村1番地""#,
                    r#""text":"東京都利島村1番地","postal_code":"100-03O1""#,
                ),
                "address.postal_code",
                "100-03O1",
            ),
            (
                rec(
                    "R1",
                    "H1",
                    "世帯主",
                    r#","contact":{"email":"taro.yamada@example"}"#,
                ),
                "contact.email",
                "taro.yamada",
            ),
            (
                base.replace(r#""id":"R1""#, r#""id":"123456789012""#),
                "id",
                "123456789012",
            ),
            (
                base.replace(r#""sex":1"#, &format!(r#""sex":"{long_key}""#)),
                "sex",
                &long_key[..200],
            ),
            (
                rec("R1", "H1", "世帯主", &format!(r#","{long_key}":1"#)),
                &long_key,
                &long_key[..200],
            ),
            (
                base.replace("世帯主", &long_relation),
                "household.relationship",
                &long_relation[..300],
            ),
        ];
        for (line, field, hidden) in cases {
            let text = [HEADER.to_string(), line.clone()].join("\n");
            let errs = match parse_snapshot(&text, "t.jsonl") {
                Ok(_) => panic!("accepted: {}", &line[..200.min(line.len())]),
                Err(e) => e.0,
            };
            let shown = errs[0].to_string();
            assert!(
                shown.chars().count() < 600,
                "{field}: {} characters: {}",
                shown.len(),
                shown.chars().take(600).collect::<String>()
            );
            assert!(!shown.contains(hidden), "{field}: {shown}");
            if field != long_key {
                assert_eq!(errs[0].field.as_deref(), Some(field), "{shown}");
            }
            // The record is named by its id, unless the id is the problem.
            if field != "id" {
                assert!(shown.contains("resident R1"), "{field}: {shown}");
            }
        }
    }

    #[test]
    fn households_need_exactly_one_householder() {
        let two = [
            HEADER.to_string(),
            rec("R1", "H1", "世帯主", ""),
            rec("R2", "H1", "世帯主", ""),
        ]
        .join("\n");
        assert!(errors_of(&two)[0].contains("2 current 世帯主"));
        let none = [HEADER.to_string(), rec("R1", "H1", "妻", "")].join("\n");
        assert!(errors_of(&none)[0].contains("has no 世帯主"));
        // After the householder's death the household waits for a 世帯主変更届: allowed.
        let widowed = [
            HEADER.to_string(),
            rec("R1", "H1", "世帯主", "").replace(
                r#"{"kind":"resident"}"#,
                r#"{"kind":"deceased","date":"2026-09-01"}"#,
            ),
            rec("R2", "H1", "妻", ""),
        ]
        .join("\n");
        assert!(parse_snapshot(&widowed, "t").is_ok());
    }

    #[test]
    fn records_round_trip_through_json() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/town.jsonl"
        ))
        .unwrap();
        let snap = parse_snapshot(&text, "town").unwrap();
        for r in snap.population.residents() {
            let json = serde_json::to_string(r).unwrap();
            let back: Resident =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}: {json}", r.id));
            assert_eq!(&back, r);
        }
    }

    #[test]
    fn a_stored_late_arrival_wins_over_the_status_date() {
        let text = [
            HEADER.to_string(),
            rec("R1", "H1", "世帯主", "").replace(
                r#"{"kind":"resident"}"#,
                r#"{"kind":"deceased","date":"2026-09-01"}"#,
            ),
        ]
        .join("\n");
        let snap = parse_snapshot(&text, "t").unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let late = LifeEvent::new(
            EventKind::Death,
            snap.population.get(0).id.clone(),
            d("2026-09-01"),
            Some(d("2026-09-20")),
        );
        let lines = [2];
        let p = Population::build(
            snap.population.residents().to_vec(),
            &lines,
            "t",
            vec![late],
        )
        .unwrap();
        let e: Vec<_> = p.events_on(EventKind::Death, d("2026-09-01")).collect();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].recorded, d("2026-09-20"));
    }

    #[test]
    fn header_version_and_duplicates() {
        let v2 = HEADER.replace("\"schema_version\":1", "\"schema_version\":2");
        assert!(errors_of(&v2)[0].contains("schema version 2 is not supported"));
        let dup = [
            HEADER.to_string(),
            rec("R1", "H1", "世帯主", ""),
            rec("R1", "H2", "世帯主", ""),
        ]
        .join("\n");
        assert!(errors_of(&dup)[0].contains("duplicate id \"R1\" (first on line 2)"));
        assert!(errors_of("")[0].contains("empty snapshot"));
    }

    #[test]
    fn events_are_derived_from_statuses() {
        let text = [
            HEADER.to_string(),
            rec("R1", "H1", "世帯主", "").replace(
                r#"{"kind":"resident"}"#,
                r#"{"kind":"deceased","date":"2026-09-01"}"#,
            ),
            rec("R2", "H1", "妻", "").replace(
                r#"{"kind":"resident"}"#,
                r#"{"kind":"resident","since":"2026-08-01","reason":"move_in"}"#,
            ),
        ]
        .join("\n");
        let p = parse_snapshot(&text, "t").unwrap().population;
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(p.events_on(EventKind::Death, d("2026-09-01")).count(), 1);
        assert_eq!(p.events_on(EventKind::MoveIn, d("2026-08-01")).count(), 1);
        assert_eq!(p.events_on(EventKind::Birth, d("1980-05-01")).count(), 0);
    }
}
