//! Synthetic populations (`oshirase population generate`): a resident register of N people
//! with Japan's single-year age structure and household sizes, and a year of register changes after it
//! (births, deaths, moves in and out, 世帯主変更) at the national annual rates, in the formats
//! of docs/snapshot-format.md and docs/change-feed.md. The figures and their sources are in
//! fixtures/README.md ("Synthetic populations").
//!
//! Deterministic: one ChaCha8 stream seeded from `--seed`, and only ordered collections, so a
//! seed always gives the same bytes. People are kept as a few dozen bytes each and records are
//! serialized as they are written, so a million residents need about a hundred megabytes.
//!
//! One module a step, in the order they run: `world` (the figures and the state), `people`,
//! `households`, `attributes`, `year` (planned), `writer` (the snapshot), `year` (lived) and
//! `writer` (the changes); `names` gives the records their names.

mod attributes;
mod households;
mod names;
mod people;
mod world;
mod writer;
mod year;

use std::path::PathBuf;

use anyhow::{ensure, Context};
use chrono::NaiveDate;
use oshirase_engine::calendar;
use oshirase_engine::ids::LocalGovCode;
use oshirase_engine::municipalities::{self, Municipality};

use attributes::{assign_arrivals, assign_relations, assign_work};
use households::{build_households, number_residents};
use people::build_people;
use world::{World, MAX_AGE};
use writer::{write_changes, write_snapshot};
use year::{live_year, plan_year};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Residents on the register on `start`.
    pub residents: usize,
    /// The same seed and options give the same files, byte for byte.
    pub seed: u64,
    /// Output folder (created if missing).
    pub out: PathBuf,
    /// The register date of the snapshot; the changes cover the 365 days after it.
    pub start: NaiveDate,
    /// The municipality of the register (`DEFAULT_MUNICIPALITY` unless told): its code is
    /// on every record, its prefecture and name begin every address.
    pub municipality: &'static Municipality,
}

/// The municipality of a register when none is named: 川崎市, a designated city (its wards
/// are in the addresses).
pub const DEFAULT_MUNICIPALITY: &str = "141305";

/// The municipality of `code` (a 市区町村 of the bundled table), or why it cannot be one.
pub fn municipality(code: &str) -> anyhow::Result<&'static Municipality> {
    let code = LocalGovCode::parse(code).map_err(|e| anyhow::anyhow!("--municipality: {e}"))?;
    municipalities::find(code)
        .ok_or_else(|| anyhow::anyhow!("--municipality: {code} is not the code of a 市区町村"))
}

/// Largest register the ids (8 digits, with room for a year of arrivals) can number.
pub const MAX_RESIDENTS: usize = 50_000_000;

/// What the run wrote, for the operator.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub(crate) out: PathBuf,
    pub(crate) residents: usize,
    pub(crate) records: usize,
    pub(crate) households: usize,
    pub(crate) sizes: [usize; 6],
    pub(crate) aged_65: usize,
    pub(crate) aged_75: usize,
    pub(crate) under_15: usize,
    pub(crate) births: usize,
    pub(crate) deaths: usize,
    pub(crate) moves_in: usize,
    pub(crate) moves_out: usize,
    pub(crate) householder_changes: usize,
    pub(crate) movers_20_34: usize,
    pub(crate) changes: usize,
}

impl Summary {
    pub fn render(&self, secs: f64) -> String {
        let pct = |n: usize, d: usize| 100.0 * n as f64 / d.max(1) as f64;
        let sizes: Vec<String> = self
            .sizes
            .iter()
            .map(|n| format!("{:.1}%", pct(*n, self.households)))
            .collect();
        format!(
            "{residents} residents in {hh} households (mean size {mean:.2}; sizes 1/2/3/4/5/6+: {sizes}); \
             aged 0-14 {u15:.1}%, 65+ {a65:.1}%, 75+ {a75:.1}%\n\
             changes over the year: {births} births, {deaths} deaths, {mi} moves in, {mo} moves out \
             ({young:.0}% of them aged 20-34), {hc} householder changes\n\
             wrote {snap} ({records} records) and {changes} ({n} changes) in {secs:.1} s",
            residents = self.residents,
            hh = self.households,
            mean = self.residents as f64 / self.households.max(1) as f64,
            sizes = sizes.join("/"),
            u15 = pct(self.under_15, self.residents),
            a65 = pct(self.aged_65, self.residents),
            a75 = pct(self.aged_75, self.residents),
            births = self.births,
            deaths = self.deaths,
            mi = self.moves_in,
            mo = self.moves_out,
            young = pct(self.movers_20_34, self.moves_in + self.moves_out),
            hc = self.householder_changes,
            snap = self.out.join("snapshot.jsonl").display(),
            records = self.records,
            changes = self.out.join("changes.jsonl").display(),
            n = self.changes,
        )
    }
}

/// Generates the register and its year of changes into `args.out`.
pub fn generate(args: &Options) -> anyhow::Result<Summary> {
    ensure!(
        (1..=MAX_RESIDENTS).contains(&args.residents),
        "--residents {} must be from 1 to {MAX_RESIDENTS}",
        args.residents
    );
    ensure!(
        calendar::supported(calendar::shift_years(args.start, -(MAX_AGE as i32 + 2)))
            && calendar::supported(calendar::shift_years(args.start, 2)),
        "--start {} is outside the supported years {}-{} (birth dates reach back {} years)",
        args.start,
        calendar::MIN_YEAR + MAX_AGE as i32 + 2,
        calendar::MAX_YEAR - 2,
        MAX_AGE + 2
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let mut w = World::new(args);
    build_people(&mut w, args.residents)?;
    build_households(&mut w);
    // The pools have done their work; their memory is better spent on the records.
    w.pools = [Vec::new(), Vec::new()];
    assign_work(&mut w);
    assign_arrivals(&mut w);
    assign_relations(&mut w);
    let (order, number) = number_residents(&mut w);
    // The year is planned before the snapshot is written (a mother's 出産育児一時金 choice is
    // on the register beforehand) and lived after it (householder changes rewrite 続柄).
    let plans = plan_year(&mut w);
    let mut summary = write_snapshot(&mut w, &order, args)?;
    let year = live_year(&mut w, plans, number + 1)?;
    let changes = write_changes(year.lines, &args.out, args.municipality.code)?;
    summary.births = year.summary.births;
    summary.deaths = year.summary.deaths;
    summary.moves_in = year.summary.moves_in;
    summary.moves_out = year.summary.moves_out;
    summary.householder_changes = year.summary.householder_changes;
    summary.movers_20_34 = year.summary.movers_20_34;
    summary.changes = changes;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a, 64 bits: enough to notice any changed byte without a hashing dependency.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The files of a small fixed run, as (length, FNV-1a) each. These change only when the
    /// generator's output is meant to change (a new figure, a new rule of the model); a pure
    /// refactoring must leave them alone.
    #[test]
    fn output_is_stable_for_a_fixed_seed() {
        let out =
            std::env::temp_dir().join(format!("oshirase-popgen-stable-{}", std::process::id()));
        let summary = generate(&Options {
            municipality: municipality(DEFAULT_MUNICIPALITY).unwrap(),
            residents: 3000,
            seed: 20260401,
            out: out.clone(),
            start: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
        })
        .unwrap();
        let digest = |name: &str| {
            let bytes = std::fs::read(out.join(name)).unwrap();
            (bytes.len(), fnv1a(&bytes))
        };
        let got = (digest("snapshot.jsonl"), digest("changes.jsonl"));
        std::fs::remove_dir_all(&out).unwrap();
        assert_eq!(summary.residents, 3000);
        assert_eq!(
            got,
            (
                (1_472_809, 0xbe21_437a_dcde_788f),
                (103_703, 0x7b6c_73ac_c3b1_9b2e)
            ),
            "generator output changed"
        );
    }
}
