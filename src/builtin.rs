//! What is built into the binary: the rule catalogue with its parameters and test cases, and
//! the fixture town (`build.rs`). They are the defaults; `--rules DIR`, `--snapshot FILE`
//! and `--changes FILE` use folders and files instead.

use std::path::Path;

use oshirase_engine::catalogue::compile_sources;
use oshirase_engine::{LoadErrors, RuleSet};

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

fn owned(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(f, t)| ((*f).to_owned(), (*t).to_owned()))
        .collect()
}

/// The built-in catalogue, compiled as `rules/` would be.
pub fn rules() -> Result<RuleSet, LoadErrors> {
    compile_sources(Path::new("rules"), &owned(RULES), &owned(PARAMETERS))
}

/// The built-in catalogue as the national layer, with its test cases.
pub fn national() -> oshirase_engine::layers::LayerSources {
    oshirase_engine::layers::LayerSources {
        rules: owned(RULES),
        parameters: owned(PARAMETERS),
        tests: owned(RULE_TESTS),
    }
}

/// The built-in data-item dictionary and purposes, compiled as `rules/items` and
/// `rules/purposes` would be.
pub fn exchange() -> Result<oshirase_engine::purposes::Exchange, LoadErrors> {
    let dictionary = ITEMS
        .iter()
        .find(|(f, _)| f.ends_with("dictionary.yaml"))
        .copied()
        .unwrap_or(("rules/items/dictionary.yaml", ""));
    oshirase_engine::purposes::compile_sources(dictionary, &owned(PURPOSES))
}

/// The built-in catalogue's test cases, as (file name, text).
pub fn rule_tests() -> Vec<(String, String)> {
    owned(RULE_TESTS)
}
