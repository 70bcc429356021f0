//! The data-item dictionary and the purposes: the bundled files load; records are compared
//! item by item; versions and purposes limit what an agency is given; every loader error is
//! reported at once, with its file, line and field.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oshirase_engine::items::{event_type, parse_dictionary, Dictionary, ItemCode, ItemSource};
use oshirase_engine::population::EventKind;
use oshirase_engine::purposes::{compile_sources, load_dir, Exchange, Following, ProtectedAddress};
use oshirase_engine::resident::{Resident, Status};
use oshirase_engine::LoadError;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bundled() -> Exchange {
    load_dir(&root().join("rules")).unwrap_or_else(|e| panic!("{e}"))
}

/// A record of the fixture town.
fn town(id: &str) -> Resident {
    let text = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| serde_json::from_str::<Resident>(l).unwrap())
        .find(|r| r.id.as_str() == id)
        .unwrap_or_else(|| panic!("no {id} in the fixture town"))
}

fn codes(list: &[&str]) -> BTreeSet<ItemCode> {
    list.iter().map(|c| ItemCode::parse(c).unwrap()).collect()
}

fn the_item<'d>(d: &'d Dictionary, source: &ItemSource) -> &'d str {
    d.items()
        .iter()
        .find(|i| &i.source == source)
        .unwrap_or_else(|| panic!("no item reads {source:?}"))
        .code
        .as_str()
}

#[test]
fn the_bundled_dictionary_and_purposes_load() {
    let x = bundled();
    let d = &x.dictionary;
    assert!(d.version() >= 2, "version {}", d.version());
    assert!(d
        .items()
        .iter()
        .all(|i| i.since >= 1 && i.since <= d.version()));
    assert!(
        d.items()
            .iter()
            .any(|i| i.since >= 2 && matches!(i.source, ItemSource::Attribute(_))),
        "version 2 adds an attribute item"
    );
    // Every register basic is in version 1.
    for source in [
        ItemSource::NameKanji,
        ItemSource::NameKana,
        ItemSource::BirthDate,
        ItemSource::Sex,
        ItemSource::Address,
        ItemSource::Household,
        ItemSource::Relationship,
        ItemSource::Status,
        ItemSource::StatusDate,
        ItemSource::Guardians,
        ItemSource::Proxies,
    ] {
        let item = d.get(the_item(d, &source)).unwrap();
        assert_eq!(item.since, 1, "{}", item.code);
        assert!(!item.name.is_empty() && !item.kind.is_empty());
    }
    // The attribute items read keys the register extracts really carry.
    let text = std::fs::read_to_string(root().join("fixtures/town.jsonl")).unwrap();
    for i in d.items() {
        if let ItemSource::Attribute(key) = &i.source {
            assert!(
                text.contains(&format!("\"{key}\":")),
                "{key} is in no record"
            );
        }
    }
    assert!(x.purposes.len() >= 3);
    for p in x.purposes.values() {
        assert!(!p.items.is_empty(), "{}", p.id);
        assert!(p.items.iter().all(|c| d.get(c.as_str()).is_some()));
        assert!(
            p.file.ends_with(".yaml") && p.line >= 1,
            "{}:{}",
            p.file,
            p.line
        );
        assert_eq!(x.purpose(p.id.as_str()), Some(p));
    }
    let pension = x.purpose("nenkin-kyufu").unwrap();
    assert_eq!(pension.following, Following::Persons);
    assert_eq!(
        pension.items,
        codes(&[
            "name",
            "name_kana",
            "birth_date",
            "sex",
            "address",
            "status",
            "status_date"
        ])
    );
    assert!(x
        .purposes
        .values()
        .any(|p| p.following == Following::Municipality));
    let school = x.purpose("gakureibo").unwrap();
    assert!(school.items.contains("guardians"));
    assert!(
        x.purposes.values().any(|p| p
            .items
            .iter()
            .any(|c| d.get(c.as_str()).unwrap().since >= 2)),
        "one purpose uses a version-2 item"
    );
    assert!(x.purpose("no-such-purpose").is_none());
}

#[test]
fn identical_records_change_nothing() {
    let d = bundled().dictionary;
    for id in ["R00001", "R00007"] {
        let r = town(id);
        assert_eq!(d.changed(Some(&r), &r.clone()), BTreeSet::new(), "{id}");
    }
}

#[test]
fn a_new_address_changes_the_address_item_only() {
    let d = bundled().dictionary;
    let old = town("R00001");
    let mut new = old.clone();
    new.address.text.push_str("の2");
    let address = the_item(&d, &ItemSource::Address);
    assert_eq!(d.changed(Some(&old), &new), codes(&[address]));
    new.address.postal_code = None;
    assert_eq!(d.changed(Some(&old), &new), codes(&[address]));
    assert!(d.is_address(d.get(address).unwrap()));
    assert!(d
        .items()
        .iter()
        .filter(|i| i.code.as_str() != address)
        .all(|i| !d.is_address(i)));
}

#[test]
fn a_death_changes_the_status_and_its_date() {
    let d = bundled().dictionary;
    let old = town("R00001");
    let mut new = old.clone();
    let date = chrono::NaiveDate::from_ymd_opt(2026, 10, 3).unwrap();
    new.status = Status::Deceased {
        date,
        recorded: None,
    };
    let (status, status_date) = (
        the_item(&d, &ItemSource::Status),
        the_item(&d, &ItemSource::StatusDate),
    );
    assert_eq!(d.changed(Some(&old), &new), codes(&[status, status_date]));
    let item = |c: &str| d.get(c).unwrap();
    assert_eq!(
        d.value(item(status), &new),
        serde_json::json!({ "kind": "deceased", "reason": null })
    );
    assert_eq!(
        d.value(item(status), &old),
        serde_json::json!({ "kind": "resident", "reason": "move_in" })
    );
    assert_eq!(d.value(item(status_date), &new), "2026-10-03");
    // The day it reached the register is not an item.
    let mut late = new.clone();
    late.status = Status::Deceased {
        date,
        recorded: Some(chrono::NaiveDate::from_ymd_opt(2026, 10, 5).unwrap()),
    };
    assert_eq!(d.changed(Some(&new), &late), BTreeSet::new());
}

#[test]
fn an_attribute_change_is_its_item_and_other_attributes_are_none() {
    let d = bundled().dictionary;
    let old = town("R00001");
    let (code, key) = d
        .items()
        .iter()
        .find_map(|i| match &i.source {
            ItemSource::Attribute(k) if old.attributes.contains_key(k) => {
                Some((i.code.as_str(), k.clone()))
            }
            _ => None,
        })
        .expect("R00001 has an attribute of the dictionary");
    let mut new = old.clone();
    new.attributes
        .insert(key.clone(), serde_json::Value::Bool(!old.flag(&key)));
    assert_eq!(d.changed(Some(&old), &new), codes(&[code]));
    new.attributes.remove(&key);
    assert_eq!(d.changed(Some(&old), &new), codes(&[code]));
    assert_eq!(d.value(d.get(code).unwrap(), &new), serde_json::Value::Null);
    // An attribute no item reads is no agency's business.
    let mut other = old.clone();
    other
        .attributes
        .insert("not_an_item".into(), serde_json::Value::Bool(true));
    assert_eq!(d.changed(Some(&old), &other), BTreeSet::new());
}

#[test]
fn a_household_move_changes_household_and_relationship() {
    let d = bundled().dictionary;
    let old = town("R00007");
    let mut new = old.clone();
    let first = town("R00001");
    new.household = first.household.clone();
    assert_eq!(
        d.changed(Some(&old), &new),
        codes(&[
            the_item(&d, &ItemSource::Household),
            the_item(&d, &ItemSource::Relationship)
        ])
    );
    new.guardians.pop();
    assert!(d
        .changed(Some(&old), &new)
        .contains(the_item(&d, &ItemSource::Guardians)));
}

#[test]
fn a_new_record_gives_every_item_with_a_value() {
    let d = bundled().dictionary;
    let child = town("R00007");
    let all = d.changed(None, &child);
    for source in [
        ItemSource::NameKanji,
        ItemSource::NameKana,
        ItemSource::BirthDate,
        ItemSource::Sex,
        ItemSource::Address,
        ItemSource::Household,
        ItemSource::Relationship,
        ItemSource::Status,
        ItemSource::StatusDate,
        ItemSource::Guardians,
    ] {
        assert!(all.contains(the_item(&d, &source)), "{source:?}");
    }
    // No proxy: nothing to tell. An item is there exactly when the record has a value for it.
    assert!(!all.contains(the_item(&d, &ItemSource::Proxies)));
    for i in d.items() {
        let v = d.value(i, &child);
        let has = !(v.is_null() || v.as_array().is_some_and(|a| a.is_empty()));
        assert_eq!(all.contains(&i.code), has, "{}", i.code);
    }
    let adult = town("R00001");
    assert!(!d
        .changed(None, &adult)
        .contains(the_item(&d, &ItemSource::Guardians)));
}

#[test]
fn values_are_written_as_agencies_read_them() {
    let d = bundled().dictionary;
    let r = town("R00007");
    let v = |s: ItemSource| d.value(d.get(the_item(&d, &s)).unwrap(), &r);
    assert_eq!(v(ItemSource::NameKanji), r.name.kanji.as_str());
    assert_eq!(v(ItemSource::NameKana), r.name.kana.as_str());
    assert_eq!(v(ItemSource::BirthDate), "2024-08-29");
    assert_eq!(v(ItemSource::Sex), 2);
    assert_eq!(
        v(ItemSource::Address),
        serde_json::json!({
            "local_gov_code": "133621",
            "postal_code": "100-0301",
            "text": r.address.text,
        })
    );
    assert_eq!(v(ItemSource::Household), "H0002");
    assert_eq!(v(ItemSource::Relationship), "子の子");
    assert_eq!(
        v(ItemSource::Guardians),
        serde_json::json!(["R00005", "R00006"])
    );
    assert_eq!(v(ItemSource::Proxies), serde_json::json!([]));
}

#[test]
fn readers_of_version_1_never_see_version_2_items() {
    let x = bundled();
    let d = &x.dictionary;
    let at1: BTreeSet<&str> = d.known_at(1).map(|i| i.code.as_str()).collect();
    let newer: Vec<&str> = d
        .items()
        .iter()
        .filter(|i| i.since >= 2)
        .map(|i| i.code.as_str())
        .collect();
    assert!(!newer.is_empty());
    assert!(newer.iter().all(|c| !at1.contains(c)), "{at1:?}");
    assert_eq!(at1.len() + newer.len(), d.items().len());
    assert_eq!(d.known_at(d.version()).count(), d.items().len());
    assert_eq!(d.known_at(0).count(), 0);
}

#[test]
fn permitted_is_the_purpose_the_version_and_the_request() {
    let x = bundled();
    let (purpose, newer) = x
        .purposes
        .values()
        .find_map(|p| {
            p.items
                .iter()
                .find(|c| x.dictionary.get(c.as_str()).unwrap().since >= 2)
                .map(|c| (p, c.clone()))
        })
        .unwrap();
    let now = x.permitted(purpose, x.dictionary.version(), None);
    assert_eq!(now, purpose.items);
    let old = x.permitted(purpose, 1, None);
    assert!(!old.contains(&newer));
    assert_eq!(old.len() + 1, now.len());
    // A request narrows it; asking for what the purpose does not allow gives nothing more.
    let not_permitted = x
        .dictionary
        .items()
        .iter()
        .map(|i| i.code.clone())
        .find(|c| !purpose.items.contains(c))
        .expect("an item the purpose may not receive");
    let name = ItemCode::parse(the_item(&x.dictionary, &ItemSource::NameKanji)).unwrap();
    let asked: BTreeSet<ItemCode> = [name.clone(), newer.clone(), not_permitted].into();
    assert_eq!(
        x.permitted(purpose, x.dictionary.version(), Some(&asked)),
        [name.clone(), newer].into()
    );
    assert_eq!(x.permitted(purpose, 1, Some(&asked)), [name].into());
    assert_eq!(
        x.permitted(purpose, 1, Some(&BTreeSet::new())),
        BTreeSet::new()
    );
}

#[test]
fn event_types_take_the_most_significant_event() {
    use EventKind::*;
    let order = [Death, MoveOut, MoveIn, Birth, HouseholderChange];
    for (i, a) in order.iter().enumerate() {
        let alone = event_type(&[*a]);
        assert!(alone.starts_with("jp.lg.oshirase.resident."), "{alone}");
        for b in &order[i..] {
            assert_eq!(event_type(&[*a, *b]), alone, "{a:?} over {b:?}");
            assert_eq!(event_type(&[*b, *a]), alone, "{a:?} over {b:?}");
        }
    }
    let all: BTreeSet<&str> = order.iter().map(|k| event_type(&[*k])).collect();
    assert_eq!(all.len(), order.len());
    assert_eq!(event_type(&[Death]), "jp.lg.oshirase.resident.died");
    assert_eq!(event_type(&[]), "jp.lg.oshirase.resident.changed");
}

// ---------------------------------------------------------------------------------------------
// Loader errors
// ---------------------------------------------------------------------------------------------

const DICTIONARY: &str = "\
version: 2
items:
  - code: name
    name: 氏名
    standard_name: 氏名
    gif_term: 氏名
    kind: text
    since: 1
    source: name_kanji
  - code: address
    name: 住所
    standard_name: 住所
    gif_term: 居住住所
    kind: object
    since: 1
    source: address
  - code: kokuho
    name: 国民健康保険の資格
    standard_name: 国民健康保険の資格
    gif_term: ~
    kind: flag
    since: 2
    source: { attribute: kokuho }
";

const PURPOSE: &str = "\
id: test-purpose
body: 日本年金機構
duty: 年金給付の支給に関する事務
legal_basis: 住民基本台帳法第30条の9
items: [name, address]
following: persons
";

fn compile(dictionary: &str, purposes: &[(&str, &str)]) -> Result<Exchange, Vec<LoadError>> {
    let purposes: Vec<(String, String)> = purposes
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
    compile_sources(("items/dictionary.yaml", dictionary), &purposes).map_err(|e| e.0)
}

/// Each error as (file, line, field).
fn places(errors: &[LoadError]) -> Vec<(&str, usize, &str)> {
    errors
        .iter()
        .map(|e| (e.file.as_str(), e.line, e.field.as_str()))
        .collect()
}

#[test]
fn good_sources_compile() {
    let x = compile(DICTIONARY, &[("purposes/test-purpose.yaml", PURPOSE)]).unwrap();
    let p = x.purpose("test-purpose").unwrap();
    assert_eq!(
        p.protected_address,
        ProtectedAddress::Withhold,
        "the default"
    );
    assert_eq!((p.file.as_str(), p.line), ("purposes/test-purpose.yaml", 1));
    let marked = PURPOSE.replace(
        "following: persons",
        "following: municipality\nprotected_address: provide_marked",
    );
    let x = compile(DICTIONARY, &[("p.yaml", &marked)]).unwrap();
    let p = x.purpose("test-purpose").unwrap();
    assert_eq!(p.protected_address, ProtectedAddress::ProvideMarked);
    assert_eq!(p.following, Following::Municipality);
    // A dictionary alone parses the same.
    assert_eq!(
        parse_dictionary("d.yaml", DICTIONARY).unwrap(),
        x.dictionary
    );
    // A byte order mark, as some editors write, is not part of the file.
    assert!(compile(&format!("\u{feff}{DICTIONARY}"), &[]).is_ok());
}

#[test]
fn every_dictionary_error_is_reported_at_once_with_its_place() {
    let bad = DICTIONARY
        // Line 3: a code of the wrong shape.
        .replacen("code: name\n", "code: Name\n", 1)
        // Line 17: a code already used (on line 10).
        .replacen("code: address\n", "code: kokuho\n", 1)
        // Line 15: a version the dictionary is not at.
        .replacen(
            "since: 1\n    source: address",
            "since: 3\n    source: address",
            1,
        )
        // Line 23: an unknown source.
        .replace("source: { attribute: kokuho }", "source: kokuho");
    let errs = compile(&bad, &[]).unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("items/dictionary.yaml", 3, "items[0].code"),
            ("items/dictionary.yaml", 15, "items[1].since"),
            ("items/dictionary.yaml", 17, "items[2].code"),
            ("items/dictionary.yaml", 23, "items[2].source"),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("not an item code"), "{errs:#?}");
    assert!(
        errs[1].message.contains("version 3") && errs[1].message.contains("version 2"),
        "{errs:#?}"
    );
    assert!(
        errs[2]
            .message
            .contains("`kokuho` is already defined (items[1])"),
        "{errs:#?}"
    );
    assert!(
        errs[3].message.contains("unknown variant `kokuho`"),
        "{errs:#?}"
    );
    assert!(
        errs[3].message.contains("`name_kanji`"),
        "lists the sources: {errs:#?}"
    );
}

#[test]
fn dictionary_errors_of_keys_kinds_and_versions() {
    let bad = DICTIONARY
        .replacen("version: 2", "version: 0\nrevision: 1", 1)
        .replacen("kind: text", "kind: date", 1)
        .replacen(
            "gif_term: 居住住所\n",
            "gif_term: 居住住所\n    gif: 住所\n",
            1,
        );
    let errs = compile(&bad, &[]).unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("items/dictionary.yaml", 1, "version"),
            ("items/dictionary.yaml", 2, "revision"),
            ("items/dictionary.yaml", 8, "items[0].kind"),
            ("items/dictionary.yaml", 15, "items[1].gif"),
        ],
        "{errs:#?}"
    );
    assert!(errs[1].message.contains("unknown field `revision`"));
    assert!(errs[2].message.contains("kind `text`"), "{errs:#?}");
    assert!(errs[3].message.contains("unknown field `gif`"), "{errs:#?}");
    // The same source read twice, and an attribute key of the wrong shape.
    let twice = format!(
        "{DICTIONARY}  - code: kanji\n    name: 氏名\n    standard_name: 氏名\n    gif_term: 氏名\n    kind: text\n    since: 2\n    source: name_kanji\n  - code: odd\n    name: x\n    standard_name: x\n    gif_term: ~\n    kind: flag\n    since: 2\n    source: {{ attribute: Odd-Key }}\n"
    );
    let errs = compile(&twice, &[]).unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("items/dictionary.yaml", 30, "items[3].source"),
            ("items/dictionary.yaml", 37, "items[4].source"),
        ],
        "{errs:#?}"
    );
    assert!(errs[0]
        .message
        .contains("items[0] already reads `name_kanji`"));
    assert!(errs[1].message.contains("not an attribute key"));
}

#[test]
fn every_purpose_error_is_reported_at_once_with_its_place() {
    let own = |id: &str, old: &str, new: &str| {
        PURPOSE
            .replace("id: test-purpose", &format!("id: {id}"))
            .replace(old, new)
    };
    let unknown_item = own(
        "purpose-b",
        "items: [name, address]",
        "items: [name, adress]",
    );
    let unknown_key = own(
        "purpose-c",
        "following: persons",
        "following: persons\nfollows: all",
    );
    let bad_following = own("purpose-d", "following: persons", "following: everyone");
    let empty_items = own("purpose-e", "items: [name, address]", "items: []");
    let errs = compile(
        DICTIONARY,
        &[
            ("purposes/a.yaml", PURPOSE),
            ("purposes/b.yaml", &unknown_item),
            ("purposes/c.yaml", &unknown_key),
            ("purposes/d.yaml", &bad_following),
            ("purposes/e.yaml", &empty_items),
            // The same id again, in another file.
            ("purposes/f.yaml", PURPOSE),
        ],
    )
    .unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("purposes/b.yaml", 5, "items[1]"),
            ("purposes/c.yaml", 7, "follows"),
            ("purposes/d.yaml", 6, "following"),
            ("purposes/e.yaml", 5, "items"),
            ("purposes/f.yaml", 1, "id"),
        ],
        "{errs:#?}"
    );
    assert!(errs[0].message.contains("no item `adress`"), "{errs:#?}");
    let hint = errs[0].hint.as_deref().unwrap();
    assert!(
        hint.contains("name") && hint.contains("address") && hint.contains("kokuho"),
        "names the known items: {hint}"
    );
    assert!(errs[1].message.contains("unknown field `follows`"));
    assert!(
        errs[2].message.contains("unknown variant `everyone`")
            && errs[2].message.contains("`municipality`"),
        "{errs:#?}"
    );
    assert!(errs[3].message.contains("at least one item"));
    assert!(
        errs[4]
            .message
            .contains("already defined in purposes/a.yaml:1"),
        "{errs:#?}"
    );
    // Every message reads as `file:line:column: field …`.
    assert!(errs[0]
        .to_string()
        .starts_with("purposes/b.yaml:5:1: field `items[1]`: "));
}

#[test]
fn several_errors_in_one_purpose_and_in_both_kinds_of_file() {
    let bad = "\
id: test-purpose
body: ''
duty: 年金給付の支給に関する事務
legal_basis: 住民基本台帳法第30条の9
items:
  - name
  - name
  - Bad
following: person
protected_address: show
";
    let dictionary = DICTIONARY.replacen("since: 2", "since: 5", 1);
    let errs = compile(&dictionary, &[("p.yaml", bad)]).unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("items/dictionary.yaml", 22, "items[2].since"),
            ("p.yaml", 9, "following"),
            ("p.yaml", 10, "protected_address"),
        ],
        "{errs:#?}"
    );
    // With the enums right, the checks after parsing report the rest.
    let errs = compile(
        DICTIONARY,
        &[(
            "p.yaml",
            &bad.replace("person\n", "persons\n")
                .replace("show", "withhold"),
        )],
    )
    .unwrap_err();
    assert_eq!(
        places(&errs),
        [
            ("p.yaml", 2, "body"),
            ("p.yaml", 7, "items[1]"),
            ("p.yaml", 8, "items[2]"),
        ],
        "{errs:#?}"
    );
    assert!(errs[1].message.contains("listed twice"));
    assert!(errs[2].message.contains("not an item code"));
}

#[test]
fn an_item_with_other_errors_still_defines_its_code() {
    // The purpose naming `kokuho` gets no error of its own: the dictionary's is enough.
    let dictionary = DICTIONARY.replace("kind: flag", "kind: flags");
    let purpose = PURPOSE.replace("[name, address]", "[name, kokuho]");
    let errs = compile(&dictionary, &[("p.yaml", &purpose)]).unwrap_err();
    assert_eq!(
        places(&errs),
        [("items/dictionary.yaml", 21, "items[2].kind")],
        "{errs:#?}"
    );
}

#[test]
fn malformed_files_are_errors_with_their_line() {
    let errs = compile("version: 1\nitems: [\n", &[("p.yaml", "id: [unclosed\n")]).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs.iter().all(|e| e.line >= 1 && e.field.is_empty()));
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let errs = compile(&format!("version: {deep}\n"), &[]).unwrap_err();
    assert!(errs[0].message.contains("nested deeper"), "{errs:#?}");
    let errs = compile("", &[("p.yaml", "")]).unwrap_err();
    assert_eq!(places(&errs).len(), 2, "{errs:#?}");
    let errs = compile("- version: 1\n", &[("p.yaml", "- id: x\n")]).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:#?}");
}

#[test]
fn load_dir_reads_a_rules_folder() {
    let dir = tempfile::tempdir().unwrap();
    // No dictionary: an error naming the file.
    let errs = load_dir(dir.path()).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert!(errs[0].file.ends_with("items/dictionary.yaml"), "{errs:#?}");
    std::fs::create_dir(dir.path().join("items")).unwrap();
    std::fs::write(dir.path().join("items/dictionary.yaml"), DICTIONARY).unwrap();
    // No purposes folder: no purposes.
    assert!(load_dir(dir.path()).unwrap().purposes.is_empty());
    std::fs::create_dir(dir.path().join("purposes")).unwrap();
    std::fs::write(dir.path().join("purposes/test-purpose.yaml"), PURPOSE).unwrap();
    std::fs::write(dir.path().join("purposes/notes.txt"), "not a purpose").unwrap();
    let x = load_dir(dir.path()).unwrap();
    let p = x.purpose("test-purpose").unwrap();
    assert!(p.file.ends_with("purposes/test-purpose.yaml"), "{}", p.file);
    // A folder named like a purpose file is an error, not skipped.
    std::fs::create_dir(dir.path().join("purposes/odd.yaml")).unwrap();
    let errs = load_dir(dir.path()).unwrap_err().0;
    assert!(
        errs[0].file.ends_with("odd.yaml") && errs[0].message.contains("not a regular file"),
        "{errs:#?}"
    );
}

/// The ```yaml dictionary and ```yaml purpose examples of rules/README.md load (the docs
/// test of the binary loads only plain ```yaml blocks, as rules, cases or parameters).
#[test]
fn the_readme_examples_load() {
    let text = std::fs::read_to_string(root().join("rules/README.md")).unwrap();
    let mut seen = (0, 0);
    let mut open: Option<(String, usize, String)> = None;
    for (i, l) in text.lines().enumerate() {
        match (l.trim_start().strip_prefix("```"), open.take()) {
            (Some(_), Some((info, line, body))) => {
                let at = format!("rules/README.md:{line}");
                match info.as_str() {
                    "yaml dictionary" => {
                        parse_dictionary(&at, &body).unwrap_or_else(|e| panic!("{e}"));
                        seen.0 += 1;
                    }
                    "yaml purpose" => {
                        let dictionary = bundled().dictionary;
                        let x = compile(
                            &std::fs::read_to_string(root().join("rules/items/dictionary.yaml"))
                                .unwrap(),
                            &[(&at, &body)],
                        )
                        .unwrap_or_else(|e| panic!("{e:#?}"));
                        assert_eq!(x.dictionary, dictionary);
                        seen.1 += 1;
                    }
                    _ => {}
                }
            }
            (Some(info), None) => open = Some((info.trim().to_owned(), i + 2, String::new())),
            (None, Some((info, line, mut body))) => {
                body.push_str(l);
                body.push('\n');
                open = Some((info, line, body));
            }
            (None, None) => {}
        }
    }
    assert!(seen.0 >= 1 && seen.1 >= 1, "examples found: {seen:?}");
}
