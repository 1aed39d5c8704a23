//! The `msrc-cvrf` catalog format: Microsoft Security Response Center CVRF 1.1 monthly
//! documents (XML, or the JSON the MSRC API serves) become one update per KB number and
//! product family, the way WSUS/ConfigMgr present MSRC data (seed step 1, C1).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::civil::{Date, DateTime, Time};
use serde_json::Value;

use crate::catalog::applicability::compare_dotted;
use crate::catalog::{Applicability, FactTest, Rule, Severity, Update};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Maintenance-window time an update needs (ConfigMgr's default for updates).
const DEFAULT_RUN_TIME_MINS: i64 = 10;
/// Cumulative updates and monthly rollups install for much longer.
const CUMULATIVE_RUN_TIME_MINS: i64 = 60;
/// Family of products that no `Product Family` branch names.
const NO_FAMILY: &str = "Other";

/// Parse one MSRC CVRF document (XML, or the JSON form the MSRC API serves with
/// `Accept: application/json`) into updates. `source` names the input in errors.
pub fn parse(source: &str, bytes: &[u8]) -> Result<Vec<Update>> {
    Ok(finish(import(source, bytes)?.drafts))
}

/// Merge several documents into one list. A KB listed by several documents (a re-issued
/// or revised month, or consecutive months that both list it) keeps everything each says:
/// products, CVEs and supersedence are unions, the severity is the highest, the release
/// date the first; a title MSRC gives comes from the latest document (by CurrentReleaseDate,
/// then revision). The result does not depend on the order of `docs`.
pub fn parse_many(docs: &[(&str, &[u8])]) -> Result<Vec<Update>> {
    let mut imported = docs
        .iter()
        .map(|(source, bytes)| Ok((import(source, bytes)?, Sha256::digest(bytes))))
        .collect::<Result<Vec<_>>>()?;
    // A total order, so that equal dates and revisions do not fall back on input order.
    imported.sort_by(|(a, da), (b, db)| {
        a.current.cmp(&b.current).then_with(|| compare_dotted(&a.revision, &b.revision)).then_with(|| da.cmp(db))
    });
    let mut merged: BTreeMap<String, Draft> = BTreeMap::new();
    let mut in_several = 0usize;
    for (doc, _) in imported {
        for (id, draft) in doc.drafts {
            match merged.get_mut(&id) {
                Some(earlier) => {
                    in_several += 1;
                    earlier.absorb(draft);
                }
                None => {
                    merged.insert(id, draft);
                }
            }
        }
    }
    if in_several > 0 {
        tracing::info!(in_several, "msrc-cvrf: KBs listed by several documents were merged");
    }
    Ok(finish(merged))
}

/// One document's updates before they are finished, with what orders it among others.
struct Imported {
    drafts: BTreeMap<String, Draft>,
    /// DocumentTracking/CurrentReleaseDate (InitialReleaseDate when absent).
    current: DateTime,
    /// Highest DocumentTracking revision number (Version when there is none).
    revision: String,
    /// Vendor fixes skipped because they carry no KB number, by description.
    skipped: BTreeMap<String, usize>,
}

fn import(source: &str, bytes: &[u8]) -> Result<Imported> {
    let text = decode(source, bytes)?;
    let doc = match text.trim_start().as_bytes().first() {
        Some(b'<') => read_xml(source, &text)?,
        Some(b'{') => read_json(source, &text)?,
        _ => {
            return Err(catalog_error(
                source,
                "neither XML nor JSON: an MSRC CVRF document starts with `<` (XML) or `{` (JSON, as the MSRC API \
                 serves it with Accept: application/json)",
            ));
        }
    };
    let imported = build(source, &text, doc)?;
    tracing::debug!(
        source,
        updates = imported.drafts.len(),
        skipped = imported.skipped.values().sum::<usize>(),
        skipped_by_description = ?imported.skipped,
        "msrc-cvrf: vendor fixes without a KB number were skipped"
    );
    Ok(imported)
}

fn catalog_error(source: &str, message: impl Into<String>) -> Error {
    Error::Catalog { source_name: source.to_string(), message: message.into() }
}

/// The document as text: UTF-8 (a BOM is dropped), or UTF-16 with a BOM.
fn decode<'a>(source: &str, bytes: &'a [u8]) -> Result<Cow<'a, str>> {
    let utf16 = match bytes {
        [0xFF, 0xFE, rest @ ..] => Some((rest, u16::from_le_bytes as fn([u8; 2]) -> u16)),
        [0xFE, 0xFF, rest @ ..] => Some((rest, u16::from_be_bytes as fn([u8; 2]) -> u16)),
        _ => None,
    };
    if let Some((rest, unit)) = utf16 {
        let units = rest.chunks(2).map(|c| unit([c[0], *c.get(1).unwrap_or(&0)]));
        return char::decode_utf16(units).collect::<std::result::Result<String, _>>().map(Cow::Owned).map_err(|e| {
            catalog_error(
                source,
                format!("UTF-16 text with an unpaired surrogate ({e}); re-save the document as UTF-8"),
            )
        });
    }
    let bom = if bytes.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
    let bytes = &bytes[bom..];
    std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| {
        let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
        let (line, column) = line_col(valid, valid.len());
        catalog_error(
            source,
            format!(
                "not UTF-8: byte 0x{:02X} at line {line}, column {column} (offset {}) is not valid UTF-8; MSRC \
                 documents are UTF-8, so the file was re-encoded or damaged: fetch it again",
                bytes[e.valid_up_to()],
                bom + e.valid_up_to(),
            ),
        )
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Where something is in the input: a byte offset (XML) or a JSON path.
#[derive(Clone, Debug)]
enum At {
    Offset(usize),
    Path(String),
}

impl At {
    fn describe(&self, text: &str) -> String {
        match self {
            At::Offset(offset) => {
                let (line, column) = line_col(text, *offset);
                format!("line {line}, column {column}")
            }
            At::Path(path) => path.clone(),
        }
    }
}

/// What both forms of the document have in common, before it becomes updates.
#[derive(Debug)]
struct Doc {
    title: String,
    tracking_at: At,
    initial_release: Option<String>,
    current_release: Option<String>,
    revision: String,
    products: HashMap<String, Product>,
    groups: HashMap<String, Vec<String>>,
    vulns: Vec<Vuln>,
}

impl Doc {
    fn new(at: At) -> Self {
        Doc {
            title: String::new(),
            tracking_at: at,
            initial_release: None,
            current_release: None,
            revision: String::new(),
            products: HashMap::new(),
            groups: HashMap::new(),
            vulns: Vec::new(),
        }
    }

    fn add_product(&mut self, id: &str, name: String, family: Option<String>) {
        let id = id.trim();
        if id.is_empty() {
            return;
        }
        // A product is listed in its family branch and again flat under ProductTree.
        let entry = self.products.entry(id.to_string()).or_insert(Product { name, family: None });
        if entry.family.is_none() {
            entry.family = family;
        }
    }

    fn add_revision(&mut self, number: &str) {
        let number = number.trim();
        if !number.is_empty() && compare_dotted(number, &self.revision).is_gt() {
            self.revision = number.to_string();
        }
    }
}

#[derive(Debug)]
struct Product {
    name: String,
    family: Option<String>,
}

#[derive(Debug)]
struct Vuln {
    at: At,
    cve: Option<String>,
    /// Latest RevisionHistory date: when the vulnerability (and so its fixes) last changed.
    last_revised: Option<Date>,
    /// Severity threats: rating text and the products it is for (none: all).
    severities: Vec<(String, Vec<String>)>,
    fixes: Vec<Fix>,
}

impl Vuln {
    fn new(at: At) -> Self {
        Vuln { at, cve: None, last_revised: None, severities: Vec::new(), fixes: Vec::new() }
    }

    fn revised(&mut self, date: &str) {
        if let Some(d) = parse_when(date).map(|dt| dt.date()) {
            self.last_revised = Some(self.last_revised.map_or(d, |old| old.max(d)));
        }
    }
}

/// One `Vendor Fix` remediation.
#[derive(Debug)]
struct Fix {
    at: At,
    description: String,
    url: String,
    supercedence: String,
    products: Vec<String>,
    groups: Vec<String>,
    restart: String,
    sub_type: String,
}

/// Branch, threat and remediation types, as the XML spells them (lower case, no spaces);
/// the JSON form numbers them in CVRF schema order.
const BRANCH_TYPES: &[&str] = &[
    "vendor",
    "productfamily",
    "productname",
    "productversion",
    "patchlevel",
    "servicepack",
    "architecture",
    "language",
    "legacy",
    "specification",
];
const THREAT_TYPES: &[&str] = &["impact", "exploitstatus", "targetset", "severity"];
const REMEDIATION_TYPES: &[&str] =
    &["workaround", "mitigation", "vendorfix", "noneavailable", "willnotfix", "knownissue"];

fn norm_type(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

/// The product family a branch path gives: the `Product Family` branch, or else the
/// innermost branch that is not the vendor's.
#[derive(Clone, Default)]
struct BranchPath {
    family: Option<String>,
    innermost: Option<String>,
}

impl BranchPath {
    fn enter(&self, kind: &str, name: &str) -> BranchPath {
        let mut next = self.clone();
        let name = name.trim();
        if name.is_empty() {
            return next;
        }
        match kind {
            "productfamily" => next.family = Some(name.to_string()),
            "vendor" => {}
            _ => next.innermost = Some(name.to_string()),
        }
        next
    }

    fn family(&self) -> Option<String> {
        self.family.clone().or_else(|| self.innermost.clone())
    }
}

// ---------------------------------------------------------------------------------------
// XML

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

fn elements<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn text_of(node: Node) -> String {
    let mut out = String::new();
    for c in node.children().filter(|c| c.is_text()) {
        out.push_str(c.text().unwrap_or_default());
    }
    out.trim().to_string()
}

fn child_text(node: Node, name: &'static str) -> String {
    elements(node, name).next().map(text_of).unwrap_or_default()
}

fn read_xml(source: &str, text: &str) -> Result<Doc> {
    let xml = roxmltree::Document::parse(text).map_err(|e| {
        use roxmltree::Error as E;
        let message = match e {
            E::UnexpectedEndOfStream | E::UnclosedRootNode | E::NoRootNode => {
                let (line, column) = line_col(text, text.len());
                format!(
                    "XML is not well-formed: the document ends at line {line}, column {column} before its root \
                     element is closed ({e}); it looks truncated (an interrupted download?): fetch it again"
                )
            }
            _ => {
                let pos = e.pos();
                format!(
                    "XML is not well-formed at line {}, column {}: {e}; the document is damaged: fetch it again",
                    pos.row, pos.col
                )
            }
        };
        catalog_error(source, message)
    })?;
    let root = xml.root_element();
    if root.tag_name().name() != "cvrfdoc" {
        return Err(catalog_error(
            source,
            format!(
                "line 1: the root element is <{}>, not <cvrf:cvrfdoc>: this is not a CVRF document",
                root.tag_name().name()
            ),
        ));
    }
    let mut doc = Doc::new(At::Offset(root.range().start));
    let mut has_tracking = false;
    for child in root.children().filter(|c| c.is_element()) {
        match child.tag_name().name() {
            "DocumentTitle" => doc.title = text_of(child),
            "DocumentTracking" => {
                has_tracking = true;
                doc.tracking_at = At::Offset(child.range().start);
                doc.initial_release = Some(child_text(child, "InitialReleaseDate")).filter(|s| !s.is_empty());
                doc.current_release = Some(child_text(child, "CurrentReleaseDate")).filter(|s| !s.is_empty());
                for history in elements(child, "RevisionHistory") {
                    for revision in elements(history, "Revision") {
                        doc.add_revision(&child_text(revision, "Number"));
                    }
                }
                if doc.revision.is_empty() {
                    doc.add_revision(&child_text(child, "Version"));
                }
            }
            "ProductTree" => xml_products(child, &BranchPath::default(), &mut doc),
            "Vulnerability" => doc.vulns.push(xml_vuln(child)),
            _ => {}
        }
    }
    if !has_tracking {
        return Err(catalog_error(source, "no cvrf:DocumentTracking element: the document has no release date"));
    }
    Ok(doc)
}

fn xml_products(node: Node, path: &BranchPath, doc: &mut Doc) {
    for child in node.children().filter(|c| c.is_element()) {
        match child.tag_name().name() {
            "Branch" => {
                let kind = norm_type(child.attribute("Type").unwrap_or_default());
                xml_products(child, &path.enter(&kind, child.attribute("Name").unwrap_or_default()), doc);
            }
            "FullProductName" => {
                doc.add_product(child.attribute("ProductID").unwrap_or_default(), text_of(child), path.family())
            }
            "Relationship" => xml_products(child, path, doc),
            "ProductGroups" => {
                for group in elements(child, "Group") {
                    let id = group.attribute("GroupID").unwrap_or_default().trim().to_string();
                    let members = elements(group, "ProductID").map(text_of).collect();
                    doc.groups.insert(id, members);
                }
            }
            _ => {}
        }
    }
}

fn xml_vuln(node: Node) -> Vuln {
    let mut vuln = Vuln::new(At::Offset(node.range().start));
    for child in node.children().filter(|c| c.is_element()) {
        match child.tag_name().name() {
            "CVE" => vuln.cve = Some(text_of(child)).filter(|s| !s.is_empty()),
            "RevisionHistory" => {
                for revision in elements(child, "Revision") {
                    vuln.revised(&child_text(revision, "Date"));
                }
            }
            "Threats" => {
                for threat in elements(child, "Threat") {
                    if norm_type(threat.attribute("Type").unwrap_or_default()) == "severity" {
                        let products = elements(threat, "ProductID").map(text_of).collect();
                        vuln.severities.push((child_text(threat, "Description"), products));
                    }
                }
            }
            "Remediations" => {
                for r in elements(child, "Remediation") {
                    if norm_type(r.attribute("Type").unwrap_or_default()) != "vendorfix" {
                        continue;
                    }
                    vuln.fixes.push(Fix {
                        at: At::Offset(r.range().start),
                        description: child_text(r, "Description"),
                        url: child_text(r, "URL"),
                        supercedence: child_text(r, "Supercedence"),
                        products: elements(r, "ProductID").map(text_of).collect(),
                        groups: elements(r, "GroupID").map(text_of).collect(),
                        restart: child_text(r, "RestartRequired"),
                        sub_type: child_text(r, "SubType"),
                    });
                }
            }
            _ => {}
        }
    }
    vuln
}

// ---------------------------------------------------------------------------------------
// JSON

/// Text of a JSON value: a string, a number, or an object's `Value` (`{"Value": "…"}`).
fn jtext(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Object(o)) => jtext(o.get("Value")),
        _ => String::new(),
    }
}

/// A list of texts (an array, or one value).
fn jlist(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().map(|v| jtext(Some(v))).filter(|s| !s.is_empty()).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(v) => Some(jtext(Some(v))).filter(|s| !s.is_empty()).into_iter().collect(),
    }
}

fn jarray(value: Option<&Value>) -> &[Value] {
    match value {
        Some(Value::Array(items)) => items,
        Some(v @ Value::Object(_)) => std::slice::from_ref(v),
        _ => &[],
    }
}

/// A type given as a number (CVRF schema order) or a name.
fn jtype(value: Option<&Value>, names: &[&str]) -> String {
    match value {
        Some(Value::Number(n)) => {
            n.as_u64().and_then(|i| names.get(i as usize)).map(|s| s.to_string()).unwrap_or_default()
        }
        Some(Value::String(s)) => norm_type(s),
        _ => String::new(),
    }
}

fn read_json(source: &str, text: &str) -> Result<Doc> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        let hint = if e.is_eof() { "the document looks truncated: fetch it again" } else { "the document is damaged" };
        // serde_json's message ends with its own " at line L column C".
        let what = e.to_string();
        let what = what.split(" at line ").next().unwrap_or_default();
        catalog_error(
            source,
            format!("JSON is not well-formed at line {}, column {}: {what}; {hint}", e.line(), e.column()),
        )
    })?;
    let Some(obj) = root.as_object() else {
        return Err(catalog_error(source, "the JSON document is not an object: this is not a CVRF document"));
    };
    if obj.contains_key("value") && !obj.contains_key("Vulnerability") {
        return Err(catalog_error(
            source,
            "this is the MSRC update index (/Updates), not a CVRF document: use one of its CvrfUrl links",
        ));
    }
    let Some(tracking) = obj.get("DocumentTracking") else {
        return Err(catalog_error(source, "no DocumentTracking: this is not a CVRF document (or has no release date)"));
    };
    let mut doc = Doc::new(At::Path("$.DocumentTracking".into()));
    doc.title = jtext(obj.get("DocumentTitle"));
    doc.initial_release = Some(jtext(tracking.get("InitialReleaseDate"))).filter(|s| !s.is_empty());
    doc.current_release = Some(jtext(tracking.get("CurrentReleaseDate"))).filter(|s| !s.is_empty());
    for revision in jarray(tracking.get("RevisionHistory")) {
        doc.add_revision(&jtext(revision.get("Number")));
    }
    if doc.revision.is_empty() {
        doc.add_revision(&jtext(tracking.get("Version")));
    }
    if let Some(tree) = obj.get("ProductTree") {
        json_products(tree, &BranchPath::default(), &mut doc);
        for group in jarray(tree.get("ProductGroups")) {
            let members = jarray(group.get("Group"));
            let groups = if members.is_empty() { std::slice::from_ref(group) } else { members };
            for g in groups {
                doc.groups.insert(jtext(g.get("GroupID")), jlist(g.get("ProductID")));
            }
        }
    }
    for (i, v) in jarray(obj.get("Vulnerability")).iter().enumerate() {
        doc.vulns.push(json_vuln(i, v));
    }
    Ok(doc)
}

/// Products of a ProductTree or Branch: `FullProductName` lists and `Branch`/`Items`
/// trees whose leaves are `{"ProductID", "Value"}`.
fn json_products(node: &Value, path: &BranchPath, doc: &mut Doc) {
    for product in jarray(node.get("FullProductName")) {
        doc.add_product(&jtext(product.get("ProductID")), jtext(product.get("Value")), path.family());
    }
    for key in ["Branch", "Items"] {
        for item in jarray(node.get(key)) {
            if item.get("ProductID").is_some() {
                doc.add_product(&jtext(item.get("ProductID")), jtext(item.get("Value")), path.family());
            } else {
                let kind = jtype(item.get("Type"), BRANCH_TYPES);
                json_products(item, &path.enter(&kind, &jtext(item.get("Name"))), doc);
            }
        }
    }
}

fn json_vuln(index: usize, v: &Value) -> Vuln {
    let at = format!("$.Vulnerability[{index}]");
    let mut vuln = Vuln::new(At::Path(at.clone()));
    vuln.cve = Some(jtext(v.get("CVE"))).filter(|s| !s.is_empty());
    for revision in jarray(v.get("RevisionHistory")) {
        vuln.revised(&jtext(revision.get("Date")));
    }
    for threat in jarray(v.get("Threats")) {
        if jtype(threat.get("Type"), THREAT_TYPES) == "severity" {
            vuln.severities.push((jtext(threat.get("Description")), jlist(threat.get("ProductID"))));
        }
    }
    for (j, r) in jarray(v.get("Remediations")).iter().enumerate() {
        if jtype(r.get("Type"), REMEDIATION_TYPES) != "vendorfix" {
            continue;
        }
        vuln.fixes.push(Fix {
            at: At::Path(format!("{at}.Remediations[{j}]")),
            description: jtext(r.get("Description")),
            url: jtext(r.get("URL")),
            supercedence: jtext(r.get("Supercedence")),
            products: jlist(r.get("ProductID")),
            groups: jlist(r.get("GroupID")),
            restart: jtext(r.get("RestartRequired")),
            sub_type: jtext(r.get("SubType")),
        });
    }
    vuln
}

// ---------------------------------------------------------------------------------------
// Updates

/// "2023-01-10T08:00:00", "2016-04-12T07:00:00Z", "2023-01-10": the civil date and time
/// as written (MSRC writes UTC, with or without the Z).
fn parse_when(s: &str) -> Option<DateTime> {
    let s = s.trim();
    if let Some(dt) = s.get(..19).and_then(|p| p.parse::<DateTime>().ok()) {
        return Some(dt);
    }
    s.get(..10).and_then(|p| p.parse::<Date>().ok()).map(|d| d.to_datetime(Time::midnight()))
}

/// A KB number written alone: "5022282" or "KB5022282".
fn bare_kb(s: &str) -> Option<String> {
    let s = s.trim();
    let digits = if s.len() > 2 && s[..2].eq_ignore_ascii_case("kb") { s[2..].trim_start() } else { s };
    (digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.to_string())
}

/// A KB number inside text or a URL: "…(KB5022282)", "?q=KB5022282", "/kb/3144432".
fn kb_in_text(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find("kb").map(|i| i + from) {
        from = i + 2;
        if i > 0 && bytes[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let rest = &lower[i + 2..];
        let rest = rest.strip_prefix(['/', ' ', '=', '-']).unwrap_or(rest);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = rest[digits.len()..].chars().next();
        if digits.len() >= 4 && !after.is_some_and(|c| c.is_ascii_alphanumeric()) {
            return Some(digits);
        }
    }
    None
}

/// The KB a vendor fix installs, and the description when it is a title rather than a
/// bare number. Fixes without one ("Release Notes", "Click to Run", a CBL-Mariner
/// package name, …) cannot be detected as installed by KB, so they are not updates here.
fn kb_of(fix: &Fix) -> Option<(String, Option<String>)> {
    if let Some(kb) = bare_kb(&fix.description) {
        return Some((kb, None));
    }
    if let Some(kb) = kb_in_text(&fix.description) {
        let descriptive = !fix.description.contains('<');
        return Some((kb, descriptive.then(|| fix.description.split_whitespace().collect::<Vec<_>>().join(" "))));
    }
    kb_in_text(&fix.url).map(|kb| (kb, None))
}

fn severity(text: &str) -> Option<Severity> {
    match text.trim().to_ascii_lowercase().as_str() {
        "critical" => Some(Severity::Critical),
        "important" => Some(Severity::Important),
        "moderate" => Some(Severity::Moderate),
        "low" => Some(Severity::Low),
        "" => None,
        _ => Some(Severity::Unspecified),
    }
}

/// "Microsoft Office" → "microsoft-office".
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() { "other".to_string() } else { out.to_string() }
}

/// Products whose monthly security updates are cumulative (Windows 10 and later).
const CUMULATIVE_PLATFORMS: &[&str] = &[
    "Windows 10",
    "Windows 11",
    "Windows Server 2016",
    "Windows Server 2019",
    "Windows Server 2022",
    "Windows Server 2025",
    "Windows Server, version",
];

/// Classification and whether the update is cumulative, from the remediation SubTypes
/// (values seen: Security Update, Monthly Rollup, Security Only, IE Cumulative,
/// Cumulative Update, Security Hotpatch Update), a descriptive title, and the products.
fn classify(sub_types: &BTreeSet<String>, title: Option<&str>, products: &[String]) -> (&'static str, bool) {
    let hay = sub_types.iter().map(String::as_str).chain(title).collect::<Vec<_>>().join(" ").to_ascii_lowercase();
    if hay.contains("servicing stack") {
        ("Servicing Stack Updates", false)
    } else if hay.contains("monthly rollup") || hay.contains("monthly quality rollup") {
        ("Monthly Rollup", true)
    } else if hay.contains("security only") {
        ("Security Only", false)
    } else if hay.contains("cumulative") {
        ("Security Updates", true)
    } else {
        // Windows 10 and later ship their monthly security fixes as one cumulative update
        // (the documents' release notes say so) under the plain "Security Update" SubType.
        let cumulative = !hay.contains("hotpatch")
            && !products.is_empty()
            && products.iter().all(|p| CUMULATIVE_PLATFORMS.iter().any(|w| p.contains(w)));
        ("Security Updates", cumulative)
    }
}

/// "A, B and 7 more".
fn summarize(products: &[String]) -> String {
    match products {
        [] => "no product".into(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [a, b, c] => format!("{a}, {b} and {c}"),
        [a, b, rest @ ..] => format!("{a}, {b} and {} more", rest.len()),
    }
}

/// Everything one (KB, product family) update collects from the vendor fixes naming it.
/// What one or more documents say about one KB in one product family.
struct Draft {
    kb: String,
    family_slug: String,
    /// "April 2016": the month of the document that first released it, for a title.
    month: String,
    products: BTreeSet<String>,
    cves: BTreeSet<String>,
    severity: Severity,
    sub_types: BTreeSet<String>,
    /// The title MSRC gives, when the remediation has one rather than a bare number.
    title: Option<String>,
    supersedes: BTreeSet<String>,
    reboot: bool,
    released: Date,
}

impl Draft {
    /// Add what a later document says about the same KB and family.
    fn absorb(&mut self, later: Draft) {
        self.products.extend(later.products);
        self.cves.extend(later.cves);
        self.severity = self.severity.max(later.severity);
        self.sub_types.extend(later.sub_types);
        if later.title.is_some() {
            self.title = later.title;
        }
        self.supersedes.extend(later.supersedes);
        self.reboot |= later.reboot;
        if later.released < self.released {
            self.released = later.released;
            self.month = later.month;
        }
    }
}

fn build(source: &str, text: &str, doc: Doc) -> Result<Imported> {
    let fail = |at: &At, what: String| catalog_error(source, format!("{}: {what}", at.describe(text)));
    let initial_text = doc.initial_release.as_deref().ok_or_else(|| {
        fail(
            &doc.tracking_at,
            "DocumentTracking has no InitialReleaseDate; the updates' release date comes from it".into(),
        )
    })?;
    let initial = parse_when(initial_text).ok_or_else(|| {
        fail(
            &doc.tracking_at,
            format!("InitialReleaseDate {initial_text:?} is not a date (expected 2023-01-10T08:00:00)"),
        )
    })?;
    let current = match doc.current_release.as_deref() {
        Some(s) => parse_when(s).ok_or_else(|| {
            fail(&doc.tracking_at, format!("CurrentReleaseDate {s:?} is not a date (expected 2023-01-10T08:00:00)"))
        })?,
        None => initial,
    };
    let initial = initial.date();
    let month = doc
        .title
        .trim()
        .strip_suffix("Security Updates")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or_else(|| initial.strftime("%B %Y").to_string(), str::to_string);

    let mut drafts: BTreeMap<String, Draft> = BTreeMap::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for vuln in &doc.vulns {
        // A vulnerability dates its fixes by its latest revision (never before the month);
        // an update keeps the earliest date over its vulnerabilities. So KB4093112, added
        // to the April 2016 document in 2018, is released 2018-04-10, while a cumulative
        // update keeps the month's date when one of its 63 CVEs is revised later.
        let released = vuln.last_revised.map_or(initial, |d| d.max(initial));
        let mut for_all = None;
        let mut by_product: HashMap<&str, Severity> = HashMap::new();
        for (rating, products) in &vuln.severities {
            let Some(s) = severity(rating) else { continue };
            if products.is_empty() {
                for_all = for_all.max(Some(s));
            }
            for p in products {
                let e = by_product.entry(p.as_str()).or_default();
                *e = (*e).max(s);
            }
        }
        for fix in &vuln.fixes {
            let Some((kb, title)) = kb_of(fix) else {
                let label: String = fix.description.chars().take(40).collect();
                *skipped.entry(if label.is_empty() { "(empty)".into() } else { label }).or_default() += 1;
                continue;
            };
            let cve = vuln.cve.as_deref().ok_or_else(|| {
                fail(
                    &vuln.at,
                    format!("Vulnerability without a CVE has a Vendor Fix for KB{kb}; give it a CVE element"),
                )
            })?;
            let mut ids: Vec<&str> = fix.products.iter().map(String::as_str).collect();
            for g in &fix.groups {
                let members = doc.groups.get(g.as_str()).ok_or_else(|| {
                    fail(
                        &fix.at,
                        format!(
                            "Vulnerability {cve}: Remediation KB{kb} names GroupID {g:?}, which the ProductTree \
                             does not define; the document is inconsistent: fetch it again or report it to MSRC"
                        ),
                    )
                })?;
                ids.extend(members.iter().map(String::as_str));
            }
            if ids.is_empty() {
                return Err(fail(
                    &fix.at,
                    format!(
                        "Vulnerability {cve}: Remediation KB{kb} without a product reference (no ProductID or \
                         GroupID), so nothing says which systems it applies to"
                    ),
                ));
            }
            let (supersedes, odd) = supersedence(&fix.supercedence, &kb);
            if !odd.is_empty() {
                let products: Vec<&str> =
                    ids.iter().filter_map(|id| doc.products.get(*id).map(|p| p.name.as_str())).collect();
                tracing::warn!(
                    source,
                    vulnerability = cve,
                    kb = %format!("KB{kb}"),
                    products = ?products,
                    supercedence = %fix.supercedence,
                    not_kb_numbers = ?odd,
                    "msrc-cvrf: Supercedence entries that are not KB numbers were ignored; the KB numbers \
                     around them were kept. Check what this update replaces in the MSRC document"
                );
            }
            let reboot = !fix.restart.trim().eq_ignore_ascii_case("no");
            for id in ids {
                let product = doc.products.get(id).ok_or_else(|| {
                    fail(
                        &fix.at,
                        format!(
                            "Vulnerability {cve}: Remediation KB{kb} names ProductID {id:?}, which the ProductTree \
                             does not define; the document is inconsistent: fetch it again or report it to MSRC"
                        ),
                    )
                })?;
                let family_slug = slug(product.family.as_deref().unwrap_or(NO_FAMILY));
                let a = drafts.entry(format!("KB{kb}-{family_slug}")).or_insert_with(|| Draft {
                    kb: kb.clone(),
                    family_slug,
                    month: month.clone(),
                    products: BTreeSet::new(),
                    cves: BTreeSet::new(),
                    severity: Severity::Unspecified,
                    sub_types: BTreeSet::new(),
                    title: None,
                    supersedes: BTreeSet::new(),
                    reboot: false,
                    released,
                });
                a.products.insert(product.name.clone());
                a.cves.insert(cve.to_string());
                let rating = by_product.get(id).copied().max(for_all).unwrap_or_default();
                a.severity = a.severity.max(rating);
                if !fix.sub_type.is_empty() {
                    a.sub_types.insert(fix.sub_type.clone());
                }
                if a.title.is_none() {
                    a.title.clone_from(&title);
                }
                a.supersedes.extend(supersedes.iter().cloned());
                a.reboot |= reboot;
                a.released = a.released.min(released);
            }
        }
    }
    Ok(Imported { drafts, current, revision: doc.revision, skipped })
}

/// The KB numbers a `Supercedence` value names, and the entries that are not KB numbers.
/// Any separator is accepted — `;`, `,`, spaces, and the HTML line breaks some documents
/// write (`4022179<br><br>4018392`, escaped in the XML) — and the update's own KB is left out.
fn supersedence(value: &str, own_kb: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut text = String::with_capacity(value.len());
    let mut in_tag = false;
    for c in value.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            _ if in_tag => {}
            c => text.push(c),
        }
    }
    let mut kbs = BTreeSet::new();
    let mut odd = Vec::new();
    for token in text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|t| !t.is_empty()) {
        match bare_kb(token) {
            Some(kb) if kb == own_kb => {}
            Some(kb) => {
                kbs.insert(format!("KB{kb}"));
            }
            None => odd.push(token.to_string()),
        }
    }
    (kbs, odd)
}

/// Drafts become updates: one per KB and product family, sorted by id.
fn finish(drafts: BTreeMap<String, Draft>) -> Vec<Update> {
    drafts
        .into_iter()
        .map(|(id, a)| {
            let kb = a.kb;
            let products: Vec<String> = a.products.into_iter().collect();
            let (classification, cumulative) = classify(&a.sub_types, a.title.as_deref(), &products);
            let kind = a.sub_types.iter().next().map_or("Security Update", String::as_str);
            let title = a.title.unwrap_or_else(|| format!("{} {kind} for {} (KB{kb})", a.month, summarize(&products)));
            let run_time = if cumulative { CUMULATIVE_RUN_TIME_MINS } else { DEFAULT_RUN_TIME_MINS };
            debug_assert_eq!(id, format!("KB{kb}-{}", a.family_slug));
            Update {
                id,
                kb: Some(format!("KB{kb}")),
                title,
                classification: classification.to_string(),
                severity: a.severity,
                released: a.released,
                supersedes: a.supersedes.into_iter().collect(),
                expired: false,
                reboot_required: a.reboot,
                max_run_time: crate::time::Duration::from_mins(run_time),
                cves: a.cves.into_iter().collect(),
                applicability: Applicability {
                    is_installable: Rule::Fact(FactTest {
                        name: "os".into(),
                        in_: Some(products.clone()),
                        ..Default::default()
                    }),
                    is_installed: Rule::Installed(format!("KB{kb}")),
                    prerequisites: vec![],
                },
                // MSRC gives catalog and download-centre pages, never a file with its
                // sha256 and size, so there is no content file to list.
                files: vec![],
                products,
            }
        })
        .collect()
}

#[cfg(test)]
mod test {
    use std::io::Read;
    use std::time::Instant;

    use super::*;
    use crate::catalog::{Facts, ScanVerdict};

    /// A real monthly document (copied from ../shared/data into tests/data), decompressed.
    fn real(month: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/msrc-cvrf/cvrfDocument-{month}.xml.gz", env!("CARGO_MANIFEST_DIR"));
        let gz = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
        out
    }

    /// A fixture from tests/data/msrc-cvrf (provenance in its README.md).
    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/data/msrc-cvrf/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn find<'a>(updates: &'a [Update], id: &str) -> &'a Update {
        updates.iter().find(|u| u.id == id).unwrap_or_else(|| panic!("no update {id}"))
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn error_text(result: Result<Vec<Update>>) -> String {
        match result {
            Ok(u) => panic!("expected an error, got {} updates", u.len()),
            Err(e @ Error::Catalog { .. }) => e.to_string(),
            Err(e) => panic!("expected a catalog error, got {e}"),
        }
    }

    /// `text` with the first `<vuln:ProductID>` after `anchor` replaced by `with`.
    fn replace_product_after(text: &str, anchor: &str, with: &str) -> String {
        let at = text.find(anchor).expect("anchor") + anchor.len();
        let open = at + text[at..].find("<vuln:ProductID>").unwrap();
        let close = open + text[open..].find("</vuln:ProductID>").unwrap() + "</vuln:ProductID>".len();
        format!("{}{with}{}", &text[..open], &text[close..])
    }

    /// Facts checked by hand against the XML (zcat | grep; a throw-away script summed
    /// CVEs, products and severities per KB and Product Family branch).
    #[test]
    fn both_real_monthly_documents_parse_into_one_update_per_kb_and_product_family() {
        let (apr_xml, jan_xml) = (real("2016-Apr"), real("2023-Jan"));
        let started = Instant::now();
        let apr = import("2016-Apr", &apr_xml).unwrap();
        let took_apr = started.elapsed();
        let jan = import("2023-Jan", &jan_xml).unwrap();
        let took_both = started.elapsed();
        println!(
            "msrc-cvrf parse: 2016-Apr ({} KiB) {:?}, 2023-Jan ({} KiB) {:?}, both {:?}",
            apr_xml.len() / 1024,
            took_apr,
            jan_xml.len() / 1024,
            took_both - took_apr,
            took_both
        );
        let (apr_skipped, jan_skipped) = (apr.skipped, jan.skipped);
        let (apr_updates, jan_updates) = (finish(apr.drafts), finish(jan.drafts));
        assert_eq!((apr_updates.len(), jan_updates.len()), (60, 39));

        // April 2016: the Windows 10 cumulative update, split by product family as WSUS does.
        let u = find(&apr_updates, "KB3147461-windows");
        assert_eq!(u.kb.as_deref(), Some("KB3147461"));
        assert_eq!(u.products, strings(&["Windows 10 for 32-bit Systems", "Windows 10 for x64-based Systems"]));
        assert_eq!((u.severity, u.cves.len()), (Severity::Critical, 11));
        assert_eq!(u.supersedes, strings(&["KB3140745"]));
        assert_eq!(
            u.title,
            "April 2016 Security Update for Windows 10 for 32-bit Systems and Windows 10 for x64-based Systems (KB3147461)"
        );
        assert_eq!(
            (u.classification.as_str(), u.max_run_time),
            ("Security Updates", crate::time::Duration::from_mins(60))
        );
        assert_eq!(u.released, jiff::civil::date(2016, 4, 12));
        assert!(u.reboot_required && !u.expired && u.files.is_empty());
        assert_eq!(find(&apr_updates, "KB3147461-browser").cves.len(), 7);
        assert_eq!(find(&apr_updates, "KB3147461-developer-tools").cves, strings(&["CVE-2016-0145"]));
        let u = find(&apr_updates, "KB3135456-windows");
        assert_eq!((u.products.len(), u.severity, u.cves.len()), (5, Severity::Important, 3));
        assert_eq!(
            (u.supersedes.clone(), u.max_run_time),
            (strings(&["KB3087088"]), crate::time::Duration::from_mins(10))
        );
        // Later additions to the April 2016 document carry their vulnerability's revision date.
        let u = find(&apr_updates, "KB4015549-browser");
        assert_eq!((u.classification.as_str(), u.severity), ("Monthly Rollup", Severity::Moderate));
        assert_eq!((u.released, u.supersedes.clone()), (jiff::civil::date(2017, 4, 11), strings(&["KB4012215"])));
        assert_eq!(find(&apr_updates, "KB4093112-windows").released, jiff::civil::date(2018, 4, 10));

        // January 2023.
        let u = find(&jan_updates, "KB5022282-windows");
        assert_eq!(u.products.len(), 9);
        assert_eq!(u.products[0], "Windows 10 Version 20H2 for 32-bit Systems");
        assert_eq!((u.severity, u.cves.len()), (Severity::Critical, 63));
        assert_eq!(u.supersedes, strings(&["KB5021233"]));
        assert_eq!(u.max_run_time, crate::time::Duration::from_mins(60));
        let u = find(&jan_updates, "KB5022352-windows");
        assert_eq!((u.classification.as_str(), u.products.len(), u.cves.len()), ("Monthly Rollup", 4, 48));
        assert_eq!(u.supersedes, strings(&["KB5021294"]));
        let u = find(&jan_updates, "KB5022346-windows");
        assert_eq!((u.classification.as_str(), u.products.len(), u.cves.len()), ("Security Only", 5, 48));
        assert!(u.supersedes.is_empty());
        assert_eq!(u.max_run_time, crate::time::Duration::from_mins(10));
        let u = find(&jan_updates, "KB5022338-esu");
        assert_eq!((u.classification.as_str(), u.severity, u.cves.len()), ("Monthly Rollup", Severity::Critical, 40));
        assert_eq!(u.released, jiff::civil::date(2023, 1, 10));

        // The classifications in the data: SubTypes Security Update, Monthly Rollup,
        // Security Only, IE Cumulative, Cumulative Update, Security Hotpatch Update.
        let classes = |u: &[Update]| u.iter().map(|u| u.classification.clone()).collect::<BTreeSet<_>>();
        assert_eq!(classes(&apr_updates), BTreeSet::from(["Monthly Rollup".into(), "Security Updates".into()]));
        assert_eq!(
            classes(&jan_updates),
            BTreeSet::from(["Monthly Rollup".into(), "Security Only".into(), "Security Updates".into()])
        );

        // Vendor fixes without a KB number (Edge and Office "Release Notes", store apps'
        // "More Information", "Click to Run", CBL-Mariner packages) are counted, not imported.
        assert_eq!(apr_skipped.values().sum::<usize>(), 0);
        assert_eq!(jan_skipped.values().sum::<usize>(), 60);
        assert_eq!(jan_skipped["Release Notes"], 32);
        assert_eq!(jan_skipped["curl"], 1);
    }

    #[test]
    fn output_is_sorted_by_id_without_duplicates_and_deterministic() {
        let jan = real("2023-Jan");
        let a = parse("jan", &jan).unwrap();
        let ids: Vec<&str> = a.iter().map(|u| u.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert_eq!(crate::catalog::digest(&a), crate::catalog::digest(&parse("jan", &jan).unwrap()));
        for u in &a {
            let mut cves = u.cves.clone();
            cves.dedup();
            assert_eq!(cves, u.cves, "{}", u.id);
            assert!(u.cves.windows(2).all(|w| w[0] < w[1]) && u.products.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn parse_many_merges_months_and_a_re_revised_document_replaces_its_updates() {
        let (apr, jan) = (real("2016-Apr"), real("2023-Jan"));
        let apr_updates = parse("apr", &apr).unwrap();
        let jan_updates = parse("jan", &jan).unwrap();
        let merged = parse_many(&[("jan", &jan), ("apr", &apr)]).unwrap();
        assert_eq!(merged.len(), apr_updates.len() + jan_updates.len(), "no KB is in both months");
        assert!(merged.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(find(&merged, "KB3147461-windows"), find(&apr_updates, "KB3147461-windows"));

        // A re-revision of January: a later CurrentReleaseDate and revision, and one
        // remediation now titled by MSRC.
        let text = std::str::from_utf8(&jan).unwrap();
        let title = "2023-01 Cumulative Update for Windows 10 Version 22H2 for x64-based Systems (KB5022282)";
        let revised = text
            .replacen(
                "<cvrf:CurrentReleaseDate>2023-01-27T08:00:00<",
                "<cvrf:CurrentReleaseDate>2023-02-14T08:00:00<",
                1,
            )
            .replacen("<cvrf:Number>27</cvrf:Number>", "<cvrf:Number>28</cvrf:Number>", 1)
            .replacen(
                "<vuln:Description>5022282</vuln:Description>",
                &format!("<vuln:Description>{title}</vuln:Description>"),
                1,
            );
        assert_ne!(revised, text);
        for docs in
            [[("revised", revised.as_bytes()), ("jan", &jan[..])], [("jan", &jan[..]), ("revised", revised.as_bytes())]]
        {
            let merged = parse_many(&[docs[0], docs[1], ("apr", &apr)]).unwrap();
            assert_eq!(merged.len(), apr_updates.len() + jan_updates.len());
            let u = find(&merged, "KB5022282-windows");
            assert_eq!(u.title, title, "the later document wins whatever the input order");
            assert_eq!(u.classification, "Security Updates");
            assert_eq!(find(&merged, "KB5022352-windows"), find(&jan_updates, "KB5022352-windows"));
        }
        // Same date, higher revision number: the revision decides.
        let same_day = text.replacen("<cvrf:Number>27</cvrf:Number>", "<cvrf:Number>27.1</cvrf:Number>", 1).replacen(
            "<vuln:Description>5022282</vuln:Description>",
            &format!("<vuln:Description>{title}</vuln:Description>"),
            1,
        );
        let merged = parse_many(&[("same-day", same_day.as_bytes()), ("jan", &jan)]).unwrap();
        assert_eq!(find(&merged, "KB5022282-windows").title, title);
    }

    /// The January subset re-dated as an older month that MSRC revised later and that lists
    /// KB5022282 for one more product (Windows Server 2022) at a lower severity, with other supersedence.
    fn older_revised_month_listing_kb5022282_for_one_more_product() -> String {
        let text = fixture("2023-Jan-subset.xml")
            .replacen("January 2023 Security Updates", "December 2022 Security Updates", 1)
            .replacen(
                "<cvrf:InitialReleaseDate>2023-01-10T08:00:00<",
                "<cvrf:InitialReleaseDate>2022-12-13T08:00:00<",
                1,
            )
            .replacen(
                "<cvrf:CurrentReleaseDate>2023-01-27T08:00:00<",
                "<cvrf:CurrentReleaseDate>2023-02-01T08:00:00<",
                1,
            )
            .replace("<vuln:Description>Important</vuln:Description>", "<vuln:Description>Moderate</vuln:Description>")
            .replace("<vuln:Description>Critical</vuln:Description>", "<vuln:Description>Moderate</vuln:Description>");
        let anchor = "<vuln:Description>5022282</vuln:Description>";
        let text = replace_product_after(&text, anchor, "<vuln:ProductID>11923</vuln:ProductID>");
        let at = text.find(anchor).unwrap();
        let (head, tail) = text.split_at(at);
        format!("{head}{}", tail.replacen("<vuln:Supercedence>5021233<", "<vuln:Supercedence>5020953<", 1))
    }

    #[test]
    fn a_kb_in_several_documents_keeps_every_product_cve_and_supersedence_whatever_the_order() {
        let jan = fixture("2023-Jan-subset.xml");
        let dec = older_revised_month_listing_kb5022282_for_one_more_product();
        let (a, b) = (parse("jan", jan.as_bytes()).unwrap(), parse("dec", dec.as_bytes()).unwrap());
        let (ua, ub) = (find(&a, "KB5022282-windows"), find(&b, "KB5022282-windows"));
        let server = "Windows Server 2022";
        assert!(ub.products.iter().any(|p| p == server) && !ua.products.iter().any(|p| p == server));
        assert!(ub.severity < ua.severity, "{:?} {:?}", ub.severity, ua.severity);

        let forward = parse_many(&[("jan", jan.as_bytes()), ("dec", dec.as_bytes())]).unwrap();
        let backward = parse_many(&[("dec", dec.as_bytes()), ("jan", jan.as_bytes())]).unwrap();
        assert_eq!(forward, backward, "the merge does not depend on the order of the documents");
        let u = find(&forward, "KB5022282-windows");
        let union = |x: &[String], y: &[String]| x.iter().chain(y).cloned().collect::<BTreeSet<_>>();
        assert_eq!(u.products.iter().cloned().collect::<BTreeSet<_>>(), union(&ua.products, &ub.products));
        assert_eq!(u.cves.iter().cloned().collect::<BTreeSet<_>>(), union(&ua.cves, &ub.cves));
        assert_eq!(u.supersedes, strings(&["KB5020953", "KB5021233"]));
        assert_eq!(u.severity, ua.severity, "the highest severity of the two");
        assert_eq!(u.released, ua.released.min(ub.released));
        // Offered to Windows Server 2022 in either order.
        let facts = Facts::from_pairs(&[("os", server)], &[]);
        for merged in [&forward, &backward] {
            assert_eq!(find(merged, "KB5022282-windows").applicability.evaluate(&facts), ScanVerdict::Missing);
        }
        // The same merge through the catalog's source merge (several UpdateCatalogs).
        let by_source = crate::catalog::sync::merge(vec![a.clone(), b.clone()]);
        assert_eq!(by_source, crate::catalog::sync::merge(vec![b, a]));
        let u = find(&by_source, "KB5022282-windows");
        assert_eq!(u.applicability.evaluate(&facts), ScanVerdict::Missing);
        assert_eq!(u.supersedes, strings(&["KB5020953", "KB5021233"]));
    }

    #[test]
    fn an_identical_re_issue_of_a_document_changes_nothing() {
        let jan = real("2023-Jan");
        let once = parse("jan", &jan).unwrap();
        assert_eq!(parse_many(&[("jan", &jan), ("jan-again", &jan)]).unwrap(), once);
        assert_eq!(crate::catalog::sync::merge(vec![once.clone(), once.clone()]), once);
    }

    #[test]
    fn a_truncated_xml_document_is_an_error_naming_the_source_and_a_line() {
        let jan = real("2023-Jan");
        let text = std::str::from_utf8(&jan).unwrap();
        let mut half = text.len() / 2;
        while !text.is_char_boundary(half) {
            half -= 1;
        }
        let cut = &text[..half];
        let lines = cut.lines().count();
        let message = error_text(parse("cvrfDocument-2023-Jan.xml", cut.as_bytes()));
        assert!(message.contains("cvrfDocument-2023-Jan.xml"), "{message}");
        assert!(message.contains(&format!("line {lines}")), "{message}");
        assert!(message.contains("truncated"), "{message}");
    }

    #[test]
    fn malformed_json_is_an_error_with_its_line_and_column() {
        let json = fixture("2023-Jan-subset.json");
        let broken = json.replacen("\"Status\": 2,", "\"Status\": 2", 1);
        let line = json.lines().position(|l| l.contains("\"Version\": \"1.0\"")).unwrap() + 1;
        let message = error_text(parse("2023-Jan.json", broken.as_bytes()));
        assert!(message.contains("2023-Jan.json"), "{message}");
        assert!(message.contains(&format!("at line {line}, column 3")), "{message}");
        let truncated = &json[..json.len() / 2];
        let message = error_text(parse("2023-Jan.json", truncated.as_bytes()));
        assert!(message.contains("truncated") && message.contains("line "), "{message}");
    }

    #[test]
    fn a_remediation_naming_an_undefined_product_is_an_error_naming_the_cve_and_the_id() {
        // Dangling ids are an error, not skipped: the update would otherwise silently miss
        // the systems that product stands for, and an inconsistent document deserves a look.
        let xml = fixture("2023-Jan-subset.xml");
        let anchor = "<vuln:Description>5002335</vuln:Description>";
        let broken = replace_product_after(&xml, anchor, "<vuln:ProductID>99999</vuln:ProductID>");
        // The error points at the Remediation element.
        let remediation = broken[..broken.find(anchor).unwrap()].rfind("<vuln:Remediation ").unwrap();
        let line = broken[..remediation].matches('\n').count() + 1;
        let message = error_text(parse("subset.xml", broken.as_bytes()));
        assert!(message.contains("subset.xml"), "{message}");
        assert!(message.contains("Vulnerability CVE-2023-21742"), "{message}");
        assert!(message.contains("\"99999\""), "{message}");
        assert!(message.contains(&format!("line {line}, column 7")), "{message}");

        let json = fixture("2023-Jan-subset.json").replacen(
            "\"URL\": \"https://dotnet.microsoft.com/download/dotnet/6.0\",",
            "\"URL\": \"https://dotnet.microsoft.com/download/dotnet/6.0\", \"GroupID\": \"g1\",",
            1,
        );
        let message = error_text(parse("subset.json", json.as_bytes()));
        assert!(message.contains("$.Vulnerability[1].Remediations[0]") && message.contains("\"g1\""), "{message}");
    }

    #[test]
    fn a_remediation_without_a_product_reference_is_an_error() {
        let xml = fixture("2023-Jan-subset.xml");
        let broken = replace_product_after(&xml, "<vuln:Description>891716</vuln:Description>", "");
        let message = error_text(parse("subset.xml", broken.as_bytes()));
        assert!(
            message.contains("Vulnerability CVE-2023-21725: Remediation KB891716 without a product reference"),
            "{message}"
        );
    }

    #[test]
    fn a_bom_is_accepted_and_non_utf8_input_is_a_clear_error() {
        let xml = fixture("2023-Jan-subset.xml");
        let plain = parse("subset.xml", xml.as_bytes()).unwrap();
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), xml.as_bytes()].concat();
        assert_eq!(parse("subset.xml", &with_bom).unwrap(), plain);
        let json = fixture("2023-Jan-subset.json");
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), json.as_bytes()].concat();
        assert_eq!(parse("subset.json", &with_bom).unwrap(), plain);
        // UTF-16 with its BOM (how some Windows tools save XML) is decoded.
        let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain(xml.encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(parse("subset-utf16.xml", &utf16).unwrap(), plain);

        // Latin-1 "à" on line 3.
        let latin1 = b"<?xml version=\"1.0\"?>\n<cvrf:cvrfdoc>\n  <DocumentTitle>Mises \xE0 jour</DocumentTitle>\n";
        let message = error_text(parse("latin1.xml", latin1));
        assert!(message.contains("latin1.xml") && message.contains("not UTF-8"), "{message}");
        assert!(message.contains("0xE0 at line 3, column 24"), "{message}");
        let message = error_text(parse("empty", b"  \n"));
        assert!(message.contains("neither XML nor JSON"), "{message}");
    }

    #[test]
    fn the_json_form_gives_the_same_updates_as_the_xml_form() {
        let xml = parse("subset.xml", fixture("2023-Jan-subset.xml").as_bytes()).unwrap();
        let json = parse("subset.json", fixture("2023-Jan-subset.json").as_bytes()).unwrap();
        assert_eq!(json, xml);
        let ids: Vec<&str> = xml.iter().map(|u| u.id.as_str()).collect();
        assert!(ids.contains(&"KB5022282-windows") && ids.contains(&"KB891716-system-center"), "{ids:?}");
        assert!(ids.contains(&"KB5022546-developer-tools") && ids.contains(&"KB5002335-microsoft-office"), "{ids:?}");
        assert_eq!(find(&xml, "KB5022282-windows").cves, strings(&["CVE-2023-21549"]));
        // A SharePoint "Cumulative Update" is a security update that takes long to install.
        let u = find(&xml, "KB5002335-microsoft-office");
        assert_eq!(
            (u.classification.as_str(), u.max_run_time),
            ("Security Updates", crate::time::Duration::from_mins(60))
        );
        assert!(u.reboot_required, "RestartRequired Maybe counts as a restart");
        // Release Notes (Edge and .NET) and the CBL-Mariner curl package are skipped.
        let subset = import("subset.xml", fixture("2023-Jan-subset.xml").as_bytes()).unwrap();
        assert_eq!(subset.skipped, BTreeMap::from([("Release Notes".to_string(), 2), ("curl".to_string(), 1)]));
    }

    #[test]
    fn supercedence_lists_are_split_and_kb_numbers_normalised() {
        let xml = fixture("2023-Jan-subset.xml").replacen(
            "<vuln:Supercedence>5021233</vuln:Supercedence>",
            "<vuln:Supercedence>5021233; KB5020000,5019999 5022282</vuln:Supercedence>",
            1,
        );
        let updates = parse("subset.xml", xml.as_bytes()).unwrap();
        assert_eq!(find(&updates, "KB5022282-windows").supersedes, strings(&["KB5019999", "KB5020000", "KB5021233"]));
    }

    /// Some MSRC documents separate supersedence entries with HTML line breaks (escaped in
    /// the XML); the excerpt below is the January subset's KB5022282 remediation written so.
    #[test]
    fn supercedence_separated_by_html_line_breaks_keeps_every_kb() {
        let xml = fixture("2023-Jan-subset.xml").replacen(
            "<vuln:Supercedence>5021233</vuln:Supercedence>",
            "<vuln:Supercedence>4022179&lt;br&gt;&lt;br&gt;5021233&lt;br/&gt;KB4018392</vuln:Supercedence>",
            1,
        );
        let updates = parse("subset.xml", xml.as_bytes()).unwrap();
        assert_eq!(find(&updates, "KB5022282-windows").supersedes, strings(&["KB4018392", "KB4022179", "KB5021233"]));
    }

    #[test]
    fn a_supercedence_entry_that_is_no_kb_number_is_reported_and_the_numbers_kept() {
        let (kbs, odd) = supersedence("4022179 / MS16-039;KB4018392", "5022282");
        assert_eq!(kbs.into_iter().collect::<Vec<_>>(), strings(&["KB4018392", "KB4022179"]));
        assert_eq!(odd, strings(&["MS16", "039"]));
        let (kbs, odd) = supersedence("5022282, 5021233", "5022282");
        assert_eq!((kbs.into_iter().collect::<Vec<_>>(), odd), (strings(&["KB5021233"]), vec![]));
    }

    #[test]
    fn c1_every_update_is_missing_on_its_products_and_installed_once_its_kb_is() {
        for month in ["2016-Apr", "2023-Jan"] {
            let updates = parse(month, &real(month)).unwrap();
            for u in &updates {
                let a = &u.applicability;
                assert!(a.problems().is_empty(), "{}: {:?}", u.id, a.problems());
                assert!(a.prerequisites.is_empty());
                let kb = u.kb.as_deref().unwrap();
                for product in &u.products {
                    let unpatched = Facts::from_pairs(&[("os", product)], &[]);
                    let patched = Facts::from_pairs(&[("os", product)], &[kb]);
                    assert_eq!(a.evaluate(&unpatched), ScanVerdict::Missing, "{} on {product}", u.id);
                    assert_eq!(a.evaluate(&patched), ScanVerdict::Installed, "{} on {product}", u.id);
                }
                let elsewhere = Facts::from_pairs(&[("os", "Debian GNU/Linux 12")], &[]);
                assert_eq!(a.evaluate(&elsewhere), ScanVerdict::NotApplicable, "{}", u.id);
            }
        }
    }

    #[test]
    fn kb_numbers_are_found_alone_in_titles_and_in_urls() {
        assert_eq!(bare_kb("5022282").as_deref(), Some("5022282"));
        assert_eq!(bare_kb("KB 5022282").as_deref(), Some("5022282"));
        assert_eq!(bare_kb("Release Notes"), None);
        assert_eq!(kb_in_text("2023-01 Cumulative Update (KB5022282)").as_deref(), Some("5022282"));
        assert_eq!(
            kb_in_text("https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB3147461").as_deref(),
            Some("3147461")
        );
        assert_eq!(kb_in_text("https://support.microsoft.com/en-us/kb/3144432").as_deref(), Some("3144432"));
        assert_eq!(kb_in_text("https://apps.microsoft.com/store/detail/3d-builder/9WZDNCRFJ3T6"), None);
        assert_eq!(slug("Microsoft Office"), "microsoft-office");
        assert_eq!(slug("  "), "other");
    }
}
