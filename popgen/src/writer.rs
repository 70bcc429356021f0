//! The two files: snapshot.jsonl (docs/snapshot-format.md) and changes.jsonl
//! (docs/change-feed.md). Records are made and serialized one at a time as they are written,
//! with the contact data drawn as each record is made.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use chrono::NaiveDate;
use oshirase_engine::calendar;
use oshirase_engine::ids::LocalGovCode;
use oshirase_engine::municipalities::Municipality;
use rand::prelude::*;
use serde::Serialize;

use crate::attributes::attr;
use crate::names::{given_names, romaji, SURNAMES};
use crate::people::{flag, NONE};
use crate::world::{
    World, ADULT_AGE, ELSEWHERE, LATE_OLD_BAND_START, OLD_BAND_START, TOWNS, YOUNG_BAND_END,
};
use crate::{Options, Summary};

/// A resident id: `R` and the resident number.
pub(crate) fn rid(n: u32) -> String {
    format!("R{n:08}")
}

/// A household id: `H` and the address number.
pub(crate) fn hid(n: u32) -> String {
    format!("H{n:07}")
}

/// An invented address in `m`, one per address number, in one of `wards` (`[""]` for a
/// municipality without wards).
fn address_text(m: &Municipality, wards: &[&str], n: u32) -> String {
    let ward = wards[n as usize % wards.len()];
    let town = TOWNS[(n as usize / wards.len()) % TOWNS.len()];
    let rest = n as usize / (wards.len() * TOWNS.len());
    format!(
        "{}{}{ward}{town}{}丁目{}番{}号",
        m.prefecture,
        m.name,
        rest % 5 + 1,
        (rest / 5) % 30 + 1,
        (rest / 150) % 40 + 1
    )
}

#[derive(Serialize)]
struct NameOut {
    kanji: String,
    kana: String,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum StatusOut {
    Resident {
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<NaiveDate>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    External,
}

#[derive(Serialize)]
struct AddressOut {
    local_gov_code: LocalGovCode,
    text: String,
}

#[derive(Serialize)]
struct HouseholdOut {
    id: String,
    relationship: String,
}

#[derive(Serialize)]
struct IdOut {
    id: String,
}

#[derive(Serialize)]
struct ProxyOut {
    id: String,
    scopes: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<NaiveDate>,
}

#[derive(Serialize)]
struct ContactOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    portal: bool,
    #[serde(skip_serializing_if = "is_zero")]
    push: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct PreferencesOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'static [&'static str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'static str>,
}

#[derive(Serialize)]
struct ConsentsOut {
    email: bool,
    webpush: bool,
}

#[derive(Serialize, Default)]
struct AttributesOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    kokuho: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kouki: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    employees_insurance: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    employees_insurance_dependent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    employees_pension: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pension_recipient: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kaigo_certified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_servant: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    single_parent: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direct_payment: Option<bool>,
}

impl AttributesOut {
    fn from_bits(b: u16) -> Self {
        let on = |f: u16| (b & f != 0).then_some(true);
        AttributesOut {
            kokuho: on(attr::KOKUHO),
            kouki: on(attr::KOUKI),
            employees_insurance: on(attr::EMP_INS),
            employees_insurance_dependent: on(attr::EMP_DEP),
            employees_pension: on(attr::EMP_PENSION),
            pension_recipient: on(attr::PENSION),
            kaigo_certified: on(attr::KAIGO),
            public_servant: on(attr::PUBLIC),
            single_parent: on(attr::SINGLE_PARENT),
            direct_payment: if b & attr::DIRECT_PAYMENT != 0 {
                Some(true)
            } else if b & attr::NO_DIRECT_PAYMENT != 0 {
                Some(false)
            } else {
                None
            },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct RecordOut {
    id: String,
    name: NameOut,
    birth_date: NaiveDate,
    sex: u8,
    status: StatusOut,
    address: AddressOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    household: Option<HouseholdOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    guardians: Vec<IdOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    proxies: Vec<ProxyOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<ContactOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferences: Option<PreferencesOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consents: Option<ConsentsOut>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    support_measure: bool,
    attributes: AttributesOut,
}

const DOMAINS: [&str; 5] = [
    "example.jp",
    "example.com",
    "example.net",
    "example.org",
    "mail.example.jp",
];
/// (lowest age, e-mail, portal account, push if on the portal) by age band.
const CONTACT_BY_AGE: [(i32, f64, f64, f64); 4] = [
    (85, 0.15, 0.05, 0.0),
    (75, 0.45, 0.22, 0.25),
    (65, 0.75, 0.50, 0.35),
    (18, 0.92, 0.78, 0.50),
];
const CHANNEL_CHOICES: [&[&str]; 3] = [&["portal", "email"], &["portal", "webpush"], &["portal"]];

impl World {
    /// A resident's record as of `on` (the snapshot date, or the day of a birth or move-in).
    /// `used` holds the given names already used in the household.
    pub(crate) fn record(
        &mut self,
        p: u32,
        status: StatusOut,
        on: NaiveDate,
        used: &mut Vec<&'static str>,
    ) -> RecordOut {
        let person = self.persons[p as usize].clone();
        let external = person.flags & flag::EXTERNAL != 0;
        let surname = if external {
            self.surname()
        } else {
            self.households[person.hh as usize].surname
        };
        let (s_kanji, s_kana) = SURNAMES[usize::from(surname)];
        let names = given_names(person.sex, person.birth);
        let free: Vec<&(&str, &str)> = names.iter().filter(|n| !used.contains(&n.0)).collect();
        let &(g_kanji, g_kana) = if free.is_empty() {
            &names[self.rng.random_range(0..names.len())]
        } else {
            free[self.rng.random_range(0..free.len())]
        };
        used.push(g_kanji);
        let age = calendar::age_on(person.birth, on);
        let mut contact = None;
        let mut consents = None;
        let mut preferences = None;
        if age >= ADULT_AGE && person.flags & flag::NO_CONTACT == 0 {
            let email = |w: &mut World| {
                let form = w.rng.random_range(0..3);
                let (g, s) = (romaji(g_kana), romaji(s_kana));
                let local = match form {
                    0 => format!("{g}.{s}{}", person.number),
                    1 => format!("{s}.{g}{}", person.number),
                    _ => format!("{}{s}{}", g.get(..1).unwrap_or("x"), person.number),
                };
                format!("{local}@{}", DOMAINS[w.rng.random_range(0..DOMAINS.len())])
            };
            if external {
                contact = Some(ContactOut {
                    email: Some(email(self)),
                    portal: false,
                    push: 0,
                });
                consents = Some(ConsentsOut {
                    email: true,
                    webpush: false,
                });
            } else {
                let &(_, pe, pp, pu) = CONTACT_BY_AGE
                    .iter()
                    .find(|c| age >= c.0)
                    .expect("adults have a band");
                let mail = self.chance(pe).then(|| email(self));
                let portal = self.chance(pp);
                let push = if portal && self.chance(pu) {
                    if self.chance(0.2) {
                        2
                    } else {
                        1
                    }
                } else {
                    0
                };
                consents = Some(ConsentsOut {
                    email: mail.is_some() && self.chance(0.9),
                    webpush: push > 0 && self.chance(0.95),
                });
                if mail.is_some() || portal {
                    contact = Some(ContactOut {
                        email: mail,
                        portal,
                        push,
                    });
                }
                let channels = if person.flags & flag::SUPPORT != 0 {
                    Some(CHANNEL_CHOICES[2])
                } else if portal && self.chance(0.08) {
                    Some(CHANNEL_CHOICES[self.rng.random_range(0..3)])
                } else {
                    None
                };
                let language = (person.flags & flag::LANGUAGE_EN != 0).then_some("en");
                if channels.is_some() || language.is_some() {
                    preferences = Some(PreferencesOut { channels, language });
                }
            }
        }
        let (address, household) = if external {
            let (code, text) = ELSEWHERE[p as usize % ELSEWHERE.len()];
            (
                AddressOut {
                    local_gov_code: LocalGovCode::parse(code).expect("a code of ELSEWHERE"),
                    text: text.to_owned(),
                },
                None,
            )
        } else {
            let h = &self.households[person.hh as usize];
            (
                AddressOut {
                    local_gov_code: self.municipality.code,
                    text: address_text(self.municipality, self.wards, h.number),
                },
                Some(HouseholdOut {
                    id: hid(h.number),
                    relationship: self.rels.name(person.rel).to_owned(),
                }),
            )
        };
        // Guardians: the parents living in the household, for minors; an adult ward's
        // 成年後見人.
        let mut guardians = Vec::new();
        if age < ADULT_AGE && !external {
            for q in person.parents {
                if q != NONE && self.persons[q as usize].hh == person.hh {
                    guardians.push(IdOut {
                        id: rid(self.persons[q as usize].number),
                    });
                }
            }
        }
        if let Some(&g) = self.guardians_external.get(&p) {
            guardians.push(IdOut {
                id: rid(self.persons[g as usize].number),
            });
        }
        let proxies = self
            .proxies
            .get(&p)
            .map(|v| {
                v.iter()
                    .map(|(q, scopes, until)| ProxyOut {
                        id: rid(self.persons[*q as usize].number),
                        scopes,
                        until: *until,
                    })
                    .collect()
            })
            .unwrap_or_default();
        RecordOut {
            id: rid(person.number),
            name: NameOut {
                kanji: format!("{s_kanji} {g_kanji}"),
                kana: format!("{s_kana} {g_kana}"),
            },
            birth_date: person.birth,
            sex: person.sex,
            status,
            address,
            household,
            guardians,
            proxies,
            contact,
            preferences,
            consents,
            support_measure: person.flags & flag::SUPPORT != 0,
            attributes: AttributesOut::from_bits(if external { 0 } else { person.attrs }),
        }
    }
}

/// One change line before its `seq` is known: ordered by the day it reached the register, then
/// its date, then the order it was made in.
pub(crate) struct Line {
    recorded: NaiveDate,
    date: NaiveDate,
    made: u64,
    /// The JSON object without `seq`.
    body: String,
}

#[derive(Serialize)]
struct LineOut<'a, R: Serialize> {
    kind: &'static str,
    date: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded: Option<NaiveDate>,
    #[serde(flatten)]
    rest: &'a R,
}

impl Line {
    /// The line of a change of `kind`; `recorded` is written only when it is after `date`.
    pub(crate) fn new<R: Serialize>(
        kind: &'static str,
        date: NaiveDate,
        recorded: NaiveDate,
        made: u64,
        rest: &R,
    ) -> anyhow::Result<Self> {
        let body = serde_json::to_string(&LineOut {
            kind,
            date,
            recorded: (recorded > date).then_some(recorded),
            rest,
        })?;
        Ok(Line {
            recorded,
            date,
            made,
            body,
        })
    }
}

/// The rest of a `birth` or `move_in` line.
#[derive(Serialize)]
pub(crate) struct RecordField<'a> {
    pub(crate) record: &'a RecordOut,
}

/// The rest of a `death` or `move_out` line.
#[derive(Serialize)]
pub(crate) struct ResidentField {
    pub(crate) resident: String,
}

/// The rest of a `householder_change` line.
#[derive(Serialize)]
pub(crate) struct HouseholderChangeOut {
    pub(crate) household: String,
    pub(crate) new_householder: String,
    pub(crate) relationships: BTreeMap<String, String>,
}

/// snapshot.jsonl: the header, then the households in `order`, then the people living
/// elsewhere; and the counts for the summary.
pub(crate) fn write_snapshot(
    w: &mut World,
    order: &[u32],
    args: &Options,
) -> anyhow::Result<Summary> {
    let path = args.out.join("snapshot.jsonl");
    let file =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(
        out,
        r#"{{"format":"oshirase-snapshot","schema_version":1,"as_of":"{}","local_gov_code":"{}"}}"#,
        args.start, args.municipality.code
    )?;
    let mut s = Summary {
        out: args.out.clone(),
        ..Summary::default()
    };
    for &h in order {
        let members = w.households[h as usize].members.clone();
        s.households += 1;
        s.sizes[(members.len() - 1).min(5)] += 1;
        let mut used = Vec::new();
        for m in members {
            let age = w.age(m);
            s.residents += 1;
            s.under_15 += usize::from(age < YOUNG_BAND_END);
            s.aged_65 += usize::from(age >= OLD_BAND_START);
            s.aged_75 += usize::from(age >= LATE_OLD_BAND_START);
            let p = &w.persons[m as usize];
            let status = match p.since {
                None => StatusOut::Resident {
                    since: Some(p.birth),
                    reason: Some("birth"),
                },
                Some(d) => StatusOut::Resident {
                    since: Some(d),
                    reason: Some("move_in"),
                },
            };
            let start = w.start;
            let record = w.record(m, status, start, &mut used);
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
    }
    for e in w.externals.clone() {
        let start = w.start;
        let record = w.record(e, StatusOut::External, start, &mut Vec::new());
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    s.records = s.residents + w.externals.len();
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(s)
}

/// changes.jsonl: the header, then the lines in the order they reached the register, numbered.
pub(crate) fn write_changes(
    mut lines: Vec<Line>,
    dir: &Path,
    municipality: LocalGovCode,
) -> anyhow::Result<usize> {
    lines.sort_by_key(|l| (l.recorded, l.date, l.made));
    let path = dir.join("changes.jsonl");
    let file =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(
        out,
        r#"{{"format":"oshirase-changes","schema_version":1,"local_gov_code":"{municipality}"}}"#
    )?;
    for (i, l) in lines.iter().enumerate() {
        writeln!(out, "{{\"seq\":{},{}", i + 1, &l.body[1..])?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(lines.len())
}
