//! The `oshirase` binary as an operator or a rules author uses it: exit codes, messages with
//! their place, and the fixture town evaluated end to end.

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
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const RULE: &str = r#"id: ok-rule
version: 1
title: { ja: テスト }
category: pension
legal_basis: test
valid: { from: 2000-01-01 }
trigger: { age_attained: 20 }
audience: [subject]
prefill:
  name: subject.name.kanji
message:
  ja: "{{ name }}"
channels: [portal]
"#;

/// RULE as `rules check` accepts it: its field labelled, whether residents apply and whom
/// they ask said, with the department defined.
fn write_complete(dir: &Path, name: &str) {
    write(
        dir,
        name,
        &RULE
            .replace(
                "  name: subject.name.kanji",
                "  name: { value: subject.name.kanji, label: 氏名, kind: person }",
            )
            .replace(
                "channels: [portal]",
                "channels: [portal]\napplication: form\ndepartment: nenkin",
            ),
    );
    write(
        dir,
        "parameters/departments.yaml",
        "departments:\n  description: x\n  values:\n    - { from: 2000-01-01, value: { nenkin: { name: 保険年金係 } } }\n",
    );
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    std::fs::write(dir.join(name), body).unwrap();
}

#[test]
fn rules_check_lists_every_error_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    write_complete(tmp.path(), "ok-rule.yaml");
    write(
        tmp.path(),
        "bad-one.yaml",
        &RULE
            .replace("ok-rule", "bad-one")
            .replace("channels: [portal]", "channels: [fax]"),
    );
    write(
        tmp.path(),
        "bad-two.yaml",
        &RULE
            .replace("ok-rule", "bad-two")
            .replace("{{ name }}", "{{ nmae }}"),
    );
    let out = oshirase(&["rules", "check", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad-one.yaml:13:") && err.contains("unknown variant `fax`"),
        "{err}"
    );
    assert!(
        err.contains("bad-two.yaml:12:") && err.contains("\"nmae\""),
        "{err}"
    );
    assert!(err.contains("2 error(s); no rule was loaded"), "{err}");

    std::fs::remove_file(tmp.path().join("bad-one.yaml")).unwrap();
    std::fs::remove_file(tmp.path().join("bad-two.yaml")).unwrap();
    let out = oshirase(&["rules", "check", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 rules"));

    // A rule that loads but would show residents a raw field name, and not say whether to
    // apply or whom to ask, is refused here (and only warned about elsewhere).
    write(tmp.path(), "ok-rule.yaml", RULE);
    let out = oshirase(&["rules", "check", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for part in [
        "ok-rule.yaml:10:",
        "field \"name\" has no Japanese label",
        "`application`",
        "`department`",
        "3 problem(s)",
    ] {
        assert!(err.contains(part), "{part} in {err}");
    }
}

#[test]
fn the_layers_of_a_deployment_are_checked_tested_and_explained() {
    let out = oshirase(&["rules", "check", "--layers", "fixtures/layers"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("prefecture 東京都 (130001): 35 rules (0 of its own)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("municipality 東京都利島村 (133621): 36 rules (1 of its own), 15 parameters (2 set here)"),
        "{stdout}"
    );

    let out = oshirase(&["rules", "test", "--layers", "fixtures/layers"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("municipality 東京都利島村 (133621):\n")
            && stdout.contains("rules: 5 passed, 0 failed"),
        "{stdout}"
    );

    // The snapshot's header names the municipality: its catalogue decides, and says where
    // each amount came from.
    let out = oshirase(&[
        "explain",
        "--layers",
        "fixtures/layers",
        "--resident",
        "R00114",
        "--rule",
        "sousaihi",
        "--date",
        "2026-08-18",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "(national → prefecture 東京都 (130001) → municipality 東京都利島村 (133621))"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("sousaihi_amount_kokuho = 70000 (in force from 2020-04-01; municipality 東京都利島村 (133621) layer"), "{stdout}");

    // A broken layer: every catalogue it spoils fails, with the file and line.
    let tmp = tempfile::tempdir().unwrap();
    let village = tmp.path().join("municipalities/133621/parameters");
    std::fs::create_dir_all(&village).unwrap();
    std::fs::write(
        village.join("village.yaml"),
        "sousaihi_amount_kokuhoo:\n  description: 葬祭費\n  values:\n    - { from: 2020-04-01, value: 70000 }\n",
    )
    .unwrap();
    let layers = tmp.path().to_str().unwrap();
    let out = oshirase(&["rules", "check", "--layers", layers]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("municipality 東京都利島村 (133621):"), "{err}");
    assert!(
        err.contains("municipalities/133621/parameters/village.yaml:1:"),
        "{err}"
    );
    assert!(
        err.contains("did you mean \"sousaihi_amount_kokuho\""),
        "{err}"
    );

    // Layers without a municipality to apply them to is a usage mistake, said as such.
    let out = oshirase(&[
        "run",
        "--layers",
        "fixtures/layers",
        "--until",
        "2026-01-01",
        "--db",
        ":memory:",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--layers: name the municipality"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_service_decides_with_the_municipality_s_own_catalogue() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("o.sqlite");
    let db = db.to_str().unwrap();
    let out = oshirase(&["ingest", "fixtures/town.jsonl", "--db", db]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let day = "2026-10-15";
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--db", db, "--start", day, "--until", day];
        args.extend_from_slice(extra);
        oshirase(&args)
    };
    // Another municipality's configuration is refused before anything runs.
    let config = tmp.path().join("other.yaml");
    std::fs::write(
        &config,
        "console:\n  listen: 127.0.0.1:0\n  public_url: https://office.example.lg.jp\n  local_gov_code: \"133639\"\n  jwt: {issuer: sso, algorithm: HS256, secret_env: OSHIRASE_TEST_UNSET}\n",
    )
    .unwrap();
    let out = run(&[
        "--layers",
        "fixtures/layers",
        "--municipality",
        "133621",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("console.local_gov_code is 133639, but --municipality is 133621"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--layers", "fixtures/layers", "--municipality", "133621"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let decisions = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = oshirase_store::Store::open(db).await.unwrap();
        store.decisions().await.unwrap()
    });
    // R00380 turns 88 on 2026-11-14: the village's own 敬老祝金, 30 days before.
    let keirou: Vec<_> = decisions
        .iter()
        .filter(|d| d.rule == "keirou-iwaikin-88")
        .collect();
    assert_eq!(keirou.len(), 1, "{decisions:?}");
    assert!(
        keirou[0].key.starts_with("keirou-iwaikin-88/R00380/"),
        "{:?}",
        keirou[0]
    );
}

#[test]
fn rules_test_prints_the_difference_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "ok-rule.yaml", RULE);
    let case = |expected_occurrence: &str| {
        format!(
            r#"rules: [ok-rule]
defaults:
  address: {{ local_gov_code: "133621", text: 利島村 }}
  status: {{ kind: resident }}
cases:
  - name: attains 20
    date: 2026-03-31
    residents:
      - {{ id: R1, name: {{ kanji: 山田 太郎, kana: ヤマダ タロウ }}, birth_date: 2006-04-01, sex: 1, household: {{ id: H1, relationship: 世帯主 }} }}
    expect:
      - {{ rule: ok-rule, subject: R1, occurrence: {expected_occurrence}, prefill: {{ name: 山田 太郎 }} }}
"#
        )
    };
    write(tmp.path(), "tests/ok-rule.yaml", &case("2026-03-31"));
    let out = oshirase(&["rules", "test", tmp.path().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).ends_with("rules: 1 passed, 0 failed\n"));

    write(tmp.path(), "tests/ok-rule.yaml", &case("2026-04-01"));
    let out = oshirase(&["rules", "test", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAIL") && stdout.contains("expected a decision of ok-rule for R1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unexpected decision ok-rule/R1/2026-03-31"),
        "{stdout}"
    );
}

#[test]
fn a_bad_snapshot_is_refused_with_its_lines_and_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("s.jsonl");
    std::fs::write(
        &snap,
        concat!(
            r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#,
            "\n",
            r#"{"id":"R1","name":{"kanji":"山田 太郎","kana":"ヤマダ タロウ"},"birth_date":"2023-02-29","sex":1,"status":{"kind":"resident"},"address":{"local_gov_code":"133621","text":"x"},"household":{"id":"H1","relationship":"世帯主"}}"#,
            "\n",
            r#"{"id":"R2","name":{"kanji":"山田 花子","kana":"ヤマダ ハナコ"},"birth_date":"2020-02-02","sex":2,"status":{"kind":"resident"},"address":{"local_gov_code":"133622","text":"x"},"household":{"id":"H2","relationship":"孫"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = oshirase(&[
        "evaluate",
        "--snapshot",
        snap.to_str().unwrap(),
        "--date",
        "2026-04-01",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("s.jsonl:2: field `birth_date`"), "{err}");
    assert!(
        err.contains("s.jsonl:3: field `address.local_gov_code`: check digit"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_bad_snapshot_ingest_names_every_line_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("s.jsonl");
    let db = tmp.path().join("o.sqlite");
    // Line 2 is bad alone (no such date); line 3 only together with the rest (its household
    // has no 世帯主); line 4 is fine.
    std::fs::write(
        &snap,
        concat!(
            r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#,
            "\n",
            r#"{"id":"R1","name":{"kanji":"山田 太郎","kana":"ヤマダ タロウ"},"birth_date":"2023-02-29","sex":1,"status":{"kind":"resident"},"address":{"local_gov_code":"133621","text":"x"},"household":{"id":"H1","relationship":"世帯主"}}"#,
            "\n",
            r#"{"id":"R2","name":{"kanji":"山田 花子","kana":"ヤマダ ハナコ"},"birth_date":"2020-02-02","sex":2,"status":{"kind":"resident"},"address":{"local_gov_code":"133621","text":"x"},"household":{"id":"H2","relationship":"子"}}"#,
            "\n",
            r#"{"id":"R3","name":{"kanji":"川田 一郎","kana":"カワダ イチロウ"},"birth_date":"1980-05-05","sex":1,"status":{"kind":"resident"},"address":{"local_gov_code":"133621","text":"x"},"household":{"id":"H3","relationship":"世帯主"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = oshirase(&[
        "ingest",
        snap.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("s.jsonl:2: field `birth_date`"), "{err}");
    assert!(
        err.contains("s.jsonl:3: field `household.relationship`: household \"H2\" has no 世帯主"),
        "{err}"
    );
    assert!(!err.contains("s.jsonl:4"), "{err}");
    // Nothing of it was stored, not even the good record.
    let counts = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = oshirase_store::Store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        store.counts().await.unwrap()
    });
    assert_eq!(counts.get("residents"), Some(&0), "{counts:?}");
    assert_eq!(counts.get("ingest_batches"), Some(&0), "{counts:?}");
}

#[test]
fn an_ingest_with_invalid_utf8_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let feed = tmp.path().join("f.jsonl");
    let mut bytes = concat!(
        r#"{"format":"oshirase-changes","schema_version":1}"#,
        "\n",
        r#"{"seq":1,"kind":"death","date":"2026-10-05","resident":"R1"}"#,
        "\n",
    )
    .as_bytes()
    .to_vec();
    bytes.extend_from_slice(
        b"{\"seq\":2,\"kind\":\"death\",\"date\":\"2026-10-05\",\"resident\":\"R\xe9\"}\n",
    );
    std::fs::write(&feed, bytes).unwrap();
    let db = tmp.path().join("o.sqlite");
    let out = oshirase(&[
        "ingest",
        feed.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("f.jsonl:3: "), "{err}");
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn a_huge_bad_name_is_not_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("s.jsonl");
    let name = "山田".repeat(5_000_000);
    std::fs::write(
        &snap,
        format!(
            "{}\n{}\n",
            r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#,
            format_args!(r#"{{"id":"R1","name":{{"kanji":"山田 太郎","kana":"{name}"}},"birth_date":"1980-05-05","sex":1,"status":{{"kind":"resident"}},"address":{{"local_gov_code":"133621","text":"x"}},"household":{{"id":"H1","relationship":"世帯主"}}}}"#),
        ),
    )
    .unwrap();
    let db = tmp.path().join("o.sqlite");
    let out = oshirase(&[
        "ingest",
        snap.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.len() < 1000, "{} bytes on stderr", err.len());
    assert!(err.contains("s.jsonl:2: "), "{err}");
    assert!(err.contains("name.kana"), "{err}");
    assert!(err.contains("resident R1"), "{err}");
    assert!(!err.contains("山田山田"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = oshirase(&[
        "evaluate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--date",
        "2026-02-30",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--date"));
}

#[test]
fn the_fixture_town_evaluates_over_half_a_year() {
    let out = oshirase(&[
        "evaluate",
        "--snapshot",
        "fixtures/town.jsonl",
        "--date",
        "2026-04-01",
        "--to",
        "2026-09-30",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let decisions = v["decisions"].as_array().unwrap();
    assert!(decisions.len() > 50, "only {} decisions", decisions.len());
    let keys: std::collections::HashSet<&str> = decisions
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), decisions.len(), "decision keys are unique");
    let rules: std::collections::HashSet<&str> = decisions
        .iter()
        .map(|d| d["rule"].as_str().unwrap())
        .collect();
    for r in [
        "jidou-teate-nintei",
        "setainushi-henko",
        "tokutei-kenshin",
        "yobou-5shu-kongou",
        "kokumin-nenkin-shutoku",
    ] {
        assert!(
            rules.contains(r),
            "no {r} decision in the fixture town; got {rules:?}"
        );
    }
    // Somebody in the town died alone: that notice goes to staff, not to nobody.
    assert!(
        decisions.iter().any(|d| d["staff_review"]
            .as_str()
            .is_some_and(|s| s.contains("lived alone"))),
        "no staff review for a death in a single-person household"
    );
    // Nobody deceased receives anything.
    let snapshot = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    let deceased: std::collections::HashSet<String> = snapshot
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["status"]["kind"] == "deceased")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    for d in decisions {
        for r in d["recipients"].as_array().unwrap() {
            assert!(
                !deceased.contains(r["id"].as_str().unwrap()),
                "{} went to a deceased person",
                d["key"]
            );
        }
    }
}

#[test]
fn explain_shows_the_trace() {
    // Find a resident turning 20 in the fixture town and explain the pension rule for them.
    let snapshot = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    let r = snapshot
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["birth_date"] == "2006-04-01")
        .expect("the fixture town has someone born 2006-04-01");
    let id = r["id"].as_str().unwrap();
    let out = oshirase(&[
        "explain",
        "--snapshot",
        "fixtures/town.jsonl",
        "--resident",
        id,
        "--rule",
        "kokumin-nenkin-shutoku",
        "--date",
        "2026-03-17",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("rule kokumin-nenkin-shutoku v1"),
        "{stdout}"
    );
    assert!(stdout.contains("occurrence 2026-03-31"), "{stdout}");
    assert!(stdout.contains("20歳に達する日"), "{stdout}");
    assert!(
        stdout.contains("属性 employees_pension が false または無し"),
        "{stdout}"
    );
    assert!(stdout.contains("=> "), "{stdout}");
    assert_eq!(debug_text(&stdout), Vec::<String>::new(), "{stdout}");
}

/// Rust `Debug` text: a type opening a tuple or a struct (`FiscalYearAge(`, `Some(`,
/// `Event {`) or a variant in brackets (`(Guardian)`). Policy staff read words instead.
fn debug_text(s: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b[A-Z][A-Za-z]*(\(| \{)|\([A-Z][a-z]+\)").unwrap();
    re.find_iter(s).map(|m| m.as_str().to_owned()).collect()
}

/// The fixture town's residents (the header line skipped).
fn town() -> Vec<serde_json::Value> {
    std::fs::read_to_string(root().join("fixtures/town.jsonl"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn explain(resident: &str, rule: &str, date: &str, format: &str) -> String {
    let out = oshirase(&[
        "explain",
        "--resident",
        resident,
        "--rule",
        rule,
        "--date",
        date,
        "--format",
        format,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn explain_words_a_fiscal_year_age_rule() {
    // A child who enters elementary school on 2027-04-01: 6 at the end of fiscal year 2026.
    let town = town();
    let child = town
        .iter()
        .find(|r| {
            let b = r["birth_date"].as_str().unwrap();
            ("2020-04-02"..="2021-04-01").contains(&b) && r["guardians"].is_array()
        })
        .expect("the fixture town has a child entering school in 2027");
    let id = child["id"].as_str().unwrap();
    let stdout = explain(id, "shugaku-jiken", "2026-10-01", "table");
    assert!(
        stdout.contains("年度末の年齢が6歳となる年度の10月1日"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 October of the fiscal year at whose end the resident is 6"),
        "{stdout}"
    );
    assert!(stdout.contains("（法定代理人 / guardian）"), "{stdout}");
    assert!(
        stdout.contains("=> match: decision shugaku-jiken/"),
        "{stdout}"
    );
    assert_eq!(debug_text(&stdout), Vec::<String>::new(), "{stdout}");

    // JSON keeps the rule as written and adds the words beside it.
    let json: serde_json::Value =
        serde_json::from_str(&explain(id, "shugaku-jiken", "2026-10-01", "json")).unwrap();
    assert_eq!(
        json["trigger"],
        serde_json::json!({ "fiscal_year_age": { "age": 6, "on": "10-01" } })
    );
    assert!(
        json["trigger_text"]
            .as_str()
            .unwrap()
            .starts_with("年度末の年齢が6歳"),
        "{json}"
    );
    assert_eq!(json["audience"], serde_json::json!(["guardians"]));
    assert!(
        json["audience_text"][0]
            .as_str()
            .unwrap()
            .starts_with("法定代理人"),
        "{json}"
    );
    assert_eq!(json["valid"]["from"], "2009-04-01");
    assert_eq!(json["outcome"]["result"], "match");
    assert!(json["outcome_text"]
        .as_str()
        .unwrap()
        .starts_with("match: "));
    assert_eq!(json["decision"]["recipients"][0]["role"], "guardian");
    for step in json["steps"].as_array().unwrap() {
        let detail = step["detail"].as_str().unwrap();
        assert_eq!(debug_text(detail), Vec::<String>::new(), "{detail}");
    }
}

#[test]
fn explain_words_an_event_rule() {
    // Someone in the fixture town who died insured by 国保 or 後期高齢者医療.
    let town = town();
    let dead = town
        .iter()
        .find(|r| {
            r["status"]["kind"] == "deceased"
                && (r["attributes"]["kokuho"] == true || r["attributes"]["kouki"] == true)
        })
        .expect("the fixture town has a death");
    let id = dead["id"].as_str().unwrap();
    let day = dead["status"]["date"].as_str().unwrap();
    let stdout = explain(id, "sousaihi", day, "table");
    assert!(stdout.contains("死亡の日 / the day of a death"), "{stdout}");
    assert!(stdout.contains("式が true を返す"), "{stdout}");
    assert!(stdout.contains("遺族"), "{stdout}");
    assert!(stdout.contains("=> match: decision sousaihi/"), "{stdout}");
    assert_eq!(debug_text(&stdout), Vec::<String>::new(), "{stdout}");

    // A living resident has no death: the trigger says so in words.
    let living = town
        .iter()
        .find(|r| r["status"]["kind"] == "resident")
        .unwrap();
    let stdout = explain(living["id"].as_str().unwrap(), "sousaihi", day, "table");
    assert!(stdout.contains("死亡の日 / the day of a death"), "{stdout}");
    assert!(
        stdout.contains("no match: the trigger never fires"),
        "{stdout}"
    );
    assert_eq!(debug_text(&stdout), Vec::<String>::new(), "{stdout}");
}

#[test]
fn explain_says_when_the_day_is_outside_the_rules_validity() {
    // Someone who turned 20 long before the rule's validity (from 2019-10-01) began: there
    // never was a notice for them, not one due in the 1970s.
    let town = town();
    let old = town
        .iter()
        .find(|r| r["status"]["kind"] == "resident" && r["birth_date"].as_str().unwrap() < "1960")
        .expect("the fixture town has older residents");
    let id = old["id"].as_str().unwrap();
    let stdout = explain(id, "kokumin-nenkin-shutoku", "2026-03-18", "table");
    let verdict = stdout.lines().last().unwrap();
    assert!(
        verdict.starts_with("=> no match: outside the rule's validity (from 2019-10-01)"),
        "{stdout}"
    );
    assert!(!stdout.contains("due"), "{stdout}");
    assert_eq!(debug_text(&stdout), Vec::<String>::new(), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&explain(id, "kokumin-nenkin-shutoku", "2026-03-18", "json")).unwrap();
    assert_eq!(json["outcome"]["result"], "outside_validity", "{json}");
    assert_eq!(json["outcome"]["valid"]["from"], "2019-10-01", "{json}");
    assert_eq!(json["trigger"], serde_json::json!({ "age_attained": 20 }));

    // A day past a rule that ends (valid 2025-04-01 to 2030-03-31).
    let stdout = explain(id, "taijou-houshin-keika", "2031-04-01", "table");
    assert!(
        stdout.contains("outside the rule's validity (2025-04-01 to 2030-03-31)"),
        "{stdout}"
    );
    assert!(stdout.contains("毎年4月1日"), "{stdout}");
    assert_eq!(debug_text(&stdout), Vec::<String>::new(), "{stdout}");
}

#[test]
fn the_demo_runs_on_a_fresh_database() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("demo.sqlite");
    let out = oshirase(&["demo", "--db", db.to_str().unwrap(), "--days", "60"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("replayed 60 days (2026-10-01 to 2026-11-29)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("jidou-teate-nintei"),
        "a birth in the change feed leads to a child allowance notice: {stdout}"
    );
    assert!(
        stdout.contains("staff"),
        "a death of someone living alone goes to staff: {stdout}"
    );
    // A death reaches the agencies that follow the person, not the others.
    let death = stdout
        .split("a death reaching the agencies:")
        .nth(1)
        .unwrap_or_else(|| panic!("no death reached two agencies: {stdout}"));
    assert_eq!(death.matches("  told: ").count(), 2, "{death}");
    assert!(death.contains("not told:  利島村教育委員会"), "{death}");
    // One application travels from the resident to the core system over its API and back.
    let trip = stdout
        .split("an application travelling resident")
        .nth(1)
        .unwrap_or_else(|| panic!("no application round trip: {stdout}"));
    let submitted =
        regex::Regex::new(r"申請 #1 \S.* \(R\d+\) submitted by R\d+ \(保護者\): 1 correction")
            .unwrap();
    assert!(submitted.is_match(trip), "{trip}");
    assert!(
        trip.contains("GET /office/v1/applications?after=0: 1 application"),
        "{trip}"
    );
    let corrected = regex::Regex::new(r#"corrected \w+: "[^"]+" → "[^"]+""#).unwrap();
    assert!(
        corrected.is_match(trip),
        "the correction, before → after: {trip}"
    );
    assert!(trip.contains("is now 受付 (received)"), "{trip}");
    assert!(
        trip.contains("is now 差戻し (returned): 続柄を確認"),
        "{trip}"
    );
    assert!(
        trip.contains("the resident sees: 差戻し — 続柄を確認できる書類を添付してください。"),
        "{trip}"
    );
    // The news of it is written for the applicant, who gets e-mail.
    assert!(trip.contains("e-mail to the applicant: "), "{trip}");
    // The operator sees the agencies' streams, every event delivered.
    let agencies = oshirase(&["agency", "list", "--db", db.to_str().unwrap()]);
    assert_eq!(
        agencies.status.code(),
        Some(0),
        "{}",
        text(&agencies.stderr)
    );
    let listed = text(&agencies.stdout);
    assert!(listed.contains("endpoint verified"), "{listed}");
    assert!(listed.contains("pending 0, dead letters 0"), "{listed}");
    // The operator sees the queued notices; retrying an id that is no dead letter says so.
    let list = oshirase(&[
        "outbox",
        "list",
        "--db",
        db.to_str().unwrap(),
        "--state",
        "pending",
    ]);
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout).contains("jidou-teate-nintei/"),
        "{}",
        text(&list.stdout)
    );
    let retry = oshirase(&[
        "outbox",
        "retry",
        "--db",
        db.to_str().unwrap(),
        "--id",
        "999999",
    ]);
    assert_eq!(retry.status.code(), Some(3));
    assert!(text(&retry.stdout).contains("0 row(s) queued again"));
    // Running it again starts from scratch and decides the same.
    let again = oshirase(&["demo", "--db", db.to_str().unwrap(), "--days", "60"]);
    let line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("replayed"))
            .map(|l| l.split(", in ").next().unwrap().to_owned())
    };
    assert_eq!(line(&stdout), line(&text(&again.stdout)));
}

#[test]
fn vapid_keygen_prints_a_usable_key_pair() {
    let out = oshirase(&["vapid", "keygen"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let private = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OSHIRASE_VAPID_PRIVATE_KEY="))
        .expect("the private key line");
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# public key (applicationServerKey): "))
        .expect("the public key line");
    let keys = oshirase_adapters::VapidKeys::from_private_key(private).unwrap();
    assert_eq!(keys.public_key, public);
    // A new pair every time.
    assert_ne!(text(&oshirase(&["vapid", "keygen"]).stdout), stdout);
}

#[test]
fn a_bad_service_configuration_names_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "oshirase.yaml",
        "delivery:\n  daily_cap: 2\n  quiet_hours: {webpush: 9pm}\n",
    );
    let db = dir.path().join("x.sqlite");
    let config = dir.path().join("oshirase.yaml");
    let out = oshirase(&[
        "run",
        "--db",
        db.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "a bad file is exit code 3");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("delivery.quiet_hours.webpush") && stderr.contains("HH:MM-HH:MM"),
        "{stderr}"
    );
    write(dir.path(), "oshirase.yaml", "delivery:\n  dailycap: 2\n");
    let stderr = text(
        &oshirase(&[
            "run",
            "--db",
            db.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .stderr,
    );
    assert!(
        stderr.contains("oshirase.yaml:2:") && stderr.contains("dailycap"),
        "{stderr}"
    );
}

#[test]
fn read_only_commands_refuse_a_database_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.sqlite");
    let out = oshirase(&["outbox", "list", "--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no database at"),
        "{}",
        text(&out.stderr)
    );
    assert!(!db.exists(), "outbox list created a database");
    let out = oshirase(&["outbox", "retry", "--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
    assert!(!db.exists(), "outbox retry created a database");
    let out = oshirase(&["outbox", "list", "--state", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs the binary with its standard output already closed by the reader, as
/// `oshirase … | head` does once head has what it wants.
fn with_closed_stdout(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oshirase"))
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    drop(child.stdout.take());
    child.wait_with_output().expect("the binary ends")
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("o.sqlite");
    let db = db.to_str().unwrap();
    let ingested = oshirase(&["ingest", "fixtures/town.jsonl", "--db", db]);
    assert!(ingested.status.success(), "{}", text(&ingested.stderr));
    for args in [
        vec!["rules", "test", "rules"],
        vec!["outbox", "list", "--db", db],
        vec![
            "evaluate",
            "--snapshot",
            "fixtures/town.jsonl",
            "--date",
            "2026-04-01",
        ],
    ] {
        let out = with_closed_stdout(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn the_binary_works_outside_the_checkout_with_what_is_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_oshirase"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("OSHIRASE_RULES")
            .output()
            .expect("the binary runs")
    };
    let check = run(&["rules", "check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("rules (built in): 35 rules"));
    let tests = run(&["rules", "test"]);
    assert!(tests.status.success(), "{}", text(&tests.stderr));
    assert!(text(&tests.stdout).contains(" passed, 0 failed"));
    let evaluate = run(&["evaluate", "--date", "2026-04-01", "--format", "json"]);
    assert!(evaluate.status.success(), "{}", text(&evaluate.stderr));
    let v: serde_json::Value = serde_json::from_slice(&evaluate.stdout).unwrap();
    assert!(!v["decisions"].as_array().unwrap().is_empty());
    let demo = run(&["demo", "--days", "3"]);
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    assert!(text(&demo.stdout).contains("the built-in fixture town"));
    assert!(dir.path().join("oshirase-demo.sqlite").exists());
    // A folder given still wins over what is built in.
    write_complete(&dir.path().join("mine"), "ok-rule.yaml");
    let mine = run(&["rules", "check", "mine"]);
    assert!(
        text(&mine.stdout).starts_with("mine: 1 rules"),
        "{}",
        text(&mine.stdout)
    );
}
