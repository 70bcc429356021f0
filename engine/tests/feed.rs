//! Change feeds and snapshot diffs: every kind applied, every rejection with its line, all or
//! nothing, and idempotence.

use chrono::NaiveDate;
use oshirase_engine::feed::{apply, apply_lenient, diff, parse_feed};
use oshirase_engine::parse_snapshot;
use oshirase_engine::population::EventKind;
use oshirase_engine::resident::{Resident, Status};

const HEADER: &str = r#"{"format":"oshirase-changes","schema_version":1}"#;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn person(id: &str, birth: &str, hh: &str, rel: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":{{"kanji":"山田 太郎","kana":"ヤマダ タロウ"}},"birth_date":"{birth}","sex":1,"status":{{"kind":"resident"}},"address":{{"local_gov_code":"133621","text":"利島村"}},"household":{{"id":"{hh}","relationship":"{rel}"}}}}"#
    )
}

/// H1: R1 世帯主, R2 妻, R3 子; H2: R4 alone.
fn town() -> Vec<Resident> {
    let text = [
        r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#.to_string(),
        person("R1", "1950-01-01", "H1", "世帯主"),
        person("R2", "1955-01-01", "H1", "妻"),
        person("R3", "1985-01-01", "H1", "子"),
        person("R4", "1990-01-01", "H2", "世帯主"),
    ]
    .join("\n");
    parse_snapshot(&text, "town")
        .unwrap()
        .population
        .residents()
        .to_vec()
}

fn feed(lines: &[String]) -> String {
    let mut t = HEADER.to_string();
    for l in lines {
        t.push('\n');
        t.push_str(l);
    }
    t
}

fn get<'a>(rs: &'a [Resident], id: &str) -> &'a Resident {
    rs.iter().find(|r| r.id.as_str() == id).unwrap()
}

#[test]
fn every_kind_of_change_applies() {
    let baby = person("R5", "2026-10-06", "H1", "子");
    let newcomer = person("R6", "1995-03-03", "H3", "世帯主");
    let text = feed(&[
        format!(r#"{{"seq":1,"kind":"birth","date":"2026-10-06","recorded":"2026-10-09","record":{baby}}}"#),
        format!(r#"{{"seq":2,"kind":"move_in","date":"2026-10-07","record":{newcomer}}}"#),
        r#"{"seq":3,"kind":"death","date":"2026-10-08","recorded":"2026-10-10","resident":"R1"}"#.into(),
        r#"{"seq":4,"kind":"householder_change","date":"2026-10-15","household":"H1","new_householder":"R2","relationships":{}}"#.into(),
        r#"{"seq":5,"kind":"address_change","date":"2026-10-16","resident":"R4","address":{"local_gov_code":"133621","text":"利島村2番地"}}"#.into(),
        r#"{"seq":6,"kind":"household_split","date":"2026-10-17","residents":["R3"],"household":"H9","relationships":{"R3":"世帯主"}}"#.into(),
        r#"{"seq":7,"kind":"household_merge","date":"2026-10-18","residents":["R6"],"household":"H2","relationships":{"R6":"同居人"}}"#.into(),
        r#"{"seq":8,"kind":"correction","date":"2026-10-19","resident":"R4","fields":{"attributes":{"kokuho":true}}}"#.into(),
        r#"{"seq":9,"kind":"move_out","date":"2026-10-20","resident":"R6"}"#.into(),
    ]);
    let f = parse_feed(&text, "f").unwrap_or_else(|e| panic!("{e}"));
    let a = apply(&town(), &f, "f").unwrap_or_else(|e| panic!("{e}"));
    let rs = &a.residents;
    assert_eq!(rs.len(), 6);
    assert!(
        matches!(get(rs, "R5").status, Status::Resident { recorded: Some(r), .. } if r == d("2026-10-09"))
    );
    assert!(
        matches!(get(rs, "R1").status, Status::Deceased { date, .. } if date == d("2026-10-08"))
    );
    assert!(get(rs, "R2").is_householder());
    assert_eq!(get(rs, "R4").address.text, "利島村2番地");
    assert_eq!(get(rs, "R3").household.as_ref().unwrap().id.as_str(), "H9");
    assert!(get(rs, "R4").flag("kokuho"));
    assert!(matches!(get(rs, "R6").status, Status::MovedOut { .. }));
    let kinds: Vec<EventKind> = a.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Birth,
            EventKind::MoveIn,
            EventKind::Death,
            EventKind::HouseholderChange,
            EventKind::MoveOut
        ]
    );
    assert_eq!(a.events[0].recorded, d("2026-10-09"));
    // Applying the same feed again from the same state gives the same result.
    assert_eq!(apply(&town(), &f, "f").unwrap(), a);
    // Lines after the last applied seq: none.
    assert!(f.after(9).is_empty());
    assert_eq!(f.after(7).len(), 2);
}

#[test]
fn every_bad_line_is_reported_and_nothing_is_applied() {
    let mut lines: Vec<String> = (1..=20)
        .map(|i| format!(r#"{{"seq":{i},"kind":"address_change","date":"2026-10-01","resident":"R4","address":{{"local_gov_code":"133621","text":"利島村{i}番地"}}}}"#))
        .collect();
    lines[4] = r#"{"seq":5,"kind":"teleport","date":"2026-10-01","resident":"R4"}"#.into();
    lines[9] =
        r#"{"seq":10,"kind":"death","date":"2026-10-05","recorded":"2026-10-01","resident":"R4"}"#
            .into();
    lines[14] = r#"{"seq":15,"kind":"death","date":"2026-02-30","resident":"R4"}"#.into();
    let errs = parse_feed(&feed(&lines), "f.jsonl").unwrap_err().0;
    let places: Vec<(usize, Option<String>)> =
        errs.iter().map(|e| (e.line, e.field.clone())).collect();
    assert_eq!(places.len(), 3, "{errs:#?}");
    assert_eq!(places[0].0, 6);
    assert!(errs[0].message.contains("teleport"), "{}", errs[0]);
    assert_eq!(places[1], (11, Some("recorded".into())));
    assert_eq!(places[2], (16, Some("date".into())));
    let seq = feed(&[
        r#"{"seq":2,"kind":"death","date":"2026-10-05","resident":"R4"}"#.into(),
        r#"{"seq":2,"kind":"death","date":"2026-10-05","resident":"R3"}"#.into(),
    ]);
    assert!(parse_feed(&seq, "f")
        .unwrap_err()
        .to_string()
        .contains("f:3: field `seq`"));
}

#[test]
fn changes_about_unknown_people_are_rejected_with_their_line() {
    let cases = [
        (r#"{"seq":1,"kind":"death","date":"2026-10-05","resident":"R99"}"#.to_string(), "no current resident R99"),
        (format!(r#"{{"seq":1,"kind":"birth","date":"1950-01-01","record":{}}}"#, person("R1", "1950-01-01", "H1", "子")), "already a current resident"),
        (r#"{"seq":1,"kind":"householder_change","date":"2026-10-05","household":"H1","new_householder":"R4","relationships":{"R1":"夫"}}"#.into(), "is not in household H1"),
        (r#"{"seq":1,"kind":"householder_change","date":"2026-10-05","household":"H7","new_householder":"R4"}"#.into(), "no household H7"),
        (r#"{"seq":1,"kind":"household_merge","date":"2026-10-05","residents":["R4"],"household":"H1","relationships":{}}"#.into(), "no 続柄 for R4"),
        (r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"id":"R5"}}"#.into(), "cannot be corrected"),
        (r#"{"seq":1,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"sex":7}}"#.into(), "ISO 5218"),
        // The result must be a valid register: a second 世帯主 in H1.
        (r#"{"seq":1,"kind":"household_merge","date":"2026-10-05","residents":["R4"],"household":"H1","relationships":{"R4":"世帯主"}}"#.into(), "current 世帯主"),
    ];
    for (line, want) in cases {
        let f = parse_feed(&feed(std::slice::from_ref(&line)), "f.jsonl")
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        let err = apply(&town(), &f, "f.jsonl").unwrap_err().to_string();
        assert!(err.contains(want), "{line}\n  want {want:?}\n  got {err}");
        assert!(err.contains("f.jsonl:2"), "{err}");
    }
}

#[test]
fn lenient_apply_keeps_the_good_lines() {
    let text = feed(&[
        r#"{"seq":1,"kind":"death","date":"2026-10-05","resident":"R99"}"#.into(),
        r#"{"seq":2,"kind":"move_out","date":"2026-10-06","resident":"R4"}"#.into(),
    ]);
    let f = parse_feed(&text, "f").unwrap();
    assert!(apply(&town(), &f, "f").is_err());
    let (a, rejected) = apply_lenient(&town(), &f, "f").unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].line, 2);
    assert!(matches!(
        get(&a.residents, "R4").status,
        Status::MovedOut { .. }
    ));
    assert_eq!(a.events.len(), 1);
}

#[test]
fn snapshots_diff_into_life_events() {
    let old = town();
    assert!(diff(&old, &old, d("2026-11-01")).is_empty());
    let mut new = old.clone();
    new[0].status = Status::Deceased {
        date: d("2026-10-20"),
        recorded: None,
    };
    new[1].household.as_mut().unwrap().relationship =
        oshirase_engine::resident::Relationship::parse("世帯主").unwrap();
    let mut baby: Resident = serde_json::from_str(&person("R5", "2026-10-25", "H2", "子")).unwrap();
    baby.status = Status::Resident {
        since: Some(d("2026-10-25")),
        reason: Some(oshirase_engine::resident::ResidentReason::Birth),
        recorded: Some(d("2026-10-28")),
    };
    new.push(baby);
    let events = diff(&old, &new, d("2026-11-01"));
    let got: Vec<(EventKind, &str, NaiveDate, NaiveDate)> = events
        .iter()
        .map(|e| (e.kind, e.subject.as_str(), e.date, e.recorded))
        .collect();
    assert_eq!(
        got,
        [
            (EventKind::Death, "R1", d("2026-10-20"), d("2026-10-20")),
            (EventKind::Birth, "R5", d("2026-10-25"), d("2026-10-28")),
            (
                EventKind::HouseholderChange,
                "R2",
                d("2026-11-01"),
                d("2026-11-01")
            ),
        ]
    );
}
