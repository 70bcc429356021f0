//! Purposes (`rules/purposes/*.yaml`): the legal-basis table of the agencies told of register
//! updates, like the rows of the 主務省令 that replaced 番号法 別表第二. A purpose names the
//! body and its duty, the law that lets it receive register items, the items it may receive,
//! whether it may follow a whole municipality or only the persons it registered interest in,
//! and what a support measure (支援措置) does to address items for it. Purpose binding lives
//! here, in the registration's purpose, not in the messages.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::catalogue::{locate, read_source, unreadable, yaml_files, LoadError, LoadErrors};

/// What `read_source` says the dictionary and purposes folders hold.
const HOLDS: &str = "this folder holds only YAML files";
use crate::items::{self, Dictionary, ItemCode};

/// A purpose's id: lower-case ASCII, digits and `-`, 3–64 characters, starting with a letter
/// (`nenkin-kyufu`). Interest registrations name it, so it never changes once published.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PurposeId(String);

impl PurposeId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (3..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{} is not a purpose id: 3-64 characters of a-z 0-9 and '-', starting with a letter",
                crate::shown::quoted(s)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Lets the purposes be looked up by an id given as text: the order and hash are the string's.
impl std::borrow::Borrow<str> for PurposeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PurposeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PurposeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whom an agency may follow under a purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Following {
    /// Only the persons it registered interest in (it has a case for them).
    Persons,
    /// Everyone on a municipality's register, where the law gives it the whole population
    /// (an insurer of everyone of an age).
    Municipality,
}

/// What a support measure (支援措置) does to address items for a purpose. Under 住民基本台帳法
/// and the 支援措置 rules of the 事務処理要領, a public body may still receive a protected
/// person's address where its duty needs it, but must treat it as protected: `provide_marked`
/// gives it, marked so. Any other purpose never sees it: `withhold`, the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectedAddress {
    #[default]
    Withhold,
    ProvideMarked,
}

/// One purpose, as loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purpose {
    pub id: PurposeId,
    /// The kind of body (日本年金機構).
    pub body: String,
    /// Its duty the items serve (年金給付の支給に関する事務).
    pub duty: String,
    /// The law that lets it receive them.
    pub legal_basis: String,
    pub items: BTreeSet<ItemCode>,
    pub following: Following,
    pub protected_address: ProtectedAddress,
    /// Where it is defined, for messages.
    pub file: String,
    pub line: usize,
}

/// The dictionary and the purposes: what `rules/items` and `rules/purposes` hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exchange {
    pub dictionary: Dictionary,
    pub purposes: BTreeMap<PurposeId, Purpose>,
}

impl Exchange {
    pub fn purpose(&self, id: &str) -> Option<&Purpose> {
        self.purposes.get(id)
    }

    /// The items an event or a pull may carry for this purpose to a reader of dictionary
    /// version `v`, limited to `asked` when given: purpose.items ∩ known_at(v) ∩ asked.
    pub fn permitted(
        &self,
        purpose: &Purpose,
        v: u32,
        asked: Option<&BTreeSet<ItemCode>>,
    ) -> BTreeSet<ItemCode> {
        let known: BTreeSet<&ItemCode> = self.dictionary.known_at(v).map(|i| &i.code).collect();
        purpose
            .items
            .iter()
            .filter(|c| known.contains(c) && asked.is_none_or(|a| a.contains(*c)))
            .cloned()
            .collect()
    }
}

/// One purpose as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurposeDoc {
    id: PurposeId,
    body: String,
    duty: String,
    legal_basis: String,
    items: Vec<String>,
    following: Following,
    #[serde(default)]
    protected_address: ProtectedAddress,
}

/// The dictionary's file under a rules folder.
pub const DICTIONARY_FILE: &str = "items/dictionary.yaml";
/// The purposes' folder under a rules folder: one purpose a file.
pub const PURPOSES_DIR: &str = "purposes";

/// Loads `dir/items/dictionary.yaml` and `dir/purposes/*.yaml` (dir = a rules folder). Every
/// error at once. The dictionary must be there; a folder without `purposes/` has none.
pub fn load_dir(dir: &Path) -> Result<Exchange, LoadErrors> {
    let mut errors = Vec::new();
    let dictionary_path = dir.join(DICTIONARY_FILE);
    let dictionary = match read_source(&dictionary_path, HOLDS) {
        Ok(text) => Some((dictionary_path.display().to_string(), text)),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let mut purposes = Vec::new();
    let purposes_dir = dir.join(PURPOSES_DIR);
    if purposes_dir.is_dir() {
        match yaml_files(&purposes_dir) {
            Err(e) => errors.push(unreadable(&purposes_dir, format!("cannot read: {e}"))),
            Ok(paths) => {
                for path in paths {
                    match read_source(&path, HOLDS) {
                        Ok(text) => purposes.push((path.display().to_string(), text)),
                        Err(e) => errors.push(e),
                    }
                }
            }
        }
    }
    match dictionary {
        Some((file, text)) if errors.is_empty() => compile_sources((&file, &text), &purposes),
        _ => Err(LoadErrors(errors)),
    }
}

/// The same from sources given as (file name, text) (the binary bundles the files).
pub fn compile_sources(
    dictionary: (&str, &str),
    purposes: &[(String, String)],
) -> Result<Exchange, LoadErrors> {
    let read = items::read_dictionary(dictionary.0, dictionary.1);
    let mut errors = read.errors;
    let mut out: BTreeMap<PurposeId, Purpose> = BTreeMap::new();
    for (file, text) in purposes {
        if let Some(p) = read_purpose(file, text, &read.codes, &read.dictionary, &out, &mut errors)
        {
            out.insert(p.id.clone(), p);
        }
    }
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Err(LoadErrors(errors));
    }
    Ok(Exchange {
        dictionary: read.dictionary,
        purposes: out,
    })
}

/// One purpose file, checked against the dictionary's codes and the purposes before it; its
/// errors go to `errors`, and a purpose with any is not returned.
fn read_purpose(
    file: &str,
    text: &str,
    codes: &BTreeSet<ItemCode>,
    dictionary: &Dictionary,
    before: &BTreeMap<PurposeId, Purpose>,
    errors: &mut Vec<LoadError>,
) -> Option<Purpose> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value = match items::parse_value(file, text) {
        Ok(v) => v,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    if value.is_null() {
        errors.push(items::error_at(
            file,
            text,
            "",
            "an empty file; a purpose file holds one purpose".into(),
            None,
        ));
        return None;
    }
    let doc: PurposeDoc = match items::read_all(file, text, "", &value) {
        Ok(d) => d,
        Err(e) => {
            errors.extend(e);
            return None;
        }
    };
    let found = errors.len();
    let mut fail = |field: &str, message: String, hint: Option<String>| {
        errors.push(items::error_at(file, text, field, message, hint));
    };
    if let Some(first) = before.get(&doc.id) {
        fail(
            "id",
            format!(
                "purpose `{}` is already defined in {}:{}",
                doc.id, first.file, first.line
            ),
            Some("every purpose has its own id".to_owned()),
        );
    }
    for (field, value) in [
        ("body", &doc.body),
        ("duty", &doc.duty),
        ("legal_basis", &doc.legal_basis),
    ] {
        if value.trim().is_empty() {
            fail(field, "must not be empty".into(), None);
        }
    }
    if doc.items.is_empty() {
        fail(
            "items",
            "needs at least one item".into(),
            Some("a purpose with no item would be told of nothing".to_owned()),
        );
    }
    let known_hint = || {
        let known: Vec<&str> = dictionary.items().iter().map(|i| i.code.as_str()).collect();
        Some(format!("known items: {}", known.join(", ")))
    };
    let mut items = BTreeSet::new();
    for (k, raw) in doc.items.iter().enumerate() {
        let field = format!("items[{k}]");
        match ItemCode::parse(raw) {
            Err(e) => fail(&field, e, known_hint()),
            Ok(code) if !codes.contains(&code) => fail(
                &field,
                format!("no item `{code}` in the dictionary"),
                known_hint(),
            ),
            Ok(code) => {
                if !items.insert(code.clone()) {
                    fail(&field, format!("item `{code}` is listed twice"), None);
                }
            }
        }
    }
    if errors.len() > found {
        return None;
    }
    Some(Purpose {
        id: doc.id,
        body: doc.body,
        duty: doc.duty,
        legal_basis: doc.legal_basis,
        items,
        following: doc.following,
        protected_address: doc.protected_address,
        file: file.to_owned(),
        line: locate(text, "id"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_ids_parse() {
        for ok in ["nenkin-kyufu", "abc", "a1-b2"] {
            assert_eq!(PurposeId::parse(ok).unwrap().to_string(), ok);
        }
        for bad in ["", "ab", "Nenkin", "1abc", "nenkin_kyufu", "年金"] {
            assert!(PurposeId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PurposeId::parse(&"a".repeat(65)).is_err());
        let id: PurposeId = serde_json::from_str("\"nenkin-kyufu\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"nenkin-kyufu\"");
    }

    #[test]
    fn protected_addresses_are_withheld_unless_the_purpose_says() {
        assert_eq!(ProtectedAddress::default(), ProtectedAddress::Withhold);
    }
}
