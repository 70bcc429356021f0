//! `oshirase office`: the back office's side of submitted applications (docs/office.md): the
//! export for offices without an API client, and marking an agency client as a core system
//! with the procedures it may read.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveTime};
use oshirase_engine::clock::{self, Clock, SystemClock};
use oshirase_engine::ids::RuleId;
use oshirase_store::{role_ja, utc_text, Application};

use crate::common::{check_day, exit, runtime, DbArg};

#[derive(clap::Subcommand)]
pub enum OfficeCommand {
    /// Export the applications submitted since a day (Asia/Tokyo), as CSV for Excel (UTF-8
    /// with BOM, Japanese column names) or JSON Lines.
    Export(ExportArgs),
    /// Mark a registered agency client as a core system (基幹業務システム) that may read and
    /// change the applications of the given procedures (replacing its previous scope).
    Client {
        /// The agency client's id (`oshirase agency add --id`).
        #[arg(long)]
        agency: String,
        /// A rule id whose applications it may read (repeat for several).
        #[arg(long = "rule", required = true)]
        rules: Vec<String>,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The first day (YYYY-MM-DD, from 00:00 Asia/Tokyo) whose submissions are exported.
    #[arg(long)]
    pub since: NaiveDate,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    #[command(flatten)]
    pub db: DbArg,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: OfficeCommand) -> anyhow::Result<u8> {
    match cmd {
        OfficeCommand::Export(args) => export(args),
        OfficeCommand::Client { agency, rules, db } => runtime()?.block_on(async {
            let rules = rules
                .iter()
                .map(|r| RuleId::parse(r).with_context(|| format!("--rule {r}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let store = db.open_existing().await?;
            if store.agency(&agency).await?.is_none() {
                eprintln!(
                    "no agency client {agency}: register it first with `oshirase agency add`"
                );
                return Ok(exit::INPUT);
            }
            store
                .set_office_client(&agency, &rules, SystemClock.now())
                .await?;
            println!(
                "{agency} is a core system for: {}",
                rules
                    .iter()
                    .map(RuleId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(exit::OK)
        }),
    }
}

/// The CSV columns, in order.
pub const COLUMNS: [&str; 15] = [
    "受付番号",
    "版",
    "手続",
    "手続ID",
    "手続の版",
    "根拠法令",
    "決定キー",
    "対象者",
    "申請者",
    "続柄・資格",
    "申請日時",
    "状態",
    "状態の日時",
    "担当課からのメッセージ",
    "訂正",
];

fn export(args: ExportArgs) -> anyhow::Result<u8> {
    check_day("--since", args.since)?;
    let since = clock::in_tokyo(args.since, NaiveTime::MIN);
    let apps = runtime()?.block_on(async {
        let store = args.db.open_existing().await?;
        let apps = store
            .applications_since(
                &utc_text(since),
                "operator:office-export",
                SystemClock.now(),
            )
            .await?;
        anyhow::Ok(apps)
    })?;
    let mut text = String::new();
    match args.format {
        ExportFormat::Csv => write_csv(&mut text, &apps),
        ExportFormat::Jsonl => {
            for a in &apps {
                text.push_str(&oshirase_exchange::office::application_json(a).to_string());
                text.push('\n');
            }
        }
    }
    match &args.out {
        Some(path) => std::fs::write(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    eprintln!("{} applications since {}", apps.len(), args.since);
    Ok(exit::OK)
}

/// UTF-8 with a byte-order mark (Excel reads it as UTF-8), CRLF line ends (RFC 4180).
pub fn write_csv(out: &mut String, apps: &[Application]) {
    out.push('\u{feff}');
    row(out, COLUMNS.iter().map(|c| c.to_string()));
    for a in apps {
        let corrections = a
            .corrections
            .iter()
            .map(|(k, c)| format!("{k}: {} → {}", c.before, c.after))
            .collect::<Vec<_>>()
            .join("; ");
        row(
            out,
            [
                a.seq.to_string(),
                a.version.to_string(),
                a.title.clone(),
                a.rule.as_str().to_owned(),
                a.rule_version.to_string(),
                a.legal_basis.clone().unwrap_or_default(),
                a.decision_key.as_str().to_owned(),
                a.subject.as_str().to_owned(),
                a.applicant.as_str().to_owned(),
                role_ja(a.role, a.proxy_scopes.as_deref()),
                in_tokyo(&a.submitted_at),
                a.status.ja().to_owned(),
                in_tokyo(&a.status_at),
                a.message.clone().unwrap_or_default(),
                corrections,
            ],
        );
    }
}

/// A stored UTC time as Asia/Tokyo wall time (`2026-10-01 12:00:00`).
fn in_tokyo(utc: &str) -> String {
    DateTime::parse_from_rfc3339(utc)
        .map(|t| {
            t.with_timezone(&clock::jst())
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| utc.to_owned())
}

fn row(out: &mut String, cells: impl IntoIterator<Item = String>) {
    for (i, c) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&cell(&c));
    }
    out.push_str("\r\n");
}

/// One CSV cell: quoted when it must be, and a leading `'` on text a spreadsheet would run
/// as a formula (a resident's correction is their own text).
fn cell(text: &str) -> String {
    let formula =
        text.starts_with(['=', '+', '-', '@', '\t', '\r']) && text.parse::<f64>().is_err();
    let text = if formula {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("本人"), "本人");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(cell("-5"), "-5");
        assert_eq!(in_tokyo("2026-10-01T03:00:00.000Z"), "2026-10-01 12:00:00");
    }

    #[test]
    fn the_csv_starts_with_a_bom_and_the_japanese_header() {
        let mut out = String::new();
        write_csv(&mut out, &[]);
        assert!(out.starts_with("\u{feff}受付番号,版,手続,手続ID,"), "{out}");
        assert!(out.contains("続柄・資格,申請日時,状態,"), "{out}");
        assert!(out.ends_with("訂正\r\n"), "{out}");
    }
}
