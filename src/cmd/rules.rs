//! `oshirase rules check` and `oshirase rules test`.

use std::io::Write;
use std::path::{Path, PathBuf};

use oshirase_engine::layers::Layer;
use oshirase_engine::ruletest;

use crate::common::{exit, load_rules, rules_name};

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Load and compile every rule; list every error.
    Check {
        /// The catalogue folder; without it, the catalogue built into this binary.
        dir: Option<PathBuf>,
        /// A deployment's layers (prefectures/CODE/, municipalities/CODE/): every
        /// prefecture's and municipality's catalogue is checked too.
        #[arg(long, env = "OSHIRASE_LAYERS")]
        layers: Option<PathBuf>,
    },
    /// Run the test cases in DIR/tests (or the built-in catalogue's), and each layer's
    /// tests/ against its own catalogue.
    Test {
        /// The catalogue folder; without it, the catalogue built into this binary.
        dir: Option<PathBuf>,
        /// A deployment's layers (prefectures/CODE/, municipalities/CODE/).
        #[arg(long, env = "OSHIRASE_LAYERS")]
        layers: Option<PathBuf>,
    },
}

pub fn run(cmd: RulesCommand) -> anyhow::Result<u8> {
    match cmd {
        RulesCommand::Check { dir, layers } => match layers {
            None => check(dir.as_deref()),
            Some(layers) => check_layers(dir.as_deref(), &layers),
        },
        RulesCommand::Test { dir, layers } => match layers {
            None => test(dir.as_deref()),
            Some(layers) => test_layers(dir.as_deref(), &layers),
        },
    }
}

/// Every catalogue the layers make: national, each prefecture's, each municipality's; one
/// line each, and every error of every one.
fn check_layers(dir: Option<&Path>, layers: &Path) -> anyhow::Result<u8> {
    let layers = match crate::common::load_layers(dir, Some(layers)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit::RULES);
        }
    };
    let mut catalogues = layers.every_catalogue().into_iter();
    let (_, national) = catalogues
        .next()
        .expect("every_catalogue begins with the national one");
    let national = crate::common::reported(national);
    let code = check_national(dir, national.as_ref().map_err(|c| *c))?;
    let national = match national {
        Ok(n) if code == exit::OK => n,
        _ => return Ok(code),
    };
    let mut failed = 0;
    for (layer, catalogue) in catalogues {
        match catalogue {
            Err(e) => {
                failed += 1;
                eprintln!("{layer}:\n{e}");
            }
            Ok(rules) if !rules.presentation_gaps.is_empty() => {
                failed += 1;
                eprintln!("{layer}:");
                for e in rules.presentation_gaps.iter() {
                    eprintln!("{e}");
                }
            }
            Ok(rules) => {
                let (own_rules, overridden) = layer_counts(&rules, layer, &national);
                out!(
                    "{layer}: {} rules ({own_rules} of its own), {} parameters ({overridden} set here), rule-set version {}",
                    rules.rules().len(),
                    rules.params.0.len(),
                    rules.version
                );
            }
        }
    }
    Ok(if failed == 0 { exit::OK } else { exit::RULES })
}

/// The rules a layer adds, and the parameters whose values it sets.
fn layer_counts(
    rules: &oshirase_engine::RuleSet,
    layer: Layer,
    national: &oshirase_engine::RuleSet,
) -> (usize, usize) {
    let own = rules
        .rules()
        .iter()
        .filter(|r| national.get(&r.id).is_none())
        .count();
    let set = rules
        .params
        .0
        .values()
        .filter(|p| p.origins.iter().any(|o| o.layer == layer))
        .count();
    (own, set)
}

/// The national tests on the national catalogue, then each layer's on its own catalogue.
fn test_layers(dir: Option<&Path>, layers: &Path) -> anyhow::Result<u8> {
    let layers = match crate::common::load_layers(dir, Some(layers)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit::RULES);
        }
    };
    let mut ok = true;
    let mut out = std::io::stdout().lock();
    for (layer, catalogue) in layers.every_catalogue() {
        let rules = match catalogue {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{layer}:\n{e}");
                ok = false;
                continue;
            }
        };
        let tests = match layer {
            Layer::National => &layers.national.tests,
            _ => &layers.local[&layer].tests,
        };
        // A layer may change a value without cases of its own; the national catalogue may not.
        if tests.is_empty() && layer != Layer::National {
            writeln!(out, "{layer}: no test cases")?;
            continue;
        }
        let report = ruletest::run_sources(&rules, tests);
        writeln!(out, "{layer}:")?;
        ok &= print_report(&mut out, &report)?;
    }
    Ok(if ok { exit::OK } else { exit::RULES })
}

fn check(dir: Option<&Path>) -> anyhow::Result<u8> {
    check_national(dir, load_rules(dir).as_ref().map_err(|c| *c))
}

/// The national catalogue `rules` loaded from `dir` (its errors already printed), with the
/// data-item dictionary and purposes: every problem, or the line that sums it up.
fn check_national(
    dir: Option<&Path>,
    rules: Result<&oshirase_engine::RuleSet, u8>,
) -> anyhow::Result<u8> {
    // Both tables are checked, so one run names every error of the folder.
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
    let ok = print_report(&mut out, &report)?;
    Ok(if ok { exit::OK } else { exit::RULES })
}

/// Every case of a report, then the counts; whether all passed.
fn print_report(out: &mut impl Write, report: &ruletest::Report) -> std::io::Result<bool> {
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
    Ok(report.ok())
}
