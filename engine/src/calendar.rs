//! The age law and the calendar: the only module that does date arithmetic.
//!
//! Japanese law (年齢計算ニ関スル法律 with 民法143条) makes a person attain age *n* at the end of
//! the day before the *n*-th birthday; a period with no corresponding day ends on the last day
//! of the month. Every rule reads dates through these functions.

use chrono::{Datelike, Days, Months, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

/// Dates the engine accepts (birth dates, status dates, evaluation days, rule validity).
/// With the limits on ages and periods below, every computed date stays far inside chrono's
/// range, so no calendar function can overflow.
pub const MIN_YEAR: i32 = 1800;
pub const MAX_YEAR: i32 = 2300;
/// Largest age, in years, a rule or script may name.
pub const MAX_AGE_YEARS: u32 = 200;
/// Largest age or period in months.
pub const MAX_MONTHS: u32 = 2400;
/// Largest period in days.
pub const MAX_DAYS: u32 = 100_000;

/// Whether `d` is inside the supported range; callers turn `false` into an error with a place.
pub fn supported(d: NaiveDate) -> bool {
    (MIN_YEAR..=MAX_YEAR).contains(&d.year())
}

/// A date as the input formats write it: exactly `YYYY-MM-DD` (no sign, no one-digit month or
/// day, no spaces), a day of the calendar, inside the supported years. The error is written
/// for the person fixing the data; the caller adds the place.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let d = shaped
        .then(|| NaiveDate::from_ymd_opt(num(0..4) as i32, num(5..7), num(8..10)))
        .flatten()
        .ok_or_else(|| {
            format!(
                "{} is not a calendar date (YYYY-MM-DD)",
                crate::shown::quoted(s)
            )
        })?;
    if !supported(d) {
        return Err(format!(
            "{d} is outside the supported years {MIN_YEAR}-{MAX_YEAR}"
        ));
    }
    Ok(d)
}

fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("caller passes a valid date")
}

/// `d` plus `n` days (negative goes back). Saturates at chrono's range, far beyond 1900–2100.
pub fn add_days(d: NaiveDate, n: i64) -> NaiveDate {
    if n >= 0 {
        d.checked_add_days(Days::new(n as u64))
            .unwrap_or(NaiveDate::MAX)
    } else {
        d.checked_sub_days(Days::new(n.unsigned_abs()))
            .unwrap_or(NaiveDate::MIN)
    }
}

/// The day after `d` (a period counted from the next day starts there; 戸籍法 and the
/// 翌日起算 rule).
pub fn day_after(d: NaiveDate) -> NaiveDate {
    add_days(d, 1)
}

/// The day before `d`.
pub fn day_before(d: NaiveDate) -> NaiveDate {
    add_days(d, -1)
}

/// Every day of `from..=to` (none when `from` is after `to`). Stops at the last
/// representable date instead of saturating, so a range ending at `NaiveDate::MAX` still
/// terminates.
pub fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    std::iter::successors(Some(from), |d| d.succ_opt()).take_while(move |d| *d <= to)
}

/// Days from `from` to `to` (negative when `to` is earlier).
pub fn days_between(from: NaiveDate, to: NaiveDate) -> i64 {
    (to - from).num_days()
}

/// The same month and day `n` years later (earlier for negative `n`); 29 Feb becomes 28 Feb.
pub fn shift_years(d: NaiveDate, n: i32) -> NaiveDate {
    MonthDay {
        month: d.month(),
        day: d.day(),
    }
    .in_year(d.year() + n)
}

/// The same day `m` months earlier, clamped to the month's last day.
pub fn months_earlier(d: NaiveDate, m: u32) -> NaiveDate {
    d - Months::new(m)
}

/// The `n`-th calendar birthday; a 29 Feb birth has 1 Mar in non-leap years.
pub fn anniversary(birth: NaiveDate, n: i32) -> NaiveDate {
    let y = birth.year() + n;
    NaiveDate::from_ymd_opt(y, birth.month(), birth.day()).unwrap_or_else(|| ymd(y, 3, 1))
}

/// The legal day of attaining age `n` (年齢到達日): the day before the `n`-th birthday.
pub fn attain(birth: NaiveDate, n: i32) -> NaiveDate {
    add_days(anniversary(birth, n), -1)
}

/// The first day of the month in which age `n` is attained. Month-based programmes
/// (介護保険料, 高齢受給者証) follow this month, which is why a person born on the 1st belongs
/// to the month before the birthday month.
pub fn attainment_month(birth: NaiveDate, n: i32) -> NaiveDate {
    month_start(attain(birth, n))
}

/// Age during day `d`: the largest `n` with `attain(birth, n) < d`. Negative before birth.
pub fn age_on(birth: NaiveDate, d: NaiveDate) -> i32 {
    let mut n = d.year() - birth.year();
    if anniversary(birth, n) > d {
        n -= 1;
    }
    n
}

/// The day a child is `m` months old (生後m月に至った日): the same day of the month `m` months
/// later, or the 1st of the following month when that day does not exist.
pub fn month_anniversary(birth: NaiveDate, m: u32) -> NaiveDate {
    let first = ymd(birth.year(), birth.month(), 1) + Months::new(m);
    NaiveDate::from_ymd_opt(first.year(), first.month(), birth.day())
        .unwrap_or_else(|| first + Months::new(1))
}

/// Completed months of age during day `d`.
pub fn age_in_months(birth: NaiveDate, d: NaiveDate) -> i32 {
    if d < birth {
        return -1;
    }
    let mut m = (d.year() - birth.year()) * 12 + d.month() as i32 - birth.month() as i32;
    if month_anniversary(birth, m as u32) > d {
        m -= 1;
    }
    m
}

/// The fiscal year (年度) containing `d`: April 1 of FY to March 31 of FY+1.
pub fn fiscal_year(d: NaiveDate) -> i32 {
    if d.month() >= 4 {
        d.year()
    } else {
        d.year() - 1
    }
}

pub fn fiscal_year_start(fy: i32) -> NaiveDate {
    ymd(fy, 4, 1)
}

pub fn fiscal_year_end(fy: i32) -> NaiveDate {
    ymd(fy + 1, 3, 31)
}

/// Age reached by the end of fiscal year `fy` (年度末年齢); counts an attainment on March 31.
pub fn fy_end_age(birth: NaiveDate, fy: i32) -> i32 {
    age_on(birth, fiscal_year_start(fy + 1))
}

/// The date with month-day `md` inside fiscal year `fy` (April–December of FY, January–March of FY+1).
pub fn date_in_fiscal_year(fy: i32, md: MonthDay) -> NaiveDate {
    let y = if md.month >= 4 { fy } else { fy + 1 };
    md.in_year(y)
}

/// The age of compulsory school entry (学校教育法17条1項): law the calendar applies, like the
/// age-counting law, not a programme parameter.
pub const SCHOOL_ENTRY_AGE: i32 = 6;

/// Elementary-school entry (学校教育法17条): the first April 1 after the day age 6 is attained.
pub fn school_entry(birth: NaiveDate) -> NaiveDate {
    let day_after = add_days(attain(birth, SCHOOL_ENTRY_AGE), 1);
    let y = if (day_after.month(), day_after.day()) <= (4, 1) {
        day_after.year()
    } else {
        day_after.year() + 1
    };
    ymd(y, 4, 1)
}

/// The 1st of the month containing `d`.
pub fn month_start(d: NaiveDate) -> NaiveDate {
    ymd(d.year(), d.month(), 1)
}

/// The 1st of the month after the one containing `d`.
pub fn next_month_start(d: NaiveDate) -> NaiveDate {
    month_start(d) + Months::new(1)
}

/// `d` plus `n` months under 民法143条: the corresponding day, or the last day of the month.
fn add_months_clamped(d: NaiveDate, n: u32) -> NaiveDate {
    // chrono clamps to the last day of the month, which is exactly the 民法143条 proviso.
    d + Months::new(n)
}

/// A month and day without a year ("MM-DD"), for yearly triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MonthDay {
    pub month: u32,
    pub day: u32,
}

/// A text that is not a month-day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a month-day \"MM-DD\"")]
pub struct BadMonthDay(String);

impl MonthDay {
    pub fn parse(s: &str) -> Result<Self, BadMonthDay> {
        let bad = || BadMonthDay(s.to_owned());
        let (m, d) = s.split_once('-').ok_or_else(bad)?;
        let (month, day): (u32, u32) =
            (m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
        // 2000 is a leap year, so 02-29 is accepted here and falls back to 02-28 in other years.
        NaiveDate::from_ymd_opt(2000, month, day).ok_or_else(bad)?;
        Ok(Self { month, day })
    }

    /// This month-day in year `y`; 02-29 falls back to 02-28 in a non-leap year.
    pub fn in_year(self, y: i32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, self.month, self.day).unwrap_or_else(|| ymd(y, 2, 28))
    }
}

impl std::fmt::Display for MonthDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}-{:02}", self.month, self.day)
    }
}

impl<'de> Deserialize<'de> for MonthDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MonthDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a filing period is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Counting {
    /// 戸籍法43条: the start day is day 1.
    EventDay,
    /// 民法140条 / 住基法: counting starts the next day.
    #[default]
    NextDay,
}

/// A filing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Days(u32),
    Months(u32),
    Years(u32),
}

/// Whether a due date that falls on a closed day moves to the next open day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Shift {
    #[default]
    None,
    /// Saturday and Sunday.
    Weekend,
    /// The municipality's closed days (地方自治法4条の2): 行政機関の休日 and its own.
    ClosedDays,
    /// 行政機関の休日 only (行政機関の休日に関する法律2条), for filings with a national body
    /// such as the Japan Pension Service, which keeps no municipal holiday.
    NationalClosedDays,
}

/// The last day of a period of `period` starting at `start`, counted by `counting`, before
/// any move off a closed day (`DeadlinePolicy::due`).
pub fn due_date(start: NaiveDate, period: Period, counting: Counting) -> NaiveDate {
    let end_next_day = match period {
        Period::Days(n) => add_days(start, i64::from(n)),
        Period::Months(n) => add_months_clamped(start, n),
        Period::Years(n) => add_months_clamped(start, n * 12),
    };
    match counting {
        Counting::NextDay => end_next_day,
        Counting::EventDay => add_days(end_next_day, -1),
    }
}

/// The days a municipality's offices are closed beyond 行政機関の休日, as its 休日条例 sets
/// them (地方自治法4条の2第1項・第2項): days kept every year, and single days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedDays {
    pub yearly: Vec<MonthDay>,
    pub once: std::collections::BTreeSet<NaiveDate>,
}

impl ClosedDays {
    /// Whether offices are closed on `d`: 行政機関の休日 or one of the municipality's days.
    pub fn contains(&self, d: NaiveDate) -> bool {
        is_closed_day(d)
            || self.once.contains(&d)
            || self
                .yearly
                .iter()
                .any(|m| m.month == d.month() && m.day == d.day())
    }
}

/// How a municipality moves deadlines off closed days (地方自治法4条の2第4項): the shift a rule
/// inherits when its deadline names none, and the closed days, each as in force from a date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlinePolicy {
    /// Sorted by date; the first entry applies to any earlier day too.
    pub shift: Vec<(NaiveDate, Shift)>,
    pub closed: Vec<(NaiveDate, ClosedDays)>,
}

impl Default for DeadlinePolicy {
    /// With nothing configured: the statute's rule, every deadline moves past 行政機関の休日.
    fn default() -> Self {
        let start = ymd(MIN_YEAR, 1, 1);
        Self {
            shift: vec![(start, Shift::ClosedDays)],
            closed: vec![(start, ClosedDays::default())],
        }
    }
}

/// The value in force on `on` of values sorted by the day they take effect; the first
/// applies to any earlier day too.
pub(crate) fn in_force<T>(values: &[(NaiveDate, T)], on: NaiveDate) -> Option<&T> {
    let i = values.partition_point(|(from, _)| *from <= on);
    values.get(i.saturating_sub(1)).map(|(_, v)| v)
}

impl DeadlinePolicy {
    /// The due date for a period that ends on `last_day`: moved to the next open day when
    /// the rule's shift (or, if it names none, the municipality's) says so. Both the shift
    /// and the closed days are those in force on `last_day`.
    pub fn due(&self, last_day: NaiveDate, rule_shift: Option<Shift>) -> NaiveDate {
        let shift = rule_shift
            .or_else(|| in_force(&self.shift, last_day).copied())
            .unwrap_or(Shift::None);
        let none = ClosedDays::default();
        let closed = in_force(&self.closed, last_day).unwrap_or(&none);
        let is_closed = |d: NaiveDate| match shift {
            Shift::None => false,
            Shift::Weekend => is_weekend(d),
            Shift::ClosedDays => closed.contains(d),
            Shift::NationalClosedDays => is_closed_day(d),
        };
        let mut d = last_day;
        // A closure longer than a year would be a configuration error; stop rather than spin.
        let limit = add_days(last_day, 366);
        while is_closed(d) && d < limit {
            d = add_days(d, 1);
        }
        d
    }
}

/// The day of the week as a Japanese date writes it: "土".
pub fn weekday_ja(d: NaiveDate) -> &'static str {
    const DAYS: [&str; 7] = ["月", "火", "水", "木", "金", "土", "日"];
    DAYS[d.weekday().num_days_from_monday() as usize]
}

pub fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// 行政機関の休日 (行政機関の休日に関する法律1条): weekends, national holidays, Dec 29 – Jan 3.
pub fn is_closed_day(d: NaiveDate) -> bool {
    let year_end = matches!((d.month(), d.day()), (12, 29..=31) | (1, 1..=3));
    year_end || is_weekend(d) || is_national_holiday(d)
}

/// 国民の祝日 (国民の祝日に関する法律) including 振替休日 and 国民の休日, for 2000–2099.
/// Outside those years this returns false: the equinox formula and the law's history are only
/// encoded for that range, which covers every deadline the engine computes.
pub fn is_national_holiday(d: NaiveDate) -> bool {
    if !(2000..=2099).contains(&d.year()) {
        return false;
    }
    holidays_of(d.year()).contains(&d)
}

fn nth_monday(y: i32, m: u32, n: u32) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(y, m, Weekday::Mon, n as u8).expect("exists")
}

fn equinox_day(y: i32, base: f64) -> u32 {
    // 海上保安庁 formula, valid 1980–2099.
    let t = f64::from(y - 1980);
    (base + 0.242194 * t - (t / 4.0).floor()).floor() as u32
}

fn base_holidays(y: i32) -> Vec<NaiveDate> {
    let mut v = vec![
        ymd(y, 1, 1),
        nth_monday(y, 1, 2),
        ymd(y, 2, 11),
        ymd(y, 3, equinox_day(y, 20.8431)),
        ymd(y, 4, 29),
        ymd(y, 5, 3),
        ymd(y, 5, 5),
        ymd(y, 9, equinox_day(y, 23.2488)),
        ymd(y, 11, 3),
        ymd(y, 11, 23),
    ];
    if y >= 2007 {
        v.push(ymd(y, 5, 4));
    }
    match y {
        ..=2018 => v.push(ymd(y, 12, 23)),
        2019 => v.extend([ymd(y, 5, 1), ymd(y, 10, 22)]),
        _ => v.push(ymd(y, 2, 23)),
    }
    match y {
        ..=2002 => v.push(ymd(y, 7, 20)),
        2020 => v.push(ymd(y, 7, 23)),
        2021 => v.push(ymd(y, 7, 22)),
        _ => v.push(nth_monday(y, 7, 3)),
    }
    match y {
        ..=2015 => {}
        2020 => v.push(ymd(y, 8, 10)),
        2021 => v.push(ymd(y, 8, 8)),
        _ => v.push(ymd(y, 8, 11)),
    }
    v.push(if y <= 2002 {
        ymd(y, 9, 15)
    } else {
        nth_monday(y, 9, 3)
    });
    match y {
        2020 => v.push(ymd(y, 7, 24)),
        2021 => v.push(ymd(y, 7, 23)),
        _ => v.push(nth_monday(y, 10, 2)),
    }
    v.sort();
    v.dedup();
    v
}

fn holidays_of(y: i32) -> Vec<NaiveDate> {
    let base = base_holidays(y);
    let mut all = base.clone();
    // 国民の休日: a day between two holidays (2019's Apr 30 and May 2 among them).
    for w in base.windows(2) {
        if add_days(w[0], 2) == w[1] {
            let mid = add_days(w[0], 1);
            if mid.weekday() != Weekday::Sun {
                all.push(mid);
            }
        }
    }
    all.sort();
    all.dedup();
    // 振替休日: a holiday on a Sunday moves to the next day that is not a holiday.
    let mut substitutes = Vec::new();
    for h in &all {
        if h.weekday() == Weekday::Sun {
            let mut s = add_days(*h, 1);
            while all.contains(&s) {
                s = add_days(s, 1);
            }
            substitutes.push(s);
        }
    }
    all.extend(substitutes);
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_inclusive_and_stop_at_the_last_date() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(
            days(d("2026-02-27"), d("2026-03-01")).collect::<Vec<_>>(),
            [d("2026-02-27"), d("2026-02-28"), d("2026-03-01")]
        );
        assert_eq!(days(d("2026-03-02"), d("2026-03-01")).count(), 0);
        let last = NaiveDate::MAX;
        assert_eq!(days(day_before(last), last).count(), 2);
        assert_eq!(days_between(d("2026-02-27"), d("2026-03-01")), 2);
        assert_eq!(days_between(d("2026-03-01"), d("2026-02-27")), -2);
        assert_eq!(day_after(d("2028-02-28")), d("2028-02-29"));
    }
    use proptest::prelude::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn worked_examples_from_the_domain_notes() {
        // procedures.md §4.4
        assert_eq!(attain(d("2020-04-01"), 6), d("2026-03-31"));
        assert_eq!(school_entry(d("2020-04-01")), d("2026-04-01"));
        assert_eq!(attain(d("2020-04-02"), 6), d("2026-04-01"));
        assert_eq!(school_entry(d("2020-04-02")), d("2027-04-01"));
        assert_eq!(attain(d("2019-04-02"), 6), d("2025-04-01"));
        assert_eq!(school_entry(d("2019-04-02")), d("2026-04-01"));
        assert_eq!(attain(d("2020-02-29"), 6), d("2026-02-28"));
        assert_eq!(school_entry(d("2020-02-29")), d("2026-04-01"));
        assert_eq!(attain(d("2000-02-29"), 20), d("2020-02-28"));
        assert_eq!(attain(d("1952-02-29"), 75), d("2027-02-28"));
        assert_eq!(anniversary(d("1952-02-29"), 75), d("2027-03-01"));
        assert_eq!(attain(d("1960-05-01"), 65), d("2025-04-30"));
        assert_eq!(attain(d("1960-04-01"), 65), d("2025-03-31"));
        assert_eq!(fiscal_year(attain(d("1960-04-01"), 65)), 2024);
        assert_eq!(attainment_month(d("1960-05-01"), 65), d("2025-04-01"));
        assert_eq!(attainment_month(d("1960-05-02"), 65), d("2025-05-01"));
        assert_eq!(attainment_month(d("1960-04-01"), 65), d("2025-03-01"));
        assert_eq!(
            next_month_start(attain(d("1955-04-15"), 70)),
            d("2025-05-01")
        );
        assert_eq!(
            next_month_start(attain(d("1955-04-01"), 70)),
            d("2025-04-01")
        );
        // 児童手当 ends on the first March 31 on or after attain(18).
        assert_eq!(
            fiscal_year_end(fiscal_year(attain(d("2007-04-01"), 18))),
            d("2025-03-31")
        );
        assert_eq!(
            fiscal_year_end(fiscal_year(attain(d("2007-04-02"), 18))),
            d("2026-03-31")
        );
    }

    #[test]
    fn ages_change_at_the_end_of_the_day_before_the_birthday() {
        let b = d("2006-04-01");
        assert_eq!(age_on(b, d("2026-03-31")), 19);
        assert_eq!(age_on(b, d("2026-04-01")), 20);
        assert_eq!(age_on(b, b), 0);
        assert_eq!(age_on(b, d("2006-03-31")), -1);
        // Feb 29 births: 28 Feb is the attainment day in every year.
        let leap = d("2008-02-29");
        assert_eq!(age_on(leap, d("2027-02-28")), 18);
        assert_eq!(age_on(leap, d("2027-03-01")), 19);
        assert_eq!(age_on(leap, d("2028-02-29")), 20);
    }

    #[test]
    fn fiscal_year_cohorts() {
        // 帯状疱疹 FY2025 cohort: born 1960-04-02 .. 1961-04-01 are 65 at fiscal-year end.
        assert_eq!(fy_end_age(d("1960-04-02"), 2025), 65);
        assert_eq!(fy_end_age(d("1961-04-01"), 2025), 65);
        assert_eq!(fy_end_age(d("1960-04-01"), 2025), 66);
        assert_eq!(fy_end_age(d("1961-04-02"), 2025), 64);
        assert_eq!(fiscal_year(d("2026-03-31")), 2025);
        assert_eq!(fiscal_year(d("2026-04-01")), 2026);
        let oct1 = MonthDay::parse("10-01").unwrap();
        let jan31 = MonthDay::parse("01-31").unwrap();
        assert_eq!(date_in_fiscal_year(2025, oct1), d("2025-10-01"));
        assert_eq!(date_in_fiscal_year(2025, jan31), d("2026-01-31"));
    }

    #[test]
    fn months_of_age() {
        assert_eq!(month_anniversary(d("2026-04-10"), 2), d("2026-06-10"));
        assert_eq!(month_anniversary(d("2026-01-31"), 1), d("2026-03-01"));
        assert_eq!(month_anniversary(d("2024-01-31"), 1), d("2024-03-01"));
        assert_eq!(month_anniversary(d("2026-01-30"), 1), d("2026-03-01"));
        assert_eq!(month_anniversary(d("2026-12-15"), 3), d("2027-03-15"));
        assert_eq!(age_in_months(d("2026-04-10"), d("2026-06-09")), 1);
        assert_eq!(age_in_months(d("2026-04-10"), d("2026-06-10")), 2);
        assert_eq!(age_in_months(d("2026-01-31"), d("2026-02-28")), 0);
        assert_eq!(age_in_months(d("2026-01-31"), d("2026-03-01")), 1);
    }

    #[test]
    fn month_day_rejects_impossible_dates() {
        assert!(MonthDay::parse("02-30").is_err());
        assert!(MonthDay::parse("13-01").is_err());
        assert!(MonthDay::parse("0401").is_err());
        assert_eq!(
            MonthDay::parse("02-29").unwrap().in_year(2027),
            d("2027-02-28")
        );
    }

    #[test]
    fn deadlines_in_both_regimes() {
        use Counting::*;
        // 戸籍法: born Jan 1 → due Jan 14; learned of a death Mar 28 → due Apr 3.
        assert_eq!(
            due_date(d("2025-01-01"), Period::Days(14), EventDay),
            d("2025-01-14")
        );
        assert_eq!(
            due_date(d("2025-03-28"), Period::Days(7), EventDay),
            d("2025-04-03")
        );
        // 住基法: event Mar 28 → due Apr 11.
        assert_eq!(
            due_date(d("2025-03-28"), Period::Days(14), NextDay),
            d("2025-04-11")
        );
        // 15日特例: born Apr 30 → May 15.
        assert_eq!(
            due_date(d("2025-04-30"), Period::Days(15), NextDay),
            d("2025-05-15")
        );
        // 2 years from the day after a funeral on 2025-06-10 → 2027-06-10.
        assert_eq!(
            due_date(d("2025-06-10"), Period::Years(2), NextDay),
            d("2027-06-10")
        );
        // A month period with no corresponding day ends on the month's last day.
        assert_eq!(
            due_date(d("2025-01-31"), Period::Months(1), NextDay),
            d("2025-02-28")
        );
        assert_eq!(
            due_date(d("2024-02-29"), Period::Years(1), NextDay),
            d("2025-02-28")
        );
    }

    /// The policy of a municipality that moves deadlines by `shift`, with its own days.
    fn policy(shift: Shift, yearly: &[&str], once: &[&str]) -> DeadlinePolicy {
        DeadlinePolicy {
            shift: vec![(d("2000-01-01"), shift)],
            closed: vec![(
                d("2000-01-01"),
                ClosedDays {
                    yearly: yearly.iter().map(|m| MonthDay::parse(m).unwrap()).collect(),
                    once: once.iter().map(|x| d(x)).collect(),
                },
            )],
        }
    }

    #[test]
    fn deadlines_move_off_closed_days() {
        use Counting::*;
        let last = due_date(d("2026-04-18"), Period::Days(14), NextDay);
        assert_eq!(last, d("2026-05-02"));
        // 2026-05-02 is a Saturday; May 3–6 are holidays (5/6 振替休日) → open on May 7.
        let closed = policy(Shift::ClosedDays, &[], &[]);
        assert_eq!(closed.due(last, None), d("2026-05-07"));
        assert_eq!(closed.due(last, Some(Shift::Weekend)), d("2026-05-04"));
        // A rule that names `none` keeps the period's last day whatever the policy.
        assert_eq!(closed.due(last, Some(Shift::None)), d("2026-05-02"));
        // Year-end closure: Dec 29 → Jan 4 2027 (Monday).
        let last = due_date(d("2026-12-15"), Period::Days(14), NextDay);
        assert_eq!(closed.due(last, None), d("2027-01-04"));
    }

    #[test]
    fn a_municipality_sets_its_own_shift_and_closed_days() {
        // 2025-02-15 is a Saturday: moved to Monday 02-17 where the policy moves deadlines,
        // kept where it does not.
        let sat = d("2025-02-15");
        assert_eq!(
            policy(Shift::ClosedDays, &[], &[]).due(sat, None),
            d("2025-02-17")
        );
        assert_eq!(policy(Shift::None, &[], &[]).due(sat, None), sat);
        // The municipality's own days: a yearly day (02-17) and a single day (02-18).
        let own = policy(Shift::ClosedDays, &["02-17"], &["2025-02-18"]);
        assert_eq!(own.due(sat, None), d("2025-02-19"));
        assert_eq!(own.due(d("2026-02-17"), None), d("2026-02-18"));
        // A national body keeps national closed days only.
        assert_eq!(
            own.due(sat, Some(Shift::NationalClosedDays)),
            d("2025-02-17")
        );
        // Weekend-only shifting ignores holidays and the municipality's days.
        assert_eq!(
            own.due(sat, Some(Shift::Weekend)),
            d("2025-02-17"),
            "weekend shift stops on Monday"
        );
        // Values in force from a date: before it, the earlier one.
        let mut changed = policy(Shift::None, &[], &[]);
        changed.shift.push((d("2025-01-01"), Shift::ClosedDays));
        assert_eq!(changed.due(d("2024-02-17"), None), d("2024-02-17"));
        assert_eq!(changed.due(sat, None), d("2025-02-17"));
    }

    #[test]
    fn national_holidays_2026() {
        let expected = [
            "2026-01-01",
            "2026-01-12",
            "2026-02-11",
            "2026-02-23",
            "2026-03-20",
            "2026-04-29",
            "2026-05-03",
            "2026-05-04",
            "2026-05-05",
            "2026-05-06",
            "2026-07-20",
            "2026-08-11",
            "2026-09-21",
            "2026-09-22",
            "2026-09-23",
            "2026-10-12",
            "2026-11-03",
            "2026-11-23",
        ];
        let got: Vec<String> = holidays_of(2026).iter().map(|d| d.to_string()).collect();
        assert_eq!(got, expected);
        // 2019: the enthronement; 2020: the Olympic moves.
        for h in [
            "2019-04-30",
            "2019-05-01",
            "2019-05-02",
            "2019-10-22",
            "2020-07-24",
            "2021-08-09",
        ] {
            assert!(is_national_holiday(d(h)), "{h}");
        }
        assert!(!is_national_holiday(d("2020-10-12")));
        assert!(!is_national_holiday(d("2019-12-23")));
    }

    // Independent, naive formulations: count birthdays by comparing (month, day) tuples.
    fn naive_age(b: NaiveDate, d: NaiveDate) -> i32 {
        let mut a = d.year() - b.year();
        if (d.month(), d.day()) < (b.month(), b.day()) {
            a -= 1;
        }
        a
    }

    fn naive_months(b: NaiveDate, d: NaiveDate) -> i32 {
        // Walk day by day and count each monthly "birthday" (or the 1st when it is missing).
        let mut months = 0;
        let mut day = b;
        while day < d {
            day = add_days(day, 1);
            let prev_month_len = add_days(month_start(day), -1).day();
            if day.day() == b.day() || (day.day() == 1 && b.day() > prev_month_len) {
                months += 1;
            }
        }
        months
    }

    fn date_strategy() -> impl Strategy<Value = NaiveDate> {
        (1900i32..=2100, 1u32..=12, 1u32..=31)
            .prop_filter_map("valid date", |(y, m, d)| NaiveDate::from_ymd_opt(y, m, d))
    }

    proptest! {
        #[test]
        fn age_on_matches_naive(b in date_strategy(), d in date_strategy()) {
            prop_assume!(d >= b);
            prop_assert_eq!(age_on(b, d), naive_age(b, d));
        }

        #[test]
        fn attain_is_the_last_day_before_the_age(b in date_strategy(), n in 0i32..110) {
            let a = attain(b, n);
            prop_assert_eq!(naive_age(b, a), n - 1);
            prop_assert_eq!(naive_age(b, add_days(a, 1)), n);
            prop_assert_eq!(age_on(b, a), n - 1);
        }

        #[test]
        fn fiscal_year_end_age_matches_naive(b in date_strategy(), fy in 1900i32..2100) {
            prop_assume!(fy > b.year());
            prop_assert_eq!(fy_end_age(b, fy), naive_age(b, NaiveDate::from_ymd_opt(fy + 1, 3, 31).unwrap() + Days::new(1)));
        }

        #[test]
        fn school_entry_is_the_first_april_first_at_six(b in date_strategy()) {
            prop_assume!(b.year() < 2090);
            let e = school_entry(b);
            prop_assert_eq!((e.month(), e.day()), (4, 1));
            prop_assert!(naive_age(b, e) >= 6);
            prop_assert!(naive_age(b, NaiveDate::from_ymd_opt(e.year() - 1, 4, 1).unwrap()) < 6);
        }

        #[test]
        fn months_of_age_match_a_day_by_day_walk(b in date_strategy(), span in 0i64..1200) {
            let d = add_days(b, span);
            prop_assert_eq!(age_in_months(b, d), naive_months(b, d));
        }

        #[test]
        fn day_periods_count_inclusively(start in date_strategy(), n in 1u32..400) {
            let e = due_date(start, Period::Days(n), Counting::EventDay);
            prop_assert_eq!((e - start).num_days() + 1, i64::from(n));
            let nd = due_date(start, Period::Days(n), Counting::NextDay);
            prop_assert_eq!((nd - start).num_days(), i64::from(n));
        }

        #[test]
        fn shifted_deadlines_land_on_open_days_within_ten_days(start in date_strategy(), n in 1u32..60) {
            let plain = due_date(start, Period::Days(n), Counting::NextDay);
            let shifted = DeadlinePolicy::default().due(plain, None);
            prop_assert!(shifted >= plain);
            prop_assert!(!is_closed_day(shifted));
            // The longest closure: a weekend before the year-end holidays and a 振替休日.
            prop_assert!((shifted - plain).num_days() <= 10);
        }
    }
}
