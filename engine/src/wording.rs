//! Dates, months and amounts as a Japanese notice writes them: one place for the messages'
//! template filters (`date`, `month`, `yen`), the engine's own sentences and the portal's
//! pages; and the check that a rendered Japanese message has none left as a machine writes
//! them (`2026-10-21`, `15000 円`).

use chrono::{Datelike, NaiveDate};

use crate::calendar;
use serde::{Deserialize, Serialize};

/// How a municipality writes years: 西暦 (`2026年`) or 和暦 (`令和8年`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateStyle {
    #[default]
    Seireki,
    Wareki,
}

impl DateStyle {
    pub fn name(self) -> &'static str {
        match self {
            DateStyle::Seireki => "seireki",
            DateStyle::Wareki => "wareki",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "seireki" => Some(DateStyle::Seireki),
            "wareki" => Some(DateStyle::Wareki),
            _ => None,
        }
    }
}

/// The eras since the calendar reform: name, the 西暦 year of its 元年, and the first day
/// it is written for (元号法; 改元の政令). 明治 is written from 明治6年, when the solar
/// calendar began.
const ERAS: [(&str, i32, (i32, u32, u32)); 5] = [
    ("令和", 2019, (2019, 5, 1)),
    ("平成", 1989, (1989, 1, 8)),
    ("昭和", 1926, (1926, 12, 25)),
    ("大正", 1912, (1912, 7, 30)),
    ("明治", 1868, (1873, 1, 1)),
];

/// The year of `d` as written: `2026年`, or `令和8年` (`令和元年` in an era's first year).
/// Before 明治6年 (the solar calendar) the 西暦 year is written.
fn year(d: NaiveDate, style: DateStyle) -> String {
    if style == DateStyle::Wareki {
        for (name, first_year, (y, m, day)) in ERAS {
            if NaiveDate::from_ymd_opt(y, m, day).is_some_and(|start| d >= start) {
                let n = d.year() - first_year + 1;
                return if n == 1 {
                    format!("{name}元年")
                } else {
                    format!("{name}{n}年")
                };
            }
        }
    }
    format!("{}年", d.year())
}

/// `2026年10月21日（水）`, or `令和8年10月21日（水）`.
pub fn date(d: NaiveDate, style: DateStyle) -> String {
    format!(
        "{}{}月{}日（{}）",
        year(d, style),
        d.month(),
        d.day(),
        calendar::weekday_ja(d)
    )
}

/// The month of `d`: `2026年12月`, or `令和8年12月` (the era of the month's first day).
pub fn month(d: NaiveDate, style: DateStyle) -> String {
    let first = d.with_day(1).unwrap_or(d);
    format!("{}{}月", year(first, style), d.month())
}

/// `15,000円`.
pub fn yen(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}{out}円")
}

/// The first date or amount in `text` written as a machine writes it: an ISO date
/// (`2026-10-21`), or four or more digits with no thousands separator before 円
/// (`15000 円`, `月額 15000円`). `None` when the text reads as a notice should.
pub fn machine_written(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut i = 0;
    while i < chars.len() {
        if !digit(i) || (i > 0 && (digit(i - 1) || chars[i - 1] == ',')) {
            i += 1;
            continue;
        }
        let mut j = i;
        while digit(j) {
            j += 1;
        }
        let run = j - i;
        // YYYY-MM-DD (or YYYY-M-D).
        if run == 4 && chars.get(j) == Some(&'-') && digit(j + 1) {
            let mut k = j + 1;
            while digit(k) {
                k += 1;
            }
            if chars.get(k) == Some(&'-') && digit(k + 1) {
                let mut e = k + 1;
                while digit(e) {
                    e += 1;
                }
                return Some(chars[i..e].iter().collect());
            }
        }
        if run >= 4 {
            let mut k = j;
            while chars.get(k).is_some_and(|c| *c == ' ' || *c == '\u{3000}') {
                k += 1;
            }
            if chars.get(k) == Some(&'円') {
                return Some(chars[i..=k].iter().collect());
            }
        }
        i = j;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn dates_as_a_notice_writes_them() {
        assert_eq!(
            date(d("2026-10-21"), DateStyle::Seireki),
            "2026年10月21日（水）"
        );
        assert_eq!(
            date(d("2026-10-21"), DateStyle::Wareki),
            "令和8年10月21日（水）"
        );
        // The first days of 令和 and 平成, and the day before each.
        assert_eq!(
            date(d("2019-05-01"), DateStyle::Wareki),
            "令和元年5月1日（水）"
        );
        assert_eq!(
            date(d("2019-04-30"), DateStyle::Wareki),
            "平成31年4月30日（火）"
        );
        assert_eq!(
            date(d("1989-01-08"), DateStyle::Wareki),
            "平成元年1月8日（日）"
        );
        assert_eq!(
            date(d("1989-01-07"), DateStyle::Wareki),
            "昭和64年1月7日（土）"
        );
        assert_eq!(
            date(d("1926-12-25"), DateStyle::Wareki),
            "昭和元年12月25日（土）"
        );
        assert_eq!(
            date(d("1912-07-30"), DateStyle::Wareki),
            "大正元年7月30日（火）"
        );
        assert_eq!(
            date(d("1900-01-01"), DateStyle::Wareki),
            "明治33年1月1日（月）"
        );
        assert_eq!(
            date(d("1872-12-31"), DateStyle::Wareki),
            "1872年12月31日（火）"
        );
    }

    #[test]
    fn months_take_the_era_of_their_first_day() {
        assert_eq!(month(d("2026-12-15"), DateStyle::Seireki), "2026年12月");
        assert_eq!(month(d("2019-05-31"), DateStyle::Wareki), "令和元年5月");
        assert_eq!(month(d("2019-04-30"), DateStyle::Wareki), "平成31年4月");
        // January 1989 began in 昭和.
        assert_eq!(month(d("1989-01-20"), DateStyle::Wareki), "昭和64年1月");
    }

    #[test]
    fn amounts_with_thousands_separators() {
        assert_eq!(yen(0), "0円");
        assert_eq!(yen(500), "500円");
        assert_eq!(yen(15000), "15,000円");
        assert_eq!(yen(500000), "500,000円");
        assert_eq!(yen(1234567), "1,234,567円");
        assert_eq!(yen(-2500), "-2,500円");
    }

    #[test]
    fn machine_written_dates_and_amounts_are_found() {
        assert_eq!(
            machine_written("2026-10-21 まで"),
            Some("2026-10-21".into())
        );
        assert_eq!(machine_written("期限（2026-1-5）"), Some("2026-1-5".into()));
        assert_eq!(machine_written("月額 15000 円"), Some("15000 円".into()));
        assert_eq!(machine_written("50000円"), Some("50000円".into()));
        for fine in [
            "2026年10月21日（水）まで",
            "月額15,000円",
            "500円",
            "1,234,567円",
            "電話 03-1234-5678",
            "〒100-0301",
            "令和8年",
            "2026年度",
        ] {
            assert_eq!(machine_written(fine), None, "{fine}");
        }
    }
}
