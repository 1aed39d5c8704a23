//! Printing results as a table (people), JSON or YAML (scripts).

use clap::ValueEnum;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::store::ReconcileRecord;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
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

/// Per-deployment status as a table: what an admin checks every morning.
pub fn deployments_table(record: &ReconcileRecord) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "DEPLOYMENT",
        "PHASE",
        "COMPLIANT %",
        "TARGETED",
        "COMPLIANT",
        "REQUIRED",
        "UNKNOWN",
        "FAILED",
        "REBOOT",
        "WAIVED",
        "NEXT WINDOW",
        "DEADLINE",
    ]);
    for s in record.statuses.iter().filter(|s| s.kind == "UpdateDeployment") {
        let st = &s.status;
        let phase = match field(st, "rolloutPhase") {
            serde_json::Value::String(p) => format!("{} ({p})", text(field(st, "phase"))),
            _ => text(field(st, "phase")),
        };
        t.add_row([
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
            text(field(st, "nextMaintenanceWindow")),
            text(field(st, "deadline")),
        ]);
    }
    t.to_string()
}

pub fn print_record(record: &ReconcileRecord, format: OutputFormat) {
    match format {
        OutputFormat::Table => {
            println!(
                "revision {}  catalog version {}  reconciled {}",
                record.revision, record.catalog_version, record.time
            );
            println!("{}", deployments_table(record));
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
