//! The one sandboxed Rhai engine: limits set, no I/O, no `eval`, date helpers that call the
//! calendar module. Scripts are compiled once into shared ASTs; evaluation never parses.

use std::sync::Arc;

use chrono::NaiveDate;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Scope, AST};

use crate::calendar;
use crate::resident::Resident;

/// Variables every script may read (see rules/README.md). Declared at compile time so a
/// misspelt variable is a load error.
pub const SCOPE_VARS: [&str; 9] = [
    "subject",
    "household",
    "householder",
    "guardians",
    "occurrence",
    "today",
    "event",
    "params",
    // The prefill fields computed so far (prefill only, in the order written).
    "draft",
];

/// Limits: generous for rules, small enough that a runaway script stops in milliseconds.
pub const MAX_OPERATIONS: u64 = 200_000;

pub struct ScriptEngine {
    engine: Engine,
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
}

/// A run-time script failure, already worded for the rule author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub message: String,
    /// Line inside the script, when Rhai knows it.
    pub line: Option<usize>,
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
        let mut engine = Engine::new();
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
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        type R<T> = Result<T, Box<EvalAltResult>>;
        // Rhai answers `false` when ordering values of different types, so a missing
        // attribute (`()`) compared with a number would silently fail every resident.
        // Make those comparisons errors, reported per rule and resident.
        fn mismatch<A, B>(_: A, _: B) -> R<bool> {
            Err(
                "ordered comparison between different types (a missing attribute is `()`: \
                 write `subject.attributes.x ?? 0`)"
                    .into(),
            )
        }
        for op in ["<", ">", "<=", ">="] {
            engine.register_fn(op, mismatch::<(), i64>);
            engine.register_fn(op, mismatch::<i64, ()>);
            engine.register_fn(op, mismatch::<(), f64>);
            engine.register_fn(op, mismatch::<f64, ()>);
            engine.register_fn(op, mismatch::<(), rhai::ImmutableString>);
            engine.register_fn(op, mismatch::<rhai::ImmutableString, ()>);
            engine.register_fn(op, mismatch::<i64, rhai::ImmutableString>);
            engine.register_fn(op, mismatch::<rhai::ImmutableString, i64>);
            engine.register_fn(op, mismatch::<(), ()>);
        }
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
        engine.register_fn("next_month_start", |d: &str| -> R<String> {
            Ok(calendar::next_month_start(date_arg(d)?).to_string())
        });
        engine.register_fn("month_start", |d: &str| -> R<String> {
            Ok(calendar::month_start(date_arg(d)?).to_string())
        });
        engine.register_fn("fiscal_year_end", |fy: i64| -> R<String> {
            Ok(calendar::fiscal_year_end(int_arg(fy, calendar::MAX_YEAR as u32)?).to_string())
        });
        Self { engine }
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
        self.engine
            .eval_ast_with_scope::<Dynamic>(scope, &script.ast)
            .map_err(|e| {
                let line = e.position().line();
                let message = match *e {
                    EvalAltResult::ErrorTooManyOperations(_) => format!(
                        "stopped after {MAX_OPERATIONS} operations (a loop that does not end?)"
                    ),
                    other => other.to_string(),
                };
                ScriptError { message, line }
            })
    }
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

/// A resident as a script sees it (see rules/README.md).
pub fn resident_map(r: &Resident) -> Dynamic {
    let mut m = Map::new();
    m.insert("id".into(), r.id.as_str().into());
    let mut name = Map::new();
    name.insert("kanji".into(), r.name.kanji.clone().into());
    name.insert("kana".into(), r.name.kana.clone().into());
    m.insert("name".into(), name.into());
    m.insert("birth_date".into(), r.birth_date.to_string().into());
    m.insert("sex".into(), i64::from(u8::from(r.sex)).into());
    m.insert("status".into(), r.status.name().into());
    m.insert(
        "status_date".into(),
        r.status
            .date()
            .map_or(Dynamic::UNIT, |d| d.to_string().into()),
    );
    let mut addr = Map::new();
    addr.insert("text".into(), r.address.text.clone().into());
    addr.insert(
        "local_gov_code".into(),
        r.address.local_gov_code.to_string().into(),
    );
    addr.insert(
        "postal_code".into(),
        r.address
            .postal_code
            .clone()
            .map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert("address".into(), addr.into());
    let mut hh = Map::new();
    if let Some(h) = &r.household {
        hh.insert("id".into(), h.id.as_str().into());
        hh.insert("relationship".into(), h.relationship.as_str().into());
    }
    m.insert("household".into(), hh.into());
    let attrs = rhai::serde::to_dynamic(&r.attributes).unwrap_or(Dynamic::UNIT);
    m.insert("attributes".into(), attrs);
    m.into()
}

/// Converts a script result to JSON for a prefilled draft.
pub fn to_json(d: &Dynamic) -> Result<serde_json::Value, String> {
    rhai::serde::from_dynamic::<serde_json::Value>(d).map_err(|e| e.to_string())
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
    }

    #[test]
    fn missing_map_properties_read_as_unit() {
        assert!(!eval("let m = #{}; m.kokuho ?? false")
            .unwrap()
            .as_bool()
            .unwrap());
        assert!(eval("let m = #{}; m.kokuho").unwrap().is_unit());
    }
}
