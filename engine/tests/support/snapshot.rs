//! A population from resident lines, under a snapshot header dated 2026-10-01: the shape
//! every evaluation test starts from.

use oshirase_engine::{parse_snapshot, Population};

pub fn population(lines: &[String]) -> Population {
    let mut text =
        r#"{"format":"oshirase-snapshot","schema_version":1,"as_of":"2026-10-01"}"#.to_string();
    for l in lines {
        text.push('\n');
        text.push_str(l);
    }
    parse_snapshot(&text, "test.jsonl")
        .unwrap_or_else(|e| panic!("{e}"))
        .population
}
