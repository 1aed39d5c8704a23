//! `patchops get deployments|collections|updates|clients`: tables of what the site looks
//! like now, through the management point's read API (`/v1/read/…`) — no database
//! credentials needed, only a read token. Also the connection both `get` and `describe`
//! use: `--server` / `PATCHOPS_SERVER`, the token from `PATCHOPS_TOKEN`, either from a
//! config file (`~/.config/patchops/config.yaml`: `server:` and `token:`, like an argocd
//! context).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::Value;

use crate::output::{Columns, OutputFormat, Shown, minute};
use crate::{Error, Result};

/// Where the read API is and how to authenticate to it.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The management point's URL, e.g. http://mp.example.org:8080 (default: `server:`
    /// of the config file).
    #[arg(long, env = "PATCHOPS_SERVER")]
    pub server: Option<String>,
    /// The config file with `server:` and `token:` (a read token). The token can also
    /// come from PATCHOPS_TOKEN, which wins.
    #[arg(long, env = "PATCHOPS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The config file: the management point and a read token.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// The default config file: `$XDG_CONFIG_HOME/patchops/config.yaml`, else `~/.config/…`.
fn default_config() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("patchops").join("config.yaml"))
}

/// A connection to the read API.
pub struct ReadClient {
    base: String,
    token: String,
    http: ureq::Agent,
}

impl ReadClient {
    /// From the flags, the environment and the config file, in that order.
    pub fn connect(args: &ConnectArgs) -> Result<ReadClient> {
        let (path, explicit) = match &args.config {
            Some(p) => (Some(p.clone()), true),
            None => (default_config(), false),
        };
        let file = match path.as_ref() {
            Some(p) if explicit || p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.clone(), source })?;
                serde_saphyr::from_str::<ConfigFile>(&text).map_err(|e| {
                    Error::Usage(format!(
                        "{}: {e}; the file holds `server: <url>` and `token: <read token>`",
                        p.display()
                    ))
                })?
            }
            _ => ConfigFile::default(),
        };
        let server = args.server.clone().or(file.server).filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            Error::Usage(
                "no management point: pass --server URL, set PATCHOPS_SERVER, or write `server: <url>` in \
                 ~/.config/patchops/config.yaml"
                    .into(),
            )
        })?;
        let token = std::env::var("PATCHOPS_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or(file.token)
            .map(|t| t.trim().to_string())
            .ok_or_else(|| {
                Error::Usage(
                    "no read token: set PATCHOPS_TOKEN, or write `token: <read token>` in \
                     ~/.config/patchops/config.yaml (the operator lists read tokens in --read-token-file)"
                        .into(),
                )
            })?;
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(ReadClient { base: server.trim().trim_end_matches('/').to_string(), token, http })
    }

    /// `GET /v1/read/<path>` with query parameters; the JSON answer, or an error that
    /// carries the server's message.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let url = format!("{}/v1/read/{path}", self.base);
        let mut request = self.http.get(&url).header("Authorization", format!("Bearer {}", self.token));
        for (k, v) in query {
            request = request.query(*k, v);
        }
        let mut response = request.call().map_err(|e| {
            Error::Runtime(format!(
                "cannot reach the management point at {}: {e}; check --server (or PATCHOPS_SERVER)",
                self.base
            ))
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Error::Runtime(format!("GET {url}: cannot read the answer: {e}")))?;
        let json: Option<Value> = serde_json::from_str(&body).ok();
        if status != 200 {
            let message = json
                .as_ref()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.chars().take(300).collect());
            return Err(Error::Runtime(format!("{} answered {status}: {message}", self.base)));
        }
        json.ok_or_else(|| Error::Runtime(format!("GET {url}: the answer is not JSON")))
    }

    /// Every row of a paged listing (up to `max` rows), page by page.
    pub fn all(&self, path: &str, query: &[(&str, String)], max: Option<usize>) -> Result<Vec<Value>> {
        let mut rows: Vec<Value> = Vec::new();
        loop {
            let want = max.map_or(crate::site::view::MAX_LIMIT, |m| (m - rows.len()).min(crate::site::view::MAX_LIMIT));
            let mut q = query.to_vec();
            q.push(("offset", rows.len().to_string()));
            q.push(("limit", want.max(1).to_string()));
            let page = self.get(path, &q)?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            let got = items.len();
            rows.extend(items);
            if got == 0 || rows.len() >= total || max.is_some_and(|m| rows.len() >= m) {
                return Ok(rows);
            }
        }
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// What `get` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "deployment", alias = "udep")]
    Deployments,
    #[value(alias = "collection", alias = "coll")]
    Collections,
    #[value(alias = "update")]
    Updates,
    #[value(alias = "client")]
    Clients,
}

/// `-o` of `get`: the table formats, documents, or CSV for spreadsheets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    Table,
    Wide,
    Json,
    Yaml,
    Csv,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// deployments, collections, updates or clients.
    pub kind: Kind,
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[arg(long, short, value_enum, default_value_t = GetFormat::Table)]
    pub output: GetFormat,
    /// Clients with these facts (`key=value[,key=value]`).
    #[arg(long, short = 'l', value_name = "KEY=VALUE", value_parser = parse_selector)]
    pub selector: Option<String>,
    /// Updates fixing this CVE.
    #[arg(long, value_name = "CVE")]
    pub cve: Option<String>,
    /// Updates with this KB number.
    #[arg(long)]
    pub kb: Option<String>,
    /// Updates of this vendor advisory (DSA-…, ALSA-…, RHSA-…).
    #[arg(long)]
    pub advisory: Option<String>,
    /// Text in the name (clients) or id, KB and title (updates).
    #[arg(long)]
    pub query: Option<String>,
    /// At most this many rows (clients and updates are fetched page by page).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Fetch again every 2 seconds and print what changed (Ctrl-C stops).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// Stop watching after this many fetches (scripts and tests).
    #[arg(long, hide = true)]
    pub watch_count: Option<u32>,
}

fn parse_selector(s: &str) -> std::result::Result<String, String> {
    crate::site::view::parse_selector(s).map(|_| s.to_string())
}

/// A listing as rows: a key per row (what `--watch` compares), the cells in header order.
struct Listing {
    header: Vec<(&'static str, Shown)>,
    rows: Vec<(String, Vec<String>)>,
    /// The documents as fetched, for JSON and YAML.
    documents: Value,
}

pub fn run(args: Args) -> Result<ExitCode> {
    check_flags(&args)?;
    let client = ReadClient::connect(&args.connect)?;
    let mut shown: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last_documents: Option<Value> = None;
    let mut fetches = 0u32;
    loop {
        let listing = fetch(&client, &args)?;
        fetches += 1;
        if fetches == 1 || !args.watch {
            print(&listing, args.output);
        } else {
            print_changes(&listing, args.output, &shown, last_documents.as_ref());
        }
        shown = listing.rows.iter().cloned().collect();
        last_documents = Some(listing.documents);
        if !args.watch || args.watch_count.is_some_and(|n| fetches >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Filters that do not apply to the kind asked for are a usage error, not ignored.
fn check_flags(args: &Args) -> Result<()> {
    let update_only =
        [("--cve", args.cve.is_some()), ("--kb", args.kb.is_some()), ("--advisory", args.advisory.is_some())];
    for (flag, given) in update_only {
        if given && args.kind != Kind::Updates {
            return Err(Error::Usage(format!("{flag} filters updates; use it with `patchops get updates`")));
        }
    }
    if args.selector.is_some() && args.kind != Kind::Clients {
        return Err(Error::Usage("--selector filters clients; use it with `patchops get clients`".into()));
    }
    if args.query.is_some() && !matches!(args.kind, Kind::Clients | Kind::Updates) {
        return Err(Error::Usage("--query filters clients and updates".into()));
    }
    Ok(())
}

fn fetch(client: &ReadClient, args: &Args) -> Result<Listing> {
    match args.kind {
        Kind::Deployments => {
            let docs = client.get("deployments", &[])?;
            Ok(deployments(docs))
        }
        Kind::Collections => Ok(collections(client.get("collections", &[])?)),
        Kind::Updates => {
            let mut q: Vec<(&str, String)> = Vec::new();
            for (k, v) in [("cve", &args.cve), ("kb", &args.kb), ("advisory", &args.advisory), ("q", &args.query)] {
                if let Some(v) = v {
                    q.push((k, v.clone()));
                }
            }
            Ok(updates(Value::Array(client.all("updates", &q, args.limit)?)))
        }
        Kind::Clients => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(s) = &args.selector {
                q.push(("selector", s.clone()));
            }
            if let Some(t) = &args.query {
                q.push(("q", t.clone()));
            }
            Ok(clients(Value::Array(client.all("clients", &q, args.limit)?)))
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn items(docs: &Value) -> &[Value] {
    docs.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The columns of `patchops status`, from the read API.
fn deployments(docs: Value) -> Listing {
    let header = crate::output::DEPLOYMENT_COLUMNS.to_vec();
    let rows = items(&docs)
        .iter()
        .map(|d| {
            let st = &d["status"];
            let phase = match &st["rolloutPhase"] {
                Value::String(p) => format!("{} ({p})", text(&st["phase"])),
                _ => text(&st["phase"]),
            };
            let m = &st["machines"];
            let name = text(&d["name"]);
            let cells = vec![
                name.clone(),
                phase,
                format!("{:.1}", st["compliancePercent"].as_f64().unwrap_or(0.0)),
                text(&st["targeted"]),
                text(&m["compliant"]),
                text(&m["required"]),
                text(&m["unknown"]),
                text(&m["failed"]),
                text(&m["pendingReboot"]),
                text(&m["waived"]),
                minute(&st["nextMaintenanceWindow"]),
                minute(&st["deadline"]),
            ];
            (name, cells)
        })
        .collect();
    Listing { header, rows, documents: docs }
}

fn collections(docs: Value) -> Listing {
    use Shown::{Always, Wide};
    let header = vec![
        ("COLLECTION", Always),
        ("NAMESPACE", Wide),
        ("MEMBERS", Always),
        ("NEXT WINDOW", Always),
        ("WINDOW END", Wide),
    ];
    let rows = items(&docs)
        .iter()
        .map(|c| {
            let st = &c["status"];
            let name = text(&c["name"]);
            let cells = vec![
                name.clone(),
                text(&c["namespace"]),
                text(&st["memberCount"]),
                minute(&st["nextWindow"]),
                minute(&st["nextWindowEnd"]),
            ];
            (name, cells)
        })
        .collect();
    Listing { header, rows, documents: docs }
}

fn joined(v: &Value) -> String {
    let parts: Vec<String> = v.as_array().map(|a| a.iter().map(text).collect()).unwrap_or_default();
    if parts.is_empty() { "-".into() } else { parts.join(",") }
}

/// The text cut to `n` characters, with an ellipsis when it was longer.
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    text.chars().take(n - 1).chain(std::iter::once('…')).collect()
}

fn updates(docs: Value) -> Listing {
    use Shown::{Always, Wide};
    let header = vec![
        ("ID", Always),
        ("KB", Wide),
        ("SEVERITY", Always),
        ("RELEASED", Always),
        ("STATE", Always),
        ("REQUIRED", Always),
        ("INSTALLED", Wide),
        ("DEPLOYMENTS", Always),
        ("CVES", Wide),
        ("TITLE", Always),
    ];
    let rows = items(&docs)
        .iter()
        .map(|u| {
            let state = if u["expired"] == Value::Bool(true) {
                "Expired"
            } else if u["superseded"] == Value::Bool(true) {
                "Superseded"
            } else {
                "Active"
            };
            let deployments = u["deployments"].as_array().map_or(0, Vec::len);
            let id = text(&u["id"]);
            let cells = vec![
                id.clone(),
                text(&u["kb"]),
                text(&u["severity"]),
                text(&u["released"]),
                state.to_string(),
                text(&u["required"]),
                text(&u["installed"]),
                if deployments == 0 { "-".into() } else { joined(&u["deployments"]) },
                joined(&u["cves"]),
                clip(&text(&u["title"]), 48),
            ];
            (id, cells)
        })
        .collect();
    Listing { header, rows, documents: docs }
}

fn clients(docs: Value) -> Listing {
    use Shown::{Always, Wide};
    let header = vec![
        ("CLIENT", Always),
        ("OS", Always),
        ("AGENT", Wide),
        ("LAST SCAN", Always),
        ("SCAN STATE", Always),
        ("REQUIRED", Always),
        ("DEPLOYMENTS", Always),
    ];
    let rows = items(&docs)
        .iter()
        .map(|c| {
            let name = text(&c["name"]);
            let cells = vec![
                name.clone(),
                text(&c["os"]),
                text(&c["agentVersion"]),
                minute(&c["lastScan"]),
                text(&c["scanState"]),
                text(&c["required"]),
                text(&c["deployments"]),
            ];
            (name, cells)
        })
        .collect();
    Listing { header, rows, documents: docs }
}

fn table_format(format: GetFormat) -> OutputFormat {
    if format == GetFormat::Wide { OutputFormat::Wide } else { OutputFormat::Table }
}

fn table<'a>(listing: &Listing, format: GetFormat, rows: impl Iterator<Item = &'a Vec<String>>) -> String {
    let mut t = Columns::new(&listing.header, table_format(format));
    for cells in rows {
        t.row(cells.iter().cloned());
    }
    t.to_string()
}

/// CSV of every column (wide), header in snake case.
fn csv(listing: &Listing) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let header: Vec<String> =
        listing.header.iter().map(|(h, _)| h.to_lowercase().replace(" %", "_percent").replace(' ', "_")).collect();
    w.write_record(&header).expect("writing to memory cannot fail");
    for (_, cells) in &listing.rows {
        w.write_record(cells).expect("writing to memory cannot fail");
    }
    String::from_utf8(w.into_inner().expect("writing to memory cannot fail")).expect("CSV of UTF-8 text is UTF-8")
}

fn print(listing: &Listing, format: GetFormat) {
    match format {
        GetFormat::Table | GetFormat::Wide => {
            if listing.rows.is_empty() {
                eprintln!("No resources found.");
            } else {
                println!("{}", table(listing, format, listing.rows.iter().map(|(_, c)| c)));
            }
        }
        GetFormat::Csv => print!("{}", csv(listing)),
        GetFormat::Json => println!("{}", serde_json::to_string_pretty(&listing.documents).expect("values serialize")),
        GetFormat::Yaml => print!("{}", serde_saphyr::to_string(&listing.documents).expect("values serialize")),
    }
}

/// `--watch`: the rows that changed or appeared (tables, CSV without its header), or the
/// whole document again when anything in it changed (JSON, YAML).
fn print_changes(listing: &Listing, format: GetFormat, before: &BTreeMap<String, Vec<String>>, docs: Option<&Value>) {
    let changed: Vec<&Vec<String>> =
        listing.rows.iter().filter(|(k, cells)| before.get(k) != Some(cells)).map(|(_, c)| c).collect();
    match format {
        GetFormat::Table | GetFormat::Wide if !changed.is_empty() => {
            let text = table(listing, format, changed.into_iter());
            let body =
                if crate::output::headers() { text.lines().skip(1).collect::<Vec<_>>().join("\n") } else { text };
            println!("{body}");
        }
        GetFormat::Csv if !changed.is_empty() => {
            let mut w = ::csv::Writer::from_writer(Vec::new());
            for cells in changed {
                w.write_record(cells).expect("writing to memory cannot fail");
            }
            print!("{}", String::from_utf8(w.into_inner().expect("in memory")).expect("UTF-8"));
        }
        GetFormat::Json | GetFormat::Yaml if docs != Some(&listing.documents) => print(listing, format),
        _ => {}
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod test {
    use super::*;
    use serde_json::json;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("web-01.example"), "web-01.example");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn a_watch_prints_only_the_rows_that_changed() {
        let docs = json!([{"id": "KB1", "required": 3}, {"id": "KB2", "required": 1}]);
        let first = updates(docs);
        let before: BTreeMap<String, Vec<String>> = first.rows.iter().cloned().collect();
        let second = updates(json!([{"id": "KB1", "required": 2}, {"id": "KB2", "required": 1}]));
        let changed: Vec<&String> =
            second.rows.iter().filter(|(k, c)| before.get(k) != Some(c)).map(|(k, _)| k).collect();
        assert_eq!(changed, ["KB1"]);
    }

    #[test]
    fn csv_has_every_column_with_snake_case_names() {
        let l = deployments(json!([{"name": "d", "status": {"phase": "Available", "compliancePercent": 50.0}}]));
        let text = csv(&l);
        assert!(text.starts_with("deployment,phase,compliant_percent,targeted,compliant,"), "{text}");
        assert!(text.contains("\nd,Available,50.0,"), "{text}");
    }
}
