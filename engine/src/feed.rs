//! Register change feeds (異動, JSON Lines) and snapshot diffs, as a pure library: parse a
//! feed, apply it to a register all or nothing, and derive the life events that a feed or a
//! pair of snapshots implies. No I/O and no SQL: the caller passes text and records in.
//! Format: docs/change-feed.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ids::{HouseholdId, LocalGovCode, ResidentId};
use crate::population::{parse_json_line, DataError, DataErrors, EventKind, LifeEvent, Population};
use crate::resident::{Address, HouseholdLink, Relationship, Resident, ResidentReason, Status};

/// The `format` of a change feed header.
pub const FEED_FORMAT: &str = "oshirase-changes";
/// The one feed schema version this release reads.
pub const FEED_SCHEMA_VERSION: u32 = 1;

/// Every `kind`, with its 異動事由, in the order the docs list them.
pub const KINDS: [(&str, &str); 9] = [
    ("birth", "出生"),
    ("death", "死亡"),
    ("move_in", "転入"),
    ("move_out", "転出"),
    ("address_change", "転居"),
    ("householder_change", "世帯主変更"),
    ("household_split", "世帯分離"),
    ("household_merge", "世帯合併"),
    ("correction", "修正"),
];

/// Line 1 of a feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedHeader {
    pub format: String,
    pub schema_version: u32,
    #[serde(default)]
    pub local_gov_code: Option<LocalGovCode>,
}

/// One register change, by kind (異動事由).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// 出生: the child's full record.
    Birth { record: Box<Resident> },
    /// 転入: the newcomer's full record.
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
    /// 世帯主変更: a new householder and new 続柄 for the members whose 続柄 changes.
    HouseholderChange {
        household: HouseholdId,
        new_householder: ResidentId,
        relationships: BTreeMap<ResidentId, Relationship>,
    },
    /// 世帯分離: residents leave for a new household.
    HouseholdSplit {
        residents: Vec<ResidentId>,
        household: HouseholdId,
        relationships: BTreeMap<ResidentId, Relationship>,
    },
    /// 世帯合併: residents join an existing household.
    HouseholdMerge {
        residents: Vec<ResidentId>,
        household: HouseholdId,
        relationships: BTreeMap<ResidentId, Relationship>,
    },
    /// 修正: top-level record fields replaced (never the id).
    Correction {
        resident: ResidentId,
        fields: Map<String, Value>,
    },
}

impl Change {
    /// The `kind` as written in the feed.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Birth { .. } => "birth",
            Change::MoveIn { .. } => "move_in",
            Change::Death { .. } => "death",
            Change::MoveOut { .. } => "move_out",
            Change::AddressChange { .. } => "address_change",
            Change::HouseholderChange { .. } => "householder_change",
            Change::HouseholdSplit { .. } => "household_split",
            Change::HouseholdMerge { .. } => "household_merge",
            Change::Correction { .. } => "correction",
        }
    }
}

/// A change with its place in the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedLine {
    /// Line number in the file (for errors).
    pub line: usize,
    /// Position in the feed: at least 1, at most `i64::MAX` (the store keeps it as a signed
    /// 64-bit integer), strictly increasing.
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
    /// The issuing municipality, if the header names it.
    pub local_gov_code: Option<LocalGovCode>,
    pub lines: Vec<FeedLine>,
}

impl Feed {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The lines with a `seq` greater than `seq`: those not applied yet when `seq` is the
    /// stored feed position.
    pub fn after(&self, seq: i64) -> Feed {
        Feed {
            local_gov_code: self.local_gov_code,
            lines: self
                .lines
                .iter()
                // A seq beyond i64::MAX (only possible in a hand-built Feed) is after anything.
                .filter(|l| i64::try_from(l.seq).map_or(true, |s| s > seq))
                .cloned()
                .collect(),
        }
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.lines.last().map(|l| l.seq)
    }
}

// Per-kind fields, parsed on their own so that errors name the exact field (an internally
// tagged enum would buffer the line and lose the path).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFields {
    #[serde(deserialize_with = "crate::resident::object")]
    record: Box<Resident>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResidentFields {
    resident: ResidentId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressFields {
    resident: ResidentId,
    #[serde(deserialize_with = "crate::resident::object")]
    address: Address,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HouseholderFields {
    household: HouseholdId,
    new_householder: ResidentId,
    #[serde(default)]
    relationships: BTreeMap<ResidentId, Relationship>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFields {
    residents: Vec<ResidentId>,
    household: HouseholdId,
    relationships: BTreeMap<ResidentId, Relationship>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrectionFields {
    resident: ResidentId,
    fields: Map<String, Value>,
}

/// A problem in one line: (field, message).
type Problem = (Option<String>, String);

fn fields<T: DeserializeOwned>(map: Map<String, Value>) -> Result<T, Problem> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let message = crate::shown::message_about(&path, &e.into_inner().to_string());
        ((path != ".").then(|| crate::shown::cap(&path)), message)
    })
}

/// A JSON value in a message: never whole.
fn shown(v: &Value) -> String {
    crate::shown::cap(&v.to_string())
}

fn problem(field: &str, message: String) -> Problem {
    (Some(field.to_owned()), message)
}

fn date_field(v: &Value, field: &str) -> Result<NaiveDate, Problem> {
    let s = v.as_str().ok_or_else(|| {
        problem(
            field,
            format!("must be a date \"YYYY-MM-DD\", not {}", shown(v)),
        )
    })?;
    crate::calendar::parse_date(s).map_err(|m| problem(field, m))
}

fn change_of(kind: &str, map: Map<String, Value>) -> Result<Change, Problem> {
    Ok(match kind {
        "birth" => Change::Birth {
            record: fields::<RecordFields>(map)?.record,
        },
        "move_in" => Change::MoveIn {
            record: fields::<RecordFields>(map)?.record,
        },
        "death" => Change::Death {
            resident: fields::<ResidentFields>(map)?.resident,
        },
        "move_out" => Change::MoveOut {
            resident: fields::<ResidentFields>(map)?.resident,
        },
        "address_change" => {
            let f: AddressFields = fields(map)?;
            Change::AddressChange {
                resident: f.resident,
                address: f.address,
            }
        }
        "householder_change" => {
            let f: HouseholderFields = fields(map)?;
            Change::HouseholderChange {
                household: f.household,
                new_householder: f.new_householder,
                relationships: f.relationships,
            }
        }
        "household_split" | "household_merge" => {
            let f: GroupFields = fields(map)?;
            if f.residents.is_empty() {
                return Err(problem(
                    "residents",
                    "must name at least one resident".into(),
                ));
            }
            let mut seen = BTreeSet::new();
            if let Some(twice) = f.residents.iter().find(|id| !seen.insert(*id)) {
                return Err(problem("residents", format!("{twice} is named twice")));
            }
            if kind == "household_split" {
                Change::HouseholdSplit {
                    residents: f.residents,
                    household: f.household,
                    relationships: f.relationships,
                }
            } else {
                Change::HouseholdMerge {
                    residents: f.residents,
                    household: f.household,
                    relationships: f.relationships,
                }
            }
        }
        "correction" => {
            let f: CorrectionFields = fields(map)?;
            if f.fields.is_empty() {
                return Err(problem("fields", "names no field to correct".into()));
            }
            if f.fields.contains_key("id") {
                return Err(problem(
                    "fields.id",
                    "an id cannot be corrected; register a new record".into(),
                ));
            }
            // The values are checked when applied, by re-parsing the corrected record.
            Change::Correction {
                resident: f.resident,
                fields: f.fields,
            }
        }
        other => {
            let known: Vec<String> = KINDS.iter().map(|(k, j)| format!("{k} ({j})")).collect();
            return Err(problem(
                "kind",
                format!(
                    "unknown kind {}; expected one of {}",
                    crate::shown::quoted(other),
                    known.join(", ")
                ),
            ));
        }
    })
}

/// A change line's seq, date, recorded and change.
type ParsedLine = (u64, NaiveDate, NaiveDate, Change);

/// The record a line carries or corrects (a birth's or move-in's `record.id`, a correction's
/// `resident`), which its errors name; `None` if that does not read as an id.
fn line_subject(map: &Map<String, Value>) -> Option<ResidentId> {
    let id = match map.get("kind")?.as_str()? {
        "birth" | "move_in" => map.get("record")?.get("id")?,
        "correction" => map.get("resident")?,
        _ => return None,
    };
    ResidentId::parse(id.as_str()?).ok()
}

/// The record a change carries or corrects, as [`line_subject`].
fn change_subject(change: &Change) -> Option<ResidentId> {
    match change {
        Change::Birth { record } | Change::MoveIn { record } => Some(record.id.clone()),
        Change::Correction { resident, .. } => Some(resident.clone()),
        _ => None,
    }
}

/// Parses one change line. The seq is returned whenever it parsed, even if the rest of the
/// line is bad, so that ordering is checked on every line; so is the record it is about.
fn parse_line(text: &str) -> (Option<u64>, Option<ResidentId>, Result<ParsedLine, Problem>) {
    let mut map: Map<String, Value> = match parse_json_line(text) {
        Ok(m) => m,
        Err(p) => return (None, None, Err(p)),
    };
    let subject = line_subject(&map);
    let seq = match map.remove("seq") {
        None => Err(problem("seq", "missing".into())),
        Some(v) => v
            .as_u64()
            .filter(|&s| s >= 1 && i64::try_from(s).is_ok())
            .ok_or_else(|| {
                problem(
                    "seq",
                    format!(
                        "must be a whole number from 1 to {}, not {}",
                        i64::MAX,
                        shown(&v)
                    ),
                )
            }),
    };
    let seen = seq.as_ref().ok().copied();
    let rest = (|| {
        let seq = seq?;
        let date = match map.remove("date") {
            None => return Err(problem("date", "missing".into())),
            Some(v) => date_field(&v, "date")?,
        };
        let recorded = match map.remove("recorded") {
            None | Some(Value::Null) => date,
            Some(v) => date_field(&v, "recorded")?,
        };
        if recorded < date {
            return Err(problem(
                "recorded",
                format!("{recorded} is before the change's date {date}"),
            ));
        }
        let kind = match map.remove("kind") {
            None => return Err(problem("kind", "missing".into())),
            Some(Value::String(k)) => k,
            Some(v) => {
                return Err(problem(
                    "kind",
                    format!("must be a string, not {}", shown(&v)),
                ))
            }
        };
        Ok((seq, date, recorded, change_of(&kind, map)?))
    })();
    (seen, subject, rest)
}

fn parse_header(text: &str) -> Result<FeedHeader, Problem> {
    let not_header = |(f, m): Problem| (f, format!("{m} (line 1 must be the feed header)"));
    let map: Map<String, Value> = parse_json_line(text).map_err(not_header)?;
    // The format first: a snapshot header has other fields, and that is the real mistake.
    match map.get("format").and_then(Value::as_str) {
        None => {
            return Err(problem(
                "format",
                format!(
                    "missing (line 1 must be the feed header {{\"format\":\"{FEED_FORMAT}\",…}})"
                ),
            ))
        }
        Some(format) if format != FEED_FORMAT => {
            let hint = if format == "oshirase-snapshot" {
                "; this is a snapshot, not a change feed"
            } else {
                ""
            };
            return Err(problem(
                "format",
                format!(
                    "{} is not {FEED_FORMAT:?}{hint}",
                    crate::shown::quoted(format)
                ),
            ));
        }
        Some(_) => {}
    }
    let h: FeedHeader = fields(map).map_err(not_header)?;
    if h.schema_version != FEED_SCHEMA_VERSION {
        return Err(problem(
            "schema_version",
            format!(
                "schema version {} is not supported; this release reads version {FEED_SCHEMA_VERSION}",
                h.schema_version
            ),
        ));
    }
    Ok(h)
}

/// Parses a feed, returning the valid lines and one error for each invalid line (in line
/// order). A bad header is an error but the lines are still checked.
pub fn parse_feed_lenient(text: &str, source: &str) -> (Feed, Vec<DataError>) {
    let err = |line: usize, resident: Option<ResidentId>, (field, message): Problem| DataError {
        source: source.to_owned(),
        line,
        field,
        resident,
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut errors = Vec::new();
    let mut feed = Feed::default();
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        None => errors.push(err(
            1,
            None,
            (
                None,
                format!("empty feed: line 1 must be the header {{\"format\":\"{FEED_FORMAT}\",…}}"),
            ),
        )),
        Some((n, line)) => match parse_header(line) {
            Ok(h) => feed.local_gov_code = h.local_gov_code,
            Err(p) => errors.push(err(n, None, p)),
        },
    }
    let mut last_seq = 0;
    for (n, line) in lines {
        let (seq, subject, parsed) = parse_line(line);
        let out_of_order = seq.filter(|&s| s <= last_seq);
        if let Some(s) = seq {
            last_seq = last_seq.max(s);
        }
        match (parsed, out_of_order) {
            (Err(p), _) => errors.push(err(n, subject, p)),
            (Ok(_), Some(s)) => errors.push(err(
                n,
                subject,
                problem(
                    "seq",
                    format!("{s} does not follow {last_seq}: seq must increase"),
                ),
            )),
            (Ok((seq, date, recorded, change)), None) => feed.lines.push(FeedLine {
                line: n,
                seq,
                date,
                recorded,
                change,
            }),
        }
    }
    (feed, errors)
}

/// Parses a feed; any invalid line rejects the whole feed, with every bad line listed.
pub fn parse_feed(text: &str, source: &str) -> Result<Feed, DataErrors> {
    let (feed, errors) = parse_feed_lenient(text, source);
    if errors.is_empty() {
        Ok(feed)
    } else {
        Err(DataErrors(errors))
    }
}

/// The register after a feed, and the life events the feed implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Every record: the existing ones in their order, then the new ones in feed order.
    pub residents: Vec<Resident>,
    /// In feed order.
    pub events: Vec<LifeEvent>,
}

/// A rejected line: (field, message).
type Reject = (String, String);

fn reject(field: &str, message: String) -> Reject {
    (field.to_owned(), message)
}

/// The 世帯主 situation of one household.
#[derive(Debug, Default, PartialEq)]
struct Heads {
    /// Whether any current resident belongs to it.
    living: bool,
    /// Its current 世帯主 (more than one only in an invalid register).
    heads: BTreeSet<ResidentId>,
}

fn heads_by_household<'a>(
    records: impl IntoIterator<Item = &'a Resident>,
    only: Option<&BTreeSet<HouseholdId>>,
) -> BTreeMap<HouseholdId, Heads> {
    let mut out: BTreeMap<HouseholdId, Heads> = BTreeMap::new();
    for r in records {
        let Some(h) = r.household_id() else { continue };
        if !r.is_current() || only.is_some_and(|o| !o.contains(h)) {
            continue;
        }
        let e = out.entry(h.clone()).or_default();
        e.living = true;
        if r.is_householder() {
            e.heads.insert(r.id.clone());
        }
    }
    out
}

/// New 世帯主 of households that already had current residents, in household order. A
/// household with no current 世帯主 before (the 世帯主 died or left) counts: the
/// 世帯主変更届 after a death is the usual householder change. A new household (split, move-in)
/// does not.
fn new_householders(
    before: &BTreeMap<HouseholdId, Heads>,
    after: &BTreeMap<HouseholdId, Heads>,
) -> Vec<ResidentId> {
    let mut out = Vec::new();
    for (h, now) in after {
        let Some(was) = before.get(h).filter(|w| w.living) else {
            continue;
        };
        out.extend(now.heads.difference(&was.heads).cloned());
    }
    out
}

/// The register while a feed is applied, with an undo log for the line in progress.
struct State {
    residents: Vec<Resident>,
    by_id: HashMap<ResidentId, usize>,
    /// Feed line that last touched each record (0: untouched), for validation errors.
    touched: Vec<usize>,
    /// Every record (any status) by household, as of the last applied line: each line then
    /// costs the size of the households it touches, not of the register.
    households: HashMap<HouseholdId, Vec<usize>>,
    /// Feed line that last changed each household's membership or 続柄.
    household_touched: HashMap<HouseholdId, usize>,
    events: Vec<LifeEvent>,
    /// Records as they were before the line in progress changed them (oldest first).
    undo: Vec<(usize, Resident, usize)>,
}

/// Where the line in progress started.
struct Mark {
    residents: usize,
    events: usize,
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
        let mut households: HashMap<HouseholdId, Vec<usize>> = HashMap::new();
        for (i, r) in residents.iter().enumerate() {
            if let Some(h) = r.household_id() {
                households.entry(h.clone()).or_default().push(i);
            }
        }
        Self {
            residents,
            by_id,
            touched,
            households,
            household_touched: HashMap::new(),
            events: Vec::new(),
            undo: Vec::new(),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            residents: self.residents.len(),
            events: self.events.len(),
        }
    }

    /// Undoes the line in progress. Cheaper than copying the register for every line.
    fn rollback(&mut self, m: Mark) {
        while let Some((i, r, t)) = self.undo.pop() {
            self.residents[i] = r;
            self.touched[i] = t;
        }
        for r in self.residents.drain(m.residents..) {
            self.by_id.remove(&r.id);
        }
        self.touched.truncate(m.residents);
        self.events.truncate(m.events);
    }

    /// The record `i`, to change on behalf of `line`.
    fn edit(&mut self, i: usize, line: usize) -> &mut Resident {
        self.undo
            .push((i, self.residents[i].clone(), self.touched[i]));
        self.touched[i] = line;
        &mut self.residents[i]
    }

    fn push(&mut self, r: Resident, line: usize) {
        self.by_id.insert(r.id.clone(), self.residents.len());
        self.residents.push(r);
        self.touched.push(line);
    }

    /// A current resident, or why not.
    fn current(&self, field: &str, id: &ResidentId) -> Result<usize, Reject> {
        let i = self
            .by_id
            .get(id)
            .copied()
            .ok_or_else(|| reject(field, format!("no current resident {id}: unknown id")))?;
        let r = &self.residents[i];
        match r.status {
            Status::Resident { .. } => Ok(i),
            Status::External => Err(reject(
                field,
                format!("no current resident {id}: an external record, not on this register"),
            )),
            Status::Deceased { date, .. } | Status::MovedOut { date, .. } => Err(reject(
                field,
                format!("no current resident {id}: {} on {date}", r.status.name()),
            )),
        }
    }

    /// Current members of a household as of the last applied line (call it before changing
    /// anything in the line in progress).
    fn members(&self, h: &HouseholdId) -> Vec<usize> {
        self.households
            .get(h)
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.residents[i].is_current())
            .collect()
    }

    /// Sets 続柄 in `household`: for every resident in `rels`, who must be a current member
    /// or one of `moving` (who must all have one).
    fn set_relationships(
        &mut self,
        line: usize,
        household: &HouseholdId,
        rels: &BTreeMap<ResidentId, Relationship>,
        moving: &[ResidentId],
    ) -> Result<(), Reject> {
        if let Some(id) = moving.iter().find(|id| !rels.contains_key(*id)) {
            return Err(reject(
                "relationships",
                format!("no 続柄 for {id}, who joins household {household}"),
            ));
        }
        for (id, rel) in rels {
            let field = format!("relationships.{id}");
            let i = self.current(&field, id)?;
            if self.residents[i].household_id() != Some(household) && !moving.contains(id) {
                return Err(reject(
                    &field,
                    format!("{id} is not in household {household} and does not join it"),
                ));
            }
            self.edit(i, line).household = Some(HouseholdLink {
                id: household.clone(),
                relationship: rel.clone(),
            });
        }
        Ok(())
    }

    /// A birth (`birth`) or a move in: both put a new current record on the register.
    fn apply_arrival(
        &mut self,
        l: &FeedLine,
        record: &Resident,
        birth: bool,
    ) -> Result<(), Reject> {
        let (kind, reason, since) = if birth {
            ("birth", ResidentReason::Birth, record.birth_date)
        } else {
            ("move_in", ResidentReason::MoveIn, l.date)
        };
        if birth && record.birth_date != l.date {
            return Err(reject(
                "record.birth_date",
                format!("{} is not the birth's date {}", record.birth_date, l.date),
            ));
        }
        if l.date < record.birth_date {
            return Err(reject(
                "date",
                format!("{} is before the birth date {}", l.date, record.birth_date),
            ));
        }
        // The status is the line's; one written in the record must agree with it.
        match record.status {
            Status::Resident {
                since: s,
                reason: r,
                recorded: rec,
            } => {
                if let Some(s) = s.filter(|s| *s != since) {
                    return Err(reject(
                        "record.status.since",
                        format!("{s} differs from the {kind}'s date {since}"),
                    ));
                }
                if r.is_some_and(|r| r != reason) {
                    return Err(reject(
                        "record.status.reason",
                        format!("must be {kind} (or left out) on a {kind} line"),
                    ));
                }
                if let Some(rec) = rec.filter(|rec| *rec != l.recorded) {
                    return Err(reject(
                        "record.status.recorded",
                        format!("{rec} differs from the line's recorded {}", l.recorded),
                    ));
                }
            }
            ref other => {
                return Err(reject(
                    "record.status",
                    format!("a {kind} record is `resident`, not `{}`", other.name()),
                ))
            }
        }
        let mut r = record.clone();
        r.status = Status::Resident {
            since: Some(since),
            reason: Some(reason),
            recorded: (l.recorded > since).then_some(l.recorded),
        };
        let existing = self.by_id.get(&r.id).copied();
        match existing.map(|i| &self.residents[i].status) {
            None => self.push(r, l.line),
            Some(Status::Resident { .. }) => {
                return Err(reject(
                    "record.id",
                    format!("{} is already a current resident", record.id),
                ))
            }
            Some(s) if birth => {
                return Err(reject(
                    "record.id",
                    format!(
                        "{} is already on the register ({}); a newborn needs a new id",
                        record.id,
                        s.name()
                    ),
                ))
            }
            Some(Status::Deceased { .. }) => {
                return Err(reject("record.id", format!("{} is deceased", record.id)))
            }
            Some(Status::MovedOut { date, .. }) if l.date < *date => {
                return Err(reject(
                    "date",
                    format!("{} is before {} moved out on {date}", l.date, record.id),
                ))
            }
            // A former resident coming back, or an external contact moving here, keeps the id.
            Some(_) => {
                if let Some(i) = existing {
                    *self.edit(i, l.line) = r;
                }
            }
        }
        let kind = if birth {
            EventKind::Birth
        } else {
            EventKind::MoveIn
        };
        self.events.push(LifeEvent::new(
            kind,
            record.id.clone(),
            l.date,
            Some(l.recorded),
        ));
        Ok(())
    }

    fn apply_line(&mut self, l: &FeedLine) -> Result<(), Reject> {
        match &l.change {
            Change::Birth { record } => self.apply_arrival(l, record, true),
            Change::MoveIn { record } => self.apply_arrival(l, record, false),
            Change::Death { resident } => self.apply_departure(l, resident, true),
            Change::MoveOut { resident } => self.apply_departure(l, resident, false),
            Change::AddressChange { resident, address } => {
                self.apply_address_change(l, resident, address)
            }
            Change::HouseholderChange {
                household,
                new_householder,
                relationships,
            } => self.apply_householder_change(l, household, new_householder, relationships),
            Change::HouseholdSplit {
                residents,
                household,
                relationships,
            } => self.apply_household_split(l, residents, household, relationships),
            Change::HouseholdMerge {
                residents,
                household,
                relationships,
            } => self.apply_household_merge(l, residents, household, relationships),
            Change::Correction { resident, fields } => self.apply_correction(l, resident, fields),
        }
    }

    /// A death (`death`) or a move out: the same checks, a different status and event.
    fn apply_departure(
        &mut self,
        l: &FeedLine,
        resident: &ResidentId,
        death: bool,
    ) -> Result<(), Reject> {
        let i = self.current("resident", resident)?;
        let r = &self.residents[i];
        if l.date < r.birth_date {
            return Err(reject(
                "date",
                format!("{} is before the birth date {}", l.date, r.birth_date),
            ));
        }
        if let Some(since) = r.status.date().filter(|s| l.date < *s) {
            return Err(reject(
                "date",
                format!(
                    "{} is before {resident} came on the register on {since}",
                    l.date
                ),
            ));
        }
        let recorded = (l.recorded > l.date).then_some(l.recorded);
        self.edit(i, l.line).status = if death {
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
        Ok(())
    }

    fn apply_address_change(
        &mut self,
        l: &FeedLine,
        resident: &ResidentId,
        address: &Address,
    ) -> Result<(), Reject> {
        let i = self.current("resident", resident)?;
        let here = self.residents[i].address.local_gov_code;
        // 転居 is a move inside the municipality; leaving it is a 転出.
        if address.local_gov_code != here {
            return Err(reject(
                "address.local_gov_code",
                format!(
                    "{} is not this municipality ({here}); a move elsewhere is a move_out",
                    address.local_gov_code
                ),
            ));
        }
        self.edit(i, l.line).address = address.clone();
        Ok(())
    }

    fn apply_householder_change(
        &mut self,
        l: &FeedLine,
        household: &HouseholdId,
        new_householder: &ResidentId,
        relationships: &BTreeMap<ResidentId, Relationship>,
    ) -> Result<(), Reject> {
        let members = self.members(household);
        if members.is_empty() {
            return Err(reject(
                "household",
                format!("no household {household} with current residents"),
            ));
        }
        let h = self.current("new_householder", new_householder)?;
        if !members.contains(&h) {
            return Err(reject(
                "new_householder",
                format!("{new_householder} is not in household {household}"),
            ));
        }
        if self.residents[h].is_householder() {
            return Err(reject(
                "new_householder",
                format!("{new_householder} is already the 世帯主 of {household}"),
            ));
        }
        if let Some(rel) = relationships
            .get(new_householder)
            .filter(|r| !r.is_householder())
        {
            return Err(reject(
                &format!("relationships.{new_householder}"),
                format!("the new 世帯主 cannot be {rel}"),
            ));
        }
        // Two 世帯主 must never remain: the present one needs a new 続柄.
        if let Some(&old) = members
            .iter()
            .find(|&&m| self.residents[m].is_householder())
        {
            let id = &self.residents[old].id;
            if !relationships.contains_key(id) {
                return Err(reject(
                    "relationships",
                    format!("the present 世帯主 {id} needs a new 続柄"),
                ));
            }
        }
        let mut rels = relationships.clone();
        rels.insert(new_householder.clone(), Relationship::householder());
        self.set_relationships(l.line, household, &rels, &[])
    }

    fn apply_household_split(
        &mut self,
        l: &FeedLine,
        residents: &[ResidentId],
        household: &HouseholdId,
        relationships: &BTreeMap<ResidentId, Relationship>,
    ) -> Result<(), Reject> {
        for id in residents {
            self.current("residents", id)?;
        }
        // Former members keep their last household, so a used id is never a new one.
        if self
            .households
            .get(household)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(reject(
                "household",
                format!(
                    "household {household} already exists; a split needs a new id (household_merge joins an existing one)"
                ),
            ));
        }
        self.set_relationships(l.line, household, relationships, residents)
    }

    fn apply_household_merge(
        &mut self,
        l: &FeedLine,
        residents: &[ResidentId],
        household: &HouseholdId,
        relationships: &BTreeMap<ResidentId, Relationship>,
    ) -> Result<(), Reject> {
        if self.members(household).is_empty() {
            return Err(reject(
                "household",
                format!("no household {household} with current residents (household_split makes a new one)"),
            ));
        }
        for id in residents {
            let i = self.current("residents", id)?;
            if self.residents[i].household_id() == Some(household) {
                return Err(reject(
                    "residents",
                    format!("{id} is already in household {household}"),
                ));
            }
        }
        self.set_relationships(l.line, household, relationships, residents)
    }

    fn apply_correction(
        &mut self,
        l: &FeedLine,
        resident: &ResidentId,
        fields: &Map<String, Value>,
    ) -> Result<(), Reject> {
        let i = *self
            .by_id
            .get(resident)
            .ok_or_else(|| reject("resident", format!("no resident {resident}")))?;
        let old = &self.residents[i];
        let mut json = serde_json::to_value(old).map_err(|e| reject("fields", e.to_string()))?;
        if let Some(obj) = json.as_object_mut() {
            for (k, v) in fields {
                obj.insert(k.clone(), v.clone());
            }
        }
        // Validated exactly as a snapshot record is.
        let new: Resident = serde_path_to_error::deserialize(json).map_err(|e| {
            let path = e.path().to_string();
            let message = crate::shown::message_about(&path, &e.into_inner().to_string());
            let field = if path == "." {
                "fields".to_owned()
            } else {
                format!("fields.{}", crate::shown::cap(&path))
            };
            (field, message)
        })?;
        // A death, departure or arrival must come as its own kind, with its event.
        if new.status.name() != old.status.name() {
            return Err(reject(
                "fields.status",
                format!(
                    "a correction cannot turn `{}` into `{}`; use a death, move_out or move_in line",
                    old.status.name(),
                    new.status.name()
                ),
            ));
        }
        *self.edit(i, l.line) = new;
        Ok(())
    }

    /// After a line applied: the householder changes it made, and the households it touched.
    fn finish_line(&mut self, l: &FeedLine, m: &Mark) {
        // Each record as it was before the line: the oldest saved copy.
        let mut before: HashMap<usize, &Resident> = HashMap::new();
        for (i, r, _) in &self.undo {
            before.entry(*i).or_insert(r);
        }
        // (record, household before, household after) for every record the line touched.
        let mut moves: Vec<(usize, Option<HouseholdId>, Option<HouseholdId>)> = before
            .iter()
            .map(|(&i, r)| {
                let now = self.residents[i].household_id().cloned();
                (i, r.household_id().cloned(), now)
            })
            .collect();
        moves.extend(
            (m.residents..self.residents.len())
                .map(|i| (i, None, self.residents[i].household_id().cloned())),
        );
        // The undo log's map has no order; the index lists must not depend on it.
        moves.sort_by_key(|(i, _, _)| *i);
        let households: BTreeSet<HouseholdId> = moves
            .iter()
            .flat_map(|(_, b, a)| b.iter().chain(a).cloned())
            .collect();
        if !households.is_empty() {
            let members = |index: &HashMap<HouseholdId, Vec<usize>>| -> Vec<usize> {
                households
                    .iter()
                    .flat_map(|h| index.get(h).into_iter().flatten().copied())
                    .collect()
            };
            let old = heads_by_household(
                members(&self.households)
                    .into_iter()
                    .map(|i| before.get(&i).copied().unwrap_or(&self.residents[i])),
                Some(&households),
            );
            for (i, b, a) in &moves {
                if b == a {
                    continue;
                }
                if let Some(list) = b.as_ref().and_then(|b| self.households.get_mut(b)) {
                    list.retain(|j| j != i);
                }
                if let Some(a) = a {
                    self.households.entry(a.clone()).or_default().push(*i);
                }
            }
            let new = heads_by_household(
                members(&self.households)
                    .into_iter()
                    .map(|i| &self.residents[i]),
                Some(&households),
            );
            for id in new_householders(&old, &new) {
                self.events.push(LifeEvent::new(
                    EventKind::HouseholderChange,
                    id,
                    l.date,
                    Some(l.recorded),
                ));
            }
        }
        for h in households {
            self.household_touched.insert(h, l.line);
        }
        self.undo.clear();
    }

    /// The final register must be valid. Errors are mapped back to the feed line that last
    /// touched the record, or for household errors the household. With `part`, the state
    /// holds only the records the feed names (and their households and references): errors
    /// in records and households no line touched are about the rest of the register, which
    /// every earlier ingest validated, and are left out.
    fn validate(&self, source: &str, part: bool) -> Vec<DataError> {
        // Record i is "line" i + 1 for Population::build, so each error names its record.
        let ids: Vec<usize> = (1..=self.residents.len()).collect();
        let Err(DataErrors(errors)) =
            Population::build(self.residents.clone(), &ids, source, self.events.clone())
        else {
            return Vec::new();
        };
        errors
            .into_iter()
            .filter_map(|mut e| {
                let i = e.line.checked_sub(1).filter(|&i| i < self.residents.len());
                let line = i.map_or(0, |i| {
                    let household = e
                        .field
                        .as_deref()
                        .is_some_and(|f| f.starts_with("household"));
                    let via_household = self.residents[i]
                        .household_id()
                        .and_then(|h| self.household_touched.get(h))
                        .copied()
                        .filter(|_| household)
                        .unwrap_or(0);
                    self.touched[i].max(via_household)
                });
                if part && line == 0 && i.is_some() {
                    return None;
                }
                e.line = line;
                if line == 0 {
                    e.message
                        .push_str(" (in the register before this feed, not caused by it)");
                }
                Some(e)
            })
            .collect()
    }
}

/// Applies each line it can; returns the state, the rejected lines' errors, and the errors of
/// the final state as a whole (which no skipping can fix).
fn apply_lines(
    current: &[Resident],
    feed: &Feed,
    source: &str,
    part: bool,
) -> (Applied, Vec<DataError>, Vec<DataError>) {
    let mut state = State::new(current);
    let mut errors = Vec::new();
    for l in &feed.lines {
        let mark = state.mark();
        match state.apply_line(l) {
            Ok(()) => state.finish_line(l, &mark),
            Err((field, message)) => {
                // A rejected line leaves no trace.
                state.rollback(mark);
                errors.push(DataError {
                    source: source.to_owned(),
                    line: l.line,
                    field: Some(field),
                    resident: change_subject(&l.change),
                    message,
                });
            }
        }
    }
    let invalid = state.validate(source, part);
    (
        Applied {
            residents: state.residents,
            events: state.events,
        },
        errors,
        invalid,
    )
}

/// Applies every line of `feed` to `current`, all or nothing: if any line is rejected, or the
/// resulting register is invalid, every error is returned (by line) and nothing applies.
/// Applying the same feed to the same register always gives the same result.
pub fn apply(current: &[Resident], feed: &Feed, source: &str) -> Result<Applied, DataErrors> {
    all_or_nothing(apply_lines(current, feed, source, false))
}

/// As [`apply`], where `part` is only the part of the register the feed needs (see
/// [`Needs`]): every record a line names or refers to, every record of every household a
/// line names or a named record belongs to, and the records those refer to. Errors in records
/// and households no line touched are not reported: they are not the feed's, and every
/// earlier ingest checked them. The result holds the part, changed, and the new records.
pub fn apply_to_part(part: &[Resident], feed: &Feed, source: &str) -> Result<Applied, DataErrors> {
    all_or_nothing(apply_lines(part, feed, source, true))
}

fn all_or_nothing(
    (applied, mut errors, invalid): (Applied, Vec<DataError>, Vec<DataError>),
) -> Result<Applied, DataErrors> {
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
    lenient(apply_lines(current, feed, source, false))
}

/// [`apply_lenient`] on part of the register, as [`apply_to_part`].
pub fn apply_to_part_lenient(
    part: &[Resident],
    feed: &Feed,
    source: &str,
) -> Result<(Applied, Vec<DataError>), DataErrors> {
    lenient(apply_lines(part, feed, source, true))
}

fn lenient(
    (applied, errors, mut invalid): (Applied, Vec<DataError>, Vec<DataError>),
) -> Result<(Applied, Vec<DataError>), DataErrors> {
    if invalid.is_empty() {
        Ok((applied, errors))
    } else {
        invalid.sort_by_key(|e| e.line);
        Err(DataErrors(invalid))
    }
}

/// The records and households a feed's lines name, to read from the store instead of the
/// whole register.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub residents: BTreeSet<ResidentId>,
    pub households: BTreeSet<HouseholdId>,
}

impl Needs {
    /// What the lines of `feed` name: residents, new records (and their guardians, proxies
    /// and household), households, and the ids a correction writes.
    pub fn of(feed: &Feed) -> Self {
        let mut n = Needs::default();
        for l in &feed.lines {
            match &l.change {
                Change::Birth { record } | Change::MoveIn { record } => n.add_record(record),
                Change::Death { resident }
                | Change::MoveOut { resident }
                | Change::AddressChange { resident, .. } => {
                    n.residents.insert(resident.clone());
                }
                Change::HouseholderChange {
                    household,
                    new_householder,
                    relationships,
                } => {
                    n.households.insert(household.clone());
                    n.residents.insert(new_householder.clone());
                    n.residents.extend(relationships.keys().cloned());
                }
                Change::HouseholdSplit {
                    residents,
                    household,
                    relationships,
                }
                | Change::HouseholdMerge {
                    residents,
                    household,
                    relationships,
                } => {
                    n.households.insert(household.clone());
                    n.residents.extend(residents.iter().cloned());
                    n.residents.extend(relationships.keys().cloned());
                }
                Change::Correction { resident, fields } => {
                    n.residents.insert(resident.clone());
                    // Ids a correction writes; malformed ones fail when the line applies.
                    let id = |v: &Value| v.get("id").and_then(Value::as_str).map(str::to_owned);
                    if let Some(h) = fields.get("household").and_then(id) {
                        if let Ok(h) = HouseholdId::parse(&h) {
                            n.households.insert(h);
                        }
                    }
                    for key in ["guardians", "proxies"] {
                        for v in fields
                            .get(key)
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(Ok(r)) = id(v).map(|s| ResidentId::parse(&s)) {
                                n.residents.insert(r);
                            }
                        }
                    }
                }
            }
        }
        n
    }

    /// A record's own id, household and the records it refers to.
    pub fn add_record(&mut self, r: &Resident) {
        self.residents.insert(r.id.clone());
        if let Some(h) = r.household_id() {
            self.households.insert(h.clone());
        }
        self.add_references(r);
    }

    /// The records `r` refers to (guardians, proxies), which must exist.
    pub fn add_references(&mut self, r: &Resident) {
        self.residents
            .extend(r.guardians.iter().map(|g| g.id.clone()));
        self.residents
            .extend(r.proxies.iter().map(|p| p.id.clone()));
    }
}

/// Life events between two full snapshots of the same register, `new` taken on `as_of`.
///
/// - a record current in `new` with reason `birth`, absent from `old`: a birth on its birth date;
/// - a record current in `new` with reason `move_in`, absent or not current in `old`: a
///   move-in on its `since` (or `as_of`);
/// - a record deceased or moved out in `new`, absent or current in `old`: a death or move-out
///   on its status date;
/// - a household with current residents in `old` whose current 世帯主 in `new` is someone
///   else: a householder change of the new 世帯主 on `as_of`.
///
/// `recorded` is the record's `status.recorded`, or else `as_of` (the register had it by
/// then).
///
/// A first load (`old` empty) gives nothing: it is the register as it stands, not news. The
/// births, deaths and moves its statuses date are derived from the records themselves
/// (`Population`), with their own days; a move-in whose day the register does not give is no
/// event at all (it would otherwise notify every such resident "today" of a move of long ago).
pub fn diff(old: &[Resident], new: &[Resident], as_of: NaiveDate) -> Vec<LifeEvent> {
    if old.is_empty() {
        return Vec::new();
    }
    let old_by_id: HashMap<&ResidentId, &Resident> = old.iter().map(|r| (&r.id, r)).collect();
    let mut events = Vec::new();
    for r in new {
        let before = old_by_id.get(&r.id).copied();
        let was_current = before.is_some_and(Resident::is_current);
        let recorded = r.status.recorded().or(Some(as_of));
        let event = match r.status {
            Status::Resident {
                reason: Some(ResidentReason::Birth),
                ..
            } if before.is_none() => Some((EventKind::Birth, r.birth_date)),
            Status::Resident {
                since,
                reason: Some(ResidentReason::MoveIn),
                ..
            } if !was_current => Some((EventKind::MoveIn, since.unwrap_or(as_of))),
            Status::Deceased { date, .. } if before.is_none() || was_current => {
                Some((EventKind::Death, date))
            }
            Status::MovedOut { date, .. } if before.is_none() || was_current => {
                Some((EventKind::MoveOut, date))
            }
            _ => None,
        };
        if let Some((kind, date)) = event {
            events.push(LifeEvent::new(kind, r.id.clone(), date, recorded));
        }
    }
    let (old_heads, new_heads) = (heads_by_household(old, None), heads_by_household(new, None));
    for id in new_householders(&old_heads, &new_heads) {
        events.push(LifeEvent::new(
            EventKind::HouseholderChange,
            id,
            as_of,
            None,
        ));
    }
    events
}
