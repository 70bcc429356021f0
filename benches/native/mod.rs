//! Native baselines shared by the benchmarks (included with `mod native;`).
//!
//! - `native_scan`: the naive way to find who is due: scan every resident and compute each
//!   rule's notice day in plain Rust (triggers only, no conditions).
//! - `eligible_day`: the floor. The catalogue's eligibility logic written by hand: the same
//!   candidate search over the population's birth-date and event indexes, and every condition
//!   (the scripted ones as hand-written Rust, by rule id), with no interpreter, no audience,
//!   drafts or messages. It must find exactly the subjects the engine decides for.

use chrono::{Datelike, NaiveDate};
use oshirase_engine::calendar;
use oshirase_engine::resident::{Resident, Status};
use oshirase_engine::rule::{AgeOn, Annual, Condition, FiscalYearAge, Rule, SexIs, Trigger};
use oshirase_engine::{EventKind, Population, RuleSet};

/// The baseline: scan everyone, compute each trigger's notice day natively.
pub fn native_scan(triggers: &[(Trigger, i64)], pop: &Population, today: NaiveDate) -> usize {
    let mut due = 0;
    for r in pop.residents() {
        let b = r.birth_date;
        for &(t, offset) in triggers {
            let o = calendar::add_days(today, -offset);
            let hit = match t {
                Trigger::AgeAttained(n) => calendar::attain(b, n as i32) == o,
                Trigger::Birthday(n) => calendar::anniversary(b, n as i32) == o,
                Trigger::AgeMonths(m) => calendar::month_anniversary(b, m) == o,
                Trigger::FiscalYearAge(FiscalYearAge { age, on }) => {
                    let fy = calendar::fiscal_year(o);
                    calendar::date_in_fiscal_year(fy, on) == o
                        && calendar::fy_end_age(b, fy) == age as i32
                }
                Trigger::Annual(Annual { on }) => on.in_year(chrono::Datelike::year(&o)) == o,
                Trigger::Event(EventKind::Death) => r.status.date() == Some(o) && !r.is_current(),
                Trigger::Event(_) => false,
            };
            due += usize::from(hit);
        }
    }
    due
}

/// Subjects due for a rule: (resident index, occurrence).
fn candidates(rule: &Rule, pop: &Population, today: NaiveDate, out: &mut Vec<(usize, NaiveDate)>) {
    let o = calendar::add_days(today, -rule.notify_offset);
    let mut around = |center: NaiveDate, hit: &dyn Fn(NaiveDate) -> bool| {
        let from = calendar::add_days(center, -3);
        let to = calendar::add_days(center, 3);
        out.extend(
            pop.born_between(from, to)
                .filter(|&i| hit(pop.get(i).birth_date))
                .map(|i| (i, o)),
        );
    };
    match rule.trigger {
        Trigger::AgeAttained(n) => {
            let n = n as i32;
            around(calendar::shift_years(calendar::add_days(o, 1), -n), &|b| {
                calendar::attain(b, n) == o
            })
        }
        Trigger::Birthday(n) => {
            let n = n as i32;
            around(calendar::shift_years(o, -n), &|b| {
                calendar::anniversary(b, n) == o
            })
        }
        Trigger::AgeMonths(m) => around(calendar::months_earlier(o, m), &|b| {
            calendar::month_anniversary(b, m) == o
        }),
        Trigger::FiscalYearAge(FiscalYearAge { age, on }) => {
            let fy = calendar::fiscal_year(o);
            if calendar::date_in_fiscal_year(fy, on) == o {
                let age = age as i32;
                let from = calendar::fiscal_year_start(fy - age);
                let to = calendar::fiscal_year_start(fy - age + 1);
                out.extend(
                    pop.born_between(from, to)
                        .filter(|&i| calendar::fy_end_age(pop.get(i).birth_date, fy) == age)
                        .map(|i| (i, o)),
                );
            }
        }
        Trigger::Event(kind) => {
            out.extend(
                pop.events_on(kind, o)
                    .filter(|e| e.recorded <= today)
                    .map(|e| (e.subject, o)),
            );
            out.extend(
                pop.events_recorded_late_on(kind, today)
                    .filter(|e| calendar::add_days(e.date, rule.notify_offset) < today)
                    .map(|e| (e.subject, e.date)),
            );
        }
        Trigger::Annual(Annual { on }) => {
            if on.in_year(o.year()) == o {
                out.extend(pop.subjects().map(|i| (i, o)));
            }
        }
    }
}

const SPOUSES: [&str; 4] = ["夫", "妻", "夫（未届）", "妻（未届）"];

fn rel(r: &Resident) -> &str {
    r.household.as_ref().map_or("", |h| h.relationship.as_str())
}

fn param_i64(rules: &RuleSet, name: &str, on: NaiveDate) -> i64 {
    rules
        .params
        .0
        .get(name)
        .and_then(|p| p.effective(on))
        .and_then(|(_, v)| v.as_i64())
        .unwrap_or_else(|| panic!("parameter {name} has no number in force on {on}"))
}

fn param_bool(rules: &RuleSet, name: &str, on: NaiveDate) -> bool {
    rules
        .params
        .0
        .get(name)
        .and_then(|p| p.effective(on))
        .and_then(|(_, v)| v.as_bool())
        .unwrap_or_else(|| panic!("parameter {name} has no bool in force on {on}"))
}

/// The scripted conditions of the catalogue, by rule id and position among the rule's
/// scripts. `None`: no hand-written equivalent (the caller reports it).
fn script(
    rules: &RuleSet,
    rule: &str,
    k: usize,
    pop: &Population,
    s: usize,
    o: NaiveDate,
    today: NaiveDate,
) -> Option<bool> {
    let subject = pop.get(s);
    let household = || pop.housemates(s, today);
    let guardians = || {
        subject
            .guardians
            .iter()
            .filter_map(|g| pop.index_of(&g.id))
            .map(|i| pop.get(i))
    };
    let fy = calendar::fiscal_year(o);
    Some(match (rule, k) {
        ("izoku-mishounen-shien", 0) => {
            let max = param_i64(rules, "izoku_child_max_fy_age", o) as i32;
            household()
                .iter()
                .any(|&m| calendar::fy_end_age(pop.get(m).birth_date, fy) <= max)
        }
        ("jidou-teate-nintei", 0) => guardians().all(|g| !g.flag("public_servant")),
        ("kaigo-2go-shikaku", 0) => {
            subject.flag("kokuho")
                || subject.flag("employees_insurance")
                || subject.flag("employees_insurance_dependent")
        }
        ("kaigo-soshitsu", 0) => {
            let b = subject.birth_date;
            o >= calendar::attain(b, 65)
                || (o >= calendar::attain(b, 40) && subject.flag("kaigo_certified"))
        }
        ("kokuho-shussei-kanyu", 0) => pop
            .householder(s, today)
            .is_some_and(|h| pop.get(h).flag("kokuho")),
        ("kougaku-ryouyouhi-souzoku", 0) | ("sousaihi", 0) => {
            subject.flag("kokuho") || subject.flag("kouki")
        }
        ("kouki-fuyou-haigusha", 0) => {
            let me = rel(subject);
            household().iter().any(|&p| {
                let p = pop.get(p);
                (if me == "世帯主" {
                    SPOUSES.contains(&rel(p))
                } else {
                    SPOUSES.contains(&me) && rel(p) == "世帯主"
                }) && calendar::age_on(p.birth_date, o) < 75
                    && p.flag("employees_insurance_dependent")
            })
        }
        ("setainushi-henko", 0) => rel(subject) == "世帯主",
        ("setainushi-henko", 1) => {
            let exempt = param_bool(rules, "setainushi_henko_exempt_spouse_minor_children", o);
            let under = param_i64(rules, "setainushi_henko_exempt_child_under_age", o) as i32;
            let members = household();
            !(exempt
                && members.iter().any(|&m| SPOUSES.contains(&rel(pop.get(m))))
                && members.iter().all(|&m| {
                    let m = pop.get(m);
                    SPOUSES.contains(&rel(m))
                        || (rel(m) == "子" && calendar::age_on(m.birth_date, o) < under)
                }))
        }
        ("shussan-ikuji-ichijikin", 0) => {
            guardians().any(|g| u8::from(g.sex) == 2 && g.flag("kokuho"))
        }
        ("taijou-houshin-keika", 0) => {
            let age = calendar::fy_end_age(subject.birth_date, fy);
            [70, 75, 80, 85, 90, 95, 100].contains(&age) || (fy == 2025 && age > 100)
        }
        _ => return None,
    })
}

/// Whether subject `s` is eligible for `rule` at occurrence `o` on `today`: validity,
/// register status, then every condition.
fn eligible(
    rules: &RuleSet,
    rule: &Rule,
    pop: &Population,
    s: usize,
    o: NaiveDate,
    today: NaiveDate,
    missing: &mut Vec<String>,
) -> bool {
    if !rule.valid.contains(o) {
        return false;
    }
    let subject = pop.get(s);
    let status_ok = match rule.trigger {
        Trigger::Event(EventKind::Death) => matches!(subject.status, Status::Deceased { .. }),
        Trigger::Event(EventKind::MoveOut) => matches!(subject.status, Status::MovedOut { .. }),
        _ => subject.on_register(today),
    };
    if !status_ok {
        return false;
    }
    let mut scripts = 0;
    for (_, c) in &rule.conditions {
        let ok = match c {
            Condition::Attribute(a) => subject.flag(a),
            Condition::NotAttribute(a) => !subject.flag(a),
            Condition::AttributeEquals(a, v) => subject.attributes.get(a) == Some(v),
            Condition::Sex(x) => {
                u8::from(subject.sex)
                    == match x {
                        SexIs::Male => 1,
                        SexIs::Female => 2,
                    }
            }
            Condition::Age(r) => {
                let b = subject.birth_date;
                let age = match r.on {
                    AgeOn::Occurrence => calendar::age_on(b, o),
                    AgeOn::Notify => calendar::age_on(b, today),
                    AgeOn::FiscalYearEnd => calendar::fy_end_age(b, calendar::fiscal_year(o)),
                };
                r.min.is_none_or(|m| age >= m) && r.max.is_none_or(|m| age <= m)
            }
            Condition::HouseholdRemaining(r) => {
                let n = pop.housemates(s, today).len();
                r.min.is_none_or(|m| n >= m) && r.max.is_none_or(|m| n <= m)
            }
            Condition::Script(_) => {
                let k = scripts;
                scripts += 1;
                match script(rules, rule.id.as_str(), k, pop, s, o, today) {
                    Some(v) => v,
                    None => {
                        let what = format!("{} script #{k}", rule.id);
                        if !missing.contains(&what) {
                            missing.push(what);
                        }
                        true
                    }
                }
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The floor for one day: eligible subjects per rule (in catalogue order), using `threads`
/// threads over all candidates. Scripted conditions without a hand-written equivalent are
/// named in the second value (and counted as true).
pub fn eligible_day(
    rules: &RuleSet,
    pop: &Population,
    today: NaiveDate,
    threads: usize,
) -> (Vec<usize>, Vec<String>) {
    let mut work: Vec<(u16, usize, NaiveDate)> = Vec::new();
    let mut buf = Vec::new();
    for (k, rule) in rules.rules().iter().enumerate() {
        buf.clear();
        candidates(rule, pop, today, &mut buf);
        work.extend(buf.iter().map(|&(s, o)| (k as u16, s, o)));
    }
    let n = rules.rules().len();
    let chunk = work.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<(Vec<usize>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut counts = vec![0; n];
                    let mut missing = Vec::new();
                    for &(k, s, o) in part {
                        let rule = &rules.rules()[usize::from(k)];
                        if eligible(rules, rule, pop, s, o, today, &mut missing) {
                            counts[usize::from(k)] += 1;
                        }
                    }
                    (counts, missing)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("floor thread"))
            .collect()
    });
    let mut counts = vec![0; n];
    let mut missing: Vec<String> = Vec::new();
    for (c, m) in parts {
        for (total, x) in counts.iter_mut().zip(c) {
            *total += x;
        }
        for x in m {
            if !missing.contains(&x) {
                missing.push(x);
            }
        }
    }
    (counts, missing)
}
