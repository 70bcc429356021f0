//! Scripts and templates that cannot work are refused when the catalogue loads, and those
//! that run away on one resident's data fail for that resident, never stall the day or
//! answer silently.

use std::path::Path;

use chrono::NaiveDate;
use oshirase_engine::catalogue::compile_sources;
use oshirase_engine::{evaluate_day, Population, RuleSet};

#[path = "support/snapshot.rs"]
mod snapshot;
use snapshot::population;

fn rule(id: &str, body: &str) -> String {
    format!(
        "id: {id}\nversion: 1\ntitle: {{ ja: テスト }}\ncategory: pension\nlegal_basis: test\nvalid: {{ from: 2000-01-01 }}\ntrigger: {{ age_attained: 20 }}\naudience: [subject]\nchannels: [portal]\n{body}"
    )
}

fn compile(files: &[(&str, String)]) -> Result<RuleSet, Vec<String>> {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(id, t)| (format!("rules/{id}.yaml"), t.clone()))
        .collect();
    compile_sources(Path::new("rules"), &sources, &[])
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// The load errors of one rule whose prefill `x` is `script`.
fn prefill_errors(script: &str) -> Vec<String> {
    let body = format!("prefill:\n  x: '{script}'\nmessage:\n  ja: \"{{{{ x }}}}\"\n");
    match compile(&[("probe-rule", rule("probe-rule", &body))]) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

#[test]
fn scripts_that_fail_for_everyone_are_load_errors() {
    for (script, words) in [
        ("nope(1)", "nope"),
        ("attain(subject.birth_date)", "attain"),
        ("subject.name.kanji.nope()", "nope"),
        (r#"Fn("nope").call()"#, "nope"),
        ("timestamp()", "timestamp"),
    ] {
        let errs = prefill_errors(script);
        assert!(
            errs.len() == 1
                && errs[0].starts_with("rules/probe-rule.yaml:")
                && errs[0].contains("`prefill.x`")
                && errs[0].contains(words),
            "{script}: {errs:#?}"
        );
    }
    // A script may not fail on purpose: a condition says false, a value says ().
    let errs = prefill_errors(r#"throw "no""#);
    assert!(
        errs.len() == 1 && errs[0].contains("`prefill.x`") && errs[0].contains("throw"),
        "{errs:#?}"
    );
}

#[test]
fn scripts_that_fail_only_on_some_data_still_load() {
    // The probe resident lives alone: the first housemate is out of bounds there, not for a
    // family. A missing attribute compared with a number depends on the record too.
    for script in [
        "household[0].name.kanji",
        "subject.attributes.points + 1",
        "household.map(|m| m.attributes.rank).sort()",
    ] {
        assert_eq!(prefill_errors(script), Vec::<String>::new(), "{script}");
    }
}

fn person(id: &str, birth: &str, rel: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":{{"kanji":"山田 {id}","kana":"ヤマダ"}},"birth_date":"{birth}","sex":1,"status":{{"kind":"resident"}},"address":{{"local_gov_code":"133621","text":"利島村"}},"household":{{"id":"H1","relationship":"{rel}"}},"contact":{{"portal":true}}}}"#
    )
}

/// The subject turns 20 on 2026-03-31 and lives with `others` housemates.
fn family(others: usize) -> Population {
    let mut lines = vec![person("R0", "2006-04-01", "世帯主")];
    lines.extend((1..=others).map(|i| person(&format!("R{i}"), "1970-01-01", "子")));
    population(&lines)
}

fn day() -> NaiveDate {
    "2026-03-31".parse().unwrap()
}

#[test]
fn ordering_values_of_different_types_is_an_error() {
    for (i, expr) in [
        r#"subject.birth_date < 1.5"#,
        r#""a" > 1.5"#,
        "true < 1",
        "#{} < 1",
        "[] >= 1",
        "1.5 <= ()",
        r#"true > "a""#,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("cmp-{i}");
        let body = format!("conditions:\n  - script: '{expr}'\nmessage:\n  ja: \"x\"\n");
        let rs = match compile(&[(id.as_str(), rule(&id, &body))]) {
            Ok(rs) => rs,
            // Refused at load is as good: the mismatch is in the script itself.
            Err(errs) => {
                assert!(
                    errs.iter().any(|e| e.contains("different types")),
                    "{expr}: {errs:#?}"
                );
                continue;
            }
        };
        let r = evaluate_day(&rs, &family(0), day());
        assert!(r.decisions.is_empty(), "{expr}");
        assert!(
            r.failures.len() == 1 && r.failures[0].to_string().contains("different types"),
            "{expr}: {:#?}",
            r.failures
        );
    }
    // Numbers of both kinds still compare.
    let body = "conditions:\n  - script: '1 < 1.5 && 2.5 > 2'\nmessage:\n  ja: \"x\"\n";
    let rs = compile(&[("numbers", rule("numbers", body))]).unwrap();
    assert_eq!(evaluate_day(&rs, &family(0), day()).decisions.len(), 1);
}

#[test]
fn a_sort_comparator_that_never_ends_fails_the_script() {
    // The comparator is endless only when there is something to compare: a family.
    let body = "prefill:\n  x: 'household.map(|m| m.id).sort(|a, b| { let n = 0; loop { n += 1; } })'\nmessage:\n  ja: \"{{ x }}\"\n";
    let rs = compile(&[("sorting", rule("sorting", body))]).unwrap();
    let r = evaluate_day(&rs, &family(3), day());
    assert!(r.decisions.is_empty());
    assert!(
        r.failures.len() == 1 && r.failures[0].to_string().contains("operations"),
        "{:#?}",
        r.failures
    );
}

const NESTED: &str = "{% for a in xs %}{% for b in xs %}{% for c in xs %}{% for d in xs %}{{ a }}{% endfor %}{% endfor %}{% endfor %}{% endfor %}";

#[test]
fn a_template_that_runs_away_on_the_probe_is_a_load_error() {
    let body = format!(
        "prefill:\n  xs: 'let v = []; for i in 0..10000 {{ v.push(i); }} v'\nmessage:\n  ja: \"{NESTED}\"\n"
    );
    let errs = match compile(&[("big", rule("big", &body))]) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    };
    assert!(
        errs.len() == 1 && errs[0].contains("`message.ja`") && errs[0].contains("template"),
        "{errs:#?}"
    );
}

#[test]
fn a_template_that_runs_away_on_one_household_fails_for_that_resident() {
    // Cheap for the probe (who lives alone), too much for a household of 40.
    let body = format!("prefill:\n  xs: 'household.map(|m| m.id)'\nmessage:\n  ja: \"{NESTED}\"\n");
    let rs = compile(&[("grows", rule("grows", &body))]).unwrap();
    assert_eq!(evaluate_day(&rs, &family(1), day()).decisions.len(), 1);
    let r = evaluate_day(&rs, &family(40), day());
    assert!(r.decisions.is_empty());
    assert!(
        r.failures.len() == 1
            && r.failures[0].to_string().contains("message.ja")
            && r.failures[0].to_string().contains("R0"),
        "{:#?}",
        r.failures
    );
}
