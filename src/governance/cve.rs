//! `patchops cve`: load the catalog, the fleet and the last reconcile from the store and
//! the collections and deployments from the repository, then print what
//! [`super::exposure`] decides.

use std::collections::HashMap;
use std::process::ExitCode;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::ReportFormat;
use super::exposure::{self, CveListRow, CveReport, RecordedDeployment, Scope};
use crate::catalog::Severity;
use crate::git::RepoArgs;
use crate::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct CveArgs {
    /// The CVE id, e.g. CVE-2023-21549.
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub cve: Option<String>,
    /// List every CVE some machine is exposed to, most exposed first.
    #[arg(long)]
    pub list: bool,
    /// With --list: include CVEs no machine is exposed to.
    #[arg(long, requires = "list")]
    pub all: bool,
    /// With --list: only CVEs whose fixes are rated this severity or higher
    /// (Low, Moderate, Important, Critical).
    #[arg(long, requires = "list", value_parser = parse_severity)]
    pub severity: Option<Severity>,
    /// With --list: count only the machines of this collection.
    #[arg(long, requires = "list")]
    pub collection: Option<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
    pub store: String,
    #[arg(long, short, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
}

pub fn parse_severity(text: &str) -> std::result::Result<Severity, String> {
    match text.to_ascii_lowercase().as_str() {
        "low" => Ok(Severity::Low),
        "moderate" => Ok(Severity::Moderate),
        "important" => Ok(Severity::Important),
        "critical" => Ok(Severity::Critical),
        "unspecified" => Ok(Severity::Unspecified),
        _ => Err(format!("{text:?} is not a severity: use Low, Moderate, Important or Critical")),
    }
}

pub fn run(args: &CveArgs) -> Result<ExitCode> {
    let cve = args.cve.as_deref().map(exposure::parse_cve).transpose().map_err(Error::Usage)?;
    let source = crate::git::git_source(&args.repo, &crate::process::state_dir());
    let (_, desired) = crate::pipeline::load_desired(&source)?;
    let store = crate::store::open_existing(&args.store)?;
    let catalog = store.load_catalog()?;
    let index = exposure::cve_index(&catalog);
    let now = jiff::Timestamp::now();
    match cve {
        Some(cve) => {
            // Only the states of the fixing updates are read.
            let keys: Vec<u32> = index.get(&cve).into_iter().flatten().map(|&i| catalog.keys[i as usize]).collect();
            let fleet = store.load_fleet_for(&keys)?;
            let scope = Scope::new(&desired, &catalog, &fleet, &index, now);
            let recorded = recorded_deployments(store.last_reconcile()?);
            let report = exposure::cve_report(&scope, &desired, &index, &cve, &recorded).map_err(Error::Usage)?;
            print_report(&report, args.output);
        }
        None => {
            let fleet = store.load_fleet()?;
            let scope = Scope::new(&desired, &catalog, &fleet, &index, now);
            let rows = exposure::cve_list(
                &scope,
                &index,
                args.severity.unwrap_or_default(),
                args.collection.as_deref(),
                !args.all,
            )
            .map_err(Error::Usage)?;
            print_list(&rows, args.output);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Phase and deadline of every deployment in the last reconcile.
pub fn recorded_deployments(record: Option<crate::store::ReconcileRecord>) -> HashMap<String, RecordedDeployment> {
    record
        .map(|r| r.statuses)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.kind == "UpdateDeployment")
        .map(|s| {
            let text = |k: &str| s.status.get(k).and_then(|v| v.as_str()).map(str::to_string);
            let rec = RecordedDeployment {
                phase: text("phase").filter(|p| !p.is_empty()),
                deadline: text("deadline").and_then(|d| d.parse().ok()),
            };
            (s.name, rec)
        })
        .collect()
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |v| v.to_string())
}

/// One CSV row per collection (and one for the whole fleet).
#[derive(serde::Serialize)]
struct CsvRow<'a> {
    cve: &'a str,
    collection: &'a str,
    machines: u64,
    exposed: u64,
    installed: u64,
    not_applicable: u64,
    unknown: u64,
    waived: u64,
}

pub fn print_report(r: &CveReport, format: ReportFormat) {
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(r).expect("reports serialize")),
        ReportFormat::Yaml => print!("{}", serde_saphyr::to_string(r).expect("reports serialize")),
        ReportFormat::Csv => {
            let fleet = std::iter::once(("(all machines)", &r.fleet));
            let rows: Vec<CsvRow> = fleet
                .chain(r.collections.iter().map(|c| (c.collection.as_str(), &c.counts)))
                .map(|(collection, c)| CsvRow {
                    cve: &r.cve,
                    collection,
                    machines: c.machines,
                    exposed: c.exposed,
                    installed: c.installed,
                    not_applicable: c.not_applicable,
                    unknown: c.unknown,
                    waived: c.waived,
                })
                .collect();
            print!("{}", super::to_csv(&rows));
        }
        ReportFormat::Table => {
            println!("{}  severity {:?}  catalog version {}", r.cve, r.severity, r.catalog_version);
            let mut t = table(&["UPDATE", "KB", "SEVERITY", "RELEASED", "PRODUCTS", "NOTE"]);
            for u in &r.updates {
                let note = match (u.superseded, u.expired) {
                    (_, true) => "expired",
                    (true, _) => "superseded",
                    _ => "",
                };
                t.add_row([
                    u.id.clone(),
                    opt(&u.kb),
                    format!("{:?}", u.severity),
                    u.released.to_string(),
                    u.products.join(", "),
                    note.into(),
                ]);
            }
            println!("{t}");
            let mut t =
                table(&["COLLECTION", "MACHINES", "EXPOSED", "INSTALLED", "NOT APPLICABLE", "UNKNOWN", "WAIVED"]);
            let fleet = std::iter::once(("(all machines)", &r.fleet));
            for (name, c) in fleet.chain(r.collections.iter().map(|c| (c.collection.as_str(), &c.counts))) {
                t.add_row([
                    name.to_string(),
                    c.machines.to_string(),
                    c.exposed.to_string(),
                    c.installed.to_string(),
                    c.not_applicable.to_string(),
                    c.unknown.to_string(),
                    c.waived.to_string(),
                ]);
            }
            println!("{t}");
            if !r.waived.is_empty() {
                let mut t = table(&["WAIVED MACHINE", "WAIVERS"]);
                for w in &r.waived {
                    t.add_row([w.machine.clone(), w.waivers.join(", ")]);
                }
                println!("{t}");
            }
            if r.deployments.is_empty() {
                println!("no deployment carries a fix");
            } else {
                let mut t = table(&["DEPLOYMENT", "UPDATES", "COLLECTIONS", "PHASE", "DEADLINE"]);
                for d in &r.deployments {
                    t.add_row([
                        d.deployment.clone(),
                        d.updates.join(", "),
                        d.collections.join(", "),
                        opt(&d.phase),
                        opt(&d.deadline),
                    ]);
                }
                println!("{t}");
            }
        }
    }
}

pub fn print_list(rows: &[CveListRow], format: ReportFormat) {
    #[derive(serde::Serialize)]
    struct Flat<'a> {
        cve: &'a str,
        severity: String,
        updates: u64,
        released: String,
        machines: u64,
        exposed: u64,
        installed: u64,
        not_applicable: u64,
        unknown: u64,
        waived: u64,
    }
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(rows).expect("reports serialize")),
        ReportFormat::Yaml => print!("{}", serde_saphyr::to_string(&rows).expect("reports serialize")),
        ReportFormat::Csv => {
            let flat: Vec<Flat> = rows
                .iter()
                .map(|r| Flat {
                    cve: &r.cve,
                    severity: format!("{:?}", r.severity),
                    updates: r.updates,
                    released: r.released.to_string(),
                    machines: r.counts.machines,
                    exposed: r.counts.exposed,
                    installed: r.counts.installed,
                    not_applicable: r.counts.not_applicable,
                    unknown: r.counts.unknown,
                    waived: r.counts.waived,
                })
                .collect();
            print!("{}", super::to_csv(&flat));
        }
        ReportFormat::Table => {
            let mut t = table(&[
                "CVE",
                "SEVERITY",
                "UPDATES",
                "RELEASED",
                "EXPOSED",
                "INSTALLED",
                "NOT APPLICABLE",
                "UNKNOWN",
                "WAIVED",
            ]);
            for r in rows {
                t.add_row([
                    r.cve.clone(),
                    format!("{:?}", r.severity),
                    r.updates.to_string(),
                    r.released.to_string(),
                    r.counts.exposed.to_string(),
                    r.counts.installed.to_string(),
                    r.counts.not_applicable.to_string(),
                    r.counts.unknown.to_string(),
                    r.counts.waived.to_string(),
                ]);
            }
            println!("{t}");
            println!("{} CVE(s)", rows.len());
        }
    }
}
