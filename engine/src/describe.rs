//! The rule language in words, as policy staff read it: each trigger, condition, audience and
//! recipient role says what it means in Japanese first, then in English ("… / …"). `explain`
//! prints these instead of the Rust names, so that one wording per kind lives here and
//! nowhere else.

use crate::calendar::MonthDay;
use crate::eval::{Role, ADULT_AGE};
use crate::population::EventKind;
use crate::rule::{AgeOn, Audience, Condition, FiscalYearAge, SexIs, Trigger, Validity};

const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// "10月1日".
fn month_day_ja(md: MonthDay) -> String {
    format!("{}月{}日", md.month, md.day)
}

/// "1 October".
fn month_day_en(md: MonthDay) -> String {
    format!("{} {}", md.day, MONTHS_EN[md.month as usize - 1])
}

/// "20th", "21st", "72nd", "113th".
fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A bounded range in words, Japanese and English, with the unit Japanese writes; `None`
/// when neither bound is set (the caller says "any").
fn range<T: PartialEq + std::fmt::Display>(
    min: Option<T>,
    max: Option<T>,
    unit_ja: &str,
    (more, fewer): (&str, &str),
) -> Option<(String, String)> {
    Some(match (min, max) {
        (Some(a), Some(b)) if a == b => (format!("{a}{unit_ja}"), format!("exactly {a}")),
        (Some(a), Some(b)) => (
            format!("{a}{unit_ja}以上{b}{unit_ja}以下"),
            format!("{a} to {b}"),
        ),
        (Some(a), None) => (format!("{a}{unit_ja}以上"), format!("{a} or {more}")),
        (None, Some(b)) => (format!("{b}{unit_ja}以下"), format!("{b} or {fewer}")),
        (None, None) => return None,
    })
}

impl EventKind {
    /// The event as a noun: (Japanese, English).
    fn words(self) -> (&'static str, &'static str) {
        match self {
            EventKind::Birth => ("出生", "a birth"),
            EventKind::Death => ("死亡", "a death"),
            EventKind::MoveIn => ("転入", "a move-in"),
            EventKind::MoveOut => ("転出", "a move-out"),
            EventKind::HouseholderChange => ("世帯主の変更", "a change of householder"),
        }
    }
}

impl Trigger {
    /// What the occurrence is: "20歳に達する日（20歳の誕生日の前日） / the day of reaching
    /// age 20 (the day before the 20th birthday)".
    pub fn describe(&self) -> String {
        match *self {
            Trigger::AgeAttained(n) => format!(
                "{n}歳に達する日（{n}歳の誕生日の前日） / the day of reaching age {n} \
                 (the day before the {} birthday)",
                ordinal(n)
            ),
            Trigger::Birthday(n) => format!("{n}歳の誕生日 / the {} birthday", ordinal(n)),
            Trigger::AgeMonths(m) => format!(
                "生後{m}月に至った日 / the day the child is {m} month{} old",
                if m == 1 { "" } else { "s" }
            ),
            Trigger::FiscalYearAge(FiscalYearAge { age, on }) => format!(
                "年度末の年齢が{age}歳となる年度の{} / {} of the fiscal year at whose end \
                 the resident is {age}",
                month_day_ja(on),
                month_day_en(on)
            ),
            Trigger::Event(kind) => {
                let (ja, en) = kind.words();
                format!("{ja}の日 / the day of {en}")
            }
            Trigger::Annual(a) => format!(
                "毎年{}（住民全員） / every year on {}, for every resident",
                month_day_ja(a.on),
                month_day_en(a.on)
            ),
        }
    }
}

impl Condition {
    /// What must hold: "属性 kokuho が true / attribute kokuho is true".
    pub fn describe(&self) -> String {
        match self {
            Condition::Attribute(a) => format!("属性 {a} が true / attribute {a} is true"),
            Condition::NotAttribute(a) => {
                format!("属性 {a} が false または無し / attribute {a} is false or missing")
            }
            Condition::AttributeEquals(a, v) => {
                format!("属性 {a} が {v} / attribute {a} is {v}")
            }
            Condition::Sex(SexIs::Male) => "性別が男性 / the resident is male".to_owned(),
            Condition::Sex(SexIs::Female) => "性別が女性 / the resident is female".to_owned(),
            Condition::Age(r) => {
                let (on_ja, on_en) = match r.on {
                    AgeOn::Occurrence => ("発生日", "on the occurrence day"),
                    AgeOn::Notify => ("通知日", "on the notice day"),
                    AgeOn::FiscalYearEnd => (
                        "発生日の年度末",
                        "at the end of the occurrence's fiscal year",
                    ),
                };
                match range(r.min, r.max, "歳", ("over", "under")) {
                    Some((ja, en)) => format!("{on_ja}の年齢が{ja} / aged {en} {on_en}"),
                    None => format!("{on_ja}の年齢を問わない / any age {on_en}"),
                }
            }
            Condition::HouseholdRemaining(r) => match range(r.min, r.max, "人", ("more", "fewer"))
            {
                Some((ja, en)) => {
                    format!("同じ世帯の他の住民が{ja} / other residents in the household: {en}")
                }
                None => "同じ世帯の他の住民の数を問わない / any number of other residents \
                             in the household"
                    .to_owned(),
            },
            // The expression once, on one line: it is what the policy person wrote.
            Condition::Script(s) => format!(
                "式が true を返す / the expression returns true: `{}`",
                s.source.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        }
    }
}

impl Audience {
    /// Who this audience reaches, with the routing rules/README.md states.
    pub fn describe(&self) -> String {
        match self {
            Audience::Subject => format!(
                "本人（{ADULT_AGE}歳未満は法定代理人へ） / the subject \
                 (under {ADULT_AGE}: their guardians)"
            ),
            Audience::Guardians => {
                "法定代理人（いなければ世帯主） / the guardians (if none, the householder)"
                    .to_owned()
            }
            Audience::Householder => "世帯主 / the householder".to_owned(),
            Audience::Spouse => "同じ世帯の配偶者 / the spouse in the same household".to_owned(),
            Audience::Survivors => format!(
                "遺族（同じ世帯の{ADULT_AGE}歳以上の住民、未成年者は法定代理人へ） / the survivors \
                 (the household's other residents aged {ADULT_AGE} or over; minors through \
                 their guardians)"
            ),
            Audience::Proxies => {
                "任意代理人（この分野を委任された者） / registered proxies for this category"
                    .to_owned()
            }
        }
    }
}

impl Role {
    /// The capacity a recipient is told in: "法定代理人 / guardian".
    pub fn describe(&self) -> &'static str {
        match self {
            Role::Subject => "本人 / subject",
            Role::Guardian => "法定代理人 / guardian",
            Role::Householder => "世帯主 / householder",
            Role::Spouse => "配偶者 / spouse",
            Role::Survivor => "遺族 / survivor",
            Role::Proxy => "任意代理人 / proxy",
        }
    }
}

impl Validity {
    /// The days a rule applies to: "from 2019-10-01", "2025-04-01 to 2030-03-31".
    pub fn describe(&self) -> String {
        match self.to {
            None => format!("from {}", self.from),
            Some(to) => format!("{} to {to}", self.from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{AgeRange, Annual, CountRange};

    fn md(s: &str) -> MonthDay {
        MonthDay::parse(s).unwrap()
    }

    #[test]
    fn triggers_say_their_day() {
        let cases = [
            (
                Trigger::AgeAttained(20),
                "20歳に達する日（20歳の誕生日の前日） / the day of reaching age 20 (the day before the 20th birthday)",
            ),
            (Trigger::Birthday(71), "71歳の誕生日 / the 71st birthday"),
            (Trigger::Birthday(112), "112歳の誕生日 / the 112th birthday"),
            (
                Trigger::AgeMonths(1),
                "生後1月に至った日 / the day the child is 1 month old",
            ),
            (
                Trigger::AgeMonths(18),
                "生後18月に至った日 / the day the child is 18 months old",
            ),
            (
                Trigger::FiscalYearAge(FiscalYearAge {
                    age: 18,
                    on: md("02-01"),
                }),
                "年度末の年齢が18歳となる年度の2月1日 / 1 February of the fiscal year at whose end the resident is 18",
            ),
            (
                Trigger::Event(EventKind::HouseholderChange),
                "世帯主の変更の日 / the day of a change of householder",
            ),
            (
                Trigger::Annual(Annual { on: md("04-01") }),
                "毎年4月1日（住民全員） / every year on 1 April, for every resident",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(t.describe(), want);
        }
        for kind in [
            EventKind::Birth,
            EventKind::Death,
            EventKind::MoveIn,
            EventKind::MoveOut,
        ] {
            let (ja, en) = kind.words();
            assert_eq!(
                Trigger::Event(kind).describe(),
                format!("{ja}の日 / the day of {en}")
            );
        }
    }

    #[test]
    fn ranges_say_their_bounds() {
        let age = |min, max, on| Condition::Age(AgeRange { min, max, on }).describe();
        assert_eq!(
            age(Some(40), Some(64), AgeOn::Occurrence),
            "発生日の年齢が40歳以上64歳以下 / aged 40 to 64 on the occurrence day"
        );
        assert_eq!(
            age(Some(75), None, AgeOn::FiscalYearEnd),
            "発生日の年度末の年齢が75歳以上 / aged 75 or over at the end of the occurrence's fiscal year"
        );
        assert_eq!(
            age(None, Some(17), AgeOn::Notify),
            "通知日の年齢が17歳以下 / aged 17 or under on the notice day"
        );
        let household =
            |min, max| Condition::HouseholdRemaining(CountRange { min, max }).describe();
        assert_eq!(
            household(Some(1), Some(1)),
            "同じ世帯の他の住民が1人 / other residents in the household: exactly 1"
        );
        assert_eq!(
            household(None, None),
            "同じ世帯の他の住民の数を問わない / any number of other residents in the household"
        );
        assert_eq!(
            age(None, None, AgeOn::Occurrence),
            "発生日の年齢を問わない / any age on the occurrence day"
        );
        assert_eq!(
            Condition::AttributeEquals("plan".into(), serde_json::json!("a")).describe(),
            "属性 plan が \"a\" / attribute plan is \"a\""
        );
    }

    #[test]
    fn validity_says_its_days() {
        let day = |s: &str| s.parse().unwrap();
        let open = Validity {
            from: day("2019-10-01"),
            to: None,
        };
        assert_eq!(open.describe(), "from 2019-10-01");
        let closed = Validity {
            to: Some(day("2030-03-31")),
            ..open
        };
        assert_eq!(closed.describe(), "2019-10-01 to 2030-03-31");
    }
}
