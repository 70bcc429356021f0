//! `oshirase simulate` as policy staff use it: the counts match day-by-day evaluation, a rule
//! change shows resident by resident, and the chart is one self-contained page.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn oshirase(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_oshirase"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
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

#[test]
fn counts_match_evaluation_and_a_removed_rule_shows_resident_by_resident() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let other = tmp.path().join("rules");
    copy_rules(&other);
    // The changed catalogue drops the MR second-dose rule (nothing recommends it).
    std::fs::remove_file(other.join("yobou-mr-2ki.yaml")).unwrap();

    let (from, to) = ("2026-04-01", "2026-09-30");
    let r = oshirase(&[
        "simulate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--from",
        from,
        "--to",
        to,
        "--out",
        out.to_str().unwrap(),
        "--compare-rules",
        other.to_str().unwrap(),
    ]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    let eval = oshirase(&[
        "evaluate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--date",
        from,
        "--to",
        to,
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let decisions = v["decisions"].as_array().unwrap();

    let csv = std::fs::read_to_string(out.join("counts.csv")).unwrap();
    let total: usize = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(
        total,
        decisions.len(),
        "counts.csv sums to the decisions of a day-by-day evaluation"
    );

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["notices"].as_u64().unwrap() as usize,
        decisions.len()
    );

    let mut removed: Vec<String> = std::fs::read_to_string(out.join("compare.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            assert!(l.starts_with("removed,"), "only removals expected: {l}");
            l.split(',').nth(1).unwrap().to_owned()
        })
        .collect();
    removed.sort();
    let mut expected: Vec<String> = decisions
        .iter()
        .filter(|d| d["rule"] == "yobou-mr-2ki")
        .map(|d| d["key"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert!(
        !expected.is_empty(),
        "the fixture town has MR second-dose notices in the range"
    );
    assert_eq!(removed, expected);

    let html = std::fs::read_to_string(out.join("chart.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("</html>"));
    for rule in summary["totals"].as_object().unwrap().keys() {
        assert!(
            html.contains(rule.as_str()),
            "{rule} missing from the chart"
        );
    }
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "the page loads nothing from outside"
    );
}

#[test]
fn a_backwards_range_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let r = oshirase(&[
        "simulate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--from",
        "2026-05-01",
        "--to",
        "2026-04-01",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("--from 2026-05-01 is after --to 2026-04-01")
    );
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "nothing written"
    );
}
