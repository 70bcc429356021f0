//! Builds the catalogue (`rules/`, its parameters and test cases, the data-item dictionary
//! and the purposes) and the fixture town into
//! the binary, so that an installed `oshirase` works anywhere: `include_str!` makes every
//! file a dependency of the build, and the folders are watched for files added or removed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    files
}

fn table(out: &mut String, name: &str, root: &Path, dir: &str) {
    let files = yaml_files(&root.join(dir));
    writeln!(out, "pub const {name}: &[(&str, &str)] = &[").unwrap();
    for f in files {
        let rel = f.strip_prefix(root).expect("inside the crate");
        writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            rel.display().to_string(),
            f.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "];").unwrap();
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut out = String::new();
    table(&mut out, "RULES", &root, "rules");
    table(&mut out, "PARAMETERS", &root, "rules/parameters");
    table(&mut out, "RULE_TESTS", &root, "rules/tests");
    table(&mut out, "ITEMS", &root, "rules/items");
    table(&mut out, "PURPOSES", &root, "rules/purposes");
    for (name, file) in [
        ("TOWN", "fixtures/town.jsonl"),
        ("TOWN_CHANGES", "fixtures/town-changes.jsonl"),
        ("DEMO_AGENCIES", "fixtures/demo-agencies.yaml"),
    ] {
        let path = root.join(file);
        writeln!(
            out,
            "pub const {name}: &str = include_str!({:?});",
            path.display().to_string()
        )
        .unwrap();
        println!("cargo:rerun-if-changed={file}");
    }
    for dir in [
        "rules",
        "rules/parameters",
        "rules/tests",
        "rules/items",
        "rules/purposes",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("builtin.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}
