//! What a rules folder may hold on disk: every `*.yaml` entry is a rule file that loads or an
//! error with its name, never something skipped; and no file can make loading hang.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oshirase_engine::catalogue::{load_dir, LoadError, RuleSet};

const GOOD: &str = r#"id: good-rule
version: 1
title: { ja: 良いルール }
category: pension
legal_basis: 国民年金法
valid: { from: 2019-10-01 }
trigger: { age_attained: 20 }
audience: [subject]
prefill:
  name: subject.name.kanji
message:
  ja: "{{ name }} 様"
channels: [portal]
"#;

/// Loads `dir` on another thread, so that a load that blocks fails the test instead of
/// hanging it.
fn load(dir: &Path) -> Result<RuleSet, Vec<LoadError>> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(load_dir(&dir).map_err(|e| e.0));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("loading the rules folder returns")
}

/// The errors of loading `dir`, which must not load.
fn errors(dir: &Path, what: &str) -> Vec<LoadError> {
    match load(dir) {
        Ok(_) => panic!("{what}: the folder loaded"),
        Err(e) => e,
    }
}

fn folder_with_good_rule() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good-rule.yaml"), GOOD).unwrap();
    dir
}

#[test]
fn a_dangling_symlink_is_an_error_naming_it() {
    let dir = folder_with_good_rule();
    std::os::unix::fs::symlink(dir.path().join("gone.yaml"), dir.path().join("link.yaml")).unwrap();
    let errs = errors(dir.path(), "a rule file that cannot be read");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].file.ends_with("link.yaml"), "{}", errs[0]);
    assert!(errs[0].message.contains("cannot read"), "{}", errs[0]);
}

#[test]
fn a_fifo_is_an_error_and_does_not_block() {
    let dir = folder_with_good_rule();
    let fifo = dir.path().join("pipe.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let errs = errors(dir.path(), "a FIFO");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].file.ends_with("pipe.yaml"), "{}", errs[0]);
    assert!(
        errs[0].message.contains("not a regular file"),
        "{}",
        errs[0]
    );
}

#[test]
fn every_unreadable_entry_is_reported_at_once() {
    let dir = folder_with_good_rule();
    std::os::unix::fs::symlink("gone-1.yaml", dir.path().join("a.yaml")).unwrap();
    std::os::unix::fs::symlink("gone-2.yaml", dir.path().join("b.yml")).unwrap();
    std::fs::create_dir(dir.path().join("folder.yaml")).unwrap();
    let errs = errors(dir.path(), "unreadable entries");
    let files: Vec<String> = errs
        .iter()
        .map(|e| {
            Path::new(&e.file)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(files, ["a.yaml", "b.yml", "folder.yaml"], "{errs:?}");
}

#[test]
fn a_byte_order_mark_before_a_rule_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good-rule.yaml"), format!("\u{feff}{GOOD}")).unwrap();
    let rules = load(dir.path()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(rules.rules().len(), 1);
}

#[test]
fn deep_nesting_is_refused_quickly_with_its_place() {
    let n = 100_000;
    let flow = GOOD.replace(
        "audience: [subject]",
        &format!("audience: {}subject{}", "[".repeat(n), "]".repeat(n)),
    );
    // Line 14 opens the first of 100 nested mappings; the 65th is one too many.
    let mut block = GOOD.to_owned();
    for i in 0..100 {
        block.push_str(&format!("{}a:\n", "  ".repeat(i)));
    }
    for (what, text, line) in [("flow", flow, 8), ("block", block, 14 + 64)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good-rule.yaml"), text).unwrap();
        let started = Instant::now();
        let errs = errors(dir.path(), what);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert_eq!(errs.len(), 1, "{what}: {errs:?}");
        assert_eq!(errs[0].line, line, "{what}: {}", errs[0]);
        assert!(
            errs[0].message.contains("nested deeper than 64"),
            "{what}: {}",
            errs[0]
        );
    }
}

/// A rule "file" that is a symlink to some other file is read like any other, but its
/// content is never printed whole in the error.
#[test]
fn an_error_never_prints_a_files_content_whole() {
    let dir = folder_with_good_rule();
    let other = tempfile::NamedTempFile::new().unwrap();
    let secret = format!("root:x:0:0:{}", "y".repeat(10_000));
    std::fs::write(other.path(), &secret).unwrap();
    std::os::unix::fs::symlink(other.path(), dir.path().join("linked.yaml")).unwrap();
    let errs = errors(dir.path(), "a symlink to a file that is no rule");
    assert_eq!(errs.len(), 1, "{errs:?}");
    let shown = errs[0].to_string();
    assert!(
        shown.chars().count() < 600,
        "{}",
        shown.chars().take(600).collect::<String>()
    );
    assert!(!shown.contains(&secret[..200]), "{shown}");
    assert!(shown.contains('…'), "{shown}");
}
