//! Feed fixtures shared by the engine's feed tests and the service's ingest tests: a small
//! town, feed lines of every kind, and lines each rejected with the field they name.
#![allow(dead_code)]

use chrono::NaiveDate;
use oshirase_engine::parse_snapshot;
use oshirase_engine::resident::Resident;

pub const HEADER: &str = r#"{"format":"oshirase-changes","schema_version":1}"#;

pub fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub fn person(id: &str, birth: &str, hh: &str, rel: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":{{"kanji":"山田 太郎","kana":"ヤマダ タロウ"}},"birth_date":"{birth}","sex":1,"status":{{"kind":"resident"}},"address":{{"local_gov_code":"133621","text":"利島村"}},"household":{{"id":"{hh}","relationship":"{rel}"}}}}"#
    )
}

/// H1: R1 世帯主, R2 妻, R3 子; H2: R4 alone; R7 moved out of H3 in 2020; R8 died in 2020
/// (H4); R9 external, R4's proxy.
pub fn town() -> Vec<Resident> {
    let text = [
        r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#.to_string(),
        person("R1", "1950-01-01", "H1", "世帯主"),
        person("R2", "1955-01-01", "H1", "妻"),
        person("R3", "1985-01-01", "H1", "子"),
        person("R4", "1990-01-01", "H2", "世帯主").replace(
            r#""household""#,
            r#""proxies":[{"id":"R9","scopes":["all"]}],"household""#,
        ),
        person("R7", "1970-01-01", "H3", "世帯主").replace(
            r#"{"kind":"resident"}"#,
            r#"{"kind":"moved_out","date":"2020-04-01"}"#,
        ),
        person("R8", "1930-01-01", "H4", "世帯主").replace(
            r#"{"kind":"resident"}"#,
            r#"{"kind":"deceased","date":"2020-05-01"}"#,
        ),
        r#"{"id":"R9","name":{"kanji":"山田 花子","kana":"ヤマダ ハナコ"},"birth_date":"1960-01-01","sex":2,"status":{"kind":"external"},"address":{"local_gov_code":"131016","text":"千代田区"}}"#.to_string(),
    ]
    .join("\n");
    parse_snapshot(&text, "town")
        .unwrap_or_else(|e| panic!("{e}"))
        .population
        .residents()
        .to_vec()
}

pub fn feed(lines: &[String]) -> String {
    let mut t = HEADER.to_string();
    for l in lines {
        t.push('\n');
        t.push_str(l);
    }
    t
}

/// One line of every kind, in an order that keeps the register valid throughout.
pub fn every_kind() -> Vec<String> {
    let baby = person("R5", "2026-10-06", "H1", "子");
    let newcomer = person("R6", "1995-03-03", "H5", "世帯主");
    vec![
        format!(r#"{{"seq":1,"kind":"birth","date":"2026-10-06","recorded":"2026-10-09","record":{baby}}}"#),
        format!(r#"{{"seq":2,"kind":"move_in","date":"2026-10-07","record":{newcomer}}}"#),
        r#"{"seq":3,"kind":"death","date":"2026-10-08","recorded":"2026-10-10","resident":"R1"}"#.into(),
        r#"{"seq":4,"kind":"householder_change","date":"2026-10-15","household":"H1","new_householder":"R2","relationships":{"R3":"子","R5":"子"}}"#.into(),
        r#"{"seq":5,"kind":"address_change","date":"2026-10-16","resident":"R4","address":{"local_gov_code":"133621","postal_code":"100-0301","text":"利島村2番地"}}"#.into(),
        r#"{"seq":6,"kind":"household_split","date":"2026-10-17","residents":["R3"],"household":"H9","relationships":{"R3":"世帯主"}}"#.into(),
        r#"{"seq":7,"kind":"household_merge","date":"2026-10-18","residents":["R6"],"household":"H2","relationships":{"R6":"同居人"}}"#.into(),
        r#"{"seq":8,"kind":"correction","date":"2026-10-19","resident":"R4","fields":{"name":{"kanji":"山田 一郎","kana":"ヤマダ イチロウ"},"attributes":{"kokuho":true}}}"#.into(),
        r#"{"seq":9,"kind":"move_out","date":"2026-10-20","recorded":"2026-10-21","resident":"R6"}"#.into(),
    ]
}

pub type Case = (String, &'static str, &'static str);

/// Two harmless lines, and lines each rejected (with the field and part of the message).
pub fn rejection_cases() -> (Vec<String>, Vec<Case>) {
    let r = |s: &str| s.to_string();
    let birth = |id: &str, date: &str, status: &str| {
        format!(
            r#"{{"seq":10,"kind":"birth","date":"{date}","record":{}}}"#,
            person(id, date, "H1", "子").replace(r#"{"kind":"resident"}"#, status)
        )
    };
    let move_in = |id: &str, date: &str, status: &str| {
        format!(
            r#"{{"seq":10,"kind":"move_in","date":"{date}","record":{}}}"#,
            person(id, "1980-01-01", "H1", "子").replace(r#"{"kind":"resident"}"#, status)
        )
    };
    let plain = r#"{"kind":"resident"}"#;
    let cases: Vec<(String, &str, &str)> = vec![
        // unknown or no longer current residents
        (
            r(r#"{"seq":10,"kind":"death","date":"2026-10-05","resident":"R99"}"#),
            "resident",
            "no current resident R99: unknown id",
        ),
        (
            r(r#"{"seq":10,"kind":"death","date":"2026-10-05","resident":"R8"}"#),
            "resident",
            "R8: deceased on 2020-05-01",
        ),
        (
            r(r#"{"seq":10,"kind":"move_out","date":"2026-10-05","resident":"R7"}"#),
            "resident",
            "R7: moved_out on 2020-04-01",
        ),
        (
            r(r#"{"seq":10,"kind":"death","date":"2026-10-05","resident":"R9"}"#),
            "resident",
            "external record",
        ),
        (
            r(
                r#"{"seq":10,"kind":"address_change","date":"2026-10-05","resident":"R99","address":{"local_gov_code":"133621","text":"x"}}"#,
            ),
            "resident",
            "R99",
        ),
        (
            r(
                r#"{"seq":10,"kind":"correction","date":"2026-10-05","resident":"R99","fields":{"sex":2}}"#,
            ),
            "resident",
            "no resident R99",
        ),
        // dates that contradict the record
        (
            r(r#"{"seq":10,"kind":"death","date":"1940-10-05","resident":"R1"}"#),
            "date",
            "before the birth date 1950-01-01",
        ),
        (
            birth("R5", "2026-10-06", plain)
                .replace(r#""date":"2026-10-06""#, r#""date":"2026-10-07""#),
            "record.birth_date",
            "is not the birth's date 2026-10-07",
        ),
        (
            move_in("R5", "1970-01-01", plain),
            "date",
            "before the birth date",
        ),
        (
            move_in("R7", "2019-01-01", plain),
            "date",
            "before R7 moved out on 2020-04-01",
        ),
        // births and move-ins of ids already on the register
        (
            birth("R1", "2026-10-06", plain),
            "record.id",
            "R1 is already a current resident",
        ),
        (
            move_in("R2", "2026-10-06", plain),
            "record.id",
            "R2 is already a current resident",
        ),
        (
            birth("R8", "2026-10-06", plain),
            "record.id",
            "a newborn needs a new id",
        ),
        (
            move_in("R8", "2026-10-06", plain),
            "record.id",
            "R8 is deceased",
        ),
        // the record's own status must agree with the line
        (
            birth(
                "R5",
                "2026-10-06",
                r#"{"kind":"deceased","date":"2026-10-06"}"#,
            ),
            "record.status",
            "is `resident`, not `deceased`",
        ),
        (
            move_in(
                "R5",
                "2026-10-06",
                r#"{"kind":"resident","since":"2026-10-01"}"#,
            ),
            "record.status.since",
            "differs",
        ),
        (
            move_in(
                "R5",
                "2026-10-06",
                r#"{"kind":"resident","reason":"birth"}"#,
            ),
            "record.status.reason",
            "must be move_in",
        ),
        // 転居 stays in the municipality
        (
            r(
                r#"{"seq":10,"kind":"address_change","date":"2026-10-05","resident":"R4","address":{"local_gov_code":"131016","text":"千代田区"}}"#,
            ),
            "address.local_gov_code",
            "move_out",
        ),
        // householder changes
        (
            r(
                r#"{"seq":10,"kind":"householder_change","date":"2026-10-05","household":"H7","new_householder":"R2"}"#,
            ),
            "household",
            "no household H7",
        ),
        (
            r(
                r#"{"seq":10,"kind":"householder_change","date":"2026-10-05","household":"H1","new_householder":"R4","relationships":{"R1":"夫"}}"#,
            ),
            "new_householder",
            "R4 is not in household H1",
        ),
        (
            r(
                r#"{"seq":10,"kind":"householder_change","date":"2026-10-05","household":"H1","new_householder":"R1","relationships":{}}"#,
            ),
            "new_householder",
            "already the 世帯主",
        ),
        (
            r(
                r#"{"seq":10,"kind":"householder_change","date":"2026-10-05","household":"H1","new_householder":"R2","relationships":{}}"#,
            ),
            "relationships",
            "the present 世帯主 R1 needs a new 続柄",
        ),
        (
            r(
                r#"{"seq":10,"kind":"householder_change","date":"2026-10-05","household":"H1","new_householder":"R2","relationships":{"R1":"夫","R2":"妻"}}"#,
            ),
            "relationships.R2",
            "the new 世帯主 cannot be 妻",
        ),
        (
            r(
                r#"{"seq":10,"kind":"householder_change","date":"2026-10-05","household":"H1","new_householder":"R2","relationships":{"R1":"夫","R4":"子"}}"#,
            ),
            "relationships.R4",
            "R4 is not in household H1",
        ),
        // splits and merges
        (
            r(
                r#"{"seq":10,"kind":"household_split","date":"2026-10-05","residents":["R3"],"household":"H2","relationships":{"R3":"世帯主"}}"#,
            ),
            "household",
            "already exists",
        ),
        (
            r(
                r#"{"seq":10,"kind":"household_split","date":"2026-10-05","residents":["R3"],"household":"H3","relationships":{"R3":"世帯主"}}"#,
            ),
            "household",
            "already exists",
        ),
        (
            r(
                r#"{"seq":10,"kind":"household_split","date":"2026-10-05","residents":["R99"],"household":"H9","relationships":{"R99":"世帯主"}}"#,
            ),
            "residents",
            "R99",
        ),
        (
            r(
                r#"{"seq":10,"kind":"household_split","date":"2026-10-05","residents":["R3"],"household":"H9","relationships":{}}"#,
            ),
            "relationships",
            "no 続柄 for R3",
        ),
        (
            r(
                r#"{"seq":10,"kind":"household_merge","date":"2026-10-05","residents":["R4"],"household":"H4","relationships":{"R4":"子"}}"#,
            ),
            "household",
            "no household H4 with current residents",
        ),
        (
            r(
                r#"{"seq":10,"kind":"household_merge","date":"2026-10-05","residents":["R3"],"household":"H1","relationships":{"R3":"子"}}"#,
            ),
            "residents",
            "already in household H1",
        ),
        (
            r(
                r#"{"seq":10,"kind":"household_merge","date":"2026-10-05","residents":["R4"],"household":"H1","relationships":{}}"#,
            ),
            "relationships",
            "no 続柄 for R4",
        ),
        // corrections, validated as a record
        (
            r(
                r#"{"seq":10,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"sex":7}}"#,
            ),
            "fields.sex",
            "ISO 5218",
        ),
        (
            r(
                r#"{"seq":10,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"name":{"kanji":"山田 一郎","kana":"やまだ"}}}"#,
            ),
            "fields.name.kana",
            "katakana",
        ),
        (
            r(
                r#"{"seq":10,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"colour":"blue"}}"#,
            ),
            "fields.colour",
            "unknown field `colour`",
        ),
        (
            r(
                r#"{"seq":10,"kind":"correction","date":"2026-10-05","resident":"R4","fields":{"status":{"kind":"deceased","date":"2026-10-01"}}}"#,
            ),
            "fields.status",
            "use a death",
        ),
        // the final register must be valid (mapped to the line that made it invalid)
        (
            r(
                r#"{"seq":10,"kind":"household_merge","date":"2026-10-05","residents":["R4"],"household":"H1","relationships":{"R4":"世帯主"}}"#,
            ),
            "household.relationship",
            "2 current 世帯主",
        ),
        (
            r(
                r#"{"seq":10,"kind":"household_split","date":"2026-10-05","residents":["R1"],"household":"H9","relationships":{"R1":"世帯主"}}"#,
            ),
            "household.relationship",
            "household \"H1\" has no 世帯主",
        ),
        (
            r(
                r#"{"seq":10,"kind":"correction","date":"2026-10-05","resident":"R3","fields":{"guardians":[{"id":"R99"}]}}"#,
            ),
            "guardians[0].id",
            "no record \"R99\"",
        ),
        (
            r(
                r#"{"seq":10,"kind":"correction","date":"2026-10-05","resident":"R3","fields":{"birth_date":"1985-01-01","status":{"kind":"resident","since":"1985-01-01","recorded":"1984-01-01"}}}"#,
            ),
            "status.recorded",
            "before the date",
        ),
    ];
    let harmless = [
        r(
            r#"{"seq":1,"kind":"address_change","date":"2026-10-01","resident":"R2","address":{"local_gov_code":"133621","text":"利島村1番地"}}"#,
        ),
        r(
            r#"{"seq":2,"kind":"correction","date":"2026-10-01","resident":"R7","fields":{"sex":1}}"#,
        ),
    ];
    (harmless.to_vec(), cases)
}
