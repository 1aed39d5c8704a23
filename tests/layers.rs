//! Data flows one way. The command layer (`src/cmd/`, `src/main.rs`) sits on top and may
//! use anything; the benchmarks (`src/bench/`) may use everything below it; the drivers (the management point, the
//! Kubernetes operator, the agent) use only the layers below them — the pipeline, the
//! store, git, the core — never each other; and nothing below the top imports it back.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`cmd`, `server`, `lib`…).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::MODULE` a file names outside its tests, with its line.
fn imports(text: &str) -> Vec<(usize, String, String)> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let module: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            found.push((n + 1, module, line.trim().to_string()));
        }
    }
    found
}

fn violations(allowed: impl Fn(&str, &str) -> bool) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (line, to, code) in imports(&text) {
            if to != from && !allowed(&from, &to) {
                bad.push(format!("src/{}:{line}: {code}", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    bad
}

const TOP: [&str; 3] = ["cmd", "bench", "main"];
const DRIVERS: [&str; 3] = ["server", "kubernetes", "agent"];

#[test]
fn no_module_below_the_command_layer_imports_it() {
    // Only the command layer itself (and main) may name it; the benchmarks call the layers below.
    let bad = violations(|from, to| !["cmd", "main", "cli"].contains(&to) || ["cmd", "main"].contains(&from));
    assert!(bad.is_empty(), "imports of the command layer from below it:\n{}", bad.join("\n"));
}

#[test]
fn no_driver_imports_another_driver_and_no_layer_below_imports_a_driver() {
    let bad = violations(|from, to| !DRIVERS.contains(&to) || TOP.contains(&from));
    assert!(bad.is_empty(), "imports of a driver from a driver or from below the drivers:\n{}", bad.join("\n"));
}

#[test]
fn the_checks_see_an_upward_import() {
    let found = imports("use crate::server::serve;\n// crate::cmd in a comment\n#[cfg(test)]\nuse crate::cmd;");
    assert_eq!(found.iter().map(|(n, m, _)| (*n, m.as_str())).collect::<Vec<_>>(), [(1, "server")]);
}
