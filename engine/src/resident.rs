//! The resident model: one snapshot record per person, parsed into types that cannot hold
//! invalid values. The wire format is documented in `docs/snapshot-format.md`.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{EmailAddress, HouseholdId, LocalGovCode, ResidentId};

/// A date written exactly `YYYY-MM-DD` ([`crate::calendar::parse_date`]): chrono alone also
/// takes `+2026-01-01` and `2026-1-1`.
pub(crate) fn date<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let s = String::deserialize(d)?;
    crate::calendar::parse_date(&s).map_err(serde::de::Error::custom)
}

/// An optional [`date`]; `null` is none.
pub(crate) fn opt_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| crate::calendar::parse_date(&s))
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// A value that deserializes only from an object. serde's derive also builds a struct from an
/// array of its fields in order (`["山田 太郎", "ヤマダ タロウ"]` for a name), which no input
/// format allows and which would let a misplaced array pass silently.
pub(crate) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for OnlyMaps<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object {…}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(OnlyMaps(std::marker::PhantomData))
            .map(Object)
    }
}

/// A field holding an object (see [`Object`]).
pub(crate) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::deserialize(d).map(|o| o.0)
}

/// An optional object; `null` is none.
fn opt_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Object<T>>::deserialize(d).map(|o| o.map(|o| o.0))
}

/// An array of objects.
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Object<T>>::deserialize(d).map(|v| v.into_iter().map(|o| o.0).collect())
}

/// ISO 5218 sex codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u8")]
pub enum Sex {
    Unknown,
    Male,
    Female,
    NotApplicable,
}

impl From<Sex> for u8 {
    fn from(s: Sex) -> u8 {
        match s {
            Sex::Unknown => 0,
            Sex::Male => 1,
            Sex::Female => 2,
            Sex::NotApplicable => 9,
        }
    }
}

impl<'de> Deserialize<'de> for Sex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(Sex::Unknown),
            1 => Ok(Sex::Male),
            2 => Ok(Sex::Female),
            9 => Ok(Sex::NotApplicable),
            n => Err(serde::de::Error::custom(format!(
                "{n} is not an ISO 5218 sex code (0 unknown, 1 male, 2 female, 9 not applicable)"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Name {
    pub kanji: String,
    #[serde(deserialize_with = "katakana")]
    pub kana: String,
}

/// A name's reading as the register writes it: full-width katakana, spaces allowed.
pub fn is_katakana(s: &str) -> bool {
    !s.trim().is_empty()
        && s.chars()
            .all(|c| matches!(c, '\u{30A0}'..='\u{30FF}' | ' ' | '\u{3000}'))
}

fn katakana<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if is_katakana(&s) {
        Ok(s)
    } else {
        // A name is personal data: the error names the field, never the value.
        Err(serde::de::Error::custom(
            "must be full-width katakana (spaces allowed)",
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidentReason {
    Birth,
    MoveIn,
    Other,
}

/// 住民状態. Read through [`StatusDoc`], whose errors keep their field path (an internally
/// tagged enum buffers the object and reports every error at `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "StatusDoc"
)]
pub enum Status {
    Resident {
        #[serde(default)]
        since: Option<NaiveDate>,
        #[serde(default)]
        reason: Option<ResidentReason>,
        /// The day the entry reached the register (届出・記載の日), when later than `since`.
        #[serde(default)]
        recorded: Option<NaiveDate>,
    },
    Deceased {
        date: NaiveDate,
        #[serde(default)]
        recorded: Option<NaiveDate>,
    },
    MovedOut {
        date: NaiveDate,
        #[serde(default)]
        recorded: Option<NaiveDate>,
    },
    /// A related person (proxy, guardian) who is not on this register.
    External,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum StatusKind {
    Resident,
    Deceased,
    MovedOut,
    External,
}

/// A `status` object as written: every field of every kind, each checked where it stands;
/// which fields a kind allows is checked after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusDoc {
    kind: StatusKind,
    #[serde(default, deserialize_with = "opt_date")]
    since: Option<NaiveDate>,
    #[serde(default)]
    reason: Option<ResidentReason>,
    #[serde(default, deserialize_with = "opt_date")]
    date: Option<NaiveDate>,
    #[serde(default, deserialize_with = "opt_date")]
    recorded: Option<NaiveDate>,
}

impl TryFrom<StatusDoc> for Status {
    type Error = String;

    fn try_from(s: StatusDoc) -> Result<Self, String> {
        let written = [
            ("since", s.since.is_some()),
            ("reason", s.reason.is_some()),
            ("date", s.date.is_some()),
            ("recorded", s.recorded.is_some()),
        ];
        let (kind, allowed): (&str, &[&str]) = match s.kind {
            StatusKind::Resident => ("resident", &["since", "reason", "recorded"]),
            StatusKind::Deceased => ("deceased", &["date", "recorded"]),
            StatusKind::MovedOut => ("moved_out", &["date", "recorded"]),
            StatusKind::External => ("external", &[]),
        };
        if let Some((field, _)) = written
            .iter()
            .find(|(f, there)| *there && !allowed.contains(f))
        {
            let expected = if allowed.is_empty() {
                "no other field".to_owned()
            } else {
                allowed
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "`{field}` is not a field of a `{kind}` status (it has {expected})"
            ));
        }
        let date = || {
            s.date
                .ok_or_else(|| format!("missing field `date` of a `{kind}` status"))
        };
        Ok(match s.kind {
            StatusKind::Resident => Status::Resident {
                since: s.since,
                reason: s.reason,
                recorded: s.recorded,
            },
            StatusKind::Deceased => Status::Deceased {
                date: date()?,
                recorded: s.recorded,
            },
            StatusKind::MovedOut => Status::MovedOut {
                date: date()?,
                recorded: s.recorded,
            },
            StatusKind::External => Status::External,
        })
    }
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Resident { .. } => "resident",
            Status::Deceased { .. } => "deceased",
            Status::MovedOut { .. } => "moved_out",
            Status::External => "external",
        }
    }

    /// The date the status began, where the register records one.
    pub fn date(&self) -> Option<NaiveDate> {
        match self {
            Status::Resident { since, .. } => *since,
            Status::Deceased { date, .. } | Status::MovedOut { date, .. } => Some(*date),
            Status::External => None,
        }
    }

    /// The day the status reached the register, if the record says.
    pub fn recorded(&self) -> Option<NaiveDate> {
        match self {
            Status::Resident { recorded, .. }
            | Status::Deceased { recorded, .. }
            | Status::MovedOut { recorded, .. } => *recorded,
            Status::External => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub local_gov_code: LocalGovCode,
    #[serde(
        default,
        deserialize_with = "postal_code",
        skip_serializing_if = "Option::is_none"
    )]
    pub postal_code: Option<String>,
    pub text: String,
}

fn postal_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    let b = s.as_bytes();
    let ok = b.len() == 8
        && b[3] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 3 || c.is_ascii_digit());
    if ok {
        Ok(Some(s))
    } else {
        // Part of an address: the error names the field, never the value.
        Err(serde::de::Error::custom("is not a postal code NNN-NNNN"))
    }
}

/// 続柄: relationship to the householder, from the closed vocabulary of the
/// 住民記録システム標準仕様書 (1.1.11).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Relationship(String);

/// A 続柄 outside the vocabulary, with a hint for the person fixing the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRelationship(String);

const KIN: [&str; 9] = ["子", "夫", "妻", "父", "母", "兄", "姉", "弟", "妹"];

impl Relationship {
    /// 世帯主.
    pub fn householder() -> Self {
        Self("世帯主".to_owned())
    }

    pub fn parse(raw: &str) -> Result<Self, BadRelationship> {
        let s = raw.replace('(', "（").replace(')', "）");
        if matches!(
            s.as_str(),
            "世帯主" | "夫（未届）" | "妻（未届）" | "縁故者" | "同居人"
        ) {
            return Ok(Self(s));
        }
        let links: Vec<&str> = s.split('の').collect();
        if links.iter().all(|l| KIN.contains(l)) {
            if links.len() <= 4 {
                return Ok(Self(s));
            }
            return Err(BadRelationship(format!(
                "{} has {} links; the register writes five or more as 縁故者",
                crate::shown::quoted(raw),
                links.len()
            )));
        }
        let hint = match s.as_str() {
            "孫" => "; hint: a grandchild is written 子の子",
            "祖父" => "; hint: write 父の父 or 母の父",
            "祖母" => "; hint: write 父の母 or 母の母",
            "甥" | "姪" => "; hint: write 兄の子, 姉の子, 弟の子 or 妹の子",
            "おじ" | "おば" | "叔父" | "叔母" | "伯父" | "伯母" => {
                "; hint: write 父の兄, 母の妹 etc."
            }
            "家事使用人" | "準世帯主" => "; hint: the register no longer uses it (use 同居人)",
            _ => "; hint: use 世帯主, 夫, 妻, 子, 父, 母, 兄, 姉, 弟, 妹, chains such as 子の子, 縁故者 or 同居人",
        };
        Err(BadRelationship(format!(
            "unknown 続柄 {}{hint}",
            crate::shown::quoted(raw)
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_householder(&self) -> bool {
        self.0 == "世帯主"
    }

    /// Spouse of the householder.
    pub fn is_householders_spouse(&self) -> bool {
        matches!(self.0.as_str(), "夫" | "妻" | "夫（未届）" | "妻（未届）")
    }
}

impl fmt::Display for Relationship {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Relationship {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseholdLink {
    pub id: HouseholdId,
    pub relationship: Relationship,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardian {
    pub id: ResidentId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    pub id: ResidentId,
    /// Rule categories the proxy may see, or `all`.
    #[serde(deserialize_with = "scopes")]
    pub scopes: Vec<String>,
    #[serde(default, deserialize_with = "opt_date")]
    pub until: Option<NaiveDate>,
}

/// A proxy scope: `all` or a rule category. A misspelt one would silently authorise nothing.
struct Scope(String);

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "all" {
            return Ok(Scope(s));
        }
        let as_category = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&s);
        match crate::rule::Category::deserialize(as_category) {
            Ok(_) => Ok(Scope(s)),
            // serde lists the categories: "unknown variant `x`, expected one of `childcare`, …".
            Err(e) => Err(serde::de::Error::custom(format!(
                "{}, or `all`",
                crate::shown::message(&e.to_string()).replacen(
                    "unknown variant",
                    "unknown scope",
                    1
                )
            ))),
        }
    }
}

fn scopes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<Scope>::deserialize(d).map(|v| v.into_iter().map(|s| s.0).collect())
}

/// The open attribute map; a name must not be empty (nothing could read it).
fn attributes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<serde_json::Map<String, serde_json::Value>, D::Error> {
    let map = serde_json::Map::deserialize(d)?;
    if map.keys().any(|k| k.trim().is_empty()) {
        return Err(serde::de::Error::custom(
            "an attribute name must not be empty or only spaces",
        ));
    }
    Ok(map)
}

impl Proxy {
    pub fn covers(&self, category: &str, on: NaiveDate) -> bool {
        self.until.is_none_or(|u| on <= u)
            && self.scopes.iter().any(|s| s == "all" || s == category)
    }
}

/// Delivery channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Portal,
    Email,
    Webpush,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::Portal => "portal",
            Channel::Email => "email",
            Channel::Webpush => "webpush",
        }
    }

    /// The channel an outbox row's `channel` names; `None` for `staff` and unknown names.
    pub fn from_name(name: &str) -> Option<Self> {
        [Channel::Portal, Channel::Email, Channel::Webpush]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default)]
    pub email: Option<EmailAddress>,
    #[serde(default)]
    pub portal: bool,
    /// Number of registered web push subscriptions.
    #[serde(default)]
    pub push: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    #[default]
    Ja,
    En,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Channels the resident accepts; `None` means all.
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    #[serde(default)]
    pub language: Language,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consents {
    #[serde(default)]
    pub email: bool,
    #[serde(default)]
    pub webpush: bool,
}

/// One snapshot record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resident {
    pub id: ResidentId,
    #[serde(deserialize_with = "object")]
    pub name: Name,
    #[serde(deserialize_with = "date")]
    pub birth_date: NaiveDate,
    pub sex: Sex,
    #[serde(deserialize_with = "object")]
    pub status: Status,
    #[serde(deserialize_with = "object")]
    pub address: Address,
    #[serde(default, deserialize_with = "opt_object")]
    pub household: Option<HouseholdLink>,
    #[serde(default, deserialize_with = "objects")]
    pub guardians: Vec<Guardian>,
    #[serde(default, deserialize_with = "objects")]
    pub proxies: Vec<Proxy>,
    #[serde(default, deserialize_with = "object")]
    pub contact: Contact,
    #[serde(default, deserialize_with = "object")]
    pub preferences: Preferences,
    #[serde(default, deserialize_with = "object")]
    pub consents: Consents,
    #[serde(default)]
    pub support_measure: bool,
    #[serde(default, deserialize_with = "attributes")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Resident {
    pub fn is_current(&self) -> bool {
        matches!(self.status, Status::Resident { .. })
    }

    /// Whether the record is on the register on day `d`, reading the status dates: born,
    /// moved in, and not yet dead or moved out. `external` records never are.
    pub fn on_register(&self, d: NaiveDate) -> bool {
        if d < self.birth_date {
            return false;
        }
        match self.status {
            Status::Resident { since, reason, .. } => {
                !(reason == Some(ResidentReason::MoveIn) && since.is_some_and(|s| d < s))
            }
            Status::Deceased { date, .. } | Status::MovedOut { date, .. } => d < date,
            Status::External => false,
        }
    }

    /// Whether the person can be sent a notice on day `d`: on the register, or an external
    /// contact (a proxy or guardian living elsewhere).
    pub fn reachable_on(&self, d: NaiveDate) -> bool {
        matches!(self.status, Status::External) || self.on_register(d)
    }

    /// An attribute read as a flag: missing, null and `false` are false.
    pub fn flag(&self, name: &str) -> bool {
        self.attributes
            .get(name)
            .is_some_and(|v| v.as_bool().unwrap_or(false))
    }

    pub fn household_id(&self) -> Option<&HouseholdId> {
        self.household.as_ref().map(|h| &h.id)
    }

    pub fn is_householder(&self) -> bool {
        self.household
            .as_ref()
            .is_some_and(|h| h.relationship.is_householder())
    }

    /// Channels this person can be reached on, among `wanted`, honouring consents and
    /// preferences. `critical` notices ignore muting but not missing contact points.
    pub fn reachable_channels(&self, wanted: &[Channel], critical: bool) -> Vec<Channel> {
        let available = |c: Channel| match c {
            Channel::Portal => self.contact.portal,
            Channel::Email => self.contact.email.is_some() && self.consents.email,
            Channel::Webpush => self.contact.push > 0 && self.consents.webpush,
        };
        let accepted = |c: Channel| {
            critical
                || self
                    .preferences
                    .channels
                    .as_ref()
                    .is_none_or(|list| list.contains(&c))
        };
        let mut out: Vec<Channel> = wanted
            .iter()
            .copied()
            .filter(|c| available(*c) && accepted(*c))
            .collect();
        // A critical notice muted everywhere is re-routed to any channel the person has.
        if critical && out.is_empty() {
            out = [Channel::Portal, Channel::Email, Channel::Webpush]
                .into_iter()
                .filter(|c| available(*c))
                .collect();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_vocabulary() {
        for ok in [
            "世帯主",
            "妻",
            "夫(未届)",
            "妻（未届）",
            "子",
            "子の子",
            "子の妻",
            "父の母",
            "子の子の子の子",
            "縁故者",
            "同居人",
            "妻の父",
        ] {
            assert!(Relationship::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            Relationship::parse("夫(未届)").unwrap().as_str(),
            "夫（未届）"
        );
        let e = Relationship::parse("孫").unwrap_err().to_string();
        assert!(e.contains("子の子"), "{e}");
        assert!(Relationship::parse("子の子の子の子の子")
            .unwrap_err()
            .to_string()
            .contains("縁故者"));
        for bad in ["祖父", "甥", "家事使用人", "準世帯主", "友人", ""] {
            assert!(Relationship::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sex_codes() {
        assert_eq!(serde_json::from_str::<Sex>("2").unwrap(), Sex::Female);
        assert!(serde_json::from_str::<Sex>("3")
            .unwrap_err()
            .to_string()
            .contains("ISO 5218"));
    }
}
