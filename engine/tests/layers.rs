//! The catalogue in layers: the national catalogue of this repository with the example
//! deployment's layers (fixtures/layers: 東京都 and 利島村), and bad layers, each refused with
//! its place.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use oshirase_engine::ids::{LocalGovCode, ResidentId, RuleId};
use oshirase_engine::layers::{Layer, LayerSources, Layers};
use oshirase_engine::{explain, parse_snapshot, ruletest, LoadErrors};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn national() -> Layers {
    let dir = repo().join("rules");
    Layers::national(
        &dir,
        LayerSources::read_national(&dir).expect("the national catalogue"),
    )
}

fn example() -> Layers {
    national()
        .read_local(&repo().join("fixtures/layers"))
        .expect("the example layers")
}

fn code(c: &str) -> LocalGovCode {
    LocalGovCode::parse(c).unwrap()
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

const TOSHIMA: &str = "133621";
/// Another municipality of 東京都, without a layer of its own.
const NIIJIMA: &str = "133639";

#[test]
fn a_municipality_gets_national_then_its_prefecture_then_its_own() {
    let layers = example();
    let toshima = layers.effective(code(TOSHIMA)).unwrap();
    let niijima = layers.effective(code(NIIJIMA)).unwrap();
    let national = layers.national_catalogue().unwrap();
    let tokyo = Layer::Prefecture(code("130001"));
    assert_eq!(
        toshima.layers,
        vec![Layer::National, tokyo, Layer::Municipality(code(TOSHIMA))]
    );
    assert_eq!(niijima.layers, vec![Layer::National, tokyo]);

    // The village's own rule is in its catalogue only.
    let keirou = RuleId::parse("keirou-iwaikin-88").unwrap();
    assert!(toshima.get(&keirou).is_some());
    assert!(niijima.get(&keirou).is_none());
    assert!(national.get(&keirou).is_none());
    assert_eq!(toshima.rules().len(), national.rules().len() + 1);

    // 葬祭費 (国保): the village's amount from its own first date; the national value before.
    let kokuho = &toshima.params.0["sousaihi_amount_kokuho"];
    let (from, value, origin) = kokuho.effective_with_origin(day("2026-06-10")).unwrap();
    assert_eq!((from, value.as_i64()), (day("2020-04-01"), Some(70000)));
    assert_eq!(origin.layer, Layer::Municipality(code(TOSHIMA)));
    assert!(origin
        .file
        .ends_with("fixtures/layers/municipalities/133621/parameters/village.yaml"));
    let (_, before, origin) = kokuho.effective_with_origin(day("2019-06-10")).unwrap();
    assert_eq!(
        (before.as_i64(), origin.layer),
        (Some(50000), Layer::National)
    );
    let elsewhere = &niijima.params.0["sousaihi_amount_kokuho"];
    assert_eq!(
        elsewhere.effective(day("2026-06-10")).unwrap().1.as_i64(),
        Some(50000)
    );

    // 葬祭費 (後期): the prefecture's change from 2027-04-01 reaches both municipalities.
    for catalogue in [&toshima, &niijima] {
        let kouki = &catalogue.params.0["sousaihi_amount_kouki"];
        let (_, v, o) = kouki.effective_with_origin(day("2027-03-31")).unwrap();
        assert_eq!((v.as_i64(), o.layer), (Some(50000), Layer::National));
        let (_, v, o) = kouki.effective_with_origin(day("2027-04-01")).unwrap();
        assert_eq!((v.as_i64(), o.layer), (Some(70000), tokyo));
    }

    // Each catalogue is its own version, so a day records which one it was made with.
    assert_ne!(toshima.version, national.version);
    assert_ne!(toshima.version, niijima.version);
}

#[test]
fn every_catalogue_of_the_layers_is_checked_and_each_layer_runs_its_tests() {
    let layers = example();
    let all = layers.every_catalogue();
    let names: Vec<String> = all.iter().map(|(l, _)| l.to_string()).collect();
    assert_eq!(
        names,
        [
            "national",
            "prefecture 東京都 (130001)",
            "municipality 東京都利島村 (133621)"
        ]
    );
    for (layer, catalogue) in &all {
        assert!(catalogue.is_ok(), "{layer}: {:?}", catalogue.as_ref().err());
    }
    let toshima = layers.effective(code(TOSHIMA)).unwrap();
    let tests = &layers.local[&Layer::Municipality(code(TOSHIMA))].tests;
    let report = ruletest::run_sources(&toshima, tests);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.passed(), report.failed()), (5, 0));
    // The same cases fail on the national catalogue: they test what the layers change.
    let national = layers.national_catalogue().unwrap();
    let report = ruletest::run_sources(&national, tests);
    assert!(!report.ok());
}

#[test]
fn explain_says_which_layer_a_parameter_value_came_from() {
    let snapshot = r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-06-10","local_gov_code":"133621"}
{"id":"R1","name":{"kanji":"田中 一郎","kana":"タナカ イチロウ"},"birth_date":"1958-09-01","sex":1,"status":{"kind":"resident"},"address":{"local_gov_code":"133621","text":"東京都利島村1番地"},"household":{"id":"H1","relationship":"世帯主"},"attributes":{"kokuho":true}}
{"id":"R2","name":{"kanji":"田中 和子","kana":"タナカ カズコ"},"birth_date":"1960-12-24","sex":2,"status":{"kind":"deceased","date":"2026-06-10"},"address":{"local_gov_code":"133621","text":"東京都利島村1番地"},"household":{"id":"H1","relationship":"妻"},"attributes":{"kokuho":true}}
"#;
    let snap = parse_snapshot(snapshot, "test.jsonl").unwrap();
    let toshima = example().effective(code(TOSHIMA)).unwrap();
    let ex = explain(
        &toshima,
        &snap.population,
        &ResidentId::parse("R2").unwrap(),
        &RuleId::parse("sousaihi").unwrap(),
        day("2026-06-10"),
    )
    .unwrap();
    let step = |name: &str| {
        ex.steps
            .iter()
            .find(|s| s.step == "parameter" && s.detail.starts_with(name))
            .unwrap_or_else(|| panic!("no parameter step for {name}: {:#?}", ex.steps))
            .detail
            .clone()
    };
    let kokuho = step("sousaihi_amount_kokuho");
    assert!(kokuho.contains("= 70000"), "{kokuho}");
    assert!(
        kokuho.contains("municipality 東京都利島村 (133621) layer"),
        "{kokuho}"
    );
    let kouki = step("sousaihi_amount_kouki");
    assert!(
        kouki.contains("= 50000") && kouki.contains("national layer"),
        "{kouki}"
    );
    assert_eq!(
        ex.decision.unwrap().prefill["amount"],
        serde_json::json!(70000)
    );
}

/// A layers folder with the given files (path under the folder, text).
fn layers_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Layers, LoadErrors>) {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let layers = national().read_local(dir.path());
    (dir, layers)
}

fn errors_of(files: &[(&str, &str)], municipality: &str) -> Vec<String> {
    let (_dir, layers) = layers_with(files);
    let result = layers.and_then(|l| l.effective(code(municipality)).map(|_| ()));
    match result {
        Ok(()) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_misspelt_override_is_refused_with_its_place_and_the_name_meant() {
    let errors = errors_of(
        &[(
            "municipalities/133621/parameters/village.yaml",
            "# the village's amounts\nsousaihi_amount_kokuhoo:\n  description: 葬祭費\n  values:\n    - { from: 2020-04-01, value: 70000 }\n",
        )],
        TOSHIMA,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(
        e.contains("municipalities/133621/parameters/village.yaml:2:"),
        "{e}"
    );
    assert!(e.contains("overrides nothing"), "{e}");
    assert!(
        e.contains("did you mean \"sousaihi_amount_kokuho\"?"),
        "{e}"
    );
}

#[test]
fn an_override_of_another_kind_is_refused_at_its_value() {
    let errors = errors_of(
        &[(
            "prefectures/130001/parameters/kouki.yaml",
            "sousaihi_amount_kouki:\n  description: 葬祭費\n  values:\n    - { from: 2020-04-01, value: 70000 }\n    - { from: 2027-04-01, value: \"70,000円\" }\n",
        )],
        TOSHIMA,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(
        e.contains("prefectures/130001/parameters/kouki.yaml:5:"),
        "{e}"
    );
    assert!(e.contains("sousaihi_amount_kouki.values[1].value"), "{e}");
    assert!(
        e.contains("is text, but \"sousaihi_amount_kouki\" is a number"),
        "{e}"
    );
}

#[test]
fn a_layer_cannot_redefine_a_national_rule() {
    let national_text =
        std::fs::read_to_string(repo().join("rules/koureijukyusha-sho.yaml")).unwrap();
    let errors = errors_of(
        &[(
            "municipalities/133621/koureijukyusha-sho.yaml",
            &national_text,
        )],
        TOSHIMA,
    );
    assert!(
        errors.iter().any(
            |e| e.contains("municipalities/133621/koureijukyusha-sho.yaml")
                && e.contains("is also used by")
        ),
        "{errors:?}"
    );
}

#[test]
fn a_bad_layer_value_is_reported_in_the_layer_s_file() {
    let errors = errors_of(
        &[(
            "municipalities/133621/parameters/calendar.yaml",
            "deadline_shift:\n  description: 期限の扱い\n  values:\n    - { from: 2020-04-01, value: sometimes }\n",
        )],
        TOSHIMA,
    );
    assert!(
        errors.iter().any(
            |e| e.contains("municipalities/133621/parameters/calendar.yaml:4:")
                && e.contains("deadline_shift.values[0].value")
                && e.contains("is not a shift")
        ),
        "{errors:?}"
    );
}

#[test]
fn folders_that_are_not_layers_are_refused_by_path() {
    let (_dir, layers) = layers_with(&[
        ("municipalities/133622/parameters/a.yaml", "{}\n"),
        ("municipalities/141011/parameters/a.yaml", "{}\n"),
        ("prefectures/131016/parameters/a.yaml", "{}\n"),
        ("towns/133621/parameters/a.yaml", "{}\n"),
        ("notes.txt", "a stray file\n"),
    ]);
    let errors: Vec<String> = layers
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    let has = |path: &str, what: &str| errors.iter().any(|e| e.contains(path) && e.contains(what));
    assert!(has("municipalities/133622", "check digit"), "{errors:?}");
    assert!(
        has("municipalities/141011", "not the code of a 市区町村"),
        "{errors:?}"
    );
    assert!(
        has("prefectures/131016", "not a prefecture's code"),
        "{errors:?}"
    );
    assert!(
        has("towns", "holds only prefectures/ and municipalities/"),
        "{errors:?}"
    );
    assert!(has("notes.txt", "holds only"), "{errors:?}");
    assert_eq!(errors.len(), 5, "{errors:?}");
}

#[test]
fn a_code_that_is_no_municipality_has_no_catalogue() {
    let layers = example();
    let e = layers.effective(code("130001")).unwrap_err().to_string();
    assert!(e.contains("130001 is not a municipality's code"), "{e}");
}

#[test]
fn a_prefecture_s_parameter_may_be_read_by_its_municipalities_rules_only() {
    // 東京都 sets an amount that only 利島村's own rule reads.
    let rule = std::fs::read_to_string(
        repo().join("fixtures/layers/municipalities/133621/keirou-iwaikin-88.yaml"),
    )
    .unwrap()
    .replace(
        "params.keirou_iwaikin_88_amount",
        "params.tokyo_keirou_amount",
    );
    let shared = "tokyo_keirou_amount:\n  description: 都の敬老祝金の額\n  values:\n    - { from: 2020-04-01, value: 10000 }\n";
    let (_dir, layers) = layers_with(&[
        ("prefectures/130001/parameters/keirou.yaml", shared),
        ("municipalities/133621/keirou-iwaikin-88.yaml", &rule),
    ]);
    let layers = layers.unwrap();
    for (layer, catalogue) in layers.every_catalogue() {
        assert!(catalogue.is_ok(), "{layer}: {}", catalogue.unwrap_err());
    }
    // Another municipality of the prefecture gets the value, though none of its rules reads it.
    let niijima = layers.effective(code(NIIJIMA)).unwrap();
    assert!(niijima.params.0.contains_key("tokyo_keirou_amount"));

    // Read by no rule anywhere in the prefecture: refused, in the prefecture's file.
    let (_dir, layers) = layers_with(&[("prefectures/130001/parameters/keirou.yaml", shared)]);
    let all = layers.unwrap().every_catalogue();
    let (_, tokyo) = all
        .iter()
        .find(|(l, _)| *l == Layer::Prefecture(code("130001")))
        .unwrap();
    let e = tokyo.as_ref().unwrap_err().to_string();
    assert!(
        e.contains("prefectures/130001/parameters/keirou.yaml:1:"),
        "{e}"
    );
    assert!(
        e.contains("overrides nothing in the layers below, and no rule reads it"),
        "{e}"
    );
}
