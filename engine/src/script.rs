//! The one sandboxed Rhai engine: limits set, no I/O, no `eval`, date helpers that call the
//! calendar module. Scripts are compiled once into shared ASTs; evaluation never parses.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Scope, AST};

use crate::calendar;
use crate::resident::Resident;

/// Variables every script may read (see rules/README.md). Declared at compile time so a
/// misspelt variable is a load error.
pub const SCOPE_VARS: [&str; 11] = [
    "subject",
    "household",
    "householder",
    "guardians",
    "occurrence",
    "today",
    "event",
    "params",
    // The notice's deadline ("YYYY-MM-DD"), or () for a rule without one.
    "deadline",
    // The day the parameters are taken at: the rule's `as_of`, or else the occurrence.
    "as_of",
    // The prefill fields computed so far (prefill only, in the order written).
    "draft",
];

/// Limits: generous for rules, small enough that a runaway script stops in milliseconds.
pub const MAX_OPERATIONS: u64 = 200_000;

pub struct ScriptEngine {
    engine: Engine,
    /// Every function a script can call, by name and number of arguments: a call to
    /// anything else fails for every resident, which the load-time probe reports.
    known: std::collections::HashSet<(String, usize)>,
}

impl std::fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptEngine")
    }
}

/// A compiled expression, shared across threads.
#[derive(Debug, Clone)]
pub struct Script {
    pub source: String,
    ast: Arc<AST>,
    /// The fields of `subject` the script can read: a daily run builds only these.
    pub subject_fields: Fields,
    /// For a script that is only `subject.a.b...`: the property names, read without Rhai.
    path: Option<Vec<String>>,
    /// Running it changes nothing in its scope (no assignment, no method call on a scope
    /// variable) and reads nothing outside it (no import, no clock).
    pub pure: bool,
    /// Pure, and its result depends only on `occurrence`, `today`, `params` and the
    /// `SCALAR_FIELDS` of `subject`: subjects alike in those get the same result.
    pub reusable: bool,
}

/// Subject fields cheap to compare, so results depending only on them can be reused.
pub const SCALAR_FIELDS: Fields = Fields(0b11_1100);

/// The text after each use of the variable `var` in `source`: whole words only, and not a
/// property of something else (`x.subject`).
fn uses_of<'a>(source: &'a str, var: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    source.match_indices(var).filter_map(move |(i, _)| {
        let before = source[..i].chars().next_back();
        let rest = &source[i + var.len()..];
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let inside =
            before.is_some_and(|c| word(c) || c == '.') || rest.chars().next().is_some_and(word);
        (!inside).then_some(rest)
    })
}

/// See `Script::pure`; judged from the text, erring towards "not pure".
fn is_pure(source: &str) -> bool {
    if source.contains("import") || source.contains("timestamp") {
        return false;
    }
    let b = source.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c != b'=' {
            continue;
        }
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        let next = b.get(i + 1).copied().unwrap_or(b' ');
        let shift = i > 1 && (&b[i - 2..i] == b"<<" || &b[i - 2..i] == b">>");
        let comparison =
            next == b'=' || prev == b'=' || (matches!(prev, b'!' | b'<' | b'>') && !shift);
        if !comparison {
            return false;
        }
    }
    // A method call (or indexing, which may lead to one) on a scope variable may change it.
    for var in SCOPE_VARS {
        for mut rest in uses_of(source, var) {
            loop {
                rest = rest.trim_start();
                let Some(r) = rest.strip_prefix("?.").or_else(|| rest.strip_prefix('.')) else {
                    break;
                };
                let r = r.trim_start();
                let end = r
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(r.len());
                rest = &r[end..];
            }
            if rest.starts_with('(') || rest.starts_with('[') {
                return false;
            }
        }
    }
    true
}

impl Script {
    /// For a script that is only `subject.field...`: its value for `r`, built from that
    /// field alone. Valid only while the scope's `subject` is unchanged (see `pure`);
    /// `None` when Rhai must run (to report an error, or for any other script).
    pub fn subject_path_value(&self, r: &Resident) -> Option<Dynamic> {
        let (top, rest) = self.path.as_deref()?.split_first()?;
        let i = RESIDENT_FIELDS.iter().position(|f| f == top)?;
        // The common `subject.name.kanji`: one value, without building the map around it.
        if let [key] = rest {
            if let Some(v) = leaf(r, top, key) {
                return Some(v);
            }
        }
        read_path(&resident_field(r, i), rest)
    }
}

/// The top-level fields of a resident as a script sees it (see `resident_map`).
pub const RESIDENT_FIELDS: [&str; 9] = [
    "id",
    "name",
    "birth_date",
    "sex",
    "status",
    "status_date",
    "address",
    "household",
    "attributes",
];

/// A set of `RESIDENT_FIELDS`, one bit each in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields(u16);

impl Fields {
    pub const NONE: Fields = Fields(0);
    pub const ALL: Fields = Fields((1 << RESIDENT_FIELDS.len()) - 1);

    pub fn union(self, other: Fields) -> Fields {
        Fields(self.0 | other.0)
    }

    /// One field of `RESIDENT_FIELDS`, by name; a name that is not one fails the build.
    pub const fn of(field: &str) -> Fields {
        const fn same(a: &[u8], b: &[u8]) -> bool {
            if a.len() != b.len() {
                return false;
            }
            let mut i = 0;
            while i < a.len() {
                if a[i] != b[i] {
                    return false;
                }
                i += 1;
            }
            true
        }
        let mut i = 0;
        while i < RESIDENT_FIELDS.len() {
            if same(RESIDENT_FIELDS[i].as_bytes(), field.as_bytes()) {
                return Fields(1 << i);
            }
            i += 1;
        }
        panic!("not one of RESIDENT_FIELDS")
    }

    /// Whether every field of `other` is in the set (a bit test: this runs per resident).
    pub fn contains(self, other: Fields) -> bool {
        self.0 & other.0 == other.0
    }

    fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    /// The fields of the resident map `var` that `source` can read. Only `var.field` and
    /// `var?.field` with a known field narrow the set; any other use of `var` (indexing,
    /// method calls, passing it whole, an unknown property) reads all of them, so a guess
    /// errs towards building too much, never too little.
    pub fn read_by(source: &str, var: &str) -> Fields {
        let mut out = Fields::NONE;
        for rest in uses_of(source, var) {
            let rest = rest.trim_start();
            let Some(rest) = rest.strip_prefix("?.").or_else(|| rest.strip_prefix('.')) else {
                return Fields::ALL;
            };
            let rest = rest.trim_start();
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let (name, after) = rest.split_at(end);
            match RESIDENT_FIELDS.iter().position(|f| *f == name) {
                Some(bit) if !after.trim_start().starts_with('(') => out.0 |= 1 << bit,
                _ => return Fields::ALL,
            }
        }
        out
    }
}

/// The value at `path` inside map `v`, as Rhai's property access gives it; `None` where Rhai
/// would fail (a property of something that is not a map), to let Rhai word the error.
fn read_path(v: &Dynamic, path: &[String]) -> Option<Dynamic> {
    let Some((first, rest)) = path.split_first() else {
        return Some(v.clone());
    };
    let m = v.as_map_ref().ok()?;
    match m.get(first.as_str()) {
        Some(inner) => read_path(inner, rest),
        None if rest.is_empty() => Some(Dynamic::UNIT),
        None => None,
    }
}

/// `subject.a.b...` and nothing else: the property names.
fn subject_path(source: &str) -> Option<Vec<String>> {
    let rest = source.trim().strip_prefix("subject.")?;
    let parts: Vec<String> = rest.split('.').map(str::to_owned).collect();
    parts
        .iter()
        .all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .then_some(parts)
}

/// A run-time script failure, already worded for the rule author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub message: String,
    /// Line inside the script, when Rhai knows it.
    pub line: Option<usize>,
    /// The failure does not depend on the resident: an operation budget run out on the
    /// probe, a function that does not exist or is called with the wrong number of
    /// arguments. The load-time probe reports these; the others are per resident.
    pub for_everyone: bool,
}

fn date_arg(s: &str) -> Result<NaiveDate, Box<EvalAltResult>> {
    let d = s
        .parse::<NaiveDate>()
        .map_err(|_| format!("{s:?} is not a date \"YYYY-MM-DD\""))?;
    if !calendar::supported(d) {
        return Err(format!(
            "{s} is outside the supported years {}-{}",
            calendar::MIN_YEAR,
            calendar::MAX_YEAR
        )
        .into());
    }
    Ok(d)
}

/// An integer within ±`max`, so that date helpers cannot overflow.
fn int_arg(n: i64, max: u32) -> Result<i32, Box<EvalAltResult>> {
    if n.unsigned_abs() > u64::from(max) {
        return Err(format!("{n} is out of range (at most {max})").into());
    }
    Ok(n as i32)
}

impl Default for ScriptEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptEngine {
    pub fn new() -> Self {
        use rhai::packages::{
            BasicArrayPackage, BasicBlobPackage, BasicMapPackage, BasicMathPackage,
            BitFieldPackage, CorePackage, LogicPackage, MoreStringPackage, Package,
        };
        // The standard library without its time package: a script must not read the clock
        // (`timestamp()`), or the same day would decide differently on a rerun.
        let mut engine = Engine::new_raw();
        // As `Engine::new` does: property names and short strings are shared, not copied.
        engine.set_max_strings_interned(256);
        for module in [
            CorePackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicBlobPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(module);
        }
        engine
            .set_max_operations(MAX_OPERATIONS)
            .set_max_call_levels(32)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(10_000)
            .set_max_array_size(10_000)
            .set_max_map_size(1_000)
            .set_max_variables(256)
            .set_max_functions(64)
            .set_strict_variables(true)
            // Registered operators (below) must win over the built-in mismatched-type fallback.
            .set_fast_operators(false);
        engine.disable_symbol("eval");
        // A rule does not fail on purpose: a condition answers false, a value is ().
        engine.disable_symbol("throw");
        // `import` would load modules from files: no script reads anything outside its scope.
        engine.disable_symbol("import");
        engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        type R<T> = Result<T, Box<EvalAltResult>>;
        // Rhai answers `false` when ordering values of different types, so a missing
        // attribute (`()`) compared with a number would silently fail every resident.
        // Make every such comparison an error, reported per rule and resident; integers
        // and floats still compare as numbers.
        fn mismatch<A, B>(_: A, _: B) -> R<bool> {
            Err(
                "ordered comparison between different types (a missing attribute is `()`: \
                 write `subject.attributes.x ?? 0`)"
                    .into(),
            )
        }
        macro_rules! refuse_ordering {
            ($op:expr; $($a:ty, $b:ty);* $(;)?) => {
                $( engine.register_fn($op, mismatch::<$a, $b>); )*
            };
        }
        type S = rhai::ImmutableString;
        for op in ["<", ">", "<=", ">="] {
            refuse_ordering!(op;
                (), (); (), i64; (), f64; (), S; (), bool; (), Map; (), rhai::Array;
                i64, (); i64, S; i64, bool; i64, Map; i64, rhai::Array;
                f64, (); f64, S; f64, bool; f64, Map; f64, rhai::Array;
                S, (); S, i64; S, f64; S, bool; S, Map; S, rhai::Array;
                bool, (); bool, i64; bool, f64; bool, S; bool, Map; bool, rhai::Array;
                Map, (); Map, i64; Map, f64; Map, S; Map, bool; Map, rhai::Array;
                rhai::Array, (); rhai::Array, i64; rhai::Array, f64; rhai::Array, S;
                rhai::Array, bool; rhai::Array, Map;
            );
        }
        // Rhai's own `sort` and `dedup` with a closure drop the closure's errors (an
        // endless comparator would "sort" anyway): these propagate them.
        fn sort_by(ctx: rhai::NativeCallContext, a: &mut rhai::Array, f: rhai::FnPtr) -> R<()> {
            let mut failed = None;
            a.sort_by(|x, y| {
                if failed.is_some() {
                    return std::cmp::Ordering::Equal;
                }
                match f.call_within_context::<Dynamic>(&ctx, (x.clone(), y.clone())) {
                    Ok(v) => match v.as_int() {
                        Ok(n) => n.cmp(&0),
                        Err(_) => match v.as_bool() {
                            Ok(true) => std::cmp::Ordering::Less,
                            Ok(false) => std::cmp::Ordering::Greater,
                            Err(t) => {
                                failed = Some(
                                    format!("a sort comparator must return a number, not {t}")
                                        .into(),
                                );
                                std::cmp::Ordering::Equal
                            }
                        },
                    },
                    Err(e) => {
                        failed = Some(e);
                        std::cmp::Ordering::Equal
                    }
                }
            });
            failed.map_or(Ok(()), Err)
        }
        engine.register_fn("sort", sort_by);
        engine.register_fn("sort_by", sort_by);
        engine.register_fn(
            "dedup",
            |ctx: rhai::NativeCallContext, a: &mut rhai::Array, f: rhai::FnPtr| -> R<()> {
                let mut kept: rhai::Array = Vec::with_capacity(a.len());
                for x in a.drain(..) {
                    let same = match kept.last() {
                        Some(last) => f
                            .call_within_context::<Dynamic>(&ctx, (last.clone(), x.clone()))?
                            .as_bool()
                            .unwrap_or(false),
                        None => false,
                    };
                    if !same {
                        kept.push(x);
                    }
                }
                *a = kept;
                Ok(())
            },
        );
        engine.register_fn("attain", |b: &str, n: i64| -> R<String> {
            Ok(calendar::attain(date_arg(b)?, int_arg(n, calendar::MAX_AGE_YEARS)?).to_string())
        });
        engine.register_fn("attainment_month", |b: &str, n: i64| -> R<String> {
            let n = int_arg(n, calendar::MAX_AGE_YEARS)?;
            Ok(calendar::attainment_month(date_arg(b)?, n).to_string())
        });
        engine.register_fn("anniversary", |b: &str, n: i64| -> R<String> {
            Ok(
                calendar::anniversary(date_arg(b)?, int_arg(n, calendar::MAX_AGE_YEARS)?)
                    .to_string(),
            )
        });
        engine.register_fn("age_on", |b: &str, d: &str| -> R<i64> {
            Ok(i64::from(calendar::age_on(date_arg(b)?, date_arg(d)?)))
        });
        engine.register_fn("fiscal_year", |d: &str| -> R<i64> {
            Ok(i64::from(calendar::fiscal_year(date_arg(d)?)))
        });
        engine.register_fn("fy_end_age", |b: &str, fy: i64| -> R<i64> {
            Ok(i64::from(calendar::fy_end_age(
                date_arg(b)?,
                int_arg(fy, calendar::MAX_YEAR as u32)?,
            )))
        });
        engine.register_fn("month_anniversary", |b: &str, m: i64| -> R<String> {
            let m = int_arg(m, calendar::MAX_MONTHS)?;
            let m = u32::try_from(m).map_err(|_| format!("{m} months must not be negative"))?;
            Ok(calendar::month_anniversary(date_arg(b)?, m).to_string())
        });
        engine.register_fn("add_days", |d: &str, n: i64| -> R<String> {
            Ok(
                calendar::add_days(date_arg(d)?, i64::from(int_arg(n, calendar::MAX_DAYS)?))
                    .to_string(),
            )
        });
        engine.register_fn("day_after", |d: &str| -> R<String> {
            Ok(calendar::day_after(date_arg(d)?).to_string())
        });
        engine.register_fn("day_before", |d: &str| -> R<String> {
            Ok(calendar::day_before(date_arg(d)?).to_string())
        });
        engine.register_fn("next_month_start", |d: &str| -> R<String> {
            Ok(calendar::next_month_start(date_arg(d)?).to_string())
        });
        engine.register_fn("month_start", |d: &str| -> R<String> {
            Ok(calendar::month_start(date_arg(d)?).to_string())
        });
        // "2026年6月": the month a payment starts, as a notice says it.
        engine.register_fn("month_label", |d: &str| -> R<String> {
            let d = date_arg(d)?;
            Ok(format!("{}年{}月", d.year(), d.month()))
        });
        engine.register_fn("fiscal_year_end", |fy: i64| -> R<String> {
            Ok(calendar::fiscal_year_end(int_arg(fy, calendar::MAX_YEAR as u32)?).to_string())
        });
        engine.register_fn("fiscal_year_start", |fy: i64| -> R<String> {
            Ok(calendar::fiscal_year_start(int_arg(fy, calendar::MAX_YEAR as u32)?).to_string())
        });
        let known = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|sig| name_and_arity(sig))
            .collect();
        Self { engine, known }
    }

    /// Whether a failed call to a function, as Rhai names it ("name (type, type)"), fails
    /// whatever the data: no function of that name, or none taking that many arguments.
    /// Operators and property accessors fail by the values' types, which is data.
    fn call_fails_for_everyone(&self, call: &str) -> bool {
        let Some((name, args)) = call.split_once(' ') else {
            return false;
        };
        if !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return false;
        }
        let inner = args.trim().trim_start_matches('(').trim_end_matches(')');
        let arity = if inner.trim().is_empty() {
            0
        } else {
            inner.split(", ").count()
        };
        !self.known.contains(&(name.to_owned(), arity))
    }

    fn fails_for_everyone(&self, e: &EvalAltResult) -> bool {
        match e {
            EvalAltResult::ErrorTooManyOperations(_) | EvalAltResult::ErrorStackOverflow(_) => true,
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => self.fails_for_everyone(inner),
            EvalAltResult::ErrorFunctionNotFound(call, _) => self.call_fails_for_everyone(call),
            _ => false,
        }
    }

    /// Compiles a script; the error carries the line and column inside the script.
    pub fn compile(&self, source: &str) -> Result<Script, (String, usize, usize)> {
        let mut scope = Scope::new();
        for v in SCOPE_VARS {
            scope.push_dynamic(v, Dynamic::UNIT);
        }
        match self.engine.compile_with_scope(&scope, source) {
            Ok(ast) => Ok(Script {
                source: source.to_owned(),
                ast: Arc::new(ast),
                subject_fields: Fields::read_by(source, "subject"),
                path: subject_path(source),
                pure: is_pure(source),
                reusable: is_pure(source)
                    && Fields::read_by(source, "subject").union(SCALAR_FIELDS) == SCALAR_FIELDS
                    // The deadline and `as_of` follow from more than the memo key holds.
                    && !["household", "householder", "guardians", "event", "draft", "deadline", "as_of"]
                        .iter()
                        .any(|v| mentions(source, v)),
            }),
            Err(e) => {
                let pos = e.position();
                Err((
                    e.err_type().to_string(),
                    pos.line().unwrap_or(1),
                    pos.position().unwrap_or(1),
                ))
            }
        }
    }

    /// Runs a script with the given scope.
    pub fn run(&self, script: &Script, scope: &mut Scope) -> Result<Dynamic, ScriptError> {
        // A plain property path reads the maps directly, as Rhai would (a missing property
        // is `()`); anything else, such as a property of a string, goes to Rhai for its error.
        if let Some(v) = script
            .path
            .as_deref()
            .zip(scope.get("subject"))
            .and_then(|(path, subject)| read_path(subject, path))
        {
            return Ok(v);
        }
        self.engine
            .eval_ast_with_scope::<Dynamic>(scope, &script.ast)
            .map_err(|e| {
                let line = e.position().line();
                let endless = ends_endless(&e);
                let message = if endless {
                    format!("stopped after {MAX_OPERATIONS} operations (a loop that does not end?)")
                } else {
                    e.to_string()
                };
                ScriptError {
                    message,
                    line,
                    for_everyone: self.fails_for_everyone(&e),
                }
            })
    }
}

/// Whether the failure is an operation budget run out, also inside a called closure.
fn ends_endless(e: &EvalAltResult) -> bool {
    match e {
        EvalAltResult::ErrorTooManyOperations(_) => true,
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => ends_endless(inner),
        _ => false,
    }
}

/// The name and number of parameters in a signature as Rhai writes it:
/// `attain(b: &str, n: i64) -> String`.
fn name_and_arity(sig: &str) -> Option<(String, usize)> {
    let (name, rest) = sig.split_once('(')?;
    let mut depth = 0usize;
    let mut commas = 0usize;
    let mut any = false;
    for c in rest.chars() {
        match c {
            '(' | '<' | '[' => depth += 1,
            ')' if depth == 0 => break,
            ')' | '>' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => commas += 1,
            c if !c.is_whitespace() => any = true,
            _ => {}
        }
    }
    Some((name.trim().to_owned(), if any { commas + 1 } else { 0 }))
}

/// Whether `source` names the variable `var` (as a whole word, not as a map property).
/// Rhai has no dynamic variable lookup once `eval` is off, so this is exact enough to decide
/// which variables a script can read; a false positive only costs time.
pub fn mentions(source: &str, var: &str) -> bool {
    source.match_indices(var).any(|(i, _)| {
        let before = source[..i].chars().next_back();
        let after = source[i + var.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
            && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// A script's value as a date: a "YYYY-MM-DD" string, or `None`.
pub fn to_date(d: &Dynamic) -> Option<NaiveDate> {
    d.clone().into_immutable_string().ok()?.parse().ok()
}

/// The name of a value's type, in words for an error message.
pub fn type_name(d: &Dynamic) -> &'static str {
    if d.is_unit() {
        "() (nothing)"
    } else if d.is_bool() {
        "bool"
    } else if d.is_int() {
        "integer"
    } else if d.is_float() {
        "float"
    } else if d.is_string() {
        "string"
    } else if d.is_array() {
        "array"
    } else if d.is_map() {
        "map"
    } else {
        "value"
    }
}

/// What a script reads instead of the name and address of someone under a support measure
/// (支援措置) when others can read the draft (docs/support-measures.md).
pub const WITHHELD: &str = "（非表示）";

/// A resident as a script sees it (see rules/README.md).
pub fn resident_map(r: &Resident) -> Dynamic {
    resident_map_with(r, Fields::ALL)
}

/// A resident with only `fields` (the others absent, so reading them gives `()`): what a
/// rule's scripts are given when the rule reads no more than that.
pub fn resident_map_with(r: &Resident, fields: Fields) -> Dynamic {
    fields_map(r, fields).into()
}

/// A resident under a support measure as a script sees them when the draft is read by
/// others (docs/support-measures.md): the name and the address text read as `WITHHELD`,
/// so rules that list or join names keep working; the address codes are absent (`()`),
/// being whereabouts too; `withheld` is `true`. Dates, 続柄 and attributes stay: conditions
/// and ages still need them, and they do not say where the person lives.
pub fn resident_map_withheld(r: &Resident) -> Dynamic {
    let mut m = fields_map(r, Fields::ALL);
    let mut name = Map::new();
    for k in NAME_KEYS {
        name.insert(k.into(), WITHHELD.into());
    }
    let mut address = Map::new();
    address.insert("text".into(), WITHHELD.into());
    m.insert("name".into(), name.into());
    m.insert("address".into(), address.into());
    m.insert("withheld".into(), true.into());
    m.into()
}

fn fields_map(r: &Resident, fields: Fields) -> Map {
    let mut m = Map::new();
    for (i, key) in RESIDENT_FIELDS.iter().enumerate() {
        if fields.has(i) {
            m.insert((*key).into(), resident_field(r, i));
        }
    }
    m
}

/// The keys of the maps inside a resident map, and their values (`leaf`).
const NAME_KEYS: [&str; 2] = ["kanji", "kana"];
const ADDRESS_KEYS: [&str; 3] = ["text", "local_gov_code", "postal_code"];
const HOUSEHOLD_KEYS: [&str; 2] = ["id", "relationship"];

/// `field.key` of a resident map, for the fields that are maps; `None` where absent.
fn leaf(r: &Resident, field: &str, key: &str) -> Option<Dynamic> {
    Some(match (field, key) {
        ("name", "kanji") => r.name.kanji.clone().into(),
        ("name", "kana") => r.name.kana.clone().into(),
        ("address", "text") => r.address.text.clone().into(),
        ("address", "local_gov_code") => r.address.local_gov_code.to_string().into(),
        ("address", "postal_code") => r
            .address
            .postal_code
            .clone()
            .map_or(Dynamic::UNIT, Dynamic::from),
        ("household", "id") => r.household.as_ref()?.id.as_str().into(),
        ("household", "relationship") => r.household.as_ref()?.relationship.as_str().into(),
        _ => return None,
    })
}

/// Field `i` of `RESIDENT_FIELDS`.
fn resident_field(r: &Resident, i: usize) -> Dynamic {
    let map = |field: &str, keys: &[&str]| -> Dynamic {
        let mut m = Map::new();
        for k in keys {
            if let Some(v) = leaf(r, field, k) {
                m.insert((*k).into(), v);
            }
        }
        m.into()
    };
    match RESIDENT_FIELDS[i] {
        "id" => r.id.as_str().into(),
        "name" => map("name", &NAME_KEYS),
        "birth_date" => r.birth_date.to_string().into(),
        "sex" => i64::from(u8::from(r.sex)).into(),
        "status" => r.status.name().into(),
        "status_date" => r
            .status
            .date()
            .map_or(Dynamic::UNIT, |d| d.to_string().into()),
        "address" => map("address", &ADDRESS_KEYS),
        "household" => map("household", &HOUSEHOLD_KEYS),
        "attributes" => rhai::serde::to_dynamic(&r.attributes).unwrap_or(Dynamic::UNIT),
        other => unreachable!("{other} is in RESIDENT_FIELDS"),
    }
}

/// A script value that has no JSON form (a function pointer, a timestamp…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotJson(String);

/// Converts a script result to JSON for a prefilled draft.
pub fn to_json(d: &Dynamic) -> Result<serde_json::Value, NotJson> {
    // Most draft fields are strings or numbers: skip the serde round trip for those.
    if let Ok(s) = d.as_immutable_string_ref() {
        return Ok(serde_json::Value::String(s.as_str().to_owned()));
    }
    if let Ok(n) = d.as_int() {
        return Ok(n.into());
    }
    if let Ok(b) = d.as_bool() {
        return Ok(b.into());
    }
    rhai::serde::from_dynamic::<serde_json::Value>(d).map_err(|e| NotJson(e.to_string()))
}

/// Converts JSON (parameter values, attributes) to a script value.
pub fn from_json(v: &serde_json::Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str) -> Result<Dynamic, ScriptError> {
        let e = ScriptEngine::new();
        let s = e.compile(src).map_err(|(m, _, _)| ScriptError {
            message: m,
            line: None,
            for_everyone: false,
        })?;
        let mut scope = Scope::new();
        for v in SCOPE_VARS {
            scope.push_dynamic(v, Dynamic::UNIT);
        }
        e.run(&s, &mut scope)
    }

    #[test]
    fn helpers_use_the_age_law() {
        assert_eq!(
            eval(r#"attain("2006-04-01", 20)"#)
                .unwrap()
                .into_string()
                .unwrap(),
            "2026-03-31"
        );
        assert_eq!(
            eval(r#"age_on("2008-02-29", "2027-02-28")"#)
                .unwrap()
                .as_int()
                .unwrap(),
            18
        );
        assert_eq!(
            eval(r#"fy_end_age("1961-04-01", 2025)"#)
                .unwrap()
                .as_int()
                .unwrap(),
            65
        );
        assert_eq!(
            eval(r#"next_month_start("2026-03-31")"#)
                .unwrap()
                .into_string()
                .unwrap(),
            "2026-04-01"
        );
        assert!(eval(r#"attain("2026-02-30", 1)"#)
            .unwrap_err()
            .message
            .contains("is not a date"));
    }

    #[test]
    fn the_sandbox_holds() {
        let e = eval("let x = 0; loop { x += 1; }").unwrap_err();
        assert!(e.message.contains("operations"), "{}", e.message);
        assert!(eval(r#"eval("1")"#).is_err());
        // Undeclared variables are compile errors, not silent unit values.
        let c = ScriptEngine::new().compile("subjectt.id").unwrap_err();
        assert!(c.0.contains("subjectt"), "{}", c.0);
        assert!(eval("fn f(n) { f(n + 1) } f(0)").is_err());
        assert!(eval(r#"let s = "x"; loop { s += s; }"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.rhai"), "fn f() { 1 }").unwrap();
        let path = dir.path().join("m").display().to_string();
        assert!(
            ScriptEngine::new()
                .compile(&format!("import \"{path}\" as m; m::f()"))
                .is_err(),
            "import is refused when the rule is compiled"
        );
    }

    #[test]
    fn missing_map_properties_read_as_unit() {
        assert!(!eval("let m = #{}; m.kokuho ?? false")
            .unwrap()
            .as_bool()
            .unwrap());
        assert!(eval("let m = #{}; m.kokuho").unwrap().is_unit());
    }

    #[test]
    fn fields_read_err_towards_all() {
        let read = |src| Fields::read_by(src, "subject");
        let f = read("fy_end_age(subject.birth_date, 2025) > 70 && subject?.sex == 1");
        assert!(
            f.contains(Fields::of("birth_date"))
                && f.contains(Fields::of("sex"))
                && !f.contains(Fields::of("name"))
        );
        assert_eq!(read("fiscal_year(occurrence)"), Fields::NONE);
        let name = read("subject . name . len ()");
        assert!(name.contains(Fields::of("name")) && !name.contains(Fields::of("id")));
        // The word inside another name, or as another map's property, is not the variable.
        assert_eq!(read("event.subject == subjects"), Fields::NONE);
        for whole in [
            "subject",
            r#"subject["name"]"#,
            "subject.keys()",
            "subject.nickname",
            "subject . keys ()",
            "let s = subject; s.name",
        ] {
            assert_eq!(read(whole), Fields::ALL, "{whole}");
        }
    }

    #[test]
    fn json_of_plain_values_matches_serde() {
        for v in [
            Dynamic::from("山田"),
            Dynamic::from(42_i64),
            Dynamic::from(true),
            Dynamic::UNIT,
        ] {
            let serde = rhai::serde::from_dynamic::<serde_json::Value>(&v).unwrap();
            assert_eq!(to_json(&v).unwrap(), serde, "{v}");
        }
    }

    #[test]
    fn purity_is_judged_conservatively() {
        let e = ScriptEngine::new();
        let script = |src| e.compile(src).unwrap();
        let pure = script("fy_end_age(subject.birth_date, fiscal_year(occurrence)) >= 75");
        assert!(pure.pure && pure.reusable);
        // Reads a field that differs between every resident: pure, but not reusable.
        let named = script("subject.name.kanji != \"\"");
        assert!(named.pure && !named.reusable);
        assert!(!script("params.x ?? 0 <= 3 && draft.a == 1").reusable);
        for impure in [
            "subject.name.kanji = \"x\"; true",
            "let n = 1; n",
            "subject.attributes.clear(); true",
            "occurrence.trim(); true",
            "subject.attributes[\"a\"] <<= 1",
        ] {
            assert!(!script(impure).pure, "{impure}");
        }
    }

    #[test]
    fn a_subject_path_reads_like_rhai() {
        let e = ScriptEngine::new();
        let r: Resident = serde_json::from_value(serde_json::json!({
            "id": "R1",
            "name": {"kanji": "山田 太郎", "kana": "ヤマダ タロウ"},
            "birth_date": "1960-04-02",
            "sex": 1,
            "status": {"kind": "resident"},
            "address": {"local_gov_code": "141003", "text": "横浜市"},
            "attributes": {"kokuho": true}
        }))
        .unwrap();
        for src in [
            "subject.name.kanji",
            "subject.birth_date",
            "subject.address.postal_code",
            "subject.household.id",
            "subject.attributes.kokuho",
            "subject.attributes.missing",
            "subject.name",
        ] {
            let s = e.compile(src).unwrap();
            let mut scope = Scope::new();
            for v in SCOPE_VARS {
                scope.push_dynamic(v, Dynamic::UNIT);
            }
            scope.set_value("subject", resident_map(&r));
            let rhai = e
                .engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &s.ast)
                .unwrap();
            let direct = s.subject_path_value(&r).expect("a plain path");
            assert_eq!(direct.to_string(), rhai.to_string(), "{src}");
            assert_eq!(direct.type_name(), rhai.type_name(), "{src}");
        }
        // A property of a string is Rhai's error to report.
        assert!(e
            .compile("subject.birth_date.year")
            .unwrap()
            .subject_path_value(&r)
            .is_none());
    }
}
