//! The year after the snapshot: births, deaths, moves in and out, and the 世帯主変更 after a
//! 世帯主's death. Planned first (some plans show on the snapshot), lived after it is written.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use oshirase_engine::calendar;
use rand::prelude::*;
use serde::Serialize;

use crate::attributes::{attr, attributes, is_earner, occupation, Occ};
use crate::households::{is_spouse_rel, Kind, HEAD};
use crate::people::{flag, Person, NONE};
use crate::world::{
    age_table, fertility, move_weight, pick, qx, World, BIRTH_RATE, CHILDREN, DEATH_RATE,
    MOVE_IN_RATE, MOVE_OUT_RATE, TRIPLETS, TWINS, UNMARRIED_FERTILITY,
};
use crate::writer::{hid, rid, HouseholderChangeOut, Line, RecordField, ResidentField, StatusOut};
use crate::Summary;

/// A planned event of one household's year, in date order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Plan {
    /// A delivery: mother, babies.
    Birth(u32, u8),
    Death(u32),
    /// A young adult leaves the household alone.
    Leave(u32),
    /// The whole household moves away.
    HouseholdMove,
    /// The 世帯主変更届 after this 世帯主 died.
    NewHead(u32),
}

/// The change lines of the year as they are made, and their counts.
pub(crate) struct Year {
    pub(crate) lines: Vec<Line>,
    made: u64,
    pub(crate) summary: Summary,
}

impl Year {
    fn push<R: Serialize>(
        &mut self,
        kind: &'static str,
        date: NaiveDate,
        recorded: NaiveDate,
        rest: &R,
    ) -> anyhow::Result<()> {
        self.made += 1;
        self.lines
            .push(Line::new(kind, date, recorded, self.made, rest)?);
        Ok(())
    }

    fn count_mover(&mut self, w: &World, p: u32, on: NaiveDate) {
        if (20..=34).contains(&calendar::age_on(w.persons[p as usize].birth, on)) {
            self.summary.movers_20_34 += 1;
        }
    }
}

/// Who becomes 世帯主 after `dead` (the 世帯主) died: the spouse, else the eldest adult child,
/// else the eldest adult; and the new 続柄 of the others, relative to the new 世帯主.
fn new_head(
    w: &mut World,
    dead: u32,
    current: &[u32],
    on: NaiveDate,
) -> Option<(u32, BTreeMap<u32, String>)> {
    let adult = |w: &World, p: u32| calendar::age_on(w.persons[p as usize].birth, on) >= 18;
    let rel = |w: &World, p: u32| w.rels.name(w.persons[p as usize].rel).to_owned();
    let eligible: Vec<u32> = current
        .iter()
        .copied()
        .filter(|&p| adult(w, p) && w.persons[p as usize].flags & flag::NEW == 0)
        .collect();
    let by_age = |v: &mut Vec<u32>| v.sort_by_key(|&p| (w.persons[p as usize].birth, p));
    let mut spouses: Vec<u32> = eligible
        .iter()
        .copied()
        .filter(|&p| is_spouse_rel(&rel(w, p)))
        .collect();
    let mut children: Vec<u32> = eligible
        .iter()
        .copied()
        .filter(|&p| rel(w, p) == "子")
        .collect();
    let mut others = eligible.clone();
    by_age(&mut spouses);
    by_age(&mut children);
    by_age(&mut others);
    let head = spouses
        .first()
        .or(children.first())
        .or(others.first())
        .copied()?;
    let head_rel = rel(w, head);
    let dead_p = w.persons[dead as usize].clone();
    let hp = w.persons[head as usize].clone();
    let sibling = |other: &Person| -> &'static str {
        match (other.birth < hp.birth, other.sex == 1) {
            (true, true) => "兄",
            (true, false) => "姉",
            (false, true) => "弟",
            (false, false) => "妹",
        }
    };
    let mut changes = BTreeMap::new();
    for &p in current {
        if p == head || w.persons[p as usize].flags & flag::NEW != 0 {
            continue;
        }
        let r = rel(w, p);
        let person = w.persons[p as usize].clone();
        let new: Option<String> = if is_spouse_rel(&head_rel) {
            // The deceased was the new 世帯主's 夫 or 妻.
            let d = if dead_p.sex == 1 { "夫" } else { "妻" };
            match r.as_str() {
                "子" | "子の妻" | "子の夫" | "子の子" | "同居人" | "縁故者" => None,
                "父" | "母" | "兄" | "姉" | "弟" | "妹"
                    if matches!(head_rel.as_str(), "妻" | "夫") =>
                {
                    Some(format!("{d}の{r}"))
                }
                // The new 世帯主's own parent (`妻の母` becomes `母`).
                _ if r.starts_with(&format!("{head_rel}の")) => {
                    Some(r[head_rel.len() + "の".len()..].to_owned())
                }
                _ => Some("縁故者".to_owned()),
            }
        } else if head_rel == "子" {
            // The deceased was the new 世帯主's 父 or 母.
            let d = if dead_p.sex == 1 { "父" } else { "母" };
            match r.as_str() {
                "妻" | "夫" | "妻（未届）" | "夫（未届）" => {
                    Some(if person.sex == 1 { "父" } else { "母" }.to_owned())
                }
                "子" => Some(sibling(&person).to_owned()),
                "子の妻" | "子の夫" if person.spouse == head => {
                    Some(if person.sex == 1 { "夫" } else { "妻" }.to_owned())
                }
                "子の妻" | "子の夫" if person.spouse != NONE => {
                    let sp = w.persons[person.spouse as usize].clone();
                    let tail = if person.sex == 1 { "夫" } else { "妻" };
                    Some(format!("{}の{tail}", sibling(&sp)))
                }
                "子の子" if person.parents.contains(&head) => Some("子".to_owned()),
                "子の子" => {
                    let parent = person
                        .parents
                        .iter()
                        .copied()
                        .find(|&q| q != NONE && w.persons[q as usize].parents.contains(&dead));
                    Some(match parent {
                        Some(q) => format!("{}の子", sibling(&w.persons[q as usize].clone())),
                        None => "縁故者".to_owned(),
                    })
                }
                "父" | "母" | "兄" | "姉" | "弟" | "妹" => Some(format!("{d}の{r}")),
                // The surviving spouse's parent: `妻の母` becomes `母の母`.
                _ if r.starts_with("妻の") || r.starts_with("夫の") => {
                    let p = if r.starts_with("妻の") {
                        "母"
                    } else {
                        "父"
                    };
                    Some(format!("{p}の{}", &r["妻の".len()..]))
                }
                "同居人" | "縁故者" => None,
                _ => Some("縁故者".to_owned()),
            }
        } else if r == "同居人" || r == "縁故者" {
            None
        } else {
            Some("縁故者".to_owned())
        };
        if let Some(n) = new.filter(|n| *n != r) {
            changes.insert(p, n);
        }
    }
    Some((head, changes))
}

/// 続柄 of a newborn from the mother's.
fn baby_relationship(mother: &str, sex: u8) -> String {
    match mother {
        "世帯主" | "妻" | "夫" | "妻（未届）" | "夫（未届）" => "子".to_owned(),
        "子" | "子の妻" => "子の子".to_owned(),
        "母" => if sex == 1 { "弟" } else { "妹" }.to_owned(),
        m if m.ends_with("の妻") => format!("{}の子", m.trim_end_matches("の妻")),
        _ => "縁故者".to_owned(),
    }
}

/// Who is born, dies and moves away during the year, by household: drawn at the national
/// rates before the snapshot is written.
pub(crate) fn plan_year(w: &mut World) -> BTreeMap<u32, Vec<(NaiveDate, Plan)>> {
    let n = w.persons.len() as u32;
    let residents: Vec<u32> = (0..n)
        .filter(|&p| w.persons[p as usize].flags & flag::EXTERNAL == 0)
        .collect();
    let total = residents.len() as f64;
    let mut plans: BTreeMap<u32, Vec<(NaiveDate, Plan)>> = BTreeMap::new();

    // Deaths: the life table's qx, scaled to the national rate.
    let q: Vec<f64> = residents
        .iter()
        .map(|&p| qx(w.persons[p as usize].sex, f64::from(w.age(p)) + 0.5))
        .collect();
    let k_death = DEATH_RATE * total / q.iter().sum::<f64>().max(1e-9);
    let mut dying = vec![false; n as usize];
    for (i, &p) in residents.iter().enumerate() {
        if w.chance((q[i] * k_death).min(0.9)) {
            let d = w.year_day();
            dying[p as usize] = true;
            plans
                .entry(w.persons[p as usize].hh)
                .or_default()
                .push((d, Plan::Death(p)));
        }
    }

    // Births: fertility by the mother's age, married women far more often, scaled to the
    // national rate (twins and triplets counted in).
    let married = |w: &World, p: u32| {
        let x = &w.persons[p as usize];
        x.spouse != NONE && w.persons[x.spouse as usize].hh == x.hh
    };
    let per_delivery = 1.0 + TWINS + 2.0 * TRIPLETS;
    let f: Vec<f64> = residents
        .iter()
        .map(|&p| {
            let x = &w.persons[p as usize];
            if x.sex != 2 {
                return 0.0;
            }
            fertility(w.age(p))
                * if married(w, p) {
                    1.0
                } else {
                    UNMARRIED_FERTILITY
                }
        })
        .collect();
    let k_birth = BIRTH_RATE * total / (f.iter().sum::<f64>() * per_delivery).max(1e-9);
    let mut mothers = vec![false; n as usize];
    for (i, &p) in residents.iter().enumerate() {
        if f[i] > 0.0 && w.chance((f[i] * k_birth).min(0.9)) {
            let d = w.year_day();
            let r: f64 = w.rng.random();
            let babies = if r < TRIPLETS {
                3
            } else if r < TRIPLETS + TWINS {
                2
            } else {
                1
            };
            mothers[p as usize] = true;
            plans
                .entry(w.persons[p as usize].hh)
                .or_default()
                .push((d, Plan::Birth(p, babies)));
            if w.persons[p as usize].attrs & attr::KOKUHO != 0 || w.chance(0.5) {
                // 出産育児一時金: most hospitals are paid directly (直接支払制度).
                w.persons[p as usize].attrs |= if w.chance(0.85) {
                    attr::DIRECT_PAYMENT
                } else {
                    attr::NO_DIRECT_PAYMENT
                };
            }
        }
    }

    // Moves out: whole households, or a young adult leaving the parents' home; households
    // with a birth or a death this year stay (their lines would interleave).
    let mut units: Vec<(u32, Option<u32>, f64, usize)> = Vec::new(); // (household, person, weight, size)
    for h in 0..w.households.len() as u32 {
        if plans.contains_key(&h) {
            continue;
        }
        let members = &w.households[h as usize].members;
        let head = members[0];
        units.push((h, None, move_weight(w.age(head)), members.len()));
        if members.len() > 1 {
            for &m in members.iter() {
                let x = &w.persons[m as usize];
                let has_child = members
                    .iter()
                    .any(|&c| w.persons[c as usize].parents.contains(&m));
                if w.rels.name(x.rel) == "子" && !has_child && (18..=34).contains(&w.age(m)) {
                    units.push((h, Some(m), move_weight(w.age(m)), 1));
                }
            }
        }
    }
    let weight: f64 = units.iter().map(|u| u.2 * u.3 as f64).sum();
    let k_move = MOVE_OUT_RATE * total / weight.max(1e-9);
    let mut moving_household = vec![false; w.households.len()];
    for (h, who, wt, _) in units {
        if !w.chance((wt * k_move).min(0.95)) {
            continue;
        }
        let d = w.year_day();
        match who {
            None if !moving_household[h as usize] => {
                moving_household[h as usize] = true;
                plans.entry(h).or_default().push((d, Plan::HouseholdMove));
            }
            Some(p) => plans.entry(h).or_default().push((d, Plan::Leave(p))),
            None => {}
        }
    }
    plans
}

/// The planned events in date order, household by household, as change lines; then the
/// arrivals. New residents are numbered from `first_new`.
pub(crate) fn live_year(
    w: &mut World,
    plans: BTreeMap<u32, Vec<(NaiveDate, Plan)>>,
    first_new: u32,
) -> anyhow::Result<Year> {
    let mut year = Year {
        lines: Vec::new(),
        made: 0,
        summary: Summary::default(),
    };
    let mut next_number = first_new;
    for (h, mut events) in plans {
        events.sort();
        let mut current: Vec<u32> = w.households[h as usize].members.clone();
        let mut head: Option<u32> = current
            .iter()
            .copied()
            .find(|&p| w.persons[p as usize].rel == HEAD);
        let mut i = 0;
        while i < events.len() {
            let (date, plan) = events[i];
            i += 1;
            match plan {
                Plan::Birth(mother, babies) => {
                    if !current.contains(&mother) {
                        continue;
                    }
                    let recorded = calendar::add_days(date, w.rng.random_range(1..=10));
                    let spouse = w.persons[mother as usize].spouse;
                    let father = (spouse != NONE && current.contains(&spouse)).then_some(spouse);
                    let mrel = w.rels.name(w.persons[mother as usize].rel).to_owned();
                    let mut used = Vec::new();
                    for _ in 0..babies {
                        let sex = if w.chance(1.05 / 2.05) { 1 } else { 2 };
                        let mut baby = Person::new(sex, date);
                        baby.occ = Occ::Infant;
                        baby.flags = flag::NEW;
                        baby.parents = [father.unwrap_or(NONE), mother];
                        baby.number = next_number;
                        next_number += 1;
                        let earner = [father.unwrap_or(NONE), mother]
                            .iter()
                            .any(|&q| is_earner(w, q, h));
                        baby.attrs = if earner { attr::EMP_DEP } else { attr::KOKUHO };
                        baby.rel = w.rels.id(&baby_relationship(&mrel, sex));
                        baby.hh = h;
                        w.persons.push(baby);
                        let b = (w.persons.len() - 1) as u32;
                        w.households[h as usize].members.push(b);
                        let record = w.record(
                            b,
                            StatusOut::Resident {
                                since: None,
                                reason: None,
                            },
                            date,
                            &mut used,
                        );
                        year.push("birth", date, recorded, &RecordField { record: &record })?;
                        year.summary.births += 1;
                        current.push(b);
                    }
                }
                Plan::Death(p) => {
                    if !current.contains(&p) {
                        continue;
                    }
                    current.retain(|&x| x != p);
                    let recorded = calendar::add_days(date, w.rng.random_range(1..=5));
                    let resident = rid(w.persons[p as usize].number);
                    year.push("death", date, recorded, &ResidentField { resident })?;
                    year.summary.deaths += 1;
                    if head == Some(p) {
                        head = None;
                        // The 世帯主変更届 (within 14 days), unless nobody is left; with one
                        // member left the register records it at once.
                        let left = current
                            .iter()
                            .filter(|&&x| w.persons[x as usize].flags & flag::NEW == 0)
                            .count();
                        if left > 0 {
                            let wait = if left == 1 {
                                0
                            } else {
                                w.rng.random_range(3..=14)
                            };
                            let d = calendar::add_days(recorded, wait);
                            if d <= w.end {
                                let at = events[i..].partition_point(|e| e.0 <= d) + i;
                                events.insert(at, (d, Plan::NewHead(p)));
                            }
                        }
                    }
                }
                Plan::NewHead(dead) => {
                    if head.is_some() {
                        continue;
                    }
                    let Some((nh, changes)) = new_head(w, dead, &current, date) else {
                        continue;
                    };
                    let mut relationships = BTreeMap::new();
                    for (p, r) in changes {
                        relationships.insert(rid(w.persons[p as usize].number), r.clone());
                        w.persons[p as usize].rel = w.rels.id(&r);
                    }
                    w.persons[nh as usize].rel = HEAD;
                    // The old 世帯主's record keeps its 続柄 (the 除票), but it is no longer
                    // anyone's to find as the head of a living household.
                    head = Some(nh);
                    let out = HouseholderChangeOut {
                        household: hid(w.households[h as usize].number),
                        new_householder: rid(w.persons[nh as usize].number),
                        relationships,
                    };
                    year.push("householder_change", date, date, &out)?;
                    year.summary.householder_changes += 1;
                }
                Plan::Leave(p) => {
                    if !current.contains(&p) || head == Some(p) {
                        continue;
                    }
                    current.retain(|&x| x != p);
                    let resident = rid(w.persons[p as usize].number);
                    year.push("move_out", date, date, &ResidentField { resident })?;
                    year.summary.moves_out += 1;
                    year.count_mover(w, p, date);
                }
                Plan::HouseholdMove => {
                    let leaving = std::mem::take(&mut current);
                    for p in leaving {
                        let resident = rid(w.persons[p as usize].number);
                        year.push("move_out", date, date, &ResidentField { resident })?;
                        year.summary.moves_out += 1;
                        year.count_mover(w, p, date);
                    }
                    head = None;
                }
            }
        }
    }
    arrivals(w, &mut year, &mut next_number)?;
    Ok(year)
}

/// Households moving in during the year, until the in-moves reach MOVE_IN_RATE: mostly young
/// people alone, then couples and families, by the movers' age profile.
fn arrivals(w: &mut World, year: &mut Year, next_number: &mut u32) -> anyhow::Result<()> {
    let residents = w
        .persons
        .iter()
        .filter(|p| p.flags & (flag::EXTERNAL | flag::NEW) == 0)
        .count();
    let target = (MOVE_IN_RATE * residents as f64).round() as usize;
    let table = age_table()?;
    // Head ages 18..=90 weighted by the population of that age and its propensity to move.
    let weights: Vec<(i32, f64)> = (18..=90)
        .map(|a| {
            let (_, m, f) = table[a as usize];
            (a, (m + f) * move_weight(a))
        })
        .collect();
    let total: f64 = weights.iter().map(|x| x.1).sum();
    let weights: Vec<(i32, f64)> = weights.into_iter().map(|(a, x)| (a, x / total)).collect();
    let mut arrived = 0;
    let mut next_household = w.households.iter().map(|h| h.number).max().unwrap_or(0) + 1;
    while arrived < target {
        let a = pick(w, &weights);
        let date = w.year_day();
        let recorded = calendar::add_days(date, w.rng.random_range(0..=13));
        let kind = match a {
            ..=29 => pick(w, &[(0u8, 0.75), (1, 0.18), (2, 0.07)]),
            30..=44 => pick(w, &[(0, 0.40), (1, 0.20), (2, 0.40)]),
            45..=64 => pick(w, &[(0, 0.50), (1, 0.30), (2, 0.20)]),
            _ => pick(w, &[(0, 0.60), (1, 0.40), (2, 0.0)]),
        };
        let h = w.new_household(Kind::Arrived);
        w.households[h as usize].number = next_household;
        w.households[h as usize].moved_in = Some(date);
        next_household += 1;
        let sex = if w.chance(0.55) { 1 } else { 2 };
        let mut new_person = |w: &mut World, sex: u8, age: i32, rel: &str| -> u32 {
            let lo = calendar::add_days(calendar::shift_years(date, -(age + 1)), 1);
            let hi = calendar::shift_years(date, -age);
            let mut p = Person::new(sex, w.day_between(lo, hi));
            p.flags = flag::NEW;
            p.number = *next_number;
            p.since = Some(date);
            *next_number += 1;
            w.persons.push(p);
            let id = (w.persons.len() - 1) as u32;
            w.add(h, id, rel);
            id
        };
        let head = new_person(w, sex, a, "世帯主");
        let mut parents = (head, NONE);
        if kind >= 1 {
            let age = (f64::from(a) + if sex == 1 { -2.5 } else { 2.5 } + 2.5 * w.gauss())
                .round()
                .max(18.0) as i32;
            let s = 3 - sex;
            let spouse = new_person(w, s, age, if s == 2 { "妻" } else { "夫" });
            w.marry(head, spouse);
            parents = (head, spouse);
        }
        if kind == 2 {
            let kids = pick(w, &CHILDREN);
            let oldest = (a - 25).clamp(0, 17);
            for _ in 0..kids {
                let age = w.rng.random_range(0..=oldest);
                let s = if w.chance(0.5) { 1 } else { 2 };
                let c = new_person(w, s, age, "子");
                let (f, m) = if w.persons[parents.0 as usize].sex == 1 {
                    (parents.0, parents.1)
                } else {
                    (parents.1, parents.0)
                };
                w.child_of(c, (f != NONE).then_some(f), (m != NONE).then_some(m));
            }
            if parents.1 == NONE {
                w.persons[head as usize].attrs |= attr::SINGLE_PARENT;
            }
        }
        let members = w.households[h as usize].members.clone();
        // Work and insurance as of the day they arrive (ages are read against `start`).
        let saved = std::mem::replace(&mut w.start, date);
        for &m in &members {
            let occ = occupation(w, m);
            w.persons[m as usize].occ = occ;
        }
        for &m in &members {
            attributes(w, m);
        }
        w.start = saved;
        let mut used = Vec::new();
        for &m in &members {
            let record = w.record(
                m,
                StatusOut::Resident {
                    since: None,
                    reason: None,
                },
                date,
                &mut used,
            );
            year.push("move_in", date, recorded, &RecordField { record: &record })?;
            year.summary.moves_in += 1;
            year.count_mover(w, m, date);
            arrived += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationships_after_a_householders_death_stay_in_the_vocabulary() {
        for r in ["子", "子の子", "母", "弟", "兄の子", "縁故者"] {
            assert!(
                oshirase_engine::resident::Relationship::parse(&baby_relationship(
                    match r {
                        "子" => "世帯主",
                        "子の子" => "子の妻",
                        "兄の子" => "兄の妻",
                        _ => "妻の母",
                    },
                    1
                ))
                .is_ok(),
                "{r}"
            );
        }
        for r in ["夫の父", "妻の母", "父の兄", "兄の妻", "姉の子"] {
            assert!(
                oshirase_engine::resident::Relationship::parse(r).is_ok(),
                "{r}"
            );
        }
    }
}
