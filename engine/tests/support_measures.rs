//! Support measures (支援措置) for everyone a notice is routed through or a draft names:
//! the subject, a survivor, a child, the householder. Each case is one small household, one
//! rule whose draft reads `subject`, `household`, `householder` and `guardians`, and what
//! must come out: who is told (and in which role), or why staff are, and that no protected
//! person's name or address is in a draft or message anyone else can read.

use std::collections::HashSet;
use std::path::Path;

use chrono::NaiveDate;
use oshirase_engine::catalogue::compile_sources;
use oshirase_engine::script::WITHHELD;
use oshirase_engine::{evaluate_day, Decision, RuleSet};

#[path = "support/snapshot.rs"]
mod snapshot;
use snapshot::population;

/// The draft of every case: the subject, each housemate, the householder and the guardians,
/// by name, kana and address, as a form and its message would give them.
const DRAFT: &str = r#"prefill:
  subject_name: subject.name.kanji
  subject_kana: subject.name.kana
  subject_address: subject.address.text
  members: 'household.map(|m| m.name.kanji + " " + m.name.kana + " " + m.address.text)'
  withheld_members: 'household.filter(|m| m.withheld ?? false).len()'
  householder: 'if type_of(householder) == "map" { householder.name.kanji + " " + householder.address.text } else { "" }'
  guardians: 'guardians.map(|g| g.name.kanji + " " + g.name.kana + " " + g.address.text)'
message:
  ja: "{{ subject_name }}（{{ subject_address }}）様。世帯: {{ members | join('、') }}。世帯主: {{ householder }}。保護者: {{ guardians | join('、') }}"
"#;

fn rules(trigger: &str, audience: &str) -> RuleSet {
    let doc = format!(
        "id: test-rule\nversion: 1\ntitle: {{ ja: テスト }}\ncategory: welfare\nlegal_basis: test\nvalid: {{ from: 2000-01-01 }}\ntrigger: {trigger}\naudience: {audience}\nchannels: [portal]\n{DRAFT}"
    );
    compile_sources(
        Path::new("rules"),
        &[("rules/test-rule.yaml".to_owned(), doc)],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Katakana spelling of an id, one sign a character, so every person's kana is their own.
fn kana(id: &str) -> String {
    const LETTERS: [char; 26] = [
        'ア', 'イ', 'ウ', 'エ', 'オ', 'カ', 'キ', 'ク', 'ケ', 'コ', 'サ', 'シ', 'ス', 'セ', 'ソ',
        'タ', 'チ', 'ツ', 'テ', 'ト', 'ナ', 'ニ', 'ヌ', 'ネ', 'ノ', 'ハ',
    ];
    const DIGITS: [char; 10] = ['マ', 'ミ', 'ム', 'メ', 'モ', 'ヤ', 'ユ', 'ヨ', 'ラ', 'リ'];
    id.chars()
        .map(|c| match c {
            'A'..='Z' => LETTERS[(c as u8 - b'A') as usize],
            '0'..='9' => DIGITS[(c as u8 - b'0') as usize],
            _ => panic!("ids here are A-Z and 0-9: {id}"),
        })
        .collect()
}

fn name(id: &str) -> String {
    format!("氏名{id}番")
}

fn address(id: &str) -> String {
    format!("利島村{id}番地")
}

/// A resident line: id, birth date, household ("" for someone living elsewhere, who is on
/// the register of another town), 続柄, then extra JSON fields.
fn person(id: &str, birth: &str, hh: &str, rel: &str, extra: &str) -> String {
    let (status, household) = if hh.is_empty() {
        (r#"{"kind":"external"}"#.to_owned(), String::new())
    } else {
        (
            r#"{"kind":"resident"}"#.to_owned(),
            format!(r#","household":{{"id":"{hh}","relationship":"{rel}"}}"#),
        )
    };
    format!(
        r#"{{"id":"{id}","name":{{"kanji":"{}","kana":"{}"}},"birth_date":"{birth}","sex":2,"status":{status},"address":{{"local_gov_code":"133621","text":"{}"}}{household},"contact":{{"portal":true}}{extra}}}"#,
        name(id),
        kana(id),
        address(id),
    )
}

const DIED: &str = r#"{"kind":"deceased","date":"2026-09-01"}"#;

fn deceased(line: String) -> String {
    line.replace(r#"{"kind":"resident"}"#, DIED)
}

/// One row of the table.
struct Case {
    name: &'static str,
    trigger: &'static str,
    audience: &'static str,
    day: &'static str,
    residents: Vec<String>,
    /// The subject of the one decision expected.
    subject: &'static str,
    /// "ID:Role", in any order.
    recipients: &'static [&'static str],
    /// Words the staff_review reason must contain; empty when somebody is told.
    staff: &'static [&'static str],
    /// Names the draft must still show (to the recipients allowed to read them).
    shown: &'static [&'static str],
}

fn check(case: &Case) {
    let rs = rules(case.trigger, case.audience);
    let pop = population(&case.residents);
    let day: NaiveDate = case.day.parse().unwrap();
    let result = evaluate_day(&rs, &pop, day);
    let n = case.name;
    assert!(result.failures.is_empty(), "{n}: {:#?}", result.failures);
    let [dec]: [Decision; 1] = result
        .decisions
        .try_into()
        .unwrap_or_else(|d: Vec<Decision>| panic!("{n}: one decision expected, got {d:#?}"));
    assert_eq!(dec.subject.as_str(), case.subject, "{n}");

    let mut got: Vec<String> = dec
        .recipients
        .iter()
        .map(|r| format!("{}:{:?}", r.id, r.role))
        .collect();
    got.sort();
    let mut want: Vec<String> = case.recipients.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{n}: recipients");

    match (&dec.staff_review, case.staff) {
        (None, []) => {}
        (Some(reason), words) if !words.is_empty() => {
            for w in words {
                assert!(
                    reason.contains(w),
                    "{n}: staff reason {reason:?} lacks {w:?}"
                );
            }
        }
        (got, _) => panic!("{n}: staff_review {got:?}, expected words {:?}", case.staff),
    }

    // What the recipients can read: the draft and every rendered message.
    let text = format!(
        "{}\n{}\n{}",
        serde_json::to_string(&dec.prefill).unwrap(),
        dec.message.ja,
        dec.message.en.as_deref().unwrap_or("")
    );
    let readers: Vec<&str> = dec.recipients.iter().map(|r| r.id.as_str()).collect();
    for r in pop.residents().iter().filter(|r| r.support_measure) {
        let id = r.id.as_str();
        let guardians: HashSet<&str> = r.guardians.iter().map(|g| g.id.as_str()).collect();
        // The protected person may read about themselves, and so may their guardian.
        let others: Vec<&&str> = readers
            .iter()
            .filter(|&&x| x != id && !guardians.contains(x))
            .collect();
        if others.is_empty() {
            continue;
        }
        for secret in [name(id), kana(id), address(id)] {
            assert!(
                !text.contains(&secret),
                "{n}: {secret} (protected {id}) is in a draft {others:?} can read:\n{text}"
            );
        }
    }
    for shown in case.shown {
        assert!(text.contains(&name(shown)), "{n}: {shown} missing:\n{text}");
    }
}

const DEATH: &str = "{ event: death }";
const DEATH_DAY: &str = "2026-09-01";
/// A 65th birthday on 2026-05-01 is attained (and notified) on 2026-04-30.
const AGE_65: &str = "{ age_attained: 65 }";
const AGE_65_DAY: &str = "2026-04-30";
/// Born 2026-01-15: three months old on 2026-04-15.
const MONTHS_3: &str = "{ age_months: 3 }";
const MONTHS_3_DAY: &str = "2026-04-15";
const BABY: &str = "2026-01-15";

const PROTECTED: &str = r#","support_measure":true"#;

fn proxy(of: &str) -> String {
    format!(r#","proxies":[{{"id":"{of}","scopes":["all"]}}]"#)
}

fn protected_with_proxy(of: &str) -> String {
    format!("{PROTECTED}{}", proxy(of))
}

fn guardians(ids: &[&str]) -> String {
    let list: Vec<String> = ids.iter().map(|g| format!(r#"{{"id":"{g}"}}"#)).collect();
    format!(r#","guardians":[{}]"#, list.join(","))
}

fn cases() -> Vec<Case> {
    vec![
        // --- the subject is protected ---
        Case {
            name: "subject × householder/proxy: a protected adult is told herself only",
            trigger: AGE_65,
            audience: "[subject, householder, proxies]",
            day: AGE_65_DAY,
            residents: vec![
                person("A", "1970-01-01", "H1", "世帯主", ""),
                person("V", "1961-05-01", "H1", "妻", &protected_with_proxy("X")),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "V",
            recipients: &["V:Subject"],
            staff: &[],
            shown: &["V", "A"],
        },
        Case {
            name: "subject × survivors/proxy: a protected deceased goes to staff",
            trigger: DEATH,
            audience: "[survivors, proxies]",
            day: DEATH_DAY,
            residents: vec![
                deceased(person("D", "1950-01-01", "H1", "世帯主", PROTECTED)),
                person("W", "1952-01-01", "H1", "妻", &proxy("X")),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "D",
            recipients: &[],
            staff: &["support measure (支援措置)", "survivors", "the subject"],
            shown: &[],
        },
        Case {
            name: "child subject × guardian: a protected minor through her guardian only",
            trigger: MONTHS_3,
            audience: "[subject, householder, proxies]",
            day: MONTHS_3_DAY,
            residents: vec![
                person("G", "1960-01-01", "H1", "世帯主", ""),
                person("M", "1995-01-01", "H1", "子", &proxy("X")),
                person(
                    "C",
                    BABY,
                    "H1",
                    "子の子",
                    &format!("{PROTECTED}{}", guardians(&["M"])),
                ),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "C",
            recipients: &["M:Guardian"],
            staff: &[],
            shown: &["C", "M", "G"],
        },
        Case {
            name: "child subject × householder: a protected minor without guardians goes to staff",
            trigger: MONTHS_3,
            audience: "[subject, proxies]",
            day: MONTHS_3_DAY,
            residents: vec![
                person("G", "1960-01-01", "H1", "世帯主", &proxy("X")),
                person("C", BABY, "H1", "子の子", &protected_with_proxy("X")),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "C",
            recipients: &[],
            staff: &["support measure (支援措置)", "householder", "the subject"],
            shown: &[],
        },
        Case {
            name: "subject × guardian: a protected mother and child, the mother's draft names both",
            trigger: MONTHS_3,
            audience: "[guardians, proxies]",
            day: MONTHS_3_DAY,
            residents: vec![
                person("M", "1991-07-19", "H1", "世帯主", &protected_with_proxy("X")),
                person(
                    "C",
                    BABY,
                    "H1",
                    "子",
                    &format!("{PROTECTED}{}", guardians(&["M"])),
                ),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "C",
            recipients: &["M:Guardian"],
            staff: &[],
            shown: &["C", "M"],
        },
        // --- a survivor (or the householder) is protected, the subject is not ---
        Case {
            name: "survivor × proxy: the protected widow is told, her proxy is not, the son's draft withholds her",
            trigger: DEATH,
            audience: "[survivors, proxies]",
            day: DEATH_DAY,
            residents: vec![
                deceased(person("D", "1950-01-01", "H1", "世帯主", "")),
                person("W", "1952-01-01", "H1", "妻", &protected_with_proxy("X")),
                person("S", "1980-01-01", "H1", "子", &proxy("Y")),
                person("X", "1970-01-01", "", "", ""),
                person("Y", "1971-01-01", "", "", ""),
            ],
            subject: "D",
            recipients: &["W:Survivor", "S:Survivor", "Y:Proxy"],
            staff: &[],
            shown: &["D", "S"],
        },
        Case {
            name: "survivor × proxy: a protected sole survivor is told herself, not her proxy",
            trigger: DEATH,
            audience: "[survivors, proxies]",
            day: DEATH_DAY,
            residents: vec![
                deceased(person("D", "1950-01-01", "H1", "世帯主", "")),
                person("W", "1952-01-01", "H1", "妻", &protected_with_proxy("X")),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "D",
            recipients: &["W:Survivor"],
            staff: &[],
            shown: &["D", "W"],
        },
        Case {
            name: "householder × proxy: a protected householder is told directly, not through her proxy",
            trigger: AGE_65,
            audience: "[subject, householder, proxies]",
            day: AGE_65_DAY,
            residents: vec![
                person("H", "1975-01-01", "H1", "世帯主", &protected_with_proxy("X")),
                person("S", "1961-05-01", "H1", "母", &proxy("Y")),
                person("X", "1970-01-01", "", "", ""),
                person("Y", "1971-01-01", "", "", ""),
            ],
            subject: "S",
            recipients: &["S:Subject", "H:Householder", "Y:Proxy"],
            staff: &[],
            shown: &["S"],
        },
        Case {
            name: "survivor × householder: the householder's draft withholds a protected member",
            trigger: AGE_65,
            audience: "[householder]",
            day: AGE_65_DAY,
            residents: vec![
                person("H", "1960-01-01", "H1", "世帯主", ""),
                person("S", "1961-05-01", "H1", "兄", ""),
                person("V", "1990-01-01", "H1", "子", PROTECTED),
            ],
            subject: "S",
            recipients: &["H:Householder"],
            staff: &[],
            shown: &["S", "H"],
        },
        // --- a child (a minor survivor, or a minor in the subject's household) is protected ---
        Case {
            name: "child survivor × guardian: through the living guardian in her household only, not her proxy; the sibling's draft withholds the child",
            trigger: DEATH,
            audience: "[survivors, proxies]",
            day: DEATH_DAY,
            residents: vec![
                deceased(person("D", "1970-01-01", "H1", "世帯主", "")),
                person(
                    "K",
                    "2015-01-01",
                    "H1",
                    "子",
                    &format!("{PROTECTED}{}", guardians(&["D", "G"])),
                ),
                person("S", "1995-01-01", "H1", "子", ""),
                person("G", "1975-01-01", "H1", "妻", &proxy("X")),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "D",
            recipients: &["G:Guardian", "S:Survivor"],
            staff: &[],
            shown: &["D", "S"],
        },
        Case {
            name: "child survivor × guardian elsewhere: a guardian outside the protected child's household is not told; staff reach the child, the sibling is still told",
            trigger: DEATH,
            audience: "[survivors, proxies]",
            day: DEATH_DAY,
            residents: vec![
                deceased(person("D", "1970-01-01", "H1", "世帯主", "")),
                person(
                    "K",
                    "2015-01-01",
                    "H1",
                    "子",
                    &format!("{PROTECTED}{}", guardians(&["D", "G"])),
                ),
                person("S", "1995-01-01", "H1", "子", ""),
                person("G", "1975-01-01", "H2", "世帯主", &proxy("X")),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "D",
            recipients: &["S:Survivor"],
            staff: &["guardians outside their household", "survivor K"],
            shown: &["D", "S"],
        },
        Case {
            name: "child subject × guardian elsewhere: a protected baby is told through the guardian she lives with, not the one in another household",
            trigger: MONTHS_3,
            audience: "[guardians]",
            day: MONTHS_3_DAY,
            residents: vec![
                person("M", "1990-01-01", "H1", "世帯主", ""),
                person(
                    "B",
                    BABY,
                    "H1",
                    "子",
                    &format!("{PROTECTED}{}", guardians(&["M", "F"])),
                ),
                person("F", "1985-01-01", "H2", "世帯主", ""),
            ],
            subject: "B",
            recipients: &["M:Guardian"],
            staff: &[],
            shown: &["B", "M"],
        },
        Case {
            name: "child subject × only guardian elsewhere: staff, not the guardian in another household",
            trigger: MONTHS_3,
            audience: "[subject, proxies]",
            day: MONTHS_3_DAY,
            residents: vec![
                person("G", "1960-01-01", "H1", "世帯主", ""),
                person(
                    "B",
                    BABY,
                    "H1",
                    "子の子",
                    &format!("{PROTECTED}{}", guardians(&["F"])),
                ),
                person("F", "1985-01-01", "H2", "世帯主", ""),
            ],
            subject: "B",
            recipients: &[],
            staff: &["guardians outside their household", "householder", "the subject"],
            shown: &[],
        },
        Case {
            name: "child survivor × householder: a protected minor whose only guardian died goes to staff",
            trigger: DEATH,
            audience: "[survivors, householder, proxies]",
            day: DEATH_DAY,
            residents: vec![
                deceased(person("D", "1980-01-01", "H1", "世帯主", &proxy("X"))),
                person(
                    "K",
                    "2015-01-01",
                    "H1",
                    "子",
                    &format!("{}{}", protected_with_proxy("X"), guardians(&["D"])),
                ),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "D",
            recipients: &[],
            staff: &["support measure (支援措置)", "survivor K"],
            shown: &[],
        },
        Case {
            name: "child survivor × household: the adult housemate is told, without the child; staff reach the child",
            trigger: DEATH,
            audience: "[survivors, proxies]",
            day: DEATH_DAY,
            residents: vec![
                deceased(person("D", "1980-01-01", "H1", "世帯主", "")),
                person(
                    "K",
                    "2015-01-01",
                    "H1",
                    "子",
                    &format!("{PROTECTED}{}", guardians(&["D"])),
                ),
                person("U", "1950-01-01", "H1", "母", &proxy("X")),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "D",
            recipients: &["U:Survivor", "X:Proxy"],
            staff: &["the household (a minor with no living guardian)", "survivor K"],
            shown: &["D", "U"],
        },
        Case {
            name: "child sibling × guardian/proxy: the baby's mother and her proxy are told, without the protected sibling",
            trigger: MONTHS_3,
            audience: "[guardians, proxies]",
            day: MONTHS_3_DAY,
            residents: vec![
                person("M", "1990-01-01", "H1", "世帯主", &proxy("X")),
                person("B", BABY, "H1", "子", &guardians(&["M"])),
                person(
                    "K",
                    "2012-01-01",
                    "H1",
                    "子",
                    &format!("{PROTECTED}{}", guardians(&["F"])),
                ),
                person("F", "1985-01-01", "", "", ""),
                person("X", "1970-01-01", "", "", ""),
            ],
            subject: "B",
            recipients: &["M:Guardian", "X:Proxy"],
            staff: &[],
            shown: &["B", "M"],
        },
    ]
}

#[test]
fn support_measures_hold_for_everyone_concerned() {
    // Every row runs, so one failure does not hide the others; each prints its own message.
    let failed: Vec<&str> = cases()
        .iter()
        .filter(|c| std::panic::catch_unwind(|| check(c)).is_err())
        .map(|c| c.name)
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn a_withheld_member_keeps_its_place_in_the_draft() {
    // The son reads the widow's death notice: she is listed, by the placeholder only, and
    // rules can tell (`withheld`) without failing on a missing name.
    let rs = rules(DEATH, "[survivors]");
    let pop = population(&[
        deceased(person("D", "1950-01-01", "H1", "世帯主", "")),
        person("W", "1952-01-01", "H1", "妻", PROTECTED),
        person("S", "1980-01-01", "H1", "子", ""),
    ]);
    let r = evaluate_day(&rs, &pop, DEATH_DAY.parse().unwrap());
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    let prefill = &r.decisions[0].prefill;
    assert_eq!(
        prefill["members"],
        serde_json::json!([
            format!("{WITHHELD} {WITHHELD} {WITHHELD}"),
            format!("{} {} {}", name("S"), kana("S"), address("S")),
        ])
    );
    assert_eq!(prefill["withheld_members"], 1);
}
