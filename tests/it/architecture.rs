//! The layering of ARCHITECTURE.md as rules a test checks, so a shortcut across a boundary
//! fails here rather than in a later reading: only `store/` knows RocksDB and etcd, only `grpc/` and the
//! binaries know tonic and prost, only `http/` and the binaries know axum and hyper, and no module uses one above it.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// The library's top-level modules, from the bottom up: a module may use only those of a lower
/// rank (and itself). Modules of one rank do not know each other.
const LAYERS: &[(&str, u8)] = &[
    ("failpoint", 0),
    ("kernel", 0),
    ("embedding", 1),
    ("record", 2),
    ("index", 3),
    ("transparency", 3),
    ("metrics", 3),
    ("synth", 3),
    ("store", 4),
    ("engine", 5),
    ("rights", 6),
    ("http", 7),
    ("grpc", 8),
];

/// External crates and the only top-level modules (or `bin`) that may name them.
const EXTERNAL: &[(&str, &[&str])] = &[
    ("rocksdb", &["store"]),
    ("librocksdb_sys", &["store"]),
    ("etcd_client", &["store"]),
    ("tonic", &["grpc", "bin"]),
    ("tonic_health", &["grpc", "bin"]),
    ("tonic_reflection", &["grpc", "bin"]),
    ("tonic_prost", &["grpc", "bin"]),
    ("prost", &["grpc", "bin"]),
    ("prost_types", &["grpc", "bin"]),
    ("axum", &["http", "bin"]),
    ("hyper", &["http", "bin"]),
    ("hyper_util", &["http", "bin"]),
    ("http_body_util", &["http", "bin"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under src/ belongs to (`bin` for the binaries, `lib` for lib.rs).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a path").as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Code only: comments (`//`, `///`, `//!`) and string literals dropped, line by line.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The top-level crate modules `code` names: `crate::x`, and each name directly inside
/// `crate::{ ... }`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut name = String::new();
            let mut fresh = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 {
                    if c.is_alphanumeric() || c == '_' {
                        if fresh {
                            name.push(c);
                        }
                    } else {
                        if !name.is_empty() {
                            out.insert(std::mem::take(&mut name));
                        }
                        fresh = c == ',' || c.is_whitespace() && fresh;
                    }
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.insert(name);
        }
        rest = &rest[at + 1..];
    }
    out
}

/// Whether `code` names the external crate `name` as a path (`name::`) or a `use name`.
fn names_crate(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let boundary = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        boundary && code[at + name.len()..].starts_with("::")
    })
}

#[test]
fn layers_and_boundaries_hold() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| LAYERS.iter().find(|(n, _)| *n == m).map(|(_, r)| *r);
    let mut broken = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = code_of(&std::fs::read_to_string(file).expect("read a source file"));
        for (name, allowed) in EXTERNAL {
            if names_crate(&code, name) && !allowed.contains(&module.as_str()) {
                broken.push(format!("{} names `{name}`: only {allowed:?} may", file.display()));
            }
        }
        let Some(own) = rank(&module) else { continue };
        for used in crate_modules(&code) {
            match rank(&used) {
                Some(r) if used != module && r >= own => {
                    broken.push(format!("{} (`{module}`) uses `crate::{used}`, which is not below it", file.display()))
                }
                None if !used.is_empty() && used != module => {
                    broken.push(format!("{} uses `crate::{used}`, a module this test does not place", file.display()))
                }
                _ => {}
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = code_of(
        "use crate::{\n    store::{self, Store},\n    index::Hit, // crate::grpc in a comment\n};\nlet s = \"crate::rights\";\nrocksdb::DB::open();",
    );
    assert_eq!(crate_modules(&code), BTreeSet::from(["index".to_string(), "store".to_string()]));
    assert!(names_crate(&code, "rocksdb"));
    assert!(!names_crate("use oubli::store; let x = my_rocksdb::f();", "rocksdb"));
    assert!(crate_modules("crate::engine::Engine::open()").contains("engine"));
}
