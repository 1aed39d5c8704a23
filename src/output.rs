//! Printing results as a table (people), JSON or YAML (scripts). Tables follow kubectl's
//! conventions: the default columns fit 120 characters, `-o wide` adds the rest, and
//! `--no-headers` leaves the header row out for `awk` and `cut`.

use std::sync::atomic::{AtomicBool, Ordering};

use clap::ValueEnum;
use comfy_table::Table;

use crate::store::ReconcileRecord;

/// `-o`: how a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table of the most useful columns (fits 120 characters).
    Table,
    /// The table with every column.
    Wide,
    /// JSON (camelCase keys), for scripts.
    Json,
    /// YAML (camelCase keys), for scripts.
    Yaml,
}

impl OutputFormat {
    /// A table for people (`table` or `wide`), rather than a document for scripts.
    pub fn is_table(self) -> bool {
        matches!(self, OutputFormat::Table | OutputFormat::Wide)
    }
}

static NO_HEADERS: AtomicBool = AtomicBool::new(false);

/// `--no-headers`: tables printed from now on leave out their header row.
pub fn set_no_headers(no_headers: bool) {
    NO_HEADERS.store(no_headers, Ordering::Relaxed);
}

/// Whether tables print their header row (and the line above it): false with `--no-headers`.
pub fn headers() -> bool {
    !NO_HEADERS.load(Ordering::Relaxed)
}

/// Whether a column is in the default table or only in `-o wide`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Always,
    Wide,
}

/// A table whose columns are chosen by `-o table|wide`: rows are given in full, and the
/// columns only `wide` shows are dropped for the default table.
pub struct Columns {
    table: Table,
    keep: Vec<bool>,
}

impl Columns {
    pub fn new(header: &[(&str, Shown)], format: OutputFormat) -> Self {
        let keep: Vec<bool> = header.iter().map(|(_, s)| *s == Shown::Always || format == OutputFormat::Wide).collect();
        let mut table = Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        if headers() {
            table.set_header(header.iter().zip(&keep).filter(|(_, k)| **k).map(|((h, _), _)| *h));
        }
        Columns { table, keep }
    }

    /// One row, with a cell for every column of the header.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        self.table.add_row(cells.into_iter().zip(&self.keep).filter(|(_, k)| **k).map(|(c, _)| c));
    }
}

/// As kubectl prints: no borders, two spaces between columns, no trailing blanks.
impl std::fmt::Display for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut table = self.table.clone();
        table.column_iter_mut().for_each(|c| {
            c.set_padding((0, 2));
        });
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A time as tables show it: to the minute, in UTC (`2026-12-01T16:00Z`).
pub fn minute(v: &serde_json::Value) -> String {
    match v.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%MZ").to_string(),
        None => text(v),
    }
}

fn field<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or(&serde_json::Value::Null))
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The columns of the per-deployment status table (`status`, `get deployments`).
pub const DEPLOYMENT_COLUMNS: &[(&str, Shown)] = &[
    ("DEPLOYMENT", Shown::Always),
    ("PHASE", Shown::Always),
    ("COMPLIANT %", Shown::Always),
    ("TARGETED", Shown::Always),
    ("COMPLIANT", Shown::Wide),
    ("REQUIRED", Shown::Always),
    ("UNKNOWN", Shown::Always),
    ("FAILED", Shown::Always),
    ("REBOOT", Shown::Wide),
    ("WAIVED", Shown::Wide),
    ("NEXT WINDOW", Shown::Always),
    ("DEADLINE", Shown::Wide),
];

/// Per-deployment status as a table: what an admin checks every morning.
pub fn deployments_table(record: &ReconcileRecord, format: OutputFormat) -> String {
    let mut t = Columns::new(DEPLOYMENT_COLUMNS, format);
    for s in record.statuses.iter().filter(|s| s.kind == "UpdateDeployment") {
        let st = &s.status;
        let phase = match field(st, "rolloutPhase") {
            serde_json::Value::String(p) => format!("{} ({p})", text(field(st, "phase"))),
            _ => text(field(st, "phase")),
        };
        t.row([
            s.name.clone(),
            phase,
            format!("{:.1}", field(st, "compliancePercent").as_f64().unwrap_or(0.0)),
            text(field(st, "targeted")),
            text(field(st, "machines.compliant")),
            text(field(st, "machines.required")),
            text(field(st, "machines.unknown")),
            text(field(st, "machines.failed")),
            text(field(st, "machines.pendingReboot")),
            text(field(st, "machines.waived")),
            minute(field(st, "nextMaintenanceWindow")),
            minute(field(st, "deadline")),
        ]);
    }
    t.to_string()
}

pub fn print_record(record: &ReconcileRecord, format: OutputFormat) {
    match format {
        OutputFormat::Table | OutputFormat::Wide => {
            if headers() {
                println!(
                    "revision {}  catalog version {}  reconciled {}",
                    short_revision(&record.revision),
                    record.catalog_version,
                    record.time.round(jiff::Unit::Second).unwrap_or(record.time)
                );
            }
            println!("{}", deployments_table(record, format));
            for s in record.statuses.iter().filter(|s| s.kind == "Waiver" || s.kind == "CompliancePolicy") {
                let ready = s.status.get("conditions").and_then(|c| c.get(0));
                let message = ready.and_then(|c| c.get("message")).map_or("-".into(), text);
                println!("{} {}: {message}", s.kind, s.name);
            }
        }
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(record).expect("records serialize")),
        OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(record).expect("records serialize")),
    }
}

/// A revision with its commit cut to 12 hex digits, as git shows it (`main@sha1:0123456789ab`).
pub fn short_revision(revision: &str) -> &str {
    match revision.find("sha1:") {
        Some(i) => &revision[..(i + 5 + 12).min(revision.len())],
        None => revision,
    }
}
