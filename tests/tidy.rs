//! Tidy checks on the source tree (the habit rust-analyzer keeps in `xtask/src/tidy.rs`): every `.rs` file opens with
//! a `//!` line saying its job, and every module imports only modules of its own layer or the layers below it, as the
//! layer list in ARCHITECTURE.md says, with no cycle between top-level modules. Reads files; runs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_rust_file_opens_with_a_doc_line() {
    let mut missing = Vec::new();
    for dir in ["src", "tests", "benches"] {
        for path in rust_files(&Path::new(ROOT).join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            if !text.starts_with("//!") {
                missing.push(path.strip_prefix(ROOT).unwrap_or(&path).display().to_string());
            }
        }
    }
    let build = std::fs::read_to_string(Path::new(ROOT).join("build.rs")).expect("read build.rs");
    if !build.starts_with("//!") {
        missing.push("build.rs".into());
    }
    assert!(missing.is_empty(), "files without a leading //! line saying their job: {missing:?}");
}

/// The layers of ARCHITECTURE.md's ```layers block, lowest first: each line names the top-level modules of one layer.
fn layers(architecture: &str) -> BTreeMap<String, usize> {
    let block = architecture
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has a ```layers block");
    let mut map = BTreeMap::new();
    let lines = block.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty());
    for (rank, line) in lines.enumerate() {
        let modules = line.split_once(':').map_or(line, |(_, m)| m);
        for module in modules.split_whitespace() {
            assert!(map.insert(module.to_owned(), rank).is_none(), "{module} is in two layers");
        }
    }
    map
}

/// The top-level module a file under `src/` belongs to, and its module path (`["rpc", "connection"]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// The top-level modules a file refers to through `crate::x` or `super::` paths, comments excluded.
fn imports(src: &Path, file: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let path = module_path(src, file);
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            // `crate::` inside an identifier such as `camhub_crate::` is not ours.
            if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        for (at, _) in code.match_indices("super::") {
            if code[..at].ends_with("super::") || code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            // Climb one module per `super::`, then the next name is a module of the level reached.
            let mut rest = &code[at..];
            let mut depth = path.len();
            while let Some(r) = rest.strip_prefix("super::") {
                rest = r;
                depth = depth.saturating_sub(1);
            }
            if depth == 0 {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != "*" {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// Edges between top-level modules: (from, to) -> the files that make them.
fn module_graph(src: &Path) -> BTreeMap<(String, String), Vec<String>> {
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let path = module_path(src, &file);
        let Some(from) = path.first() else { continue }; // lib.rs and main.rs are the root
        for to in imports(src, &file) {
            if &to != from {
                let shown = file.strip_prefix(ROOT).unwrap_or(&file).display().to_string();
                edges.entry((from.clone(), to)).or_default().push(shown);
            }
        }
    }
    edges
}

/// Top-level modules that sit on a cycle, as the strongly connected components of more than one module.
fn cycles(edges: &BTreeMap<(String, String), Vec<String>>) -> Vec<BTreeSet<String>> {
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for (a, b) in edges.keys() {
                if a == &n && seen.insert(b.clone()) {
                    stack.push(b.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut components: Vec<BTreeSet<String>> = Vec::new();
    for n in &nodes {
        if components.iter().any(|c| c.contains(*n)) {
            continue;
        }
        let component: BTreeSet<String> =
            nodes.iter().filter(|m| reach[*n].contains(**m) && reach[**m].contains(*n)).map(|m| (*m).clone()).collect();
        if component.len() > 1 {
            components.push(component);
        }
    }
    components
}

/// Everything wrong with the layering of the tree at `src` against the layers block of `architecture`.
fn layering_problems(src: &Path, architecture: &str) -> Vec<String> {
    let layers = layers(architecture);
    let edges = module_graph(src);
    let mut problems = Vec::new();
    let top_level: BTreeSet<String> =
        rust_files(src).iter().filter_map(|f| module_path(src, f).first().cloned()).collect();
    for module in &top_level {
        if !layers.contains_key(module) {
            problems.push(format!("module {module} is in no layer of ARCHITECTURE.md's layers block"));
        }
    }
    for ((from, to), files) in &edges {
        let (Some(a), Some(b)) = (layers.get(from), layers.get(to)) else { continue };
        if b > a {
            problems.push(format!("{from} imports {to}, a layer above it ({})", files.join(", ")));
        }
    }
    for cycle in cycles(&edges) {
        problems.push(format!("modules on a cycle: {cycle:?}"));
    }
    problems
}

#[test]
fn modules_import_only_their_own_layer_and_below_and_form_no_cycle() {
    let architecture = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md");
    let problems = layering_problems(&Path::new(ROOT).join("src"), &architecture);
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

/// The check itself: a tree with an upward import and a cycle is caught, the same tree mended passes.
#[test]
fn the_layering_check_catches_an_upward_import_and_a_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("media")).expect("mkdir");
    let write = |name: &str, text: &str| std::fs::write(src.join(name), text).expect("write");
    let architecture = "```layers\nbase\nmedia storage\napp\n```\n";
    write("lib.rs", "//! root\npub mod base;\npub mod media;\npub mod storage;\npub mod app;\n");
    write("base.rs", "//! base\n");
    write("app.rs", "//! app\nuse crate::media::hub::Hub;\n");
    write("storage.rs", "//! storage\nuse crate::base::Id;\n");
    write("media/mod.rs", "//! media\npub mod hub;\n");
    write("media/hub.rs", "//! hub\nuse super::super::base::Id; // crate::app::Nothing in a comment\n");
    assert_eq!(layering_problems(&src, architecture), Vec::<String>::new());

    write("media/hub.rs", "//! hub\nuse crate::app::App;\n");
    let problems = layering_problems(&src, architecture);
    assert!(problems.iter().any(|p| p.starts_with("media imports app")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");

    write("media/hub.rs", "//! hub\nfn f() { super::super::storage::g() }\n");
    write("storage.rs", "//! storage\nuse crate::media::hub;\n");
    let problems = layering_problems(&src, architecture);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("cycle"), "{problems:?}");
}
