//! The examples of README.md and rules/README.md are true: every ```yaml block loads as what
//! it shows (a rule into the catalogue, parameters, a case file that passes), every command
//! line in a code block runs and succeeds, every ```console block prints what it shows, and
//! every flag the command table names exists.

use std::path::{Path, PathBuf};
use std::process::Command;

use oshirase_engine::catalogue::compile_sources;
use oshirase_engine::ruletest;

const DOCS: &[&str] = &["README.md", "rules/README.md"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fenced code block: its info string, the line of its first body line, its body.
struct Block {
    doc: &'static str,
    info: String,
    line: usize,
    body: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.doc, self.line)
    }
}

fn blocks(doc: &'static str) -> Vec<Block> {
    let text = std::fs::read_to_string(root().join(doc)).unwrap();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, l) in text.lines().enumerate() {
        match (l.trim_start().strip_prefix("```"), open.take()) {
            (Some(_), Some(b)) => out.push(b),
            (Some(info), None) => {
                open = Some(Block {
                    doc,
                    info: info.trim().to_owned(),
                    line: i + 2,
                    body: String::new(),
                })
            }
            (None, Some(mut b)) => {
                b.body.push_str(l);
                b.body.push('\n');
                open = Some(b);
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{doc}: a code block is never closed");
    out
}

fn all_blocks() -> Vec<Block> {
    DOCS.iter().flat_map(|d| blocks(d)).collect()
}

/// The catalogue's rule sources, as `load_dir` reads them.
fn catalogue_sources(sub: &str) -> Vec<(String, String)> {
    let dir = root().join("rules").join(sub);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.display().to_string(), text)
        })
        .collect()
}

fn top_level_key(yaml: &str, key: &str) -> Option<String> {
    yaml.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
}

#[test]
fn every_yaml_block_loads_as_what_it_shows() {
    let rules = catalogue_sources("");
    let params = catalogue_sources("parameters");
    let mut seen = (0, 0, 0);
    for b in all_blocks().iter().filter(|b| b.info == "yaml") {
        if let Some(id) = top_level_key(&b.body, "id") {
            // A rule: in place of the catalogue's own file of that id, with everything else
            // (recommendations and parameters must resolve against the real catalogue).
            let mut sources: Vec<_> = rules
                .iter()
                .filter(|(f, _)| !f.ends_with(&format!("/{id}.yaml")))
                .cloned()
                .collect();
            assert_eq!(sources.len() + 1, rules.len(), "{}: no rule {id}", b.at());
            // Under the file name the catalogue requires; errors are reported with b.at().
            let file = root().join("rules").join(format!("{id}.yaml"));
            sources.push((file.display().to_string(), b.body.clone()));
            if let Err(e) = compile_sources(&root().join("rules"), &sources, &params) {
                panic!("{}: the example rule does not load:\n{e}", b.at());
            }
            seen.0 += 1;
        } else if top_level_key(&b.body, "cases").is_some() {
            // A case file: run against the catalogue, and every case passes.
            let set = oshirase_engine::load_dir(&root().join("rules")).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("example.yaml"), &b.body).unwrap();
            let report = ruletest::run_dir(&set, dir.path());
            assert!(
                report.errors.is_empty(),
                "{}: the example cases do not load: {:?}",
                b.at(),
                report.errors
            );
            assert!(
                !report.cases.is_empty() && report.failed() == 0,
                "{}: {} of {} example cases fail",
                b.at(),
                report.failed(),
                report.cases.len()
            );
            seen.1 += 1;
        } else {
            // Parameters, compiled on their own.
            let sources = [(b.at(), b.body.clone())];
            if let Err(e) = compile_sources(&root().join("rules"), &[], &sources) {
                panic!("{}: the example parameters do not load:\n{e}", b.at());
            }
            seen.2 += 1;
        }
    }
    assert!(
        seen.0 >= 2 && seen.1 >= 1 && seen.2 >= 1,
        "rules, cases, parameters: {seen:?}"
    );
}

/// The command lines of the code blocks, as arguments of the binary: `oshirase …` and
/// `cargo run --release -- …`; other lines (git, cargo build, scripts) are not ours to run.
fn command_lines() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for b in all_blocks()
        .iter()
        .filter(|b| matches!(b.info.as_str(), "" | "sh" | "console"))
    {
        for (k, l) in b.body.lines().enumerate() {
            let l = l.split(" #").next().unwrap_or("").trim();
            let args = l
                .strip_prefix("oshirase ")
                .or_else(|| l.strip_prefix("cargo run --release -- "));
            if let Some(args) = args {
                let at = format!("{}:{}", b.doc, b.line + k);
                out.push((at, args.split_whitespace().map(str::to_owned).collect()));
            }
        }
    }
    out
}

/// A working folder as a fresh clone gives one: the catalogue, the fixtures and the example
/// configuration, and nothing else.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["rules", "fixtures", "config", "docs"] {
        std::os::unix::fs::symlink(root().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

fn oshirase(dir: &Path, args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_oshirase"))
        .args(args)
        .current_dir(dir)
        .env_remove("OSHIRASE_DATABASE_URL")
        .env_remove("OSHIRASE_RULES")
        .output()
        .unwrap()
}

#[test]
fn every_command_line_runs() {
    let lines = command_lines();
    assert!(lines.len() >= 4, "too few command lines found: {lines:?}");
    for (at, args) in lines {
        let dir = workdir();
        let out = oshirase(dir.path(), &args);
        assert!(
            out.status.success(),
            "{at}: `oshirase {}` exits with {:?}:\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.stdout.is_empty(),
            "{at}: `oshirase {}` prints nothing",
            args.join(" ")
        );
    }
}

/// The command table's rows: the subcommand words and the flags each row names.
fn table_commands() -> Vec<(String, Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let Some(cell) = l.strip_prefix("| `oshirase ") else {
            continue;
        };
        // A row may name several forms: `oshirase outbox list …`, `oshirase outbox retry …`.
        let first_cell = cell.split(" | ").next().unwrap_or("");
        for form in first_cell.split("`oshirase ") {
            let form = form.split('`').next().unwrap_or("");
            let words: Vec<String> = form
                .split_whitespace()
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .map(str::to_owned)
                .collect();
            let flags: Vec<String> = form
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(str::to_owned)
                .collect();
            if !words.is_empty() {
                out.push((format!("README.md:{}", i + 1), words, flags));
            }
        }
    }
    out
}

#[test]
fn every_flag_in_the_command_table_exists() {
    let rows = table_commands();
    assert!(
        rows.len() >= 10,
        "the command table was not found: {rows:?}"
    );
    let dir = workdir();
    for (at, words, flags) in rows {
        let mut args = words.clone();
        args.push("--help".into());
        let out = oshirase(dir.path(), &args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{at}: `oshirase {}` is not a command",
            words.join(" ")
        );
        for flag in flags {
            assert!(
                help.contains(&flag),
                "{at}: `oshirase {}` has no {flag}:\n{help}",
                words.join(" ")
            );
        }
    }
}

/// A ```console block shows command lines, each followed by what it prints: the output must
/// be exactly that, where a shown line ending in "…" stands for any line it begins (a
/// rule-set version, which changes with every catalogue edit).
#[test]
fn every_console_block_prints_what_it_shows() {
    let mut seen = 0;
    for b in all_blocks().iter().filter(|b| b.info == "console") {
        let mut runs: Vec<(String, Vec<String>, Vec<&str>)> = Vec::new();
        for (k, l) in b.body.lines().enumerate() {
            match l.strip_prefix("oshirase ") {
                Some(args) => runs.push((
                    format!("{}:{}", b.doc, b.line + k),
                    args.split_whitespace().map(str::to_owned).collect(),
                    Vec::new(),
                )),
                None => runs
                    .last_mut()
                    .unwrap_or_else(|| panic!("{}: output before any command", b.at()))
                    .2
                    .push(l),
            }
        }
        for (at, args, shown) in runs {
            let dir = workdir();
            let out = oshirase(dir.path(), &args);
            let printed = String::from_utf8_lossy(&out.stdout);
            let printed: Vec<&str> = printed.lines().collect();
            let same = printed.len() == shown.len()
                && printed
                    .iter()
                    .zip(&shown)
                    .all(|(p, s)| match s.strip_suffix('…') {
                        Some(start) => p.starts_with(start),
                        None => p == s,
                    });
            assert!(
                same,
                "{at}: `oshirase {}` prints\n{}\nnot what the block shows:\n{}",
                args.join(" "),
                printed.join("\n"),
                shown.join("\n")
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "too few console examples found: {seen}");
}
