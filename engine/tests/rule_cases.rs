//! `cargo test` runs the catalogue's own test cases (rules/tests/*.yaml), exactly as
//! `oshirase rules test rules/` does.

use std::path::Path;

use oshirase_engine::{load_dir, ruletest};

#[test]
fn the_catalogue_loads_and_every_rule_case_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let rules = load_dir(&dir).unwrap_or_else(|e| panic!("the catalogue does not load:\n{e}"));
    assert!(
        rules.rules().len() >= 30,
        "the catalogue has {} rules",
        rules.rules().len()
    );
    // Every field has its label, every rule says whether residents apply and whom they ask.
    let gaps: Vec<String> = rules
        .presentation_gaps
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(gaps.is_empty(), "{}", gaps.join("\n"));
    let report = ruletest::run_dir(&rules, &dir.join("tests"));
    let mut problems: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    for c in report.cases.iter().filter(|c| !c.passed()) {
        problems.push(format!(
            "{}:{}: {}\n    {}",
            c.file,
            c.line,
            c.name,
            c.differences.join("\n    ")
        ));
    }
    assert!(
        problems.is_empty(),
        "{} rule case(s) failed:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Every rule has at least two cases.
    for rule in rules.rules() {
        let file = dir.join("tests").join(format!("{}.yaml", rule.id));
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|_| panic!("{} has no test file {}", rule.id, file.display()));
        let cases = report
            .cases
            .iter()
            .filter(|c| Path::new(&c.file) == file)
            .count();
        assert!(
            cases >= 2,
            "{} has {cases} case(s) in {}; at least two are required",
            rule.id,
            file.display()
        );
        assert!(!text.is_empty());
    }
}
