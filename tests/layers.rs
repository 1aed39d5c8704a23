//! Data flows one way: the command layer (`src/cli.rs`, `src/main.rs`) parses and
//! dispatches, and nothing below it imports it back.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_below_the_command_layer_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let upward: Vec<String> = files
        .iter()
        .filter(|p| !p.ends_with("cli.rs") && !p.ends_with("main.rs"))
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let shown = p.strip_prefix(&src).unwrap().display().to_string();
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.contains("crate::cli"))
                .map(|(n, l)| format!("src/{shown}:{}: {}", n + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(upward.is_empty(), "imports of the command layer from below it:\n{}", upward.join("\n"));
}
