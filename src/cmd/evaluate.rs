//! `oshirase evaluate`: the decisions for a day or a range of days over a snapshot file.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use oshirase_engine::ids::RuleId;
use oshirase_engine::{calendar, evaluate_day, Decision};

use crate::common::{check_day, exit, parse_id, CatalogueArgs, Format};

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// The resident snapshot (JSON Lines); without it, the fixture town built into this binary.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// The day the notices go out (YYYY-MM-DD).
    #[arg(long)]
    date: NaiveDate,
    /// Evaluate every day from --date to this day, inclusive.
    #[arg(long)]
    to: Option<NaiveDate>,
    #[command(flatten)]
    catalogue: CatalogueArgs,
    /// Only this rule.
    #[arg(long)]
    rule: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<u8> {
    let snap = crate::common::read_snapshot(args.snapshot.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rules = match args.catalogue.load_for(snap.header.local_gov_code) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    if let Some(id) = args.rule {
        let id = parse_id(&id, "rule", RuleId::parse)?;
        rules = rules
            .only(std::slice::from_ref(&id))
            .map_err(|id| anyhow::anyhow!("--rule: no rule {id} in {}", rules.dir.display()))?;
    }
    let (from, to) = (args.date, args.to.unwrap_or(args.date));
    anyhow::ensure!(to >= from, "--to {to} is before --date {from}");
    check_day("--date", from)?;
    check_day("--to", to)?;
    let started = Instant::now();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut failures = Vec::new();
    let mut checks = 0;
    for day in calendar::days(from, to) {
        let r = evaluate_day(&rules, &snap.population, day);
        decisions.extend(r.decisions);
        failures.extend(r.failures);
        checks += r.checks;
    }
    let elapsed = started.elapsed();
    let mut out = std::io::stdout().lock();
    match args.format {
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
    let days = calendar::days_between(from, to) + 1;
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

fn print_table(out: &mut impl Write, decisions: &[Decision]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<10}  {:<28}  {:<8}  {:<10}  {:<10}  recipients",
        "notify", "rule", "subject", "occurs", "deadline"
    )?;
    for d in decisions {
        let mut recipients: Vec<String> = d
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
            .collect();
        // Staff may be needed beside the recipients (a protected child nobody else may tell).
        if let Some(reason) = &d.staff_review {
            recipients.push(format!("STAFF REVIEW: {reason}"));
        }
        let recipients = recipients.join(", ");
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
