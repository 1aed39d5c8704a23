//! Security governance: the questions auditors ask, answered from the repository and the
//! store — which machines are exposed to a CVE (`cve`), which exceptions are open
//! (`Waiver`), which targets are broken (`CompliancePolicy`). The decisions are pure
//! functions of (catalog, fleet, desired state, now); the commands only load and print.

pub mod cve;
pub mod exposure;
pub mod policy;
pub mod sla;
pub mod waivers;

use clap::ValueEnum;
use serde::Serialize;

/// How governance reports print: a table for people, JSON/YAML for scripts, CSV for
/// spreadsheets and the auditors' tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Yaml,
    Csv,
}

/// Rows as CSV with a header (the field names of `T`).
pub fn to_csv<T: Serialize>(rows: &[T]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).expect("report rows are flat and serialize");
    }
    String::from_utf8(w.into_inner().expect("writing to memory cannot fail")).expect("CSV of UTF-8 text is UTF-8")
}
