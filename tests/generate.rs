//! `oshirase population generate`: the same seed gives the same bytes; the ages follow the 2020
//! Census table; a year of changes follows the national rates; and the files go through
//! `ingest` and `run` as they are, deciding every kind of rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::NaiveDate;
use oshirase_engine::calendar;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn oshirase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oshirase"))
        .args(args)
        .current_dir(root())
        .env_remove("OSHIRASE_RULES")
        .env_remove("OSHIRASE_DATABASE_URL")
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Generates into `dir` and fails with the command's own words if it does not succeed.
fn generate(residents: usize, seed: u64, dir: &Path) {
    let out = oshirase(&[
        "population",
        "generate",
        "--residents",
        &residents.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        s(dir),
    ]);
    assert!(
        out.status.success(),
        "generate failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The JSON lines of a file after its header, and the header.
fn lines(path: &Path) -> (Value, Vec<Value>) {
    let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut it = body.lines().map(|l| {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display()))
    });
    let header = it.next().expect("a header line");
    (header, it.collect())
}

fn date(v: &Value) -> NaiveDate {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a date: {v}"))
}

/// fixtures/japan-age-2020.csv: (male, female) for ages 0..=99 and 100 and over.
fn census() -> Vec<(f64, f64)> {
    let csv = std::fs::read_to_string(root().join("fixtures/japan-age-2020.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[1].parse().unwrap(), c[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_other_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    generate(2_000, 7, &a);
    generate(2_000, 7, &b);
    generate(2_000, 8, &c);
    for file in ["snapshot.jsonl", "changes.jsonl"] {
        let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
        assert!(read(&a).len() > 10_000, "{file} is nearly empty");
        assert!(read(&a) == read(&b), "{file} differs for the same seed");
        assert!(read(&a) != read(&c), "{file} is the same for another seed");
    }
}

/// With 20,000 residents. Two checks, each able to fail on a wrong table, a wrong sex or
/// birth dates off by a year:
///
/// - Pearson's χ² of the 202 (sex, age) cells against the table's proportions. If each
///   resident's sex and age were drawn independently from the table, it would follow χ² with
///   201 degrees of freedom, which exceeds 268.7 with probability 0.001 (Wilson–Hilferty). The
///   generator allocates the cells in proportion, which can only lower it. Swapping the sexes
///   gives about 1,000 and ageing the table by six years about 2,600.
/// - The end of the war: in 2020, age 74 (born 1945–46) has 0.616 times the people of age 73.
///   At this size the ratio of two cells of about 190 and 310 people has a standard error of
///   0.057, so a sampled population stays below 0.80 (3.2 standard errors); a one-year shift
///   of the birth dates moves the ratio to 0.94 or 1.06.
#[test]
fn ages_follow_the_2020_census_table() {
    let tmp = tempfile::tempdir().unwrap();
    generate(20_000, 11, tmp.path());
    let (header, records) = lines(&tmp.path().join("snapshot.jsonl"));
    let as_of = date(&header["as_of"]);
    assert_eq!(as_of, NaiveDate::from_ymd_opt(2026, 4, 1).unwrap());
    let mut counts = vec![[0usize; 2]; 101];
    let mut residents = 0;
    for r in &records {
        if r["status"]["kind"] != "resident" {
            continue;
        }
        residents += 1;
        // Completed years on the register date: calendar::age_on counts the birthday itself.
        let age = calendar::age_on(date(&r["birth_date"]), as_of);
        assert!(age >= 0, "{r}");
        let sex = r["sex"].as_u64().unwrap();
        assert!(sex == 1 || sex == 2, "{r}");
        counts[(age as usize).min(100)][sex as usize - 1] += 1;
    }
    assert_eq!(residents, 20_000);
    let table = census();
    let total: f64 = table.iter().map(|(m, f)| m + f).sum();
    let mut chi2 = 0.0;
    for (age, (m, f)) in table.iter().enumerate() {
        for (sex, share) in [(0, m), (1, f)] {
            let expected = residents as f64 * share / total;
            let d = counts[age][sex] as f64 - expected;
            chi2 += d * d / expected;
        }
    }
    assert!(chi2 < 268.7, "χ² {chi2:.1} against the 2020 table (df 201)");
    let both = |a: usize| (counts[a][0] + counts[a][1]) as f64;
    let step = both(74) / both(73);
    assert!(step < 0.80, "age 74 / age 73 = {step:.3} (0.616 in 2020)");
}

/// The year after the snapshot, with 20,000 residents, against the national rates of 2024
/// (per resident: births 686,173, deaths 1,605,378, moves between municipalities 5,207,746
/// each way, 735,883 in from abroad and 371,615 out, of 123,802,000 residents).
///
/// Births and deaths are sums of independent chances per person, so their counts vary like a
/// Poisson count: the tolerance is four standard deviations (√E; births √(1.03 E) for twins).
/// Moves go by households of up to five, which inflates the variance by at most three (the
/// mean of size² over the mean size): four standard deviations of √(3 E). That passes any
/// seed but fails a rate off by half, a monthly rate or a per-mille slip.
#[test]
fn a_year_of_changes_follows_the_national_rates() {
    let n = 20_000.0;
    let tmp = tempfile::tempdir().unwrap();
    generate(20_000, 11, tmp.path());
    let (snap_header, records) = lines(&tmp.path().join("snapshot.jsonl"));
    let start = date(&snap_header["as_of"]);
    let births_of: BTreeMap<&str, NaiveDate> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), date(&r["birth_date"])))
        .collect();
    let (header, changes) = lines(&tmp.path().join("changes.jsonl"));
    assert_eq!(header["format"], "oshirase-changes");
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut deaths_by_month: BTreeMap<u32, usize> = BTreeMap::new();
    let (mut death_ages, mut movers, mut young_movers) = (0.0, 0, 0);
    let mut last_seq = 0;
    for c in &changes {
        let seq = c["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "seq must increase: {c}");
        last_seq = seq;
        let kind = c["kind"].as_str().unwrap();
        *count.entry(kind).or_default() += 1;
        let day = date(&c["date"]);
        assert!(
            day > start && day <= calendar::add_days(start, 365),
            "{day} is outside the year after {start}: {c}"
        );
        let born = |c: &Value| match c["resident"].as_str() {
            Some(id) => births_of[id],
            None => date(&c["record"]["birth_date"]),
        };
        match kind {
            "death" => {
                *deaths_by_month
                    .entry(chrono::Datelike::month(&day))
                    .or_default() += 1;
                death_ages += f64::from(calendar::age_on(born(c), day));
            }
            "move_in" | "move_out" => {
                movers += 1;
                young_movers += usize::from((20..=34).contains(&calendar::age_on(born(c), day)));
            }
            _ => {}
        }
    }
    let within = |kind: &str, rate: f64, inflation: f64| {
        let expected = rate * n;
        let got = *count.get(kind).unwrap_or(&0) as f64;
        let tolerance = 4.0 * (inflation * expected).sqrt();
        assert!(
            (got - expected).abs() <= tolerance,
            "{kind}: {got} in a year, expected {expected:.0} ± {tolerance:.0}"
        );
    };
    let residents_2024 = 123_802_000.0;
    within("birth", 686_173.0 / residents_2024, 1.03);
    within("death", 1_605_378.0 / residents_2024, 1.0);
    within("move_in", (5_207_746.0 + 735_883.0) / residents_2024, 3.0);
    within("move_out", (5_207_746.0 + 371_615.0) / residents_2024, 3.0);
    // Dated through the year: about 22 deaths a month, never fewer than five.
    assert_eq!(deaths_by_month.len(), 12, "{deaths_by_month:?}");
    assert!(
        deaths_by_month.values().all(|&d| d >= 5),
        "{deaths_by_month:?}"
    );
    // Deaths are mostly of the old (mean age at death in Japan is over 80), moves mostly of
    // the young (56 % of movers between prefectures were 20–34 in 2024).
    let mean_death_age = death_ages / count["death"] as f64;
    assert!(
        mean_death_age > 75.0,
        "mean age at death {mean_death_age:.1}"
    );
    let young = young_movers as f64 / movers as f64;
    assert!(young > 0.40, "movers aged 20-34: {:.0}%", young * 100.0);
    // A 世帯主 who dies leaving others behind is followed by a 世帯主変更届.
    assert!(
        count.get("householder_change").copied().unwrap_or(0) > 0,
        "{count:?}"
    );
}

#[test]
fn the_files_ingest_and_a_year_of_runs_decides_every_kind_of_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(3_000, 3, dir);
    let db = dir.join("oshirase.sqlite");
    for file in ["snapshot.jsonl", "changes.jsonl"] {
        let out = oshirase(&["ingest", s(&dir.join(file)), "--db", s(&db)]);
        assert!(
            out.status.success(),
            "ingest {file}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = oshirase(&[
        "run",
        "--db",
        s(&db),
        "--start",
        "2026-04-01",
        "--until",
        "2027-03-31",
    ]);
    assert!(
        out.status.success(),
        "run (exit {:?}, rule errors exit 4): {}",
        out.status.code(),
        text(&out.stderr)
    );

    // The feed's newborns and dead, to find them among the decisions' subjects.
    let (_, changes) = lines(&dir.join("changes.jsonl"));
    let ids = |kind: &str| -> BTreeSet<String> {
        changes
            .iter()
            .filter(|c| c["kind"] == kind)
            .map(|c| {
                c["resident"]
                    .as_str()
                    .or(c["record"]["id"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let (born, died) = (ids("birth"), ids("death"));
    assert!(!born.is_empty() && !died.is_empty());

    let decisions = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = oshirase_store::Store::open(s(&db)).await.unwrap();
            store.decisions().await.unwrap()
        });
    let mut subjects: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for d in &decisions {
        let subject = d.key.split('/').nth(1).unwrap();
        subjects.entry(d.rule.as_str()).or_default().insert(subject);
    }
    let of = |rule: &str| subjects.get(rule).cloned().unwrap_or_default();
    // Age milestones (65th birthday eve, 75th birthday, months of age), the April 1 batch,
    // births and deaths from the feed.
    for rule in [
        "kaigo-1go-shikaku",
        "kouki-kanyu",
        "yobou-5shu-kongou",
        "tokutei-kenshin",
    ] {
        assert!(!of(rule).is_empty(), "no {rule} decision: {subjects:?}");
    }
    let birth_rule = of("kodomo-iryohi-josei");
    assert!(
        birth_rule.iter().any(|s| born.contains(*s)),
        "no 子ども医療費 notice for a newborn of the feed: {birth_rule:?}"
    );
    let death_rule = of("shiboujou-ikkatsu-annai");
    assert!(
        death_rule.iter().any(|s| died.contains(*s)),
        "no death notice for a death of the feed: {death_rule:?}"
    );
    assert!(
        subjects.len() >= 25,
        "only {} of the catalogue's rules decided anything in a year: {:?}",
        subjects.len(),
        subjects.keys()
    );
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "population",
            "generate",
            "--seed",
            "1",
            "--out",
            s(&out_dir),
        ];
        args.extend_from_slice(extra);
        oshirase(&args)
    };
    let out = run(&["--residents", "0"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--residents 0"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--residents", "10", "--start", "1850-04-01"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--start 1850-04-01"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--residents", "10", "--municipality", "133622"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--municipality: check digit of \"133622\""),
        "{}",
        text(&out.stderr)
    );
    // A designated city's ward is not a municipality of its own.
    let out = run(&["--residents", "10", "--municipality", "141011"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("141011 is not the code of a 市区町村"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--residents", "ten"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!out_dir.join("snapshot.jsonl").exists());
}

#[test]
fn a_register_of_any_municipality_carries_its_code_and_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = oshirase(&[
        "population",
        "generate",
        "--residents",
        "300",
        "--seed",
        "5",
        "--municipality",
        "133621",
        "--out",
        s(tmp.path()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["snapshot.jsonl", "changes.jsonl"] {
        let (header, _) = lines(&tmp.path().join(file));
        assert_eq!(header["local_gov_code"], "133621", "{file}");
    }
    let (_, records) = lines(&tmp.path().join("snapshot.jsonl"));
    let residents: Vec<&Value> = records
        .iter()
        .filter(|r| r["status"]["kind"] == "resident")
        .collect();
    assert!(residents.len() >= 290, "{}", residents.len());
    for r in residents {
        assert_eq!(r["address"]["local_gov_code"], "133621", "{r}");
        let address = r["address"]["text"].as_str().unwrap();
        assert!(
            address.starts_with("東京都利島村") && address.ends_with('号'),
            "{address}"
        );
    }
    // The default stays 川崎市, with its wards.
    let kawasaki = tmp.path().join("kawasaki");
    generate(50, 5, &kawasaki);
    let (header, records) = lines(&kawasaki.join("snapshot.jsonl"));
    assert_eq!(header["local_gov_code"], "141305");
    assert!(records.iter().any(|r| r["address"]["text"]
        .as_str()
        .is_some_and(|a| a.starts_with("神奈川県川崎市") && a.contains('区'))));
}
