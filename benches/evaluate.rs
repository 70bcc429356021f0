//! Daily evaluation of the whole catalogue, beside a native baseline measured in the same run.
//!
//! engine:   `evaluate_day` with the real catalogue (trigger index, conditions, Rhai, audience,
//!           deadline, prefilled drafts, rendered messages).
//! baseline: hand-written Rust that scans every resident and computes each catalogue trigger's
//!           notice day natively (no conditions, no drafts): the naive way to find who is due.
//!
//! `cargo bench --bench evaluate` uses 100,000 residents (OSHIRASE_BENCH_RESIDENTS to change);
//! `cargo test --benches` runs each once on 2,000 so the benchmark never rots.

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::path::Path;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oshirase_engine::calendar;
use oshirase_engine::resident::Resident;
use oshirase_engine::rule::Trigger;
use oshirase_engine::{evaluate_day, load_dir, Population};

// The catalogue floor in it is used by benches/scale.rs.
#[allow(dead_code)]
mod native;
use native::native_scan;

fn residents_wanted() -> usize {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    std::env::var("OSHIRASE_BENCH_RESIDENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 100_000 } else { 2_000 })
}

/// A deterministic synthetic town: households of one to four, ages 0–100, some deaths.
fn population(n: usize) -> Population {
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    let start = NaiveDate::from_ymd_opt(1926, 1, 1).unwrap();
    let mut residents = Vec::with_capacity(n);
    let mut i = 0;
    let mut hh = 0;
    while i < n {
        hh += 1;
        let size = 1 + (next() % 4) as usize;
        for k in 0..size.min(n - i) {
            let birth = calendar::add_days(start, i64::from(next() % 36_500));
            let status = if next() % 200 == 0 {
                serde_json::json!({"kind": "deceased", "date": "2026-09-01"})
            } else {
                serde_json::json!({"kind": "resident"})
            };
            let rel = if k == 0 { "世帯主" } else { "子" };
            let r: Resident = serde_json::from_value(serde_json::json!({
                "id": format!("R{i}"),
                "name": {"kanji": "山田 太郎", "kana": "ヤマダ タロウ"},
                "birth_date": birth.to_string(),
                "sex": 1 + next() % 2,
                "status": status,
                "address": {"local_gov_code": "141003", "text": "横浜市"},
                "household": {"id": format!("H{hh}"), "relationship": rel},
                "contact": {"portal": true},
                "attributes": {"kokuho": next() % 3 == 0, "pension_recipient": next() % 2 == 0, "kouki": next() % 5 == 0}
            }))
            .expect("synthetic resident is valid");
            residents.push(r);
            i += 1;
        }
    }
    let lines = vec![0; residents.len()];
    Population::build(residents, &lines, "synthetic", Vec::new()).expect("valid population")
}

fn bench(c: &mut Criterion) {
    let rules = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"))
        .unwrap_or_else(|e| panic!("{e}"));
    let n = residents_wanted();
    let pop = population(n);
    let triggers: Vec<(Trigger, i64)> = rules
        .rules()
        .iter()
        .map(|r| (r.trigger, r.notify_offset))
        .collect();
    // A day with many triggers: April 1 (annual and fiscal-year cohorts) and a death day.
    let days = [
        NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
        NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(),
    ];
    for day in days {
        let r = evaluate_day(&rules, &pop, day);
        eprintln!(
            "{day}: {} residents, {} rules: {} decisions, {} trigger matches, {} failures",
            pop.len(),
            rules.rules().len(),
            r.decisions.len(),
            r.checks,
            r.failures.len()
        );
        let mut g = c.benchmark_group(format!("daily_run_{day}"));
        g.throughput(Throughput::Elements(
            (pop.len() * rules.rules().len()) as u64,
        ));
        g.sample_size(10);
        g.bench_function("engine_catalogue", |b| {
            b.iter(|| black_box(evaluate_day(&rules, &pop, day)).decisions.len())
        });
        g.bench_function("native_full_scan_baseline", |b| {
            b.iter(|| black_box(native_scan(&triggers, &pop, day)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
