//! The world the generator draws from: the sourced figures (fixtures/README.md, "Synthetic
//! populations", gives the sources), the tables derived from them, and the state that every
//! step of the generator reads and changes.

use std::collections::BTreeMap;

use anyhow::{ensure, Context};
use chrono::NaiveDate;
use oshirase_engine::calendar;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

use crate::households::{Household, Kind, Rels};
use crate::names::SURNAMES;
use crate::people::{Person, NONE};
use crate::Options;

/// 2020 Census, persons by single year of age and sex (表2-1); the last row is 100 and over.
const AGE_TABLE: &str = include_str!("../../fixtures/japan-age-2020.csv");

/// Residents on 2024-10-01 (人口推計), the denominator of the rates below.
const RESIDENTS_2024: f64 = 123_802_000.0;
/// Live births in 2024 (人口動態統計 確定数): 5.54 per 1,000 residents.
const BIRTHS_2024: f64 = 686_173.0;
/// Deaths in 2024 (人口動態統計 確定数): 12.97 per 1,000 residents.
const DEATHS_2024: f64 = 1_605_378.0;
/// Movers between municipalities in 2024 (住民基本台帳人口移動報告): each is an out-move from
/// one municipality and an in-move to another, 4.21 % of residents each way.
const MOVERS_2024: f64 = 5_207_746.0;
/// Registered residents moving in from abroad and out to abroad in 2024.
const FROM_ABROAD_2024: f64 = 735_883.0;
const TO_ABROAD_2024: f64 = 371_615.0;

/// Annual rates per resident: births, deaths, moves in, moves out.
pub(crate) const BIRTH_RATE: f64 = BIRTHS_2024 / RESIDENTS_2024;
pub(crate) const DEATH_RATE: f64 = DEATHS_2024 / RESIDENTS_2024;
pub(crate) const MOVE_IN_RATE: f64 = (MOVERS_2024 + FROM_ABROAD_2024) / RESIDENTS_2024;
pub(crate) const MOVE_OUT_RATE: f64 = (MOVERS_2024 + TO_ABROAD_2024) / RESIDENTS_2024;

/// Births per woman per year by 5-year age group of the mother from 15 (2023; TFR 1.20).
const FERTILITY: [f64; 7] = [
    0.00164, 0.01668, 0.06492, 0.09088, 0.05302, 0.01270, 0.00042,
];
/// Twins and triplets per delivery (1995–2017).
pub(crate) const TWINS: f64 = 0.01007;
pub(crate) const TRIPLETS: f64 = 0.00021;
/// Share of births outside marriage, as a weight against married women [estimate: ≈2 %].
pub(crate) const UNMARRIED_FERTILITY: f64 = 0.03;

/// Probability of dying within a year, 2020 complete life table (第23回完全生命表), at these
/// ages; log-linear in between. Scaled so that the expected deaths meet DEATH_RATE.
const QX_AGES: [f64; 22] = [
    0.0, 1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0,
    85.0, 90.0, 95.0, 100.0, 105.0, 110.0,
];
const QX_M: [f64; 22] = [
    0.00184, 0.00024, 0.00006, 0.00006, 0.00018, 0.00044, 0.00052, 0.00093, 0.00149, 0.00243,
    0.00392, 0.00624, 0.01010, 0.01678, 0.02672, 0.04384, 0.07937, 0.14192, 0.23661, 0.333, 0.437,
    0.543,
];
const QX_F: [f64; 22] = [
    0.00172, 0.00017, 0.00007, 0.00005, 0.00011, 0.00022, 0.00027, 0.00058, 0.00091, 0.00145,
    0.00204, 0.00281, 0.00422, 0.00681, 0.01127, 0.02117, 0.04289, 0.08770, 0.17535, 0.284, 0.409,
    0.545,
];

/// Children per household with children under 18: 1 / 2 / 3 (2023 国民生活基礎調査).
pub(crate) const CHILDREN: [(usize, f64); 3] = [(1, 0.486), (2, 0.397), (3, 0.117)];

/// A date of the programme tables below (checked when the crate is compiled).
const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

// Programme ages: set by law, so they are the rules' ages, not statistics. The rules that
// notify them are in rules/ (kouki-kanyu.yaml, kaigo-1go-shikaku.yaml, ...).

/// 成年年齢 (民法第4条): minors have their parents as guardians. The engine routes by it.
pub(crate) use oshirase_engine::eval::ADULT_AGE;
/// 老齢基礎年金 from 65 (国民年金法第26条).
pub(crate) const PENSION_AGE: i32 = 65;
/// 特別支給の老齢厚生年金, for people with 厚生年金: (sex, born on or before, from age), the
/// last steps of the schedule; earlier cohorts (from 60 to 63) are folded into the first step
/// of their sex.
pub(crate) const EARLY_PENSION: [(u8, NaiveDate, i32); 4] = [
    (1, ymd(1961, 4, 1), 64),
    (2, ymd(1962, 4, 1), 62),
    (2, ymd(1964, 4, 1), 63),
    (2, ymd(1966, 4, 1), 64),
];
/// 介護保険の第1号被保険者 from 65 (介護保険法第9条第1号).
pub(crate) const KAIGO_AGE: i32 = 65;
/// 後期高齢者医療 from the 75th birthday (高齢者の医療の確保に関する法律第50条第1号).
pub(crate) const KOUKI_AGE: i32 = 75;

// Statistical bands, not law: the census's open top band, the age groups of 人口推計 the
// summary counts in, and the ages at which a partner who moves in does so (a model choice).

/// The census's last row is "100 and over".
pub(crate) const CENSUS_TOP_AGE: usize = 100;
/// 年少人口 is under 15; 老年人口 from 65, of which 75 and over (人口推計's groups).
pub(crate) const YOUNG_BAND_END: i32 = 15;
pub(crate) const OLD_BAND_START: i32 = 65;
pub(crate) const LATE_OLD_BAND_START: i32 = 75;
/// A partner who moved in did so between these ages.
pub(crate) const PARTNER_MOVE_IN_AGES: (i32, i32) = (20, 32);

/// Share of people with a 要介護・要支援 certification by age band, from the 第1号 age
/// (fixtures/README.md).
pub(crate) const KAIGO: [(i32, i32, f64); 5] = [
    (KAIGO_AGE, 74, 0.04),
    (75, 79, 0.12),
    (80, 84, 0.27),
    (85, 89, 0.50),
    (90, 200, 0.75),
];

/// The wards of 川崎市 (141305), the default municipality, for its addresses; the people,
/// households and addresses of every register are invented.
pub(crate) const KAWASAKI_WARDS: [&str; 7] = [
    "川崎区",
    "幸区",
    "中原区",
    "高津区",
    "宮前区",
    "多摩区",
    "麻生区",
];
pub(crate) const TOWNS: [&str; 8] = [
    "本町", "新町", "緑町", "桜台", "東町", "西町", "南台", "北町",
];
/// Where `external` records (a child living elsewhere, a 司法書士) live.
pub(crate) const ELSEWHERE: [(&str, &str); 3] = [
    ("141003", "神奈川県横浜市港北区新横浜二丁目3番4号"),
    ("131032", "東京都港区芝五丁目12番4号"),
    ("131121", "東京都世田谷区太子堂四丁目1番1号"),
];

pub(crate) const MAX_AGE: usize = 105;

/// A registered proxy: (proxy, scopes, until).
pub(crate) type ProxySpec = (u32, &'static [&'static str], Option<NaiveDate>);

/// The generator's state: the people and households made so far, and the one random stream
/// every draw comes from (in a fixed order, so a seed gives the same bytes).
pub(crate) struct World {
    /// The register's municipality.
    pub(crate) municipality: &'static oshirase_engine::municipalities::Municipality,
    /// Its wards, for addresses: 川崎市's for the default municipality, none for others.
    pub(crate) wards: &'static [&'static str],
    pub(crate) rng: ChaCha8Rng,
    pub(crate) start: NaiveDate,
    pub(crate) end: NaiveDate,
    pub(crate) persons: Vec<Person>,
    pub(crate) households: Vec<Household>,
    /// Unassigned people by sex (0 male, 1 female) and age; assigned ones are skipped lazily.
    pub(crate) pools: [Vec<Vec<u32>>; 2],
    pub(crate) rels: Rels,
    pub(crate) proxies: BTreeMap<u32, Vec<ProxySpec>>,
    pub(crate) guardians_external: BTreeMap<u32, u32>,
    pub(crate) externals: Vec<u32>,
    /// Surname weights (cumulative), Zipf-like.
    pub(crate) surname_cdf: Vec<f64>,
}

impl World {
    /// An empty world for `options`; the random stream starts from its seed.
    pub(crate) fn new(options: &Options) -> Self {
        // Surname weights fall off like Zipf's law over the table's order.
        let mut cdf = Vec::with_capacity(SURNAMES.len());
        let mut acc = 0.0;
        for i in 0..SURNAMES.len() {
            acc += 1.0 / (1.0 + i as f64 / 12.0);
            cdf.push(acc);
        }
        World {
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            start: options.start,
            end: calendar::add_days(options.start, 365),
            persons: Vec::with_capacity(options.residents + options.residents / 8),
            households: Vec::new(),
            pools: [vec![Vec::new(); MAX_AGE + 1], vec![Vec::new(); MAX_AGE + 1]],
            rels: Rels::new(),
            proxies: BTreeMap::new(),
            guardians_external: BTreeMap::new(),
            externals: Vec::new(),
            surname_cdf: cdf,
            municipality: options.municipality,
            wards: if options.municipality.code.to_string() == crate::DEFAULT_MUNICIPALITY {
                &KAWASAKI_WARDS
            } else {
                &[""]
            },
        }
    }

    /// A standard normal draw (Box–Muller).
    pub(crate) fn gauss(&mut self) -> f64 {
        let u1: f64 = self.rng.random::<f64>().max(1e-12);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    /// A uniformly drawn day of `lo..=hi`.
    pub(crate) fn day_between(&mut self, lo: NaiveDate, hi: NaiveDate) -> NaiveDate {
        let n = calendar::days_between(lo, hi).max(0);
        calendar::add_days(lo, self.rng.random_range(0..=n))
    }

    /// A birth date giving `age` completed years on the start date.
    pub(crate) fn birth_for_age(&mut self, age: usize) -> NaiveDate {
        let age = age as i32;
        let lo = calendar::add_days(calendar::shift_years(self.start, -(age + 1)), 1);
        let hi = calendar::shift_years(self.start, -age);
        self.day_between(lo, hi)
    }

    /// A day of the generated year.
    pub(crate) fn year_day(&mut self) -> NaiveDate {
        calendar::add_days(self.start, self.rng.random_range(1..=365))
    }

    pub(crate) fn age(&self, p: u32) -> i32 {
        calendar::age_on(self.persons[p as usize].birth, self.start)
    }

    pub(crate) fn surname(&mut self) -> u16 {
        let total = *self.surname_cdf.last().expect("surnames");
        let x = self.rng.random::<f64>() * total;
        self.surname_cdf.partition_point(|c| *c <= x) as u16
    }

    /// An unassigned person of `sex` aged within `lo..=hi`, as near `target` as the pool allows.
    pub(crate) fn take(&mut self, sex: u8, lo: i32, hi: i32, target: f64) -> Option<u32> {
        let lo = lo.max(0) as usize;
        let hi = (hi.max(0) as usize).min(MAX_AGE);
        if lo > hi {
            return None;
        }
        let t = (target.round().max(0.0) as usize).clamp(lo, hi);
        let s = usize::from(sex - 1);
        for d in 0..=(hi - lo) {
            let mut ages = [None, None];
            if t >= lo + d {
                ages[0] = Some(t - d);
            }
            if d > 0 && t + d <= hi {
                ages[1] = Some(t + d);
            }
            if ages == [None, None] {
                break;
            }
            for a in ages.into_iter().flatten() {
                while let Some(id) = self.pools[s][a].pop() {
                    if self.persons[id as usize].hh == NONE {
                        return Some(id);
                    }
                }
            }
        }
        None
    }

    pub(crate) fn new_household(&mut self, kind: Kind) -> u32 {
        let surname = self.surname();
        self.households.push(Household {
            members: Vec::new(),
            kind,
            surname,
            number: 0,
            moved_in: None,
        });
        (self.households.len() - 1) as u32
    }

    pub(crate) fn add(&mut self, h: u32, p: u32, rel: &str) {
        let rel = self.rels.id(rel);
        let person = &mut self.persons[p as usize];
        person.hh = h;
        person.rel = rel;
        self.households[h as usize].members.push(p);
    }

    pub(crate) fn marry(&mut self, a: u32, b: u32) {
        self.persons[a as usize].spouse = b;
        self.persons[b as usize].spouse = a;
    }

    pub(crate) fn child_of(&mut self, c: u32, father: Option<u32>, mother: Option<u32>) {
        self.persons[c as usize].parents = [father.unwrap_or(NONE), mother.unwrap_or(NONE)];
    }
}

/// One of `weighted` (probabilities summing to 1; the last absorbs any rounding).
pub(crate) fn pick<T: Copy>(w: &mut World, weighted: &[(T, f64)]) -> T {
    let r: f64 = w.rng.random();
    let mut acc = 0.0;
    for (v, p) in weighted {
        acc += p;
        if r < acc {
            return *v;
        }
    }
    weighted[weighted.len() - 1].0
}

/// The age table: (age, male, female) for ages 0..=99 and 100 for "100 and over".
pub(crate) fn age_table() -> anyhow::Result<Vec<(usize, f64, f64)>> {
    let mut rows = Vec::new();
    for (n, line) in AGE_TABLE.lines().enumerate().skip(1) {
        let cells: Vec<&str> = line.trim().split(',').collect();
        let bad = || format!("japan-age-2020.csv:{}: {line:?}", n + 1);
        ensure!(cells.len() == 3, "{}: expected age,male,female", bad());
        let age: usize = cells[0].trim_end_matches('+').parse().with_context(bad)?;
        ensure!(age == rows.len(), "{}: ages must run 0, 1, 2, …", bad());
        rows.push((
            age,
            cells[1].parse().with_context(bad)?,
            cells[2].parse().with_context(bad)?,
        ));
    }
    ensure!(
        rows.len() == 101,
        "japan-age-2020.csv: expected ages 0 to 100+"
    );
    Ok(rows)
}

/// qx of the life table at `age` (log-linear between the tabulated ages).
pub(crate) fn qx(sex: u8, age: f64) -> f64 {
    let t = if sex == 1 { &QX_M } else { &QX_F };
    if age >= QX_AGES[21] {
        return t[21];
    }
    let i = QX_AGES.iter().rposition(|a| *a <= age).unwrap_or(0);
    let (a0, a1) = (QX_AGES[i], QX_AGES[i + 1]);
    let w = (age - a0) / (a1 - a0);
    (t[i].ln() * (1.0 - w) + t[i + 1].ln() * w).exp()
}

/// Relative propensity to move by the age of the mover (or household head) [estimate], tuned
/// so that people aged 20–34 are about 55 % of movers (56.4 % between prefectures in 2024).
pub(crate) fn move_weight(age: i32) -> f64 {
    match age {
        ..=17 => 0.0,
        18..=19 => 4.0,
        20..=24 => 8.0,
        25..=29 => 6.5,
        30..=34 => 3.5,
        35..=39 => 1.8,
        40..=44 => 1.0,
        45..=49 => 0.7,
        50..=59 => 0.45,
        60..=69 => 0.3,
        70..=79 => 0.25,
        _ => 0.4,
    }
}

pub(crate) fn fertility(age: i32) -> f64 {
    if (15..50).contains(&age) {
        FERTILITY[(age as usize - 15) / 5]
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_table_is_the_census() {
        let t = age_table().unwrap();
        let m: f64 = t.iter().map(|r| r.1).sum();
        let f: f64 = t.iter().map(|r| r.2).sum();
        assert_eq!((m, f), (59_758_438.0, 63_455_823.0));
    }
}
