//! `oshirase agency`: the operator's side of the agencies told of updates (docs/agencies.md).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use oshirase_adapters::webhook::{SigningKeys, WebhookSender};
use oshirase_engine::clock::{Clock, SystemClock};
use oshirase_exchange::register::{register, verify, Verification};
use oshirase_exchange::SigningKey;
use oshirase_store::AgencySpec;

use crate::common::{exit, load_exchange, parse_id, runtime, DbArg};

#[derive(clap::Subcommand)]
pub enum AgencyCommand {
    /// Register an agency (or update it) and verify its endpoint.
    Add(AddArgs),
    /// The agencies, their streams and where delivery stands.
    List {
        #[command(flatten)]
        db: DbArg,
    },
    /// Run the endpoint verification handshake again.
    Verify {
        id: String,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        keys: WebhookKeyArgs,
        /// The municipality's local government code (the handshake's `source`).
        #[arg(long)]
        local_gov_code: String,
    },
    /// Send a stream's events again after a sequence number.
    Replay {
        #[arg(long)]
        agency: String,
        #[arg(long)]
        purpose: String,
        /// Events after this number are sent again (0: the whole stream still kept).
        #[arg(long)]
        after: i64,
        #[command(flatten)]
        db: DbArg,
    },
    /// Issue the agency's pseudonym of a resident it has a case for.
    Pseudonym {
        #[arg(long)]
        agency: String,
        #[arg(long)]
        resident: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Make keys: the municipality's (signing key and webhook key), or with --client an
    /// agency client's key pair (private PEM and public JWKS).
    Keys {
        /// The folder to write them to (created; files are readable by the owner only).
        #[arg(long)]
        dir: PathBuf,
        /// An agency client's keys instead of the municipality's.
        #[arg(long)]
        client: bool,
    },
}

#[derive(clap::Args)]
pub struct WebhookKeyArgs {
    /// The environment variable holding the webhook signing key (`whsk_…`).
    #[arg(long, default_value = "OSHIRASE_WEBHOOK_KEY")]
    pub webhook_key_env: String,
    /// The environment variable holding the shared HMAC secret (`whsec_…`), if any.
    #[arg(long)]
    pub webhook_hmac_env: Option<String>,
}

impl WebhookKeyArgs {
    fn sender(&self) -> anyhow::Result<WebhookSender> {
        let whsk = std::env::var(&self.webhook_key_env).with_context(|| {
            format!(
                "the environment variable {} is not set",
                self.webhook_key_env
            )
        })?;
        let whsec = match &self.webhook_hmac_env {
            Some(v) => Some(
                std::env::var(v)
                    .with_context(|| format!("the environment variable {v} is not set"))?,
            ),
            None => None,
        };
        let keys = SigningKeys::from_secret(&whsk, whsec.as_deref())
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.webhook_key_env))?;
        Ok(WebhookSender::new(keys, Duration::from_secs(10)))
    }
}

#[derive(clap::Args)]
pub struct AddArgs {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: String,
    /// A purpose it holds (repeat for several).
    #[arg(long = "purpose", required = true)]
    pub purposes: Vec<String>,
    /// Where its events go; without it, pull only.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Its client's public keys (a JWKS file).
    #[arg(long)]
    pub jwks: PathBuf,
    /// The data-item dictionary version its systems read.
    #[arg(long)]
    pub dictionary_version: u32,
    /// The municipality's local government code (the handshake's `source`).
    #[arg(long)]
    pub local_gov_code: String,
    #[command(flatten)]
    pub keys: WebhookKeyArgs,
    #[command(flatten)]
    pub db: DbArg,
    /// The rules folder with the purposes; without it, the ones built in.
    #[arg(long, env = "OSHIRASE_RULES")]
    pub rules: Option<PathBuf>,
}

pub fn run(cmd: AgencyCommand) -> anyhow::Result<u8> {
    match cmd {
        AgencyCommand::Add(args) => add(args),
        AgencyCommand::List { db } => list(&db),
        AgencyCommand::Verify {
            id,
            db,
            keys,
            local_gov_code,
        } => runtime()?.block_on(async {
            let store = db.open_existing().await?;
            let Some(agency) = store.agency(&id).await? else {
                eprintln!("no agency {id}");
                return Ok(exit::INPUT);
            };
            let sender = keys.sender()?;
            let source = oshirase_exchange::cloudevent::source(&local_gov_code);
            report(
                &id,
                verify(&store, &sender, &agency.spec, &source, SystemClock.now()).await?,
            )
        }),
        AgencyCommand::Replay {
            agency,
            purpose,
            after,
            db,
        } => runtime()?.block_on(async {
            let store = db.open_existing().await?;
            if store.rewind_stream(&agency, &purpose, after).await? {
                out!("{agency} {purpose}: events after {after} will be sent again");
                Ok(exit::OK)
            } else {
                eprintln!(
                    "{agency} {purpose}: no such stream, or nothing after {after} was sent yet"
                );
                Ok(exit::INPUT)
            }
        }),
        AgencyCommand::Pseudonym {
            agency,
            resident,
            db,
        } => runtime()?.block_on(async {
            let store = db.open_existing().await?;
            let id = parse_id(
                &resident,
                "resident",
                oshirase_engine::ids::ResidentId::parse,
            )?;
            match store
                .issue_pseudonym(&agency, &id, SystemClock.now())
                .await?
            {
                Some(p) => {
                    out!("{p}");
                    Ok(exit::OK)
                }
                None => {
                    eprintln!("no agency {agency}");
                    Ok(exit::INPUT)
                }
            }
        }),
        AgencyCommand::Keys { dir, client } => keys(&dir, client),
    }
}

fn report(id: &str, v: Verification) -> anyhow::Result<u8> {
    match v {
        Verification::Verified => {
            out!("{id}: registered; its endpoint answered the handshake");
            Ok(exit::OK)
        }
        Verification::NoEndpoint => {
            out!("{id}: registered, pull only (no endpoint)");
            Ok(exit::OK)
        }
        Verification::Failed(why) => {
            eprintln!("{id}: registered, but {why}; its events wait until `oshirase agency verify {id}` succeeds");
            Ok(exit::ENDPOINT)
        }
    }
}

fn add(args: AddArgs) -> anyhow::Result<u8> {
    let exchange = match load_exchange(args.rules.as_deref()) {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let jwks = std::fs::read_to_string(&args.jwks)
        .with_context(|| format!("cannot read {}", args.jwks.display()))?;
    let spec = AgencySpec {
        id: args.id.clone(),
        name: args.name,
        endpoint: args.endpoint,
        client_jwks: jwks,
        dictionary_version: args.dictionary_version,
        purposes: args.purposes,
    };
    let problems = oshirase_exchange::register::check(&spec, &exchange);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("agency {}: {p}", spec.id);
        }
        eprintln!("nothing was registered");
        return Ok(exit::INPUT);
    }
    let sender = args.keys.sender()?;
    runtime()?.block_on(async {
        let store = oshirase_store::Store::open(&args.db.db)
            .await?
            .with_exchange(Arc::clone(&exchange));
        let source = oshirase_exchange::cloudevent::source(&args.local_gov_code);
        let v = register(
            &store,
            &exchange,
            &sender,
            &spec,
            &source,
            SystemClock.now(),
        )
        .await?;
        report(&args.id, v)
    })
}

fn list(db: &DbArg) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        let store = db.open_existing().await?;
        let agencies = store.agencies().await?;
        let streams = store.streams(None).await?;
        let mut out = std::io::stdout().lock();
        if agencies.is_empty() {
            writeln!(out, "no agency is registered")?;
        }
        for a in &agencies {
            writeln!(
                out,
                "{} {} ({}; dictionary v{}; {})",
                a.spec.id,
                a.spec.name,
                a.spec.endpoint.as_deref().unwrap_or("pull only"),
                a.spec.dictionary_version,
                match (a.enabled, a.verified_at, &a.spec.endpoint) {
                    (false, _, _) => "disabled",
                    (true, _, None) => "enabled",
                    (true, Some(_), Some(_)) => "endpoint verified",
                    (true, None, Some(_)) => "endpoint NOT verified: events wait",
                }
            )?;
            for s in streams.iter().filter(|s| s.agency_id == a.spec.id) {
                writeln!(
                    out,
                    "  {}: last {}, delivered {}, pending {}, dead letters {}{}",
                    s.purpose_id,
                    s.last_seq,
                    s.delivered_seq,
                    s.last_seq - s.delivered_seq,
                    s.dead,
                    s.last_error
                        .as_deref()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default()
                )?;
            }
        }
        Ok(exit::OK)
    })
}

/// Writes `text` to `path`, readable by the owner only.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot create {} (an existing key is never overwritten)",
                    path.display()
                )
            })?;
        f.write_all(text.as_bytes())?;
    }
    #[cfg(not(unix))]
    std::fs::write(path, text)?;
    Ok(())
}

fn keys(dir: &Path, client: bool) -> anyhow::Result<u8> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = SigningKey::generate()?;
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
    if client {
        let pem = dir.join("client-key.pem");
        let public = dir.join("client-jwks.json");
        write_secret(&pem, &key.to_pem())?;
        std::fs::write(&public, format!("{jwks:#}\n"))?;
        out!(
            "{}: the agency's private key (it signs its client assertions)\n{}: register it with `oshirase agency add --jwks`",
            pem.display(),
            public.display()
        );
        return Ok(exit::OK);
    }
    let pem = dir.join("signing-key.pem");
    write_secret(&pem, &key.to_pem())?;
    let webhook = SigningKeys::generate();
    let secret = dir.join("webhook-key");
    write_secret(&secret, &format!("{}\n", webhook.ed25519_secret()))?;
    let hmac = dir.join("webhook-hmac");
    write_secret(&hmac, &format!("{}\n", SigningKeys::generate_hmac_secret()))?;
    out!(
        "{}: exchange.signing_key_pem (ES256, kid {})\n{}: put it in the variable named by exchange.webhook_key_env\n{}: optional, for agencies verifying v1 (HMAC): exchange.webhook_hmac_env\nagencies verify webhooks with the public key {}",
        pem.display(),
        key.kid(),
        secret.display(),
        hmac.display(),
        webhook.public_key()
    );
    Ok(exit::OK)
}
