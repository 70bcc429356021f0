//! `oshirase population generate`: writes a synthetic register and a year of its changes
//! (the generator is the `oshirase-popgen` crate).

use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;

#[derive(clap::Subcommand)]
pub enum PopulationCommand {
    /// Write a synthetic register (DIR/snapshot.jsonl) and a year of changes after it
    /// (DIR/changes.jsonl), both ready for `oshirase ingest`.
    Generate(GenerateArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Residents on the register on --start.
    #[arg(long)]
    pub residents: usize,
    /// Seed: the same seed and options give the same files, byte for byte.
    #[arg(long)]
    pub seed: u64,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// The register date of the snapshot; the changes cover the 365 days after it.
    #[arg(long, default_value = "2026-04-01")]
    pub start: NaiveDate,
    /// The municipality of the register (a local government code of the bundled table):
    /// on every record, and at the head of every address.
    #[arg(long, default_value = oshirase_popgen::DEFAULT_MUNICIPALITY)]
    pub municipality: String,
}

pub fn run(cmd: PopulationCommand) -> anyhow::Result<u8> {
    match cmd {
        PopulationCommand::Generate(args) => {
            let started = Instant::now();
            let municipality = oshirase_popgen::municipality(&args.municipality)?;
            let s = oshirase_popgen::generate(&oshirase_popgen::Options {
                municipality,
                residents: args.residents,
                seed: args.seed,
                out: args.out,
                start: args.start,
            })?;
            out!("{}", s.render(started.elapsed().as_secs_f64()));
            Ok(crate::common::exit::OK)
        }
    }
}
