//! Households: people put together as families, couples, adult children at home and
//! elderly parents with a child's family, with their 続柄; and the order they are numbered in.

use std::collections::HashMap;

use chrono::NaiveDate;
use rand::prelude::*;

use crate::attributes::attr;
use crate::people::NONE;
use crate::world::{pick, World, CHILDREN, MAX_AGE};

/// How a household was formed (later steps treat families and couples differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Family,
    Couple,
    Parent,
    Single,
    Arrived,
}

#[derive(Debug, Clone)]
pub(crate) struct Household {
    pub(crate) members: Vec<u32>,
    pub(crate) kind: Kind,
    pub(crate) surname: u16,
    /// Address number; also the order of the shuffled households.
    pub(crate) number: u32,
    pub(crate) moved_in: Option<NaiveDate>,
}

/// The closed 続柄 vocabulary as it is used here, interned: people carry a `u16`.
pub(crate) struct Rels {
    names: Vec<String>,
    index: HashMap<String, u16>,
}

impl Rels {
    pub(crate) fn new() -> Self {
        let mut r = Rels {
            names: Vec::new(),
            index: HashMap::new(),
        };
        for s in [
            "世帯主",
            "妻",
            "夫",
            "子",
            "子の妻",
            "子の夫",
            "子の子",
            "父",
            "母",
            "兄",
            "姉",
            "弟",
            "妹",
            "同居人",
            "縁故者",
            "妻（未届）",
        ] {
            r.id(s);
        }
        r
    }

    pub(crate) fn id(&mut self, s: &str) -> u16 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len() as u16;
        self.names.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }

    pub(crate) fn name(&self, i: u16) -> &str {
        &self.names[usize::from(i)]
    }
}

/// 世帯主, the first interned 続柄.
pub(crate) const HEAD: u16 = 0;

/// Order of members inside a household record list.
fn rel_order(r: &str) -> u8 {
    match r {
        "世帯主" => 0,
        "妻" | "夫" | "妻（未届）" | "夫（未届）" => 1,
        "子" => 2,
        "子の妻" | "子の夫" => 3,
        "子の子" => 4,
        "父" | "母" => 5,
        "兄" | "姉" | "弟" | "妹" => 6,
        "同居人" => 9,
        _ => 8,
    }
}

pub(crate) fn is_spouse_rel(r: &str) -> bool {
    matches!(r, "妻" | "夫" | "妻（未届）" | "夫（未届）")
}

/// Households with children under 18 (sibling sets of 1/2/3, parents of plausible ages,
/// three-generation 11 %, lone parent 10 %), then couples, adult children living with their
/// parents, widowed parents with a son's family, and everybody else alone.
pub(crate) fn build_households(w: &mut World) {
    // 1. Families with minors.
    let mut minors: Vec<u32> = (0..w.persons.len() as u32)
        .filter(|&p| w.age(p) < 18)
        .collect();
    minors.shuffle(&mut w.rng);
    for c in minors {
        if w.persons[c as usize].hh != NONE {
            continue;
        }
        let h = w.new_household(Kind::Family);
        let mut kids = vec![c];
        w.persons[c as usize].hh = h;
        let want = pick(w, &CHILDREN);
        let mut tries = 0;
        while kids.len() < want && tries < 6 {
            tries += 1;
            let ages: Vec<i32> = kids.iter().map(|&k| w.age(k)).collect();
            let (lo, hi) = (
                *ages.iter().min().unwrap_or(&0),
                *ages.iter().max().unwrap_or(&0),
            );
            let gap = w.rng.random_range(1..=5);
            let a = if w.chance(0.5) { hi + gap } else { lo - gap };
            if !(0..18).contains(&a)
                || ages.contains(&a)
                || (a - lo).abs() > 9
                || (a - hi).abs() > 9
            {
                continue;
            }
            let sex = if w.chance(0.5) { 1 } else { 2 };
            if let Some(s) = w.take(sex, a, a, f64::from(a)) {
                w.persons[s as usize].hh = h;
                kids.push(s);
            }
        }
        kids.sort_by_key(|&k| w.persons[k as usize].birth);
        let eldest = w.age(kids[0]);
        let youngest = w.age(kids[kids.len() - 1]);
        let kind = pick(w, &[(0u8, 0.11), (1, 0.10), (2, 0.79)]); // three, lone, couple
        let lone_father = kind == 1 && w.chance(0.15);
        let mother_at_birth = (30.0 + 4.5 * w.gauss()).clamp(20.0, 41.0);
        let mother = if lone_father {
            None
        } else {
            w.take(
                2,
                eldest + 19,
                youngest + 44,
                f64::from(eldest) + mother_at_birth,
            )
        };
        let father = if kind != 1 || mother.is_none() {
            let base = mother.map_or(eldest + 31, |m| w.age(m));
            let target = f64::from(base) + 2.0 + 2.0 * w.gauss();
            w.take(1, (eldest + 19).max(base - 5), base + 12, target)
        } else {
            None
        };
        let parent = match father.or(mother) {
            Some(p) => p,
            None => {
                // A small register may have nobody of a parent's age: the nearest adult.
                let target = f64::from(eldest + 31);
                match w
                    .take(2, 18, MAX_AGE as i32, target)
                    .or_else(|| w.take(1, 18, MAX_AGE as i32, target))
                {
                    Some(p) => p,
                    None => {
                        // Children only (a register of a handful of people): the eldest heads.
                        w.add(h, kids[0], "世帯主");
                        for &k in &kids[1..] {
                            let r = if w.persons[k as usize].sex == 1 {
                                "弟"
                            } else {
                                "妹"
                            };
                            w.add(h, k, r);
                        }
                        continue;
                    }
                }
            }
        };
        let (father, mother) = if father.is_none() && mother.is_none() {
            if w.persons[parent as usize].sex == 1 {
                (Some(parent), None)
            } else {
                (None, Some(parent))
            }
        } else {
            (father, mother)
        };
        let (mut gf, mut gm) = (None, None);
        if kind == 0 {
            let pa = w.age(parent);
            gf = w.take(1, pa + 22, pa + 42, f64::from(pa + 30));
            gm = w.take(2, pa + 20, pa + 42, f64::from(pa + 28));
        }
        let grandparents_head = gf.is_some_and(|g| w.age(g) < 72) && w.chance(0.6);
        if let (true, Some(g)) = (grandparents_head, gf) {
            w.add(h, g, "世帯主");
            if let Some(m) = gm {
                w.add(h, m, "妻");
                w.marry(g, m);
            }
            w.add(h, parent, "子");
            w.child_of(parent, Some(g), gm);
            if let (Some(f), Some(m)) = (father, mother) {
                let other = if parent == f { m } else { f };
                w.add(
                    h,
                    other,
                    if parent == f {
                        "子の妻"
                    } else {
                        "子の夫"
                    },
                );
                w.marry(f, m);
            }
            for &k in &kids {
                w.add(h, k, "子の子");
            }
        } else {
            w.add(h, parent, "世帯主");
            if let (Some(f), Some(m)) = (father, mother) {
                let other = if parent == f { m } else { f };
                w.add(h, other, if parent == f { "妻" } else { "夫" });
                w.marry(f, m);
            }
            if let Some(g) = gf {
                w.add(h, g, "父");
            }
            if let Some(m) = gm {
                w.add(h, m, "母");
                if let Some(g) = gf {
                    w.marry(g, m);
                }
            }
            if gf.is_some() || gm.is_some() {
                w.child_of(parent, gf, gm);
            }
            for &k in &kids {
                w.add(h, k, "子");
            }
        }
        for &k in &kids {
            w.child_of(k, father, mother);
        }
        if father.is_none() || mother.is_none() {
            w.persons[parent as usize].attrs |= attr::SINGLE_PARENT;
        }
    }

    // Households a parent's adult child may join, by the mother's (or father's) age; and
    // households with a male head an elderly parent may join, by the head's age.
    let mut with_parent: Vec<Vec<u32>> = vec![Vec::new(); MAX_AGE + 1];
    let mut with_son: Vec<Vec<u32>> = vec![Vec::new(); MAX_AGE + 1];

    // 2. Couples without minors, by the man's age.
    const MARRIED_MEN: [(i32, i32, f64); 7] = [
        (25, 29, 0.28),
        (30, 39, 0.55),
        (40, 49, 0.62),
        (50, 64, 0.75),
        (65, 74, 0.82),
        (75, 84, 0.78),
        (85, 200, 0.55),
    ];
    for a in (25..=MAX_AGE).rev() {
        let men = std::mem::take(&mut w.pools[0][a]);
        let mut rest = Vec::new();
        for man in men {
            if w.persons[man as usize].hh != NONE {
                continue;
            }
            let p = MARRIED_MEN
                .iter()
                .find(|(lo, hi, _)| (*lo..=*hi).contains(&(a as i32)))
                .map_or(0.0, |x| x.2);
            if !w.chance(p) {
                rest.push(man);
                continue;
            }
            let target = a as f64 - 2.5 + 2.5 * w.gauss();
            let Some(wife) = w.take(2, (a as i32 - 14).max(22), a as i32 + 4, target) else {
                rest.push(man);
                continue;
            };
            let h = w.new_household(Kind::Couple);
            if w.chance(0.03) {
                w.add(h, wife, "世帯主");
                w.add(h, man, "夫");
            } else {
                w.add(h, man, "世帯主");
                w.add(h, wife, "妻");
            }
            w.marry(man, wife);
        }
        w.pools[0][a] = rest;
    }
    for h in 0..w.households.len() as u32 {
        let hh = &w.households[h as usize];
        if !matches!(hh.kind, Kind::Family | Kind::Couple) {
            continue;
        }
        let head = hh.members[0];
        let hp = &w.persons[head as usize];
        if w.rels.name(hp.rel) != "世帯主" {
            continue;
        }
        let mother = if hp.sex == 2 { head } else { hp.spouse };
        let has_elders = hh.members.iter().any(|&m| {
            matches!(
                w.rels.name(w.persons[m as usize].rel),
                "父" | "母" | "子の妻" | "子の夫"
            )
        });
        if mother != NONE && hh.members.len() < 5 && !has_elders {
            with_parent[w.age(mother) as usize].push(h);
        }
        if hp.sex == 1 && hh.members.len() < 5 && !has_elders {
            with_son[w.age(head) as usize].push(h);
        }
    }

    // 3. Unmarried adult children still living with their parents.
    const HOME_SHARE: [(i32, i32, f64); 5] = [
        (18, 24, 0.72),
        (25, 29, 0.55),
        (30, 39, 0.38),
        (40, 49, 0.28),
        (50, 64, 0.20),
    ];
    for a in 18..=64usize {
        for s in 0..2 {
            let people = std::mem::take(&mut w.pools[s][a]);
            let mut rest = Vec::new();
            for c in people {
                if w.persons[c as usize].hh != NONE {
                    continue;
                }
                let p = HOME_SHARE
                    .iter()
                    .find(|(lo, hi, _)| (*lo..=*hi).contains(&(a as i32)))
                    .map_or(0.0, |x| x.2);
                if !w.chance(p) {
                    rest.push(c);
                    continue;
                }
                // Join a couple or family whose mother is of the right age...
                let mut joined = false;
                for _ in 0..4 {
                    let m_age = (a as f64 + 30.0 + 4.0 * w.gauss()).round() as i32;
                    if m_age < a as i32 + 19 || m_age > a as i32 + 44 || m_age as usize > MAX_AGE {
                        continue;
                    }
                    let bucket = &mut with_parent[m_age as usize];
                    if bucket.is_empty() {
                        continue;
                    }
                    let i = w.rng.random_range(0..bucket.len());
                    let h = bucket[i];
                    // Four is common, five rarer (2020 Census household sizes).
                    let size = w.households[h as usize].members.len();
                    if size >= 5 || (size == 4 && w.chance(0.6)) {
                        if size >= 5 {
                            bucket.swap_remove(i);
                        }
                        continue;
                    }
                    let head = w.households[h as usize].members[0];
                    let spouse = w.persons[head as usize].spouse;
                    w.add(h, c, "子");
                    let (f, m) = if w.persons[head as usize].sex == 1 {
                        (head, spouse)
                    } else {
                        (spouse, head)
                    };
                    w.child_of(c, (f != NONE).then_some(f), (m != NONE).then_some(m));
                    joined = true;
                    break;
                }
                if joined {
                    continue;
                }
                // ... or live with a widowed or single parent.
                let ai = a as i32;
                let parent = w
                    .take(2, ai + 20, ai + 44, f64::from(ai + 31))
                    .or_else(|| w.take(1, ai + 22, ai + 50, f64::from(ai + 33)));
                let Some(par) = parent else {
                    rest.push(c);
                    continue;
                };
                let h = w.new_household(Kind::Parent);
                let par_rel = if w.persons[par as usize].sex == 2 {
                    "母"
                } else {
                    "父"
                };
                if w.age(par) >= 80 && ai >= 45 {
                    w.add(h, c, "世帯主");
                    w.add(h, par, par_rel);
                } else {
                    w.add(h, par, "世帯主");
                    w.add(h, c, "子");
                }
                let (f, m) = if w.persons[par as usize].sex == 1 {
                    (Some(par), None)
                } else {
                    (None, Some(par))
                };
                w.child_of(c, f, m);
            }
            w.pools[s][a] = rest;
        }
    }

    // 4. Widowed parents living with a son's or a daughter's family, more often the older
    // they are.
    let mut has_elder = vec![false; w.households.len()];
    for a in 65..=MAX_AGE {
        for s in 0..2 {
            // Widows outnumber widowers and more often live with a child.
            let p = match (a, s) {
                (65..=74, 0) => 0.25,
                (75..=84, 0) => 0.40,
                (_, 0) => 0.55,
                (65..=74, _) => 0.35,
                (75..=84, _) => 0.55,
                _ => 0.70,
            };
            let people = std::mem::take(&mut w.pools[s][a]);
            let mut rest = Vec::new();
            for o in people {
                if w.persons[o as usize].hh != NONE {
                    continue;
                }
                if !w.chance(p) {
                    rest.push(o);
                    continue;
                }
                let target = (a as f64 - 30.0 + 3.0 * w.gauss()).round() as i32;
                let t = target.clamp(a as i32 - 44, a as i32 - 20) as usize;
                let sons = w.chance(0.6);
                let bucket = if sons {
                    &mut with_son[t]
                } else {
                    &mut with_parent[t]
                };
                if bucket.is_empty() {
                    rest.push(o);
                    continue;
                }
                let i = w.rng.random_range(0..bucket.len());
                let h = bucket[i];
                if sons {
                    bucket.swap_remove(i);
                }
                let size = w.households[h as usize].members.len();
                if has_elder[h as usize] || size >= 5 || (size == 4 && w.chance(0.7)) {
                    rest.push(o);
                    continue;
                }
                has_elder[h as usize] = true;
                let head = w.households[h as usize].members[0];
                // The child: the 世帯主 (a son, or a lone mother), or the 世帯主's wife.
                let child = if sons || w.persons[head as usize].sex == 2 {
                    head
                } else {
                    w.persons[head as usize].spouse
                };
                let rel = match (child == head, s) {
                    (true, 0) => "父",
                    (true, _) => "母",
                    (false, 0) => "妻の父",
                    (false, _) => "妻の母",
                };
                w.add(h, o, rel);
                w.persons[child as usize].parents[s] = o;
            }
            w.pools[s][a] = rest;
        }
    }

    // 5. Everybody else lives alone.
    for s in 0..2 {
        for a in 0..=MAX_AGE {
            let people = std::mem::take(&mut w.pools[s][a]);
            for p in people {
                if w.persons[p as usize].hh == NONE {
                    let h = w.new_household(Kind::Single);
                    w.add(h, p, "世帯主");
                }
            }
        }
    }
}

/// Households in a random order; residents numbered in household order, 世帯主 first, then
/// the people living elsewhere. Returns the household order and the last number given.
pub(crate) fn number_residents(w: &mut World) -> (Vec<u32>, u32) {
    let mut order: Vec<u32> = (0..w.households.len() as u32).collect();
    order.shuffle(&mut w.rng);
    let mut number = 0u32;
    for (i, &h) in order.iter().enumerate() {
        w.households[h as usize].number = i as u32 + 1;
        let mut members = std::mem::take(&mut w.households[h as usize].members);
        members.sort_by_key(|&m| {
            let p = &w.persons[m as usize];
            (rel_order(w.rels.name(p.rel)), p.birth, m)
        });
        for &m in &members {
            number += 1;
            w.persons[m as usize].number = number;
        }
        w.households[h as usize].members = members;
    }
    for &e in &w.externals.clone() {
        number += 1;
        w.persons[e as usize].number = number;
    }
    (order, number)
}
