//! Loading a rules folder into a compiled `RuleSet`: every file parsed, every error collected
//! with file, line, column, field and hint, and nothing returned unless all of it is sound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use indexmap::IndexMap;
use rhai::{Dynamic, Scope};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::calendar::{self, ClosedDays, Counting, DeadlinePolicy, MonthDay, Period, Shift};
use crate::ids::RuleId;
pub use crate::layers::{Layer, LayerSources};
use crate::population::EventKind;
use crate::rule::*;
use crate::script::{self, ScriptEngine, SCOPE_VARS};
use crate::wording::{self, DateStyle};

/// Variables every message template may use besides the prefill fields.
pub const TEMPLATE_BUILTINS: [&str; 7] = [
    "title",
    "occurrence",
    "deadline",
    "today",
    // Whether the deadline was over on the notice day: the message must not offer a closed
    // window.
    "deadline_passed",
    "as_of",
    // How the municipality writes years, for the `date` and `month` filters.
    "date_style",
];

/// One problem in the rules folder, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found while loading.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        write!(f, "{} error(s); no rule was loaded", self.0.len())
    }
}

/// A municipal value with effective dates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterDoc {
    description: String,
    values: Vec<ParameterValueDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterValueDoc {
    from: NaiveDate,
    value: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Parameter {
    /// Sorted by start date; never empty.
    pub values: Vec<(NaiveDate, serde_json::Value)>,
    /// Where each of `values` was written, in the same order: the last is the topmost
    /// definition's, whose values are always the latest.
    pub origins: Vec<ValueOrigin>,
}

/// Where a parameter value was written: the file, its place in the file's `values`, and the
/// catalogue layer of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueOrigin {
    pub file: String,
    pub index: usize,
    pub layer: Layer,
    /// The description written with it.
    pub description: String,
}

impl Parameter {
    /// The value in force on `on`, with the date it took effect.
    pub fn effective(&self, on: NaiveDate) -> Option<(NaiveDate, &serde_json::Value)> {
        self.effective_with_origin(on).map(|(f, v, _)| (f, v))
    }

    /// The value in force on `on`, with the date it took effect and where it was written.
    pub fn effective_with_origin(
        &self,
        on: NaiveDate,
    ) -> Option<(NaiveDate, &serde_json::Value, &ValueOrigin)> {
        let i = self.values.iter().rposition(|(from, _)| *from <= on)?;
        Some((self.values[i].0, &self.values[i].1, &self.origins[i]))
    }

    /// Where the topmost definition was written: its file, layer and description.
    pub fn topmost(&self) -> &ValueOrigin {
        self.origins
            .last()
            .expect("a parameter has at least one value")
    }

    /// One value in force on every date (a rule test case's parameter), written where the
    /// topmost definition is.
    pub fn set_everywhere(&mut self, value: serde_json::Value) {
        let origin = self.topmost().clone();
        self.values = vec![(NaiveDate::MIN, value)];
        self.origins = vec![origin];
    }
}

#[derive(Debug, Clone, Default)]
pub struct Parameters(pub BTreeMap<String, Parameter>);

impl Parameters {
    /// The `params` map scripts see on `on`. A parameter not yet in force is absent.
    pub fn scope_value(&self, on: NaiveDate) -> Dynamic {
        let mut m = rhai::Map::new();
        for (name, p) in &self.0 {
            if let Some((_, v)) = p.effective(on) {
                m.insert(name.as_str().into(), script::from_json(v));
            }
        }
        m.into()
    }
}

/// A loaded, compiled catalogue. Cheap to clone; swapped whole on reload.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    by_id: HashMap<RuleId, usize>,
    pub params: Arc<Parameters>,
    /// The municipality's closed days and deadline shift, from its calendar parameters.
    pub deadline_policy: Arc<DeadlinePolicy>,
    pub engine: Arc<ScriptEngine>,
    templates: Arc<minijinja::Environment<'static>>,
    /// What residents would see raw (`presentation_gaps`): `rules check` refuses these.
    pub presentation_gaps: Arc<Vec<LoadError>>,
    /// Years and departments, compiled from the parameters.
    notice_style: Arc<NoticeStyle>,
    /// Content hash over every rule and parameter file: the rule-set version.
    pub version: String,
    pub dir: PathBuf,
    /// The layers it was compiled from, national first (docs: rules/README.md, Layers).
    pub layers: Vec<Layer>,
}

impl RuleSet {
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    pub fn get(&self, id: &RuleId) -> Option<&Arc<Rule>> {
        self.by_id.get(id).map(|&i| &self.rules[i])
    }

    /// The same catalogue evaluating only `ids` (recommendations still resolve).
    pub fn only(&self, ids: &[RuleId]) -> Result<RuleSet, RuleId> {
        let mut rules = Vec::new();
        for id in ids {
            rules.push(self.get(id).ok_or_else(|| id.clone())?.clone());
        }
        let by_id = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        Ok(RuleSet {
            rules,
            by_id,
            ..self.clone()
        })
    }

    /// The same catalogue with other parameter values, and what is compiled from them (the
    /// municipality's deadline policy and notice style) compiled again.
    pub fn with_parameters(&self, params: Parameters) -> Result<RuleSet, Vec<LoadError>> {
        let mut errors = Vec::new();
        let policy = compile_deadline_policy(&params, &[], &mut errors);
        let notice_style = compile_notice_style(&params, &[], &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RuleSet {
            params: Arc::new(params),
            deadline_policy: Arc::new(policy),
            notice_style: Arc::new(notice_style),
            ..self.clone()
        })
    }

    /// The `params` map a rule's scripts see for an occurrence on `on`; `()` for rules whose
    /// scripts never read it, so that a day's run builds it only where it is used.
    pub fn params_for(&self, rule: &Rule, on: NaiveDate) -> Dynamic {
        if rule.script_vars.contains(&"params") {
            self.params.scope_value(on)
        } else {
            Dynamic::UNIT
        }
    }

    /// The contact of department `id` on `on`.
    pub fn contact(&self, id: &str, on: NaiveDate) -> Option<Contact> {
        calendar::in_force(&self.notice_style.departments, on)?
            .get(id)
            .cloned()
    }

    /// Every department in force on `on`, by id.
    pub fn departments(&self, on: NaiveDate) -> BTreeMap<String, Contact> {
        calendar::in_force(&self.notice_style.departments, on)
            .cloned()
            .unwrap_or_default()
    }

    /// How the municipality writes years on `on` (西暦 when not set).
    pub fn date_style(&self, on: NaiveDate) -> DateStyle {
        calendar::in_force(&self.notice_style.date_style, on)
            .copied()
            .unwrap_or_default()
    }

    /// Renders a rule's message in `lang` ("ja" or "en").
    pub fn render(
        &self,
        rule: &Rule,
        lang: &str,
        ctx: &minijinja::Value,
    ) -> Result<Option<String>, String> {
        render_capped(&self.templates, rule, lang, ctx).map_err(|e| template_error(&e))
    }
}

/// Instructions one message may take to render.
pub const TEMPLATE_FUEL: u64 = 200_000;
/// Bytes one rendered message may have: far beyond any notice, far below a stalled day.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A writer that refuses to grow past `MAX_MESSAGE_BYTES`.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::other("message too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_capped(
    env: &minijinja::Environment<'static>,
    rule: &Rule,
    lang: &str,
    ctx: &minijinja::Value,
) -> Result<Option<String>, minijinja::Error> {
    let Ok(t) = env.get_template(&format!("{}.{lang}", rule.id)) else {
        return Ok(None);
    };
    let mut out = Capped(Vec::new());
    t.render_captured_to(ctx.clone(), &mut out)?;
    // Templates write text only; a lossy conversion could never change a byte of it.
    Ok(Some(String::from_utf8_lossy(&out.0).into_owned()))
}

/// Whether a template failure is a runaway (out of fuel or too long), whatever the data.
fn runaway(e: &minijinja::Error) -> bool {
    matches!(
        e.kind(),
        minijinja::ErrorKind::OutOfFuel | minijinja::ErrorKind::WriteFailure
    )
}

fn template_error(e: &minijinja::Error) -> String {
    match e.kind() {
        minijinja::ErrorKind::OutOfFuel => {
            format!("the template took more than {TEMPLATE_FUEL} steps (a loop over a large list?)")
        }
        minijinja::ErrorKind::WriteFailure => {
            format!("the message grew past {MAX_MESSAGE_BYTES} bytes")
        }
        _ => e.to_string(),
    }
}

/// Finds the line (1-based) of a dotted field path such as `conditions[1].script` in YAML
/// text. Good enough for error messages on block-style rule files; falls back to the
/// deepest part it found.
pub fn locate(text: &str, path: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut start = 0usize;
    let mut parent_indent: Option<usize> = None;
    let mut found = 1usize;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let pat = format!("{key}:");
        let hit = (start..lines.len()).find(|&i| {
            let l = lines[i];
            let t = l.trim_start().trim_start_matches("- ");
            let within = parent_indent.is_none_or(|p| indent(l) > p || i == start);
            (t.starts_with(&pat)
                || t.starts_with(&format!("{{ {pat}"))
                || t.starts_with(&format!("{{{pat}")))
                && within
        });
        let Some(i) = hit else { return found };
        found = i + 1;
        parent_indent = Some(indent(lines[i]));
        start = i + 1;
        if let Some(k) = index {
            // Items of this list are the `- ` lines at the indentation of the first one;
            // deeper `- ` lines belong to nested lists.
            let mut item_indent = None;
            let mut seen = 0;
            let mut item = None;
            for (j, l) in lines.iter().enumerate().skip(i + 1) {
                let is_item = l.trim_start().starts_with("- ");
                if !l.trim().is_empty() && indent(l) <= parent_indent.unwrap_or(0) && !is_item {
                    break;
                }
                if !is_item {
                    continue;
                }
                let want = *item_indent.get_or_insert(indent(l));
                if indent(l) < want {
                    break;
                }
                if indent(l) == want {
                    if seen == k {
                        item = Some(j);
                        break;
                    }
                    seen += 1;
                }
            }
            match item {
                Some(j) => {
                    found = j + 1;
                    start = j;
                    parent_indent = Some(indent(lines[j]));
                }
                None => return found,
            }
        }
    }
    found
}

struct FileCtx<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<LoadError>,
}

impl FileCtx<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>, hint: Option<&str>) {
        self.errors.push(LoadError {
            file: self.file.to_owned(),
            line: locate(self.text, field),
            column: 1,
            field: field.to_owned(),
            message: message.into(),
            hint: hint.map(str::to_owned),
        });
    }
}

fn yaml_error(file: &str, e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> LoadError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let (line, column) = inner.location().map_or((1, 1), |l| (l.line(), l.column()));
    let mut message = inner.to_string();
    // serde_yaml_ng appends "at line N column M"; the location is already in front.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let hint = if message.contains("unknown field") {
        Some("check the spelling; rules/README.md lists every field".to_owned())
    } else if message.contains("unknown variant") {
        Some("use one of the listed values".to_owned())
    } else if message.contains("input contains invalid") || message.contains("premature end") {
        Some("check the indentation and quoting of this line".to_owned())
    } else {
        None
    };
    LoadError {
        file: file.to_owned(),
        line,
        column,
        field: if path == "." { String::new() } else { path },
        message,
        hint,
    }
}

fn parse_yaml<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, LoadError> {
    // Measured first: the YAML loader takes time quadratic in the depth before serde's own
    // recursion limit applies.
    if let Some((line, column)) = crate::nesting::too_deep(text, crate::nesting::MAX_DEPTH) {
        return Err(LoadError {
            file: file.to_owned(),
            line,
            column,
            field: String::new(),
            message: format!(
                "nested deeper than {} levels; a rule or parameter file needs only a few",
                crate::nesting::MAX_DEPTH
            ),
            hint: None,
        });
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // The parser quotes what it found: never a whole file (one symlinked here, say).
        let mut e = yaml_error(file, e);
        e.message = crate::shown::message(&e.message);
        e
    })
}

fn rhai_names(source: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find(prefix) {
        let before_ok = i == 0
            || !rest[..i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let tail = &rest[i + prefix.len()..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if before_ok && !name.is_empty() {
            out.insert(name.clone());
        }
        rest = &tail[name.len()..];
    }
    out
}

/// A made-up resident the scripts are tried on at load time, to catch scripts that never
/// end or return the wrong type before they meet real residents.
fn probe_scope(params: &Parameters, on: NaiveDate) -> Scope<'static> {
    let probe: crate::resident::Resident = serde_json::from_value(serde_json::json!({
        "id": "PROBE", "name": {"kanji": "試験 太郎", "kana": "シケン タロウ"},
        "birth_date": "1980-04-02", "sex": 1, "status": {"kind": "resident"},
        "address": {"local_gov_code": "133621", "text": "probe"},
        "household": {"id": "PROBEH", "relationship": "世帯主"}
    }))
    .expect("probe resident is valid");
    let map = script::resident_map(&probe);
    let mut scope = Scope::new();
    scope.push_dynamic("subject", map.clone());
    scope.push_dynamic("household", Dynamic::from_array(vec![]));
    scope.push_dynamic("householder", map);
    scope.push_dynamic("guardians", Dynamic::from_array(vec![]));
    scope.push_dynamic("occurrence", on.to_string().into());
    scope.push_dynamic("today", on.to_string().into());
    scope.push_dynamic("event", Dynamic::UNIT);
    scope.push_dynamic("params", params.scope_value(on));
    scope.push_dynamic("deadline", on.to_string().into());
    scope.push_dynamic("as_of", on.to_string().into());
    scope.push_dynamic("draft", rhai::Map::new().into());
    debug_assert_eq!(scope.len(), SCOPE_VARS.len());
    scope
}

fn compile_deadline(d: &DeadlineDoc, cx: &mut FileCtx) -> Option<Deadline> {
    let periods = [
        d.days.map(Period::Days),
        d.months.map(Period::Months),
        d.years.map(Period::Years),
    ];
    let period: Vec<Period> = periods.into_iter().flatten().collect();
    let kinds = period.len()
        + usize::from(d.before_age.is_some())
        + usize::from(d.before_age_months.is_some())
        + usize::from(d.fiscal_year_end == Some(true));
    let hint = Some(
        "use one of days, months, years, before_age, before_age_months, fiscal_year_end: true",
    );
    if kinds != 1 {
        cx.err(
            "deadline",
            format!("needs exactly one kind of deadline, found {kinds}"),
            hint,
        );
        return None;
    }
    let limits_ok = d.days.is_none_or(|n| n <= calendar::MAX_DAYS)
        && d.months.is_none_or(|n| n <= calendar::MAX_MONTHS)
        && d.years.is_none_or(|n| n <= calendar::MAX_AGE_YEARS)
        && d.before_age.is_none_or(|n| n <= calendar::MAX_AGE_YEARS)
        && d.before_age_months
            .is_none_or(|n| n <= calendar::MAX_MONTHS);
    if !limits_ok {
        cx.err(
            "deadline",
            format!(
                "periods go up to {} days, {} months or {} years",
                calendar::MAX_DAYS,
                calendar::MAX_MONTHS,
                calendar::MAX_AGE_YEARS
            ),
            None,
        );
        return None;
    }
    if let Some(p) = period.first() {
        if matches!(p, Period::Days(0) | Period::Months(0) | Period::Years(0)) {
            cx.err("deadline", "a period must be at least 1", None);
        }
        return Some(Deadline::Period {
            period: *p,
            counting: d.counting.unwrap_or(Counting::NextDay),
            from: d.from.unwrap_or_default(),
            shift: d.shift,
        });
    }
    if d.counting.is_some() || d.from.is_some() || d.shift.is_some() {
        cx.err(
            "deadline",
            "counting, from and shift apply only to days, months and years",
            None,
        );
    }
    Some(if let Some(a) = d.before_age {
        Deadline::BeforeAge(a)
    } else if let Some(m) = d.before_age_months {
        Deadline::BeforeAgeMonths(m)
    } else {
        Deadline::FiscalYearEnd
    })
}

/// Checks one rule document and compiles its scripts. Cross-file checks come later.
fn compile_rule(
    doc: RuleDoc,
    cx: &mut FileCtx,
    engine: &ScriptEngine,
    content_hash: String,
) -> Option<Rule> {
    let before = cx.errors.len();
    check_identity(&doc, cx);
    let notify_offset = check_trigger_and_notify(&doc, cx);
    check_valid_years(&doc, cx);
    let deadline = check_delivery(&doc, cx);
    let mut scripts = RuleScripts {
        engine,
        lines: Vec::new(),
    };
    let conditions = compile_conditions(&doc, cx, &mut scripts);
    let as_of = compile_as_of(&doc, cx, &mut scripts);
    let (prefill, form) = compile_prefill(&doc, cx, &mut scripts);
    let (params_used, script_vars) = script_usage(&conditions, as_of.as_ref(), &prefill);
    // Any error in this file, from whichever pass, means no rule.
    if cx.errors.len() > before {
        return None;
    }
    Some(Rule {
        id: doc.id,
        version: doc.version,
        title: doc.title,
        category: doc.category,
        legal_basis: doc.legal_basis,
        valid: doc.valid,
        trigger: doc.trigger,
        notify_offset,
        conditions,
        audience: doc.audience,
        deadline,
        as_of,
        prefill,
        form,
        application: doc.application,
        department: doc.department,
        recommend: doc.recommend,
        message: doc.message,
        channels: doc.channels,
        critical: doc.critical,
        params_used,
        script_vars,
        source: Arc::new(RuleSource {
            file: cx.file.to_owned(),
            lines: scripts.lines,
        }),
        content_hash,
    })
}

/// The id against the file name, the version, and the order of the validity dates.
fn check_identity(doc: &RuleDoc, cx: &mut FileCtx) {
    let stem = Path::new(cx.file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    if stem != doc.id.as_str() {
        cx.err(
            "id",
            format!(
                "id {:?} does not match the file name {stem:?}",
                doc.id.as_str()
            ),
            Some("name the file <id>.yaml so that rules are easy to find"),
        );
    }
    if doc.version == 0 {
        cx.err("version", "must be 1 or more", None);
    }
    if doc.valid.to.is_some_and(|t| t < doc.valid.from) {
        cx.err("valid", "`to` is before `from`", None);
    }
}

/// The trigger's ages and the notice's offset from the occurrence; returns the offset in
/// days (0 when it is missing or invalid, so the other passes can still run).
fn check_trigger_and_notify(doc: &RuleDoc, cx: &mut FileCtx) -> i64 {
    let notify_offset = match doc.notify {
        None => 0,
        Some(NotifyDoc {
            days_before: Some(b),
            days_after: None,
        }) => -i64::from(b),
        Some(NotifyDoc {
            days_before: None,
            days_after: Some(a),
        }) => i64::from(a),
        Some(_) => {
            cx.err(
                "notify",
                "give exactly one of days_before or days_after",
                None,
            );
            0
        }
    };
    if let Trigger::AgeMonths(0) | Trigger::Birthday(0) = doc.trigger {
        cx.err("trigger", "the age must be at least 1", None);
    }
    let too_big = match doc.trigger {
        Trigger::AgeAttained(n) | Trigger::Birthday(n) => n > calendar::MAX_AGE_YEARS,
        Trigger::FiscalYearAge(f) => f.age > calendar::MAX_AGE_YEARS,
        Trigger::AgeMonths(m) => m > calendar::MAX_MONTHS,
        _ => false,
    };
    if too_big {
        cx.err(
            "trigger",
            format!(
                "ages go up to {} years or {} months",
                calendar::MAX_AGE_YEARS,
                calendar::MAX_MONTHS
            ),
            None,
        );
    }
    if notify_offset.unsigned_abs() > 3650 {
        cx.err(
            "notify",
            "a notice more than ten years from its occurrence is not supported",
            None,
        );
    }
    notify_offset
}

/// The validity dates must lie in the years the calendar covers.
fn check_valid_years(doc: &RuleDoc, cx: &mut FileCtx) {
    for (field, d) in [
        ("valid.from", Some(doc.valid.from)),
        ("valid.to", doc.valid.to),
    ] {
        if d.is_some_and(|d| !calendar::supported(d)) {
            cx.err(
                field,
                format!(
                    "outside the supported years {}-{}",
                    calendar::MIN_YEAR,
                    calendar::MAX_YEAR
                ),
                None,
            );
        }
    }
}

/// Who gets the notice, how, with what title and basis, and by when; returns the deadline.
fn check_delivery(doc: &RuleDoc, cx: &mut FileCtx) -> Option<Deadline> {
    let is_death = doc.trigger == Trigger::Event(EventKind::Death);
    if doc.audience.is_empty() {
        cx.err(
            "audience",
            "name at least one audience",
            Some("subject, guardians, householder, spouse, survivors, proxies"),
        );
    }
    if is_death && doc.audience.contains(&Audience::Subject) {
        cx.err(
            "audience",
            "a death notice cannot go to the deceased",
            Some("use survivors (and proxies)"),
        );
    }
    if !is_death && doc.audience.contains(&Audience::Survivors) {
        cx.err(
            "audience",
            "survivors exist only for `event: death` rules",
            None,
        );
    }
    if doc.channels.is_empty() {
        cx.err(
            "channels",
            "name at least one channel",
            Some("portal, email, webpush"),
        );
    }
    if doc.title.ja.trim().is_empty() {
        cx.err("title.ja", "must not be empty", None);
    }
    if doc.legal_basis.trim().is_empty() {
        cx.err("legal_basis", "must not be empty", None);
    }
    let deadline = doc.deadline.as_ref().and_then(|d| compile_deadline(d, cx));
    if let (Some(Deadline::BeforeAge(_) | Deadline::BeforeAgeMonths(_)), true) =
        (deadline, is_death)
    {
        cx.err(
            "deadline",
            "an age-based deadline makes no sense for a death",
            None,
        );
    }
    deadline
}

/// Compiles a rule's scripts, remembering each script field's line for later messages.
struct RuleScripts<'e> {
    engine: &'e ScriptEngine,
    lines: Vec<(String, usize)>,
}

impl RuleScripts<'_> {
    fn compile(&mut self, cx: &mut FileCtx, field: String, src: &str) -> Option<script::Script> {
        let field_line = locate(cx.text, &field);
        self.lines.push((field.clone(), field_line));
        match self.engine.compile(src) {
            Ok(s) => Some(s),
            Err((msg, line, col)) => {
                cx.errors.push(LoadError {
                    file: cx.file.to_owned(),
                    // A block scalar starts on the line after its key.
                    line: field_line + line.saturating_sub(1) + usize::from(src.contains('\n')),
                    column: col,
                    field,
                    message: format!("Rhai does not compile: {msg}"),
                    hint: Some(format!(
                        "variables available: {}; helpers: attain, attainment_month, anniversary, age_on, fiscal_year, fy_end_age, month_anniversary, add_days, next_month_start, month_start, month_label, fiscal_year_end",
                        SCOPE_VARS.join(", ")
                    )),
                });
                None
            }
        }
    }
}

/// The conditions, compiled, each with its field name.
fn compile_conditions(
    doc: &RuleDoc,
    cx: &mut FileCtx,
    scripts: &mut RuleScripts,
) -> Vec<(String, Condition)> {
    let mut conditions = Vec::new();
    for (i, c) in doc.conditions.iter().enumerate() {
        let field = format!("conditions[{i}]");
        let compiled = match c {
            ConditionDoc::Attribute(a) => Some(Condition::Attribute(a.clone())),
            ConditionDoc::NotAttribute(a) => Some(Condition::NotAttribute(a.clone())),
            ConditionDoc::AttributeEquals(e) => {
                Some(Condition::AttributeEquals(e.name.clone(), e.value.clone()))
            }
            ConditionDoc::Sex(s) => Some(Condition::Sex(*s)),
            ConditionDoc::Age(r) => {
                if r.min.is_none() && r.max.is_none() {
                    cx.err(&format!("{field}.age"), "give min, max or both", None);
                }
                Some(Condition::Age(*r))
            }
            ConditionDoc::HouseholdRemaining(r) => Some(Condition::HouseholdRemaining(*r)),
            ConditionDoc::Script(src) => scripts
                .compile(cx, format!("{field}.script"), src)
                .map(Condition::Script),
        };
        if let Some(c) = compiled {
            conditions.push((field, c));
        }
    }
    for (i, c) in doc.conditions.iter().enumerate() {
        if let ConditionDoc::Script(src) = c {
            if script::mentions(src, "draft") {
                cx.err(
                    &format!("conditions[{i}].script"),
                    "`draft` holds prefill fields, which do not exist yet when conditions run",
                    None,
                );
            }
        }
    }
    conditions
}

/// The `as_of` script: it decides which parameters are in force, so it cannot read them.
fn compile_as_of(
    doc: &RuleDoc,
    cx: &mut FileCtx,
    scripts: &mut RuleScripts,
) -> Option<script::Script> {
    let src = doc.as_of.as_deref()?;
    for var in ["params", "as_of", "draft"] {
        if script::mentions(src, var) {
            cx.err(
                "as_of",
                format!("`as_of` cannot read `{var}`: it is computed before them"),
                Some("compute the day from occurrence, today, deadline and the subject"),
            );
        }
    }
    scripts.compile(cx, "as_of".to_owned(), src)
}

/// A prefill entry as its expression and its form spec: a bare expression, or a
/// `FieldDoc` map. `None` (with the error noted) for anything else.
fn prefill_entry(
    name: &str,
    v: &serde_yaml_ng::Value,
    cx: &mut FileCtx,
) -> Option<(String, FieldSpec)> {
    let field = format!("prefill.{name}");
    // A bare expression; YAML reads `16980` or `true` as a number or a boolean, which are
    // expressions too.
    let bare = match v {
        serde_yaml_ng::Value::String(t) => Some(t.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    if let Some(src) = bare {
        let spec = FieldSpec {
            label: None,
            help: None,
            kind: FieldKind::Text,
            choices: Vec::new(),
            computed: false,
        };
        return Some((src, spec));
    }
    let doc: FieldDoc = match serde_path_to_error::deserialize(v.clone()) {
        Ok(d) => d,
        Err(e) => {
            let inner = e.path().to_string();
            let at = if inner == "." || inner.is_empty() {
                field
            } else {
                format!("{field}.{inner}")
            };
            cx.err(
                &at,
                e.into_inner().to_string(),
                Some("an expression, or { value, label, kind, help, choices, computed }"),
            );
            return None;
        }
    };
    if doc.label.ja.trim().is_empty() {
        cx.err(
            &format!("{field}.label"),
            "the Japanese label is empty",
            None,
        );
    }
    match (doc.kind, doc.choices.is_empty()) {
        (FieldKind::Choice, true) => cx.err(
            &format!("{field}.choices"),
            "a choice field needs its choices",
            Some("choices: [はい, いいえ]"),
        ),
        (k, false) if k != FieldKind::Choice => cx.err(
            &format!("{field}.choices"),
            format!("a {} field has no choices", k.name()),
            Some("kind: choice"),
        ),
        _ => {}
    }
    let spec = FieldSpec {
        label: Some(doc.label),
        help: doc.help,
        kind: doc.kind,
        choices: doc.choices,
        computed: doc.computed,
    };
    Some((doc.value, spec))
}

/// The prefill fields, compiled in order; each may read only the fields above it.
fn compile_prefill(
    doc: &RuleDoc,
    cx: &mut FileCtx,
    scripts: &mut RuleScripts,
) -> (Vec<(String, script::Script)>, IndexMap<String, FieldSpec>) {
    let mut prefill = Vec::new();
    let mut form = IndexMap::new();
    let mut earlier: Vec<&str> = Vec::new();
    for (name, v) in &doc.prefill {
        let field = format!("prefill.{name}");
        let Some((src, spec)) = prefill_entry(name, v, cx) else {
            continue;
        };
        let src = src.as_str();
        form.insert(name.clone(), spec);
        for used in rhai_names(src, "draft.") {
            if !earlier.contains(&used.as_str()) {
                cx.err(
                    &field,
                    format!("draft.{used} is not a prefill field written above this one"),
                    Some("prefill fields are computed in order; move the field it uses above it"),
                );
            }
        }
        earlier.push(name);
        let ok_name = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.starts_with(|c: char| c.is_ascii_lowercase());
        if !ok_name {
            cx.err(
                &field,
                format!("{name:?} is not a snake_case field name"),
                None,
            );
        }
        if TEMPLATE_BUILTINS.contains(&name.as_str()) {
            cx.err(
                &field,
                format!("{name:?} is reserved for templates"),
                Some("choose another field name"),
            );
        }
        if let Some(s) = scripts.compile(cx, field, src) {
            prefill.push((name.clone(), s));
        }
    }
    (prefill, form)
}

/// The parameters and the script variables the compiled scripts read.
fn script_usage(
    conditions: &[(String, Condition)],
    as_of: Option<&script::Script>,
    prefill: &[(String, script::Script)],
) -> (Vec<String>, Vec<&'static str>) {
    let mut params_used = BTreeSet::new();
    for (_, c) in conditions {
        if let Condition::Script(s) = c {
            params_used.extend(rhai_names(&s.source, "params."));
        }
    }
    for (_, s) in prefill {
        params_used.extend(rhai_names(&s.source, "params."));
    }
    let sources: Vec<&str> = conditions
        .iter()
        .filter_map(|(_, c)| match c {
            Condition::Script(s) => Some(s.source.as_str()),
            _ => None,
        })
        .chain(as_of.map(|s| s.source.as_str()))
        .chain(prefill.iter().map(|(_, s)| s.source.as_str()))
        .collect();
    let script_vars: Vec<&'static str> = SCOPE_VARS
        .into_iter()
        .filter(|v| sources.iter().any(|src| script::mentions(src, v)))
        .collect();
    (params_used.into_iter().collect(), script_vars)
}

/// Every `*.yaml` and `*.yml` entry of `dir`, whatever it is: one that is not a readable
/// regular file (a dangling symlink, a FIFO, a folder) is an error for the caller to report,
/// never a rule skipped without a word.
pub(crate) fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// A load error of a whole file (it cannot be read).
pub(crate) fn unreadable(path: &Path, message: String) -> LoadError {
    LoadError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: String::new(),
        message,
        hint: None,
    }
}

/// A file's text, checked to be a regular file before it is opened (opening a FIFO would
/// block until someone writes to it; `holds` says what the folder should hold instead); a
/// byte order mark, as some editors write, is dropped.
pub(crate) fn read_source(path: &Path, holds: &str) -> Result<String, LoadError> {
    match std::fs::metadata(path) {
        Err(e) => return Err(unreadable(path, format!("cannot read: {e}"))),
        Ok(m) if !m.is_file() => {
            return Err(unreadable(path, format!("not a regular file; {holds}")))
        }
        Ok(_) => {}
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| unreadable(path, format!("cannot read: {e}")))?;
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_owned)
        .unwrap_or(text))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads `dir/*.yaml` (rules) and `dir/parameters/*.yaml`. Returns every error found.
pub fn load_dir(dir: &Path) -> Result<RuleSet, LoadErrors> {
    let national = LayerSources::read_national(dir)?;
    compile_layered(dir, &[(Layer::National, &national)])
}

/// Compiles rule and parameter sources given as (file name, text): the national catalogue.
pub fn compile_sources(
    dir: &Path,
    sources: &[(String, String)],
    param_sources: &[(String, String)],
) -> Result<RuleSet, LoadErrors> {
    let national = LayerSources {
        rules: sources.to_vec(),
        parameters: param_sources.to_vec(),
        tests: Vec::new(),
    };
    compile_layered(dir, &[(Layer::National, &national)])
}

/// Compiles the layers given, national first, into one catalogue: rules of every layer
/// together (an id used twice is an error, whatever the layers), and parameters where a
/// higher layer's definition takes over from its first date on.
pub fn compile_layered(
    dir: &Path,
    layers: &[(Layer, &LayerSources)],
) -> Result<RuleSet, LoadErrors> {
    let sources: Vec<(String, String)> = layers
        .iter()
        .flat_map(|(_, l)| l.rules.iter().cloned())
        .collect();
    let param_sources: Vec<(String, String)> = layers
        .iter()
        .flat_map(|(_, l)| l.parameters.iter().cloned())
        .collect();
    let mut errors = Vec::new();
    // Parameter files first, then rule files: the order the version hash has always used.
    let mut hasher = Sha256::new();
    let params = parse_parameters(layers, &mut hasher, &mut errors);
    let param_sources = &param_sources[..];
    let deadline_policy = compile_deadline_policy(&params, param_sources, &mut errors);
    let notice_style = compile_notice_style(&params, param_sources, &mut errors);
    let engine = ScriptEngine::new();
    let (rules, texts, failed_ids) = compile_rules(&sources, &engine, &mut hasher, &mut errors);
    let (by_id, env) = check_across_files(&rules, &texts, &params, &failed_ids, &mut errors);
    // A municipality's own parameter must be read in its catalogue; a prefecture's may be
    // read by any of its municipalities' rules (`Layers::every_catalogue` checks those).
    errors.extend(unread_local_parameters(
        &params,
        |l| matches!(l, Layer::Municipality(_)),
        |name| {
            rules
                .iter()
                .any(|r| r.params_used.iter().any(|p| p == name))
        },
        param_sources,
    ));
    let gaps = presentation_gaps(&rules, &texts);
    probe_scripts(&rules, &texts, &params, &engine, &env, &mut errors);

    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Err(LoadErrors(errors));
    }
    let rules: Vec<Arc<Rule>> = rules.into_iter().map(Arc::new).collect();
    Ok(RuleSet {
        rules,
        by_id,
        params: Arc::new(params),
        deadline_policy: Arc::new(deadline_policy),
        engine: Arc::new(engine),
        templates: Arc::new(env),
        presentation_gaps: Arc::new(gaps),
        notice_style: Arc::new(notice_style),
        version: hex(&hasher.finalize())[..16].to_owned(),
        dir: dir.to_path_buf(),
        layers: layers.iter().map(|(l, _)| *l).collect(),
    })
}

/// Every parameter file of every layer, hashed and parsed. Within a layer a name defined
/// twice keeps its first definition. A higher layer's definition of a name takes over from
/// its first date on: the lower layers' values before that date stay in force before it
/// (OpenFisca's extensions work so), and each value must be of the kind it overrides.
fn parse_parameters(
    layers: &[(Layer, &LayerSources)],
    hasher: &mut Sha256,
    errors: &mut Vec<LoadError>,
) -> Parameters {
    let mut params = Parameters::default();
    for (layer, sources) in layers {
        let mut this_layer: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in &sources.parameters {
            hasher.update(file.as_bytes());
            hasher.update(text.as_bytes());
            let docs = match parse_yaml::<BTreeMap<String, ParameterDoc>>(file, text) {
                Err(e) => {
                    errors.push(e);
                    continue;
                }
                Ok(docs) => docs,
            };
            let mut cx = FileCtx {
                file,
                text,
                errors: Vec::new(),
            };
            for (name, doc) in docs {
                if let Some(prev) = this_layer.get(&name) {
                    cx.err(
                        &name,
                        format!("parameter {name:?} is already defined in {prev}"),
                        None,
                    );
                    continue;
                }
                this_layer.insert(name.clone(), file.clone());
                if doc.values.is_empty() {
                    cx.err(&format!("{name}.values"), "needs at least one value", None);
                    continue;
                }
                let mut values: Vec<(NaiveDate, serde_json::Value, ValueOrigin)> = doc
                    .values
                    .into_iter()
                    .enumerate()
                    .map(|(index, v)| {
                        let origin = ValueOrigin {
                            file: file.clone(),
                            index,
                            layer: *layer,
                            description: doc.description.clone(),
                        };
                        (v.from, v.value, origin)
                    })
                    .collect();
                values.sort_by_key(|(d, _, _)| *d);
                if values.windows(2).any(|w| w[0].0 == w[1].0) {
                    cx.err(
                        &format!("{name}.values"),
                        "two values take effect on the same date",
                        None,
                    );
                }
                let mut kept: Vec<(NaiveDate, serde_json::Value, ValueOrigin)> = Vec::new();
                if let Some(below) = params.0.get(&name) {
                    let first = values[0].0;
                    if let Some((_, lower)) = below.values.last() {
                        for (_, v, origin) in &values {
                            if json_kind(v) != json_kind(lower) {
                                cx.err(
                                    &format!("{name}.values[{}].value", origin.index),
                                    format!(
                                        "is {}, but {name:?} is {} in {} ({})",
                                        json_kind(v),
                                        json_kind(lower),
                                        below.topmost().file,
                                        below.topmost().layer
                                    ),
                                    Some("a layer overrides a value with a value of the same kind"),
                                );
                            }
                        }
                    }
                    kept = below
                        .values
                        .iter()
                        .zip(&below.origins)
                        .filter(|((from, _), _)| *from < first)
                        .map(|((from, v), o)| (*from, v.clone(), o.clone()))
                        .collect();
                }
                kept.extend(values);
                let (values, origins) = kept.into_iter().map(|(from, v, o)| ((from, v), o)).unzip();
                params.0.insert(name, Parameter { values, origins });
            }
            errors.extend(cx.errors);
        }
    }
    params
}

/// What kind of JSON value `v` is, in words.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "true or false",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "text",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

/// Parameters the engine itself reads (the calendar and the notice style): a layer may set
/// them though no rule names them.
const ENGINE_PARAMS: [&str; 4] = [
    DEADLINE_SHIFT_PARAM,
    CLOSED_DAYS_PARAM,
    DEPARTMENTS_PARAM,
    DATE_STYLE_PARAM,
];

/// A parameter a layer brings that overrides nothing below and that no rule reads is a typo
/// of the one meant to be overridden, whose national value would silently stay in force. The
/// parameters `introduced_by` the layers asked about, each unless `read(name)`.
pub(crate) fn unread_local_parameters(
    params: &Parameters,
    introduced_by: impl Fn(Layer) -> bool,
    read: impl Fn(&str) -> bool,
    param_sources: &[(String, String)],
) -> Vec<LoadError> {
    let mut errors = Vec::new();
    for (name, p) in &params.0 {
        let introduced = p.origins.first().is_some_and(|o| introduced_by(o.layer));
        if !introduced || ENGINE_PARAMS.contains(&name.as_str()) || read(name) {
            continue;
        }
        let mut cx = ctx_of(p, param_sources);
        let near = params
            .0
            .keys()
            .filter(|k| *k != name)
            .map(|k| (strsim::levenshtein(k, name), k))
            .filter(|(d, _)| *d <= 3)
            .min()
            .map(|(_, k)| k);
        cx.err(
            name,
            format!("parameter {name:?} overrides nothing in the layers below, and no rule reads it"),
            Some(&match near {
                Some(k) => format!("did you mean {k:?}?"),
                None => "name a parameter of the national catalogue to override it, or use it in a rule of this layer".to_owned(),
            }),
        );
        errors.extend(cx.errors);
    }
    errors
}

/// The calendar parameter naming the shift rules inherit (`none`, `weekend`, `closed_days`).
pub const DEADLINE_SHIFT_PARAM: &str = "deadline_shift";
/// The calendar parameter listing the municipality's own closed days ("MM-DD" every year,
/// "YYYY-MM-DD" once).
pub const CLOSED_DAYS_PARAM: &str = "municipal_closed_days";
/// The parameter mapping department ids to their contact (`Contact`).
pub const DEPARTMENTS_PARAM: &str = "departments";

/// The calendar parameter naming how notices write years: `seireki` (2026年) or `wareki`
/// (令和8年).
pub const DATE_STYLE_PARAM: &str = "date_style";

/// The text of parameter file `file`, for the lines of its errors.
fn source_text<'a>(file: &str, param_sources: &'a [(String, String)]) -> &'a str {
    param_sources
        .iter()
        .find(|(f, _)| *f == file)
        .map_or("", |(_, t)| t.as_str())
}

/// Where errors about parameter `p` as a whole are reported: its topmost file.
fn ctx_of<'a>(p: &'a Parameter, param_sources: &'a [(String, String)]) -> FileCtx<'a> {
    FileCtx {
        file: &p.topmost().file,
        text: source_text(&p.topmost().file, param_sources),
        errors: Vec::new(),
    }
}

/// An error about value `i` of parameter `name`, at its place in the file (and layer) that
/// wrote it; `suffix` names a part of the value (`.kosodate` of a departments map).
fn value_error(
    name: &str,
    p: &Parameter,
    i: usize,
    suffix: &str,
    param_sources: &[(String, String)],
    message: String,
    hint: Option<&str>,
) -> LoadError {
    let origin = &p.origins[i];
    let mut cx = FileCtx {
        file: &origin.file,
        text: source_text(&origin.file, param_sources),
        errors: Vec::new(),
    };
    cx.err(
        &format!("{name}.values[{}].value{suffix}", origin.index),
        message,
        hint,
    );
    cx.errors.remove(0)
}

/// How the municipality writes its notices, from its parameters, compiled once at load:
/// years (`date_style`) and whom residents ask (`departments`), each by effective date.
#[derive(Debug, Clone, Default)]
pub struct NoticeStyle {
    date_style: Vec<(NaiveDate, DateStyle)>,
    departments: Vec<(NaiveDate, BTreeMap<String, Contact>)>,
}

/// The `date_style` and `departments` parameters, checked with their place.
fn compile_notice_style(
    params: &Parameters,
    param_sources: &[(String, String)],
    errors: &mut Vec<LoadError>,
) -> NoticeStyle {
    let mut style = NoticeStyle::default();
    if let Some(p) = params.0.get(DATE_STYLE_PARAM) {
        for (i, (from, v)) in p.values.iter().enumerate() {
            match v.as_str().and_then(DateStyle::parse) {
                Some(d) => style.date_style.push((*from, d)),
                None => errors.push(value_error(
                    DATE_STYLE_PARAM,
                    p,
                    i,
                    "",
                    param_sources,
                    format!("{v} is not a date style"),
                    Some("seireki (2026年10月21日) or wareki (令和8年10月21日)"),
                )),
            }
        }
    }
    if let Some(p) = params.0.get(DEPARTMENTS_PARAM) {
        for (i, (from, v)) in p.values.iter().enumerate() {
            let Some(map) = v.as_object() else {
                errors.push(value_error(
                    DEPARTMENTS_PARAM,
                    p,
                    i,
                    "",
                    param_sources,
                    format!("{v} is not a map of departments"),
                    None,
                ));
                continue;
            };
            let mut contacts = BTreeMap::new();
            for (id, c) in map {
                match serde_json::from_value::<Contact>(c.clone()) {
                    Ok(contact) => {
                        contacts.insert(id.clone(), contact);
                    }
                    Err(e) => errors.push(value_error(
                        DEPARTMENTS_PARAM,
                        p,
                        i,
                        &format!(".{id}"),
                        param_sources,
                        e.to_string(),
                        Some("{ name, phone, hours, counter, url }; name is required"),
                    )),
                }
            }
            style.departments.push((*from, contacts));
        }
    }
    style
}

/// The municipality's deadline policy from its calendar parameters; the statute's default
/// (every deadline moves past 行政機関の休日) for a parameter not given.
fn compile_deadline_policy(
    params: &Parameters,
    param_sources: &[(String, String)],
    errors: &mut Vec<LoadError>,
) -> DeadlinePolicy {
    let mut policy = DeadlinePolicy::default();
    if let Some(p) = params.0.get(DEADLINE_SHIFT_PARAM) {
        let mut shift = Vec::new();
        for (i, (from, v)) in p.values.iter().enumerate() {
            match serde_json::from_value::<Shift>(v.clone()) {
                Ok(s) => shift.push((*from, s)),
                Err(_) => errors.push(value_error(
                    DEADLINE_SHIFT_PARAM,
                    p,
                    i,
                    "",
                    param_sources,
                    format!("{v} is not a shift"),
                    Some("one of none, weekend, closed_days, national_closed_days"),
                )),
            }
        }
        policy.shift = shift;
    }
    if let Some(p) = params.0.get(CLOSED_DAYS_PARAM) {
        let mut closed = Vec::new();
        let hint = Some("a list of \"MM-DD\" (every year) and \"YYYY-MM-DD\" (once)");
        for (i, (from, v)) in p.values.iter().enumerate() {
            let Some(items) = v.as_array() else {
                errors.push(value_error(
                    CLOSED_DAYS_PARAM,
                    p,
                    i,
                    "",
                    param_sources,
                    format!("{v} is not a list of days"),
                    hint,
                ));
                continue;
            };
            let mut days = ClosedDays::default();
            for item in items {
                let text = item.as_str().unwrap_or_default();
                if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                    days.once.insert(d);
                } else if let Ok(m) = MonthDay::parse(text) {
                    days.yearly.push(m);
                } else {
                    errors.push(value_error(
                        CLOSED_DAYS_PARAM,
                        p,
                        i,
                        "",
                        param_sources,
                        format!("{item} is not a day"),
                        hint,
                    ));
                }
            }
            closed.push((*from, days));
        }
        policy.closed = closed;
    }
    policy
}

/// The errors after the first in a rule file: serde stops at the first, so the faulty
/// top-level field is taken out and the rest read again, until nothing more is wrong. A
/// required field that was taken out is not reported missing.
fn later_errors(
    file: &str,
    text: &str,
    value: serde_yaml_ng::Value,
    first: &str,
) -> Vec<LoadError> {
    let serde_yaml_ng::Value::Mapping(mut map) = value else {
        return Vec::new();
    };
    let top = |field: &str| {
        field
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let mut removed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let mut field = top(first);
    // Each round takes one key out, so this ends; the bound keeps a huge file cheap.
    for _ in 0..64 {
        if map.remove(field.as_str()).is_none() {
            break;
        }
        removed.insert(field.clone());
        let value = serde_yaml_ng::Value::Mapping(map.clone());
        let Err(e) = serde_path_to_error::deserialize::<_, RuleDoc>(value) else {
            break;
        };
        let mut e = yaml_error(file, e);
        if let Some(missing) = e
            .message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            if removed.contains(missing) {
                break;
            }
        }
        e.message = crate::shown::message(&e.message);
        // Read from a value, the error has no place of its own: find the field's line.
        e.line = locate(text, &e.field);
        e.column = 1;
        field = top(&e.field);
        out.push(e);
    }
    out
}

/// Every rule file, hashed, parsed and compiled on its own; returns the sound rules and each
/// file's text (by file name) for the later passes' line numbers.
fn compile_rules<'s>(
    sources: &'s [(String, String)],
    engine: &ScriptEngine,
    hasher: &mut Sha256,
    errors: &mut Vec<LoadError>,
) -> (Vec<Rule>, HashMap<String, &'s str>, BTreeSet<RuleId>) {
    // Rules whose file has errors: others may still name them without a second error.
    let mut failed_ids = BTreeSet::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut texts: HashMap<String, &str> = HashMap::new();
    for (file, text) in sources {
        hasher.update(file.as_bytes());
        hasher.update(text.as_bytes());
        texts.insert(file.clone(), text);
        let doc = match parse_yaml::<RuleDoc>(file, text) {
            Ok(d) => d,
            Err(e) => {
                let first = e.field.clone();
                errors.push(e);
                // Read once more as a plain value, for its id and its later errors; not a
                // file refused for its depth, which is what takes long to read.
                let value = crate::nesting::too_deep(text, crate::nesting::MAX_DEPTH)
                    .is_none()
                    .then(|| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).ok())
                    .flatten();
                if let Some(value) = value {
                    let id = value.get("id").and_then(|v| v.as_str());
                    failed_ids.extend(id.and_then(|id| RuleId::parse(id).ok()));
                    errors.extend(later_errors(file, text, value, &first));
                }
                continue;
            }
        };
        let mut cx = FileCtx {
            file,
            text,
            errors: Vec::new(),
        };
        let hash = hex(&Sha256::digest(text.as_bytes()));
        let id = doc.id.clone();
        match compile_rule(doc, &mut cx, engine, hash) {
            Some(rule) => rules.push(rule),
            None => {
                failed_ids.insert(id);
            }
        }
        errors.extend(cx.errors);
    }
    (rules, texts, failed_ids)
}

/// A context for errors about `rule`, found after its file was compiled.
fn rule_ctx<'a>(rule: &'a Rule, texts: &HashMap<String, &'a str>) -> FileCtx<'a> {
    FileCtx {
        file: &rule.source.file,
        text: texts.get(&rule.source.file).copied().unwrap_or_default(),
        errors: Vec::new(),
    }
}

/// `date`, `month` and `yen`: dates and amounts as a Japanese notice writes them, years in
/// the municipality's style (the `date_style` the render context carries).
fn add_wording_filters(env: &mut minijinja::Environment<'static>) {
    use minijinja::{Error, ErrorKind, State, Value};
    fn style(state: &State) -> DateStyle {
        state
            .lookup("date_style")
            .and_then(|v| v.as_str().and_then(DateStyle::parse))
            .unwrap_or_default()
    }
    fn day(filter: &str, v: &str) -> Result<NaiveDate, Error> {
        let head = v.get(..10).unwrap_or(v);
        NaiveDate::parse_from_str(head, "%Y-%m-%d")
            .or_else(|_| NaiveDate::parse_from_str(&format!("{v}-01"), "%Y-%m-%d"))
            .map_err(|_| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{filter}: {v:?} is not a date (YYYY-MM-DD)"),
                )
            })
    }
    env.add_filter(
        "date",
        |state: &State, v: String| -> Result<String, Error> {
            Ok(wording::date(day("date", &v)?, style(state)))
        },
    );
    env.add_filter(
        "month",
        |state: &State, v: String| -> Result<String, Error> {
            Ok(wording::month(day("month", &v)?, style(state)))
        },
    );
    env.add_filter("yen", |v: Value| -> Result<String, Error> {
        let n = i64::try_from(v.clone())
            .ok()
            .or_else(|| {
                f64::try_from(v.clone())
                    .ok()
                    .filter(|f| f.fract() == 0.0)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("yen: {v} is not a whole number of yen"),
                )
            })?;
        Ok(wording::yen(n))
    });
}

/// Cross-file checks: unique ids, recommendations, parameters, template variables. Returns
/// the index by id and the templates, compiled along the way.
fn check_across_files(
    rules: &[Rule],
    texts: &HashMap<String, &str>,
    params: &Parameters,
    failed_ids: &BTreeSet<RuleId>,
    errors: &mut Vec<LoadError>,
) -> (HashMap<RuleId, usize>, minijinja::Environment<'static>) {
    let mut by_id: HashMap<RuleId, usize> = HashMap::new();
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A notice is a few hundred instructions: the fuel stops a loop over loops long before
    // it stalls the day, and `render` caps what one may write.
    env.set_fuel(Some(TEMPLATE_FUEL));
    add_wording_filters(&mut env);
    let ids: BTreeSet<&RuleId> = rules.iter().map(|r| &r.id).collect();
    for (i, rule) in rules.iter().enumerate() {
        let mut cx = rule_ctx(rule, texts);
        if let Some(&first) = by_id.get(&rule.id) {
            cx.err(
                "id",
                format!(
                    "id {:?} is also used by {}",
                    rule.id.as_str(),
                    rules[first].source.file
                ),
                None,
            );
        } else {
            by_id.insert(rule.id.clone(), i);
        }
        check_recommend(rule, &ids, failed_ids, &mut cx);
        check_params_used(rule, params, &mut cx);
        check_templates(rule, &mut env, &mut cx);
        check_department(rule, params, &mut cx);
        errors.extend(cx.errors);
    }
    (by_id, env)
}

/// A rule's department is one the `departments` parameter defines.
fn check_department(rule: &Rule, params: &Parameters, cx: &mut FileCtx) {
    let Some(id) = &rule.department else { return };
    let known = params
        .0
        .get(DEPARTMENTS_PARAM)
        .is_some_and(|p| p.values.iter().any(|(_, v)| v.get(id.as_str()).is_some()));
    if !known {
        cx.err(
            "department",
            format!("no department {id:?}"),
            Some("define it in the departments parameter (rules/parameters/departments.yaml)"),
        );
    }
}

/// What a resident would see raw: a prefill field with no Japanese label, a computed field
/// that does not say how it was computed, a rule that does not say whether residents
/// apply or whom they ask. The catalogue loads with them (`oshirase run` warns);
/// `rules check` refuses them.
fn presentation_gaps(rules: &[Rule], texts: &HashMap<String, &str>) -> Vec<LoadError> {
    let mut gaps = Vec::new();
    for rule in rules {
        let mut cx = rule_ctx(rule, texts);
        for (name, spec) in &rule.form {
            let field = format!("prefill.{name}");
            match &spec.label {
                None => cx.err(
                    &field,
                    format!("field {name:?} has no Japanese label"),
                    Some("write it as { value: EXPR, label: 請求者の氏名, kind: person }"),
                ),
                Some(_) if spec.computed && spec.help.is_none() => cx.err(
                    &format!("{field}.help"),
                    format!("computed field {name:?} does not say how it was computed"),
                    Some("help: 生年月日から計算しています"),
                ),
                Some(_) => {}
            }
        }
        if rule.application.is_none() {
            cx.err(
                "application",
                "the rule does not say whether residents apply",
                Some("application: none | form | { counter: { place: …, bring: [...] } }"),
            );
        }
        if rule.department.is_none() {
            cx.err(
                "department",
                "the rule does not say whom residents ask",
                Some("department: an id of the departments parameter"),
            );
        }
        gaps.extend(cx.errors);
    }
    gaps
}

/// Each recommendation names another rule of the folder.
fn check_recommend(
    rule: &Rule,
    ids: &BTreeSet<&RuleId>,
    failed: &BTreeSet<RuleId>,
    cx: &mut FileCtx,
) {
    for (k, rec) in rule.recommend.iter().enumerate() {
        if !ids.contains(rec) && !failed.contains(rec) {
            cx.err(
                &format!("recommend[{k}]"),
                format!("no rule with id {:?}", rec.as_str()),
                Some("recommend the id of a rule in this folder"),
            );
        } else if rec == &rule.id {
            cx.err(
                &format!("recommend[{k}]"),
                "a rule cannot recommend itself",
                None,
            );
        }
    }
}

/// Every `params.x` a script reads is defined, reported at the first script that reads it.
fn check_params_used(rule: &Rule, params: &Parameters, cx: &mut FileCtx) {
    for p in &rule.params_used {
        if !params.0.contains_key(p) {
            let field = rule
                .source
                .lines
                .iter()
                .map(|(f, _)| f)
                .find(|f| {
                    script_source(rule, f).is_some_and(|s| rhai_names(s, "params.").contains(p))
                })
                .cloned()
                .unwrap_or_default();
            cx.err(
                &field,
                format!("no parameter {p:?}"),
                Some("define it in rules/parameters/*.yaml"),
            );
        }
    }
}

/// Adds the rule's message templates to `env`; each must parse and use only prefill fields
/// and the built-in variables.
fn check_templates(rule: &Rule, env: &mut minijinja::Environment<'static>, cx: &mut FileCtx) {
    let allowed: BTreeSet<String> = rule
        .prefill
        .iter()
        .map(|(n, _)| n.clone())
        .chain(TEMPLATE_BUILTINS.iter().map(|s| s.to_string()))
        .collect();
    for (lang, src) in [
        ("ja", Some(&rule.message.ja)),
        ("en", rule.message.en.as_ref()),
    ] {
        let Some(src) = src else { continue };
        let field = format!("message.{lang}");
        let name = format!("{}.{lang}", rule.id);
        if let Err(e) = env.add_template_owned(name.clone(), src.clone()) {
            cx.err(&field, format!("template does not parse: {e}"), None);
            continue;
        }
        let tmpl = env.get_template(&name).expect("just added");
        let used = tmpl.undeclared_variables(false);
        if can_be_late(rule) && used.contains("deadline") && !used.contains("deadline_passed") {
            cx.err(
                &field,
                "an event can reach the register after this deadline, and the message names \
                 the deadline without saying what holds once it has passed",
                Some("branch with {% if deadline_passed %}…{% else %}…{% endif %}"),
            );
        }
        let mut unknown: Vec<String> = used.into_iter().filter(|v| !allowed.contains(v)).collect();
        unknown.sort();
        for v in unknown {
            cx.err(
                &field,
                format!("template variable {v:?} is not a prefill field"),
                Some(&format!(
                    "available: {}",
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
            );
        }
    }
}

/// Whether the rule's notice can go out after its deadline: an event's notice (the event may
/// be recorded or ingested late) with a period counted from the event.
fn can_be_late(rule: &Rule) -> bool {
    matches!(rule.trigger, Trigger::Event(_))
        && matches!(
            rule.deadline,
            Some(Deadline::Period {
                from: DeadlineFrom::Occurrence,
                ..
            })
        )
}

/// Try every script once on a made-up resident: a runaway loop or a condition that does
/// not return a bool is a load error, not a surprise at 6 a.m.
fn probe_scripts(
    rules: &[Rule],
    texts: &HashMap<String, &str>,
    params: &Parameters,
    engine: &ScriptEngine,
    templates: &minijinja::Environment<'static>,
    errors: &mut Vec<LoadError>,
) {
    let probe_day = NaiveDate::from_ymd_opt(2026, 4, 1).expect("valid");
    for rule in rules {
        let mut cx = rule_ctx(rule, texts);
        let mut scope = probe_scope(params, probe_day);
        for (field, c) in &rule.conditions {
            if let Condition::Script(s) = c {
                match engine.run(s, &mut scope) {
                    Ok(v) if !v.is_bool() => cx.err(
                        &format!("{field}.script"),
                        format!(
                            "a condition must return true or false, this returns {}",
                            script::type_name(&v)
                        ),
                        Some("compare with ==, or add `?? false` to a value that may be missing"),
                    ),
                    Err(e) if e.for_everyone => cx.err(&format!("{field}.script"), e.message, None),
                    _ => {}
                }
            }
        }
        if let Some(s) = &rule.as_of {
            match engine.run(s, &mut scope) {
                Ok(v) if script::to_date(&v).is_none() => cx.err(
                    "as_of",
                    format!(
                        "`as_of` must give a date \"YYYY-MM-DD\", this gives {} ({v})",
                        script::type_name(&v)
                    ),
                    None,
                ),
                Err(e) if e.for_everyone => cx.err("as_of", e.message, None),
                _ => {}
            }
        }
        let mut prefill = serde_json::Map::new();
        let mut complete = true;
        for (name, s) in &rule.prefill {
            match engine.run(s, &mut scope) {
                Ok(v) => {
                    let v = script::to_json(&v).unwrap_or(serde_json::Value::Null);
                    prefill.insert(name.clone(), v);
                }
                Err(e) => {
                    complete = false;
                    if e.for_everyone {
                        cx.err(&format!("prefill.{name}"), e.message, None);
                    }
                }
            }
        }
        // The messages over the probe's draft: one that runs away even there always will.
        if complete {
            let day = serde_json::Value::String(probe_day.to_string());
            for b in ["occurrence", "deadline", "today", "as_of"] {
                prefill.entry(b).or_insert_with(|| day.clone());
            }
            prefill.insert("deadline_passed".into(), false.into());
            prefill.insert("title".into(), rule.title.ja.clone().into());
            let ctx = minijinja::Value::from(minijinja::value::Serde(&prefill));
            for lang in ["ja", "en"] {
                if let Err(e) = render_capped(templates, rule, lang, &ctx) {
                    if runaway(&e) {
                        cx.err(&format!("message.{lang}"), template_error(&e), None);
                    }
                }
            }
        }
        errors.extend(cx.errors);
    }
}

fn script_source<'a>(rule: &'a Rule, field: &str) -> Option<&'a str> {
    if field == "as_of" {
        return rule.as_of.as_ref().map(|s| s.source.as_str());
    }
    if let Some(name) = field.strip_prefix("prefill.") {
        return rule
            .prefill
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.source.as_str());
    }
    let cond = field.strip_suffix(".script")?;
    rule.conditions.iter().find_map(|(f, c)| match c {
        Condition::Script(s) if f == cond => Some(s.source.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::locate;

    #[test]
    fn locate_finds_nested_fields_and_list_items() {
        let text = "id: x\ncases:\n  - name: a\n    residents:\n      - { id: R1 }\n      - { id: R2 }\n    expect: []\n  - name: b\n    residents:\n      - { id: R3 }\n";
        assert_eq!(locate(text, "id"), 1);
        assert_eq!(locate(text, "cases[0]"), 3);
        assert_eq!(locate(text, "cases[1]"), 8);
        assert_eq!(locate(text, "cases[0].residents[1]"), 6);
        assert_eq!(locate(text, "cases[1].residents[0]"), 10);
        assert_eq!(locate(text, "cases[0].expect"), 7);
        // Unknown paths fall back to the deepest part found.
        assert_eq!(locate(text, "cases[1].nothing"), 8);
    }
}
