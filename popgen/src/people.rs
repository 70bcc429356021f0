//! People: the register's residents by age and sex, before they are put into households.

use chrono::NaiveDate;
use rand::prelude::*;

use crate::attributes::Occ;
use crate::world::{age_table, World, CENSUS_TOP_AGE, MAX_AGE};

/// No person (an unset spouse, parent or household).
pub(crate) const NONE: u32 = u32::MAX;

/// Per-person marks besides the attributes (`attributes::attr`).
pub(crate) mod flag {
    pub const SUPPORT: u8 = 1;
    /// No contact data (an adult ward reached through the 成年後見人).
    pub const NO_CONTACT: u8 = 1 << 1;
    pub const EXTERNAL: u8 = 1 << 2;
    pub const LANGUAGE_EN: u8 = 1 << 3;
    /// Born or moved in during the generated year (a feed record, not a snapshot one).
    pub const NEW: u8 = 1 << 4;
}

/// One person, kept small: a million of them are held at once.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub(crate) birth: NaiveDate,
    pub(crate) sex: u8,
    pub(crate) occ: Occ,
    /// Interned 続柄.
    pub(crate) rel: u16,
    pub(crate) hh: u32,
    pub(crate) spouse: u32,
    pub(crate) parents: [u32; 2],
    pub(crate) attrs: u16,
    pub(crate) flags: u8,
    /// Move-in date; `None`: on the register since birth.
    pub(crate) since: Option<NaiveDate>,
    /// Resident number (the `R` id), given when the snapshot order is known.
    pub(crate) number: u32,
}

impl Person {
    pub(crate) fn new(sex: u8, birth: NaiveDate) -> Self {
        Person {
            birth,
            sex,
            occ: Occ::NoJob,
            rel: 0,
            hh: NONE,
            spouse: NONE,
            parents: [NONE, NONE],
            attrs: 0,
            flags: 0,
            since: None,
            number: 0,
        }
    }
}

/// Largest-remainder allocation of `total` people to the (sex, age) cells of the table.
fn allocate(table: &[(usize, f64, f64)], total: usize) -> Vec<(u8, usize, usize)> {
    let sum: f64 = table.iter().map(|(_, m, f)| m + f).sum();
    let mut cells: Vec<(u8, usize, f64)> = Vec::new();
    for &(age, m, f) in table {
        cells.push((1, age, m * total as f64 / sum));
        cells.push((2, age, f * total as f64 / sum));
    }
    let mut counts: Vec<(u8, usize, usize)> = cells
        .iter()
        .map(|(s, a, q)| (*s, *a, *q as usize))
        .collect();
    let given: usize = counts.iter().map(|c| c.2).sum();
    let mut order: Vec<usize> = (0..cells.len()).collect();
    // Largest remainder first; ties by cell order, so the result never depends on float noise
    // in the sort.
    order.sort_by(|&a, &b| {
        let ra = cells[a].2 - cells[a].2.floor();
        let rb = cells[b].2 - cells[b].2.floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().take(total - given) {
        counts[i].2 += 1;
    }
    counts
}

/// The register's people with the census age and sex structure, and the pools that
/// households are drawn from.
pub(crate) fn build_people(w: &mut World, n: usize) -> anyhow::Result<()> {
    let table = age_table()?;
    for (sex, age, count) in allocate(&table, n) {
        for _ in 0..count {
            // "100 and over": 100 to 105, each year about 60 % of the one before.
            let age = if age == CENSUS_TOP_AGE {
                let mut a = CENSUS_TOP_AGE;
                while a < MAX_AGE && w.chance(0.6) {
                    a += 1;
                }
                a
            } else {
                age
            };
            let birth = w.birth_for_age(age);
            w.persons.push(Person::new(sex, birth));
        }
    }
    let ids: Vec<u32> = (0..w.persons.len() as u32).collect();
    for id in ids {
        let p = &w.persons[id as usize];
        let (s, a) = (usize::from(p.sex - 1), w.age(id) as usize);
        w.pools[s][a].push(id);
    }
    for s in 0..2 {
        for a in 0..=MAX_AGE {
            let mut v = std::mem::take(&mut w.pools[s][a]);
            v.shuffle(&mut w.rng);
            w.pools[s][a] = v;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_exact_and_proportional() {
        let t = age_table().unwrap();
        for n in [1, 7, 1000, 123_457] {
            let cells = allocate(&t, n);
            assert_eq!(cells.iter().map(|c| c.2).sum::<usize>(), n);
        }
    }
}
