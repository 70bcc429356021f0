//! Identifier newtypes that parse: a value of these types is valid by construction.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// Why an identifier was refused. The message is written for the person fixing the data; it
/// quotes at most the first characters of a value ([`crate::shown::cap`]), and never a
/// value that may be personal (a My Number, an e-mail address).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("{0:?} is longer than 64 characters")]
    TooLong(String),
    #[error("{0:?} has a character outside A-Z a-z 0-9 - _")]
    BadChar(String),
    #[error("looks like a 12-digit 個人番号 (My Number); use an opaque id instead")]
    LooksLikeMyNumber,
    #[error("{0:?} must be 6 digits")]
    CodeShape(String),
    #[error("check digit of {code:?} should be {expected} (expected {corrected})")]
    CheckDigit {
        code: String,
        expected: u32,
        corrected: String,
    },
    #[error("{0:?} must be 3-64 characters of a-z 0-9 and '-', starting with a letter")]
    RuleIdShape(String),
    #[error("not an e-mail address (need one '@' with text on both sides and no spaces)")]
    Email,
    #[error("{0:?} is not a decision key \"RULE/RESIDENT/OCCURRENCE\"")]
    DecisionKeyShape(String),
}

fn check_opaque(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > 64 {
        return Err(IdError::TooLong(crate::shown::cap(s)));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(IdError::BadChar(crate::shown::cap(s)));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                #[allow(clippy::redundant_closure_call)]
                ($parse)(s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// Opaque resident id (宛名番号 or a pseudonym). Never the 個人番号.
    ResidentId,
    |s: &str| {
        check_opaque(s)?;
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::LooksLikeMyNumber);
        }
        Ok(())
    }
);

string_newtype!(
    /// 世帯番号.
    HouseholdId,
    check_opaque
);

string_newtype!(
    /// Rule id: lower-case ASCII with dashes, also used as a file name.
    RuleId,
    |s: &str| {
        let ok = (3..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(())
        } else {
            Err(IdError::RuleIdShape(crate::shown::cap(s)))
        }
    }
);

string_newtype!(
    /// An e-mail address, checked for shape only (delivery proves the rest).
    EmailAddress,
    |s: &str| {
        let mut parts = s.split('@');
        let ok = match (parts.next(), parts.next(), parts.next()) {
            (Some(local), Some(domain), None) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !s.chars().any(char::is_whitespace)
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(IdError::Email)
        }
    }
);

/// The idempotency key of a decision: (rule, subject, occurrence), written
/// `RULE/RESIDENT/OCCURRENCE` where the occurrence is the milestone date or the event id.
/// Unique in the store; parsed wherever one arrives from outside (a URL, a stored row).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DecisionKey(String);

/// Longest occurrence part: an event id is its kind, the subject id and a date.
const MAX_OCCURRENCE: usize = 96;

impl DecisionKey {
    pub fn new(rule: &RuleId, subject: &ResidentId, occurrence: &str) -> Self {
        Self(format!("{rule}/{subject}/{occurrence}"))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        // Never echo a long input whole: a key may come from any URL.
        let shape = || {
            let shown: String = s.chars().take(80).collect();
            IdError::DecisionKeyShape(shown)
        };
        let mut parts = s.split('/');
        let (Some(rule), Some(subject), Some(occurrence), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        RuleId::parse(rule).map_err(|_| shape())?;
        ResidentId::parse(subject).map_err(|_| shape())?;
        let occurrence_ok = !occurrence.is_empty()
            && occurrence.len() <= MAX_OCCURRENCE
            && occurrence
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !occurrence_ok {
            return Err(shape());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The rule part.
    pub fn rule(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }

    /// The subject part.
    pub fn subject(&self) -> &str {
        self.0.split('/').nth(1).unwrap_or_default()
    }
}

impl fmt::Display for DecisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DecisionKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// 全国地方公共団体コード: 6 digits, the last a mod-11 check digit over weights 6-5-4-3-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalGovCode([u8; 6]);

impl LocalGovCode {
    /// The check digit for the first five digits.
    pub fn check_digit(five: &[u8; 5]) -> u8 {
        let s: u32 = five
            .iter()
            .zip([6u32, 5, 4, 3, 2])
            .map(|(d, w)| u32::from(*d) * w)
            .sum();
        ((11 - s % 11) % 10) as u8
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bytes = s.as_bytes();
        if bytes.len() != 6 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(IdError::CodeShape(crate::shown::cap(s)));
        }
        let mut digits = [0u8; 6];
        for (d, b) in digits.iter_mut().zip(bytes) {
            *d = b - b'0';
        }
        let five = [digits[0], digits[1], digits[2], digits[3], digits[4]];
        let expected = Self::check_digit(&five);
        if expected != digits[5] {
            return Err(IdError::CheckDigit {
                code: s.to_owned(),
                expected: u32::from(expected),
                corrected: format!("{}{}", &s[..5], expected),
            });
        }
        Ok(Self(digits))
    }

    /// The two-digit prefecture code.
    pub fn prefecture(&self) -> u8 {
        self.0[0] * 10 + self.0[1]
    }
}

impl fmt::Display for LocalGovCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Serialize for LocalGovCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LocalGovCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn local_gov_codes_from_the_domain_notes() {
        for ok in [
            "131016", "011002", "281000", "011011", "271403", "141003", "133621",
        ] {
            assert_eq!(LocalGovCode::parse(ok).unwrap().to_string(), ok);
        }
        assert_eq!(
            LocalGovCode::parse("133622").unwrap_err().to_string(),
            "check digit of \"133622\" should be 1 (expected 133621)"
        );
        assert!(matches!(
            LocalGovCode::parse("13362"),
            Err(IdError::CodeShape(_))
        ));
        assert!(matches!(
            LocalGovCode::parse("13362a"),
            Err(IdError::CodeShape(_))
        ));
        assert_eq!(LocalGovCode::parse("133621").unwrap().prefecture(), 13);
    }

    #[test]
    fn resident_ids_refuse_my_numbers_and_odd_characters() {
        assert!(ResidentId::parse("R00001").is_ok());
        assert!(ResidentId::parse("123456789012").is_err());
        assert!(ResidentId::parse("12345678901").is_ok());
        assert_eq!(ResidentId::parse(""), Err(IdError::Empty));
        assert!(matches!(ResidentId::parse("R 1"), Err(IdError::BadChar(_))));
        assert!(matches!(
            ResidentId::parse(&"x".repeat(65)),
            Err(IdError::TooLong(_))
        ));
    }

    #[test]
    fn rule_ids_and_emails() {
        assert!(RuleId::parse("kokumin-nenkin-shutoku").is_ok());
        for bad in ["ab", "Kokumin", "1abc", "a_b_c", "a b c"] {
            assert!(RuleId::parse(bad).is_err(), "{bad}");
        }
        assert!(EmailAddress::parse("taro@example.jp").is_ok());
        for bad in [
            "taro",
            "@example.jp",
            "taro@",
            "taro@example",
            "t aro@example.jp",
            "a@b@c.jp",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decision_keys_parse_or_say_why() {
        for ok in [
            "kokumin-nenkin-shutoku/R00372/2026-03-31",
            "shussho-todoke/R00701/birth-R00701-2026-10-06",
        ] {
            let k = DecisionKey::parse(ok).unwrap();
            assert_eq!(k.as_str(), ok);
            assert_eq!(
                DecisionKey::new(
                    &RuleId::parse(k.rule()).unwrap(),
                    &ResidentId::parse(k.subject()).unwrap(),
                    ok.rsplit('/').next().unwrap()
                ),
                k
            );
        }
        let long = format!("a-rule/R1/{}", "x".repeat(60_000));
        for bad in [
            "",
            "a-rule/R1",
            "a-rule/R1/2026-01-01/x",
            "A-Rule/R1/2026-01-01",
            "a-rule/R 1/2026-01-01",
            "a-rule/R1/",
            "a-rule/R1/2026-01-01\n",
            "a-rule/R1/%2e%2e",
            "/%09/evil.example",
            &long,
        ] {
            let e = DecisionKey::parse(bad).unwrap_err();
            assert!(matches!(e, IdError::DecisionKeyShape(_)), "{bad:?}: {e}");
            assert!(
                e.to_string().len() < 200,
                "the error does not echo a long key"
            );
        }
    }

    proptest! {
        #[test]
        fn decision_key_round_trips(
            rule in "[a-z][a-z0-9-]{2,40}",
            subject in "[A-Za-z0-9_-]{1,11}",
            occurrence in "[A-Za-z0-9_-]{1,96}",
        ) {
            let k = DecisionKey::new(
                &RuleId::parse(&rule).unwrap(),
                &ResidentId::parse(&subject).unwrap(),
                &occurrence,
            );
            let json = serde_json::to_string(&k).unwrap();
            prop_assert_eq!(serde_json::from_str::<DecisionKey>(&json).unwrap(), k.clone());
            prop_assert_eq!(DecisionKey::parse(k.as_str()).unwrap(), k);
        }

        #[test]
        fn every_five_digits_have_exactly_one_valid_code(n in 0u32..100_000) {
            let five = format!("{n:05}");
            let valid: Vec<u32> = (0..10)
                .filter(|c| LocalGovCode::parse(&format!("{five}{c}")).is_ok())
                .collect();
            prop_assert_eq!(valid.len(), 1);
            let code = format!("{five}{}", valid[0]);
            prop_assert_eq!(LocalGovCode::parse(&code).unwrap().to_string(), code);
        }

        #[test]
        fn resident_id_round_trips(s in "[A-Za-z0-9_-]{1,64}") {
            prop_assume!(!(s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())));
            let id = ResidentId::parse(&s).unwrap();
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<ResidentId>(&json).unwrap(), id);
        }
    }
}
