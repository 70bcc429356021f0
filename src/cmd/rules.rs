//! `oshirase rules check` and `oshirase rules test`.

use std::io::Write;
use std::path::{Path, PathBuf};

use oshirase_engine::ruletest;

use crate::common::{exit, load_rules, rules_name};

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Load and compile every rule; list every error.
    Check {
        /// The catalogue folder; without it, the catalogue built into this binary.
        dir: Option<PathBuf>,
    },
    /// Run the test cases in DIR/tests (or the built-in catalogue's).
    Test {
        /// The catalogue folder; without it, the catalogue built into this binary.
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: RulesCommand) -> anyhow::Result<u8> {
    match cmd {
        RulesCommand::Check { dir } => check(dir.as_deref()),
        RulesCommand::Test { dir } => test(dir.as_deref()),
    }
}

fn check(dir: Option<&Path>) -> anyhow::Result<u8> {
    // Both tables are checked, so one run names every error of the folder.
    let rules = load_rules(dir);
    let exchange = crate::common::load_exchange(dir);
    let (rules, exchange) = match (rules, exchange) {
        (Ok(r), Ok(x)) => (r, x),
        (Err(code), _) | (_, Err(code)) => return Ok(code),
    };
    // What residents would see raw is an authoring error here, though the rules load.
    if !rules.presentation_gaps.is_empty() {
        for e in rules.presentation_gaps.iter() {
            eprintln!("{e}");
        }
        eprintln!(
            "{} problem(s): residents would see raw field names, or not know whether to apply or whom to ask",
            rules.presentation_gaps.len()
        );
        return Ok(exit::RULES);
    }
    let own = dir.is_none_or(crate::common::has_exchange);
    out!(
        "{}: {} rules, {} parameters, rule-set version {}; {} data items (dictionary version {}), {} purposes{}",
        rules_name(dir),
        rules.rules().len(),
        rules.params.0.len(),
        rules.version,
        exchange.dictionary.items().len(),
        exchange.dictionary.version(),
        exchange.purposes.len(),
        if own { "" } else { " (built in: the folder has no items/ or purposes/)" }
    );
    Ok(exit::OK)
}

fn test(dir: Option<&Path>) -> anyhow::Result<u8> {
    let rules = match load_rules(dir) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let report = match dir {
        Some(dir) => ruletest::run_dir(&rules, &dir.join("tests")),
        None => ruletest::run_sources(&rules, &crate::builtin::rule_tests()),
    };
    let mut out = std::io::stdout().lock();
    for e in &report.errors {
        writeln!(out, "ERROR {e}")?;
    }
    for c in &report.cases {
        if c.passed() {
            writeln!(out, "ok    {}:{}: {}", c.file, c.line, c.name)?;
        } else {
            writeln!(out, "FAIL  {}:{}: {}", c.file, c.line, c.name)?;
            for d in &c.differences {
                writeln!(out, "        {d}")?;
            }
        }
    }
    writeln!(
        out,
        "rules: {} passed, {} failed",
        report.passed(),
        report.failed() + report.errors.len()
    )?;
    Ok(if report.ok() { exit::OK } else { exit::RULES })
}
