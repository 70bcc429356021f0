//! `oshirase simulate`: a dry run over a date range, written as CSV, JSON and one
//! self-contained HTML page with a chart that staff can open. Nothing is written to any store,
//! and nothing anywhere but into `--out`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{Datelike, NaiveDate};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use oshirase_engine::ids::{LocalGovCode, ResidentId, RuleId};
use oshirase_engine::simulate::{simulate, simulate_and_compare, Comparison, Simulation};
use oshirase_engine::{calendar, Decision, DecisionKey, RuleFailure, RuleSet};
use serde::Serialize;

use crate::common::{exit, CatalogueArgs};

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The resident snapshot (JSON Lines); without it, the fixture town built into this binary.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// First notice day (YYYY-MM-DD).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last notice day, inclusive (YYYY-MM-DD).
    #[arg(long)]
    pub to: NaiveDate,
    #[command(flatten)]
    pub catalogue: CatalogueArgs,
    /// Where counts.csv, summary.json, chart.html (and compare.csv) are written; created if
    /// missing. Nothing is written anywhere else.
    #[arg(long, default_value = "out/simulate")]
    pub out: PathBuf,
    /// Compare with another rules folder: what it would add, remove or change.
    #[arg(long)]
    pub compare_rules: Option<PathBuf>,
    /// Compare with other layers (a municipality's changed amounts or rules) over the same
    /// national catalogue, or --compare-rules, for the same municipality.
    #[arg(long)]
    pub compare_layers: Option<PathBuf>,
    /// Sample decisions kept per rule (the first ones by date).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
}

impl SimulateArgs {
    /// The catalogue to compare with: `--compare-rules` for the national one and
    /// `--compare-layers` for the layers, each the simulated one's where not given.
    fn compared(&self) -> Option<CatalogueArgs> {
        if self.compare_rules.is_none() && self.compare_layers.is_none() {
            return None;
        }
        Some(CatalogueArgs {
            rules: self.compare_rules.clone().or(self.catalogue.rules.clone()),
            layers: self
                .compare_layers
                .clone()
                .or(self.catalogue.layers.clone()),
            municipality: self.catalogue.municipality.clone(),
        })
    }
}

/// Rule errors listed on stderr before pointing at summary.json: a rule failing for every
/// resident of a year would otherwise bury the summary.
const FAILURES_SHOWN: usize = 20;

/// The catalogue `catalogue` names, for the municipality of the snapshot when none is
/// named; `flag` says which side of the comparison did not load.
fn load_rules(
    catalogue: &CatalogueArgs,
    municipality: Option<LocalGovCode>,
    flag: &str,
) -> Result<RuleSet, u8> {
    catalogue
        .load_for(municipality)
        .inspect_err(|_| eprintln!("error: {flag} {}: the rules do not load", catalogue.name()))
}

fn check_range(from: NaiveDate, to: NaiveDate) -> anyhow::Result<()> {
    crate::common::check_day("--from", from)?;
    crate::common::check_day("--to", to)?;
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    Ok(())
}

pub fn run(args: SimulateArgs) -> anyhow::Result<u8> {
    // The range first: it costs nothing to check and a typo should not wait for the rules.
    check_range(args.from, args.to)?;
    let snap = crate::common::read_snapshot(args.snapshot.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pop = &snap.population;
    let here = snap.header.local_gov_code;
    let rules = match load_rules(&args.catalogue, here, "--rules") {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let compared_catalogue = args.compared();
    let other = match &compared_catalogue {
        Some(c) => match load_rules(c, here, "--compare-rules") {
            Ok(r) => Some(r),
            Err(code) => return Ok(code),
        },
        None => None,
    };

    let days = calendar::days_between(args.from, args.to).unsigned_abs() + 1;
    // indicatif hides a stderr bar that is not a terminal: pipes, CI and tests see nothing.
    let bar = ProgressBar::with_draw_target(Some(days), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("simulating {bar:40} {pos}/{len} days, eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut tick = |day: NaiveDate| {
        bar.set_message(day.to_string());
        bar.inc(1);
    };
    let (sim, cmp) = match &other {
        Some(o) => {
            let (s, c) =
                simulate_and_compare(&rules, o, pop, args.from, args.to, args.samples, &mut tick);
            (s, Some(c))
        }
        None => (
            simulate(&rules, pop, args.from, args.to, args.samples, &mut tick),
            None,
        ),
    };
    bar.finish_and_clear();

    let compared_name = compared_catalogue.as_ref().map(CatalogueArgs::name);
    let compared = other.as_ref().zip(compared_name.as_deref());
    let written = write_outputs(&args, &rules, &sim, cmp.as_ref(), compared)?;

    // The short summary: what a person reads before opening the files.
    out!(
        "{} – {} ({} days), {} residents, rules {} (rule set {}, {} rules)",
        args.from,
        args.to,
        sim.days(),
        pop.len(),
        args.catalogue.name(),
        rules.version,
        rules.rules().len()
    );
    out!("notices per rule:");
    let silent: Vec<&str> = sim
        .totals
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| id.as_str())
        .collect();
    for (rule, n) in sim.totals.iter().filter(|(_, n)| **n > 0) {
        out!("  {n:>7}  {rule}");
    }
    out!("  {:>7}  total", sim.notices());
    if !silent.is_empty() {
        out!("no notices: {}", silent.join(", "));
    }
    if let (Some(c), Some((o, dir))) = (&cmp, compared) {
        let n = c.counts();
        out!(
            "compared with {} (rule set {}): {} added, {} removed, {} changed",
            dir,
            o.version,
            n.added,
            n.removed,
            n.changed
        );
    }
    let other_failures = cmp.as_ref().map_or(&[][..], |c| &c.other_failures[..]);
    report_failures("", &sim.failures);
    report_failures(" (--compare-rules)", other_failures);
    out!("rule errors: {}", sim.failures.len());
    if cmp.is_some() {
        out!("rule errors (--compare-rules): {}", other_failures.len());
    }
    out!("written:");
    for p in &written {
        out!("  {}", p.display());
    }
    Ok(if sim.failures.is_empty() && other_failures.is_empty() {
        exit::OK
    } else {
        exit::RULE_RUNTIME
    })
}

fn report_failures(which: &str, failures: &[RuleFailure]) {
    for f in failures.iter().take(FAILURES_SHOWN) {
        eprintln!("rule error{which}: {f}");
    }
    if failures.len() > FAILURES_SHOWN {
        eprintln!(
            "... and {} more rule errors{which}: all are in summary.json",
            failures.len() - FAILURES_SHOWN
        );
    }
}

/// Writes the files into `--out` and returns their paths.
fn write_outputs(
    args: &SimulateArgs,
    rules: &RuleSet,
    sim: &Simulation,
    cmp: Option<&Comparison>,
    compared: Option<(&RuleSet, &str)>,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let write = |name: &str, body: String| -> anyhow::Result<PathBuf> {
        let p = args.out.join(name);
        std::fs::write(&p, body).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(p)
    };
    let summary = summary_json(args, rules, sim, cmp.zip(compared))?;
    let mut written = vec![
        write("counts.csv", counts_csv(sim))?,
        write("summary.json", summary)?,
        write(
            "chart.html",
            chart_html(rules, sim, cmp.zip(compared.map(|(o, _)| o))),
        )?,
    ];
    let compare_csv_path = args.out.join("compare.csv");
    match cmp {
        Some(c) => written.push(write("compare.csv", compare_csv(c))?),
        // A compare.csv left by an earlier run would read as this run's comparison.
        None if compare_csv_path.is_file() => std::fs::remove_file(&compare_csv_path)
            .with_context(|| format!("cannot remove stale {}", compare_csv_path.display()))?,
        None => {}
    }
    Ok(written)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `date,rule,notices`, one row per day and rule with at least one notice.
fn counts_csv(sim: &Simulation) -> String {
    let mut out = String::from("date,rule,notices\n");
    for (day, per_rule) in &sim.per_day {
        for (rule, n) in per_rule {
            let _ = writeln!(out, "{day},{},{n}", csv_field(rule.as_str()));
        }
    }
    out
}

fn compare_csv(cmp: &Comparison) -> String {
    let mut out = String::from("change,key,rule,subject,occurrence,detail\n");
    for d in &cmp.differences {
        let x = d.decision();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            d.change(),
            csv_field(x.key.as_str()),
            csv_field(x.rule.as_str()),
            csv_field(x.subject.as_str()),
            x.occurrence,
            csv_field(&d.detail())
        );
    }
    out
}

/// summary.json, fields in reading order (serde_json's maps would sort them).
#[derive(Serialize)]
struct Summary<'a> {
    rules_dir: String,
    rule_set_version: &'a str,
    snapshot: String,
    from: NaiveDate,
    to: NaiveDate,
    days: usize,
    notices: usize,
    totals: &'a BTreeMap<RuleId, usize>,
    failures: &'a [RuleFailure],
    samples: &'a BTreeMap<RuleId, Vec<Decision>>,
    compare: Option<CompareSummary<'a>>,
}

#[derive(Serialize)]
struct CompareSummary<'a> {
    rules_dir: String,
    rule_set_version: &'a str,
    added: usize,
    removed: usize,
    changed: usize,
    per_rule: BTreeMap<RuleId, Counts>,
    differences: Vec<DifferenceRow<'a>>,
    /// Run-time failures of the compared catalogue.
    failures: &'a [RuleFailure],
}

#[derive(Serialize)]
struct Counts {
    added: usize,
    removed: usize,
    changed: usize,
}

#[derive(Serialize)]
struct DifferenceRow<'a> {
    change: &'static str,
    key: &'a DecisionKey,
    rule: &'a RuleId,
    subject: &'a ResidentId,
    occurrence: NaiveDate,
    notify_on: NaiveDate,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

fn summary_json(
    args: &SimulateArgs,
    rules: &RuleSet,
    sim: &Simulation,
    cmp: Option<(&Comparison, (&RuleSet, &str))>,
) -> anyhow::Result<String> {
    let compare = cmp.map(|(c, (other, dir))| {
        let n = c.counts();
        CompareSummary {
            rules_dir: dir.to_owned(),
            rule_set_version: &other.version,
            added: n.added,
            removed: n.removed,
            changed: n.changed,
            per_rule: c
                .per_rule()
                .into_iter()
                .map(|(id, n)| {
                    let counts = Counts {
                        added: n.added,
                        removed: n.removed,
                        changed: n.changed,
                    };
                    (id, counts)
                })
                .collect(),
            differences: c
                .differences
                .iter()
                .map(|d| {
                    let x = d.decision();
                    DifferenceRow {
                        change: d.change(),
                        key: &x.key,
                        rule: &x.rule,
                        subject: &x.subject,
                        occurrence: x.occurrence,
                        notify_on: x.notify_on,
                        detail: d.detail(),
                    }
                })
                .collect(),
            failures: &c.other_failures,
        }
    });
    let summary = Summary {
        rules_dir: args.catalogue.name(),
        rule_set_version: &rules.version,
        snapshot: crate::common::snapshot_name(args.snapshot.as_deref()),
        from: sim.from,
        to: sim.to,
        days: sim.days(),
        notices: sim.notices(),
        totals: &sim.totals,
        failures: &sim.failures,
        samples: &sim.samples,
        compare,
    };
    Ok(serde_json::to_string_pretty(&summary)? + "\n")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Distinct colours for any number of rules: hues spread by the golden angle, lightness
/// alternating so that neighbours in the legend differ even when hues come close. Written
/// as hex, which every SVG viewer reads.
fn colour(i: usize) -> String {
    let h = (i as f64 * 137.508) % 360.0 / 60.0;
    let (s, l) = (0.65, [0.42, 0.58, 0.34][i % 3]);
    let c = (1.0 - (2.0 * l - 1.0_f64).abs()) * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let byte = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

/// A round tick step (1, 2 or 5 × 10^k) giving at most about 5 ticks up to `max`.
fn tick_step(max: usize) -> usize {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if max.div_ceil(step * m) <= 5 {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// Rows of the comparison shown on the page; the rest are in compare.csv and summary.json.
const COMPARE_ROWS_SHOWN: usize = 1000;

/// The page: a stacked bar chart of notices per day (or per few days on long ranges) per
/// rule as inline SVG, a legend, the totals with their Japanese titles, the rule errors and
/// the comparison. Nothing is loaded from anywhere: it opens from a USB stick or an
/// offline PC.
fn chart_html(rules: &RuleSet, sim: &Simulation, cmp: Option<(&Comparison, &RuleSet)>) -> String {
    let (from, to) = (sim.from, sim.to);
    let days = sim.days().max(1);
    // At most about a year of bars; longer ranges add up several days per bar.
    let bucket = days.div_ceil(366);
    let bars = days.div_ceil(bucket);
    let bucket_of = |d: NaiveDate| calendar::days_between(from, d).unsigned_abs() as usize / bucket;
    let mut stacks: Vec<BTreeMap<&RuleId, usize>> = vec![BTreeMap::new(); bars];
    // The same counts per rule, for each rule's own small chart on its own scale: one
    // annual batch (April 1) would otherwise flatten every daily rule in the big chart.
    let mut series: BTreeMap<&RuleId, Vec<usize>> = BTreeMap::new();
    for (day, per_rule) in &sim.per_day {
        for (rule, n) in per_rule {
            *stacks[bucket_of(*day)].entry(rule).or_default() += n;
            series.entry(rule).or_insert_with(|| vec![0; bars])[bucket_of(*day)] += n;
        }
    }
    let active: Vec<&RuleId> = sim
        .totals
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(id, _)| id)
        .collect();
    let colours: BTreeMap<&RuleId, String> = active
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, colour(i)))
        .collect();
    let max = stacks
        .iter()
        .map(|s| s.values().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let step = tick_step(max);
    let top = max.div_ceil(step) * step;

    let (w, h) = (1000.0_f64, 420.0_f64);
    let (left, right, top_pad, bottom) = (64.0, 12.0, 12.0, 56.0);
    let (pw, ph) = (w - left - right, h - top_pad - bottom);
    let bar_w = pw / bars as f64;
    let y_of = |v: usize| top_pad + ph - ph * v as f64 / top as f64;
    let per = if bucket == 1 {
        "1日あたり / per day".to_owned()
    } else {
        format!("{bucket}日あたり / per {bucket} days")
    };

    let mut svg = format!(
        r#"<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="通知数の推移 / notices per day" font-family="sans-serif">"#
    );
    // Y axis: grid lines, ticks and the label.
    let mut v = 0;
    while v <= top {
        let y = y_of(v);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{v}</text>"##,
            w - right,
            left - 6.0,
            y + 4.0
        );
        v += step;
    }
    let _ = write!(
        svg,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" font-size="12" text-anchor="middle">通知数（{per}）</text>"#,
        top_pad + ph / 2.0
    );
    // Bars, stacked in legend order.
    for (i, stack) in stacks.iter().enumerate() {
        let x = left + i as f64 * bar_w;
        let start = calendar::add_days(from, (i * bucket) as i64);
        let end = calendar::add_days(start, bucket as i64 - 1).min(to);
        let when = if start == end {
            start.to_string()
        } else {
            format!("{start} – {end}")
        };
        let mut below = 0;
        for (rule, n) in stack {
            let (y0, y1) = (y_of(below), y_of(below + n));
            below += n;
            let _ = write!(
                svg,
                r#"<rect x="{x:.2}" y="{y1:.2}" width="{:.2}" height="{:.2}" fill="{}"><title>{when} {}: {n}</title></rect>"#,
                (bar_w * 0.9).max(0.3),
                y0 - y1,
                colours[rule],
                escape(rule.as_str())
            );
        }
    }
    // X axis: the line, date ticks and the label. Month starts on long ranges, about eight
    // evenly spaced days on short ones.
    let base = top_pad + ph;
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{base}" x2="{}" y2="{base}" stroke="#333"/><line x1="{left}" y1="{top_pad}" x2="{left}" y2="{base}" stroke="#333"/>"##,
        w - right
    );
    let ticks: Vec<NaiveDate> = if days > 62 {
        let months: Vec<NaiveDate> = (0..days)
            .map(|i| calendar::add_days(from, i as i64))
            .filter(|d| d.day() == 1)
            .collect();
        let every = months.len().div_ceil(12).max(1);
        months.into_iter().step_by(every).collect()
    } else {
        (0..days)
            .step_by(days.div_ceil(8))
            .map(|i| calendar::add_days(from, i as i64))
            .collect()
    };
    for d in ticks {
        let x = left + (bucket_of(d) as f64 + 0.45) * bar_w;
        let label = if days > 62 {
            d.format("%Y-%m").to_string()
        } else {
            d.format("%m-%d").to_string()
        };
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{base}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{label}</text>"##,
            base + 5.0,
            base + 18.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle">通知日 / notice day（{from} – {to}）</text></svg>"#,
        left + pw / 2.0,
        h - 10.0
    );

    let mut legend = String::from(r#"<ul class="legend">"#);
    for id in &active {
        let _ = write!(
            legend,
            r#"<li><span class="sw" style="background:{}"></span>{}</li>"#,
            colours[id],
            escape(id.as_str())
        );
    }
    legend.push_str("</ul>");
    if active.is_empty() {
        legend = "<p>この期間に通知はありません / No notices in this range.</p>".to_owned();
    }

    // A rule only the compared catalogue has still gets its title.
    let title = |id: &RuleId| {
        rules
            .get(id)
            .or_else(|| cmp.and_then(|(_, o)| o.get(id)))
            .map_or(String::new(), |r| r.title.ja.clone())
    };
    let mut rows = String::new();
    for (id, n) in &sim.totals {
        let (sw, spark) = match (colours.get(id), series.get(id)) {
            (Some(c), Some(counts)) => (
                format!(r#"<span class="sw" style="background:{c}"></span>"#),
                sparkline(counts, c),
            ),
            _ => (String::new(), String::new()),
        };
        let _ = write!(
            rows,
            r#"<tr><td>{sw}{}</td><td>{}</td><td class="n">{n}</td><td>{spark}</td></tr>"#,
            escape(id.as_str()),
            escape(&title(id)),
        );
    }

    let mut failures = String::new();
    if !sim.failures.is_empty() {
        let _ = write!(
            failures,
            "<h2>ルールの実行時エラー / Rule errors ({})</h2><p>該当する住民にはそのルールの通知が作られません。/ These residents got no decision from the rule. All are listed in summary.json.</p><ul>",
            sim.failures.len()
        );
        for f in sim.failures.iter().take(50) {
            let _ = write!(failures, "<li>{}</li>", escape(&f.to_string()));
        }
        failures.push_str("</ul>");
    }

    let compare = cmp.map_or(String::new(), |(c, _)| compare_section(c, &title));

    format!(
        r#"<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>通知シミュレーション {from} – {to}</title>
<style>body{{font-family:sans-serif;margin:1.5em auto;max-width:1040px;padding:0 1em;color:#222}}table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}.n{{text-align:right}}.sw{{display:inline-block;width:10px;height:10px;margin-right:6px}}.legend{{display:flex;flex-wrap:wrap;gap:4px 16px;list-style:none;padding:0;font-size:13px}}</style>
</head><body>
<h1>通知シミュレーション / Notices simulated</h1>
<p>{from} – {to}（{days}日間）: 通知 {total} 件, ルールの実行時エラー {nfail} 件, ルールセット {version}</p>
<h2>日別・ルール別の通知数 / Notices per day and rule</h2>
{svg}
{legend}
<h2>ルール別の合計 / Totals per rule</h2>
<table><tr><th>ルール / rule</th><th>名称 / title</th><th>通知数 / notices</th><th>推移（ルールごとの縮尺）/ over the range, own scale</th></tr>{rows}<tr><th colspan="2">合計 / total</th><th class="n">{total}</th><th></th></tr></table>
{failures}{compare}
</body></html>
"#,
        days = sim.days(),
        total = sim.notices(),
        nfail = sim.failures.len(),
        version = escape(&rules.version),
    )
}

/// A small bar chart of one rule's counts over the range, scaled to its own maximum.
fn sparkline(counts: &[usize], colour: &str) -> String {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut svg = format!(
        r#"<svg viewBox="0 0 {} 20" width="240" height="20" preserveAspectRatio="none" role="img" aria-label="max {max}">"#,
        counts.len()
    );
    for (i, n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let bh = 20.0 * *n as f64 / max as f64;
        let _ = write!(
            svg,
            r#"<rect x="{i}" y="{:.2}" width="1" height="{bh:.2}" fill="{colour}"/>"#,
            20.0 - bh
        );
    }
    svg.push_str("</svg>");
    svg
}

fn compare_section(c: &Comparison, title: &dyn Fn(&RuleId) -> String) -> String {
    let n = c.counts();
    let mut out = format!(
        "<h2>ルール変更の影響 / Effect of the rule change</h2><p>追加 / added {}, 削除 / removed {}, 変更 / changed {}; 比較先のルールの実行時エラー / rule errors of the compared rules {}</p>",
        n.added,
        n.removed,
        n.changed,
        c.other_failures.len()
    );
    if c.differences.is_empty() {
        out.push_str("<p>差分はありません / No difference.</p>");
        return out;
    }
    out.push_str("<table><tr><th>ルール / rule</th><th>名称 / title</th><th>追加 / added</th><th>削除 / removed</th><th>変更 / changed</th></tr>");
    for (id, k) in c.per_rule() {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(id.as_str()),
            escape(&title(&id)),
            k.added,
            k.removed,
            k.changed
        );
    }
    out.push_str("</table><h3>住民ごと / Resident by resident</h3>");
    if c.differences.len() > COMPARE_ROWS_SHOWN {
        let _ = write!(
            out,
            "<p>最初の {COMPARE_ROWS_SHOWN} 件 / first {COMPARE_ROWS_SHOWN} of {}: all are in compare.csv.</p>",
            c.differences.len()
        );
    }
    out.push_str("<table><tr><th>change</th><th>rule</th><th>subject</th><th>occurrence</th><th>notice day</th><th>detail</th></tr>");
    for d in c.differences.iter().take(COMPARE_ROWS_SHOWN) {
        let x = d.decision();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            d.change(),
            escape(x.rule.as_str()),
            escape(x.subject.as_str()),
            x.occurrence,
            x.notify_on,
            escape(&d.detail())
        );
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_round_and_few() {
        for (max, step) in [
            (1, 1),
            (5, 1),
            (6, 2),
            (10, 2),
            (11, 5),
            (152, 50),
            (2000, 500),
        ] {
            assert_eq!(tick_step(max), step, "max {max}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("a/b"), "a/b");
        assert_eq!(csv_field("x, y"), "\"x, y\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
