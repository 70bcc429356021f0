//! The `oshirase` binary: argument parsing, output formatting and wiring, one module a
//! command (`cmd/`). The work is in the library crates.

/// `println!` that returns the write error (a closed pipe: `oshirase outbox list | head`)
/// to the caller instead of panicking; `main` ends quietly on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

mod builtin;
mod cmd;
mod common;
mod config;

/// mimalloc instead of the system allocator: a daily run, an ingest and the delivery workers
/// allocate and free many small objects from several threads, where glibc's malloc spent a
/// fifth of the time (benches/ use the same allocator, so that they measure what ships).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::exit;

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
        command: cmd::rules::RulesCommand,
    },
    /// Evaluate the catalogue over a snapshot for a day (or a range of days).
    Evaluate(cmd::evaluate::EvaluateArgs),
    /// Store a snapshot or a change feed (all or nothing; the same file twice changes nothing).
    Ingest(cmd::ingest::IngestArgs),
    /// The service: the daily run with catch-up of missed days, re-evaluating after ingests.
    Run(cmd::run::RunArgs),
    /// Operator commands for the delivery outbox.
    Outbox {
        #[command(subcommand)]
        command: cmd::outbox::OutboxCommand,
    },
    /// End-to-end demo on the fixture town with a fresh SQLite file.
    Demo(cmd::demo::DemoArgs),
    /// Dry-run the catalogue over a date range (no writes): counts, samples, a chart.
    Simulate(cmd::simulate::SimulateArgs),
    /// Synthetic populations for load tests and demos.
    Population {
        #[command(subcommand)]
        command: cmd::population::PopulationCommand,
    },
    /// Web push (VAPID) keys.
    Vapid {
        #[command(subcommand)]
        command: cmd::vapid::VapidCommand,
    },
    /// Explain why a rule did or did not match a resident on a day.
    Explain(cmd::explain::ExplainArgs),
    /// Agencies told of updates: register, list, verify, replay, pseudonyms, keys.
    Agency {
        #[command(subcommand)]
        command: cmd::agency::AgencyCommand,
    },
    /// Submitted applications for the back office: export, core-system clients.
    Office {
        #[command(subcommand)]
        command: cmd::office::OfficeCommand,
    },
}

fn main() -> ExitCode {
    // Before anything signs or verifies a JWT (the portal's sign-in included).
    oshirase_exchange::jose::install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OSHIRASE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rules { command } => cmd::rules::run(command),
        Command::Evaluate(args) => cmd::evaluate::run(args),
        Command::Ingest(args) => cmd::ingest::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Outbox { command } => cmd::outbox::run(command),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Population { command } => cmd::population::run(command),
        Command::Vapid { command } => cmd::vapid::run(command),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Agency { command } => cmd::agency::run(command),
        Command::Office { command } => cmd::office::run(command),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader of our output has gone (`| head`): nothing left to tell anyone.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(exit::OK)
        }
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
