//! Evaluation semantics on small inline populations: triggers, audience routing, support
//! measures, run-time failures, and the trigger index against a brute-force scan.

use std::path::Path;

use chrono::NaiveDate;
use oshirase_engine::catalogue::compile_sources;
use oshirase_engine::eval::Role;
use oshirase_engine::ids::{ResidentId, RuleId};
use oshirase_engine::{evaluate_day, explain, ExplainOutcome, Population, RuleSet};
use proptest::prelude::*;

#[path = "support/snapshot.rs"]
mod snapshot;
use snapshot::population;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn rules(docs: &[&str]) -> RuleSet {
    let sources: Vec<(String, String)> = docs
        .iter()
        .map(|t| {
            let id = t.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
            (format!("rules/{id}.yaml"), t.to_string())
        })
        .collect();
    let params = vec![(
        "rules/parameters/p.yaml".to_owned(),
        "amount:\n  description: test amount\n  values:\n    - { from: 2000-04-01, value: 50000 }\n    - { from: 2026-04-01, value: 70000 }\n".to_owned(),
    )];
    compile_sources(Path::new("rules"), &sources, &params).unwrap_or_else(|e| panic!("{e}"))
}

fn rule(trigger: &str, audience: &str, extra: &str) -> String {
    format!(
        "id: test-rule\nversion: 1\ntitle: {{ ja: テスト }}\ncategory: pension\nlegal_basis: test\nvalid: {{ from: 2000-01-01 }}\ntrigger: {trigger}\naudience: {audience}\nmessage:\n  ja: \"{{{{ title }}}}\"\nchannels: [portal, email]\n{extra}"
    )
}

/// A resident line: id, birth date, household, 続柄, then extra JSON fields.
fn person(id: &str, birth: &str, hh: &str, rel: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":{{"kanji":"山田 {id}","kana":"ヤマダ"}},"birth_date":"{birth}","sex":1,"status":{{"kind":"resident"}},"address":{{"local_gov_code":"133621","text":"利島村"}},"household":{{"id":"{hh}","relationship":"{rel}"}},"contact":{{"portal":true}}{extra}}}"#
    )
}

/// Decisions on `day` as "subject->recipient:role" strings, sorted.
fn check(rs: &RuleSet, pop: &Population, day: &str) -> Vec<String> {
    let r = evaluate_day(rs, pop, d(day));
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    let mut out: Vec<String> = r
        .decisions
        .iter()
        .map(|dec| {
            let who = match &dec.staff_review {
                Some(_) => "STAFF".to_owned(),
                None => dec
                    .recipients
                    .iter()
                    .map(|r| format!("{}:{:?}", r.id, r.role))
                    .collect::<Vec<_>>()
                    .join(","),
            };
            format!("{}->{}", dec.subject, who)
        })
        .collect();
    out.sort();
    out
}

const DECEASED: &str = r#"{"kind":"deceased","date":"2026-09-01"}"#;

#[test]
fn age_triggers_fire_on_the_notice_day_only() {
    let rs = rules(&[&rule(
        "{ age_attained: 20 }",
        "[subject]",
        "notify: { days_before: 14 }\n",
    )]);
    let pop = population(&[
        person("R1", "2006-04-01", "H1", "世帯主", ""),
        person("R2", "2008-02-29", "H2", "世帯主", ""),
    ]);
    assert_eq!(check(&rs, &pop, "2026-03-17"), ["R1->R1:Subject"]);
    assert!(check(&rs, &pop, "2026-03-16").is_empty());
    assert!(check(&rs, &pop, "2026-03-18").is_empty());
    // Feb 29 birth: attains 20 on 2028-02-28; notice 14 days before.
    assert_eq!(check(&rs, &pop, "2028-02-14"), ["R2->R2:Subject"]);
}

#[test]
fn minors_are_reached_through_guardians_and_deaths_through_survivors() {
    let child = rules(&[&rule("{ age_months: 2 }", "[subject]", "")]);
    let pop = population(&[
        person("P1", "1990-01-01", "H1", "世帯主", ""),
        person("P2", "1991-01-01", "H1", "妻", ""),
        person(
            "C1",
            "2026-04-10",
            "H1",
            "子",
            r#","guardians":[{"id":"P1"},{"id":"P2"}]"#,
        ),
    ]);
    assert_eq!(
        check(&child, &pop, "2026-06-10"),
        ["C1->P1:Guardian,P2:Guardian"]
    );

    let death = rules(&[&rule("{ event: death }", "[survivors, proxies]", "")]);
    let pop = population(&[
        person("D1", "1940-01-01", "H1", "世帯主", "").replace(r#"{"kind":"resident"}"#, DECEASED),
        person("W1", "1945-01-01", "H1", "妻", r#","proxies":[{"id":"X1","scopes":["pension"]},{"id":"X2","scopes":["childcare"]}]"#),
        person("K1", "2012-01-01", "H1", "子の子", r#","guardians":[{"id":"G1"}]"#),
        person("G1", "1985-01-01", "H2", "世帯主", ""),
        r#"{"id":"X1","name":{"kanji":"代理 人","kana":"ダイリ ニン"},"birth_date":"1970-01-01","sex":2,"status":{"kind":"external"},"address":{"local_gov_code":"131016","text":"千代田区"}}"#.to_string(),
        r#"{"id":"X2","name":{"kanji":"代理 二","kana":"ダイリ ニ"},"birth_date":"1970-01-01","sex":2,"status":{"kind":"external"},"address":{"local_gov_code":"131016","text":"千代田区"}}"#.to_string(),
        person("S1", "1930-01-01", "H3", "世帯主", "").replace(r#"{"kind":"resident"}"#, DECEASED),
    ]);
    // The widow, the grandchild's guardian in another household, the widow's pension proxy
    // (not her childcare one); the person who lived alone goes to staff.
    assert_eq!(
        check(&death, &pop, "2026-09-01"),
        ["D1->W1:Survivor,G1:Guardian,X1:Proxy", "S1->STAFF"]
    );
}

#[test]
fn support_measures_suppress_household_and_proxy_routes() {
    let rs = rules(&[&rule(
        "{ age_attained: 65 }",
        "[subject, householder, proxies]",
        "",
    )]);
    let pop = population(&[
        person("A1", "1961-05-01", "H1", "世帯主", ""),
        person("V1", "1961-05-01", "H2", "世帯主", ""),
        person(
            "V2",
            "1961-05-01",
            "H1",
            "妻",
            r#","support_measure":true,"proxies":[{"id":"A1","scopes":["all"]}]"#,
        ),
    ]);
    // V2 is protected: only she is told; A1 (her householder and proxy) is not.
    assert_eq!(
        check(&rs, &pop, "2026-04-30"),
        ["A1->A1:Subject", "V1->V1:Subject", "V2->V2:Subject"]
    );
    let guard = rules(&[&rule("{ age_months: 3 }", "[guardians, householder]", "")]);
    let pop = population(&[
        person("H", "1980-01-01", "H1", "世帯主", ""),
        person(
            "C",
            "2026-01-15",
            "H1",
            "子の子",
            r#","support_measure":true"#,
        ),
    ]);
    assert_eq!(check(&guard, &pop, "2026-04-15"), ["C->STAFF"]);
}

#[test]
fn proxies_expire_and_critical_notices_cannot_be_muted() {
    let rs = rules(&[&rule(
        "{ birthday: 75 }",
        "[subject, proxies]",
        "critical: true\n",
    )]);
    let pop = population(&[
        person(
            "O1",
            "1951-06-01",
            "H1",
            "世帯主",
            r#","preferences":{"channels":["webpush"]},"proxies":[{"id":"C1","scopes":["pension"],"until":"2026-05-31"}]"#,
        ),
        person("C1", "1980-01-01", "H2", "世帯主", ""),
    ]);
    let r = evaluate_day(&rs, &pop, d("2026-06-01"));
    assert_eq!(r.decisions.len(), 1);
    let dec = &r.decisions[0];
    assert_eq!(dec.recipients.len(), 1, "the proxy expired the day before");
    assert_eq!(dec.recipients[0].role, Role::Subject);
    // Muted everything but web push, has no push subscription: a critical notice still
    // reaches the portal.
    assert_eq!(
        dec.recipients[0]
            .channels
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>(),
        ["portal"]
    );
}

#[test]
fn run_time_script_errors_are_reported_not_read_as_false() {
    let rs = rules(&[&rule(
        "{ age_attained: 40 }",
        "[subject]",
        "conditions:\n  - script: 'subject.attributes.income > 100'\n",
    )]);
    let pop = population(&[
        person(
            "R1",
            "1986-05-01",
            "H1",
            "世帯主",
            r#","attributes":{"income":500}"#,
        ),
        person(
            "R2",
            "1986-05-01",
            "H2",
            "世帯主",
            r#","attributes":{"income":50}"#,
        ),
        person("R3", "1986-05-01", "H3", "世帯主", ""),
    ]);
    let r = evaluate_day(&rs, &pop, d("2026-04-30"));
    assert_eq!(r.decisions.len(), 1, "{:#?}", r.failures);
    assert_eq!(r.decisions[0].subject.as_str(), "R1");
    assert_eq!(r.failures.len(), 1);
    let f = r.failures[0].to_string();
    assert!(f.starts_with("rules/test-rule.yaml:13: field `conditions[0].script`: rule test-rule v1 failed for resident R3"), "{f}");
}

#[test]
fn prefill_deadline_params_and_messages() {
    let rs = rules(&[&rule(
        "{ event: death }",
        "[survivors]",
        "deadline: { years: 2, counting: next_day }\nprefill:\n  amount: params.amount\n  deceased: subject.name.kanji\n  remaining: household.len()\nmessage:\n  ja: \"{{ deceased }} {{ amount }} {{ deadline }}{% if deadline_passed %} 過ぎています{% endif %}\"\n",
    )
    .replace("message:\n  ja: \"{{ title }}\"\n", "")]);
    let pop = population(&[
        person("D1", "1940-01-01", "H1", "世帯主", "").replace(r#"{"kind":"resident"}"#, DECEASED),
        person("W1", "1945-01-01", "H1", "妻", ""),
    ]);
    let r = evaluate_day(&rs, &pop, d("2026-09-01"));
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let dec = &r.decisions[0];
    assert_eq!(dec.key.as_str(), "test-rule/D1/death-D1-2026-09-01");
    assert_eq!(dec.deadline, Some(d("2028-09-01")));
    assert_eq!(dec.prefill["amount"], 70000);
    assert_eq!(dec.prefill["remaining"], 1);
    assert_eq!(dec.message.ja, "山田 D1 70000 2028-09-01");
}

#[test]
fn explain_traces_conditions_and_says_when_the_notice_is_due() {
    let rs = rules(&[&rule(
        "{ age_attained: 20 }",
        "[subject]",
        "notify: { days_before: 14 }\nconditions:\n  - not_attribute: employees_pension\n",
    )]);
    let pop = population(&[person(
        "R1",
        "2006-04-01",
        "H1",
        "世帯主",
        r#","attributes":{"employees_pension":true}"#,
    )]);
    let id = |s: &str| ResidentId::parse(s).unwrap();
    let rid = RuleId::parse("test-rule").unwrap();
    let ex = explain(&rs, &pop, &id("R1"), &rid, d("2026-03-17")).unwrap();
    let not_met = "condition not met: 属性 employees_pension が false または無し / \
                   attribute employees_pension is false or missing";
    assert_eq!(
        ex.outcome,
        ExplainOutcome::NoMatch {
            reason: not_met.into()
        }
    );
    assert_eq!(ex.outcome.to_string(), format!("no match: {not_met}"));
    let cond = ex.steps.iter().find(|s| s.step == "condition").unwrap();
    assert_eq!(cond.passed, Some(false));
    assert_eq!(
        cond.inputs,
        [(
            "subject.attributes.employees_pension".to_owned(),
            "true".to_owned()
        )]
    );
    let early = explain(&rs, &pop, &id("R1"), &rid, d("2026-03-01")).unwrap();
    assert_eq!(
        early.outcome,
        ExplainOutcome::DueOn {
            day: d("2026-03-17")
        }
    );
    assert!(explain(&rs, &pop, &id("NOPE"), &rid, d("2026-03-01")).is_err());
}

/// Rust `Debug` text in what staff read: a type name opening a tuple or a struct
/// (`FiscalYearAge(`, `Some(`, `Event {`), or a variant in brackets (`(Guardian)`).
fn debug_text(s: &str) -> Option<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        while i < chars.len() && chars[i].is_ascii_alphabetic() {
            i += 1;
        }
        if i == start {
            i += 1;
            continue;
        }
        let word: String = chars[start..i].iter().collect();
        if !chars[start].is_ascii_uppercase() {
            continue;
        }
        let next = chars.get(i).copied();
        let opens = next == Some('(') || (next == Some(' ') && chars.get(i + 1) == Some(&'{'));
        let bracketed = start > 0 && chars[start - 1] == '(' && next == Some(')');
        if opens || bracketed {
            return Some(word);
        }
    }
    None
}

/// A description as policy staff read it: Japanese first, then English, and no Rust.
fn assert_words(what: &str, text: &str) {
    let (ja, en) = text
        .split_once(" / ")
        .unwrap_or_else(|| panic!("{what}: not Japanese, then English: {text}"));
    assert!(!ja.is_ascii(), "{what}: not Japanese first: {text}");
    assert!(
        en.chars().next().is_some_and(|c| c.is_ascii()),
        "{what}: no English after the Japanese: {text}"
    );
    assert_eq!(debug_text(text), None, "{what}: {text}");
}

#[test]
fn explain_words_every_trigger_condition_and_audience() {
    let triggers = [
        "{ age_attained: 20 }",
        "{ birthday: 75 }",
        "{ age_months: 2 }",
        "{ fiscal_year_age: { age: 6, on: \"10-01\" } }",
        "{ event: birth }",
        "{ event: death }",
        "{ event: move_in }",
        "{ event: move_out }",
        "{ event: householder_change }",
        "{ annual: { on: \"04-01\" } }",
    ];
    let conditions = "conditions:\n  - attribute: kokuho\n  - not_attribute: kouki\n  \
        - attribute_equals: { name: plan, value: a }\n  - sex: male\n  \
        - age: { min: 18, max: 64, on: fiscal_year_end }\n  - household_remaining: { min: 1 }\n  \
        - script: 'subject.sex == 1'\n";
    // Every audience but the one a trigger may not have: survivors are only for deaths, and
    // a death's notice never goes to the subject.
    let audience = |t: &str| {
        if t.contains("death") {
            "[guardians, householder, spouse, survivors, proxies]"
        } else {
            "[subject, guardians, householder, spouse, proxies]"
        }
    };
    let pop = population(&[
        person(
            "R1",
            "2006-04-01",
            "H1",
            "世帯主",
            r#","attributes":{"kokuho":true,"plan":"a"}"#,
        ),
        person("W1", "2006-05-01", "H1", "妻", ""),
    ]);
    let rid = RuleId::parse("test-rule").unwrap();
    let r1 = ResidentId::parse("R1").unwrap();
    for t in triggers {
        let rs = rules(&[&rule(t, audience(t), conditions)]);
        let ex = explain(&rs, &pop, &r1, &rid, d("2026-04-01")).unwrap();
        let json = serde_json::to_value(&ex).unwrap();
        let text = |key: &str| -> Vec<String> {
            let v = &json[key];
            let all = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
            all.iter()
                .map(|x| {
                    x.as_str()
                        .unwrap_or_else(|| panic!("{t}: no {key} in {json}"))
                        .to_owned()
                })
                .collect()
        };
        assert_words(t, &text("trigger_text")[0]);
        let conds = text("conditions_text");
        assert_eq!(conds.len(), 7, "{t}: {conds:?}");
        for c in &conds {
            assert_words(t, c);
        }
        let audiences = text("audience_text");
        assert_eq!(audiences.len(), 5, "{t}: {audiences:?}");
        for a in &audiences {
            assert_words(t, a);
        }
        assert_eq!(debug_text(&text("outcome_text")[0]), None, "{t}");
        for step in &ex.steps {
            assert_eq!(debug_text(&step.detail), None, "{t}: {step:?}");
        }
    }
    // On the annual day every condition holds, and the trace words them as the rule does.
    let rs = rules(&[&rule(triggers[9], audience(triggers[9]), conditions)]);
    let ex = explain(&rs, &pop, &r1, &rid, d("2026-04-01")).unwrap();
    let json = serde_json::to_value(&ex).unwrap();
    let traced: Vec<&str> = ex
        .steps
        .iter()
        .filter(|s| s.step == "condition")
        .map(|s| s.detail.as_str())
        .collect();
    assert_eq!(
        traced,
        json["conditions_text"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect::<Vec<_>>()
    );
    let audience_step = ex.steps.iter().find(|s| s.step == "audience").unwrap();
    assert!(
        audience_step.detail.contains("R1（本人 / subject）")
            && audience_step.detail.contains("W1（配偶者 / spouse）"),
        "{}",
        audience_step.detail
    );
}

#[test]
fn explain_shows_a_missing_value_a_script_reads_as_missing() {
    let rs = rules(&[&rule(
        "{ annual: { on: \"04-01\" } }",
        "[subject]",
        "conditions:\n  - script: '(subject.attributes.kokuho ?? false) || subject.sex == 1'\n",
    )]);
    let pop = population(&[person("R1", "1980-05-01", "H1", "世帯主", "")]);
    let rid = RuleId::parse("test-rule").unwrap();
    let ex = explain(
        &rs,
        &pop,
        &ResidentId::parse("R1").unwrap(),
        &rid,
        d("2026-04-01"),
    )
    .unwrap();
    let cond = ex.steps.iter().find(|s| s.step == "condition").unwrap();
    // Like the attribute conditions: an empty value would read as a blank in the table.
    assert_eq!(
        cond.inputs,
        [
            (
                "subject.attributes.kokuho".to_owned(),
                "(missing)".to_owned()
            ),
            ("subject.sex".to_owned(), "1".to_owned())
        ]
    );
}

#[test]
fn explain_says_an_occurrence_outside_the_rules_validity_is_never_due() {
    let rs = rules(&[&rule(
        "{ age_attained: 20 }",
        "[subject]",
        "notify: { days_before: 14 }\n",
    )
    .replace(
        "valid: { from: 2000-01-01 }",
        "valid: { from: 2020-04-01, to: 2030-03-31 }",
    )]);
    let pop = population(&[
        person("R1", "1990-05-01", "H1", "世帯主", ""),
        person("R2", "2015-05-01", "H2", "世帯主", ""),
    ]);
    let rid = RuleId::parse("test-rule").unwrap();
    // R1 reached 20 before the rule began, R2 reaches it after it ends: neither is ever due.
    for (who, occurrence) in [("R1", "2010-04-30"), ("R2", "2035-04-30")] {
        let ex = explain(
            &rs,
            &pop,
            &ResidentId::parse(who).unwrap(),
            &rid,
            d("2026-03-17"),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&ex.outcome).unwrap(),
            serde_json::json!({
                "result": "outside_validity",
                "occurrence": occurrence,
                "valid": { "from": "2020-04-01", "to": "2030-03-31" }
            })
        );
        assert_eq!(
            ex.outcome.to_string(),
            format!(
                "no match: outside the rule's validity (2020-04-01 to 2030-03-31): \
                 the occurrence for this resident is {occurrence}"
            )
        );
        for step in &ex.steps {
            assert!(!step.detail.contains("due"), "{who}: {step:?}");
        }
    }
}

const BRUTE_RULES: [&str; 5] = [
    "{ age_attained: 20 }",
    "{ birthday: 75 }",
    "{ age_months: 2 }",
    "{ fiscal_year_age: { age: 6, on: \"10-01\" } }",
    "{ annual: { on: \"04-01\" } }",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// The trigger index finds exactly the residents that a scan of everybody finds.
    #[test]
    fn the_trigger_index_matches_a_full_scan(
        births in prop::collection::vec((1940i32..2026, 1u32..=12, 1u32..=31), 1..40),
        day_offset in 0i64..800,
        which in 0usize..5,
        before in 0u32..20,
    ) {
        let rs = rules(&[&rule(BRUTE_RULES[which], "[subject]", &format!("notify: {{ days_before: {before} }}\n"))]);
        let lines: Vec<String> = births
            .iter()
            .enumerate()
            .filter_map(|(i, (y, m, dd))| NaiveDate::from_ymd_opt(*y, *m, *dd).map(|b| person(&format!("R{i}"), &b.to_string(), &format!("H{i}"), "世帯主", "")))
            .collect();
        prop_assume!(!lines.is_empty());
        let pop = population(&lines);
        let day = oshirase_engine::calendar::add_days(d("2025-01-01"), day_offset);
        let indexed: Vec<String> = evaluate_day(&rs, &pop, day).decisions.iter().map(|x| x.subject.to_string()).collect();
        let rid = RuleId::parse("test-rule").unwrap();
        let mut scanned: Vec<String> = pop
            .residents()
            .iter()
            .filter(|r| explain(&rs, &pop, &r.id, &rid, day).unwrap().decision.is_some())
            .map(|r| r.id.to_string())
            .collect();
        scanned.sort_by_key(|s| s[1..].parse::<usize>().unwrap());
        let mut indexed_sorted = indexed.clone();
        indexed_sorted.sort_by_key(|s| s[1..].parse::<usize>().unwrap());
        prop_assert_eq!(indexed_sorted, scanned);
    }
}

#[test]
fn evaluation_is_deterministic() {
    let rs = rules(&[&rule("{ annual: { on: \"04-01\" } }", "[subject]", "")]);
    let lines: Vec<String> = (0..300)
        .map(|i| {
            person(
                &format!("R{i}"),
                &format!("{}-0{}-1{}", 1950 + i % 60, 1 + i % 9, i % 10),
                &format!("H{i}"),
                "世帯主",
                "",
            )
        })
        .collect();
    let pop = population(&lines);
    let a = evaluate_day(&rs, &pop, d("2026-04-01"));
    let b = evaluate_day(&rs, &pop, d("2026-04-01"));
    assert_eq!(a.decisions.len(), 300);
    assert_eq!(a.decisions, b.decisions);
}

#[test]
fn events_that_reach_the_register_late_are_notified_the_day_they_arrive() {
    let rs = rules(&[&rule(
        "{ event: birth }",
        "[guardians]",
        "deadline: { days: 15, counting: next_day }\n",
    )]);
    let born =
        r#"{"kind":"resident","since":"2025-06-20","reason":"birth","recorded":"2025-06-25"}"#;
    let pop = population(&[
        person("P1", "1990-01-01", "H1", "世帯主", ""),
        person(
            "C1",
            "2025-06-20",
            "H1",
            "子",
            r#","guardians":[{"id":"P1"}]"#,
        )
        .replace(r#"{"kind":"resident"}"#, born),
    ]);
    // Not on the register yet on the day of birth; notified the day the 出生届 arrives.
    assert!(check(&rs, &pop, "2025-06-20").is_empty());
    assert_eq!(check(&rs, &pop, "2025-06-25"), ["C1->P1:Guardian"]);
    assert!(check(&rs, &pop, "2025-06-26").is_empty());
    let r = evaluate_day(&rs, &pop, d("2025-06-25"));
    // The occurrence and the deadline still count from the birth (15日特例); the 15th day
    // is a Saturday, so the deadline is the next open day.
    assert_eq!(r.decisions[0].occurrence, d("2025-06-20"));
    assert_eq!(r.decisions[0].deadline, Some(d("2025-07-07")));
    assert_eq!(r.decisions[0].deadline_moved_from, Some(d("2025-07-05")));
    assert_eq!(
        r.decisions[0].key.as_str(),
        "test-rule/C1/birth-C1-2025-06-20"
    );

    // A notice due after the record arrived goes out on its own day.
    let later = rules(&[&rule(
        "{ event: birth }",
        "[guardians]",
        "notify: { days_after: 10 }\n",
    )]);
    assert!(check(&later, &pop, "2025-06-25").is_empty());
    assert_eq!(check(&later, &pop, "2025-06-30"), ["C1->P1:Guardian"]);
}

/// The catalogue's daily work stays cheap: the April 1 rules read `subject` through plain
/// paths or through scripts whose results are reused across residents of the same birth date.
#[test]
fn april_rules_scripts_are_reusable_or_plain_paths() {
    let rs = oshirase_engine::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"))
        .unwrap_or_else(|e| panic!("{e}"));
    for id in ["taijou-houshin", "taijou-houshin-keika", "tokutei-kenshin"] {
        let rule = rs
            .get(&RuleId::parse(id).unwrap())
            .expect("in the catalogue");
        let scripts = rule
            .conditions
            .iter()
            .filter_map(|(_, c)| match c {
                oshirase_engine::rule::Condition::Script(s) => Some(s),
                _ => None,
            })
            .chain(rule.prefill.iter().map(|(_, s)| s));
        for s in scripts {
            assert!(s.pure, "{id}: {}", s.source);
            let plain = s.source.starts_with("subject.") && !s.source.contains([' ', '(']);
            assert!(s.reusable || plain, "{id}: {}", s.source);
        }
    }
}

#[test]
fn proxies_stand_in_for_every_route_whatever_the_order() {
    let pop = population(&[
        person("D1", "1940-01-01", "H1", "世帯主", "").replace(r#"{"kind":"resident"}"#, DECEASED),
        person(
            "S1",
            "1970-01-01",
            "H1",
            "子",
            r#","proxies":[{"id":"X1","scopes":["all"]}]"#,
        ),
        person("X1", "1960-01-01", "H2", "世帯主", ""),
    ]);
    for audience in ["[survivors, proxies]", "[proxies, survivors]"] {
        let rs = rules(&[&rule("{ event: death }", audience, "")]);
        assert_eq!(
            check(&rs, &pop, "2026-09-01"),
            ["D1->S1:Survivor,X1:Proxy"],
            "{audience}"
        );
    }
}
