//! Dry runs over a date range: what the catalogue would send, per rule and day, with no
//! writes anywhere; and what a changed catalogue would add, remove or change, resident by
//! resident. Pure functions over `evaluate_day`: no I/O, deterministic output.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDate;

use crate::calendar;
use crate::catalogue::RuleSet;
use crate::eval::{evaluate_day, DayResult, Decision, DecisionKey, Recipient, RuleFailure};
use crate::ids::RuleId;
use crate::population::Population;

/// The result of a dry run over `from..=to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Simulation {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Notices per day per rule; days and rules without notices are absent.
    pub per_day: BTreeMap<NaiveDate, BTreeMap<RuleId, usize>>,
    /// Notices per rule over the range, for every rule of the catalogue: a rule that never
    /// fires shows as 0, which is often what a policy change needs to reveal.
    pub totals: BTreeMap<RuleId, usize>,
    /// The first decisions of each rule, by notice day then key; rules without any are absent.
    pub samples: BTreeMap<RuleId, Vec<Decision>>,
    /// Run-time failures, by day, then rule and resident (as `evaluate_day` orders them).
    pub failures: Vec<RuleFailure>,
}

impl Simulation {
    /// Notices over the whole range.
    pub fn notices(&self) -> usize {
        self.totals.values().sum()
    }

    /// Days in the range (0 when `from` is after `to`).
    pub fn days(&self) -> usize {
        calendar::days(self.from, self.to).count()
    }
}

/// Accumulates one catalogue's days into a `Simulation`.
struct Tally {
    sim: Simulation,
    samples: usize,
}

impl Tally {
    fn new(rules: &RuleSet, from: NaiveDate, to: NaiveDate, samples: usize) -> Self {
        Self {
            sim: Simulation {
                from,
                to,
                per_day: BTreeMap::new(),
                totals: rules.rules().iter().map(|r| (r.id.clone(), 0)).collect(),
                samples: BTreeMap::new(),
                failures: Vec::new(),
            },
            samples,
        }
    }

    fn add(&mut self, day: NaiveDate, r: &DayResult) {
        let sim = &mut self.sim;
        for d in &r.decisions {
            *sim.per_day
                .entry(day)
                .or_default()
                .entry(d.rule.clone())
                .or_default() += 1;
            *sim.totals.entry(d.rule.clone()).or_default() += 1;
            if self.samples > 0 {
                let s = sim.samples.entry(d.rule.clone()).or_default();
                if s.len() < self.samples {
                    s.push(d.clone());
                }
            }
        }
        sim.failures.extend(r.failures.iter().cloned());
    }
}

/// Evaluates every day of `from..=to` (none when `from > to`), counting notices per rule and
/// day and keeping up to `samples` decisions per rule. `progress` is called after each day.
pub fn simulate(
    rules: &RuleSet,
    pop: &Population,
    from: NaiveDate,
    to: NaiveDate,
    samples: usize,
    progress: &mut dyn FnMut(NaiveDate),
) -> Simulation {
    let mut tally = Tally::new(rules, from, to, samples);
    for day in calendar::days(from, to) {
        tally.add(day, &evaluate_day(rules, pop, day));
        progress(day);
    }
    tally.sim
}

/// One difference between two catalogues, about one decision key.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// Only the other catalogue decides this.
    Added(Box<Decision>),
    /// Only the base catalogue decides this.
    Removed(Box<Decision>),
    /// Both decide it, differently. `what` names each aspect that differs, old -> new.
    Changed {
        base: Box<Decision>,
        other: Box<Decision>,
        what: Vec<String>,
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

    /// What changed, `; `-separated (empty for additions and removals).
    pub fn detail(&self) -> String {
        match self {
            Difference::Changed { what, .. } => what.join("; "),
            _ => String::new(),
        }
    }

    /// The decision as it would be after the change (the base one for a removal).
    pub fn decision(&self) -> &Decision {
        match self {
            Difference::Added(d) | Difference::Removed(d) => d,
            Difference::Changed { other, .. } => other,
        }
    }

    pub fn key(&self) -> &DecisionKey {
        &self.decision().key
    }
}

/// What replacing one catalogue by another would change over a range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Ordered by decision key: rule, subject, occurrence.
    pub differences: Vec<Difference>,
    /// Run-time failures of each catalogue. A failing resident gets no decision, so a
    /// difference for them may come from the failure rather than from the rule change.
    pub base_failures: Vec<RuleFailure>,
    pub other_failures: Vec<RuleFailure>,
}

/// Counts of a comparison, overall or for one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
}

impl Comparison {
    pub fn counts(&self) -> ChangeCounts {
        let mut c = ChangeCounts::default();
        for d in &self.differences {
            c.bump(d);
        }
        c
    }

    /// Counts per rule, for rules with at least one difference.
    pub fn per_rule(&self) -> BTreeMap<RuleId, ChangeCounts> {
        let mut out: BTreeMap<RuleId, ChangeCounts> = BTreeMap::new();
        for d in &self.differences {
            out.entry(d.decision().rule.clone()).or_default().bump(d);
        }
        out
    }
}

impl ChangeCounts {
    fn bump(&mut self, d: &Difference) {
        match d {
            Difference::Added(_) => self.added += 1,
            Difference::Removed(_) => self.removed += 1,
            Difference::Changed { .. } => self.changed += 1,
        }
    }
}

/// Both catalogues' decisions over the range, by key.
#[derive(Default)]
struct Sides {
    base: BTreeMap<DecisionKey, Decision>,
    other: BTreeMap<DecisionKey, Decision>,
    base_failures: Vec<RuleFailure>,
    other_failures: Vec<RuleFailure>,
}

impl Sides {
    fn add(&mut self, base: DayResult, other: DayResult) {
        // A key decided on two days keeps its first decision: the store would skip the later
        // one (a decision is made at most once, ever).
        for d in base.decisions {
            self.base.entry(d.key.clone()).or_insert(d);
        }
        for d in other.decisions {
            self.other.entry(d.key.clone()).or_insert(d);
        }
        self.base_failures.extend(base.failures);
        self.other_failures.extend(other.failures);
    }

    fn finish(self) -> Comparison {
        let Sides {
            base,
            mut other,
            base_failures,
            other_failures,
        } = self;
        let mut differences = Vec::new();
        for (key, b) in base {
            match other.remove(&key) {
                None => differences.push(Difference::Removed(Box::new(b))),
                Some(o) => {
                    let what = changes(&b, &o);
                    if !what.is_empty() {
                        differences.push(Difference::Changed {
                            base: Box::new(b),
                            other: Box::new(o),
                            what,
                        });
                    }
                }
            }
        }
        differences.extend(other.into_values().map(|o| Difference::Added(Box::new(o))));
        differences.sort_by(|x, y| x.key().cmp(y.key()));
        Comparison {
            differences,
            base_failures,
            other_failures,
        }
    }
}

fn recipients(rs: &[Recipient]) -> String {
    if rs.is_empty() {
        return "nobody".to_owned();
    }
    rs.iter()
        .map(|r| {
            let ch: Vec<&str> = r.channels.iter().map(|c| c.name()).collect();
            let ch = if ch.is_empty() {
                "post".to_owned()
            } else {
                ch.join("+")
            };
            let role = format!("{:?}", r.role).to_lowercase();
            format!("{}({role}:{ch})", r.id)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A draft value for a detail line, cut short: the detail is for reading, the drafts
/// themselves are in the decisions.
fn short(v: Option<&serde_json::Value>) -> String {
    let s = match v {
        None => return "(none)".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("none".to_owned(), T::to_string)
}

/// The aspects of one decision key that differ between two catalogues, old -> new. Rule
/// version and title are not compared: they change with every edit and say nothing about
/// what a resident receives.
fn changes(b: &Decision, o: &Decision) -> Vec<String> {
    let mut what = Vec::new();
    if b.recipients != o.recipients {
        what.push(format!(
            "recipients {} -> {}",
            recipients(&b.recipients),
            recipients(&o.recipients)
        ));
    }
    if b.notify_on != o.notify_on {
        what.push(format!("notice day {} -> {}", b.notify_on, o.notify_on));
    }
    if b.deadline != o.deadline {
        what.push(format!(
            "deadline {} -> {}",
            opt(&b.deadline),
            opt(&o.deadline)
        ));
    }
    if b.prefill != o.prefill {
        // Fields in the base order, then fields only the other draft has.
        let names = b
            .prefill
            .keys()
            .chain(o.prefill.keys().filter(|k| !b.prefill.contains_key(*k)));
        let mut fields = String::new();
        for name in names {
            let (x, y) = (b.prefill.get(name), o.prefill.get(name));
            if x != y {
                if !fields.is_empty() {
                    fields.push_str(", ");
                }
                let _ = write!(fields, "{name}: {} -> {}", short(x), short(y));
            }
        }
        what.push(format!("draft {fields}"));
    }
    if b.staff_review != o.staff_review {
        what.push(format!(
            "staff review {} -> {}",
            opt(&b.staff_review),
            opt(&o.staff_review)
        ));
    }
    if b.message != o.message {
        what.push("message text".to_owned());
    }
    what
}

/// What replacing `base` by `other` would change over `from..=to`, resident by resident.
/// Both catalogues are evaluated day by day and matched by decision key over the whole
/// range, so a notice that merely moves to another day shows as changed, not as a removal
/// and an addition.
pub fn compare(
    base: &RuleSet,
    other: &RuleSet,
    pop: &Population,
    from: NaiveDate,
    to: NaiveDate,
) -> Comparison {
    let mut sides = Sides::default();
    for day in calendar::days(from, to) {
        sides.add(evaluate_day(base, pop, day), evaluate_day(other, pop, day));
    }
    sides.finish()
}

/// `simulate` and `compare` in one pass, evaluating the base catalogue once per day.
/// `progress` is called after each day.
pub fn simulate_and_compare(
    base: &RuleSet,
    other: &RuleSet,
    pop: &Population,
    from: NaiveDate,
    to: NaiveDate,
    samples: usize,
    progress: &mut dyn FnMut(NaiveDate),
) -> (Simulation, Comparison) {
    let mut tally = Tally::new(base, from, to, samples);
    let mut sides = Sides::default();
    for day in calendar::days(from, to) {
        let b = evaluate_day(base, pop, day);
        tally.add(day, &b);
        sides.add(b, evaluate_day(other, pop, day));
        progress(day);
    }
    (tally.sim, sides.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_draft_values_are_cut() {
        let long = serde_json::Value::String("あ".repeat(50));
        assert_eq!(short(Some(&long)).chars().count(), 41);
        assert_eq!(short(None), "(none)");
        assert_eq!(short(Some(&serde_json::json!(7))), "7");
    }
}
