//! The invariants ARCHITECTURE.md states, checked by reading the tree (as rust-analyzer's
//! tidy does): an invariant nobody checks is a wish. Each rule is a function from a file to
//! its violations; `each_rule_catches_its_counter_example` shows that every rule fails when
//! the thing it forbids is put back.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    path: String,
    line: usize,
    rule: &'static str,
    text: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path,
            self.line,
            self.rule,
            self.text.trim()
        )
    }
}

/// A file of the tree: its path from the root (with `/`) and its text.
struct File {
    path: String,
    text: String,
}

impl File {
    fn new(path: &str, text: &str) -> Self {
        Self {
            path: path.to_owned(),
            text: text.to_owned(),
        }
    }

    fn under(&self, dir: &str) -> bool {
        self.path.starts_with(dir)
    }

    /// Test and benchmark code: integration tests, benches, and `#[cfg(test)]` modules.
    fn is_test_file(&self) -> bool {
        self.path.starts_with("tests/")
            || self.path.starts_with("benches/")
            || self.path.contains("/tests/")
    }

    /// The product code of the file: all of it, up to its `#[cfg(test)]` module; nothing
    /// for test files.
    fn product_code(&self) -> &str {
        if self.is_test_file() {
            return "";
        }
        match self.text.find("#[cfg(test)]") {
            Some(i) => &self.text[..i],
            None => &self.text,
        }
    }
}

fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git" | "node_modules") {
                files_under(&p, ext, out);
            }
        } else if name.ends_with(ext) {
            out.push(p);
        }
    }
}

/// Every file ending in `ext` in the tree, but this one.
fn tree(ext: &str) -> Vec<File> {
    let root = root();
    let mut paths = Vec::new();
    files_under(&root, ext, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let rel = p
                .strip_prefix(&root)
                .ok()?
                .to_string_lossy()
                .replace('\\', "/");
            (rel != "tests/tidy.rs").then(|| {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                File { path: rel, text }
            })
        })
        .collect()
}

/// `text` with string literals emptied and comments removed, line breaks kept, so that
/// line numbers still hold and only code is searched.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            'r' if chars.peek() == Some(&'#') => {
                // A raw string r#"…"#.
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    out.extend(std::iter::repeat_n('#', hashes));
                    continue;
                }
                chars.next();
                out.push_str("\"\"");
                let end: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut seen = String::new();
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    seen.push(c);
                    if seen.ends_with(&end) {
                        break;
                    }
                }
            }
            '"' => {
                out.push_str("\"\"");
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
            }
            '\'' => {
                // A char literal ('"', '\'') or a lifetime: keep lifetimes, drop chars.
                let rest: String = chars.clone().take(3).collect();
                let is_char = rest.starts_with('\\') || rest.chars().nth(1) == Some('\'');
                if is_char {
                    let mut escaped = false;
                    for c in chars.by_ref() {
                        if escaped {
                            escaped = false;
                        } else if c == '\\' {
                            escaped = true;
                        } else if c == '\'' {
                            break;
                        }
                    }
                    out.push_str("' '");
                } else {
                    out.push('\'');
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Each line of `text` containing one of `needles`, as violations of `rule`.
fn lines_with(file: &File, text: &str, needles: &[&str], rule: &'static str) -> Vec<Violation> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| needles.iter().any(|n| l.contains(n)))
        .map(|(i, l)| Violation {
            path: file.path.clone(),
            line: i + 1,
            rule,
            text: l.to_owned(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

/// Only the calendar does date arithmetic; instants (leases, retries) are the clock's.
fn date_arithmetic(file: &File) -> Vec<Violation> {
    const DAYS: &[&str] = &[
        "succ_opt",
        "pred_opt",
        "checked_add_days",
        "checked_sub_days",
        "checked_add_months",
        "checked_sub_months",
        "num_days",
        "Days::new",
        "Months::new",
    ];
    const INSTANTS: &[&str] = &[
        "chrono::Duration",
        "TimeDelta",
        "signed_duration_since",
        "checked_add_signed",
        "checked_sub_signed",
        "num_seconds",
    ];
    if file.path == "engine/src/calendar.rs" {
        return Vec::new();
    }
    let code = code_only(&file.text);
    let mut out = lines_with(file, &code, DAYS, "date arithmetic outside the calendar");
    if file.path != "engine/src/clock.rs" {
        out.extend(lines_with(
            file,
            &code,
            INSTANTS,
            "time arithmetic outside the clock (use clock::after, clock::until, FixedClock::advance)",
        ));
    }
    out
}

/// Nothing reads the wall clock but `clock::SystemClock`.
fn wall_clock(file: &File) -> Vec<Violation> {
    if file.path == "engine/src/clock.rs" {
        return Vec::new();
    }
    lines_with(
        file,
        &code_only(&file.text),
        &["Utc::now", "Local::now", "SystemTime::now"],
        "the wall clock read outside clock",
    )
}

/// Only the store runs SQL: sqlx is named only there, in the test harness that makes
/// databases, and in the benchmarks' raw baselines (a floor must not go through the store).
fn sqlx_outside_store(file: &File) -> Vec<Violation> {
    if file.under("store/") || file.under("testkit/") || file.under("benches/") {
        return Vec::new();
    }
    lines_with(
        file,
        &code_only(&file.text),
        &["sqlx"],
        "sqlx outside the store",
    )
}

/// The rule ids and parameter amounts of the catalogue, read from `rules/`.
struct Programmes {
    rule_ids: BTreeSet<String>,
    amounts: BTreeSet<i64>,
}

impl Programmes {
    fn read() -> Self {
        let mut rule_ids = BTreeSet::new();
        let mut amounts = BTreeSet::new();
        for f in tree(".yaml") {
            if f.under("rules/parameters/") {
                let v: serde_yaml_ng::Value =
                    serde_yaml_ng::from_str(&f.text).unwrap_or_else(|e| panic!("{}: {e}", f.path));
                collect_amounts(&v, &mut amounts);
            } else if f.under("rules/") && !f.under("rules/tests/") {
                if let Some(id) = f.text.lines().find_map(|l| l.strip_prefix("id:")) {
                    rule_ids.insert(id.trim().to_owned());
                }
            }
        }
        assert!(rule_ids.len() > 10, "the catalogue's ids were not found");
        assert!(
            !amounts.is_empty(),
            "the parameters' amounts were not found"
        );
        Self { rule_ids, amounts }
    }
}

/// Integers of 1,000 and more in a parameter file: amounts, not counts or ages.
fn collect_amounts(v: &serde_yaml_ng::Value, out: &mut BTreeSet<i64>) {
    match v {
        serde_yaml_ng::Value::Number(n) => {
            if let Some(i) = n.as_i64().filter(|i| *i >= 1000) {
                out.insert(i);
            }
        }
        serde_yaml_ng::Value::Sequence(s) => s.iter().for_each(|x| collect_amounts(x, out)),
        serde_yaml_ng::Value::Mapping(m) => m.values().for_each(|x| collect_amounts(x, out)),
        _ => {}
    }
}

/// The engine holds no procedure: no rule id, amount or age threshold of a programme in
/// product Rust code (tests may name them; the age of majority is the calendar's law).
fn programme_literals(file: &File, programmes: &Programmes) -> Vec<Violation> {
    let product = file.product_code();
    if product.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut flag = |line: usize, what: String| {
        out.push(Violation {
            path: file.path.clone(),
            line,
            rule: "a programme's rule id, amount or age in Rust (put it in rules/)",
            text: what,
        })
    };
    // Rule ids hide in strings: search the text itself.
    for (i, l) in product.lines().enumerate() {
        for id in &programmes.rule_ids {
            let quoted = format!("\"{id}");
            if l.contains(&quoted) {
                flag(i + 1, format!("rule id {id}: {}", l.trim()));
            }
        }
    }
    let code = code_only(product);
    let number = regex::Regex::new(r"\b[0-9][0-9_]*\b").expect("a valid pattern");
    let ages = [
        r"\b\w*age\w*\s*(==|!=|>=|<=|<|>)\s*[0-9]+\b",
        r"\b[0-9]+\s*(==|!=|>=|<=|<|>)\s*\w*age\w*\b",
        r"\b(attain|anniversary|attainment_month|fy_end_age|month_anniversary)\(\s*[^,()]+,\s*-?[0-9]+\s*\)",
    ]
    .map(|p| regex::Regex::new(p).expect("a valid pattern"));
    for (i, l) in code.lines().enumerate() {
        for m in number.find_iter(l) {
            let n: Option<i64> = m.as_str().replace('_', "").parse().ok();
            if n.is_some_and(|n| programmes.amounts.contains(&n)) {
                flag(i + 1, format!("amount {}: {}", m.as_str(), l.trim()));
            }
        }
        for re in &ages {
            if let Some(m) = re.find(l) {
                flag(i + 1, format!("age literal `{}`", m.as_str()));
            }
        }
    }
    out
}

/// Logs carry ids, never names, addresses or draft contents.
fn personal_data_in_logs(file: &File) -> Vec<Violation> {
    let code = code_only(&file.text);
    let personal = regex::Regex::new(
        r"\b(kanji|kana|address|postal_code|prefill|fields|submitted_fields|contact|email)\b|\.name\b\s*[^(\s]",
    )
    .expect("a valid pattern");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    let mut offset = 0;
    while let Some(i) = rest.find("tracing::") {
        let start = offset + i;
        let call = &code[start..];
        let Some(open) = call.find('(') else { break };
        let is_event = ["info!", "warn!", "error!", "debug!", "trace!", "event!"]
            .iter()
            .any(|m| call["tracing::".len()..open].trim() == *m);
        // The macro's arguments, to the matching parenthesis.
        let mut depth = 0;
        let mut end = open;
        for (j, c) in call[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &call[open..=end];
        if is_event {
            if let Some(m) = personal.find(args) {
                out.push(Violation {
                    path: file.path.clone(),
                    line: code[..start].lines().count().max(1),
                    rule: "a log line with personal data (log ids only)",
                    text: format!("`{}` in {}", m.as_str().trim(), args.trim()),
                });
            }
        }
        offset = start + open.max(1);
        rest = &code[offset..];
    }
    out
}

/// A function with many parameters wants a struct named after what it carries.
fn many_arguments(file: &File) -> Vec<Violation> {
    lines_with(
        file,
        &file.text,
        &["too_many_arguments"],
        "clippy::too_many_arguments allowed (use a struct)",
    )
}

/// Rules never do date arithmetic by hand: the calendar helpers have names.
fn hand_made_dates_in_rules(file: &File) -> Vec<Violation> {
    if !file.under("rules/") || file.under("rules/tests/") {
        return Vec::new();
    }
    let plus_one = regex::Regex::new(r"add_days\([^,()]+,\s*-?1\s*\)").expect("a valid pattern");
    let built = regex::Regex::new(r"(-03-31|-04-01)`|\+ *\x22-").expect("a valid pattern");
    let mut out = Vec::new();
    for (i, l) in file.text.lines().enumerate() {
        let hit = plus_one
            .find(l)
            .map(|_| "add_days(x, ±1): write day_after(x) or day_before(x)")
            .or_else(|| {
                built.find(l).map(|_| {
                    "a date built from a string: write fiscal_year_start(fy) or fiscal_year_end(fy)"
                })
            });
        if let Some(why) = hit {
            out.push(Violation {
                path: file.path.clone(),
                line: i + 1,
                rule: why,
                text: l.to_owned(),
            });
        }
    }
    out
}

/// Dependencies point one way: src -> portal -> adapters -> service -> store -> engine; the
/// engine has no database and no async runtime; only the store (and the test harness) has
/// sqlx among the library crates.
fn crate_dependencies(file: &File) -> Vec<Violation> {
    let allowed: &[(&str, &[&str], &[&str])] = &[
        // (manifest, oshirase crates it may depend on, other crates it must not)
        ("engine/Cargo.toml", &[], &["sqlx", "tokio"]),
        ("store/Cargo.toml", &["oshirase-engine"], &[]),
        (
            "service/Cargo.toml",
            &["oshirase-engine", "oshirase-store"],
            &["sqlx"],
        ),
        (
            "adapters/Cargo.toml",
            &["oshirase-engine", "oshirase-store", "oshirase-service"],
            &["sqlx"],
        ),
        (
            "portal/Cargo.toml",
            &[
                "oshirase-engine",
                "oshirase-store",
                "oshirase-service",
                "oshirase-adapters",
            ],
            &["sqlx"],
        ),
        (
            "popgen/Cargo.toml",
            &["oshirase-engine"],
            &["sqlx", "tokio"],
        ),
    ];
    let Some((_, crates, banned)) = allowed.iter().find(|(m, _, _)| *m == file.path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut section = String::new();
    for (i, l) in file.text.lines().enumerate() {
        let l = l.trim();
        if l.starts_with('[') {
            section = l.to_owned();
            continue;
        }
        if section != "[dependencies]" {
            continue;
        }
        let Some(name) = l.split(['=', '.', ' ']).next().filter(|n| !n.is_empty()) else {
            continue;
        };
        let bad =
            (name.starts_with("oshirase-") && !crates.contains(&name)) || banned.contains(&name);
        if bad {
            out.push(Violation {
                path: file.path.clone(),
                line: i + 1,
                rule: "a dependency against the data flow",
                text: l.to_owned(),
            });
        }
    }
    out
}

fn check_rust(file: &File, programmes: &Programmes) -> Vec<Violation> {
    let mut v = date_arithmetic(file);
    v.extend(wall_clock(file));
    v.extend(sqlx_outside_store(file));
    v.extend(programme_literals(file, programmes));
    v.extend(personal_data_in_logs(file));
    v.extend(many_arguments(file));
    v
}

#[test]
fn the_tree_keeps_its_invariants() {
    let programmes = Programmes::read();
    let rust = tree(".rs");
    assert!(
        rust.iter().any(|f| f.path == "engine/src/calendar.rs"),
        "the tree was not found from {}",
        root().display()
    );
    let mut violations: Vec<Violation> = rust
        .iter()
        .flat_map(|f| check_rust(f, &programmes))
        .collect();
    violations.extend(tree(".yaml").iter().flat_map(hand_made_dates_in_rules));
    violations.extend(tree(".toml").iter().flat_map(crate_dependencies));
    assert!(
        violations.is_empty(),
        "{} invariant(s) broken:\n{}",
        violations.len(),
        violations
            .iter()
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn each_rule_catches_its_counter_example() {
    let programmes = Programmes {
        rule_ids: ["kokumin-nenkin-shutoku".to_owned()].into(),
        amounts: [15_000].into(),
    };
    let rules = |f: &File| {
        check_rust(f, &programmes)
            .into_iter()
            .map(|v| v.rule)
            .collect::<Vec<_>>()
    };
    let caught = |path: &str, text: &str| !rules(&File::new(path, text)).is_empty();
    // Date and time arithmetic.
    assert!(caught("service/src/outbox.rs", "let d = day.succ_opt()?;"));
    assert!(caught(
        "tests/crash.rs",
        "let s = today - chrono::Days::new(30);"
    ));
    assert!(caught(
        "src/cmd/simulate.rs",
        "let n = (to - from).num_days();"
    ));
    assert!(caught(
        "service/src/outbox.rs",
        "t + chrono::Duration::from_std(d)"
    ));
    assert!(!caught("engine/src/calendar.rs", "d.succ_opt()"));
    assert!(!caught(
        "engine/src/clock.rs",
        "chrono::Duration::from_std(d)"
    ));
    assert!(!caught("engine/src/eval.rs", "// not succ_opt: a comment"));
    assert!(!caught(
        "engine/src/eval.rs",
        r#"let s = "num_days in a string";"#
    ));
    // The wall clock.
    assert!(caught("tests/crash.rs", "let now = chrono::Utc::now();"));
    assert!(!caught(
        "engine/src/clock.rs",
        "Utc::now().with_timezone(&jst())"
    ));
    // SQL.
    assert!(caught("portal/src/lib.rs", "use sqlx::Row;"));
    assert!(caught(
        "service/tests/store.rs",
        "sqlx::query(\"SELECT 1\")"
    ));
    assert!(!caught("store/src/lib.rs", "use sqlx::Row;"));
    assert!(!caught("testkit/src/db.rs", "use sqlx::Row;"));
    // Programmes in Rust.
    assert!(caught(
        "engine/src/eval.rs",
        r#"if rule.id.as_str() == "kokumin-nenkin-shutoku" {"#
    ));
    assert!(caught("engine/src/eval.rs", "let amount = 15_000;"));
    assert!(caught("engine/src/eval.rs", "if age >= 65 {"));
    assert!(caught(
        "popgen/src/lib.rs",
        "let d = calendar::attain(b, 75);"
    ));
    assert!(!caught("engine/tests/evaluate.rs", "let amount = 15_000;"));
    assert!(!caught(
        "engine/src/eval.rs",
        "#[cfg(test)]\nmod tests { const A: i32 = 15_000; }"
    ));
    // Personal data in logs.
    assert!(caught(
        "service/src/outbox.rs",
        "tracing::info!(name = %r.name.kanji, \"sent\");"
    ));
    assert!(caught(
        "adapters/src/email.rs",
        "tracing::warn!(\"to {}\", resident.contact.email);"
    ));
    assert!(caught(
        "service/src/outbox.rs",
        "tracing::debug!(fields = ?d.prefill);"
    ));
    assert!(!caught(
        "service/src/outbox.rs",
        "tracing::info!(outbox = item.id, channel = channel.name(), \"e-mail sent to the address\");"
    ));
    // Many arguments.
    assert!(caught(
        "store/src/lib.rs",
        "#[allow(clippy::too_many_arguments)]\npub fn f() {}"
    ));
    // Rules.
    let rule = |text: &str| {
        !hand_made_dates_in_rules(&File::new("rules/kokuho-soshitsu.yaml", text)).is_empty()
    };
    assert!(rule("  loss_date: add_days(occurrence, 1)"));
    assert!(rule("  until: '`${fiscal_year(occurrence) + 1}-03-31`'"));
    assert!(!rule("  loss_date: day_after(occurrence)"));
    assert!(!rule("  due: add_days(occurrence, 14)"));
    // Dependencies.
    let deps = |path: &str, text: &str| !crate_dependencies(&File::new(path, text)).is_empty();
    assert!(deps(
        "engine/Cargo.toml",
        "[dependencies]\ntokio.workspace = true\n"
    ));
    assert!(deps(
        "engine/Cargo.toml",
        "[dependencies]\nsqlx = { version = \"0.9\" }\n"
    ));
    assert!(deps(
        "store/Cargo.toml",
        "[dependencies]\noshirase-service = { path = \"../service\" }\n"
    ));
    assert!(!deps(
        "engine/Cargo.toml",
        "[dev-dependencies]\ntokio.workspace = true\n"
    ));
    assert!(!deps(
        "service/Cargo.toml",
        "[dependencies]\noshirase-store = { path = \"../store\" }\ntokio.workspace = true\n"
    ));
}
