//! `docs/rules.md` maps each of the seed's rule ids to the rule, the code that decides it
//! and its tests. This keeps the page true: every id has at least one test whose name
//! starts with it (alone or in a run of ids: `s2_s3_s4_…`), and every test the page
//! names still exists.

use std::collections::BTreeSet;
use std::path::Path;

/// The test function names of every `.rs` file under `dir`.
fn functions(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            functions(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for rest in text.split("fn ").skip(1) {
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
}

/// A rule id as it starts a test name: `T1.R3` → `t1_r3`, `O-REPO` → `o_repo`.
fn token(id: &str) -> String {
    id.to_ascii_lowercase().replace(['.', '-'], "_")
}

/// The rule ids a test name starts with: the leading tokens that are ids.
fn leading_ids<'a>(name: &str, ids: &'a [String]) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = name;
    'outer: loop {
        // Longest id first, so that `t1_r3` is not read as `t1`.
        let mut candidates: Vec<&String> = ids.iter().collect();
        candidates.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in candidates {
            if let Some(after) = rest.strip_prefix(t.as_str()).and_then(|r| r.strip_prefix('_')) {
                found.push(t.as_str());
                rest = after;
                continue 'outer;
            }
        }
        return found;
    }
}

#[test]
fn every_rule_id_in_the_rules_page_has_a_test_and_every_test_it_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/rules.md")).unwrap();
    let ids: Vec<String> = page.lines().filter_map(|l| l.strip_prefix("### ")).map(str::to_string).collect();
    assert!(ids.len() >= 40, "the page lists the seed's rules ({} found)", ids.len());
    let tokens: Vec<String> = ids.iter().map(|i| token(i)).collect();
    let mut names = BTreeSet::new();
    functions(&root.join("src"), &mut names);
    functions(&root.join("tests"), &mut names);
    let covered: BTreeSet<&str> = names.iter().flat_map(|n| leading_ids(n, &tokens)).collect();
    let missing: Vec<&String> = ids.iter().filter(|i| !covered.contains(token(i).as_str())).collect();
    assert!(missing.is_empty(), "rules without a test named after them: {missing:?}");

    for line in page.lines().filter_map(|l| l.strip_prefix("Tests: ")) {
        for named in line.split('`').skip(1).step_by(2) {
            assert!(names.contains(named), "docs/rules.md names test {named}, which no longer exists");
        }
    }
}

#[test]
fn leading_ids_reads_runs_of_ids_and_stops_at_the_prose() {
    let ids: Vec<String> = ["s2", "s3", "t1_r3", "t1", "d6"].iter().map(|s| s.to_string()).collect();
    assert_eq!(leading_ids("s2_s3_a_new_catalog", &ids), ["s2", "s3"]);
    assert_eq!(leading_ids("t1_r3_a_restart", &ids), ["t1_r3"]);
    assert_eq!(leading_ids("scan_then_d6", &ids), Vec::<&str>::new());
}
