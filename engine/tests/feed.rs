//! Change feeds and snapshot diffs: every kind applied, every rejection with its line and
//! field, all or nothing, idempotence, and life events from two snapshots.

#[path = "support/feed_fixtures.rs"]
mod feed_fixtures;

use chrono::NaiveDate;
use feed_fixtures::*;
use oshirase_engine::feed::{apply, apply_lenient, diff, parse_feed, Change, Feed};
use oshirase_engine::parse_snapshot;
use oshirase_engine::population::{DataError, EventKind, LifeEvent, Population};
use oshirase_engine::resident::{Relationship, Resident, ResidentReason, Status};

fn parsed(lines: &[String]) -> Feed {
    parse_feed(&feed(lines), "f.jsonl").unwrap_or_else(|e| panic!("{e}"))
}

fn get<'a>(rs: &'a [Resident], id: &str) -> &'a Resident {
    rs.iter().find(|r| r.id.as_str() == id).unwrap()
}

fn rel(rs: &[Resident], id: &str) -> (String, String) {
    let h = get(rs, id).household.as_ref().unwrap();
    (h.id.to_string(), h.relationship.to_string())
}

fn places(errs: &[DataError]) -> Vec<(usize, Option<&str>)> {
    errs.iter().map(|e| (e.line, e.field.as_deref())).collect()
}

type Ev<'a> = (EventKind, &'a str, NaiveDate, NaiveDate);

fn events(es: &[LifeEvent]) -> Vec<Ev<'_>> {
    es.iter()
        .map(|e| (e.kind, e.subject.as_str(), e.date, e.recorded))
        .collect()
}

#[test]
fn every_kind_of_change_applies() {
    let f = parsed(&every_kind());
    let kinds: Vec<&str> = f.lines.iter().map(|l| l.change.kind()).collect();
    assert_eq!(
        kinds,
        [
            "birth",
            "move_in",
            "death",
            "householder_change",
            "address_change",
            "household_split",
            "household_merge",
            "correction",
            "move_out"
        ]
    );
    // `recorded` defaults to `date`.
    assert_eq!(f.lines[1].recorded, d("2026-10-07"));
    let a = apply(&town(), &f, "f.jsonl").unwrap_or_else(|e| panic!("{e}"));
    let rs = &a.residents;
    // Existing records keep their order; new ones are appended in feed order.
    let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["R1", "R2", "R3", "R4", "R7", "R8", "R9", "R5", "R6"]);
    // birth: status set from the line.
    assert_eq!(
        get(rs, "R5").status,
        Status::Resident {
            since: Some(d("2026-10-06")),
            reason: Some(ResidentReason::Birth),
            recorded: Some(d("2026-10-09")),
        }
    );
    // death: keeps the last household, so survivors can be found.
    assert_eq!(
        get(rs, "R1").status,
        Status::Deceased {
            date: d("2026-10-08"),
            recorded: Some(d("2026-10-10"))
        }
    );
    assert_eq!(rel(rs, "R1"), ("H1".into(), "世帯主".into()));
    // householder_change.
    assert_eq!(rel(rs, "R2"), ("H1".into(), "世帯主".into()));
    assert_eq!(rel(rs, "R5"), ("H1".into(), "子".into()));
    // address_change.
    assert_eq!(get(rs, "R4").address.text, "利島村2番地");
    assert_eq!(
        get(rs, "R4").address.postal_code.as_deref(),
        Some("100-0301")
    );
    // household_split.
    assert_eq!(rel(rs, "R3"), ("H9".into(), "世帯主".into()));
    // household_merge (then move_out, which keeps the household).
    assert_eq!(rel(rs, "R6"), ("H2".into(), "同居人".into()));
    // correction: only the named fields change.
    let r4 = get(rs, "R4");
    assert_eq!(r4.name.kanji, "山田 一郎");
    assert!(r4.flag("kokuho"));
    assert_eq!(r4.proxies.len(), 1);
    assert_eq!(r4.birth_date, d("1990-01-01"));
    // move_out.
    assert_eq!(
        get(rs, "R6").status,
        Status::MovedOut {
            date: d("2026-10-20"),
            recorded: Some(d("2026-10-21"))
        }
    );
    assert_eq!(
        events(&a.events),
        [
            (EventKind::Birth, "R5", d("2026-10-06"), d("2026-10-09")),
            (EventKind::MoveIn, "R6", d("2026-10-07"), d("2026-10-07")),
            (EventKind::Death, "R1", d("2026-10-08"), d("2026-10-10")),
            (
                EventKind::HouseholderChange,
                "R2",
                d("2026-10-15"),
                d("2026-10-15")
            ),
            (EventKind::MoveOut, "R6", d("2026-10-20"), d("2026-10-21")),
        ]
    );
    assert_eq!(a.events[0].id, "birth-R5-2026-10-06");
}

#[test]
fn applying_twice_gives_the_same_result_and_after_skips_applied_lines() {
    let f = parsed(&every_kind());
    let once = apply(&town(), &f, "f").unwrap();
    assert_eq!(apply(&town(), &f, "f").unwrap(), once);
    assert!(f.after(9).is_empty());
    assert_eq!(f.after(0), f);
    assert_eq!(f.after(-5), f);
    let rest = f.after(4);
    assert_eq!(
        rest.lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9]
    );
    assert_eq!(f.last_seq(), Some(9));
    // Applying in two steps, the second from the stored position, is applying once.
    let first = Feed {
        local_gov_code: None,
        lines: f.lines[..4].to_vec(),
    };
    let a1 = apply(&town(), &first, "f").unwrap();
    let a2 = apply(&a1.residents, &f.after(4), "f").unwrap();
    assert_eq!(a2.residents, once.residents);
    let mut both = a1.events.clone();
    both.extend(a2.events);
    assert_eq!(both, once.events);
    // Applying the whole feed again on top of its own result is refused, not doubled.
    let again = apply(&once.residents, &f, "f").unwrap_err();
    assert!(again.to_string().contains("already"), "{again}");
}

#[test]
fn the_header_is_checked() {
    let ok = parse_feed(
        "\u{feff}{\"format\":\"oshirase-changes\",\"schema_version\":1,\"local_gov_code\":\"133621\"}\n\n",
        "f",
    )
    .unwrap();
    assert!(ok.is_empty());
    assert_eq!(ok.local_gov_code.unwrap().to_string(), "133621");
    let cases = [
        ("", None, "empty feed"),
        (
            r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#,
            Some("format"),
            "this is a snapshot",
        ),
        (
            r#"{"format":"oshirase-changes","schema_version":1,"as_of":"2026-10-01"}"#,
            Some("as_of"),
            "unknown field `as_of`",
        ),
        (
            r#"{"format":"oshirase-changes","schema_version":2}"#,
            Some("schema_version"),
            "schema version 2 is not supported",
        ),
        (
            r#"{"format":"oshirase-changes","schema_version":1,"local_gov_code":"133622"}"#,
            Some("local_gov_code"),
            "check digit",
        ),
        (
            r#"{"seq":1,"kind":"death","date":"2026-10-05","resident":"R4"}"#,
            Some("format"),
            "line 1 must be the feed header",
        ),
    ];
    for (text, field, want) in cases {
        let errs = parse_feed(text, "f").unwrap_err().0;
        assert_eq!(errs.len(), 1, "{text}: {errs:?}");
        assert_eq!(errs[0].line, 1);
        assert_eq!(errs[0].field.as_deref(), field, "{text}: {}", errs[0]);
        assert!(errs[0].message.contains(want), "{text}: {}", errs[0]);
    }
}

#[test]
fn every_bad_line_is_reported_with_its_field() {
    let good = person("R5", "2026-10-06", "H1", "子");
    let cases: Vec<Case> = vec![
        (r#"{"seq":1,"kind":"teleport","date":"2026-10-05","resident":"R4"}"#.into(), "kind", "unknown kind \"teleport\"; expected one of birth (出生)"),
        (r#"{"seq":1,"date":"2026-10-05","resident":"R4"}"#.into(), "kind", "missing"),
        (r#"{"seq":1,"kind":7,"date":"2026-10-05","resident":"R4"}"#.into(), "kind", "must be a string"),
        (r#"{"seq":1,"kind":"death","date":"2026-02-30","resident":"R4"}"#.into(), "date", "\"2026-02-30\" is not a calendar date"),
        (r#"{"seq":1,"kind":"death","date":"1700-01-01","resident":"R4"}"#.into(), "date", "outside the supported years"),
        (r#"{"seq":1,"kind":"death","resident":"R4"}"#.into(), "date", "missing"),
        (r#"{"seq":1,"kind":"death","date":20261005,"resident":"R4"}"#.into(), "date", "must be a date"),
        (r#"{"seq":1,"kind":"death","date":"2026-10-05","recorded":"2026-10-01","resident":"R4"}"#.into(), "recorded", "2026-10-01 is before the change's date 2026-10-05"),
        (r#"{"seq":1,"kind":"death","date":"2026-10-05","recorded":"2026-13-01","resident":"R4"}"#.into(), "recorded", "not a calendar date"),
        (r#"{"seq":0,"kind":"death","date":"2026-10-05","resident":"R4"}"#.into(), "seq", "from 1 to"),
        (r#"{"seq":-3,"kind":"death","date":"2026-10-05","resident":"R4"}"#.into(), "seq", "from 1 to"),
        (r#"{"seq":1.5,"kind":"death","date":"2026-10-05","resident":"R4"}"#.into(), "seq", "from 1 to"),
        (r#"{"seq":9223372036854775808,"kind":"death","date":"2026-10-05","resident":"R4"}"#.into(), "seq", "from 1 to"),
        (r#"{"kind":"death","date":"2026-10-05","resident":"R4"}"#.into(), "seq", "missing"),
        (r#"{"seq":1,"kind":"death","date":"2026-10-05","resident":"R4","colour":"blue"}"#.into(), "colour", "unknown field `colour`"),
        (r#"{"seq":1,"kind":"death","date":"2026-10-05"}"#.into(), "", "missing field `resident`"),
        (r#"{"seq":1,"kind":"death","date":"2026-10-05","resident":"123456789012"}"#.into(), "resident", "個人番号"),
        (format!(r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{}}}"#, good.replace("133621", "133622")), "record.address.local_gov_code", "check digit"),
        (format!(r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{}}}"#, good.replace("2026-10-06", "2026-02-30")), "record.birth_date", ""),
        (format!(r#"{{"seq":1,"kind":"move_in","date":"2026-10-06","record":{}}}"#, good.replace("子", "孫")), "record.household.relationship", "子の子"),
        (r#"{"seq":1,"kind":"householder_change","date":"2026-10-05","household":"H1","new_householder":"R2","relationships":{"R1":"友人"}}"#.into(), "relationships.R1", "unknown 続柄"),
        (r#"{"seq":1,"kind":"household_split","date":"2026-10-05","residents":[],"household":"H9","relationships":{}}"#.into(), "residents", "at least one"),
        (r#"{"seq":1,"kind":"household_merge","date":"2026-10-05","residents":["R3","R3"],"household":"H2","relationships":{"R3":"子"}}"#.into(), "residents", "R3 is named twice"),
        (r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"id":"R5"}}"#.into(), "fields.id", "cannot be corrected"),
        (r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{}}"#.into(), "fields", "no field"),
        ("not json".into(), "", "expected"),
        ("[1,2]".into(), "", "expected an object"),
    ];
    for (line, field, want) in cases {
        let errs = parse_feed(&feed(std::slice::from_ref(&line)), "f.jsonl")
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 1, "{line}: {errs:?}");
        let e = &errs[0];
        assert_eq!(e.line, 2, "{line}");
        assert_eq!(e.field.as_deref().unwrap_or(""), field, "{line}: {e}");
        assert!(
            e.message.contains(want),
            "{line}\n  want {want:?}\n  got {e}"
        );
    }
}

/// Two lines joined by a lost line break, or anything after a line's object, would otherwise
/// drop what follows and move the feed position past it.
#[test]
fn data_after_a_lines_object_is_refused_with_its_column() {
    let birth = format!(
        r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{}}}"#,
        person("R5", "2026-10-06", "H1", "子")
    );
    let death = r#"{"seq":2,"kind":"death","date":"2026-10-08","resident":"R1"}"#;
    // The column counts characters, as an editor does.
    let column = birth.chars().count() + 1;
    for (line, what) in [
        (format!("{birth}{death}"), "two lines joined"),
        (format!("{birth}garbage"), "garbage"),
        (format!("{birth},"), "a comma"),
        (format!("{birth} {{}}"), "a second object"),
    ] {
        let errs = parse_feed(&feed(std::slice::from_ref(&line)), "f.jsonl")
            .expect_err(what)
            .0;
        assert_eq!(errs.len(), 1, "{what}: {errs:?}");
        assert_eq!(errs[0].line, 2, "{what}");
        let text = errs[0].to_string();
        assert!(
            text.starts_with(&format!(
                "f.jsonl:2: column {}: ",
                column + usize::from(what == "a second object")
            )),
            "{what}: {text}"
        );
        assert!(
            text.contains("after the end of the JSON object"),
            "{what}: {text}"
        );
    }
    // Trailing spaces are not data.
    assert_eq!(parsed(&[format!("{birth}  \t")]).len(), 1);
    let header = format!("{HEADER}x\n{death}");
    let errs = parse_feed(&header, "f.jsonl").unwrap_err().0;
    assert_eq!(errs[0].line, 1, "{errs:?}");
    assert!(errs[0].to_string().contains("column 49"), "{}", errs[0]);
}

#[test]
fn dates_are_exactly_yyyy_mm_dd() {
    for (date, recorded, field) in [
        ("+2026-10-05", "2026-10-06", "date"),
        ("2026-10-5", "2026-10-06", "date"),
        (" 2026-10-05", "2026-10-06", "date"),
        ("2026-10-05 ", "2026-10-06", "date"),
        ("2026-10-05", "+2026-10-06", "recorded"),
        ("2026-10-05", "2026-10-06\t", "recorded"),
        ("2026-10-05", "2301-01-01", "recorded"),
    ] {
        let line = format!(
            r#"{{"seq":1,"kind":"death","date":"{date}","recorded":"{recorded}","resident":"R4"}}"#
        );
        let errs = parse_feed(&feed(std::slice::from_ref(&line)), "f.jsonl")
            .expect_err(&line)
            .0;
        assert_eq!(places(&errs), [(2, Some(field))], "{line}: {errs:?}");
    }
    // A record's dates are a snapshot record's.
    let record = person("R5", "2026-10-06", "H1", "子").replace("2026-10-06", "2026-10-6");
    let line = format!(r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{record}}}"#);
    let errs = parse_feed(&feed(&[line]), "f.jsonl").unwrap_err().0;
    assert_eq!(places(&errs), [(2, Some("record.birth_date"))], "{errs:?}");
}

#[test]
fn feed_errors_never_echo_personal_data_or_whole_values() {
    let long = "x".repeat(100_000);
    let bad_kana = person("R5", "2026-10-06", "H1", "子").replace("ヤマダ タロウ", "Yamada Taro");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!(r#"{{"seq":1,"kind":"{long}","date":"2026-10-05","resident":"R4"}}"#),
            "kind",
            &long[..200],
        ),
        (
            format!(r#"{{"seq":1,"kind":"death","date":"{long}","resident":"R4"}}"#),
            "date",
            &long[..200],
        ),
        (
            format!(r#"{{"seq":1,"kind":"death","date":["{long}"],"resident":"R4"}}"#),
            "date",
            &long[..200],
        ),
        (
            format!(r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{bad_kana}}}"#),
            "record.name.kana",
            "Yamada",
        ),
        (
            r#"{"seq":1,"kind":"address_change","date":"2026-10-05","resident":"R4","address":{"local_gov_code":"133621","postal_code":"1000301","text":"利島村2番地"}}"#.into(),
            "address.postal_code",
            "1000301",
        ),
    ];
    for (line, field, hidden) in cases {
        let errs = parse_feed(&feed(std::slice::from_ref(&line)), "f.jsonl")
            .unwrap_err()
            .0;
        let shown = errs[0].to_string();
        assert!(
            shown.chars().count() < 600,
            "{field}: {}",
            shown.chars().take(600).collect::<String>()
        );
        assert!(!shown.contains(hidden), "{field}: {shown}");
        assert_eq!(errs[0].field.as_deref(), Some(field), "{shown}");
    }
    // A record's error names the record.
    let line = format!(r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{bad_kana}}}"#);
    let errs = parse_feed(&feed(&[line]), "f.jsonl").unwrap_err().0;
    assert!(errs[0].to_string().contains("resident R5"), "{}", errs[0]);
    // A correction re-reads the record: its errors hide the values too.
    let f = parse_feed(
        &feed(&[r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"name":{"kanji":"山田 一郎","kana":"Yamada Ichiro"}}}"#.into()]),
        "f.jsonl",
    )
    .unwrap();
    let errs = apply(&town(), &f, "f.jsonl").unwrap_err().0;
    let shown = errs[0].to_string();
    assert_eq!(
        errs[0].field.as_deref(),
        Some("fields.name.kana"),
        "{shown}"
    );
    assert!(!shown.contains("Yamada"), "{shown}");
    assert!(shown.contains("resident R4"), "{shown}");
}

#[test]
fn seq_must_increase() {
    let text = feed(&[
        r#"{"seq":2,"kind":"death","date":"2026-10-05","resident":"R4"}"#.into(),
        r#"{"seq":2,"kind":"death","date":"2026-10-05","resident":"R3"}"#.into(),
        r#"{"seq":1,"kind":"death","date":"2026-10-05","resident":"R2"}"#.into(),
        r#"{"seq":3,"kind":"death","date":"2026-10-05","resident":"R1"}"#.into(),
    ]);
    let errs = parse_feed(&text, "f").unwrap_err();
    assert_eq!(places(&errs.0), [(3, Some("seq")), (4, Some("seq"))]);
    assert!(
        errs.to_string()
            .starts_with("f:3: field `seq`: 2 does not follow 2: seq must increase"),
        "{errs}"
    );
}

#[test]
fn a_twenty_line_feed_with_three_bad_lines_reports_exactly_those() {
    let mut lines: Vec<String> = (1..=20)
        .map(|i| format!(r#"{{"seq":{i},"kind":"address_change","date":"2026-10-01","resident":"R4","address":{{"local_gov_code":"133621","text":"利島村{i}番地"}}}}"#))
        .collect();
    lines[4] = r#"{"seq":5,"kind":"teleport","date":"2026-10-01","resident":"R4"}"#.into();
    lines[9] =
        r#"{"seq":10,"kind":"death","date":"2026-10-05","recorded":"2026-10-01","resident":"R4"}"#
            .into();
    lines[14] = r#"{"seq":15,"kind":"death","date":"2026-02-30","resident":"R4"}"#.into();
    let errs = parse_feed(&feed(&lines), "f.jsonl").unwrap_err().0;
    assert_eq!(
        places(&errs),
        [
            (6, Some("kind")),
            (11, Some("recorded")),
            (16, Some("date"))
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("teleport"), "{}", errs[0]);
    // Blank lines count in the numbering but are not changes.
    let mut spaced = lines.clone();
    spaced.insert(3, String::new());
    let errs = parse_feed(&feed(&spaced), "f.jsonl").unwrap_err().0;
    assert_eq!(errs.iter().map(|e| e.line).collect::<Vec<_>>(), [7, 12, 17]);
}

/// Each case: feed lines (after two harmless lines), then the expected line, field and message.
#[test]
fn every_rejection_when_applying_names_its_line_and_field() {
    let (harmless, cases) = rejection_cases();
    for (line, field, want) in cases {
        let mut lines = harmless.to_vec();
        lines.push(line.clone());
        let f = parse_feed(&feed(&lines), "f.jsonl").unwrap_or_else(|e| panic!("{line}: {e}"));
        let errs = apply(&town(), &f, "f.jsonl").unwrap_err().0;
        assert_eq!(places(&errs), [(4, Some(field))], "{line}\n{errs:#?}");
        assert!(
            errs[0].message.contains(want),
            "{line}\n  want {want:?}\n  got {}",
            errs[0]
        );
        assert!(errs[0].to_string().starts_with("f.jsonl:4: field `"));
    }
}

#[test]
fn all_or_nothing_and_a_rejected_line_leaves_no_trace() {
    let lines = vec![
        r#"{"seq":1,"kind":"move_out","date":"2026-10-06","resident":"R4"}"#.to_string(),
        // Sets R1's 続柄 first, then fails on R4: nothing of it may remain.
        r#"{"seq":2,"kind":"householder_change","date":"2026-10-07","household":"H1","new_householder":"R2","relationships":{"R1":"夫","R9":"子"}}"#.into(),
        r#"{"seq":3,"kind":"death","date":"2026-10-08","resident":"R99"}"#.into(),
        r#"{"seq":4,"kind":"address_change","date":"2026-10-09","resident":"R3","address":{"local_gov_code":"133621","text":"利島村3番地"}}"#.into(),
    ];
    let f = parsed(&lines);
    let before = town();
    let errs = apply(&before, &f, "f").unwrap_err().0;
    assert_eq!(
        places(&errs),
        [(3, Some("relationships.R9")), (4, Some("resident"))]
    );
    assert_eq!(before, town());
    // Lenient: the good lines apply, the rejected ones leave nothing behind.
    let (a, rejected) = apply_lenient(&before, &f, "f").unwrap();
    assert_eq!(places(&rejected), places(&errs));
    assert!(matches!(
        get(&a.residents, "R4").status,
        Status::MovedOut { .. }
    ));
    assert_eq!(rel(&a.residents, "R1"), ("H1".into(), "世帯主".into()));
    assert_eq!(rel(&a.residents, "R2"), ("H1".into(), "妻".into()));
    assert_eq!(get(&a.residents, "R3").address.text, "利島村3番地");
    assert_eq!(
        events(&a.events),
        [(EventKind::MoveOut, "R4", d("2026-10-06"), d("2026-10-06"))]
    );
    // A rejected birth leaves no record behind either.
    let f = parsed(&[format!(
        r#"{{"seq":1,"kind":"birth","date":"2026-10-06","record":{}}}"#,
        person("R5", "2026-10-06", "H1", "子").replace(
            r#""household""#,
            r#""guardians":[{"id":"R99"}],"household""#
        )
    )]);
    let err = apply_lenient(&before, &f, "f").unwrap_err();
    assert_eq!(places(&err.0), [(2, Some("guardians[0].id"))]);
}

#[test]
fn householder_changes_are_found_whatever_line_makes_them() {
    let as_events = |lines: &[String]| apply(&town(), &parsed(lines), "f").unwrap().events;
    // Two corrections swap the 世帯主: one change, on the first line's date.
    let e = as_events(&[
        r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R2","fields":{"household":{"id":"H1","relationship":"世帯主"}}}"#.into(),
        r#"{"seq":2,"kind":"correction","date":"2026-10-06","resident":"R1","fields":{"household":{"id":"H1","relationship":"夫"}}}"#.into(),
    ]);
    assert_eq!(
        events(&e),
        [(
            EventKind::HouseholderChange,
            "R2",
            d("2026-10-05"),
            d("2026-10-05")
        )]
    );
    // A merge that makes the newcomer the 世帯主 of an existing household.
    let e = as_events(&[
        r#"{"seq":1,"kind":"household_merge","date":"2026-10-05","recorded":"2026-10-07","residents":["R4"],"household":"H1","relationships":{"R4":"世帯主","R1":"父"}}"#.into(),
    ]);
    assert_eq!(
        events(&e),
        [(
            EventKind::HouseholderChange,
            "R4",
            d("2026-10-05"),
            d("2026-10-07")
        )]
    );
    // A split makes a new household: no change of anyone's 世帯主.
    let e = as_events(&[
        r#"{"seq":1,"kind":"household_split","date":"2026-10-05","residents":["R3"],"household":"H9","relationships":{"R3":"世帯主"}}"#.into(),
    ]);
    assert!(e.is_empty(), "{e:?}");
    // Address changes and corrections without a new 世帯主 give nothing.
    let e = as_events(&[
        r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R3","fields":{"household":{"id":"H1","relationship":"子の妻"}}}"#.into(),
    ]);
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn a_former_resident_moving_back_keeps_their_record() {
    let back = person("R7", "1970-01-01", "H3", "世帯主");
    let a = apply(
        &town(),
        &parsed(&[format!(
            r#"{{"seq":1,"kind":"move_in","date":"2026-10-05","record":{back}}}"#
        )]),
        "f",
    )
    .unwrap();
    assert_eq!(a.residents.len(), town().len());
    assert!(get(&a.residents, "R7").is_current());
    // H3 had nobody current: a move-in, not a householder change.
    assert_eq!(
        events(&a.events),
        [(EventKind::MoveIn, "R7", d("2026-10-05"), d("2026-10-05"))]
    );
}

#[test]
fn the_fixture_feed_applies_to_the_fixture_town() {
    let town = parse_snapshot(include_str!("../../fixtures/town.jsonl"), "town.jsonl")
        .unwrap_or_else(|e| panic!("{e}"));
    let text = include_str!("../../fixtures/town-changes.jsonl");
    let f = parse_feed(text, "town-changes.jsonl").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.len(), 22);
    let a = apply(town.population.residents(), &f, "town-changes.jsonl")
        .unwrap_or_else(|e| panic!("{e}"));
    let count = |k: EventKind| a.events.iter().filter(|e| e.kind == k).count();
    assert_eq!(
        [
            EventKind::Birth,
            EventKind::Death,
            EventKind::MoveIn,
            EventKind::MoveOut,
            EventKind::HouseholderChange
        ]
        .map(count),
        [8, 5, 3, 2, 2]
    );
    // The snapshot diff of before and after finds the same events (with the snapshot's
    // as_of for the householder changes, which the records do not date).
    let as_of = d("2027-02-01");
    let derived = diff(town.population.residents(), &a.residents, as_of);
    let mut from_feed: Vec<(EventKind, &str)> = a
        .events
        .iter()
        .map(|e| (e.kind, e.subject.as_str()))
        .collect();
    let mut from_diff: Vec<(EventKind, &str)> = derived
        .iter()
        .map(|e| (e.kind, e.subject.as_str()))
        .collect();
    from_feed.sort();
    from_diff.sort();
    assert_eq!(from_diff, from_feed);
}

#[test]
fn no_input_makes_it_panic() {
    let text = include_str!("../../fixtures/town-changes.jsonl");
    let town = town();
    for line in text.lines().skip(1) {
        for (cut, _) in line.char_indices().step_by(7) {
            let t = format!("{HEADER}\n{}", &line[..cut]);
            let _ = parse_feed(&t, "f");
        }
    }
    // Every fixture line against a register that does not know its people.
    let (f, _) = oshirase_engine::feed::parse_feed_lenient(text, "f");
    assert!(apply(&town, &f, "f").is_err());
    assert!(apply(&[], &f, "f").is_err());
    let deep = format!(
        r#"{{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{{"attributes":{{"a":{}1{}}}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    assert!(parse_feed(&feed(&[deep]), "f").is_err());
}

// ---- snapshot diffs ----

fn with_status(r: &Resident, s: Status) -> Resident {
    let mut r = r.clone();
    r.status = s;
    r
}

fn with_rel(r: &Resident, hh: &str, rel: &str) -> Resident {
    let mut r = r.clone();
    r.household =
        serde_json::from_str(&format!(r#"{{"id":"{hh}","relationship":"{rel}"}}"#)).unwrap();
    r
}

fn record(id: &str, birth: &str, hh: &str, rel: &str, status: Status) -> Resident {
    let r: Resident = serde_json::from_str(&person(id, birth, hh, rel)).unwrap();
    with_status(&r, status)
}

#[test]
fn a_snapshot_against_itself_gives_nothing() {
    let a = town();
    for as_of in [d("2026-10-01"), d("2030-01-01")] {
        assert!(diff(&a, &a, as_of).is_empty());
    }
    assert!(diff(&[], &[], d("2026-10-01")).is_empty());
}

#[test]
fn snapshots_diff_into_life_events() {
    let old = town();
    let as_of = d("2026-11-01");
    let by = |id: &str| get(&old, id).clone();
    let new = vec![
        // R1 (世帯主) died; the 死亡届 reached the register on 10-22.
        with_status(
            &by("R1"),
            Status::Deceased {
                date: d("2026-10-20"),
                recorded: Some(d("2026-10-22")),
            },
        ),
        // R2 became 世帯主 (世帯主変更届).
        with_rel(&by("R2"), "H1", "世帯主"),
        // R3 moved out; the record does not say when it was recorded: as_of.
        with_status(
            &by("R3"),
            Status::MovedOut {
                date: d("2026-10-15"),
                recorded: None,
            },
        ),
        // R4 unchanged except for an address: nothing.
        {
            let mut r = by("R4");
            r.address.text = "利島村9番地".into();
            r
        },
        // R7 came back.
        with_status(
            &by("R7"),
            Status::Resident {
                since: Some(d("2026-10-10")),
                reason: Some(ResidentReason::MoveIn),
                recorded: None,
            },
        ),
        by("R8"),
        by("R9"),
        // A baby born in H2 (recorded late) and a newcomer founding H6.
        record(
            "R5",
            "2026-10-25",
            "H2",
            "子",
            Status::Resident {
                since: Some(d("2026-10-25")),
                reason: Some(ResidentReason::Birth),
                recorded: Some(d("2026-10-28")),
            },
        ),
        record(
            "R6",
            "1990-05-05",
            "H6",
            "世帯主",
            Status::Resident {
                since: Some(d("2026-10-12")),
                reason: Some(ResidentReason::MoveIn),
                recorded: None,
            },
        ),
        // Someone who moved in and died between the snapshots: only the death is visible.
        record(
            "R10",
            "1940-01-01",
            "H6",
            "父",
            Status::Deceased {
                date: d("2026-10-30"),
                recorded: None,
            },
        ),
    ];
    assert_eq!(
        events(&diff(&old, &new, as_of)),
        [
            (EventKind::Death, "R1", d("2026-10-20"), d("2026-10-22")),
            (EventKind::MoveOut, "R3", d("2026-10-15"), as_of),
            (EventKind::MoveIn, "R7", d("2026-10-10"), as_of),
            (EventKind::Birth, "R5", d("2026-10-25"), d("2026-10-28")),
            (EventKind::MoveIn, "R6", d("2026-10-12"), as_of),
            (EventKind::Death, "R10", d("2026-10-30"), as_of),
            (EventKind::HouseholderChange, "R2", as_of, as_of),
        ]
    );
    // Nothing is derived twice: the new snapshot against itself is quiet.
    assert!(diff(&new, &new, d("2026-12-01")).is_empty());
}

#[test]
fn a_householder_change_after_a_death_is_seen_in_the_next_snapshot() {
    let old = town();
    let mut mid = old.clone();
    mid[0] = with_status(
        &old[0],
        Status::Deceased {
            date: d("2026-10-20"),
            recorded: None,
        },
    );
    // The first diff sees the death only: H1 has no 世帯主 until the 世帯主変更届.
    assert_eq!(
        events(&diff(&old, &mid, d("2026-11-01"))),
        [(EventKind::Death, "R1", d("2026-10-20"), d("2026-11-01"))]
    );
    let mut new = mid.clone();
    new[1] = with_rel(&mid[1], "H1", "世帯主");
    assert_eq!(
        events(&diff(&mid, &new, d("2026-12-01"))),
        [(
            EventKind::HouseholderChange,
            "R2",
            d("2026-12-01"),
            d("2026-12-01")
        )]
    );
}

#[test]
fn a_first_load_is_no_news() {
    // No earlier state: the first load stores no events; the register derives the ones its
    // statuses date, on their own days, so nothing in it is "late".
    let new = town();
    assert!(diff(&[], &new, d("2026-10-01")).is_empty());
    let lines: Vec<usize> = (1..=new.len()).collect();
    let pop = Population::build(new.clone(), &lines, "town", Vec::new()).unwrap();
    let mut derived: Vec<(EventKind, String, NaiveDate, NaiveDate)> = (0..pop.len())
        .flat_map(|i| pop.events_of(i))
        .filter(|e| matches!(e.kind, EventKind::MoveOut | EventKind::Death))
        .map(|e| {
            (
                e.kind,
                pop.get(e.subject).id.as_str().to_owned(),
                e.date,
                e.recorded,
            )
        })
        .collect();
    derived.sort();
    assert_eq!(
        derived,
        [
            (
                EventKind::Death,
                "R8".to_owned(),
                d("2020-05-01"),
                d("2020-05-01")
            ),
            (
                EventKind::MoveOut,
                "R7".to_owned(),
                d("2020-04-01"),
                d("2020-04-01")
            ),
        ]
    );
    // Statuses that did not change between snapshots give nothing, whatever they are.
    let moved_then_died = with_status(
        &new[4],
        Status::Deceased {
            date: d("2021-01-01"),
            recorded: None,
        },
    );
    let mut later = new.clone();
    later[4] = moved_then_died;
    assert!(diff(&new, &later, d("2026-11-01")).is_empty());
    // And the 続柄 helper the tests use is the register's.
    assert!(Relationship::parse("世帯主").unwrap().is_householder());
}

#[test]
fn changes_are_typed_by_kind() {
    let f = parsed(&every_kind());
    assert!(matches!(&f.lines[0].change, Change::Birth { record } if record.id.as_str() == "R5"));
    assert!(
        matches!(&f.lines[3].change, Change::HouseholderChange { relationships, .. } if relationships.len() == 2)
    );
}
