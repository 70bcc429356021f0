//! The resident model: one snapshot record per person, parsed into types that cannot hold
//! invalid values. The wire format is documented in `docs/snapshot-format.md`.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{EmailAddress, HouseholdId, LocalGovCode, ResidentId};

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

fn katakana<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = !s.trim().is_empty()
        && s.chars()
            .all(|c| matches!(c, '\u{30A0}'..='\u{30FF}' | ' ' | '\u{3000}'));
    if ok {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!(
            "{s:?} must be full-width katakana (spaces allowed)"
        )))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResidentReason {
    Birth,
    MoveIn,
    Other,
}

/// 住民状態.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
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
        Err(serde::de::Error::custom(format!(
            "{s:?} is not a postal code NNN-NNNN"
        )))
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
                "{raw:?} has {} links; the register writes five or more as 縁故者",
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
        Err(BadRelationship(format!("unknown 続柄 {raw:?}{hint}")))
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
    pub scopes: Vec<String>,
    #[serde(default)]
    pub until: Option<NaiveDate>,
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
    pub name: Name,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub status: Status,
    pub address: Address,
    #[serde(default)]
    pub household: Option<HouseholdLink>,
    #[serde(default)]
    pub guardians: Vec<Guardian>,
    #[serde(default)]
    pub proxies: Vec<Proxy>,
    #[serde(default)]
    pub contact: Contact,
    #[serde(default)]
    pub preferences: Preferences,
    #[serde(default)]
    pub consents: Consents,
    #[serde(default)]
    pub support_measure: bool,
    #[serde(default)]
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
