//! `oshirase ingest`: a snapshot or a change feed into the store, all or nothing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_service::ingest::{ingest, IngestError, IngestReport};
use oshirase_store::Store;

use crate::common::{exit, runtime, DbArg};

#[derive(clap::Args)]
pub struct IngestArgs {
    /// A snapshot or a change feed (JSON Lines; the header line says which).
    pub file: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
    /// Apply the valid lines of a change feed and write the invalid ones to --rejects.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Where --skip-invalid writes rejected lines (default FILE.rejected.jsonl).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// The rules folder whose data-item dictionary and purposes say which changes agencies
    /// are told of; without it, the ones built into this binary.
    #[arg(long, env = "OSHIRASE_RULES")]
    pub rules: Option<PathBuf>,
}

pub(crate) fn print_ingest(file: &Path, r: &IngestReport) -> std::io::Result<()> {
    match r.outcome.batch_id {
        None => out!("{}: already ingested; nothing changed", file.display()),
        Some(id) => out!(
            "{}: {} {} rows, {} residents changed, {} new life events, {} agency events (batch {id}){}",
            file.display(),
            r.kind.name(),
            r.rows_in,
            r.outcome.rows_changed,
            r.outcome.events,
            r.outcome.agency_events,
            if r.already_applied > 0 {
                format!(", {} lines applied before", r.already_applied)
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

pub fn run(args: IngestArgs) -> anyhow::Result<u8> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let source = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let text = match oshirase_engine::population::utf8_text(&bytes, &source) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("nothing was applied");
            return Ok(exit::INPUT);
        }
    };
    let exchange = match crate::common::load_exchange(args.rules.as_deref()) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    runtime()?.block_on(async {
        let store = Store::open(&args.db.db).await?.with_exchange(exchange);
        match ingest(&store, &source, text, args.skip_invalid, SystemClock.now()).await {
            Ok(report) => {
                print_ingest(&args.file, &report)?;
                if report.rejected.is_empty() {
                    return Ok(exit::OK);
                }
                let path = args
                    .rejects
                    .clone()
                    .unwrap_or_else(|| args.file.with_extension("rejected.jsonl"));
                let lines: Vec<&str> = text.lines().collect();
                // The header first, so the file can be corrected and ingested as a feed of its
                // own (its own name is its own feed position).
                let mut out = lines.first().map(|h| format!("{h}\n")).unwrap_or_default();
                for e in &report.rejected {
                    eprintln!("rejected {e}");
                    if let Some(l) = e.line.checked_sub(1).and_then(|i| lines.get(i)) {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
                std::fs::write(&path, out)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "{} rejected line(s) written to {}",
                    report.rejected.len(),
                    path.display()
                );
                Ok(exit::INPUT)
            }
            Err(IngestError::Invalid(e)) => {
                eprintln!("{e}");
                eprintln!("nothing was applied");
                Ok(exit::INPUT)
            }
            Err(IngestError::Store(e)) => Err(e.into()),
        }
    })
}
