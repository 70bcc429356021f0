//! Evaluation: for a day (or one resident and rule, traced for `explain`), find the subjects
//! whose notice is due through the trigger index, check conditions, resolve the audience,
//! compute the deadline, prefill the draft and render the messages.

use std::fmt;

use chrono::NaiveDate;
use indexmap::IndexMap;
use rayon::prelude::*;
use rhai::{Dynamic, Scope};
use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::catalogue::RuleSet;
use crate::ids::{ResidentId, RuleId};
use crate::population::{EventKind, LifeEvent, Population};
use crate::resident::{Channel, Resident, Status};
use crate::rule::*;
use crate::script::{self, ScriptError};
use crate::trigger;
use crate::wording;

/// Age from which a person receives their own notices (民法4条).
pub const ADULT_AGE: i32 = 18;

pub use crate::ids::DecisionKey;

/// Why a person receives a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Subject,
    Guardian,
    Householder,
    Spouse,
    Survivor,
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    pub id: ResidentId,
    pub role: Role,
    /// Channels this person can be reached on for this notice; empty means post or counter.
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedMessages {
    pub ja: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

/// A decision: one notice with its prefilled draft.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub key: DecisionKey,
    pub rule: RuleId,
    pub rule_version: u32,
    pub category: Category,
    pub subject: ResidentId,
    pub occurrence: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub notify_on: NaiveDate,
    pub deadline: Option<NaiveDate>,
    /// The last day of the period when the deadline was moved past closed days to `deadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_moved_from: Option<NaiveDate>,
    pub recipients: Vec<Recipient>,
    /// Set when staff must reach out: nobody on the register can receive the notice, or a
    /// protected person concerned can be told by nobody the support measure allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staff_review: Option<String>,
    pub prefill: IndexMap<String, serde_json::Value>,
    /// How the form shows each prefill field (labels, kinds), from the rule.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub form: IndexMap<String, FieldSpec>,
    /// Whether and how the resident applies.
    #[serde(default)]
    pub application: Application,
    /// Whom to ask: the rule's department on the notice day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    pub recommend: Vec<RuleId>,
    pub title: Titles,
    /// The law the procedure rests on, from the rule (`legal_basis`).
    pub legal_basis: String,
    pub message: RenderedMessages,
    pub channels: Vec<Channel>,
    pub critical: bool,
    /// The deadline had passed on the notice day (an event that reached the register late):
    /// the title says so, and the message must not offer the closed window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub urgent: bool,
}

/// What an urgent notice's title starts with, in each language.
pub const URGENT_MARK: (&str, &str) = ("【至急】", "[Urgent] ");

/// A rule that failed at run time for one resident: reported, and skipped for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleFailure {
    pub rule: RuleId,
    pub rule_version: u32,
    pub file: String,
    pub line: usize,
    pub field: String,
    pub resident: ResidentId,
    pub message: String,
}

impl fmt::Display for RuleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: field `{}`: rule {} v{} failed for resident {}: {}",
            self.file,
            self.line,
            self.field,
            self.rule,
            self.rule_version,
            self.resident,
            self.message
        )
    }
}

/// Everything one day's evaluation produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayResult {
    pub decisions: Vec<Decision>,
    pub failures: Vec<RuleFailure>,
    /// Subject-rule pairs whose trigger fired (conditions were checked).
    pub checks: usize,
}

/// One line of an `explain` trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceStep {
    pub step: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<(String, String)>,
}

/// Where `evaluate_subject` notes its steps (`explain`), or `None` in daily runs.
pub type Trace<'a> = Option<&'a mut Vec<TraceStep>>;

/// Adds a trace step; `detail` is only built when tracing (`explain`), never in daily runs.
fn note(
    trace: &mut Trace,
    step: &str,
    detail: impl FnOnce() -> String,
    passed: Option<bool>,
    inputs: Vec<(String, String)>,
) {
    if let Some(t) = trace.as_deref_mut() {
        t.push(TraceStep {
            step: step.to_owned(),
            detail: detail(),
            passed,
            inputs,
        });
    }
}

/// Notes a run-time failure in the trace and gives it as the outcome.
fn failed(trace: &mut Trace, f: Box<RuleFailure>) -> Outcome {
    note(
        trace,
        "failure",
        || f.message.clone(),
        Some(false),
        Vec::new(),
    );
    Outcome::Failed(f)
}

/// Evaluates every rule for notices due on `today`, as if the register had been evaluated
/// every day before: each event is due on one day, its notice day or the day it was
/// recorded if later (`evaluate_run` for events that reached the store after that day's run).
pub fn evaluate_day(rules: &RuleSet, pop: &Population, today: NaiveDate) -> DayResult {
    evaluate_run(rules, pop, today, &[])
}

/// `evaluate_day`, and besides the events of `arrivals` (events the population holds that
/// no earlier run saw: ingested after the run of their day, or while the service was down)
/// are due now for every rule whose notice day has passed, with their own occurrence, so
/// the deadline is still counted from the event.
pub fn evaluate_run(
    rules: &RuleSet,
    pop: &Population,
    today: NaiveDate,
    arrivals: &[LifeEvent],
) -> DayResult {
    let mut per_rule: Vec<(Vec<Decision>, Vec<RuleFailure>, usize)> = rules
        .rules()
        .par_iter()
        .map(|rule| {
            let o = rule.occurrence_due_on(today);
            let cands = trigger::due_on(rule, pop, today, arrivals);
            let params = if cands.is_empty() {
                Dynamic::UNIT
            } else {
                rules.params_for(rule, o)
            };
            let checks = cands.len();
            let memo = Memo::default();
            let outcomes: Vec<Outcome> = cands
                .into_par_iter()
                .map(|c| {
                    // Late events keep their own occurrence, and its parameters.
                    let late_params;
                    let params = if c.occurrence == o {
                        &params
                    } else {
                        late_params = rules.params_for(rule, c.occurrence);
                        &late_params
                    };
                    let occasion = Occasion {
                        rules,
                        rule,
                        pop,
                        subject: c.subject,
                        occurrence: c.occurrence,
                        today,
                        event: c.event.as_deref(),
                        params,
                    };
                    evaluate_subject_memo(&occasion, &mut None, Some(&memo))
                })
                .collect();
            let mut decisions = Vec::new();
            let mut failures = Vec::new();
            for out in outcomes {
                match out {
                    Outcome::Decision(d) => decisions.push(*d),
                    Outcome::Failed(f) => failures.push(*f),
                    Outcome::NotEligible(_) => {}
                }
            }
            // In key order here, on all threads: every key of the rule starts with "{id}/".
            decisions.par_sort_unstable_by(|a, b| a.key.cmp(&b.key));
            (decisions, failures, checks)
        })
        .collect();
    // The rules' decisions one after another, by their keys' "{id}/" prefix (a rule id is
    // no prefix of another's once the "/" is added), are all the day's in key order: a
    // quarter of a million decisions on April 1 are moved once instead of sorted again.
    per_rule.sort_by_cached_key(|(d, _, _)| d.first().map(|d| format!("{}/", d.rule)));
    let mut result = DayResult {
        decisions: Vec::with_capacity(per_rule.iter().map(|(d, _, _)| d.len()).sum()),
        ..DayResult::default()
    };
    for (d, f, c) in per_rule {
        result.decisions.extend(d);
        result.failures.extend(f);
        result.checks += c;
    }
    debug_assert!(result.decisions.is_sorted_by(|a, b| a.key < b.key));
    result
        .failures
        .sort_by(|a, b| (&a.rule, &a.resident).cmp(&(&b.rule, &b.resident)));
    result
}

/// What evaluating one subject against one rule gave.
#[derive(Debug)]
pub enum Outcome {
    Decision(Box<Decision>),
    NotEligible(String),
    Failed(Box<RuleFailure>),
}

/// One rule for one subject on one day: what `evaluate_subject` evaluates.
#[derive(Clone, Copy)]
pub struct Occasion<'a> {
    pub rules: &'a RuleSet,
    pub rule: &'a Rule,
    pub pop: &'a Population,
    /// The subject's position in the population.
    pub subject: usize,
    /// The milestone date or the event's date.
    pub occurrence: NaiveDate,
    /// The day the notice is made.
    pub today: NaiveDate,
    /// The event id, for event triggers.
    pub event: Option<&'a str>,
    /// The rule's `params` map for the occurrence (`RuleSet::params_for`).
    pub params: &'a Dynamic,
}

struct Ctx<'a> {
    rules: &'a RuleSet,
    rule: &'a Rule,
    pop: &'a Population,
    s: usize,
    o: NaiveDate,
    today: NaiveDate,
    event: Option<&'a str>,
    params: &'a Dynamic,
    deadline: Option<NaiveDate>,
    scope: Option<Scope<'static>>,
    /// Results of the rule's reusable scripts (see `Script::reusable`), for one day.
    memo: Option<&'a Memo>,
    /// No script of the rule changes its scope, so each script sees the scope as built.
    pure_rule: bool,
}

/// What a reusable script's result depends on: the script, the occurrence and the scalar
/// subject fields it reads (`None` for those it does not).
type MemoKey = (
    usize,
    NaiveDate,
    Option<NaiveDate>,
    Option<u8>,
    Option<&'static str>,
    Option<Option<NaiveDate>>,
);

/// Script results reused across the subjects of one rule on one day, shared by the threads
/// (subjects alike are spread over all of them).
#[derive(Default)]
struct Memo(std::sync::RwLock<std::collections::HashMap<MemoKey, Result<Dynamic, ScriptError>>>);

fn memo_key(s: &script::Script, r: &Resident, o: NaiveDate) -> MemoKey {
    use script::Fields;
    const BIRTH_DATE: Fields = Fields::of("birth_date");
    const SEX: Fields = Fields::of("sex");
    const STATUS: Fields = Fields::of("status");
    const STATUS_DATE: Fields = Fields::of("status_date");
    let f = s.subject_fields;
    (
        s as *const script::Script as usize,
        o,
        f.contains(BIRTH_DATE).then_some(r.birth_date),
        f.contains(SEX).then(|| u8::from(r.sex)),
        f.contains(STATUS).then(|| r.status.name()),
        f.contains(STATUS_DATE).then(|| r.status.date()),
    )
}

/// Whether no script of the rule can change the scope the scripts share.
fn rule_is_pure(rule: &Rule) -> bool {
    rule_scripts(rule).all(|s| s.pure)
}

fn rule_scripts(rule: &Rule) -> impl Iterator<Item = &script::Script> {
    rule.conditions
        .iter()
        .filter_map(|(_, c)| match c {
            Condition::Script(s) => Some(s),
            _ => None,
        })
        .chain(&rule.as_of)
        .chain(rule.prefill.iter().map(|(_, s)| s))
}

/// Runs the rule's `as_of` script and puts the parameters in force that day (and the day)
/// in the scope; without one, the occurrence's stand. A value that is no date is a failure
/// of the rule for this resident, never a silent default.
fn take_params_at(cx: &mut Ctx, trace: &mut Trace) -> Result<NaiveDate, Box<RuleFailure>> {
    let Some(s) = &cx.rule.as_of else {
        return Ok(cx.o);
    };
    let v = cx.run_script(s).map_err(|e| cx.fail("as_of", e.message))?;
    let Some(day) = script::to_date(&v) else {
        return Err(cx.fail(
            "as_of",
            format!(
                "`as_of` must give a date \"YYYY-MM-DD\", this gave {} ({v})",
                script::type_name(&v)
            ),
        ));
    };
    note(
        trace,
        "as_of",
        || format!("parameters taken on {day}"),
        None,
        Vec::new(),
    );
    if day != cx.o {
        let params = cx.rules.params_for(cx.rule, day);
        let scope = cx.scope();
        scope.set_value("params", params);
        scope.set_value("as_of", day.to_string());
    }
    Ok(day)
}

impl Ctx<'_> {
    fn subject(&self) -> &Resident {
        self.pop.get(self.s)
    }

    fn fail(&self, field: &str, message: String) -> Box<RuleFailure> {
        Box::new(RuleFailure {
            rule: self.rule.id.clone(),
            rule_version: self.rule.version,
            file: self.rule.source.file.clone(),
            line: self.rule.source.line_of(field),
            field: field.to_owned(),
            resident: self.subject().id.clone(),
            message,
        })
    }

    fn housemates(&self) -> Vec<usize> {
        self.pop.housemates(self.s, self.today)
    }

    fn householder(&self) -> Option<usize> {
        self.pop.householder(self.s, self.today)
    }

    fn scope(&mut self) -> &mut Scope<'static> {
        if self.scope.is_none() {
            let pop = self.pop;
            // Who reads the draft, worked out only when it may name a protected person.
            let readers = std::cell::OnceCell::new();
            let map_of = |j: usize| -> Dynamic {
                let r = pop.get(j);
                // The subject is covered by routing: a protected subject's notice goes to
                // nobody but them and their guardians (`resolve_audience`).
                if j == self.s || !r.support_measure {
                    return script::resident_map(r);
                }
                let readers = readers.get_or_init(|| resolve_audience(self, &mut None).0);
                if may_read_about(pop, j, readers) {
                    script::resident_map(r)
                } else {
                    script::resident_map_withheld(r)
                }
            };
            let maps = |ids: Vec<usize>| -> Dynamic {
                Dynamic::from_array(ids.into_iter().map(map_of).collect())
            };
            // Only the variables the rule's scripts name are built; the rest stay `()`.
            let needs = |v: &str| self.rule.script_vars.contains(&v);
            let mut scope = Scope::with_capacity(script::SCOPE_VARS.len());
            let mut push = |name: &'static str, value: &dyn Fn() -> Dynamic| {
                let v = if needs(name) { value() } else { Dynamic::UNIT };
                scope.push_dynamic(name, v);
            };
            push("subject", &|| {
                script::resident_map_with(self.subject(), subject_fields(self.rule))
            });
            push("household", &|| maps(self.housemates()));
            push("householder", &|| {
                self.householder().map_or(Dynamic::UNIT, map_of)
            });
            push("guardians", &|| {
                maps(
                    self.subject()
                        .guardians
                        .iter()
                        .filter_map(|g| pop.index_of(&g.id))
                        .collect(),
                )
            });
            push("occurrence", &|| self.o.to_string().into());
            push("today", &|| self.today.to_string().into());
            push("event", &|| match (self.event, self.rule.trigger) {
                (Some(id), Trigger::Event(kind)) => {
                    let mut m = rhai::Map::new();
                    m.insert("kind".into(), kind.name().into());
                    m.insert("date".into(), self.o.to_string().into());
                    m.insert("id".into(), id.into());
                    m.into()
                }
                _ => Dynamic::UNIT,
            });
            push("params", &|| self.params.clone());
            push("deadline", &|| {
                self.deadline
                    .map_or(Dynamic::UNIT, |d| d.to_string().into())
            });
            // The occurrence until the rule's `as_of` is computed (`take_params_at`).
            push("as_of", &|| self.o.to_string().into());
            push("draft", &|| rhai::Map::new().into());
            self.scope = Some(scope);
        }
        self.scope.as_mut().expect("just set")
    }

    fn run_script(&mut self, s: &script::Script) -> Result<Dynamic, ScriptError> {
        if self.pure_rule {
            if let Some(v) = s.subject_path_value(self.subject()) {
                return Ok(v);
            }
            // Under an `as_of` the parameters differ by subject: not in the memo key.
            if s.reusable && self.rule.as_of.is_none() {
                let key = memo_key(s, self.subject(), self.o);
                let read = |m: &Memo| {
                    let map = m.0.read().unwrap_or_else(|e| e.into_inner());
                    map.get(&key).cloned()
                };
                if let Some(hit) = self.memo.and_then(read) {
                    return hit;
                }
                let out = self.run_in_scope(s);
                if let Some(m) = self.memo {
                    let mut map = m.0.write().unwrap_or_else(|e| e.into_inner());
                    map.insert(key, out.clone());
                }
                return out;
            }
        }
        self.run_in_scope(s)
    }

    fn run_in_scope(&mut self, s: &script::Script) -> Result<Dynamic, ScriptError> {
        let engine = self.rules.engine.clone();
        let scope = self.scope();
        // Scripts may declare variables; each run starts from the same eight.
        let len = scope.len();
        let out = engine.run(s, scope);
        scope.rewind(len);
        out
    }
}

/// The fields of `subject` that any of the rule's scripts can read (they share one scope).
fn subject_fields(rule: &Rule) -> script::Fields {
    rule_scripts(rule).fold(script::Fields::NONE, |f, s| f.union(s.subject_fields))
}

/// Paths a script reads from `subject`, for the explain trace.
fn inputs_read(source: &str, subject: &Dynamic) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("subject.") {
        let tail = &rest[i + "subject.".len()..];
        let path: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        let path = path.trim_end_matches('.').to_owned();
        let mut v = subject.clone();
        for part in path.split('.') {
            v = v
                .clone()
                .try_cast::<rhai::Map>()
                .and_then(|m| m.get(part).cloned())
                .unwrap_or(Dynamic::UNIT);
        }
        // Said as the attribute conditions say it, not as an empty string.
        let shown = if v.is_unit() {
            "(missing)".to_owned()
        } else {
            v.to_string()
        };
        let entry = (format!("subject.{path}"), shown);
        if !out.contains(&entry) {
            out.push(entry);
        }
        rest = &tail[path.len()..];
    }
    for var in ["household", "householder", "guardians", "params", "event"] {
        if script::mentions(source, var) {
            out.push((var.to_owned(), "(read)".to_owned()));
        }
    }
    out
}

fn check_condition(
    cx: &mut Ctx,
    field: &str,
    c: &Condition,
    trace: &mut Trace,
) -> Result<bool, Box<RuleFailure>> {
    let subject = cx.subject();
    let tracing = trace.is_some();
    let attr = |a: &str| {
        if !tracing {
            return Vec::new();
        }
        vec![(
            format!("subject.attributes.{a}"),
            subject
                .attributes
                .get(a)
                .map_or("(missing)".to_owned(), |v| v.to_string()),
        )]
    };
    let (value, inputs) = match c {
        Condition::Attribute(a) => (subject.flag(a), attr(a)),
        Condition::NotAttribute(a) => (!subject.flag(a), attr(a)),
        Condition::AttributeEquals(a, v) => (subject.attributes.get(a) == Some(v), attr(a)),
        Condition::Sex(s) => {
            let code = u8::from(subject.sex);
            let want = match s {
                SexIs::Male => 1,
                SexIs::Female => 2,
            };
            (
                code == want,
                vec![("subject.sex".to_owned(), code.to_string())],
            )
        }
        Condition::Age(r) => {
            let b = subject.birth_date;
            let (age, on) = match r.on {
                AgeOn::Occurrence => (calendar::age_on(b, cx.o), format!("on {}", cx.o)),
                AgeOn::Notify => (calendar::age_on(b, cx.today), format!("on {}", cx.today)),
                AgeOn::FiscalYearEnd => {
                    let fy = calendar::fiscal_year(cx.o);
                    (calendar::fy_end_age(b, fy), format!("at the end of FY{fy}"))
                }
            };
            let ok = r.min.is_none_or(|m| age >= m) && r.max.is_none_or(|m| age <= m);
            (
                ok,
                vec![
                    ("subject.birth_date".to_owned(), b.to_string()),
                    (format!("age {on}"), age.to_string()),
                ],
            )
        }
        Condition::HouseholdRemaining(r) => {
            let n = cx.housemates().len();
            let ok = r.min.is_none_or(|m| n >= m) && r.max.is_none_or(|m| n <= m);
            (
                ok,
                vec![("other members on the register".to_owned(), n.to_string())],
            )
        }
        Condition::Script(s) => {
            let field = || format!("{field}.script");
            let v = cx.run_script(s).map_err(|e| cx.fail(&field(), e.message))?;
            let inputs = if trace.is_some() {
                inputs_read(&s.source, &script::resident_map(cx.subject()))
            } else {
                Vec::new()
            };
            match v.as_bool() {
                Ok(b) => (b, inputs),
                Err(_) => {
                    return Err(cx.fail(
                        &field(),
                        format!(
                            "a condition must return true or false, this returned {} ({v})",
                            script::type_name(&v)
                        ),
                    ))
                }
            }
        }
    };
    note(trace, "condition", || c.describe(), Some(value), inputs);
    Ok(value)
}

/// Resolves the audience into recipients, or the reason staff must step in.
///
/// Support measures (支援措置, docs/support-measures.md) hold for everyone a notice is routed
/// through: a protected person is told directly, or as a minor through their own guardians,
/// never through the householder, other household members or proxies.
fn resolve_audience(cx: &Ctx, trace: &mut Trace) -> (Vec<(usize, Role)>, Option<String>) {
    let pop = cx.pop;
    let today = cx.today;
    let s = cx.s;
    let subject = cx.subject();
    let protected = |i: usize| pop.get(i).support_measure;
    // Each recipient with the person whose affairs they are told about: a minor survivor
    // for that minor's guardian, the survivor themself, otherwise the subject. A proxy
    // stands in for both, so both must be free of a support measure (`Audience::Proxies`).
    let mut out: Vec<(usize, Role, usize)> = Vec::new();
    // Routes not taken: whose support measure, and which route.
    let mut suppressed: Vec<(usize, &'static str)> = Vec::new();
    // A protected person's guardians living elsewhere are left out: the measure may well
    // protect the child from one of them (a parent the other parent fled with the child).
    let guardians_of = |i: usize, suppressed: &mut Vec<(usize, &'static str)>| -> Vec<usize> {
        let listed: Vec<usize> = pop
            .get(i)
            .guardians
            .iter()
            .filter_map(|g| pop.index_of(&g.id))
            .filter(|&g| pop.get(g).reachable_on(today))
            .collect();
        let n = listed.len();
        let g: Vec<usize> = listed
            .into_iter()
            .filter(|&g| may_stand_in_for(pop, g, i))
            .collect();
        if g.len() < n {
            suppressed.push((i, "guardians outside their household"));
        }
        g
    };
    let is_minor = |i: usize| calendar::age_on(pop.get(i).birth_date, today) < ADULT_AGE;
    let householder = |suppressed: &mut Vec<(usize, &'static str)>| -> Option<usize> {
        if protected(s) {
            suppressed.push((s, "householder"));
            return None;
        }
        cx.householder().filter(|&h| h != s)
    };
    // Proxies stand in for the recipients the other routes found: those routes go first,
    // whatever order the rule lists them in.
    let (proxies, routes): (Vec<&Audience>, Vec<&Audience>) = cx
        .rule
        .audience
        .iter()
        .partition(|a| **a == Audience::Proxies);
    for a in routes.into_iter().chain(proxies) {
        match a {
            Audience::Subject | Audience::Guardians => {
                let direct = *a == Audience::Subject;
                if direct && !subject.on_register(today) {
                    continue;
                }
                if direct && !is_minor(s) {
                    out.push((s, Role::Subject, s));
                    continue;
                }
                let g = guardians_of(s, &mut suppressed);
                if g.is_empty() {
                    out.extend(householder(&mut suppressed).map(|h| (h, Role::Householder, s)));
                }
                out.extend(g.into_iter().map(|g| (g, Role::Guardian, s)));
            }
            Audience::Householder => {
                out.extend(householder(&mut suppressed).map(|h| (h, Role::Householder, s)));
            }
            Audience::Spouse => {
                if protected(s) {
                    suppressed.push((s, "spouse"));
                    continue;
                }
                out.extend(pop.spouse(s, today).map(|j| (j, Role::Spouse, s)));
            }
            Audience::Survivors => {
                if protected(s) {
                    suppressed.push((s, "survivors"));
                    continue;
                }
                for j in cx.housemates() {
                    if !is_minor(j) {
                        out.push((j, Role::Survivor, j));
                        continue;
                    }
                    let g: Vec<usize> = guardians_of(j, &mut suppressed)
                        .into_iter()
                        .filter(|&g| g != s)
                        .collect();
                    if g.is_empty() && protected(j) {
                        // Nobody else in the household may stand in for a protected child.
                        suppressed.push((j, "the household (a minor with no living guardian)"));
                    }
                    out.extend(g.into_iter().map(|g| (g, Role::Guardian, j)));
                }
            }
            Audience::Proxies => {
                if protected(s) {
                    suppressed.push((s, "proxies"));
                    continue;
                }
                let category = cx.rule.category.name();
                let mut principals: Vec<(usize, usize)> =
                    out.iter().map(|&(i, _, about)| (i, about)).collect();
                if subject.on_register(today) {
                    principals.push((s, s));
                }
                // A principal told about anyone protected (themself, or a child they are the
                // guardian of) has no proxy added, whatever else they are told as.
                let barred: Vec<(usize, usize)> = principals
                    .iter()
                    .copied()
                    .filter(|&(p, about)| protected(p) || protected(about))
                    .collect();
                let mut done = Vec::new();
                for (p, about) in principals {
                    if done.contains(&p) {
                        continue;
                    }
                    done.push(p);
                    let proxies: Vec<usize> = pop
                        .get(p)
                        .proxies
                        .iter()
                        .filter(|proxy| proxy.covers(category, today))
                        .filter_map(|proxy| pop.index_of(&proxy.id))
                        .filter(|&j| pop.get(j).reachable_on(today))
                        .collect();
                    if proxies.is_empty() {
                        continue;
                    }
                    if let Some(&(q, whose)) = barred.iter().find(|(q, _)| *q == p) {
                        let whose = if protected(q) { q } else { whose };
                        suppressed.push((whose, "proxies"));
                        continue;
                    }
                    out.extend(proxies.into_iter().map(|j| (j, Role::Proxy, about)));
                }
            }
        }
    }
    // Nobody deceased or moved out; each person once, with the first role found.
    let mut seen = std::collections::HashSet::new();
    out.retain(|(i, _, _)| pop.get(*i).reachable_on(today) && seen.insert(*i));
    // A protected subject's draft names them: only they and their guardians may read it,
    // whatever route a rule adds (the routes above already keep to that).
    if protected(s) {
        let before = out.len();
        out.retain(|&(i, _, _)| i == s || may_stand_in_for(pop, i, s));
        if out.len() < before {
            suppressed.push((s, "anyone but the subject and their guardians"));
        }
    }
    // A protected person other than the subject for whom nobody is told (a child whose
    // guardians all live elsewhere): staff must reach them, even when others are told.
    let unreached: Vec<(usize, &str)> = suppressed
        .iter()
        .copied()
        .filter(|&(p, _)| p != s && !out.iter().any(|&(i, _, about)| i == p || about == p))
        .collect();
    let out: Vec<(usize, Role)> = out.into_iter().map(|(i, r, _)| (i, r)).collect();
    let detail = || {
        let mut d = out
            .iter()
            .map(|(i, r)| format!("{}（{}）", pop.get(*i).id, r.describe()))
            .collect::<Vec<_>>()
            .join(", ");
        if !suppressed.is_empty() {
            d.push_str("; ");
            d.push_str(&support_measure_reason(cx, &suppressed));
        }
        d
    };
    let staff = if out.is_empty() {
        Some(if !suppressed.is_empty() {
            support_measure_reason(cx, &suppressed)
        } else if cx.rule.trigger == Trigger::Event(EventKind::Death) && cx.housemates().is_empty()
        {
            "the deceased lived alone: no survivor on the register; use a counter or paper channel"
                .to_owned()
        } else {
            "nobody on the register can receive this notice".to_owned()
        })
    } else if !unreached.is_empty() {
        Some(support_measure_reason(cx, &unreached))
    } else {
        None
    };
    // Beside whom it reached, what each audience the rule names means.
    let meaning = if trace.is_some() {
        let audience = cx.rule.audience.iter();
        audience
            .map(|a| (a.name().to_owned(), a.describe()))
            .collect()
    } else {
        Vec::new()
    };
    note(
        trace,
        "audience",
        || match &staff {
            Some(reason) if out.is_empty() => format!("nobody: {reason}"),
            _ => detail(),
        },
        None,
        meaning,
    );
    (out, staff)
}

/// Whether `g` may be told about `i` as their guardian: listed in `i`'s `guardians`, and,
/// when `i` is under a support measure, living in `i`'s household.
fn may_stand_in_for(pop: &Population, g: usize, i: usize) -> bool {
    let (guardian, person) = (pop.get(g), pop.get(i));
    let listed = person
        .guardians
        .iter()
        .any(|x| pop.index_of(&x.id) == Some(g));
    listed
        && (!person.support_measure
            || guardian
                .household_id()
                .is_some_and(|h| Some(h) == person.household_id()))
}

/// Whether everyone who reads the draft may read about protected person `j`: `j` themself
/// and the guardians who may stand in for them. With nobody to tell, only staff read it.
fn may_read_about(pop: &Population, j: usize, readers: &[(usize, Role)]) -> bool {
    readers
        .iter()
        .all(|&(i, _)| i == j || may_stand_in_for(pop, i, j))
}

/// The staff reason for routes not taken: per protected person, which routes, and whom
/// staff must contact. Ids only: the reason is stored and read by staff.
fn support_measure_reason(cx: &Ctx, suppressed: &[(usize, &str)]) -> String {
    let mut people: Vec<usize> = Vec::new();
    for &(p, _) in suppressed {
        if !people.contains(&p) {
            people.push(p);
        }
    }
    let death = cx.rule.trigger == Trigger::Event(EventKind::Death);
    let parts: Vec<String> = people
        .into_iter()
        .map(|p| {
            let mut routes: Vec<&str> = Vec::new();
            for &(q, r) in suppressed {
                if q == p && !routes.contains(&r) {
                    routes.push(r);
                }
            }
            let routes = routes.join(", ");
            if p == cx.s {
                return format!(
                    "routing through {routes} is suppressed; contact the subject through staff"
                );
            }
            let who = if death { "survivor" } else { "resident" };
            format!(
                "routing through {routes} is suppressed for {who} {}; contact them through staff",
                cx.pop.get(p).id
            )
        })
        .collect();
    format!("support measure (支援措置): {}", parts.join("; "))
}

/// The due date, and the last day of the period when the due date was moved off a closed
/// day (地方自治法4条の2第4項).
fn compute_deadline(cx: &Ctx) -> Option<(NaiveDate, Option<NaiveDate>)> {
    let b = cx.subject().birth_date;
    Some(match cx.rule.deadline? {
        Deadline::Period {
            period,
            counting,
            from,
            shift,
        } => {
            let start = match from {
                DeadlineFrom::Occurrence => cx.o,
                DeadlineFrom::Notify => cx.today,
            };
            let last_day = calendar::due_date(start, period, counting);
            let due = cx.rules.deadline_policy.due(last_day, shift);
            (due, (due != last_day).then_some(last_day))
        }
        Deadline::BeforeAge(n) => (calendar::attain(b, n as i32), None),
        Deadline::BeforeAgeMonths(m) => (
            calendar::add_days(calendar::month_anniversary(b, m), -1),
            None,
        ),
        Deadline::FiscalYearEnd => (calendar::fiscal_year_end(calendar::fiscal_year(cx.o)), None),
    })
}

/// What a notice says when its deadline was moved off a closed day, in each language.
fn moved_deadline_note(
    last_day: NaiveDate,
    due: NaiveDate,
    style: wording::DateStyle,
) -> (String, String) {
    (
        format!(
            "\n\n※期限の末日（{}）が閉庁日にあたるため、期限は翌開庁日の{}です（地方自治法第4条の2）。",
            wording::date(last_day, style),
            wording::date(due, style)
        ),
        format!(
            "\n\nThe period ends on {last_day}, a day the offices are closed, so the deadline is the next open day, {due}."
        ),
    )
}

/// Evaluates one subject for one rule on one day, noting each step in `trace` when given
/// (`explain`).
pub fn evaluate_subject(occasion: &Occasion, trace: &mut Trace) -> Outcome {
    evaluate_subject_memo(occasion, trace, None)
}

/// `evaluate_subject`, reusing script results across a day's subjects through `memo`.
fn evaluate_subject_memo(occasion: &Occasion, trace: &mut Trace, memo: Option<&Memo>) -> Outcome {
    let &Occasion {
        rules,
        rule,
        pop,
        subject: s,
        occurrence: o,
        today,
        event,
        params,
    } = occasion;
    let mut cx = Ctx {
        rules,
        rule,
        pop,
        s,
        o,
        today,
        event,
        params,
        deadline: None,
        scope: None,
        memo,
        pure_rule: rule_is_pure(rule),
    };
    let subject = pop.get(s);
    let tracing = trace.is_some();
    if !rule.valid.contains(o) {
        let why = format!(
            "occurrence {o} is outside the rule's validity ({})",
            rule.valid.describe()
        );
        note(trace, "validity", || why.clone(), Some(false), Vec::new());
        return Outcome::NotEligible(why);
    }
    note(
        trace,
        "validity",
        || {
            format!(
                "occurrence {o} is within the rule's validity ({})",
                rule.valid.describe()
            )
        },
        Some(true),
        Vec::new(),
    );
    let status_ok = match rule.trigger {
        Trigger::Event(EventKind::Death) => matches!(subject.status, Status::Deceased { .. }),
        Trigger::Event(EventKind::MoveOut) => matches!(subject.status, Status::MovedOut { .. }),
        _ => subject.on_register(today),
    };
    let status = || format!("status {} on {today}", subject.status.name());
    note(trace, "register", status, Some(status_ok), Vec::new());
    if !status_ok {
        return Outcome::NotEligible(format!("{}: not a subject", status()));
    }
    // Scripts may read the deadline, and the parameters of the rule's `as_of` day.
    let (deadline, deadline_moved_from) = compute_deadline(&cx).unzip();
    let deadline_moved_from = deadline_moved_from.flatten();
    cx.deadline = deadline;
    let as_of = match take_params_at(&mut cx, trace) {
        Ok(day) => day,
        Err(f) => return failed(trace, f),
    };
    for (field, c) in &rule.conditions {
        match check_condition(&mut cx, field, c, trace) {
            Ok(true) => {}
            Ok(false) => {
                // The reason is only read by `explain`; daily runs skip the formatting.
                let why = if tracing {
                    format!("condition not met: {}", c.describe())
                } else {
                    String::new()
                };
                return Outcome::NotEligible(why);
            }
            Err(f) => return failed(trace, f),
        }
    }
    for name in rule.params_used.iter().filter(|_| tracing) {
        if let Some(p) = rules.params.0.get(name) {
            let detail = match p.effective_with_origin(as_of) {
                Some((from, v, origin)) => format!(
                    "{name} = {v} (in force from {from}; {} layer, {}; {})",
                    origin.layer, origin.file, origin.description
                ),
                None => format!("{name}: no value in force on {as_of}"),
            };
            note(trace, "parameter", || detail, None, Vec::new());
        }
    }
    let (recipients, staff_review) = resolve_audience(&cx, trace);
    let urgent = deadline.is_some_and(|d| d < today);
    note(
        trace,
        "deadline",
        || match (deadline, deadline_moved_from) {
            (None, _) => "none".to_owned(),
            (Some(d), None) => d.to_string(),
            (Some(d), Some(last)) => format!("{d} (the period ends on {last}, a closed day)"),
        },
        None,
        Vec::new(),
    );
    let mut prefill = IndexMap::new();
    for (name, s) in &rule.prefill {
        // Only a failure names the field: daily runs skip building it.
        let field = || format!("prefill.{name}");
        let v = match cx.run_script(s) {
            Ok(v) => v,
            Err(e) => return failed(trace, cx.fail(&field(), e.message)),
        };
        if rule.script_vars.contains(&"draft") {
            let scope = cx.scope();
            let mut draft = scope.get_value::<rhai::Map>("draft").unwrap_or_default();
            draft.insert(name.as_str().into(), v.clone());
            scope.set_value("draft", draft);
        }
        match script::to_json(&v) {
            Ok(j) => {
                prefill.insert(name.clone(), j);
            }
            Err(e) => {
                return failed(
                    trace,
                    cx.fail(&field(), format!("value cannot go in a draft: {e}")),
                )
            }
        }
    }
    // The template context: the draft fields and the built-ins (which win over a draft field
    // of the same name), converted once; each language only adds its title in front.
    #[derive(Serialize)]
    struct TemplateCtx<'a> {
        #[serde(flatten)]
        prefill: &'a IndexMap<String, serde_json::Value>,
        occurrence: String,
        deadline: String,
        today: String,
        deadline_passed: bool,
        as_of: String,
        date_style: &'static str,
    }
    let style = rules.date_style(today);
    let base = minijinja::Value::from(minijinja::value::Serde(TemplateCtx {
        prefill: &prefill,
        occurrence: o.to_string(),
        deadline: deadline.map_or(String::new(), |d| d.to_string()),
        today: today.to_string(),
        deadline_passed: urgent,
        as_of: as_of.to_string(),
        date_style: style.name(),
    }));
    let render = |lang: &str, title: &str| -> Result<Option<String>, Box<RuleFailure>> {
        let value = minijinja::context! { title => title, ..base.clone() };
        rules
            .render(rule, lang, &value)
            .map_err(|e| cx.fail(&format!("message.{lang}"), format!("template failed: {e}")))
    };
    let mut ja = match render("ja", &rule.title.ja) {
        Ok(m) => m.unwrap_or_default(),
        Err(f) => return failed(trace, f),
    };
    let mut en = match render("en", rule.title.en.as_deref().unwrap_or(&rule.title.ja)) {
        Ok(m) => m,
        Err(f) => return failed(trace, f),
    };
    // Said once here, so that every channel and every rule tells a moved deadline alike.
    if let (Some(due), Some(last)) = (deadline, deadline_moved_from) {
        let (note_ja, note_en) = moved_deadline_note(last, due, style);
        ja.push_str(&note_ja);
        if let Some(en) = &mut en {
            en.push_str(&note_en);
        }
    }
    let occurrence_part = event.map_or_else(|| o.to_string(), str::to_owned);
    let decision = Decision {
        key: DecisionKey::new(&rule.id, &subject.id, &occurrence_part),
        rule: rule.id.clone(),
        rule_version: rule.version,
        category: rule.category,
        subject: subject.id.clone(),
        occurrence: o,
        event_id: event.map(str::to_owned),
        notify_on: today,
        deadline,
        deadline_moved_from,
        recipients: recipients
            .into_iter()
            .map(|(i, role)| {
                let r = pop.get(i);
                Recipient {
                    id: r.id.clone(),
                    role,
                    channels: r.reachable_channels(&rule.channels, rule.critical),
                }
            })
            .collect(),
        staff_review,
        prefill,
        form: rule.form.clone(),
        application: rule.application.clone().unwrap_or_default(),
        contact: rule
            .department
            .as_deref()
            .and_then(|d| rules.contact(d, today)),
        recommend: rule.recommend.clone(),
        legal_basis: rule.legal_basis.clone(),
        title: if urgent {
            Titles {
                ja: format!("{}{}", URGENT_MARK.0, rule.title.ja),
                en: rule
                    .title
                    .en
                    .as_ref()
                    .map(|t| format!("{}{t}", URGENT_MARK.1)),
            }
        } else {
            rule.title.clone()
        },
        message: RenderedMessages { ja, en },
        channels: rule.channels.clone(),
        critical: rule.critical,
        urgent,
    };
    Outcome::Decision(Box::new(decision))
}
