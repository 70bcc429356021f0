//! Japan's municipalities (市区町村): the bundled table `engine/data/municipalities.csv` of
//! every municipality's local government code, prefecture, name and reading (the 23 special
//! wards of Tokyo included, the wards of designated cities not), from J-LIS's codes as
//! collected by code4fukui/localgovjp (fixtures/README.md gives the source and the counts).

use std::sync::OnceLock;

use crate::ids::LocalGovCode;

const TABLE: &str = include_str!("../data/municipalities.csv");

/// One municipality of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Municipality {
    pub code: LocalGovCode,
    pub prefecture: &'static str,
    pub name: &'static str,
    /// The name's reading in hiragana.
    pub kana: &'static str,
}

/// What kind of municipality it is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// 市
    City,
    /// 町
    Town,
    /// 村
    Village,
    /// 特別区 (Tokyo's 23 wards)
    SpecialWard,
}

impl Municipality {
    pub fn kind(&self) -> Kind {
        if self.name.ends_with('区') {
            Kind::SpecialWard
        } else if self.name.ends_with('市') {
            Kind::City
        } else if self.name.ends_with('町') {
            Kind::Town
        } else {
            Kind::Village
        }
    }
}

/// Every municipality, by code.
pub fn all() -> &'static [Municipality] {
    static PARSED: OnceLock<Vec<Municipality>> = OnceLock::new();
    PARSED.get_or_init(|| {
        // The table is part of the source, and a unit test reads every row: a bad row is a
        // build mistake, not input.
        TABLE
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let mut f = line.split(',');
                let mut next = || {
                    f.next()
                        .unwrap_or_else(|| panic!("municipalities.csv: {line}"))
                };
                let code = LocalGovCode::parse(next())
                    .unwrap_or_else(|e| panic!("municipalities.csv: {line}: {e}"));
                Municipality {
                    code,
                    prefecture: next(),
                    name: next(),
                    kana: next(),
                }
            })
            .collect()
    })
}

/// The municipality of `code`, if it is one of the table.
pub fn find(code: LocalGovCode) -> Option<&'static Municipality> {
    let table = all();
    table
        .binary_search_by(|m| m.code.cmp(&code))
        .ok()
        .map(|i| &table[i])
}

/// The code of prefecture `number` (1–47): its two digits, 000 and the check digit.
pub fn prefecture_code(number: u8) -> LocalGovCode {
    let five = [number / 10, number % 10, 0, 0, 0];
    let check = LocalGovCode::check_digit(&five);
    LocalGovCode::parse(&format!("{:02}000{check}", number)).expect("a code with its check digit")
}

/// The name of prefecture `number` (1–47), if it has municipalities in the table.
pub fn prefecture_name(number: u8) -> Option<&'static str> {
    all()
        .iter()
        .find(|m| m.code.prefecture() == number)
        .map(|m| m.prefecture)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_table_holds_every_municipality_once_by_code() {
        let table = all();
        let mut kinds: BTreeMap<Kind, usize> = BTreeMap::new();
        for m in table {
            *kinds.entry(m.kind()).or_default() += 1;
        }
        // 792 市, 743 町, 183 村 and Tokyo's 23 wards (shared/domain population.md §1).
        assert_eq!(kinds.get(&Kind::City), Some(&792));
        assert_eq!(kinds.get(&Kind::Town), Some(&743));
        assert_eq!(kinds.get(&Kind::Village), Some(&183));
        assert_eq!(kinds.get(&Kind::SpecialWard), Some(&23));
        assert_eq!(table.len(), 1741);
        assert!(
            table.windows(2).all(|w| w[0].code < w[1].code),
            "sorted, no code twice"
        );
        assert!(table
            .iter()
            .filter(|m| m.kind() == Kind::SpecialWard)
            .all(|m| m.prefecture == "東京都"));
        assert!(table
            .iter()
            .all(|m| !m.kana.is_empty() && !m.name.contains(' ')));
    }

    #[test]
    fn municipalities_and_prefectures_are_found_by_code() {
        let find_code = |c: &str| find(LocalGovCode::parse(c).unwrap());
        let toshima = find_code("133621").unwrap();
        assert_eq!((toshima.prefecture, toshima.name), ("東京都", "利島村"));
        assert_eq!(find_code("141003").unwrap().name, "横浜市");
        assert_eq!(find_code("131016").unwrap().kind(), Kind::SpecialWard);
        // A designated city's ward is not a municipality; nor is a prefecture.
        assert_eq!(find_code("141011"), None);
        assert_eq!(find_code("130001"), None);
        assert_eq!(prefecture_code(13).to_string(), "130001");
        assert_eq!(prefecture_code(1).to_string(), "010006");
        assert_eq!(prefecture_name(13), Some("東京都"));
        assert_eq!(prefecture_name(47), Some("沖縄県"));
        assert_eq!(prefecture_name(48), None);
        assert_eq!((1..=47).filter_map(prefecture_name).count(), 47);
    }
}
