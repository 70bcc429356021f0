//! `oshirase simulate`: argument parsing and output files for a dry run.

#[derive(clap::Args)]
pub struct SimulateArgs {}

pub fn run(_args: SimulateArgs) -> anyhow::Result<u8> {
    anyhow::bail!("simulate is not available in this build")
}
