//! The data-item dictionary (`rules/items/dictionary.yaml`): every register item an agency may
//! be told of or pull, named by its 住民記録システム標準仕様 and GIF terms, with the dictionary
//! version it was added in and where its value is in a [`Resident`] record. The items are
//! data; this module only reads them, compares records item by item and writes values.
//!
//! Also here: the CloudEvents `type` of a person's change ([`event_type`]), and the YAML
//! helpers the dictionary and purpose loaders share (every error at once, with its place).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::catalogue::{locate, LoadError, LoadErrors};
use crate::population::EventKind;
use crate::resident::{Resident, Status};

/// An item's stable code: lower-case ASCII words joined by `_` (`name_kana`). Agencies keep
/// it in their systems, so it never changes once published.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ItemCode(String);

/// Whether `s` is lower-case ASCII words of letters and digits joined by single `_`, starting
/// with a letter, at most 64 characters: the shape of item codes and attribute keys.
fn is_snake(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.split('_').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

impl ItemCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        if is_snake(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{} is not an item code: lower-case ASCII words (a-z, 0-9) joined by `_`, \
                 starting with a letter, at most 64 characters",
                crate::shown::quoted(s)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Lets a set of codes be asked `contains("name")`: the order and hash are the string's.
impl std::borrow::Borrow<str> for ItemCode {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ItemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ItemCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where an item's value is in a [`Resident`] record: one of the record's own fields, or a
/// key of its open `attributes` map. Written `source: name_kanji` or
/// `source: { attribute: kokuho }`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemSource {
    NameKanji,
    NameKana,
    BirthDate,
    Sex,
    Address,
    Household,
    Relationship,
    Status,
    StatusDate,
    Guardians,
    Proxies,
    Attribute(String),
}

impl ItemSource {
    /// The kind of value a record field has; `None` for an attribute, which holds what the
    /// register extract puts there.
    fn fixed_kind(&self) -> Option<Kind> {
        use ItemSource::*;
        Some(match self {
            NameKanji | NameKana => Kind::Text,
            BirthDate | StatusDate => Kind::Date,
            Sex | Household | Relationship => Kind::Code,
            Address | Status => Kind::Object,
            Guardians | Proxies => Kind::List,
            Attribute(_) => return None,
        })
    }

    /// The value in `r`, as [`Dictionary::value`] describes it.
    fn value(&self, r: &Resident) -> Value {
        let iso = |d: chrono::NaiveDate| Value::String(d.to_string());
        match self {
            ItemSource::NameKanji => json!(r.name.kanji),
            ItemSource::NameKana => json!(r.name.kana),
            ItemSource::BirthDate => iso(r.birth_date),
            ItemSource::Sex => json!(u8::from(r.sex)),
            ItemSource::Address => json!({
                "local_gov_code": r.address.local_gov_code.to_string(),
                "postal_code": r.address.postal_code,
                "text": r.address.text,
            }),
            ItemSource::Household => r.household_id().map_or(Value::Null, |h| json!(h.as_str())),
            ItemSource::Relationship => r
                .household
                .as_ref()
                .map_or(Value::Null, |h| json!(h.relationship.as_str())),
            ItemSource::Status => {
                let reason = match &r.status {
                    Status::Resident {
                        reason: Some(reason),
                        ..
                    } => json!(reason),
                    _ => Value::Null,
                };
                json!({ "kind": r.status.name(), "reason": reason })
            }
            ItemSource::StatusDate => r.status.date().map_or(Value::Null, iso),
            ItemSource::Guardians => r.guardians.iter().map(|g| json!(g.id.as_str())).collect(),
            ItemSource::Proxies => r.proxies.iter().map(|p| json!(p.id.as_str())).collect(),
            ItemSource::Attribute(key) => r.attributes.get(key).cloned().unwrap_or(Value::Null),
        }
    }
}

/// What an item's value looks like, for the agencies that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Text,
    Date,
    Code,
    Flag,
    Number,
    List,
    Object,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Date => "date",
            Kind::Code => "code",
            Kind::Flag => "flag",
            Kind::Number => "number",
            Kind::List => "list",
            Kind::Object => "object",
        }
    }
}

/// One register item an agency may receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub code: ItemCode,
    /// Its Japanese name (氏名).
    pub name: String,
    /// Its term in the 住民記録システム標準仕様; empty for an item the 住民票 does not hold
    /// (a guardian).
    pub standard_name: String,
    /// Its term in the GIF core data model for a person (個人); empty where that model has
    /// none (世帯番号).
    pub gif_term: String,
    /// `text`, `date`, `code`, `flag`, `number`, `list` or `object`.
    pub kind: String,
    /// The dictionary version it was added in.
    pub since: u32,
    pub source: ItemSource,
}

/// The dictionary: its current version and its items in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dictionary {
    version: u32,
    items: Vec<Item>,
}

/// Whether a value says something: a change from nothing to `null` or `[]` is no news.
fn has_value(v: &Value) -> bool {
    !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty()))
}

impl Dictionary {
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    pub fn get(&self, code: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.code.as_str() == code)
    }

    /// The items a reader of dictionary version `v` knows (since <= v).
    pub fn known_at(&self, v: u32) -> impl Iterator<Item = &Item> + '_ {
        self.items.iter().filter(move |i| i.since <= v)
    }

    /// The item codes whose value differs between the stored record and the new one; `old`
    /// None (a new record: birth, move-in) gives every item with a value (not `null`, not an
    /// empty list).
    pub fn changed(&self, old: Option<&Resident>, new: &Resident) -> BTreeSet<ItemCode> {
        self.items
            .iter()
            .filter(|i| {
                let now = i.source.value(new);
                match old {
                    None => has_value(&now),
                    Some(old) => i.source.value(old) != now,
                }
            })
            .map(|i| i.code.clone())
            .collect()
    }

    /// The item's value in a record, as JSON (`null` when absent): names as their kanji or
    /// kana string, dates ISO (`YYYY-MM-DD`), sex as its ISO 5218 number, the address as
    /// `{local_gov_code, postal_code, text}`, the household as its id, the relationship as
    /// its 続柄, the status as `{kind, reason}` (`reason` of a resident's entry: `birth`,
    /// `move_in`, `other`, or `null`), guardians and proxies as lists of resident ids
    /// (callers map ids to pseudonyms), attributes as stored.
    pub fn value(&self, item: &Item, r: &Resident) -> Value {
        item.source.value(r)
    }

    /// Address items: the ones a support measure (支援措置) restricts.
    pub fn is_address(&self, item: &Item) -> bool {
        item.source == ItemSource::Address
    }
}

/// The CloudEvents `type` of a person's change, from the life events the same batch derived
/// for them. With several, the most significant: death > move_out > move_in > birth >
/// householder_change; with none, a change of register items only.
pub fn event_type(kinds: &[EventKind]) -> &'static str {
    // Higher is more significant: what ends a person's record outranks what starts it, and
    // both outrank a change inside a household.
    let rank = |k: &EventKind| match k {
        EventKind::Death => 5,
        EventKind::MoveOut => 4,
        EventKind::MoveIn => 3,
        EventKind::Birth => 2,
        EventKind::HouseholderChange => 1,
    };
    match kinds.iter().max_by_key(|k| rank(k)) {
        Some(EventKind::Death) => "jp.lg.oshirase.resident.died",
        Some(EventKind::MoveOut) => "jp.lg.oshirase.resident.moved-out",
        Some(EventKind::MoveIn) => "jp.lg.oshirase.resident.moved-in",
        Some(EventKind::Birth) => "jp.lg.oshirase.resident.born",
        Some(EventKind::HouseholderChange) => "jp.lg.oshirase.resident.householder-changed",
        None => "jp.lg.oshirase.resident.changed",
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// One item as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemDoc {
    code: ItemCode,
    name: String,
    #[serde(deserialize_with = "written")]
    standard_name: Option<String>,
    #[serde(deserialize_with = "written")]
    gif_term: Option<String>,
    kind: Kind,
    since: u32,
    #[serde(deserialize_with = "serde_yaml_ng::with::singleton_map::deserialize")]
    source: ItemSource,
}

/// An optional text that must still be written (`~` for none): a term left out by mistake
/// would otherwise read as "there is none".
fn written<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// A dictionary file as read, with what the purposes loader needs even when it has errors.
pub(crate) struct DictionaryRead {
    pub dictionary: Dictionary,
    /// Every code the file defines, also of items with other errors, so that a purpose
    /// naming them gets no second error.
    pub codes: BTreeSet<ItemCode>,
    pub errors: Vec<LoadError>,
}

/// Reads a dictionary file (`rules/items/dictionary.yaml`). Returns every error at once, each
/// with file, line and field.
pub fn parse_dictionary(file: &str, text: &str) -> Result<Dictionary, LoadErrors> {
    let read = read_dictionary(file, text);
    if read.errors.is_empty() {
        Ok(read.dictionary)
    } else {
        Err(LoadErrors(read.errors))
    }
}

pub(crate) fn read_dictionary(file: &str, text: &str) -> DictionaryRead {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut read = DictionaryRead {
        dictionary: Dictionary {
            version: 0,
            items: Vec::new(),
        },
        codes: BTreeSet::new(),
        errors: Vec::new(),
    };
    let err = |field: &str, message: String, hint: Option<&str>| {
        error_at(file, text, field, message, hint.map(str::to_owned))
    };
    let value = match parse_value(file, text) {
        Ok(v) => v,
        Err(e) => {
            read.errors.push(e);
            return read;
        }
    };
    let serde_yaml_ng::Value::Mapping(top) = value else {
        read.errors.push(err(
            "",
            "a dictionary file is a mapping with `version` and `items`".into(),
            None,
        ));
        return read;
    };
    // The two keys are read on their own, so that a bad version still lets every item be
    // checked.
    let mut version = None;
    let mut docs = None;
    for (key, v) in &top {
        match key.as_str() {
            Some("version") => match u32::deserialize(v.clone()) {
                Ok(n) if n >= 1 => version = Some(n),
                Ok(_) => read
                    .errors
                    .push(err("version", "must be 1 or more".into(), None)),
                Err(e) => read.errors.push(err(
                    "version",
                    crate::shown::message(&e.to_string()),
                    Some("the current dictionary version: a whole number, 1 or more"),
                )),
            },
            Some("items") => match v {
                serde_yaml_ng::Value::Sequence(s) => docs = Some(s),
                _ => read.errors.push(err(
                    "items",
                    "must be a list of items (`- code: …`)".into(),
                    None,
                )),
            },
            key => {
                let key = key.unwrap_or_default();
                read.errors.push(err(
                    key,
                    format!(
                        "unknown field `{}`, expected `version` or `items`",
                        crate::shown::cap(key)
                    ),
                    Some("check the spelling; rules/README.md lists every field"),
                ))
            }
        }
    }
    let missing = |key: &str| format!("missing field `{key}`");
    if !top.contains_key("version") {
        read.errors.push(err("", missing("version"), None));
    }
    let Some(docs) = docs else {
        if !top.contains_key("items") {
            read.errors.push(err("", missing("items"), None));
        }
        return read;
    };
    if docs.is_empty() {
        read.errors
            .push(err("items", "needs at least one item".into(), None));
    }
    // Where each code and source was first defined, for the duplicate errors.
    let mut codes: BTreeMap<ItemCode, usize> = BTreeMap::new();
    let mut sources: HashMap<ItemSource, usize> = HashMap::new();
    for (i, doc) in docs.iter().enumerate() {
        let at = format!("items[{i}]");
        // A code read alone: an item with another error still defines it, and may still
        // repeat one.
        let code = doc
            .get("code")
            .and_then(|c| c.as_str())
            .and_then(|c| ItemCode::parse(c).ok());
        if let Some(code) = code {
            match codes.get(&code) {
                Some(&j) => read.errors.push(err(
                    &format!("{at}.code"),
                    format!("item `{code}` is already defined (items[{j}])"),
                    Some("every code names one item; add a new code instead"),
                )),
                None => {
                    codes.insert(code.clone(), i);
                }
            }
            read.codes.insert(code);
        }
        let doc: ItemDoc = match read_all(file, text, &at, doc) {
            Ok(d) => d,
            Err(e) => {
                read.errors.extend(e);
                continue;
            }
        };
        let before = read.errors.len();
        let repeated = codes.get(&doc.code) != Some(&i);
        let mut fail = |field: &str, message: String, hint: Option<&str>| {
            read.errors
                .push(err(&format!("{at}.{field}"), message, hint));
        };
        if doc.name.trim().is_empty() {
            fail("name", "must not be empty".into(), None);
        }
        for (field, term) in [
            ("standard_name", &doc.standard_name),
            ("gif_term", &doc.gif_term),
        ] {
            if term.as_deref().is_some_and(|t| t.trim().is_empty()) {
                fail(
                    field,
                    "must not be empty".into(),
                    Some("write `~` when the standard has no such item"),
                );
            }
        }
        if let Some(fixed) = doc.source.fixed_kind() {
            if fixed != doc.kind {
                fail(
                    "kind",
                    format!(
                        "`{}` values are of kind `{}`, not `{}`",
                        source_name(&doc.source),
                        fixed.name(),
                        doc.kind.name()
                    ),
                    None,
                );
            }
        }
        if let ItemSource::Attribute(key) = &doc.source {
            if !is_snake(key) {
                fail(
                    "source",
                    format!(
                        "{} is not an attribute key: lower-case ASCII words joined by `_`",
                        crate::shown::quoted(key)
                    ),
                    None,
                );
            }
        }
        if let Some(&j) = sources.get(&doc.source) {
            fail(
                "source",
                format!("items[{j}] already reads `{}`", source_name(&doc.source)),
                Some("one value has one code; agencies would be told of it twice"),
            );
        }
        if doc.since == 0 {
            fail("since", "must be 1 or more".into(), None);
        } else if let Some(v) = version.filter(|&v| doc.since > v) {
            fail(
                "since",
                format!(
                    "the item is of version {}, but the dictionary is at version {v}",
                    doc.since
                ),
                Some("raise `version` to the new items' version when adding them"),
            );
        }
        sources.entry(doc.source.clone()).or_insert(i);
        if read.errors.len() == before && !repeated {
            read.dictionary.items.push(Item {
                code: doc.code,
                name: doc.name,
                standard_name: doc.standard_name.unwrap_or_default(),
                gif_term: doc.gif_term.unwrap_or_default(),
                kind: doc.kind.name().to_owned(),
                since: doc.since,
                source: doc.source,
            });
        }
    }
    read.dictionary.version = version.unwrap_or(0);
    // In the order of the file, whatever order serde met them in.
    read.errors.sort_by_key(|e| (e.line, e.column));
    read
}

/// A source as the file writes it, for messages.
fn source_name(s: &ItemSource) -> String {
    match s {
        ItemSource::Attribute(k) => format!("attribute: {}", crate::shown::cap(k)),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// YAML helpers shared with `purposes`
// ---------------------------------------------------------------------------------------------

/// An error about `field` (a dotted path, `items[2].since`) at the field's line.
pub(crate) fn error_at(
    file: &str,
    text: &str,
    field: &str,
    message: String,
    hint: Option<String>,
) -> LoadError {
    let line = if field.is_empty() {
        1
    } else {
        locate(text, field)
    };
    let column = text
        .lines()
        .nth(line.saturating_sub(1))
        .map_or(1, |l| l.len() - l.trim_start_matches([' ', '-']).len() + 1);
    LoadError {
        file: file.to_owned(),
        line,
        column,
        field: field.to_owned(),
        message,
        hint,
    }
}

/// A YAML text read as a value; refused first if it nests too deeply (the YAML loader's time
/// grows with the square of the depth).
pub(crate) fn parse_value(file: &str, text: &str) -> Result<serde_yaml_ng::Value, LoadError> {
    let fail = |line, column, message| LoadError {
        file: file.to_owned(),
        line,
        column,
        field: String::new(),
        message,
        hint: None,
    };
    if let Some((line, column)) = crate::nesting::too_deep(text, crate::nesting::MAX_DEPTH) {
        return Err(fail(
            line,
            column,
            format!(
                "nested deeper than {} levels; an item or purpose file needs only a few",
                crate::nesting::MAX_DEPTH
            ),
        ));
    }
    serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        // The location is already in front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let mut e = fail(line, column, crate::shown::message(&message));
        e.hint = Some("check the indentation and quoting of this line".to_owned());
        e
    })
}

/// `T` read from `value`, a mapping at `prefix` in the file, with every faulty key reported:
/// serde stops at the first error, so the faulty key is taken out and the rest read again
/// until nothing more is wrong. A required key that was taken out is not reported missing.
pub(crate) fn read_all<T: DeserializeOwned>(
    file: &str,
    text: &str,
    prefix: &str,
    value: &serde_yaml_ng::Value,
) -> Result<T, Vec<LoadError>> {
    let join = |rel: &str| match (prefix.is_empty(), rel.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => rel.to_owned(),
        (false, false) => format!("{prefix}.{rel}"),
    };
    let serde_yaml_ng::Value::Mapping(mut map) = value.clone() else {
        return Err(vec![error_at(
            file,
            text,
            prefix,
            "must be a mapping of fields (`key: value`)".into(),
            None,
        )]);
    };
    let mut errors = Vec::new();
    let mut removed: BTreeSet<String> = BTreeSet::new();
    // Each round takes one key out, so this ends; the bound keeps a huge mapping cheap.
    for _ in 0..64 {
        let e = match serde_path_to_error::deserialize::<_, T>(serde_yaml_ng::Value::Mapping(
            map.clone(),
        )) {
            Ok(t) if errors.is_empty() => return Ok(t),
            Ok(_) => break,
            Err(e) => e,
        };
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        if let Some(key) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            if !removed.contains(key) {
                errors.push(error_at(file, text, &join(&path), message, None));
            }
            break;
        }
        // An unknown key is reported at itself, not at the mapping that holds it.
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split_once('`'))
            .map(|(k, _)| k.to_owned());
        // serde_path_to_error's path of an unknown key ends with the key itself.
        let rel = match &unknown {
            Some(k) if !path.ends_with(k.as_str()) => {
                if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                }
            }
            _ => path,
        };
        let hint = if unknown.is_some() {
            Some("check the spelling; rules/README.md lists every field".to_owned())
        } else if message.contains("unknown variant") {
            Some("use one of the listed values".to_owned())
        } else {
            None
        };
        errors.push(error_at(
            file,
            text,
            &join(&rel),
            crate::shown::message(&message),
            hint,
        ));
        let top = rel.split(['.', '[']).next().unwrap_or_default().to_owned();
        if map.remove(top.as_str()).is_none() {
            break;
        }
        removed.insert(top);
    }
    Err(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_codes_parse() {
        for ok in ["name", "name_kana", "status_date", "kokuho", "a1_b2"] {
            assert_eq!(ItemCode::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "Name",
            "name-kana",
            "_name",
            "name_",
            "name__kana",
            "1name",
            "名前",
            "a b",
        ] {
            assert!(ItemCode::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ItemCode::parse(&"a".repeat(65)).is_err());
        let long = ItemCode::parse(&"x".repeat(200)).unwrap_err();
        assert!(long.chars().count() < 200, "the value is cut: {long}");
    }

    #[test]
    fn item_codes_are_strings_in_json() {
        let c = ItemCode::parse("name_kana").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"name_kana\"");
        let back: ItemCode = serde_json::from_str("\"name_kana\"").unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<ItemCode>("\"Name\"").is_err());
    }

    #[test]
    fn every_error_of_one_item_is_reported() {
        let text = "\
version: 1
items:
  - code: name
    name: 氏名
    standard_name: 氏名
    gif_term: 氏名
    kind: txt
    since: x
    sorce: name_kanji
";
        let errs = parse_dictionary("d.yaml", text).unwrap_err().0;
        let at: Vec<_> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            at,
            [
                (7, "items[0].kind"),
                (8, "items[0].since"),
                (9, "items[0].sorce"),
            ],
            "{errs:#?}"
        );
        assert!(
            errs[2].message.contains("unknown field `sorce`"),
            "{errs:#?}"
        );
    }

    #[test]
    fn a_missing_term_is_an_error_but_tilde_is_none() {
        let item = |terms: &str| {
            format!(
                "version: 1\nitems:\n  - code: household\n    name: 世帯番号\n{terms}    kind: code\n    since: 1\n    source: household\n"
            )
        };
        let d = parse_dictionary(
            "d.yaml",
            &item("    standard_name: 世帯番号\n    gif_term: ~\n"),
        )
        .unwrap();
        assert_eq!(d.items()[0].gif_term, "");
        let errs = parse_dictionary("d.yaml", &item("    standard_name: 世帯番号\n"))
            .unwrap_err()
            .0;
        assert!(
            errs[0].message.contains("missing field `gif_term`"),
            "{errs:#?}"
        );
        assert_eq!(errs[0].field, "items[0]");
    }

    #[test]
    fn event_types_rank() {
        use EventKind::*;
        assert_eq!(event_type(&[]), "jp.lg.oshirase.resident.changed");
        assert_eq!(
            event_type(&[HouseholderChange, Death]),
            "jp.lg.oshirase.resident.died"
        );
        assert_eq!(
            event_type(&[MoveIn, MoveOut]),
            "jp.lg.oshirase.resident.moved-out"
        );
        assert_eq!(
            event_type(&[Birth, MoveIn]),
            "jp.lg.oshirase.resident.moved-in"
        );
        assert_eq!(
            event_type(&[HouseholderChange, Birth]),
            "jp.lg.oshirase.resident.born"
        );
    }
}
