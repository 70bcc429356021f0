//! The `oshirase` binary: argument parsing, output formatting and wiring. All logic lives in
//! the engine crate.

mod config;
mod population;

/// mimalloc instead of the system allocator: a daily run, an ingest and the delivery workers
/// allocate and free many small objects from several threads, where glibc's malloc spent a
/// fifth of the time (benches/ use the same allocator, so that they measure what ships).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod pipeline;
mod simulate;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::{
    calendar, evaluate_day, explain, load_dir, load_snapshot, ruletest, Decision, RuleSet,
};

/// Exit codes, documented in README.md.
mod exit {
    pub const OK: u8 = 0;
    /// Rules failed to load, or rule tests failed.
    pub const RULES: u8 = 1;
    // 2 is clap's usage error.
    /// Input data (snapshot, test file) is invalid or unreadable.
    pub const INPUT: u8 = 3;
    /// Evaluation finished, but some rules failed at run time for some residents.
    pub const RULE_RUNTIME: u8 = 4;
    /// The database cannot be opened, reached or written (nothing was half-written).
    pub const DATABASE: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "oshirase",
    version,
    about = "Push-type notices for Japanese municipal procedures"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with the rule catalogue.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Evaluate the catalogue over a snapshot for a day (or a range of days).
    Evaluate {
        #[arg(long)]
        snapshot: PathBuf,
        /// The day the notices go out (YYYY-MM-DD).
        #[arg(long)]
        date: NaiveDate,
        /// Evaluate every day from --date to this day, inclusive.
        #[arg(long)]
        to: Option<NaiveDate>,
        #[arg(long, default_value = "rules", env = "OSHIRASE_RULES")]
        rules: PathBuf,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Store a snapshot or a change feed (all or nothing; the same file twice changes nothing).
    Ingest(pipeline::IngestArgs),
    /// The service: the daily run with catch-up of missed days, re-evaluating after ingests.
    Run(pipeline::RunArgs),
    /// Operator commands for the delivery outbox.
    Outbox {
        #[command(subcommand)]
        command: pipeline::OutboxCommand,
    },
    /// End-to-end demo on the fixture town with a fresh SQLite file.
    Demo(pipeline::DemoArgs),
    /// Dry-run the catalogue over a date range (no writes): counts, samples, a chart.
    Simulate(simulate::SimulateArgs),
    /// Synthetic populations for load tests and demos.
    Population {
        #[command(subcommand)]
        command: population::PopulationCommand,
    },
    /// Web push (VAPID) keys.
    Vapid {
        #[command(subcommand)]
        command: VapidCommand,
    },
    /// Explain why a rule did or did not match a resident on a day.
    Explain {
        #[arg(long)]
        snapshot: PathBuf,
        #[arg(long)]
        resident: String,
        #[arg(long)]
        rule: String,
        #[arg(long)]
        date: NaiveDate,
        #[arg(long, default_value = "rules", env = "OSHIRASE_RULES")]
        rules: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Load and compile every rule; list every error.
    Check {
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
    /// Run the test cases in DIR/tests.
    Test {
        #[arg(default_value = "rules")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum VapidCommand {
    /// Print a new VAPID key pair: the private key goes in the environment variable the
    /// configuration names (webpush.vapid_private_key_env), the public key is what browsers
    /// subscribe with.
    Keygen,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OSHIRASE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let database = e.chain().any(|c| {
                c.is::<oshirase_store::StoreError>()
                    || c.is::<oshirase_service::scheduler::SchedulerError>()
                    || matches!(
                        c.downcast_ref(),
                        Some(oshirase_service::ingest::IngestError::Store(_))
                    )
            });
            ExitCode::from(if database {
                exit::DATABASE
            } else {
                exit::INPUT
            })
        }
    }
}

/// Loads a rules folder; on failure prints every error and gives the exit code.
pub(crate) fn load_rules(dir: &Path) -> Result<RuleSet, u8> {
    load_dir(dir).map_err(|e| {
        eprintln!("{e}");
        exit::RULES
    })
}

fn parse_id<T>(
    s: &str,
    what: &str,
    parse: fn(&str) -> Result<T, oshirase_engine::ids::IdError>,
) -> anyhow::Result<T> {
    parse(s).with_context(|| format!("--{what}"))
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Rules {
            command: RulesCommand::Check { dir },
        } => {
            let rules = match load_rules(&dir) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            println!(
                "{}: {} rules, {} parameters, rule-set version {}",
                dir.display(),
                rules.rules().len(),
                rules.params.0.len(),
                rules.version
            );
            Ok(exit::OK)
        }
        Command::Rules {
            command: RulesCommand::Test { dir },
        } => {
            let rules = match load_rules(&dir) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            let report = ruletest::run_dir(&rules, &dir.join("tests"));
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
        Command::Evaluate {
            snapshot,
            date,
            to,
            rules,
            rule,
            format,
        } => {
            let mut rules = match load_rules(&rules) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            if let Some(id) = rule {
                let id = parse_id(&id, "rule", RuleId::parse)?;
                rules = rules.only(std::slice::from_ref(&id)).map_err(|id| {
                    anyhow::anyhow!("--rule: no rule {id} in {}", rules.dir.display())
                })?;
            }
            let snap = load_snapshot(&snapshot).map_err(|e| anyhow::anyhow!("{e}"))?;
            let to = to.unwrap_or(date);
            anyhow::ensure!(to >= date, "--to {to} is before --date {date}");
            check_day("--date", date)?;
            check_day("--to", to)?;
            let started = Instant::now();
            let mut decisions: Vec<Decision> = Vec::new();
            let mut failures = Vec::new();
            let mut checks = 0;
            let mut day = date;
            while day <= to {
                let r = evaluate_day(&rules, &snap.population, day);
                decisions.extend(r.decisions);
                failures.extend(r.failures);
                checks += r.checks;
                day = calendar::add_days(day, 1);
            }
            let elapsed = started.elapsed();
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    serde_json::to_writer_pretty(
                        &mut out,
                        &serde_json::json!({
                            "rule_set_version": rules.version,
                            "decisions": decisions,
                            "failures": failures,
                        }),
                    )?;
                    writeln!(out)?;
                }
                Format::Table => print_table(&mut out, &decisions)?,
            }
            for f in &failures {
                eprintln!("rule error: {f}");
            }
            let days = (to - date).num_days() + 1;
            eprintln!(
                "{} decisions, {} rule errors, {} residents, {} rules, {days} day(s), {} trigger matches checked, {:.1} ms ({:.0} decisions/s)",
                decisions.len(),
                failures.len(),
                snap.population.len(),
                rules.rules().len(),
                checks,
                elapsed.as_secs_f64() * 1000.0,
                decisions.len() as f64 / elapsed.as_secs_f64().max(1e-9)
            );
            Ok(if failures.is_empty() {
                exit::OK
            } else {
                exit::RULE_RUNTIME
            })
        }
        Command::Simulate(args) => simulate::run(args),
        Command::Population { command } => population::run(command),
        Command::Vapid {
            command: VapidCommand::Keygen,
        } => {
            let keys = oshirase_adapters::generate_vapid_keys();
            println!("OSHIRASE_VAPID_PRIVATE_KEY={}", keys.private_key);
            println!("# public key (applicationServerKey): {}", keys.public_key);
            Ok(exit::OK)
        }
        Command::Ingest(args) => pipeline::ingest_cmd(args),
        Command::Run(args) => pipeline::run_cmd(args),
        Command::Demo(args) => pipeline::demo_cmd(args),
        Command::Outbox { command } => pipeline::outbox_cmd(command),
        Command::Explain {
            snapshot,
            resident,
            rule,
            date,
            rules,
            format,
        } => {
            let rules = match load_rules(&rules) {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            check_day("--date", date)?;
            let resident = parse_id(&resident, "resident", ResidentId::parse)?;
            let rule = parse_id(&rule, "rule", RuleId::parse)?;
            let snap = load_snapshot(&snapshot).map_err(|e| anyhow::anyhow!("{e}"))?;
            let ex = explain(&rules, &snap.population, &resident, &rule, date)
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => {
                    serde_json::to_writer_pretty(&mut out, &ex)?;
                    writeln!(out)?;
                }
                Format::Table => {
                    writeln!(
                        out,
                        "rule {} v{} ({}), rule set {}\nresident {} on {}",
                        ex.rule,
                        ex.rule_version,
                        ex.rule_file,
                        ex.rule_set_version,
                        ex.resident,
                        ex.date
                    )?;
                    for s in &ex.steps {
                        let mark = match s.passed {
                            Some(true) => "✓",
                            Some(false) => "✗",
                            None => "·",
                        };
                        writeln!(out, "  {mark} {:<10} {}", s.step, s.detail)?;
                        for (k, v) in &s.inputs {
                            writeln!(out, "               {k} = {v}")?;
                        }
                    }
                    if let Some(d) = &ex.decision {
                        writeln!(out, "  draft:")?;
                        for (k, v) in &d.prefill {
                            writeln!(out, "    {k}: {v}")?;
                        }
                        writeln!(out, "  message: {}", d.message.ja)?;
                    }
                    writeln!(out, "=> {}", ex.outcome)?;
                }
            }
            Ok(if ex.outcome.starts_with("error") {
                exit::RULE_RUNTIME
            } else {
                exit::OK
            })
        }
    }
}

/// Refuses a day outside the calendar's range, naming the flag it came from.
pub(crate) fn check_day(flag: &str, d: NaiveDate) -> anyhow::Result<()> {
    anyhow::ensure!(
        calendar::supported(d),
        "{flag} {d} is outside the supported years {}-{}",
        calendar::MIN_YEAR,
        calendar::MAX_YEAR
    );
    Ok(())
}

fn print_table(out: &mut impl Write, decisions: &[Decision]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<10}  {:<28}  {:<8}  {:<10}  {:<10}  recipients",
        "notify", "rule", "subject", "occurs", "deadline"
    )?;
    for d in decisions {
        let recipients = match &d.staff_review {
            Some(reason) => format!("STAFF REVIEW: {reason}"),
            None => d
                .recipients
                .iter()
                .map(|r| {
                    let ch: Vec<&str> = r.channels.iter().map(|c| c.name()).collect();
                    format!(
                        "{}({:?}:{})",
                        r.id,
                        r.role,
                        if ch.is_empty() {
                            "post".to_owned()
                        } else {
                            ch.join("+")
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        writeln!(
            out,
            "{:<10}  {:<28}  {:<8}  {:<10}  {:<10}  {}",
            d.notify_on,
            d.rule.as_str(),
            d.subject.as_str(),
            d.occurrence,
            d.deadline.map_or("-".to_owned(), |x| x.to_string()),
            recipients
        )?;
    }
    Ok(())
}
