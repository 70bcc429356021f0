//! Bad rule files: every problem is reported at once, with its place, and nothing loads.

use std::path::Path;

use oshirase_engine::catalogue::compile_sources;

const GOOD: &str = r#"id: good-rule
version: 1
title: { ja: 良いルール }
category: pension
legal_basis: 国民年金法
valid: { from: 2019-10-01 }
trigger: { age_attained: 20 }
audience: [subject]
prefill:
  name: subject.name.kanji
message:
  ja: "{{ name }} 様"
channels: [portal]
"#;

fn errors(files: &[(&str, &str)], params: &[(&str, &str)]) -> Vec<String> {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    match compile_sources(Path::new("rules"), &sources, &params) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn with(old: &str, new: &str) -> String {
    assert!(GOOD.contains(old), "{old}");
    GOOD.replace(old, new)
        .replace("id: good-rule", "id: bad-rule")
}

#[test]
fn a_good_rule_loads() {
    assert_eq!(
        errors(&[("rules/good-rule.yaml", GOOD)], &[]),
        Vec::<String>::new()
    );
}

#[test]
fn every_error_in_every_file_is_reported_at_once() {
    let unknown_field = with("channels: [portal]", "channels: [portal]\nchanels: [email]");
    let bad_rhai = with("name: subject.name.kanji", "name: subject.name.kanji +");
    let bad_template = with("{{ name }} 様", "{{ nmae }} 様");
    let bad_recommend = with(
        "channels: [portal]",
        "channels: [portal]\nrecommend: [no-such-rule]",
    );
    let malformed = "id: [unclosed\n";
    let errs = errors(
        &[
            ("rules/bad-rule.yaml", &unknown_field),
            (
                "rules/bad-rhai.yaml",
                &bad_rhai.replace("id: bad-rule", "id: bad-rhai"),
            ),
            (
                "rules/bad-template.yaml",
                &bad_template.replace("id: bad-rule", "id: bad-template"),
            ),
            (
                "rules/bad-recommend.yaml",
                &bad_recommend.replace("id: bad-rule", "id: bad-recommend"),
            ),
            ("rules/malformed.yaml", malformed),
            ("rules/good-rule.yaml", GOOD),
        ],
        &[],
    );
    assert_eq!(errs.len(), 5, "{errs:#?}");
    let find = |file: &str| {
        errs.iter()
            .find(|e| e.starts_with(file))
            .unwrap_or_else(|| panic!("{file}: {errs:#?}"))
    };
    assert!(find("rules/bad-rule.yaml:14:").contains("unknown field `chanels`"));
    let rhai = find("rules/bad-rhai.yaml:10:");
    assert!(
        rhai.contains("field `prefill.name`") && rhai.contains("Rhai does not compile"),
        "{rhai}"
    );
    let tmpl = find("rules/bad-template.yaml:12:");
    assert!(
        tmpl.contains("template variable \"nmae\"") && tmpl.contains("available: "),
        "{tmpl}"
    );
    assert!(find("rules/bad-recommend.yaml:14:").contains("no rule with id \"no-such-rule\""));
    assert!(
        find("rules/malformed.yaml:").contains("field `id`")
            || find("rules/malformed.yaml:").contains("malformed")
    );
}

#[test]
fn scripts_that_loop_forever_or_return_the_wrong_type_are_load_errors() {
    let looping = with(
        "audience: [subject]",
        "conditions:\n  - script: 'let n = 0; loop { n += 1; }'\naudience: [subject]",
    );
    let wrong_type = with(
        "audience: [subject]",
        "conditions:\n  - script: 'subject.sex'\naudience: [subject]",
    );
    let errs = errors(
        &[
            ("rules/bad-rule.yaml", &looping),
            (
                "rules/wrong-type.yaml",
                &wrong_type.replace("id: bad-rule", "id: wrong-type"),
            ),
        ],
        &[],
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules/bad-rule.yaml:9:")
            && errs[0].contains("conditions[0].script")
            && errs[0].contains("operations"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("rules/wrong-type.yaml:9:")
            && errs[1].contains("must return true or false, this returns integer"),
        "{}",
        errs[1]
    );
}

#[test]
fn semantic_mistakes_name_their_field() {
    let cases = [
        (
            with("audience: [subject]", "audience: []"),
            "field `audience`: name at least one audience",
        ),
        (
            with("trigger: { age_attained: 20 }", "trigger: { event: death }"),
            "a death notice cannot go to the deceased",
        ),
        (
            with(
                "trigger: { age_attained: 20 }",
                "trigger: { age_atained: 20 }",
            ),
            "unknown variant `age_atained`",
        ),
        (
            with("valid: { from: 2019-10-01 }", "valid: { from: 2019-02-30 }"),
            "field `valid.from`",
        ),
        (
            with(
                "audience: [subject]",
                "audience: [subject]\ndeadline: { days: 14, before_age: 20 }",
            ),
            "needs exactly one kind of deadline",
        ),
        (
            with(
                "audience: [subject]",
                "audience: [subject]\nnotify: { days_before: 1, days_after: 1 }",
            ),
            "exactly one of days_before or days_after",
        ),
        (
            with("name: subject.name.kanji", "name: params.no_such_amount"),
            "no parameter \"no_such_amount\"",
        ),
        (
            with("name: subject.name.kanji", "name: subjct.name"),
            "Undefined variable: subjct",
        ),
        (
            with("category: pension", "category: pensions"),
            "unknown variant `pensions`",
        ),
        (
            with(
                "trigger: { age_attained: 20 }",
                "trigger: { fiscal_year_age: { age: 6, on: \"02-30\" } }",
            ),
            "not a month-day",
        ),
    ];
    for (text, want) in cases {
        let errs = errors(&[("rules/bad-rule.yaml", &text)], &[]);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "want {want:?} in {errs:#?}"
        );
        assert!(
            errs.iter().all(|e| e.starts_with("rules/bad-rule.yaml:")),
            "{errs:#?}"
        );
    }
    let wrong_file_name = errors(&[("rules/other.yaml", GOOD)], &[]);
    assert!(
        wrong_file_name[0].contains("does not match the file name"),
        "{wrong_file_name:?}"
    );
}

#[test]
fn parameters_are_checked_too() {
    let uses = with("name: subject.name.kanji", "name: params.amount");
    let dup = "amount:\n  description: x\n  values:\n    - { from: 2020-04-01, value: 1 }\n";
    let errs = errors(
        &[("rules/bad-rule.yaml", &uses)],
        &[
            ("rules/parameters/a.yaml", dup),
            ("rules/parameters/b.yaml", dup),
        ],
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules/parameters/b.yaml:1:")
            && errs[0].contains("already defined in rules/parameters/a.yaml")
    );
    let empty = errors(
        &[],
        &[(
            "rules/parameters/a.yaml",
            "amount:\n  description: x\n  values: []\n",
        )],
    );
    assert!(empty[0].contains("needs at least one value"), "{empty:?}");
}

#[test]
fn the_municipal_calendar_is_checked_with_its_place() {
    let calendar = "\
deadline_shift:
  description: x
  values:
    - { from: 2000-01-01, value: closed_days }
    - { from: 2025-04-01, value: sometimes }
municipal_closed_days:
  description: y
  values:
    - { from: 2000-01-01, value: [\"06-23\", \"2026-05-01\", \"13-01\"] }
    - { from: 2026-04-01, value: \"06-23\" }
";
    let errs = errors(
        &[("rules/good-rule.yaml", GOOD)],
        &[("rules/parameters/calendar.yaml", calendar)],
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules/parameters/calendar.yaml:")
            && errs[0].contains("`deadline_shift.values[1].value`")
            && errs[0].contains("\"sometimes\" is not a shift"),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("\"13-01\" is not a day")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("`municipal_closed_days.values[1].value`")
                && e.contains("is not a list of days")),
        "{errs:#?}"
    );
}

#[test]
fn every_error_in_one_file_is_reported_and_its_id_still_counts() {
    // Three mistakes in one file: an unknown field, a bad trigger, a bad channel.
    let three = with("channels: [portal]", "channels: [fax]\nchanels: [email]").replace(
        "trigger: { age_attained: 20 }",
        "trigger: { age_attaned: 20 }",
    );
    // Another rule recommends the broken one: that is not a fourth error.
    let recommends = GOOD.replace("id: good-rule", "id: recommends").replace(
        "channels: [portal]",
        "channels: [portal]\nrecommend: [bad-rule]",
    );
    let errs = errors(
        &[
            ("rules/bad-rule.yaml", &three),
            ("rules/recommends.yaml", &recommends),
        ],
        &[],
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    for (field, line) in [("trigger", 7), ("channels", 13), ("chanels", 14)] {
        assert!(
            errs.iter().any(
                |e| e.starts_with(&format!("rules/bad-rule.yaml:{line}:")) && e.contains(field)
            ),
            "{field}: {errs:#?}"
        );
    }
}

#[test]
fn a_date_style_that_is_not_one_is_a_load_error() {
    let calendar = "\
date_style:
  description: x
  values:
    - { from: 2000-01-01, value: seireki }
    - { from: 2026-04-01, value: showa }
";
    let errs = errors(
        &[("rules/good-rule.yaml", GOOD)],
        &[("rules/parameters/calendar.yaml", calendar)],
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].contains("`date_style.values[1].value`")
            && errs[0].contains("\"showa\" is not a date style"),
        "{errs:#?}"
    );
}

/// A case whose Japanese message writes a date or an amount as a machine does fails, and
/// the same message through the filters passes.
#[test]
fn rule_cases_refuse_machine_written_dates_and_amounts() {
    use oshirase_engine::ruletest;
    let rule = |message: &str| {
        GOOD.replace(
            "trigger: { age_attained: 20 }",
            "trigger: { age_attained: 20 }\ndeadline: { days: 14 }",
        )
        .replace(
            "  name: subject.name.kanji\n",
            "  name: subject.name.kanji\n  amount: 16980\n",
        )
        .replace("  ja: \"{{ name }} 様\"", &format!("  ja: \"{message}\""))
    };
    let case = "\
rules: [good-rule]
cases:
  - name: 20歳
    date: 2026-04-10
    residents:
      - { id: R1, name: { kanji: 山田 花子, kana: ヤマダ ハナコ }, birth_date: 2006-04-11, sex: 2,
          status: { kind: resident }, address: { local_gov_code: \"133621\", text: x },
          household: { id: H1, relationship: 世帯主 } }
    expect:
      - { rule: good-rule, subject: R1 }
";
    let run = |message: &str| {
        let rules = compile_sources(
            Path::new("rules"),
            &[("rules/good-rule.yaml".to_owned(), rule(message))],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let report = ruletest::run_sources(
            &rules,
            &[("rules/tests/good-rule.yaml".into(), case.into())],
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        report.cases[0].differences.clone()
    };
    let iso = run("期限 {{ deadline }}");
    assert!(
        iso.len() == 1 && iso[0].contains("writes \"2026-04-24\" as a machine does"),
        "{iso:?}"
    );
    let amount = run("月額 {{ amount }} 円");
    assert!(
        amount.len() == 1 && amount[0].contains("16980 円"),
        "{amount:?}"
    );
    assert_eq!(
        run("期限 {{ deadline | date }}、月額{{ amount | yen }}"),
        Vec::<String>::new()
    );
}

/// A prefill field written out is checked with its place; a rule that loads can still
/// leave residents reading raw names, which `presentation_gaps` (and `rules check`) list.
#[test]
fn form_fields_departments_and_application_are_checked() {
    let departments = "\
departments:
  description: x
  values:
    - from: 2000-01-01
      value:
        nenkin: { name: 住民課 保険年金係, phone: 04992-0-0102 }
";
    let written = GOOD.replace(
        "  name: subject.name.kanji\n",
        "  name:\n    label: 氏名\n    kind: person\n    value: subject.name.kanji\n  sex:\n    label: 性別\n    kind: choice\n    value: '\"男\"'\n  kana:\n    label: 氏名（フリガナ）\n    kind: katakana\n    value: subject.name.kana\n",
    );
    let errs = errors(
        &[("rules/good-rule.yaml", &written)],
        &[("rules/parameters/departments.yaml", departments)],
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs.iter()
            .any(|e| e.contains("`prefill.sex.choices`") && e.contains("needs its choices")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("prefill.kana") && e.contains("katakana")),
        "{errs:#?}"
    );

    let unknown = GOOD.replace(
        "channels: [portal]",
        "channels: [portal]\ndepartment: kaigo",
    );
    let errs = errors(
        &[("rules/good-rule.yaml", &unknown)],
        &[("rules/parameters/departments.yaml", departments)],
    );
    assert!(
        errs.len() == 1
            && errs[0].contains("`department`")
            && errs[0].contains("no department \"kaigo\""),
        "{errs:#?}"
    );

    // GOOD loads, but a resident would see `name` and not know whether to apply.
    let rules = compile_sources(
        Path::new("rules"),
        &[("rules/good-rule.yaml".to_owned(), GOOD.to_owned())],
        &[(
            "rules/parameters/departments.yaml".to_owned(),
            departments.to_owned(),
        )],
    )
    .unwrap();
    let gaps: Vec<String> = rules
        .presentation_gaps
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(gaps.len(), 3, "{gaps:#?}");
    assert!(gaps
        .iter()
        .any(|g| g.contains("`prefill.name`") && g.contains("no Japanese label")));
    assert!(gaps.iter().any(|g| g.contains("`application`")));
    assert!(gaps.iter().any(|g| g.contains("`department`")));

    let complete = GOOD
        .replace(
            "  name: subject.name.kanji\n",
            "  name: { value: subject.name.kanji, label: 氏名, kind: person }\n  due:\n    label: 期限\n    kind: date\n    computed: true\n    value: occurrence\n",
        )
        .replace("channels: [portal]", "channels: [portal]\napplication: form\ndepartment: nenkin");
    let rules = compile_sources(
        Path::new("rules"),
        &[("rules/good-rule.yaml".to_owned(), complete.clone())],
        &[(
            "rules/parameters/departments.yaml".to_owned(),
            departments.to_owned(),
        )],
    )
    .unwrap();
    let gaps: Vec<String> = rules
        .presentation_gaps
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        gaps.len() == 1 && gaps[0].contains("`prefill.due.help`"),
        "a computed field says how: {gaps:#?}"
    );
    let rule = &rules.rules()[0];
    assert_eq!(rule.form["name"].label.as_ref().unwrap().ja, "氏名");
    assert_eq!(
        rule.application,
        Some(oshirase_engine::rule::Application::Form)
    );
    assert_eq!(
        rules
            .contact("nenkin", "2026-04-01".parse().unwrap())
            .unwrap()
            .phone
            .as_deref(),
        Some("04992-0-0102")
    );
}
