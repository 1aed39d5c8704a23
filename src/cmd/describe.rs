//! `patchops describe deployment|client|update NAME`: one object in full, as kubectl
//! describes one — its fields, conditions and, for a deployment, the machines holding it
//! back; for a client, every update with its Table 1 reason and why it is not compliant.
//! Read through the management point's read API.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::ValueEnum;
use serde_json::Value;

use super::get::{ConnectArgs, ReadClient, segment};
use crate::Result;
use crate::output::{Columns, OutputFormat, Shown, minute};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "deployments", alias = "udep")]
    Deployment,
    #[value(alias = "clients")]
    Client,
    #[value(alias = "updates")]
    Update,
}

/// `-o` of `describe`: text for people, or the documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DescribeFormat {
    Text,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// deployment, client or update.
    pub kind: Kind,
    /// The deployment or client name, or the update id (or its KB).
    pub name: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, short, value_enum, default_value_t = DescribeFormat::Text)]
    pub output: DescribeFormat,
    /// Machines listed per state for a deployment.
    #[arg(long, default_value_t = 20)]
    pub machines: usize,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let client = ReadClient::connect(&args.connect)?;
    let name = segment(&args.name);
    let doc = match args.kind {
        Kind::Deployment => {
            let mut d = client.get(&format!("deployments/{name}"), &[])?;
            let limit = args.machines.clamp(1, crate::site::view::MAX_LIMIT).to_string();
            for state in ["Required", "Unknown", "Failed"] {
                let page = client.get(
                    &format!("deployments/{name}/machines"),
                    &[("state", state.to_string()), ("limit", limit.clone())],
                )?;
                d["machines"][state] = page;
            }
            d
        }
        Kind::Client => client.get(&format!("clients/{name}"), &[])?,
        Kind::Update => client.get(&format!("updates/{name}"), &[])?,
    };
    match args.output {
        DescribeFormat::Json => println!("{}", serde_json::to_string_pretty(&doc).expect("values serialize")),
        DescribeFormat::Yaml => print!("{}", serde_saphyr::to_string(&doc).expect("values serialize")),
        DescribeFormat::Text => print!(
            "{}",
            match args.kind {
                Kind::Deployment => deployment(&doc),
                Kind::Client => client_text(&doc),
                Kind::Update => update(&doc),
            }
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    let parts: Vec<String> = v.as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
    if parts.is_empty() { "-".into() } else { parts.join(", ") }
}

/// `Label:` padded to one column, as kubectl describe prints.
fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<20}{value}", format!("{label}:"));
}

/// A table indented under a section title.
fn section(out: &mut String, title: &str, header: &[&str], rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "{title}:");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let cols: Vec<(&str, Shown)> = header.iter().map(|h| (*h, Shown::Always)).collect();
    let mut t = Columns::new(&cols, OutputFormat::Table);
    for r in rows {
        t.row(r);
    }
    for line in t.to_string().lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn conditions(out: &mut String, v: &Value) {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| vec![text(&c["type"]), text(&c["status"]), text(&c["reason"]), text(&c["message"])])
                .collect()
        })
        .unwrap_or_default();
    section(out, "Conditions", &["TYPE", "STATUS", "REASON", "MESSAGE"], rows);
}

fn deployment(d: &Value) -> String {
    let mut out = String::new();
    let st = &d["status"];
    let m = &st["machines"];
    field(&mut out, "Name", text(&d["name"]));
    field(&mut out, "Namespace", text(&d["namespace"]));
    field(&mut out, "Update list", text(&d["updateList"]));
    field(&mut out, "Template", text(&d["template"]));
    field(&mut out, "Collections", list(&d["collections"]));
    field(&mut out, "Mandatory", text(&d["mandatory"]));
    let phase = match &st["rolloutPhase"] {
        Value::String(p) => format!("{} ({p})", text(&st["phase"])),
        _ => text(&st["phase"]),
    };
    field(&mut out, "Phase", phase);
    field(&mut out, "Available", minute(&st["availableTime"]));
    field(&mut out, "Deadline", minute(&st["deadline"]));
    field(&mut out, "Next window", minute(&st["nextMaintenanceWindow"]));
    field(&mut out, "Revision", text(&st["lastAppliedRevision"]));
    field(
        &mut out,
        "Compliance",
        format!(
            "{:.1}% of {} targeted machines",
            st["compliancePercent"].as_f64().unwrap_or(0.0),
            text(&st["targeted"])
        ),
    );
    field(
        &mut out,
        "Machines",
        format!(
            "{} compliant, {} required, {} unknown, {} failed, {} pending reboot, {} waived",
            text(&m["compliant"]),
            text(&m["required"]),
            text(&m["unknown"]),
            text(&m["failed"]),
            text(&m["pendingReboot"]),
            text(&m["waived"])
        ),
    );
    field(&mut out, "Updates", list(&d["updates"]));
    if let Some(phases) = st["phases"].as_array().filter(|p| !p.is_empty()) {
        let rows = phases
            .iter()
            .map(|p| {
                vec![
                    text(&p["name"]),
                    text(&p["state"]),
                    minute(&p["startedTime"]),
                    minute(&p["succeededTime"]),
                    format!("{}/{}", text(&p["compliant"]), text(&p["targeted"])),
                ]
            })
            .collect();
        section(&mut out, "Phases", &["PHASE", "STATE", "STARTED", "SUCCEEDED", "COMPLIANT"], rows);
    }
    conditions(&mut out, &st["conditions"]);
    for state in ["Required", "Unknown", "Failed"] {
        let page = &d["machines"][state];
        let rows: Vec<Vec<String>> = page["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| vec![text(&m["name"]), text(&m["reason"]), minute(&m["lastScan"]), text(&m["message"])])
                    .collect()
            })
            .unwrap_or_default();
        let title = format!("{state} machines ({} of {})", rows.len(), text(&page["total"]));
        section(&mut out, &title, &["MACHINE", "REASON", "LAST SCAN", "MESSAGE"], rows);
    }
    out
}

fn client_text(c: &Value) -> String {
    let mut out = String::new();
    field(&mut out, "Name", text(&c["name"]));
    let facts: Vec<String> =
        c["facts"].as_object().map(|f| f.iter().map(|(k, v)| format!("{k}={}", text(v))).collect()).unwrap_or_default();
    field(&mut out, "Facts", if facts.is_empty() { "-".into() } else { facts.join(", ") });
    field(&mut out, "Collections", list(&c["collections"]));
    field(&mut out, "Agent version", text(&c["agentVersion"]));
    let scan = &c["lastScan"];
    let scan_text = if scan.is_null() {
        "never".to_string()
    } else {
        format!("{} (catalog version {})", minute(&scan["time"]), text(&scan["catalogVersion"]))
    };
    field(&mut out, "Last scan", scan_text);
    let failure = &c["lastFailure"];
    if !failure.is_null() {
        field(&mut out, "Last failure", format!("{}: {}", minute(&failure["time"]), text(&failure["error"])));
    }
    if !c["unknownReason"].is_null() {
        field(&mut out, "Unknown reason", text(&c["unknownReason"]));
    }
    field(&mut out, "Pending reboot", text(&c["pendingReboot"]));
    field(&mut out, "Policy", text(&c["policyEtag"]));
    field(&mut out, "Why not compliant", text(&c["whyNotCompliant"]));
    let deployments = c["deployments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    vec![
                        text(&d["name"]),
                        text(&d["phase"]),
                        minute(&d["availableTime"]),
                        minute(&d["deadline"]),
                        text(&d["mandatory"]),
                        d["updates"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    section(
        &mut out,
        "Deployments",
        &["DEPLOYMENT", "PHASE", "AVAILABLE", "DEADLINE", "MANDATORY", "UPDATES"],
        deployments,
    );
    let windows = c["maintenanceWindows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    let when = w.get("start").map(text).unwrap_or_else(|| "-".into());
                    vec![text(&w["name"]), when, text(&w["duration"]), text(&w["timeZone"]), text(&w["recurrence"])]
                })
                .collect()
        })
        .unwrap_or_default();
    section(&mut out, "Maintenance windows", &["WINDOW", "START", "DURATION", "TIME ZONE", "RECURRENCE"], windows);
    let updates = c["updates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    vec![
                        text(&u["id"]),
                        text(&u["state"]),
                        text(&u["reason"]),
                        list(&u["deployments"]),
                        if u["waivedBy"].is_array() { list(&u["waivedBy"]) } else { "-".into() },
                        text(&u["error"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    section(&mut out, "Updates", &["UPDATE", "STATE", "REASON", "DEPLOYMENTS", "WAIVED BY", "ERROR"], updates);
    out
}

fn update(u: &Value) -> String {
    let mut out = String::new();
    field(&mut out, "Id", text(&u["id"]));
    field(&mut out, "KB", text(&u["kb"]));
    field(&mut out, "Title", text(&u["title"]));
    field(&mut out, "Classification", text(&u["classification"]));
    field(&mut out, "Severity", text(&u["severity"]));
    field(&mut out, "Products", list(&u["products"]));
    field(&mut out, "Released", text(&u["released"]));
    field(&mut out, "CVEs", list(&u["cves"]));
    let state = if u["expired"] == Value::Bool(true) {
        "Expired".to_string()
    } else if u["superseded"] == Value::Bool(true) {
        format!("Superseded by {}", list(&u["supersededBy"]))
    } else {
        "Active".to_string()
    };
    field(&mut out, "State", state);
    field(&mut out, "Catalog version", format!("since {}", text(&u["sinceVersion"])));
    field(&mut out, "Required by", format!("{} systems", text(&u["required"])));
    field(&mut out, "Installed on", format!("{} systems", text(&u["installed"])));
    field(&mut out, "Deployments", list(&u["deployments"]));
    field(&mut out, "Reboot required", text(&u["update"]["rebootRequired"]));
    field(&mut out, "Max run time", text(&u["update"]["maxRunTime"]));
    let files = u["update"]["files"]
        .as_array()
        .map(|a| a.iter().map(|f| vec![text(&f["name"]), text(&f["size"]), text(&f["sha256"])]).collect())
        .unwrap_or_default();
    section(&mut out, "Files", &["FILE", "SIZE", "SHA256"], files);
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_client_description_names_its_updates_reasons_and_why_it_is_not_compliant() {
        let c = json!({
            "name": "web-01", "facts": {"os": "Windows 11"}, "collections": ["all"],
            "lastScan": {"time": "2026-12-01T10:00:00Z", "catalogVersion": 3, "error": null},
            "pendingReboot": false, "policyEtag": "abc",
            "whyNotCompliant": "Required: 1 deployed update(s) (KB1) — 1 are not installed yet.",
            "deployments": [{"name": "d", "availableTime": "2026-12-01T00:00:00Z", "mandatory": true, "updates": ["KB1"]}],
            "maintenanceWindows": [],
            "updates": [{"id": "KB1", "state": "Required", "reason": "DeployedNotInstalled", "deployments": ["d"]}]
        });
        let text = client_text(&c);
        assert!(text.contains("Last scan:          2026-12-01T10:00Z (catalog version 3)"), "{text}");
        assert!(text.contains("Why not compliant:  Required: 1 deployed update(s)"), "{text}");
        assert!(text.contains("KB1     Required  DeployedNotInstalled  d"), "{text}");
    }
}
