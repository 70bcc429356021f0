//! Rule test cases as data (`rules/tests/*.yaml`): residents inline, a day, the decisions
//! expected. Used by `oshirase rules test` and by `cargo test`.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::NaiveDate;
use indexmap::IndexMap;
use serde::Deserialize;

use crate::catalogue::{locate, LoadError, RuleSet};
use crate::eval::{evaluate_day, Decision};
use crate::ids::{ResidentId, RuleId};
use crate::population::{EventKind, LifeEvent, Population};
use crate::resident::Resident;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    rules: Vec<RuleId>,
    #[serde(default)]
    defaults: Option<serde_json::Value>,
    cases: Vec<CaseDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDoc {
    name: String,
    date: NaiveDate,
    residents: Vec<serde_json::Value>,
    #[serde(default)]
    events: Vec<EventDoc>,
    /// Parameter values for this case only, in force on every date.
    #[serde(default)]
    parameters: IndexMap<String, serde_json::Value>,
    expect: Vec<Expected>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventDoc {
    kind: EventKind,
    subject: ResidentId,
    date: NaiveDate,
    #[serde(default)]
    recorded: Option<NaiveDate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    rule: RuleId,
    subject: ResidentId,
    #[serde(default)]
    recipients: Option<Vec<ResidentId>>,
    #[serde(default)]
    occurrence: Option<NaiveDate>,
    #[serde(default)]
    deadline: Option<NaiveDate>,
    /// The period's last day when the deadline was moved off a closed day; `null` for none.
    #[serde(default, deserialize_with = "some_or_null")]
    deadline_moved_from: Option<Option<NaiveDate>>,
    #[serde(default)]
    staff_review: Option<bool>,
    /// Whether the deadline had passed on the notice day (the title is marked urgent).
    #[serde(default)]
    urgent: Option<bool>,
    /// Text the Japanese message must contain.
    #[serde(default)]
    message_contains: Option<String>,
    #[serde(default)]
    prefill: Option<IndexMap<String, serde_json::Value>>,
}

/// A field that may be absent (no expectation), `null` (expected none) or a value.
fn some_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub line: usize,
    pub name: String,
    /// Empty when the case passed.
    pub differences: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// All results, plus test files that could not be read at all.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: Vec<CaseResult>,
    pub errors: Vec<LoadError>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.failed() == 0 && !self.cases.is_empty()
    }
}

/// Deep-merges `defaults` under `value` (the value wins).
fn merge(defaults: &serde_json::Value, value: &serde_json::Value) -> serde_json::Value {
    match (defaults, value) {
        (serde_json::Value::Object(d), serde_json::Value::Object(v)) => {
            let mut out = d.clone();
            for (k, vv) in v {
                let merged = match d.get(k) {
                    Some(dv) => merge(dv, vv),
                    None => vv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            serde_json::Value::Object(out)
        }
        (_, v) => v.clone(),
    }
}

fn compare(exp: &Expected, got: &Decision) -> Vec<String> {
    let mut diffs = Vec::new();
    let who = format!("{} for {}", exp.rule, exp.subject);
    if let Some(o) = exp.occurrence {
        if o != got.occurrence {
            diffs.push(format!(
                "{who}: occurrence expected {o}, got {}",
                got.occurrence
            ));
        }
    }
    if let Some(d) = exp.deadline {
        if Some(d) != got.deadline {
            diffs.push(format!(
                "{who}: deadline expected {d}, got {}",
                got.deadline.map_or("none".to_owned(), |d| d.to_string())
            ));
        }
    }
    if let Some(want) = exp.deadline_moved_from {
        if want != got.deadline_moved_from {
            let show = |d: Option<NaiveDate>| d.map_or("not moved".to_owned(), |d| d.to_string());
            diffs.push(format!(
                "{who}: deadline moved from expected {}, got {}",
                show(want),
                show(got.deadline_moved_from)
            ));
        }
    }
    if let Some(want) = exp.staff_review {
        if want != got.staff_review.is_some() {
            diffs.push(format!(
                "{who}: staff_review expected {want}, got {}",
                got.staff_review.as_deref().unwrap_or("false")
            ));
        }
    }
    if let Some(want) = exp.urgent {
        if want != got.urgent {
            diffs.push(format!("{who}: urgent expected {want}, got {}", got.urgent));
        }
    }
    if let Some(want) = &exp.message_contains {
        if !got.message.ja.contains(want.as_str()) {
            diffs.push(format!(
                "{who}: the message does not contain {want:?}: {}",
                got.message.ja
            ));
        }
    }
    if let Some(want) = &exp.recipients {
        let want: BTreeSet<&str> = want.iter().map(ResidentId::as_str).collect();
        let have: BTreeSet<&str> = got.recipients.iter().map(|r| r.id.as_str()).collect();
        if want != have {
            diffs.push(format!("{who}: recipients expected {want:?}, got {have:?}"));
        }
    }
    if let Some(fields) = &exp.prefill {
        for (k, v) in fields {
            match got.prefill.get(k) {
                Some(g) if g == v => {}
                Some(g) => diffs.push(format!("{who}: prefill.{k} expected {v}, got {g}")),
                None => diffs.push(format!(
                    "{who}: prefill.{k} expected {v}, but the draft has no such field"
                )),
            }
        }
    }
    diffs
}

fn run_case(
    rules: &RuleSet,
    file: &str,
    text: &str,
    idx: usize,
    defaults: &serde_json::Value,
    case: CaseDoc,
) -> CaseResult {
    let line = locate(text, &format!("cases[{idx}]"));
    let mut result = CaseResult {
        file: file.to_owned(),
        line,
        name: case.name.clone(),
        differences: Vec::new(),
    };
    if !crate::calendar::supported(case.date) {
        result
            .differences
            .push(format!("date {} is outside the supported years", case.date));
        return result;
    }
    let mut residents: Vec<Resident> = Vec::new();
    for (j, raw) in case.residents.iter().enumerate() {
        let merged = merge(defaults, raw);
        match serde_path_to_error::deserialize::<_, Resident>(merged) {
            Ok(r) => residents.push(r),
            Err(e) => result.differences.push(format!(
                "resident {j} (line {}): field `{}`: {}",
                locate(text, &format!("cases[{idx}].residents[{j}]")),
                e.path(),
                e.inner()
            )),
        }
    }
    if !result.differences.is_empty() {
        return result;
    }
    let events = case
        .events
        .into_iter()
        .map(|e| LifeEvent::new(e.kind, e.subject, e.date, e.recorded))
        .collect();
    let mut rules = rules.clone();
    if !case.parameters.is_empty() {
        let mut params = (*rules.params).clone();
        for (name, value) in &case.parameters {
            match params.0.get_mut(name) {
                Some(p) => p.set_everywhere(value.clone()),
                None => result.differences.push(format!(
                    "parameters: no parameter {name:?} in the catalogue"
                )),
            }
        }
        match rules.with_parameters(params) {
            Ok(r) => rules = r,
            Err(errors) => result.differences.extend(
                errors
                    .into_iter()
                    .map(|e| format!("parameters: {}", e.message)),
            ),
        }
    }
    if !result.differences.is_empty() {
        return result;
    }
    let lines = vec![line; residents.len()];
    let pop = match Population::build(residents, &lines, file, events) {
        Ok(p) => p,
        Err(e) => {
            result
                .differences
                .extend(e.0.iter().map(|e| format!("residents: {e}")));
            return result;
        }
    };
    let day = evaluate_day(&rules, &pop, case.date);
    for f in &day.failures {
        result.differences.push(format!("rule failed: {f}"));
    }
    // A resident reads dates and amounts as a letter writes them, never as a machine does.
    for d in &day.decisions {
        if let Some(raw) = crate::wording::machine_written(&d.message.ja) {
            result.differences.push(format!(
                "{}: message.ja writes {raw:?} as a machine does; use the date, month or yen filter \
                 ({{{{ deadline | date }}}}, {{{{ amount | yen }}}})",
                d.key
            ));
        }
    }
    let mut unmatched: Vec<&Decision> = day.decisions.iter().collect();
    for exp in &case.expect {
        let pos = unmatched.iter().position(|d| {
            d.rule == exp.rule
                && d.subject == exp.subject
                && exp.occurrence.is_none_or(|o| o == d.occurrence)
        });
        match pos {
            Some(p) => {
                let got = unmatched.remove(p);
                result.differences.extend(compare(exp, got));
            }
            None => result.differences.push(format!(
                "expected a decision of {} for {} on {}, got none",
                exp.rule, exp.subject, case.date
            )),
        }
    }
    for d in unmatched {
        result.differences.push(format!(
            "unexpected decision {} (occurrence {}, recipients {:?})",
            d.key,
            d.occurrence,
            d.recipients
                .iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
        ));
    }
    result
}

/// Runs every `*.yaml` case file in `dir` against `rules`.
pub fn run_dir(rules: &RuleSet, dir: &Path) -> Report {
    let mut report = Report::default();
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect(),
        Err(e) => {
            report.errors.push(LoadError {
                file: dir.display().to_string(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
                hint: Some("rule tests live in rules/tests/".into()),
            });
            return report;
        }
    };
    files.sort();
    let mut sources = Vec::new();
    for path in files {
        let file = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(t) => sources.push((file, t)),
            Err(e) => report.errors.push(LoadError {
                file,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
                hint: None,
            }),
        }
    }
    let mut rest = run_sources(rules, &sources);
    report.errors.append(&mut rest.errors);
    report.cases.append(&mut rest.cases);
    report
}

/// Runs the cases of test files given as (file name, text), in that order.
pub fn run_sources(rules: &RuleSet, sources: &[(String, String)]) -> Report {
    let mut report = Report::default();
    for (file, text) in sources {
        let (file, text) = (file.clone(), text.clone());
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        let doc: TestFile = match serde_path_to_error::deserialize(de) {
            Ok(d) => d,
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let (line, column) = inner.location().map_or((1, 1), |l| (l.line(), l.column()));
                report.errors.push(LoadError {
                    file,
                    line,
                    column,
                    field: path,
                    message: inner.to_string(),
                    hint: Some("see the test case format in rules/README.md".into()),
                });
                continue;
            }
        };
        let subset = match rules.only(&doc.rules) {
            Ok(s) => s,
            Err(missing) => {
                report.errors.push(LoadError {
                    line: locate(&text, "rules"),
                    file,
                    column: 1,
                    field: "rules".into(),
                    message: format!("no rule with id {:?}", missing.as_str()),
                    hint: None,
                });
                continue;
            }
        };
        let defaults = doc
            .defaults
            .unwrap_or(serde_json::Value::Object(Default::default()));
        for (i, case) in doc.cases.into_iter().enumerate() {
            report
                .cases
                .push(run_case(&subset, &file, &text, i, &defaults, case));
        }
    }
    report
}
