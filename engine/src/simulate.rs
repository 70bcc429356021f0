//! Dry runs over a date range: what the catalogue would send, per rule and day, with no
//! writes anywhere; and what a changed catalogue would add, remove or change.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::calendar;
use crate::catalogue::RuleSet;
use crate::eval::{evaluate_day, Decision, RuleFailure};
use crate::ids::RuleId;
use crate::population::Population;

/// The result of a dry run.
#[derive(Debug, Clone, Default)]
pub struct Simulation {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Notices per day per rule (days without notices are absent).
    pub per_day: BTreeMap<NaiveDate, BTreeMap<RuleId, usize>>,
    pub totals: BTreeMap<RuleId, usize>,
    /// The first decisions of each rule, by date.
    pub samples: BTreeMap<RuleId, Vec<Decision>>,
    pub failures: Vec<RuleFailure>,
}

impl Simulation {
    pub fn notices(&self) -> usize {
        self.totals.values().sum()
    }
}

fn each_day(from: NaiveDate, to: NaiveDate, mut f: impl FnMut(NaiveDate)) {
    let mut day = from;
    while day <= to {
        f(day);
        day = calendar::add_days(day, 1);
    }
}

/// Evaluates every day of `from..=to`, keeping counts and up to `samples` decisions per rule.
/// `progress` is called after each day.
pub fn simulate(
    rules: &RuleSet,
    pop: &Population,
    from: NaiveDate,
    to: NaiveDate,
    samples: usize,
    progress: &mut dyn FnMut(NaiveDate),
) -> Simulation {
    let mut sim = Simulation {
        from: Some(from),
        to: Some(to),
        ..Simulation::default()
    };
    each_day(from, to, |day| {
        let r = evaluate_day(rules, pop, day);
        for d in r.decisions {
            *sim.per_day
                .entry(day)
                .or_default()
                .entry(d.rule.clone())
                .or_default() += 1;
            *sim.totals.entry(d.rule.clone()).or_default() += 1;
            let s = sim.samples.entry(d.rule.clone()).or_default();
            if s.len() < samples {
                s.push(d);
            }
        }
        sim.failures.extend(r.failures);
        progress(day);
    });
    sim
}

/// One difference between two catalogues.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// Only the other catalogue decides this.
    Added(Box<Decision>),
    /// Only the base catalogue decides this.
    Removed(Box<Decision>),
    /// Both decide it, differently (recipients, deadline or draft).
    Changed {
        base: Box<Decision>,
        other: Box<Decision>,
        what: String,
    },
}

impl Difference {
    /// `added`, `removed` or `changed`.
    pub fn change(&self) -> &'static str {
        match self {
            Difference::Added(_) => "added",
            Difference::Removed(_) => "removed",
            Difference::Changed { .. } => "changed",
        }
    }

    /// What changed (empty for additions and removals).
    pub fn detail(&self) -> &str {
        match self {
            Difference::Changed { what, .. } => what,
            _ => "",
        }
    }

    pub fn decision(&self) -> &Decision {
        match self {
            Difference::Added(d) | Difference::Removed(d) => d,
            Difference::Changed { other, .. } => other,
        }
    }
}

fn all_decisions(
    rules: &RuleSet,
    pop: &Population,
    from: NaiveDate,
    to: NaiveDate,
) -> BTreeMap<String, Decision> {
    let mut out = BTreeMap::new();
    each_day(from, to, |day| {
        for d in evaluate_day(rules, pop, day).decisions {
            out.insert(d.key.to_string(), d);
        }
    });
    out
}

/// What replacing `base` by `other` would change over `from..=to`, resident by resident
/// (ordered by decision key: rule, subject, occurrence).
pub fn compare(
    base: &RuleSet,
    other: &RuleSet,
    pop: &Population,
    from: NaiveDate,
    to: NaiveDate,
) -> Vec<Difference> {
    let a = all_decisions(base, pop, from, to);
    let b = all_decisions(other, pop, from, to);
    let mut out = Vec::new();
    for (key, d) in &a {
        match b.get(key) {
            None => out.push(Difference::Removed(Box::new(d.clone()))),
            Some(o) => {
                let mut what = Vec::new();
                let ids = |x: &Decision| {
                    x.recipients
                        .iter()
                        .map(|r| r.id.to_string())
                        .collect::<Vec<_>>()
                };
                if ids(d) != ids(o) {
                    what.push(format!("recipients {:?} -> {:?}", ids(d), ids(o)));
                }
                if d.notify_on != o.notify_on {
                    what.push(format!("notice day {} -> {}", d.notify_on, o.notify_on));
                }
                if d.deadline != o.deadline {
                    what.push(format!("deadline {:?} -> {:?}", d.deadline, o.deadline));
                }
                if d.prefill != o.prefill {
                    what.push("draft fields".to_owned());
                }
                if d.staff_review != o.staff_review {
                    what.push("staff review".to_owned());
                }
                if !what.is_empty() {
                    out.push(Difference::Changed {
                        base: Box::new(d.clone()),
                        other: Box::new(o.clone()),
                        what: what.join("; "),
                    });
                }
            }
        }
    }
    for (key, d) in &b {
        if !a.contains_key(key) {
            out.push(Difference::Added(Box::new(d.clone())));
        }
    }
    out.sort_by(|x, y| x.decision().key.cmp(&y.decision().key));
    out
}
