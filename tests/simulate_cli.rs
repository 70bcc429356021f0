//! `oshirase simulate` as policy staff use it: the counts match day-by-day evaluation, a rule
//! change shows resident by resident, the chart is one self-contained page, nothing is
//! written outside `--out`, and bad input gets the documented exit codes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn oshirase_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oshirase"))
        .args(args)
        .current_dir(cwd)
        .env_remove("OSHIRASE_RULES")
        .output()
        .unwrap()
}

fn oshirase(args: &[&str]) -> Output {
    oshirase_in(&root(), args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn copy_rules(to: &Path) {
    std::fs::create_dir_all(to.join("parameters")).unwrap();
    for entry in std::fs::read_dir(root().join("rules")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    for entry in std::fs::read_dir(root().join("rules/parameters")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join("parameters").join(p.file_name().unwrap())).unwrap();
    }
}

/// Replaces `from` by `to` in a file, failing if `from` is not there.
fn edit(path: &Path, from: &str, to: &str) {
    let t = read(path);
    assert!(t.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, t.replace(from, to)).unwrap();
}

/// `evaluate --format json` over the range with the given rules: the oracle.
fn evaluate(rules: &Path, from: &str, to: &str) -> Vec<Value> {
    evaluate_with(&["--rules", s(rules)], from, to)
}

/// The same with the catalogue `catalogue` names (`--rules DIR`, `--layers DIR`).
fn evaluate_with(catalogue: &[&str], from: &str, to: &str) -> Vec<Value> {
    let mut args = vec!["evaluate", "--snapshot", "fixtures/town.jsonl"];
    args.extend_from_slice(catalogue);
    args.extend_from_slice(&["--date", from, "--to", to, "--format", "json"]);
    let r = oshirase(&args);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    v["decisions"].as_array().unwrap().clone()
}

fn keys<'a>(ds: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    ds.into_iter()
        .map(|d| d["key"].as_str().unwrap().to_owned())
        .collect()
}

/// The page loads nothing from anywhere and is balanced where it matters.
fn assert_self_contained(html: &str) {
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    for bad in [
        "http", "src=", "href=", "url(", "<script", "<link", "@import",
    ] {
        assert!(!html.contains(bad), "the page contains {bad:?}");
    }
    for tag in [
        "svg", "table", "ul", "h1", "h2", "p", "tr", "td", "th", "title",
    ] {
        assert_eq!(
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count(),
            html.matches(&format!("</{tag}>")).count(),
            "<{tag}> opened and closed as often"
        );
    }
}

#[test]
fn counts_samples_and_chart_match_a_day_by_day_evaluation() {
    // An empty working directory: the default --out is relative to it, and nothing else
    // may appear there.
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = ("2026-04-01", "2026-06-30");
    let snapshot = root().join("fixtures/town.jsonl");
    let rules = root().join("rules");
    let r = oshirase_in(
        tmp.path(),
        &[
            "simulate",
            "--snapshot",
            s(&snapshot),
            "--rules",
            s(&rules),
            "--from",
            from,
            "--to",
            to,
            "--samples",
            "2",
        ],
    );
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(
        text(&r.stderr),
        "",
        "no progress bar when stderr is not a terminal, and nothing else"
    );
    assert_eq!(listing(tmp.path()), ["out"]);
    let out = tmp.path().join("out/simulate");
    assert_eq!(listing(&out), ["chart.html", "counts.csv", "summary.json"]);

    let decisions = evaluate(&rules, from, to);
    assert!(decisions.len() > 100);
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for d in &decisions {
        let k = (
            d["notify_on"].as_str().unwrap().to_owned(),
            d["rule"].as_str().unwrap().to_owned(),
        );
        *expected.entry(k).or_default() += 1;
    }
    let csv = read(&out.join("counts.csv"));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("date,rule,notices"));
    let counted: BTreeMap<(String, String), usize> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "{l}");
            ((f[0].to_owned(), f[1].to_owned()), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(
        counted, expected,
        "counts.csv is evaluate's decisions per day and rule"
    );

    let summary: Value = serde_json::from_str(&read(&out.join("summary.json"))).unwrap();
    assert_eq!(summary["notices"].as_u64(), Some(decisions.len() as u64));
    assert_eq!(summary["days"].as_u64(), Some(91));
    assert_eq!(summary["from"], from);
    assert!(summary["compare"].is_null());
    let totals = summary["totals"].as_object().unwrap();
    assert_eq!(
        totals.len(),
        35,
        "every rule of the catalogue, zero included"
    );
    let mut csv_totals: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, rule), n) in &counted {
        *csv_totals.entry(rule).or_default() += *n as u64;
    }
    for (rule, n) in totals {
        let n = n.as_u64().unwrap();
        assert_eq!(
            csv_totals.get(rule.as_str()).copied().unwrap_or(0),
            n,
            "{rule}"
        );
        // The first two decisions of the rule, by day then key, as evaluate lists them.
        let first: Vec<&Value> = decisions
            .iter()
            .filter(|d| d["rule"] == rule.as_str())
            .take(2)
            .map(|d| &d["key"])
            .collect();
        let samples: Vec<&Value> = summary["samples"][rule]
            .as_array()
            .map(|a| a.iter().map(|d| &d["key"]).collect())
            .unwrap_or_default();
        assert_eq!(samples, first, "samples of {rule}");
    }

    let stdout = text(&r.stdout);
    assert!(
        stdout.contains(&format!("{:>7}  total", decisions.len())),
        "{stdout}"
    );
    assert!(stdout.contains("rule errors: 0"), "{stdout}");
    for f in ["counts.csv", "summary.json", "chart.html"] {
        assert!(stdout.contains(&format!("out/simulate/{f}")), "{stdout}");
    }

    let html = read(&out.join("chart.html"));
    assert_self_contained(&html);
    assert!(html.contains("<svg") && html.contains("通知シミュレーション"));
    assert!(html.contains("特定健康診査"), "Japanese rule titles");
    assert!(
        html.contains("通知日") && html.contains("通知数"),
        "axis labels"
    );
    assert!(html.contains(r#"class="legend""#));
    for (rule, n) in totals {
        assert!(html.contains(rule.as_str()), "{rule} missing from the page");
        let in_legend = html.contains(&format!(r#"></span>{rule}</li>"#));
        assert_eq!(in_legend, n.as_u64() > Some(0), "{rule} in the legend");
    }
}

#[test]
fn a_changed_catalogue_shows_resident_by_resident() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let other = tmp.path().join("rules");
    copy_rules(&other);
    // Removed: the MR second dose. Condition changed: health check-ups from 50, not 40.
    // Deadline changed: pneumococcal until 67. Added: a copy of the age-65 care rule.
    std::fs::remove_file(other.join("yobou-mr-2ki.yaml")).unwrap();
    edit(
        &other.join("tokutei-kenshin.yaml"),
        "age: { min: 40, max: 75, on: fiscal_year_end }",
        "age: { min: 50, max: 75, on: fiscal_year_end }",
    );
    edit(
        &other.join("haien-kyukin.yaml"),
        "deadline: { before_age: 66 }",
        "deadline: { before_age: 67 }",
    );
    let added_rule = other.join("kaigo-1go-shikaku-copy.yaml");
    std::fs::copy(other.join("kaigo-1go-shikaku.yaml"), &added_rule).unwrap();
    edit(
        &added_rule,
        "id: kaigo-1go-shikaku\n",
        "id: kaigo-1go-shikaku-copy\n",
    );
    edit(
        &added_rule,
        "title: { ja: 介護保険 第1号被保険者の資格取得（65歳）",
        "title: { ja: 追加ルールの試験",
    );

    let (from, to) = ("2026-04-01", "2026-05-31");
    let r = oshirase(&[
        "simulate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--from",
        from,
        "--to",
        to,
        "--out",
        s(&out),
        "--compare-rules",
        s(&other),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));

    let base = evaluate(&root().join("rules"), from, to);
    let changed = evaluate(&other, from, to);
    let (b, c) = (keys(&base), keys(&changed));
    let removed: BTreeSet<String> = b.difference(&c).cloned().collect();
    let added: BTreeSet<String> = c.difference(&b).cloned().collect();
    let of_rule = |ds: &[Value], rule: &str| keys(ds.iter().filter(|d| d["rule"] == rule));
    // The oracle itself says what the edits mean.
    let mr = of_rule(&base, "yobou-mr-2ki");
    let kenshin = of_rule(&base, "tokutei-kenshin");
    let kenshin_left: BTreeSet<String> = removed.difference(&mr).cloned().collect();
    assert!(!mr.is_empty() && mr.is_subset(&removed));
    assert!(!kenshin_left.is_empty() && kenshin_left.is_subset(&kenshin));
    assert!(kenshin_left.len() < kenshin.len());
    assert_eq!(added, of_rule(&changed, "kaigo-1go-shikaku-copy"));
    assert!(!added.is_empty());
    let haien = of_rule(&base, "haien-kyukin");
    assert!(!haien.is_empty());

    let csv = read(&out.join("compare.csv"));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("change,key,rule,subject,occurrence,detail")
    );
    let mut seen: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut previous = String::new();
    for l in lines {
        let f: Vec<&str> = l.splitn(6, ',').collect();
        let (change, key, rule, subject, occurrence, detail) = (f[0], f[1], f[2], f[3], f[4], f[5]);
        assert_eq!(key, format!("{rule}/{subject}/{occurrence}"), "{l}");
        assert!(key > previous.as_str(), "ordered by key: {l}");
        previous = key.to_owned();
        if change == "changed" {
            assert!(detail.contains("deadline 20"), "{l}");
        } else {
            assert_eq!(detail, "", "{l}");
        }
        seen.entry(change).or_default().insert(key.to_owned());
    }
    assert_eq!(seen["removed"], removed);
    assert_eq!(seen["added"], added);
    assert_eq!(seen["changed"], haien);

    let summary: Value = serde_json::from_str(&read(&out.join("summary.json"))).unwrap();
    let cmp = &summary["compare"];
    assert_eq!(cmp["removed"].as_u64(), Some(removed.len() as u64));
    assert_eq!(cmp["added"].as_u64(), Some(added.len() as u64));
    assert_eq!(cmp["changed"].as_u64(), Some(haien.len() as u64));
    assert_eq!(
        cmp["per_rule"]["yobou-mr-2ki"]["removed"].as_u64(),
        Some(mr.len() as u64)
    );
    assert_eq!(
        cmp["differences"].as_array().unwrap().len(),
        csv.lines().count() - 1
    );

    let stdout = text(&r.stdout);
    let line = format!(
        "{} added, {} removed, {} changed",
        added.len(),
        removed.len(),
        haien.len()
    );
    assert!(stdout.contains(&line), "{stdout}");

    let html = read(&out.join("chart.html"));
    assert_self_contained(&html);
    assert!(html.contains("ルール変更の影響"));
    assert!(
        html.contains("追加ルールの試験"),
        "the added rule's own title"
    );
    for k in removed.iter().chain(&added) {
        let subject = k.split('/').nth(1).unwrap();
        assert!(html.contains(&format!("<td>{subject}</td>")), "{k}");
    }

    // The next run without --compare-rules leaves no stale comparison behind.
    let r = oshirase(&[
        "simulate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--from",
        from,
        "--to",
        from,
        "--out",
        s(&out),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(listing(&out), ["chart.html", "counts.csv", "summary.json"]);
}

#[test]
fn bad_ranges_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (from, to, code, message) in [
        (
            "2026-05-01",
            "2026-04-01",
            3,
            "--from 2026-05-01 is after --to 2026-04-01",
        ),
        (
            "1700-01-01",
            "2026-04-01",
            3,
            "--from 1700-01-01 is outside the supported years 1800-2300",
        ),
        (
            "2026-04-01",
            "2400-01-01",
            3,
            "--to 2400-01-01 is outside the supported years",
        ),
        ("2026-04-01", "2026-02-30", 2, "'2026-02-30' for '--to"),
        ("April", "2026-04-30", 2, "'April' for '--from"),
    ] {
        let r = oshirase(&[
            "simulate",
            "--snapshot",
            "fixtures/town.jsonl",
            "--from",
            from,
            "--to",
            to,
            "--out",
            s(&out),
        ]);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(code), "{from} {to}: {err}");
        assert!(err.contains(message), "{from} {to}: {err}");
        assert!(!out.exists(), "nothing written");
    }
}

#[test]
fn unloadable_rules_exit_1_and_a_bad_snapshot_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let broken = tmp.path().join("broken");
    copy_rules(&broken);
    edit(
        &broken.join("haien-kyukin.yaml"),
        "channels: [portal, email, webpush]",
        "channels: [fax]",
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "simulate",
            "--from",
            "2026-04-01",
            "--to",
            "2026-04-02",
            "--out",
            s(&out),
        ];
        args.extend_from_slice(extra);
        oshirase(&args)
    };
    for (flag, args) in [
        (
            "--rules",
            vec!["--snapshot", "fixtures/town.jsonl", "--rules", s(&broken)],
        ),
        (
            "--compare-rules",
            vec![
                "--snapshot",
                "fixtures/town.jsonl",
                "--compare-rules",
                s(&broken),
            ],
        ),
    ] {
        let r = run(&args);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(
            err.contains("haien-kyukin.yaml:"),
            "the error names the file: {err}"
        );
        assert!(
            err.contains(&format!("{flag} {}", broken.display())),
            "{err}"
        );
    }

    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "not a snapshot\n").unwrap();
    for snapshot in [bad.clone(), tmp.path().join("missing.jsonl")] {
        let r = run(&["--snapshot", s(&snapshot)]);
        let err = text(&r.stderr);
        assert_eq!(r.status.code(), Some(3), "{err}");
        assert!(
            err.contains(s(&snapshot)),
            "the error names the file: {err}"
        );
    }
    assert!(!out.exists(), "nothing written");
}

#[test]
fn run_time_rule_failures_exit_4_and_are_all_in_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let rules = tmp.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let rule = rules.join("tokutei-kenshin.yaml");
    std::fs::copy(root().join("rules/tokutei-kenshin.yaml"), &rule).unwrap();
    // The rule names its department, defined with the catalogue's parameters.
    std::fs::create_dir_all(rules.join("parameters")).unwrap();
    std::fs::copy(
        root().join("rules/parameters/departments.yaml"),
        rules.join("parameters/departments.yaml"),
    )
    .unwrap();
    // Nobody has this attribute: comparing nothing with a number fails at run time.
    edit(
        &rule,
        "  - attribute: kokuho\n",
        "  - attribute: kokuho\n  - script: 'subject.attributes.no_such_thing > 1'\n",
    );
    let r = oshirase(&[
        "simulate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--rules",
        s(&rules),
        "--from",
        "2026-04-01",
        "--to",
        "2026-04-03",
        "--out",
        s(&out),
    ]);
    let err = text(&r.stderr);
    assert_eq!(r.status.code(), Some(4), "{err}");
    let summary: Value = serde_json::from_str(&read(&out.join("summary.json"))).unwrap();
    let failures = summary["failures"].as_array().unwrap();
    assert!(failures.len() > 20, "{}", failures.len());
    assert_eq!(summary["notices"], 0);
    assert!(failures
        .iter()
        .all(|f| f["rule"] == "tokutei-kenshin" && f["field"] == "conditions[1].script"));
    // stderr shows the first ones with their place and points at the rest.
    assert_eq!(err.matches("rule error: ").count(), 20, "{err}");
    assert!(err.contains("tokutei-kenshin.yaml:"), "{err}");
    assert!(
        err.contains(&format!("and {} more rule errors", failures.len() - 20)),
        "{err}"
    );
    assert!(text(&r.stdout).contains(&format!("rule errors: {}", failures.len())));
    let html = read(&out.join("chart.html"));
    assert_self_contained(&html);
    assert!(html.contains("ルールの実行時エラー"));
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

#[test]
fn a_municipality_s_changed_layer_shows_resident_by_resident() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let layers = root().join("fixtures/layers");
    let other = tmp.path().join("layers");
    copy_tree(&layers, &other);
    // 東京都 brings its 後期 葬祭費 forward a year; the village raises its own 葬祭費 and
    // drops its 敬老祝金 with its amount and cases.
    edit(
        &other.join("prefectures/130001/parameters/kouki.yaml"),
        "{ from: 2027-04-01, value: 70000 }",
        "{ from: 2026-04-01, value: 70000 }",
    );
    let village = other.join("municipalities/133621");
    std::fs::remove_file(village.join("keirou-iwaikin-88.yaml")).unwrap();
    std::fs::remove_dir_all(village.join("tests")).unwrap();
    std::fs::write(
        village.join("parameters/village.yaml"),
        "sousaihi_amount_kokuho:\n  description: 葬祭費（国保）\n  values:\n    - { from: 2020-04-01, value: 80000 }\n",
    )
    .unwrap();

    let (from, to) = ("2026-01-01", "2026-12-31");
    let r = oshirase(&[
        "simulate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--from",
        from,
        "--to",
        to,
        "--out",
        s(&out),
        "--layers",
        s(&layers),
        "--compare-layers",
        s(&other),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));

    // The oracle: each catalogue evaluated day by day.
    let base = evaluate_with(&["--layers", s(&layers)], from, to);
    let changed = evaluate_with(&["--layers", s(&other)], from, to);
    let keirou = keys(base.iter().filter(|d| d["rule"] == "keirou-iwaikin-88"));
    assert!(!keirou.is_empty());
    let removed: BTreeSet<String> = keys(&base).difference(&keys(&changed)).cloned().collect();
    assert_eq!(removed, keirou);
    // The town's deaths of the year are all in 後期高齢者医療, after 2026-04-01.
    let raised = keys(base.iter().filter(|d| {
        d["rule"] == "sousaihi"
            && d["prefill"]["insurer"] == "後期高齢者医療"
            && d["prefill"]["death_date"].as_str() >= Some("2026-04-01")
    }));
    assert!(!raised.is_empty(), "a 後期 death in the range");
    assert!(changed
        .iter()
        .filter(|d| raised.contains(d["key"].as_str().unwrap()))
        .all(|d| d["prefill"]["amount"] == 70000));

    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in read(&out.join("compare.csv")).lines().skip(1) {
        let f: Vec<&str> = l.splitn(6, ',').collect();
        seen.entry(f[0].to_owned())
            .or_default()
            .insert(f[1].to_owned());
    }
    assert_eq!(seen.get("removed"), Some(&keirou));
    assert_eq!(seen.get("changed"), Some(&raised));
    assert_eq!(seen.get("added"), None);
    let summary: Value = serde_json::from_str(&read(&out.join("summary.json"))).unwrap();
    let named = summary["compare"]["rules_dir"].as_str().unwrap();
    assert!(
        named.ends_with(&format!("with the layers of {}", s(&other))),
        "{named}"
    );
    assert!(
        summary["rules_dir"]
            .as_str()
            .unwrap()
            .contains("with the layers of"),
        "{summary}"
    );
}
