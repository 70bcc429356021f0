//! The rule language: the YAML document as written by policy staff (`RuleDoc`), and the
//! compiled, checked form the evaluator runs (`Rule`). Documented in rules/README.md.

use std::sync::Arc;

use chrono::NaiveDate;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::calendar::{Counting, MonthDay, Period, Shift};
use crate::ids::RuleId;
use crate::population::EventKind;
use crate::resident::Channel;
use crate::script::Script;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Titles {
    pub ja: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

/// Rule categories; proxies are authorised per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Childcare,
    ChildHealth,
    Vaccination,
    HealthInsurance,
    Pension,
    LongTermCare,
    Elderly,
    Bereavement,
    Household,
    Education,
    Welfare,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Childcare => "childcare",
            Category::ChildHealth => "child_health",
            Category::Vaccination => "vaccination",
            Category::HealthInsurance => "health_insurance",
            Category::Pension => "pension",
            Category::LongTermCare => "long_term_care",
            Category::Elderly => "elderly",
            Category::Bereavement => "bereavement",
            Category::Household => "household",
            Category::Education => "education",
            Category::Welfare => "welfare",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    pub from: NaiveDate,
    #[serde(default)]
    pub to: Option<NaiveDate>,
}

impl Validity {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from <= d && self.to.is_none_or(|t| d <= t)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiscalYearAge {
    pub age: u32,
    pub on: MonthDay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annual {
    pub on: MonthDay,
}

/// What makes a rule fire, and so its occurrence date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    AgeAttained(u32),
    Birthday(u32),
    AgeMonths(u32),
    FiscalYearAge(FiscalYearAge),
    Event(EventKind),
    Annual(Annual),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyDoc {
    #[serde(default)]
    pub days_before: Option<u32>,
    #[serde(default)]
    pub days_after: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgeOn {
    #[default]
    Occurrence,
    Notify,
    FiscalYearEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgeRange {
    #[serde(default)]
    pub min: Option<i32>,
    #[serde(default)]
    pub max: Option<i32>,
    #[serde(default)]
    pub on: AgeOn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountRange {
    #[serde(default)]
    pub min: Option<usize>,
    #[serde(default)]
    pub max: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeEquals {
    pub name: String,
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SexIs {
    Male,
    Female,
}

/// A condition as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionDoc {
    Attribute(String),
    NotAttribute(String),
    AttributeEquals(AttributeEquals),
    Sex(SexIs),
    Age(AgeRange),
    HouseholdRemaining(CountRange),
    Script(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Subject,
    Guardians,
    Householder,
    Spouse,
    Survivors,
    Proxies,
}

impl Audience {
    /// The audience as a rule file writes it.
    pub fn name(self) -> &'static str {
        match self {
            Audience::Subject => "subject",
            Audience::Guardians => "guardians",
            Audience::Householder => "householder",
            Audience::Spouse => "spouse",
            Audience::Survivors => "survivors",
            Audience::Proxies => "proxies",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineFrom {
    #[default]
    Occurrence,
    Notify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineDoc {
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub months: Option<u32>,
    #[serde(default)]
    pub years: Option<u32>,
    #[serde(default)]
    pub counting: Option<Counting>,
    #[serde(default)]
    pub from: Option<DeadlineFrom>,
    #[serde(default)]
    pub shift: Option<Shift>,
    #[serde(default)]
    pub before_age: Option<u32>,
    #[serde(default)]
    pub before_age_months: Option<u32>,
    #[serde(default)]
    pub fiscal_year_end: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    pub ja: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

/// A rule file exactly as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: RuleId,
    pub version: u32,
    pub title: Titles,
    pub category: Category,
    pub legal_basis: String,
    pub valid: Validity,
    // Enums are written as one-key maps (`{ age_attained: 20 }`), not YAML tags.
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub trigger: Trigger,
    #[serde(default)]
    pub notify: Option<NotifyDoc>,
    #[serde(default, with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub conditions: Vec<ConditionDoc>,
    pub audience: Vec<Audience>,
    #[serde(default)]
    pub deadline: Option<DeadlineDoc>,
    /// A script giving the day the rule's parameters (and `as_of`) are taken at, when it is
    /// not the occurrence: e.g. the first month an allowance is paid.
    #[serde(default)]
    pub as_of: Option<String>,
    /// Field → a Rhai expression, or `{ value, label, kind, help, choices }` (`FieldDoc`).
    #[serde(default)]
    pub prefill: IndexMap<String, serde_yaml_ng::Value>,
    /// Whether the resident applies: `none` (nothing to do), `form` (the prefilled draft is
    /// submitted from the portal) or `{ counter: { place, bring } }` (at the counter).
    #[serde(default, with = "serde_yaml_ng::with::singleton_map_recursive")]
    pub application: Option<Application>,
    /// The department residents ask (an id in the `departments` parameter).
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub recommend: Vec<RuleId>,
    pub message: Messages,
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub critical: bool,
}

/// A prefill field written out: its value and how the form shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDoc {
    pub value: String,
    pub label: Label,
    #[serde(default)]
    pub help: Option<String>,
    #[serde(default)]
    pub kind: FieldKind,
    /// The options of a `choice` field.
    #[serde(default)]
    pub choices: Vec<String>,
    /// Worked out from the register and the rule: shown read-only with `help` (how).
    #[serde(default)]
    pub computed: bool,
}

/// A field's label: Japanese, and English if given (`label: 請求者` is the Japanese only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LabelDoc")]
pub struct Label {
    pub ja: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LabelDoc {
    Ja(String),
    Both {
        ja: String,
        #[serde(default)]
        en: Option<String>,
    },
}

impl From<LabelDoc> for Label {
    fn from(d: LabelDoc) -> Self {
        match d {
            LabelDoc::Ja(ja) => Label { ja, en: None },
            LabelDoc::Both { ja, en } => Label { ja, en },
        }
    }
}

/// What a prefill field holds, for the form: how it is entered, shown and checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    #[default]
    Text,
    /// Full-width katakana (a name's reading).
    Kana,
    /// `YYYY-MM-DD`.
    Date,
    /// Whole yen.
    Amount,
    /// One of `choices`.
    Choice,
    /// A person's name.
    Person,
}

impl FieldKind {
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Kana => "kana",
            FieldKind::Date => "date",
            FieldKind::Amount => "amount",
            FieldKind::Choice => "choice",
            FieldKind::Person => "person",
        }
    }
}

/// How the form shows one prefill field (its value is in the draft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// `None` only for a field written as a bare expression (`rules check` refuses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(default)]
    pub kind: FieldKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
    /// Read-only: worked out from the register and the rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub computed: bool,
}

/// A department residents ask about a notice (問い合わせ先), from the `departments`
/// parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Whether and how a resident applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Application {
    /// Nothing to do: the notice informs.
    None,
    /// The prefilled draft, submitted from the portal.
    #[default]
    Form,
    /// At the municipality's counter: where, and what to bring.
    Counter { place: String, bring: Vec<String> },
}

impl Application {
    pub fn name(&self) -> &'static str {
        match self {
            Application::None => "none",
            Application::Form => "form",
            Application::Counter { .. } => "counter",
        }
    }
}

/// A checked deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    Period {
        period: Period,
        counting: Counting,
        from: DeadlineFrom,
        /// `None`: the municipality's policy (`DeadlinePolicy`).
        shift: Option<Shift>,
    },
    BeforeAge(u32),
    BeforeAgeMonths(u32),
    FiscalYearEnd,
}

/// A compiled condition; `describe` (describe.rs) says it in words.
#[derive(Debug, Clone)]
pub enum Condition {
    Attribute(String),
    NotAttribute(String),
    AttributeEquals(String, serde_json::Value),
    Sex(SexIs),
    Age(AgeRange),
    HouseholdRemaining(CountRange),
    Script(Script),
}

/// Where a rule came from, for run-time error reports.
#[derive(Debug, Clone)]
pub struct RuleSource {
    pub file: String,
    /// (field path, line) for each field that can fail at run time.
    pub lines: Vec<(String, usize)>,
}

impl RuleSource {
    pub fn line_of(&self, field: &str) -> usize {
        self.lines
            .iter()
            .find(|(f, _)| f == field)
            .map_or(1, |(_, l)| *l)
    }
}

/// A compiled, checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: RuleId,
    pub version: u32,
    pub title: Titles,
    pub category: Category,
    pub legal_basis: String,
    pub valid: Validity,
    pub trigger: Trigger,
    /// Days from the occurrence to the notice: negative is before.
    pub notify_offset: i64,
    pub conditions: Vec<(String, Condition)>,
    pub audience: Vec<Audience>,
    pub deadline: Option<Deadline>,
    /// The day parameters are taken at, if not the occurrence (`RuleDoc::as_of`).
    pub as_of: Option<Script>,
    pub prefill: Vec<(String, Script)>,
    /// How the form shows each prefill field, by name.
    pub form: IndexMap<String, FieldSpec>,
    /// `None` when the rule does not say (`rules check` refuses that).
    pub application: Option<Application>,
    pub department: Option<String>,
    pub recommend: Vec<RuleId>,
    pub message: Messages,
    pub channels: Vec<Channel>,
    pub critical: bool,
    /// Parameters the rule's scripts read.
    pub params_used: Vec<String>,
    /// Script variables (of `script::SCOPE_VARS`) the rule's scripts read.
    pub script_vars: Vec<&'static str>,
    pub source: Arc<RuleSource>,
    /// SHA-256 of the file's bytes.
    pub content_hash: String,
}
