//! The catalogue at the scale of a large city, every figure beside a baseline measured in the
//! same run, with PASS/MISS against the targets in docs/performance.md:
//!
//! a. the daily run (`evaluate_day`, the whole catalogue) over N residents on an ordinary day
//!    and on April 1, beside the hand-written native floor of the same eligibility logic
//!    (benches/native): time, resident-rule checks per second, peak memory;
//! b. a one-year `simulate` (the library function behind `oshirase simulate`), beside the
//!    floor over the same 365 days;
//! c. change event -> decisions committed (ingest one feed line, bring the scheduler's register
//!    up to date, run the day), p50/p99, on SQLite and PostgreSQL, beside a bare transaction
//!    round trip;
//! d. ingest of the N-resident snapshot, rows/s, on SQLite and PostgreSQL, beside a raw
//!    multi-row INSERT of the same rows through sqlx.
//!
//! The population comes from `oshirase population generate` (fixed seed). Each part runs in a
//! child process of this binary, so that the peak memory it reports is its own.
//!
//! `cargo bench --bench scale`: 1,000,000 residents (OSHIRASE_BENCH_RESIDENTS to change).
//! `cargo test --benches`: 5,000, so that the benchmark never rots. PostgreSQL is the server at
//! OSHIRASE_TEST_PG (default postgres://postgres@127.0.0.1:5432/test), in a fresh database.
//! OSHIRASE_BENCH_EVENTS sets the number of events timed in c; OSHIRASE_BENCH_JSON=PATH also
//! writes the figures as JSON (docs/plot-scale.py draws them).

/// The allocator the binary ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use oshirase_engine::clock::{in_tokyo, Clock, FixedClock};
use oshirase_engine::simulate::simulate;
use oshirase_engine::{calendar, evaluate_day, feed, load_dir, load_snapshot, Population};
use oshirase_service::ingest::ingest;
use oshirase_service::scheduler::Scheduler;
use oshirase_store::Store;
use serde_json::{json, Value};

mod native;

const PART: &str = "OSHIRASE_SCALE_PART";
const DIR: &str = "OSHIRASE_SCALE_DIR";
const DB: &str = "OSHIRASE_SCALE_DB";
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn residents_wanted() -> usize {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    std::env::var("OSHIRASE_BENCH_RESIDENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench_mode { 1_000_000 } else { 5_000 })
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    match std::env::var(PART) {
        Ok(part) => child(&part),
        Err(_) => parent(),
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// A `Vm…` line of /proc/PID/status, in bytes.
fn proc_status(pid: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn peak() -> u64 {
    proc_status("self", "VmHWM:").expect("/proc/self/status has VmHWM (Linux)")
}

fn rss() -> u64 {
    proc_status("self", "VmRSS:").expect("/proc/self/status has VmRSS (Linux)")
}

/// Gives freed memory back to the system (glibc keeps it otherwise), so that the resident
/// size afterwards is what is really in use.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Starts a new peak from the present resident size, so that a phase's own peak can be read.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs is writable");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Nearest-rank percentile.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn gib(b: f64) -> String {
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / 1024.0 / 1024.0)
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// The parent: generate, run each part in a child, report
// ---------------------------------------------------------------------------------------------

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB RAM", kb * 1024.0 / GIB)
        });
    format!("{} cores, {cpu}{mem}", threads())
}

/// Runs `oshirase population generate`, with its time and peak memory (polled).
fn generate(n: usize, dir: &Path) -> (f64, u64) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oshirase"))
        .args(["population", "generate", "--residents"])
        .arg(n.to_string())
        .args(["--seed", "1", "--start", "2026-04-01", "--out"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the oshirase binary runs");
    let pid = child.id().to_string();
    let mut top = 0;
    let status = loop {
        if let Some(p) = proc_status(&pid, "VmHWM:") {
            top = top.max(p);
        }
        if let Some(s) = child.try_wait().expect("waiting for the generator") {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = started.elapsed().as_secs_f64();
    let mut out = String::new();
    use std::io::Read;
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    assert!(status.success(), "oshirase population generate failed");
    eprintln!("{}", out.trim());
    (secs, top)
}

/// Runs one part in a child process and returns what it reported.
fn part(name: &str, dir: &Path, db: Option<&str>) -> Value {
    eprintln!("-- {name}");
    let mut cmd = Command::new(std::env::current_exe().expect("this benchmark's path"));
    cmd.env(PART, name).env(DIR, dir).stderr(Stdio::inherit());
    if let Some(db) = db {
        cmd.env(DB, db);
    }
    let out = cmd.output().expect("the benchmark can run itself");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "part {name} failed ({}):\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("part {name} reported nothing:\n{stdout}"));
    serde_json::from_str(line).expect("a part reports JSON")
}

/// A fresh PostgreSQL database for this run, and the admin URL to drop it with.
fn fresh_postgres() -> (String, String, String) {
    let admin = oshirase_testkit::postgres_admin_url();
    let name = format!("oshirase_bench_{}", std::process::id());
    runtime().block_on(async {
        let mut conn = oshirase_testkit::postgres_admin().await;
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("creating the benchmark database");
        }
    });
    let base = admin.rsplit_once('/').expect("a database URL").0;
    (format!("{base}/{name}"), admin, name)
}

fn drop_postgres(admin: &str, name: &str) {
    runtime().block_on(async {
        if let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    });
}

fn parent() {
    let n = residents_wanted();
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let dir = tmp.path();
    eprintln!(
        "scale benchmark: {n} residents; machine: {}; {} build",
        machine(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let (gen_secs, gen_peak) = generate(n, dir);
    let sqlite = format!("sqlite://{}", dir.join("bench.sqlite").display());
    let (pg, admin, pg_name) = fresh_postgres();

    let daily = part("daily", dir, None);
    let sim = part("simulate", dir, None);
    let ingest_sqlite = part("ingest", dir, Some(&sqlite));
    let latency_sqlite = part("latency", dir, Some(&sqlite));
    let ingest_pg = part("ingest", dir, Some(&pg));
    let latency_pg = part("latency", dir, Some(&pg));
    drop_postgres(&admin, &pg_name);
    // The same event path on smaller registers: how its latency grows with the register.
    let mut scaling = vec![json!({"residents": n, "p50_ms": latency_sqlite["p50_ms"]})];
    if n >= 100_000 {
        for m in [n / 100, n / 10] {
            let sub = dir.join(format!("r{m}"));
            generate(m, &sub);
            let db = format!("sqlite://{}", sub.join("bench.sqlite").display());
            part("ingest", &sub, Some(&db));
            let l = part("latency", &sub, Some(&db));
            scaling.insert(
                scaling.len() - 1,
                json!({"residents": m, "p50_ms": l["p50_ms"]}),
            );
        }
    }

    let figures = json!({
        "residents": n,
        "machine": machine(),
        "generate": {"seconds": gen_secs, "peak_bytes": gen_peak},
        "daily": daily,
        "simulate": sim,
        "ingest": {"sqlite": ingest_sqlite, "postgres": ingest_pg},
        "latency": {"sqlite": latency_sqlite, "postgres": latency_pg},
        "latency_by_size": scaling,
    });
    report(&figures);
    if let Ok(path) = std::env::var("OSHIRASE_BENCH_JSON") {
        std::fs::write(&path, serde_json::to_string_pretty(&figures).expect("json"))
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        eprintln!("figures written to {path}");
    }
}

fn f(v: &Value, path: &str) -> f64 {
    let mut x = v;
    for k in path.split('.') {
        x = &x[k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("no figure {path} in {v}"))
}

fn report(v: &Value) {
    let n = f(v, "residents");
    println!(
        "\nscale benchmark: {n} residents, {}",
        v["machine"].as_str().unwrap_or("")
    );
    println!(
        "{:<44} {:<40} {:<34} target",
        "what", "figure", "baseline (same run)"
    );
    let row = |what: &str, figure: String, baseline: String, target: String| {
        println!("{what:<44} {figure:<40} {baseline:<34} {target}");
    };
    let gen_s = f(v, "generate.seconds");
    let gen_p = f(v, "generate.peak_bytes");
    row(
        "generate N residents + a year of changes",
        format!("{gen_s:.1} s, peak {}", gib(gen_p)),
        "-".into(),
        format!(
            "<= 60 s {}, <= 512 MiB {}",
            mark(gen_s <= 60.0),
            mark(gen_p <= 512.0 * 1024.0 * 1024.0)
        ),
    );
    let d = &v["daily"];
    let run_peak = f(d, "run_peak_bytes");
    for day in ["ordinary", "april1"] {
        let e = f(d, &format!("{day}.engine_s"));
        let fl = f(d, &format!("{day}.floor_s"));
        let ratio = e / fl.max(1e-9);
        row(
            &format!(
                "a. daily run {} ({})",
                if day == "ordinary" {
                    "ordinary day"
                } else {
                    "April 1"
                },
                d[day]["day"].as_str().unwrap_or("")
            ),
            format!(
                "{:.3} s, {:.1} M checks/s, {} decisions",
                e,
                n * f(d, "rules") / e / 1e6,
                f(d, &format!("{day}.decisions"))
            ),
            format!(
                "native floor {:.4} s ({:.0}x); full scan {:.3} s",
                fl,
                ratio,
                f(d, &format!("{day}.scan_s"))
            ),
            format!(
                "<= 2 s {}, <= 3x native {}",
                mark(e <= 2.0),
                mark(ratio <= 3.0)
            ),
        );
        if let Some(m) = d[day]["disagreements"].as_array().filter(|m| !m.is_empty()) {
            println!("   the floor disagrees with the engine: {m:?}");
        }
    }
    row(
        "a. daily run peak memory (register loaded)",
        format!("{} during the runs", gib(run_peak)),
        format!(
            "register alone {}; load peak {}; freeing it {:.1} s",
            gib(f(d, "rss_after_load_bytes")),
            gib(f(d, "load_peak_bytes")),
            f(d, "free_register_s")
        ),
        format!("<= 1 GiB {}", mark(run_peak <= GIB)),
    );
    let s = &v["simulate"];
    let ss = f(s, "seconds");
    row(
        "b. simulate one year (365 days)",
        format!(
            "{ss:.1} s, {} notices, peak {}",
            f(s, "notices"),
            gib(f(s, "peak_bytes"))
        ),
        format!("native floor {:.1} s", f(s, "floor_seconds")),
        format!("<= 60 s {}", mark(ss <= 60.0)),
    );
    for backend in ["sqlite", "postgres"] {
        let l = &v["latency"][backend];
        let p99 = f(l, "p99_ms");
        row(
            &format!("c. event -> decisions committed, {backend}"),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms (n={})",
                f(l, "p50_ms"),
                p99,
                f(l, "events")
            ),
            format!(
                "bare tx p50 {:.2} ms, p99 {:.2} ms",
                f(l, "tx_p50_ms"),
                f(l, "tx_p99_ms")
            ),
            if backend == "sqlite" {
                format!("p99 <= 20 ms {}", mark(p99 <= 20.0))
            } else {
                "-".into()
            },
        );
        println!(
            "   median phases: ingest {:.1} ms, register update {:.1} ms, evaluate+commit {:.1} ms (the register read whole at start: {:.1} s)",
            f(l, "ingest_ms"),
            f(l, "update_ms"),
            f(l, "run_day_ms"),
            f(l, "register_load_seconds")
        );
    }
    if let Some(sizes) = v["latency_by_size"].as_array().filter(|s| s.len() > 1) {
        let cells: Vec<String> = sizes
            .iter()
            .map(|x| format!("{} residents {:.0} ms", f(x, "residents"), f(x, "p50_ms")))
            .collect();
        println!(
            "   event p50 on SQLite by register size: {}",
            cells.join(", ")
        );
    }
    for backend in ["sqlite", "postgres"] {
        let i = &v["ingest"][backend];
        let rate = f(i, "rows_per_s");
        row(
            &format!("d. snapshot ingest, {backend}"),
            format!(
                "{:.1} s, {:.0} rows/s, peak {}",
                f(i, "seconds"),
                rate,
                gib(f(i, "peak_bytes"))
            ),
            format!("raw INSERT {:.0} rows/s", f(i, "raw_rows_per_s")),
            if backend == "sqlite" {
                format!(">= 100,000 rows/s {}", mark(rate >= 100_000.0))
            } else {
                "-".into()
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The parts
// ---------------------------------------------------------------------------------------------

fn child(part: &str) {
    let dir = PathBuf::from(std::env::var(DIR).expect("the parent names the folder"));
    let out = match part {
        "daily" => daily(&dir),
        "simulate" => simulate_year(&dir),
        "ingest" => ingest_snapshot(&dir, &std::env::var(DB).expect("a database")),
        "latency" => latency(&dir, &std::env::var(DB).expect("a database")),
        other => panic!("unknown part {other}"),
    };
    println!("RESULT {out}");
}

fn rules() -> oshirase_engine::RuleSet {
    load_dir(&root().join("rules")).unwrap_or_else(|e| panic!("{e}"))
}

/// The first April 1 on or after `d`.
fn april_first(d: NaiveDate) -> NaiveDate {
    let this = NaiveDate::from_ymd_opt(d.year(), 4, 1).expect("valid");
    if this >= d {
        this
    } else {
        NaiveDate::from_ymd_opt(d.year() + 1, 4, 1).expect("valid")
    }
}

/// a. The register after the year of changes (so that ordinary days have births and deaths),
/// evaluated for an ordinary day and for April 1.
fn daily(dir: &Path) -> Value {
    let rules = rules();
    let snap = load_snapshot(&dir.join("snapshot.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    let start = snap.header.as_of;
    let residents = snap.population.into_residents();
    let text = std::fs::read_to_string(dir.join("changes.jsonl")).expect("changes.jsonl");
    let parsed = feed::parse_feed(&text, "changes.jsonl").unwrap_or_else(|e| panic!("{e}"));
    let applied =
        feed::apply(&residents, &parsed, "changes.jsonl").unwrap_or_else(|e| panic!("{e}"));
    drop((residents, parsed, text));
    let lines = vec![0; applied.residents.len()];
    let pop = Population::build(applied.residents, &lines, "register", applied.events)
        .unwrap_or_else(|e| panic!("{e}"));
    let load_peak = peak();
    trim();
    let after_load = rss();
    reset_peak();
    let repeats = if pop.len() >= 100_000 { 3 } else { 5 };
    let triggers: Vec<_> = rules
        .rules()
        .iter()
        .map(|r| (r.trigger, r.notify_offset))
        .collect();
    let mut out = json!({
        "rules": rules.rules().len(),
        "records": pop.len(),
        "load_peak_bytes": load_peak,
        "rss_after_load_bytes": after_load,
    });
    for (name, day) in [
        ("ordinary", calendar::add_days(start, 70)),
        ("april1", april_first(start)),
    ] {
        let first = evaluate_day(&rules, &pop, day);
        let mut engine: Vec<f64> = (0..repeats)
            .map(|_| time(|| evaluate_day(&rules, &pop, day).decisions.len()).1)
            .collect();
        let ((counts, missing), _) = time(|| native::eligible_day(&rules, &pop, day, threads()));
        let mut floor: Vec<f64> = (0..repeats)
            .map(|_| time(|| native::eligible_day(&rules, &pop, day, threads())).1)
            .collect();
        let (_, scan) = time(|| native::native_scan(&triggers, &pop, day));
        // The floor must find exactly the engine's subjects, rule by rule.
        let mut disagreements: Vec<String> = missing
            .iter()
            .map(|m| format!("no hand-written equivalent of {m}"))
            .collect();
        for (rule, floor_n) in rules.rules().iter().zip(&counts) {
            let engine_n = first.decisions.iter().filter(|d| d.rule == rule.id).count();
            if engine_n != *floor_n {
                disagreements.push(format!("{}: engine {engine_n}, floor {floor_n}", rule.id));
            }
        }
        let e = median(&mut engine);
        let fl = median(&mut floor);
        eprintln!(
            "{name} {day}: {} decisions, {} trigger matches, {} failures; engine {e:.3} s, floor {fl:.4} s, full scan {scan:.3} s",
            first.decisions.len(),
            first.checks,
            first.failures.len()
        );
        out[name] = json!({
            "day": day.to_string(),
            "decisions": first.decisions.len(),
            "trigger_matches": first.checks,
            "failures": first.failures.len(),
            "engine_s": e,
            "floor_s": fl,
            "scan_s": scan,
            "disagreements": disagreements,
        });
    }
    out["run_peak_bytes"] = json!(peak());
    // What a service pays to replace its register: freeing the old one.
    let (_, free_s) = time(|| drop(pop));
    out["free_register_s"] = json!(free_s);
    out
}

/// b. A year of `simulate` over the snapshot, as `oshirase simulate` runs it.
fn simulate_year(dir: &Path) -> Value {
    let rules = rules();
    let snap = load_snapshot(&dir.join("snapshot.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    let from = snap.header.as_of;
    let to = calendar::add_days(from, 364);
    let (sim, secs) = time(|| simulate(&rules, &snap.population, from, to, 3, &mut |_| {}));
    let mut floor = 0.0;
    let mut day = from;
    while day <= to {
        floor += time(|| native::eligible_day(&rules, &snap.population, day, threads())).1;
        day = calendar::add_days(day, 1);
    }
    eprintln!(
        "simulate {from} – {to}: {} notices, {} rule errors in {secs:.1} s; floor {floor:.1} s",
        sim.notices(),
        sim.failures.len()
    );
    json!({
        "seconds": secs,
        "notices": sim.notices(),
        "failures": sim.failures.len(),
        "floor_seconds": floor,
        "peak_bytes": peak(),
    })
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite")
}

/// A pool of our own on the benchmark database, for the baselines.
async fn raw_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let sqlite = is_sqlite(url);
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout=30000")
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"))
}

/// d. Ingest of the snapshot into a fresh store, then the floor: the same resident rows
/// written with multi-row INSERTs of a thousand rows into a table like `residents`.
fn ingest_snapshot(dir: &Path, url: &str) -> Value {
    let text = std::fs::read_to_string(dir.join("snapshot.jsonl")).expect("snapshot.jsonl");
    runtime().block_on(async {
        let store = Store::open(url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let now = FixedClock::at_noon(NaiveDate::from_ymd_opt(2026, 4, 1).expect("valid")).now();
        reset_peak();
        let t = Instant::now();
        let report = ingest(&store, "snapshot.jsonl", &text, false, now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let secs = t.elapsed().as_secs_f64();
        let ingest_peak = peak();
        store.close().await;
        let rows = report.rows_in;
        eprintln!(
            "ingest {}: {rows} residents, {} life events in {secs:.1} s ({:.0} rows/s)",
            if is_sqlite(url) { "sqlite" } else { "postgres" },
            report.outcome.events,
            rows as f64 / secs
        );

        // The floor's rows, prepared before the clock starts: id, household, status, the
        // record as written, a hash-sized text, the batch.
        let prepared: Vec<(String, Option<String>, String, String, String)> = text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                let v: Value = serde_json::from_str(l).expect("a record");
                (
                    v["id"].as_str().unwrap_or_default().to_owned(),
                    v["household"]["id"].as_str().map(str::to_owned),
                    v["status"]["kind"].as_str().unwrap_or_default().to_owned(),
                    l.to_owned(),
                    format!("{i:064x}"),
                )
            })
            .collect();
        drop(text);
        let pool = raw_pool(url).await;
        for sql in [
            "DROP TABLE IF EXISTS bench_raw_residents",
            "CREATE TABLE bench_raw_residents (id TEXT PRIMARY KEY, household_id TEXT, status TEXT NOT NULL,
               record TEXT NOT NULL, record_hash TEXT NOT NULL, batch_id BIGINT NOT NULL)",
            "CREATE INDEX bench_raw_residents_household ON bench_raw_residents(household_id)",
        ] {
            sqlx::query(sql).execute(&pool).await.expect("baseline table");
        }
        let t = Instant::now();
        let mut tx = pool.begin().await.expect("begin");
        for chunk in prepared.chunks(1000) {
            let mut sql = String::from(
                "INSERT INTO bench_raw_residents (id, household_id, status, record, record_hash, batch_id) VALUES ",
            );
            for (i, _) in chunk.iter().enumerate() {
                sql.push_str(if i == 0 { "(" } else { ", (" });
                for c in 0..6 {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    if is_sqlite(url) {
                        sql.push('?');
                    } else {
                        sql.push_str(&format!("${}", i * 6 + c + 1));
                    }
                }
                sql.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, hh, status, record, hash) in chunk {
                q = q
                    .bind(id.clone())
                    .bind(hh.clone())
                    .bind(status.clone())
                    .bind(record.clone())
                    .bind(hash.clone())
                    .bind(1_i64);
            }
            q.execute(&mut *tx).await.expect("raw insert");
        }
        tx.commit().await.expect("commit");
        let raw = t.elapsed().as_secs_f64();
        sqlx::query("DROP TABLE bench_raw_residents")
            .execute(&pool)
            .await
            .expect("drop the baseline table");
        eprintln!(
            "raw INSERT of the same {} rows: {raw:.1} s ({:.0} rows/s)",
            prepared.len(),
            prepared.len() as f64 / raw
        );
        json!({
            "rows": rows,
            "events": report.outcome.events,
            "seconds": secs,
            "rows_per_s": rows as f64 / secs,
            "raw_seconds": raw,
            "raw_rows_per_s": prepared.len() as f64 / raw,
            "peak_bytes": ingest_peak,
        })
    })
}

/// c. On the store the ingest part left, with the day's morning run done: one death or birth
/// line at a time, ingested as a feed, the running scheduler's register brought up to date,
/// the day it reached the register evaluated again and the new decisions committed.
fn latency(dir: &Path, url: &str) -> Value {
    let text = std::fs::read_to_string(dir.join("changes.jsonl")).expect("changes.jsonl");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().expect("a header").to_owned();
    let wanted: usize = std::env::var("OSHIRASE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // Births and deaths: the events that decide notices. Skipping the other lines is allowed
    // (the feed position only moves forward) and none of the chosen lines depends on them.
    let events: Vec<(String, NaiveDate)> = lines
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let kind = v["kind"].as_str()?;
            if kind != "death" && kind != "birth" {
                return None;
            }
            let day = v["recorded"]
                .as_str()
                .or(v["date"].as_str())?
                .parse()
                .ok()?;
            Some((l.to_owned(), day))
        })
        .take(wanted)
        .collect();
    runtime().block_on(async {
        let store = Store::open(url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let clock = Arc::new(FixedClock::at_noon(events[0].1));
        let scheduler = Scheduler::new(store.clone(), Arc::new(rules()), clock.clone());
        // The running service read the register once, when it started.
        let t = Instant::now();
        scheduler.register().await.expect("the register");
        let load_secs = t.elapsed().as_secs_f64();
        let (mut total, mut ing, mut update, mut run) = (vec![], vec![], vec![], vec![]);
        let mut decided = 0;
        for (line, day) in &events {
            clock.set(in_tokyo(
                *day,
                chrono::NaiveTime::from_hms_opt(6, 0, 0).expect("06:00"),
            ));
            // The morning's run decided the day's other notices before the event arrived.
            scheduler.run_day(*day).await.expect("the morning run");
            let t0 = Instant::now();
            ingest(
                &store,
                "changes.jsonl",
                &format!("{header}\n{line}\n"),
                false,
                clock.now(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let t1 = Instant::now();
            scheduler.register().await.expect("the register");
            let t2 = Instant::now();
            let r = scheduler.run_day(*day).await.expect("the day");
            let t3 = Instant::now();
            decided += r.inserted;
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
            total.push(ms(t0, t3));
            ing.push(ms(t0, t1));
            update.push(ms(t1, t2));
            run.push(ms(t2, t3));
        }
        store.close().await;
        total.sort_by(f64::total_cmp);

        // The floor: a bare transaction round trip on the same database.
        let pool = raw_pool(url).await;
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_tx (v TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("baseline table");
        let insert = if is_sqlite(url) {
            "INSERT INTO bench_tx (v) VALUES (?)"
        } else {
            "INSERT INTO bench_tx (v) VALUES ($1)"
        };
        let mut tx_ms: Vec<f64> = Vec::new();
        for i in 0..200 {
            let t = Instant::now();
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query(insert)
                .bind(format!("event {i}"))
                .execute(&mut *tx)
                .await
                .expect("insert");
            tx.commit().await.expect("commit");
            tx_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        tx_ms.sort_by(f64::total_cmp);
        eprintln!(
            "{} events: p50 {:.1} ms, p99 {:.1} ms, {decided} decisions; bare transaction p50 {:.2} ms",
            total.len(),
            percentile(&total, 0.5),
            percentile(&total, 0.99),
            percentile(&tx_ms, 0.5)
        );
        json!({
            "events": total.len(),
            "decisions": decided,
            "p50_ms": percentile(&total, 0.5),
            "p99_ms": percentile(&total, 0.99),
            "ingest_ms": median(&mut ing),
            "update_ms": median(&mut update),
            "register_load_seconds": load_secs,
            "run_day_ms": median(&mut run),
            "tx_p50_ms": percentile(&tx_ms, 0.5),
            "tx_p99_ms": percentile(&tx_ms, 0.99),
            "peak_bytes": peak(),
        })
    })
}
