//! What the commands share: exit codes, loading the rules, checking days and ids, the async
//! runtime, the database argument and the shutdown signal.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::NaiveDate;
use oshirase_engine::ids::LocalGovCode;
use oshirase_engine::layers::{LayerSources, Layers};
use oshirase_engine::{calendar, load_dir, RuleSet};

/// Exit codes, documented in README.md.
pub mod exit {
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
    /// An agency was registered, but its endpoint did not answer the handshake.
    pub const ENDPOINT: u8 = 6;
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The embedded default: a SQLite file in the working directory.
pub const DEFAULT_DB: &str = "oshirase.sqlite";

#[derive(clap::Args)]
pub struct DbArg {
    /// Database: a SQLite file path or sqlite:// URL (default), or a postgres:// URL.
    #[arg(long, env = "OSHIRASE_DATABASE_URL", default_value = DEFAULT_DB, hide_env_values = true)]
    pub db: String,
}

impl DbArg {
    /// The store, for a command that works on what is already there (`outbox list`,
    /// `outbox retry`): a SQLite file that does not exist is an error, never a new, empty
    /// database that answers "0 rows".
    pub async fn open_existing(&self) -> Result<oshirase_store::Store, oshirase_store::StoreError> {
        if let Some(path) = sqlite_file(&self.db) {
            if !path.exists() {
                return Err(oshirase_store::StoreError::Missing {
                    path: path.display().to_string(),
                });
            }
        }
        oshirase_store::Store::open(&self.db).await
    }
}

/// The file a SQLite database argument names (a path, `sqlite://PATH` or `sqlite:PATH`,
/// with or without options); `None` for PostgreSQL and in-memory databases.
fn sqlite_file(db: &str) -> Option<std::path::PathBuf> {
    if db.starts_with("postgres") || db.contains(":memory:") {
        return None;
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    Some(std::path::PathBuf::from(path))
}

/// Loads a rules folder, or the catalogue built into the binary; on failure prints every
/// error and gives the exit code.
pub fn load_rules(dir: Option<&Path>) -> Result<RuleSet, u8> {
    reported(match dir {
        Some(dir) => load_dir(dir),
        None => crate::builtin::rules(),
    })
}

/// A catalogue, or its errors printed and the exit code; what would show raw to residents
/// is warned about.
pub fn reported(loaded: Result<RuleSet, oshirase_engine::LoadErrors>) -> Result<RuleSet, u8> {
    let rules = loaded.map_err(|e| {
        eprintln!("{e}");
        exit::RULES
    })?;
    warn_gaps(&rules);
    Ok(rules)
}

/// Which catalogue a command uses: the national one (a folder or the one built in), and a
/// deployment's prefecture and municipality layers over it for one municipality.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CatalogueArgs {
    /// The national rule catalogue folder; without it, the catalogue built into this binary.
    #[arg(long, env = "OSHIRASE_RULES")]
    pub rules: Option<PathBuf>,
    /// The deployment's layers over it: prefectures/CODE/ and municipalities/CODE/, each with
    /// rules, parameters/ and tests/ (rules/README.md, Layers).
    #[arg(long, env = "OSHIRASE_LAYERS")]
    pub layers: Option<PathBuf>,
    /// The municipality (local government code) whose catalogue to use: national, then its
    /// prefecture's layer, then its own.
    #[arg(long, env = "OSHIRASE_MUNICIPALITY")]
    pub municipality: Option<String>,
}

impl CatalogueArgs {
    /// The catalogue in force for the municipality named, or the national one; on failure
    /// prints every error and gives the exit code.
    pub fn load(&self) -> Result<RuleSet, u8> {
        self.load_for(None)
    }

    /// The same, with the municipality of the data in hand (a snapshot's header) when
    /// `--municipality` names none.
    pub fn load_for(&self, data_municipality: Option<LocalGovCode>) -> Result<RuleSet, u8> {
        let municipality = match self.municipality.as_deref().map(LocalGovCode::parse) {
            None => data_municipality.filter(|_| self.layers.is_some()),
            Some(Ok(code)) => Some(code),
            Some(Err(e)) => {
                eprintln!("--municipality: {e}");
                return Err(exit::RULES);
            }
        };
        match (&self.layers, municipality) {
            (None, None) => load_rules(self.rules.as_deref()),
            (Some(_), None) => {
                eprintln!("--layers: name the municipality whose catalogue to use (--municipality CODE, or a snapshot whose header has its local_gov_code)");
                Err(exit::RULES)
            }
            (layers, Some(code)) => reported(
                load_layers(self.rules.as_deref(), layers.as_deref())
                    .and_then(|l| l.effective(code)),
            ),
        }
    }

    /// How the catalogue is named in reports: the national folder, and the layers over it.
    pub fn name(&self) -> String {
        let national = rules_name(self.rules.as_deref());
        match &self.layers {
            None => national,
            Some(layers) => format!("{national} with the layers of {}", layers.display()),
        }
    }
}

/// The national catalogue (a folder, or the one built in) and the layers of `layers`.
pub fn load_layers(
    national: Option<&Path>,
    layers: Option<&Path>,
) -> Result<Layers, oshirase_engine::LoadErrors> {
    let base = match national {
        Some(dir) => Layers::national(dir, LayerSources::read_national(dir)?),
        None => Layers::national(Path::new("rules"), crate::builtin::national()),
    };
    match layers {
        Some(root) => base.read_local(root),
        None => Ok(base),
    }
}

fn warn_gaps(rules: &RuleSet) {
    if let Some(first) = rules.presentation_gaps.first() {
        eprintln!(
            "warning: {} rule field(s) or setting(s) would show raw to residents, first {first}; `oshirase rules check` lists them",
            rules.presentation_gaps.len()
        );
    }
}

/// The data-item dictionary and purposes of a rules folder (`items/`, `purposes/`), or the
/// ones built into the binary when no folder is given or the folder holds procedures only;
/// on failure prints every error and gives the exit code.
pub fn load_exchange(
    dir: Option<&Path>,
) -> Result<std::sync::Arc<oshirase_engine::purposes::Exchange>, u8> {
    match dir.filter(|d| has_exchange(d)) {
        Some(dir) => oshirase_engine::purposes::load_dir(dir),
        None => crate::builtin::exchange(),
    }
    .map(std::sync::Arc::new)
    .map_err(|e| {
        eprintln!("{e}");
        exit::RULES
    })
}

/// Whether a rules folder has its own data-item dictionary or purposes.
pub fn has_exchange(dir: &Path) -> bool {
    dir.join("items").exists() || dir.join(oshirase_engine::purposes::PURPOSES_DIR).exists()
}

/// A snapshot file, or the fixture town built into the binary.
pub fn read_snapshot(
    file: Option<&Path>,
) -> Result<oshirase_engine::Snapshot, oshirase_engine::DataErrors> {
    match file {
        Some(f) => oshirase_engine::load_snapshot(f),
        None => oshirase_engine::parse_snapshot(crate::builtin::TOWN, "town.jsonl (built in)"),
    }
}

/// How a command names its snapshot in what it prints.
pub fn snapshot_name(file: Option<&Path>) -> String {
    file.map_or_else(
        || "the built-in fixture town".to_owned(),
        |f| f.display().to_string(),
    )
}

/// How a command names its catalogue in what it prints.
pub fn rules_name(dir: Option<&Path>) -> String {
    dir.map_or_else(
        || "rules (built in)".to_owned(),
        |d| d.display().to_string(),
    )
}

pub fn parse_id<T>(
    s: &str,
    what: &str,
    parse: fn(&str) -> Result<T, oshirase_engine::ids::IdError>,
) -> anyhow::Result<T> {
    parse(s).with_context(|| format!("--{what}"))
}

/// Refuses a day outside the calendar's range, naming the flag it came from.
pub fn check_day(flag: &str, d: NaiveDate) -> anyhow::Result<()> {
    anyhow::ensure!(
        calendar::supported(d),
        "{flag} {d} is outside the supported years {}-{}",
        calendar::MIN_YEAR,
        calendar::MAX_YEAR
    );
    Ok(())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
