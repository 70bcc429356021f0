//! When a rule fires. Each age trigger is one forward function (the occurrence a birth date
//! gives) and its inverse (the birth dates whose occurrence can be a given day, looked up in
//! the population's birth-date index and checked with the forward function). The candidates
//! of a day (`due_on`) and the occurrences of one person (`occurrences_of`, for `explain`)
//! both come from here, so the two can never disagree.

use chrono::{Datelike, NaiveDate};

use crate::calendar;
use crate::population::{LifeEvent, Population};
use crate::rule::{Annual, FiscalYearAge, Rule, Trigger};

/// How far either side of the inverse's centre the index is searched: the forward function
/// moves a birth date by at most a couple of days (Feb 29, month ends), checked below.
const SLACK_DAYS: i64 = 3;

/// A subject whose notice for a rule is due, with its occurrence (and event id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Position in the population.
    pub subject: usize,
    pub event: Option<String>,
    pub occurrence: NaiveDate,
}

/// One occurrence of a rule for a person: when it happens and when its notice is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub occurrence: NaiveDate,
    pub event: Option<String>,
    pub notice_day: NaiveDate,
}

impl Trigger {
    /// The occurrence of an age trigger for a person born on `birth`; `None` for triggers
    /// that do not follow from the birth date (events, annual days).
    pub fn occurrence_of_birth(&self, birth: NaiveDate) -> Option<NaiveDate> {
        Some(match *self {
            Trigger::AgeAttained(n) => calendar::attain(birth, n as i32),
            Trigger::Birthday(n) => calendar::anniversary(birth, n as i32),
            Trigger::AgeMonths(m) => calendar::month_anniversary(birth, m),
            Trigger::FiscalYearAge(FiscalYearAge { age, on }) => {
                // The fiscal year at whose end the person has this age.
                let age = age as i32;
                let fy = (birth.year() + age - 1..=birth.year() + age)
                    .find(|&fy| calendar::fy_end_age(birth, fy) == age)
                    .unwrap_or(birth.year() + age);
                calendar::date_in_fiscal_year(fy, on)
            }
            Trigger::Event(_) | Trigger::Annual(_) => return None,
        })
    }

    /// The birth dates (inclusive) whose occurrence may be `o`: a superset, to be checked
    /// with `occurrence_of_birth`. `None` for triggers that do not follow from the birth date.
    fn births_for(&self, o: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        let around = |centre: NaiveDate| {
            Some((
                calendar::add_days(centre, -SLACK_DAYS),
                calendar::add_days(centre, SLACK_DAYS),
            ))
        };
        match *self {
            Trigger::AgeAttained(n) => {
                around(calendar::shift_years(calendar::day_after(o), -(n as i32)))
            }
            Trigger::Birthday(n) => around(calendar::shift_years(o, -(n as i32))),
            Trigger::AgeMonths(m) => around(calendar::months_earlier(o, m)),
            Trigger::FiscalYearAge(FiscalYearAge { age, .. }) => {
                let fy = calendar::fiscal_year(o) - age as i32;
                Some((
                    calendar::fiscal_year_start(fy),
                    calendar::fiscal_year_start(fy + 1),
                ))
            }
            Trigger::Event(_) | Trigger::Annual(_) => None,
        }
    }
}

/// The subjects whose notice for `rule` is due on `today`; `arrivals` are events no earlier
/// run saw (see `eval::evaluate_run`).
pub fn due_on(
    rule: &Rule,
    pop: &Population,
    today: NaiveDate,
    arrivals: &[LifeEvent],
) -> Vec<Candidate> {
    let o = rule.occurrence_due_on(today);
    let plain = |subject| Candidate {
        subject,
        event: None,
        occurrence: o,
    };
    match rule.trigger {
        Trigger::Event(kind) => {
            // Due today, if the register already knew of it...
            let mut out: Vec<Candidate> = pop
                .events_on(kind, o)
                .filter(|e| e.recorded <= today)
                .map(|e| Candidate {
                    subject: e.subject,
                    event: Some(e.id.clone()),
                    occurrence: o,
                })
                .collect();
            // ...and events that reached the register today, after their notice day had passed
            // (a birth is on the register only once the 出生届 is accepted).
            out.extend(
                pop.events_recorded_late_on(kind, today)
                    .filter(|e| rule.notice_day_of(e.date) < today)
                    .map(|e| Candidate {
                        subject: e.subject,
                        event: Some(e.id.clone()),
                        occurrence: e.date,
                    }),
            );
            // ...and events no run has seen whose day has passed: their day's run was over
            // when they were ingested. Due today they are already in `out`; not recorded yet,
            // they come on the day they are.
            out.extend(
                arrivals
                    .iter()
                    .filter(|a| a.kind == kind)
                    .filter_map(|a| pop.event(a.date, &a.id))
                    .filter(|e| {
                        e.recorded <= today && rule.notice_day_of(e.date).max(e.recorded) < today
                    })
                    .map(|e| Candidate {
                        subject: e.subject,
                        event: Some(e.id.clone()),
                        occurrence: e.date,
                    }),
            );
            out
        }
        Trigger::Annual(Annual { on }) => {
            if on.in_year(o.year()) != o {
                return Vec::new();
            }
            pop.subjects().map(plain).collect()
        }
        trigger => {
            let Some((from, to)) = trigger.births_for(o) else {
                return Vec::new();
            };
            pop.born_between(from, to)
                .filter(|&i| trigger.occurrence_of_birth(pop.get(i).birth_date) == Some(o))
                .map(plain)
                .collect()
        }
    }
}

/// The occurrences of `rule` for subject `s` that matter on `today`: the one an age trigger
/// gives, each event of the rule's kind, or this year's annual day.
pub fn occurrences_of(
    rule: &Rule,
    pop: &Population,
    s: usize,
    today: NaiveDate,
) -> Vec<Occurrence> {
    let plain = |o: NaiveDate| {
        vec![Occurrence {
            occurrence: o,
            event: None,
            notice_day: rule.notice_day_of(o),
        }]
    };
    match rule.trigger {
        Trigger::Event(kind) => pop
            .events_of(s)
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| Occurrence {
                occurrence: e.date,
                event: Some(e.id.clone()),
                notice_day: rule.notice_day_of(e.date).max(e.recorded),
            })
            .collect(),
        Trigger::Annual(Annual { on }) => plain(on.in_year(rule.occurrence_due_on(today).year())),
        trigger => trigger
            .occurrence_of_birth(pop.get(s).birth_date)
            .map_or_else(Vec::new, plain),
    }
}

impl Rule {
    /// The occurrence whose notice is due on `day`: the day less the notify offset.
    pub fn occurrence_due_on(&self, day: NaiveDate) -> NaiveDate {
        calendar::add_days(day, -self.notify_offset)
    }

    /// The day the notice of an occurrence is due.
    pub fn notice_day_of(&self, occurrence: NaiveDate) -> NaiveDate {
        calendar::add_days(occurrence, self.notify_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::MonthDay;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// The inverse finds every birth date the forward function maps to the day, over years
    /// of days and each age trigger (Feb 29 and month ends included).
    #[test]
    fn the_inverse_covers_the_forward_function() {
        let triggers = [
            Trigger::AgeAttained(20),
            Trigger::AgeAttained(75),
            Trigger::Birthday(65),
            Trigger::AgeMonths(2),
            Trigger::AgeMonths(18),
            Trigger::FiscalYearAge(FiscalYearAge {
                age: 6,
                on: MonthDay::parse("10-01").unwrap(),
            }),
        ];
        let mut birth = d("1995-01-01");
        while birth <= d("2001-12-31") {
            for t in &triggers {
                let o = t.occurrence_of_birth(birth).unwrap();
                let (from, to) = t.births_for(o).unwrap();
                assert!(
                    from <= birth && birth <= to,
                    "{t:?}: born {birth} occurs {o}, but the inverse gives {from}..={to}"
                );
            }
            birth = calendar::day_after(birth);
        }
    }
}
