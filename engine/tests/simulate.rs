//! Dry runs and catalogue comparisons on the fixture town and the real catalogue (read, never
//! written: changed catalogues are compiled from edited texts in memory).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::NaiveDate;
use oshirase_engine::calendar;
use oshirase_engine::catalogue::compile_sources;
use oshirase_engine::ids::RuleId;
use oshirase_engine::simulate::{compare, simulate, simulate_and_compare, Difference};
use oshirase_engine::{evaluate_day, load_snapshot, parse_snapshot, Decision, Population, RuleSet};

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn town() -> &'static Population {
    static TOWN: OnceLock<Population> = OnceLock::new();
    TOWN.get_or_init(|| {
        load_snapshot(&root().join("fixtures/town.jsonl"))
            .unwrap_or_else(|e| panic!("{e}"))
            .population
    })
}

/// (file name, text) of every YAML file directly in `dir`, sorted.
fn yaml_texts(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The real catalogue, each rule text passed through `edit` (None drops the file).
fn catalogue(edit: impl Fn(&str, String) -> Option<String>) -> RuleSet {
    let dir = root().join("rules");
    let sources: Vec<(String, String)> = yaml_texts(&dir)
        .into_iter()
        .filter_map(|(name, text)| edit(&name, text).map(|t| (format!("rules/{name}"), t)))
        .collect();
    let params: Vec<(String, String)> = yaml_texts(&dir.join("parameters"))
        .into_iter()
        .map(|(name, text)| (format!("rules/parameters/{name}"), text))
        .collect();
    compile_sources(Path::new("rules"), &sources, &params).unwrap_or_else(|e| panic!("{e}"))
}

fn base() -> &'static RuleSet {
    static BASE: OnceLock<RuleSet> = OnceLock::new();
    BASE.get_or_init(|| catalogue(|_, t| Some(t)))
}

/// Replaces `from` by `to` in `text`, failing if `from` is not there (so an edit that stops
/// applying after a catalogue change fails loudly instead of comparing equal catalogues).
fn replace(text: String, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not found");
    text.replace(from, to)
}

/// Every decision of `rules` over the range, day by day, straight from `evaluate_day`.
fn evaluated(rules: &RuleSet, from: NaiveDate, to: NaiveDate) -> Vec<(NaiveDate, Decision)> {
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        out.extend(
            evaluate_day(rules, town(), day)
                .decisions
                .into_iter()
                .map(|x| (day, x)),
        );
        day = calendar::add_days(day, 1);
    }
    out
}

fn keys<'a>(it: impl IntoIterator<Item = &'a Decision>) -> BTreeSet<String> {
    it.into_iter().map(|x| x.key.to_string()).collect()
}

fn diff_keys(diffs: &[Difference], change: &str) -> BTreeSet<String> {
    diffs
        .iter()
        .filter(|x| x.change() == change)
        .map(|x| x.key().to_string())
        .collect()
}

#[test]
fn a_simulation_is_evaluate_day_over_each_day_of_the_range() {
    let (from, to) = (d("2026-04-01"), d("2026-06-30"));
    let mut seen = Vec::new();
    let sim = simulate(base(), town(), from, to, 2, &mut |day| seen.push(day));

    let expected_days: Vec<NaiveDate> = (0..91).map(|i| calendar::add_days(from, i)).collect();
    assert_eq!(seen, expected_days, "progress once per day, in order");
    assert_eq!(sim.days(), 91);

    let all = evaluated(base(), from, to);
    assert!(all.len() > 100, "the town has notices in the range");
    let mut per_day: BTreeMap<NaiveDate, BTreeMap<RuleId, usize>> = BTreeMap::new();
    let mut totals: BTreeMap<RuleId, usize> =
        base().rules().iter().map(|r| (r.id.clone(), 0)).collect();
    let mut samples: BTreeMap<RuleId, Vec<Decision>> = BTreeMap::new();
    for (day, x) in &all {
        *per_day
            .entry(*day)
            .or_default()
            .entry(x.rule.clone())
            .or_default() += 1;
        *totals.get_mut(&x.rule).unwrap() += 1;
        let s = samples.entry(x.rule.clone()).or_default();
        if s.len() < 2 {
            s.push(x.clone());
        }
    }
    assert_eq!(sim.per_day, per_day);
    assert_eq!(sim.totals, totals);
    assert_eq!(sim.samples, samples);
    assert_eq!(sim.notices(), all.len());
    assert_eq!(
        sim.per_day.values().flat_map(|m| m.values()).sum::<usize>(),
        sim.notices()
    );
    assert!(
        sim.totals.values().any(|n| *n == 0),
        "rules that never fire are listed with 0"
    );
    assert!(sim.failures.is_empty(), "{:#?}", sim.failures);

    let none = simulate(base(), town(), from, to, 0, &mut |_| {});
    assert!(none.samples.is_empty());
    assert_eq!(none.totals, sim.totals);
}

#[test]
fn a_backwards_range_evaluates_nothing() {
    let mut calls = 0;
    let sim = simulate(
        base(),
        town(),
        d("2026-05-01"),
        d("2026-04-01"),
        3,
        &mut |_| calls += 1,
    );
    assert_eq!((calls, sim.days(), sim.notices()), (0, 0, 0));
    assert!(sim.per_day.is_empty());
}

#[test]
fn the_same_catalogue_compared_with_itself_differs_nowhere() {
    let again = catalogue(|_, t| Some(t));
    let c = compare(base(), &again, town(), d("2026-04-01"), d("2026-05-31"));
    assert_eq!(c.differences, []);
    assert!(c.base_failures.is_empty() && c.other_failures.is_empty());
}

/// The MR second-dose rule removed, the health check-up from 50 instead of 40, the
/// pneumococcal deadline a year later.
fn changed_catalogue() -> RuleSet {
    catalogue(|name, text| match name {
        "yobou-mr-2ki.yaml" => None,
        "tokutei-kenshin.yaml" => Some(replace(
            text,
            "age: { min: 40, max: 75, on: fiscal_year_end }",
            "age: { min: 50, max: 75, on: fiscal_year_end }",
        )),
        "haien-kyukin.yaml" => Some(replace(
            text,
            "deadline: { before_age: 66 }",
            "deadline: { before_age: 67 }",
        )),
        _ => Some(text),
    })
}

#[test]
fn compare_reports_exactly_the_keys_a_changed_catalogue_adds_removes_and_changes() {
    let (from, to) = (d("2026-04-01"), d("2026-05-31"));
    let other = changed_catalogue();
    let all = evaluated(base(), from, to);
    let of_rule = |id: &'static str| {
        all.iter()
            .map(|(_, x)| x)
            .filter(move |x| x.rule.as_str() == id)
    };

    let mr = keys(of_rule("yobou-mr-2ki"));
    // Invited at 40-49 at the end of the fiscal year: no longer invited from 50.
    let young = keys(of_rule("tokutei-kenshin").filter(|x| {
        let birth = town().get(town().index_of(&x.subject).unwrap()).birth_date;
        calendar::fy_end_age(birth, calendar::fiscal_year(x.occurrence)) < 50
    }));
    let haien: Vec<&Decision> = of_rule("haien-kyukin").collect();
    assert!(!mr.is_empty() && !young.is_empty() && !haien.is_empty());
    assert!(
        keys(of_rule("tokutei-kenshin")).len() > young.len(),
        "older residents keep their invitation"
    );

    let c = compare(base(), &other, town(), from, to);
    let removed: BTreeSet<String> = mr.union(&young).cloned().collect();
    assert_eq!(diff_keys(&c.differences, "removed"), removed);
    assert_eq!(diff_keys(&c.differences, "added"), BTreeSet::new());
    assert_eq!(diff_keys(&c.differences, "changed"), keys(haien.clone()));
    for x in &c.differences {
        if let Difference::Changed {
            base: b, other: o, ..
        } = x
        {
            let (b, o) = (b.deadline.unwrap(), o.deadline.unwrap());
            assert_eq!(calendar::shift_years(b, 1), o);
            assert!(
                x.detail().starts_with(&format!("deadline {b} -> {o}")),
                "{}",
                x.detail()
            );
        }
    }
    let keys_in_order: Vec<&str> = c.differences.iter().map(|x| x.key().as_str()).collect();
    assert!(
        keys_in_order.windows(2).all(|w| w[0] < w[1]),
        "ordered by key"
    );
    let n = c.counts();
    assert_eq!(
        (n.added, n.removed, n.changed),
        (0, removed.len(), haien.len())
    );
    assert_eq!(
        c.per_rule()[&RuleId::parse("yobou-mr-2ki").unwrap()].removed,
        mr.len()
    );

    // The other way round, the removals are additions.
    let back = compare(&other, base(), town(), from, to);
    assert_eq!(diff_keys(&back.differences, "added"), removed);
    assert_eq!(diff_keys(&back.differences, "removed"), BTreeSet::new());
    assert_eq!(diff_keys(&back.differences, "changed"), keys(haien));
}

#[test]
fn simulate_and_compare_in_one_pass_equals_both_apart() {
    let (from, to) = (d("2026-04-01"), d("2026-04-30"));
    let other = changed_catalogue();
    let mut days = 0;
    let (sim, cmp) = simulate_and_compare(base(), &other, town(), from, to, 3, &mut |_| days += 1);
    assert_eq!(days, 30);
    assert_eq!(sim, simulate(base(), town(), from, to, 3, &mut |_| {}));
    assert_eq!(cmp, compare(base(), &other, town(), from, to));
    assert!(!cmp.differences.is_empty());
}

/// A notice moved to another day is the same decision, changed: keys are matched over the
/// whole range, not day by day.
#[test]
fn a_notice_moved_to_another_day_is_changed_not_removed_and_added() {
    let (from, to) = (d("2026-04-01"), d("2026-05-31"));
    let other = catalogue(|name, text| match name {
        // Notified 13 days before attaining 20 instead of 14: one day later.
        "kokumin-nenkin-shutoku.yaml" => Some(replace(
            text,
            "notify: { days_before: 14 }",
            "notify: { days_before: 13 }",
        )),
        _ => Some(text),
    });
    let c = compare(base(), &other, town(), from, to);
    // Only the edges of the range may gain or lose one: a notice moved from the last day
    // out of the range, or from just before the range into it.
    let moved: Vec<&Difference> = c
        .differences
        .iter()
        .filter(|x| x.change() == "changed")
        .collect();
    assert!(!moved.is_empty(), "{:#?}", c.differences);
    for x in moved {
        assert!(x.detail().contains("notice day"), "{}", x.detail());
        assert_eq!(x.decision().rule.as_str(), "kokumin-nenkin-shutoku");
    }
    for x in c.differences.iter().filter(|x| x.change() != "changed") {
        let edge = match x {
            Difference::Removed(_) => to,
            _ => from,
        };
        assert_eq!(x.decision().notify_on, edge, "{} {}", x.change(), x.key());
    }
}

/// A small town and rule where a script fails for a resident without the attribute.
fn failing() -> (RuleSet, RuleSet, Population) {
    let rule = |cond: &str| {
        format!(
            "id: test-rule\nversion: 1\ntitle: {{ ja: テスト }}\ncategory: pension\nlegal_basis: test\nvalid: {{ from: 2000-01-01 }}\ntrigger: {{ age_attained: 40 }}\naudience: [subject]\nmessage:\n  ja: \"{{{{ title }}}}\"\nchannels: [portal]\nconditions:\n  - script: '{cond}'\n"
        )
    };
    let compile = |text: String| {
        compile_sources(
            Path::new("rules"),
            &[("rules/test-rule.yaml".to_owned(), text)],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let person = |id: &str, hh: &str, extra: &str| {
        format!(
            r#"{{"id":"{id}","name":{{"kanji":"山田 {id}","kana":"ヤマダ"}},"birth_date":"1986-05-01","sex":1,"status":{{"kind":"resident"}},"address":{{"local_gov_code":"133621","text":"利島村"}},"household":{{"id":"{hh}","relationship":"世帯主"}},"contact":{{"portal":true}}{extra}}}"#
        )
    };
    let text = [
        r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#.to_owned(),
        person("R1", "H1", r#","attributes":{"income":500}"#),
        person("R2", "H2", ""),
    ]
    .join("\n");
    let pop = parse_snapshot(&text, "test.jsonl")
        .unwrap_or_else(|e| panic!("{e}"))
        .population;
    (
        compile(rule("true")),
        compile(rule("subject.attributes.income > 100")),
        pop,
    )
}

#[test]
fn run_time_failures_are_kept_for_each_catalogue() {
    let (ok, bad, pop) = failing();
    let (from, to) = (d("2026-04-01"), d("2026-05-31"));
    let sim = simulate(&bad, &pop, from, to, 3, &mut |_| {});
    assert_eq!(sim.notices(), 1);
    assert_eq!(sim.failures.len(), 1);
    assert_eq!(sim.failures[0].resident.as_str(), "R2");

    let c = compare(&ok, &bad, &pop, from, to);
    assert!(c.base_failures.is_empty());
    assert_eq!(c.other_failures, sim.failures);
    // R2 gets nothing from the failing catalogue: a removal, explained by the failure.
    assert_eq!(
        diff_keys(&c.differences, "removed"),
        BTreeSet::from(["test-rule/R2/2026-04-30".to_owned()])
    );
    assert_eq!(c.differences.len(), 1);
}
