//! What the register says about each person beyond who they live with: occupation, health
//! insurance, pension and care; how long they have lived here; proxies and guardians.

use chrono::NaiveDate;
use oshirase_engine::calendar;
use rand::prelude::*;

use crate::people::{flag, Person, NONE};
use crate::world::{
    pick, World, ADULT_AGE, EARLY_PENSION, KAIGO, KOUKI_AGE, PARTNER_MOVE_IN_AGES, PENSION_AGE,
};

/// What a person does, which decides insurance and pension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Occ {
    Infant,
    Child,
    Student,
    Employee,
    SelfEmployed,
    Homemaker,
    Retired,
    NoJob,
}

/// Attribute flags (rules/README.md "Attributes used by the catalogue").
pub(crate) mod attr {
    pub const KOKUHO: u16 = 1;
    pub const KOUKI: u16 = 1 << 1;
    pub const EMP_INS: u16 = 1 << 2;
    pub const EMP_DEP: u16 = 1 << 3;
    pub const EMP_PENSION: u16 = 1 << 4;
    pub const PENSION: u16 = 1 << 5;
    pub const KAIGO: u16 = 1 << 6;
    pub const PUBLIC: u16 = 1 << 7;
    pub const SINGLE_PARENT: u16 = 1 << 8;
    pub const DIRECT_PAYMENT: u16 = 1 << 9;
    pub const NO_DIRECT_PAYMENT: u16 = 1 << 10;
}

/// An occupation drawn for `p`'s age (as of `w.start`), sex and household.
pub(crate) fn occupation(w: &mut World, p: u32) -> Occ {
    let a = w.age(p);
    let person = &w.persons[p as usize];
    let (sex, spouse) = (person.sex, person.spouse);
    let at_home = matches!(w.rels.name(person.rel), "子" | "子の子");
    use Occ::*;
    match a {
        ..=5 => Infant,
        6..=14 => Child,
        15..=17 => Student,
        18..=22 => pick(
            w,
            &if at_home {
                [
                    (Student, 0.45),
                    (Employee, 0.40),
                    (SelfEmployed, 0.05),
                    (NoJob, 0.10),
                ]
            } else {
                [
                    (Student, 0.15),
                    (Employee, 0.70),
                    (SelfEmployed, 0.10),
                    (NoJob, 0.05),
                ]
            },
        ),
        23..=59 if sex == 1 => pick(w, &[(Employee, 0.72), (SelfEmployed, 0.18), (NoJob, 0.10)]),
        23..=59 if spouse != NONE => {
            let self_family = w.persons[spouse as usize].occ == SelfEmployed;
            pick(
                w,
                &if self_family {
                    [(SelfEmployed, 0.5), (Employee, 0.25), (Homemaker, 0.25)]
                } else {
                    [(Employee, 0.55), (SelfEmployed, 0.07), (Homemaker, 0.38)]
                },
            )
        }
        23..=59 => pick(w, &[(Employee, 0.72), (SelfEmployed, 0.13), (NoJob, 0.15)]),
        60..=64 if sex == 1 => pick(
            w,
            &[(Employee, 0.60), (SelfEmployed, 0.15), (Retired, 0.25)],
        ),
        60..=64 => pick(
            w,
            &[(Employee, 0.45), (SelfEmployed, 0.10), (Retired, 0.45)],
        ),
        65..=69 if sex == 1 => pick(
            w,
            &[(Employee, 0.35), (SelfEmployed, 0.15), (Retired, 0.50)],
        ),
        65..=69 => pick(
            w,
            &[(Employee, 0.22), (SelfEmployed, 0.10), (Retired, 0.68)],
        ),
        70..=74 if sex == 1 => pick(
            w,
            &[(Employee, 0.18), (SelfEmployed, 0.15), (Retired, 0.67)],
        ),
        70..=74 => pick(
            w,
            &[(Employee, 0.10), (SelfEmployed, 0.08), (Retired, 0.82)],
        ),
        _ => {
            if w.chance(0.08) {
                SelfEmployed
            } else {
                Retired
            }
        }
    }
}

/// The age a pension starts: the 特別支給 step of the cohort for people with 厚生年金, else
/// PENSION_AGE.
fn pension_start(sex: u8, birth: NaiveDate, kousei: bool) -> i32 {
    if !kousei {
        return PENSION_AGE;
    }
    EARLY_PENSION
        .iter()
        .find(|(s, last, _)| *s == sex && birth <= *last)
        .map_or(PENSION_AGE, |step| step.2)
}

/// Whether `q` is an employee in household `h` whose insurance covers dependants (until the
/// employee is insured by 後期高齢者医療).
pub(crate) fn is_earner(w: &World, q: u32, h: u32) -> bool {
    q != NONE && {
        let p = &w.persons[q as usize];
        p.hh == h && p.occ == Occ::Employee && w.age(q) < KOUKI_AGE
    }
}

/// Health insurance (exactly one), pension and care attributes, from age and occupation.
pub(crate) fn attributes(w: &mut World, p: u32) {
    let a = w.age(p);
    let (occ, sex, birth, spouse, parents, h) = {
        let x = &w.persons[p as usize];
        (x.occ, x.sex, x.birth, x.spouse, x.parents, x.hh)
    };
    use Occ::*;
    let mut at = w.persons[p as usize].attrs;
    if calendar::anniversary(birth, KOUKI_AGE) <= w.start {
        at |= attr::KOUKI;
    } else if occ == Employee {
        at |= attr::EMP_INS;
    } else {
        let dependent = (matches!(occ, Homemaker | NoJob | Retired) && is_earner(w, spouse, h))
            || (parents.iter().any(|&q| is_earner(w, q, h))
                && (a < 30 || matches!(occ, Student | NoJob)));
        at |= if dependent {
            attr::EMP_DEP
        } else {
            attr::KOKUHO
        };
    }
    let kousei = occ == Employee
        || (a >= 20
            && match occ {
                Retired => w.chance(if sex == 1 { 0.75 } else { 0.5 }),
                Homemaker => w.chance(0.5),
                SelfEmployed => w.chance(0.3),
                NoJob => a >= 25 && w.chance(0.3),
                _ => false,
            });
    if kousei {
        at |= attr::EMP_PENSION;
    }
    let uptake = if a >= PENSION_AGE { 0.96 } else { 0.8 };
    if a >= pension_start(sex, birth, kousei) && w.chance(uptake) {
        at |= attr::PENSION;
    }
    let care = KAIGO
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&a))
        .map_or(0.0, |x| x.2);
    if w.chance(care) {
        at |= attr::KAIGO;
    }
    if occ == Employee && (22..=64).contains(&a) && w.chance(0.07) {
        at |= attr::PUBLIC;
    }
    w.persons[p as usize].attrs = at;
}

/// Occupations, then the attributes that follow from them, for everybody.
pub(crate) fn assign_work(w: &mut World) {
    // Men first, so a wife's work can follow her husband's.
    let mut order: Vec<u32> = (0..w.persons.len() as u32).collect();
    order.sort_by_key(|&p| w.persons[p as usize].sex);
    for &p in &order {
        let occ = occupation(w, p);
        w.persons[p as usize].occ = occ;
    }
    for p in 0..w.persons.len() as u32 {
        attributes(w, p);
    }
}

/// On the register since birth, or since a move-in: whole households arrive together, and a
/// spouse born elsewhere moves in around marriage.
pub(crate) fn assign_arrivals(w: &mut World) {
    let last = calendar::add_days(w.start, -1);
    let earliest = calendar::shift_years(w.start, -36);
    for h in 0..w.households.len() {
        let head = w.households[h].members[0];
        let ha = w.age(head);
        let native_p = if ha >= 60 {
            0.55
        } else if ha >= 40 {
            0.4
        } else {
            0.25
        };
        let native = w.chance(native_p);
        if !native {
            let lo = calendar::anniversary(w.persons[head as usize].birth, ADULT_AGE)
                .max(earliest)
                .min(last);
            let d = w.day_between(lo, last);
            w.households[h].moved_in = Some(d);
        }
        let members = w.households[h].members.clone();
        for m in members {
            let (birth, rel) = {
                let p = &w.persons[m as usize];
                (p.birth, p.rel)
            };
            let blood = matches!(
                w.rels.name(rel),
                "世帯主" | "子" | "子の子" | "父" | "母" | "兄" | "姉" | "弟" | "妹"
            );
            let since = match w.households[h].moved_in {
                Some(d) if birth < d => Some(d),
                Some(_) => None,
                None if blood => None,
                None => {
                    let (from, to) = PARTNER_MOVE_IN_AGES;
                    let lo = calendar::anniversary(birth, from).min(last);
                    let hi = calendar::anniversary(birth, to).min(last).max(lo);
                    Some(w.day_between(lo, hi))
                }
            };
            w.persons[m as usize].since = since;
        }
    }
}

/// Scope sets a registered proxy may hold.
const PROXY_SCOPES: [&[&str]; 4] = [
    &["pension", "health_insurance", "bereavement"],
    &["long_term_care", "health_insurance"],
    &[
        "pension",
        "health_insurance",
        "long_term_care",
        "bereavement",
    ],
    &["all"],
];

/// A person living elsewhere (a proxy or a 成年後見人), on record but not resident.
fn external_person(w: &mut World, sex: u8, age: usize) -> u32 {
    let birth = w.birth_for_age(age);
    let mut p = Person::new(sex, birth);
    p.flags |= flag::EXTERNAL;
    p.occ = Occ::Employee;
    w.persons.push(p);
    let id = (w.persons.len() - 1) as u32;
    w.externals.push(id);
    id
}

/// Registered proxies for some elderly people living alone (an adult child in town or
/// elsewhere), adult wards with an external 成年後見人, a few households under a support
/// measure (支援措置) and some residents who read English.
pub(crate) fn assign_relations(w: &mut World) {
    let mut adults_40_65: Vec<u32> = Vec::new();
    for p in 0..w.persons.len() as u32 {
        if (40..=65).contains(&w.age(p)) {
            adults_40_65.push(p);
        }
    }
    for h in 0..w.households.len() {
        let members = w.households[h].members.clone();
        if members.len() == 1 {
            let p = members[0];
            let a = w.age(p);
            if a >= 80 && w.chance(0.06) {
                let scopes = PROXY_SCOPES[w.rng.random_range(0..PROXY_SCOPES.len())];
                let until = w
                    .chance(0.3)
                    .then(|| calendar::shift_years(w.start, w.rng.random_range(1..=3)));
                let proxy = if w.chance(0.6) && !adults_40_65.is_empty() {
                    adults_40_65[w.rng.random_range(0..adults_40_65.len())]
                } else {
                    let sex = if w.chance(0.5) { 1 } else { 2 };
                    external_person(w, sex, (a - 30).clamp(40, 75) as usize)
                };
                w.proxies.entry(p).or_default().push((proxy, scopes, until));
            } else if a >= 85 && w.chance(0.01) {
                let age = 40 + w.rng.random_range(0..25);
                let lawyer = external_person(w, 1, age);
                w.guardians_external.insert(p, lawyer);
                w.persons[p as usize].flags |= flag::NO_CONTACT;
                w.persons[p as usize].attrs |= attr::KAIGO;
            }
        }
        let lone_mother = members.len() >= 2 && {
            let head = &w.persons[members[0] as usize];
            head.sex == 2 && head.attrs & attr::SINGLE_PARENT != 0
        };
        if lone_mother && w.chance(0.01) {
            for &m in &members {
                w.persons[m as usize].flags |= flag::SUPPORT;
            }
        }
        if w.chance(0.003) {
            for &m in &members {
                w.persons[m as usize].flags |= flag::LANGUAGE_EN;
            }
        }
    }
}
