//! patchops's own catalog format: a YAML or JSON document with a list of updates,
//! described by `schemas/native-catalog.schema.json` (generated from these types).

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Update;
use crate::desired::Problem;
use crate::yaml::parse_documents;

/// A native catalog file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NativeCatalog {
    /// Always `patchops.dev/native-catalog/v1`.
    pub format: String,
    /// The updates.
    pub updates: Vec<Update>,
}

pub const FORMAT: &str = "patchops.dev/native-catalog/v1";

/// Parse one native catalog file (YAML or JSON; several YAML documents are merged).
/// Every problem names the file, line and field.
pub fn parse(file: &str, text: &str) -> Result<Vec<Update>, Vec<Problem>> {
    // Fast path: a well-formed single document parses straight into the types. Only a
    // document with a problem pays for the position index that locates it.
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let fast: Option<NativeCatalog> =
        if trimmed.starts_with('{') { serde_json::from_str(trimmed).ok() } else { crate::yaml::from_str(text).ok() };
    if let Some(c) = fast
        && c.format == FORMAT
        && is_sound(&c.updates)
    {
        return Ok(c.updates);
    }
    let docs = parse_documents(file, text).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let mut updates = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for doc in &docs {
        let catalog: NativeCatalog = match doc.typed("") {
            Ok(c) => c,
            Err(mut p) => {
                problems.append(&mut p);
                continue;
            }
        };
        if catalog.format != FORMAT {
            problems.push(doc.problem(
                "format",
                format!("{:?} is not a known catalog format; write format: {FORMAT}", catalog.format),
            ));
            continue;
        }
        for (i, u) in catalog.updates.into_iter().enumerate() {
            let field = format!("updates[{i}]");
            if let Some(first) = seen.insert(u.id.clone(), i) {
                problems.push(doc.problem(
                    &format!("{field}.id"),
                    format!("duplicate update id {:?} (first at updates[{first}])", u.id),
                ));
            }
            for p in u.applicability.problems() {
                problems.push(doc.problem(&format!("{field}.applicability"), p));
            }
            for (j, f) in u.files.iter().enumerate() {
                if f.sha256.len() != 64 || !f.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                    problems.push(doc.problem(&format!("{field}.files[{j}].sha256"), "must be 64 hex digits"));
                }
            }
            updates.push(u);
        }
    }
    if problems.is_empty() { Ok(updates) } else { Err(problems) }
}

/// No duplicate ids, sound rules, well-formed hashes (what the slow path reports in detail).
fn is_sound(updates: &[Update]) -> bool {
    let mut ids = std::collections::HashSet::with_capacity(updates.len());
    updates.iter().all(|u| {
        ids.insert(u.id.as_str())
            && u.applicability.problems().is_empty()
            && u.files.iter().all(|f| f.sha256.len() == 64 && f.sha256.chars().all(|c| c.is_ascii_hexdigit()))
    })
}

/// The JSON Schema of the format, as committed in `schemas/native-catalog.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(NativeCatalog);
    serde_json::to_string_pretty(&schema).expect("schemas serialize") + "\n"
}

#[cfg(test)]
mod test {
    use super::*;

    const GOOD: &str = r#"format: patchops.dev/native-catalog/v1
updates:
  - id: KB5032189-w10
    kb: KB5032189
    title: 2026-11 Cumulative Update for Windows 10 22H2
    classification: Security Updates
    severity: Critical
    products: [Windows 10 22H2]
    released: 2026-11-10
    rebootRequired: true
    maxRunTime: 60m
    applicability:
      isInstallable: {fact: {name: os, equals: Windows 10 22H2}}
      isInstalled: {installed: KB5032189}
"#;

    #[test]
    fn c1_native_catalogs_carry_applicability_rules() {
        let updates = parse("c.yaml", GOOD).unwrap();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].max_run_time, crate::time::Duration::from_hours(1));
        let facts = crate::catalog::Facts::from_pairs(&[("os", "Windows 10 22H2")], &[]);
        assert_eq!(updates[0].applicability.evaluate(&facts), crate::catalog::ScanVerdict::Missing);
    }

    #[test]
    fn bad_catalogs_name_file_line_and_field() {
        let typo = GOOD.replace("severity: Critical", "severity: Critcal");
        let p = parse("c.yaml", &typo).unwrap_err();
        assert_eq!((p[0].file.as_str(), p[0].line, p[0].field.as_str()), ("c.yaml", 7, "updates[0].severity"));

        let unknown = GOOD.replace("rebootRequired: true", "rebootRequired: true\n    colour: red");
        let p = parse("c.yaml", &unknown).unwrap_err();
        assert_eq!(p[0].field, "updates[0].colour", "{p:?}");
        assert_eq!(p[0].line, 11);

        let dup = format!("{GOOD}{}", &GOOD[GOOD.find("  - id").unwrap()..]);
        let p = parse("c.yaml", &dup).unwrap_err();
        assert!(p[0].message.contains("duplicate update id"), "{p:?}");
    }

    #[test]
    fn the_committed_json_schema_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/native-catalog.schema.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == schema_json(),
            "schemas/native-catalog.schema.json drifted from the types; run `cargo run -- catalog schema > schemas/native-catalog.schema.json`"
        );
    }
}
