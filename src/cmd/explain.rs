//! `oshirase explain`: why a rule did or did not match a resident on a day.

use std::io::Write;
use std::path::PathBuf;

use chrono::NaiveDate;
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::{explain, ExplainOutcome, Explanation};

use crate::common::{check_day, exit, parse_id, CatalogueArgs, Format};

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The resident snapshot (JSON Lines); without it, the fixture town built into this binary.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    #[arg(long)]
    resident: String,
    #[arg(long)]
    rule: String,
    #[arg(long)]
    date: NaiveDate,
    #[command(flatten)]
    catalogue: CatalogueArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn run(args: ExplainArgs) -> anyhow::Result<u8> {
    let snap = crate::common::read_snapshot(args.snapshot.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rules = match args.catalogue.load_for(snap.header.local_gov_code) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    check_day("--date", args.date)?;
    let resident = parse_id(&args.resident, "resident", ResidentId::parse)?;
    let rule = parse_id(&args.rule, "rule", RuleId::parse)?;
    let ex = explain(&rules, &snap.population, &resident, &rule, args.date)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &ex)?;
            writeln!(out)?;
        }
        Format::Table => print_table(&mut out, &ex)?,
    }
    Ok(if matches!(ex.outcome, ExplainOutcome::Failed { .. }) {
        exit::RULE_RUNTIME
    } else {
        exit::OK
    })
}

fn print_table(out: &mut impl Write, ex: &Explanation) -> std::io::Result<()> {
    writeln!(
        out,
        "rule {} v{} ({}), rule set {} ({})\nresident {} on {}",
        ex.rule,
        ex.rule_version,
        ex.rule_file,
        ex.rule_set_version,
        ex.catalogue.join(" → "),
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
    writeln!(out, "=> {}", ex.outcome)
}
