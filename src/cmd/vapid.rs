//! `oshirase vapid keygen`: a new web push (VAPID) key pair.

use crate::common::exit;

#[derive(clap::Subcommand)]
pub enum VapidCommand {
    /// Print a new VAPID key pair: the private key goes in the environment variable the
    /// configuration names (webpush.vapid_private_key_env), the public key is what browsers
    /// subscribe with.
    Keygen,
}

pub fn run(cmd: VapidCommand) -> anyhow::Result<u8> {
    match cmd {
        VapidCommand::Keygen => {
            let keys = oshirase_adapters::generate_vapid_keys();
            out!("OSHIRASE_VAPID_PRIVATE_KEY={}", keys.private_key);
            out!("# public key (applicationServerKey): {}", keys.public_key);
            Ok(exit::OK)
        }
    }
}
