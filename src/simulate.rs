//! `oshirase simulate`: a dry run over a date range, written as CSV, JSON and one
//! self-contained HTML page with a chart that staff can open. Nothing is written to any store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use oshirase_engine::simulate::{compare, simulate, Difference, Simulation};
use oshirase_engine::{calendar, load_dir, load_snapshot, RuleSet};

use crate::exit;

#[derive(clap::Args)]
pub struct SimulateArgs {
    #[arg(long)]
    pub snapshot: PathBuf,
    #[arg(long)]
    pub from: NaiveDate,
    #[arg(long)]
    pub to: NaiveDate,
    #[arg(long, default_value = "rules", env = "OSHIRASE_RULES")]
    pub rules: PathBuf,
    /// Where counts.csv, summary.json and chart.html are written.
    #[arg(long, default_value = "out/simulate")]
    pub out: PathBuf,
    /// Compare with another rules folder: what it would add, remove or change.
    #[arg(long)]
    pub compare_rules: Option<PathBuf>,
    /// Sample decisions kept per rule.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
}

fn load_rules(dir: &Path) -> Result<RuleSet, u8> {
    load_dir(dir).map_err(|e| {
        eprintln!("{e}");
        exit::RULES
    })
}

pub fn run(args: SimulateArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(
        args.from <= args.to,
        "--from {} is after --to {}",
        args.from,
        args.to
    );
    for d in [args.from, args.to] {
        anyhow::ensure!(
            calendar::supported(d),
            "{d} is outside the supported years {}-{}",
            calendar::MIN_YEAR,
            calendar::MAX_YEAR
        );
    }
    let rules = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let other = match &args.compare_rules {
        Some(dir) => match load_rules(dir) {
            Ok(r) => Some(r),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    let snap = load_snapshot(&args.snapshot).map_err(|e| anyhow::anyhow!("{e}"))?;
    let days = (args.to - args.from).num_days() as u64 + 1;
    let bar = ProgressBar::with_draw_target(Some(days), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} days {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let sim = simulate(
        &rules,
        &snap.population,
        args.from,
        args.to,
        args.samples,
        &mut |day| {
            bar.set_message(day.to_string());
            bar.inc(1);
        },
    );
    bar.finish_and_clear();
    let diffs = other
        .as_ref()
        .map(|o| compare(&rules, o, &snap.population, args.from, args.to));

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let write = |name: &str, body: String| -> anyhow::Result<PathBuf> {
        let p = args.out.join(name);
        std::fs::write(&p, body).with_context(|| format!("cannot write {}", p.display()))?;
        Ok(p)
    };
    let mut written = vec![
        write("counts.csv", counts_csv(&sim))?,
        write(
            "summary.json",
            summary_json(&rules, &sim, diffs.as_deref())?,
        )?,
        write("chart.html", chart_html(&rules, &sim, diffs.as_deref()))?,
    ];
    if let Some(d) = &diffs {
        written.push(write("compare.csv", compare_csv(d))?);
    }

    println!(
        "{} notices from {} to {} ({} rules, rule set {})",
        sim.notices(),
        args.from,
        args.to,
        rules.rules().len(),
        rules.version
    );
    for (rule, n) in &sim.totals {
        println!("  {n:>6}  {rule}");
    }
    if let Some(d) = &diffs {
        let count = |f: fn(&Difference) -> bool| d.iter().filter(|x| f(x)).count();
        println!(
            "compared with {}: {} added, {} removed, {} changed",
            args.compare_rules
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            count(|x| matches!(x, Difference::Added(_))),
            count(|x| matches!(x, Difference::Removed(_))),
            count(|x| matches!(x, Difference::Changed { .. })),
        );
    }
    for f in &sim.failures {
        eprintln!("rule error: {f}");
    }
    println!(
        "{} rule errors; written: {}",
        sim.failures.len(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(if sim.failures.is_empty() {
        exit::OK
    } else {
        exit::RULE_RUNTIME
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn counts_csv(sim: &Simulation) -> String {
    let mut out = String::from("date,rule,notices\n");
    for (day, per_rule) in &sim.per_day {
        for (rule, n) in per_rule {
            let _ = writeln!(out, "{day},{rule},{n}");
        }
    }
    out
}

fn compare_csv(diffs: &[Difference]) -> String {
    let mut out = String::from("change,key,rule,subject,occurrence,detail\n");
    for d in diffs {
        let (change, detail) = (d.change(), d.detail());
        let x = d.decision();
        let _ = writeln!(
            out,
            "{change},{},{},{},{},{}",
            csv_field(x.key.as_str()),
            x.rule,
            x.subject,
            x.occurrence,
            csv_field(detail)
        );
    }
    out
}

fn summary_json(
    rules: &RuleSet,
    sim: &Simulation,
    diffs: Option<&[Difference]>,
) -> anyhow::Result<String> {
    let diffs = diffs.map(|d| {
        d.iter()
            .map(|x| {
                let (change, detail) = (x.change(), Some(x.detail()).filter(|d| !d.is_empty()));
                serde_json::json!({"change": change, "key": x.decision().key, "rule": x.decision().rule, "subject": x.decision().subject, "detail": detail})
            })
            .collect::<Vec<_>>()
    });
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "rule_set_version": rules.version,
        "from": sim.from,
        "to": sim.to,
        "notices": sim.notices(),
        "totals": sim.totals,
        "failures": sim.failures,
        "samples": sim.samples,
        "compare": diffs,
    }))?)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// A stacked bar chart of notices per day per rule, inline SVG, no external resources.
fn chart_html(rules: &RuleSet, sim: &Simulation, diffs: Option<&[Difference]>) -> String {
    let (Some(from), Some(to)) = (sim.from, sim.to) else {
        return String::new();
    };
    let days = (to - from).num_days() as usize + 1;
    let ids: Vec<_> = sim.totals.keys().collect();
    let colour: BTreeMap<_, _> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, PALETTE[i % PALETTE.len()]))
        .collect();
    let max = sim
        .per_day
        .values()
        .map(|m| m.values().sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, h, left, bottom) = (960.0_f64, 320.0_f64, 40.0_f64, 30.0_f64);
    let bar_w = (w - left) / days as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {}" role="img" aria-label="notices per day">"#,
        h + bottom
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{h}" x2="{w}" y2="{h}" stroke="#333"/><line x1="{left}" y1="0" x2="{left}" y2="{h}" stroke="#333"/>"##
    );
    let _ = write!(
        svg,
        r#"<text x="2" y="12" font-size="11">{max}</text><text x="2" y="{h}" font-size="11">0</text>"#
    );
    for (i, day) in (0..days).map(|i| (i, calendar::add_days(from, i as i64))) {
        let x = left + i as f64 * bar_w;
        let mut y = h;
        if let Some(per_rule) = sim.per_day.get(&day) {
            for (rule, n) in per_rule {
                let bh = h * *n as f64 / max as f64;
                y -= bh;
                let _ = write!(
                    svg,
                    r#"<rect x="{x:.2}" y="{y:.2}" width="{:.2}" height="{bh:.2}" fill="{}"><title>{day} {rule}: {n}</title></rect>"#,
                    (bar_w - 0.5).max(0.5),
                    colour[rule]
                );
            }
        }
        if day.format("%d").to_string() == "01" {
            let _ = write!(
                svg,
                r#"<text x="{x:.2}" y="{}" font-size="10">{}</text>"#,
                h + 14.0,
                day.format("%Y-%m")
            );
        }
    }
    svg.push_str("</svg>");
    let mut rows = String::new();
    for id in &ids {
        let title = rules.get(id).map_or(String::new(), |r| r.title.ja.clone());
        let _ = write!(
            rows,
            r#"<tr><td><span class="sw" style="background:{}"></span>{}</td><td>{}</td><td class="n">{}</td></tr>"#,
            colour[id],
            escape(id.as_str()),
            escape(&title),
            sim.totals[*id]
        );
    }
    let mut compare = String::new();
    if let Some(d) = diffs {
        compare.push_str("<h2>ルール変更の影響 / Effect of the rule change</h2><table><tr><th>change</th><th>rule</th><th>subject</th><th>occurrence</th><th>detail</th></tr>");
        for x in d {
            let (c, detail) = (x.change(), x.detail());
            let dec = x.decision();
            let _ = write!(
                compare,
                "<tr><td>{c}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(dec.rule.as_str()),
                escape(dec.subject.as_str()),
                dec.occurrence,
                escape(detail)
            );
        }
        compare.push_str("</table>");
    }
    format!(
        r#"<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>oshirase simulate {from} – {to}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1000px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px}}.n{{text-align:right}}.sw{{display:inline-block;width:10px;height:10px;margin-right:6px}}</style>
</head><body>
<h1>通知シミュレーション / Notices simulated</h1>
<p>{from} – {to}: {total} notices, {failures} rule errors, rule set {version}.</p>
{svg}
<h2>ルール別 / Per rule</h2>
<table><tr><th>rule</th><th>title</th><th>notices</th></tr>{rows}</table>
{compare}
</body></html>
"#,
        total = sim.notices(),
        failures = sim.failures.len(),
        version = escape(&rules.version),
    )
}
