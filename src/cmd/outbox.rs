//! `oshirase outbox list` and `oshirase outbox retry`: the delivery queue for operators.

use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_store::OutboxState;

use crate::common::{exit, runtime, DbArg};

fn outbox_state(s: &str) -> Result<OutboxState, String> {
    OutboxState::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = OutboxState::ALL.iter().map(|s| s.name()).collect();
        format!("not an outbox state; use one of {}", names.join(", "))
    })
}

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// List outbox rows (all, or one state: pending, delivered, dead, gone, muted).
    List {
        #[command(flatten)]
        db: DbArg,
        #[arg(long, value_parser = outbox_state)]
        state: Option<OutboxState>,
    },
    /// Put dead letters back in the queue: the given ids, or every dead letter.
    Retry {
        #[command(flatten)]
        db: DbArg,
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
}

pub fn run(cmd: OutboxCommand) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        match cmd {
            OutboxCommand::List { db, state } => {
                let store = db.open_existing().await?;
                let rows = store.outbox_rows(state).await?;
                out!(
                    "{:>8}  {:<9}  {:<8}  {:<10}  {:>8}  {:<24}  key / last error",
                    "id",
                    "state",
                    "channel",
                    "recipient",
                    "attempts",
                    "next attempt (UTC)"
                );
                for r in &rows {
                    out!(
                        "{:>8}  {:<9}  {:<8}  {:<10}  {:>8}  {:<24}  {}{}",
                        r.id,
                        r.state,
                        r.channel,
                        r.recipient,
                        r.attempts,
                        r.next_attempt_at,
                        r.decision_key,
                        r.last_error
                            .as_deref()
                            .map(|e| format!(" / {e}"))
                            .unwrap_or_default()
                    );
                }
                eprintln!("{} row(s)", rows.len());
                Ok(exit::OK)
            }
            OutboxCommand::Retry { db, ids } => {
                let store = db.open_existing().await?;
                let n = store.retry_outbox(&ids, SystemClock.now()).await?;
                out!("{n} row(s) queued again");
                Ok(if n == 0 && !ids.is_empty() {
                    exit::INPUT
                } else {
                    exit::OK
                })
            }
        }
    })
}
