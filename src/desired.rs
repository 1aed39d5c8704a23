//! The desired state: every resource read from one git revision, checked as a whole.
//! Loading is all-or-nothing: any problem (syntax, unknown field, dangling reference,
//! duplicate name…) rejects the revision, and each problem names file, line and field.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

use crate::resources::*;
use crate::yaml::{RawDocument, parse_documents};

/// One problem in the desired state, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path, e.g. `spec.phases[0].collection` (empty for file-level problems).
    pub field: String,
    pub message: String,
    /// The field names another resource that does not exist (a controller reports it as
    /// `…NotFound`, and the object waits for it to appear).
    pub missing_reference: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

pub fn render_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// Where a resource was declared.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

/// All resources of one revision, by name.
#[derive(Clone, Debug, Default)]
pub struct DesiredState {
    /// `branch@sha1:<hex>` of the commit read.
    pub revision: String,
    pub catalogs: BTreeMap<String, UpdateCatalog>,
    pub collections: BTreeMap<String, Collection>,
    pub client_settings: BTreeMap<String, ClientSettings>,
    pub update_lists: BTreeMap<String, UpdateList>,
    pub templates: BTreeMap<String, DeploymentTemplate>,
    pub deployments: BTreeMap<String, UpdateDeployment>,
    pub packages: BTreeMap<String, DeploymentPackage>,
    pub rules: BTreeMap<String, DeploymentRule>,
    pub waivers: BTreeMap<String, Waiver>,
    pub compliance_policies: BTreeMap<String, CompliancePolicy>,
    pub notification_providers: BTreeMap<String, NotificationProvider>,
    pub alerts: BTreeMap<String, Alert>,
    /// (kind, name) → where it was declared.
    pub origins: HashMap<(String, String), Origin>,
}

/// The envelope every resource document has.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    #[allow(dead_code)]
    spec: serde_json::Value,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl DesiredState {
    /// Parse and check every YAML file (paths relative to the repository root).
    pub fn load(revision: &str, files: &[(String, String)]) -> Result<Self, Vec<Problem>> {
        Self::load_in(revision, None, files)
    }

    /// Like [`Self::load`], for resources in `folder` of the repository: the catalog
    /// files an UpdateCatalog names by `path` (relative to that folder) are data, not
    /// resources, and are left to the catalog sync — a broken catalog fails its sync,
    /// not the revision.
    pub fn load_in(revision: &str, folder: Option<&str>, files: &[(String, String)]) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut parsed: HashMap<&str, Vec<RawDocument>> = HashMap::new();
        // Files declaring an UpdateCatalog first, to learn which files are catalogs.
        for (file, text) in files.iter().filter(|(_, t)| t.contains("UpdateCatalog")) {
            match parse_documents(file, text) {
                Ok(d) => {
                    parsed.insert(file.as_str(), d);
                }
                Err(p) => problems.push(p),
            }
        }
        let base = folder.map(|f| f.trim_matches('/')).filter(|f| !f.is_empty());
        let catalog_paths: BTreeSet<String> = parsed
            .values()
            .flatten()
            .filter(|d| d.value.get("kind").and_then(|k| k.as_str()) == Some("UpdateCatalog"))
            .filter_map(|d| d.value.pointer("/spec/source/path").and_then(|p| p.as_str()))
            .map(|p| match base {
                Some(b) => format!("{b}/{}", p.trim_start_matches("./")),
                None => p.trim_start_matches("./").to_string(),
            })
            .collect();
        let mut docs = Vec::new();
        for (file, text) in files {
            if catalog_paths.contains(file) {
                continue;
            }
            match parsed.remove(file.as_str()) {
                Some(d) => docs.extend(d),
                None => match parse_documents(file, text) {
                    Ok(d) => docs.extend(d),
                    Err(p) => problems.push(p),
                },
            }
        }
        let mut state = DesiredState { revision: revision.to_string(), ..Default::default() };
        let mut raw_by_key: HashMap<(String, String), RawDocument> = HashMap::new();
        for doc in docs {
            if let Err(mut p) = state.add(&doc, &mut raw_by_key) {
                problems.append(&mut p);
            }
        }
        if problems.is_empty() {
            problems = state.check(&raw_by_key);
        }
        if problems.is_empty() { Ok(state) } else { Err(problems) }
    }

    /// The desired state of custom resources read from a cluster, checked by the same
    /// rules as a repository. Each object is a document of its own, named
    /// `Kind namespace/name` in problems. Unlike [`Self::load`], one wrong object does
    /// not reject the rest: objects with problems are left out (and so are objects that
    /// then refer to them, each with its own problem), and every problem is returned
    /// under the (kind, name) it belongs to.
    pub fn from_objects(
        revision: &str,
        objects: &[serde_json::Value],
    ) -> (Self, BTreeMap<(String, String), Vec<Problem>>) {
        let label = |o: &serde_json::Value| -> (String, String, String) {
            let text = |p: &str| o.pointer(p).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let (kind, name) = (text("/kind"), text("/metadata/name"));
            (format!("{kind} {}/{name}", text("/metadata/namespace")), kind, name)
        };
        // Only what a repository document holds: the server's metadata and the status
        // are the cluster's, not the user's.
        let mut files: Vec<(String, String)> = objects
            .iter()
            .map(|o| {
                let meta = &o["metadata"];
                let mut metadata = serde_json::Map::new();
                for key in ["name", "namespace", "labels", "annotations"] {
                    if let Some(v) = meta.get(key).filter(|v| !v.is_null()) {
                        metadata.insert(key.to_string(), v.clone());
                    }
                }
                let doc = serde_json::json!({
                    "apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": metadata, "spec": o["spec"],
                });
                (label(o).0, serde_json::to_string_pretty(&doc).expect("JSON values serialize"))
            })
            .collect();
        let keys: HashMap<String, (String, String)> = objects.iter().map(label).map(|(f, k, n)| (f, (k, n))).collect();
        let mut problems: BTreeMap<(String, String), Vec<Problem>> = BTreeMap::new();
        // Each round leaves out at least one object, so this ends.
        loop {
            match Self::load(revision, &files) {
                Ok(state) => return (state, problems),
                Err(found) => {
                    for p in found {
                        let key = keys.get(&p.file).cloned().unwrap_or_default();
                        problems.entry(key).or_default().push(p);
                    }
                    let bad: BTreeSet<&String> =
                        keys.iter().filter(|(_, k)| problems.contains_key(*k)).map(|(f, _)| f).collect();
                    let before = files.len();
                    files.retain(|(f, _)| !bad.contains(f));
                    if files.len() == before {
                        return (DesiredState { revision: revision.to_string(), ..Default::default() }, problems);
                    }
                }
            }
        }
    }

    fn add(
        &mut self,
        doc: &RawDocument,
        seen: &mut HashMap<(String, String), RawDocument>,
    ) -> Result<(), Vec<Problem>> {
        let api_version = doc.value.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default();
        let kind = doc.value.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        if api_version != API_VERSION {
            return Err(vec![doc.problem(
                "apiVersion",
                format!(
                    "apiVersion {api_version:?} is not {API_VERSION:?}; every YAML file under the desired-state path must be a patchops resource"
                ),
            )]);
        }
        if !KINDS.contains(&kind.as_str()) {
            return Err(vec![doc.problem("kind", format!("unknown kind {kind:?}; known kinds: {}", KINDS.join(", ")))]);
        }
        let envelope: Envelope = doc.typed("").map_err(|p| {
            p.into_iter()
                .map(|mut p| {
                    if p.field.starts_with("spec.") {
                        // The spec is checked against its kind below; only envelope problems here.
                        p.message.clear();
                    }
                    p
                })
                .filter(|p| !p.message.is_empty())
                .collect::<Vec<_>>()
        })?;
        let name = envelope.metadata.name.clone();
        if !is_dns_label(&name) {
            return Err(vec![doc.problem(
                "metadata.name",
                format!("{name:?} is not a valid name: use lower-case letters, digits and '-', at most 63 characters"),
            )]);
        }
        let key = (kind.clone(), name.clone());
        if let Some(first) = seen.get(&key) {
            return Err(vec![doc.problem(
                "metadata.name",
                format!("duplicate {kind} {name:?}: already declared at {}:{}", first.file, first.line),
            )]);
        }
        let meta = ObjectMeta {
            name: Some(name.clone()),
            namespace: envelope.metadata.namespace.clone(),
            labels: (!envelope.metadata.labels.is_empty()).then(|| envelope.metadata.labels.clone()),
            annotations: (!envelope.metadata.annotations.is_empty()).then(|| envelope.metadata.annotations.clone()),
            ..Default::default()
        };
        match kind.as_str() {
            "UpdateCatalog" => {
                insert(&mut self.catalogs, doc, meta, |m, s| UpdateCatalog { metadata: m, spec: s, status: None })?
            }
            "Collection" => {
                insert(&mut self.collections, doc, meta, |m, s| Collection { metadata: m, spec: s, status: None })?
            }
            "ClientSettings" => {
                insert(&mut self.client_settings, doc, meta, |m, s| ClientSettings { metadata: m, spec: s })?
            }
            "UpdateList" => {
                insert(&mut self.update_lists, doc, meta, |m, s| UpdateList { metadata: m, spec: s, status: None })?
            }
            "DeploymentTemplate" => {
                insert(&mut self.templates, doc, meta, |m, s| DeploymentTemplate { metadata: m, spec: s })?
            }
            "UpdateDeployment" => insert(&mut self.deployments, doc, meta, |m, s| UpdateDeployment {
                metadata: m,
                spec: s,
                status: None,
            })?,
            "DeploymentPackage" => {
                insert(&mut self.packages, doc, meta, |m, s| DeploymentPackage { metadata: m, spec: s, status: None })?
            }
            "DeploymentRule" => {
                insert(&mut self.rules, doc, meta, |m, s| DeploymentRule { metadata: m, spec: s, status: None })?
            }
            "CompliancePolicy" => insert(&mut self.compliance_policies, doc, meta, |m, s| CompliancePolicy {
                metadata: m,
                spec: s,
                status: None,
            })?,
            "Waiver" => insert(&mut self.waivers, doc, meta, |m, s| Waiver { metadata: m, spec: s, status: None })?,
            "NotificationProvider" => insert(&mut self.notification_providers, doc, meta, |m, s| {
                NotificationProvider { metadata: m, spec: s, status: None }
            })?,
            "Alert" => insert(&mut self.alerts, doc, meta, |m, s| Alert { metadata: m, spec: s, status: None })?,
            _ => unreachable!("kind checked above"),
        }
        self.origins.insert(key.clone(), Origin { file: doc.file.clone(), line: doc.line });
        seen.insert(key, doc.clone());
        Ok(())
    }

    /// Cross-resource checks: references, timing, windows, criteria; one step per kind.
    fn check(&self, docs: &HashMap<(String, String), RawDocument>) -> Vec<Problem> {
        let mut c = Checker { state: self, docs, out: Vec::new() };
        c.catalogs();
        c.collections();
        c.client_settings();
        c.update_lists();
        c.templates();
        for (name, d) in &self.deployments {
            c.deployment(name, d);
        }
        c.packages();
        c.rules();
        c.compliance_policies();
        c.waivers();
        c.notification_providers();
        c.alerts();
        let mut out = c.out;
        out.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        out
    }
}

/// The cross-resource checks of one desired state, collecting problems in `out`.
struct Checker<'a> {
    state: &'a DesiredState,
    docs: &'a HashMap<(String, String), RawDocument>,
    out: Vec<Problem>,
}

/// The names declared of one kind, for "known …" hints.
fn known<T>(declared: &BTreeMap<String, T>) -> String {
    if declared.is_empty() {
        "none declared".to_string()
    } else {
        declared.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

impl Checker<'_> {
    /// A problem at a field of the resource `kind`/`name`.
    fn at(&mut self, kind: &str, name: &str, field: &str, msg: String) {
        let doc = &self.docs[&(kind.to_string(), name.to_string())];
        self.out.push(doc.problem(field, format!("{kind} {name:?}: {msg}")));
    }

    /// `field` of `kind`/`name` names collection `c`, which must exist.
    fn collection_ref(&mut self, kind: &str, name: &str, field: &str, c: &str) {
        if !self.state.collections.contains_key(c) {
            let msg = format!("collection {c:?} not found; known collections: {}", known(&self.state.collections));
            self.missing(kind, name, field, msg);
        }
    }

    /// A problem at a field naming a resource that does not exist.
    fn missing(&mut self, kind: &str, name: &str, field: &str, msg: String) {
        self.at(kind, name, field, msg);
        if let Some(p) = self.out.last_mut() {
            p.missing_reference = true;
        }
    }

    /// `field` of `kind`/`name` names update list `l`, which must exist.
    fn list_ref(&mut self, kind: &str, name: &str, field: &str, l: &str) {
        if !self.state.update_lists.contains_key(l) {
            let msg = format!("updateList {l:?} not found; known lists: {}", known(&self.state.update_lists));
            self.missing(kind, name, field, msg);
        }
    }

    /// `field` of `kind`/`name` names template `t`, which must exist.
    fn template_ref(&mut self, kind: &str, name: &str, field: &str, t: &str) {
        if !self.state.templates.contains_key(t) {
            let msg = format!("template {t:?} not found; known templates: {}", known(&self.state.templates));
            self.missing(kind, name, field, msg);
        }
    }

    fn catalogs(&mut self) {
        for (name, c) in &self.state.catalogs {
            let s = &c.spec.source;
            let given =
                [s.path.is_some(), s.file.is_some(), s.url.is_some(), s.git.is_some()].iter().filter(|b| **b).count();
            if given != 1 {
                let msg = format!("give exactly one of path, file, url, git (found {given})");
                self.at("UpdateCatalog", name, "spec.source", msg);
            }
        }
    }

    /// References, windows and members of each collection, then include cycles.
    fn collections(&mut self) {
        let k = "Collection";
        for (name, c) in &self.state.collections {
            for (i, inc) in c.spec.include_collections.iter().enumerate() {
                self.collection_ref(k, name, &format!("spec.includeCollections[{i}]"), inc);
            }
            for (i, exc) in c.spec.exclude_collections.iter().enumerate() {
                self.collection_ref(k, name, &format!("spec.excludeCollections[{i}]"), exc);
            }
            for (i, w) in c.spec.maintenance_windows.iter().enumerate() {
                for (field, msg) in crate::reconcile::windows::problems(w) {
                    self.at(k, name, &format!("spec.maintenanceWindows[{i}].{field}"), msg);
                }
            }
            if c.spec.selector.is_none() && c.spec.names.is_empty() && c.spec.include_collections.is_empty() {
                self.at(k, name, "spec", "has no members: give a selector, names or includeCollections".into());
            }
        }
        if let Some(cycle) = crate::reconcile::targeting::include_cycle(&self.state.collections) {
            let msg = format!("collections include each other in a cycle: {}", cycle.join(" → "));
            self.at(k, &cycle[0], "spec.includeCollections", msg);
        }
    }

    /// Target collection, a priority unique among settings for the same clients, intervals.
    fn client_settings(&mut self) {
        let k = "ClientSettings";
        let mut settings_slots: HashMap<(Option<String>, i32), String> = HashMap::new();
        for (name, s) in &self.state.client_settings {
            if let Some(c) = &s.spec.collection {
                self.collection_ref(k, name, "spec.collection", c);
            }
            if let Some(other) = settings_slots.insert((s.spec.collection.clone(), s.spec.priority), name.clone()) {
                self.at(k, name, "spec.priority", format!(
                    "applies to the same clients with the same priority as ClientSettings {other:?}; give one a higher priority"
                ));
            }
            if s.spec.scan_ttl.as_secs() <= 0
                || s.spec.policy_poll_interval.as_secs() <= 0
                || s.spec.state_message_batch_interval.as_secs() <= 0
            {
                let msg = "scanTtl, policyPollInterval and stateMessageBatchInterval must be greater than 0s";
                self.at(k, name, "spec", msg.into());
            }
        }
    }

    fn update_lists(&mut self) {
        for (name, l) in &self.state.update_lists {
            if l.spec.updates.is_empty() && l.spec.criteria.as_ref().is_none_or(|c| c.is_empty()) {
                self.at("UpdateList", name, "spec", "selects nothing: give updates, criteria, or both".into());
            }
        }
    }

    fn templates(&mut self) {
        for (name, t) in &self.state.templates {
            if let Some(c) = &t.spec.collection {
                self.collection_ref("DeploymentTemplate", name, "spec.collection", c);
            }
        }
    }

    /// One deployment: its list and template, its target, its phases and budget, its timing.
    fn deployment(&mut self, name: &str, d: &UpdateDeployment) {
        let k = "UpdateDeployment";
        self.list_ref(k, name, "spec.updateList", &d.spec.update_list);
        if let Some(t) = &d.spec.template {
            self.template_ref(k, name, "spec.template", t);
        }
        let template = d.spec.template.as_ref().and_then(|t| self.state.templates.get(t));
        let settings = crate::reconcile::timing::effective_settings(&d.spec, template.map(|t| t.spec.settings()));
        if d.spec.phases.is_empty() {
            match &settings.collection {
                Some(c) => self.collection_ref(k, name, "spec.collection", c),
                None => {
                    let msg = "no target: set collection (here or in the template) or phases";
                    self.at(k, name, "spec.collection", msg.into())
                }
            }
        }
        self.phases(name, &d.spec);
        if let Some(b) = &d.spec.failure_budget
            && let Some(pct) = b.max_failed_percent
            && !(0.0..=100.0).contains(&pct)
        {
            self.at(k, name, "spec.failureBudget.maxFailedPercent", format!("{pct} is not between 0 and 100"));
        }
        self.deployment_timing(name, &d.spec, &settings);
    }

    /// Each phase: its collection, a unique name, one success criterion within range.
    fn phases(&mut self, name: &str, spec: &UpdateDeploymentSpec) {
        let k = "UpdateDeployment";
        let mut phase_names = BTreeSet::new();
        for (i, p) in spec.phases.iter().enumerate() {
            self.collection_ref(k, name, &format!("spec.phases[{i}].collection"), &p.collection);
            if !phase_names.insert(p.name.clone()) {
                self.at(k, name, &format!("spec.phases[{i}].name"), format!("duplicate phase {:?}", p.name));
            }
            let Some(sc) = &p.success_criteria else { continue };
            if sc.compliant_percent.is_some() == sc.compliant_count.is_some() {
                let msg = "give exactly one of compliantPercent, compliantCount";
                self.at(k, name, &format!("spec.phases[{i}].successCriteria"), msg.into());
            }
            if let Some(pct) = sc.compliant_percent
                && !(0.0..=100.0).contains(&pct)
            {
                let field = format!("spec.phases[{i}].successCriteria.compliantPercent");
                self.at(k, name, &field, format!("{pct} is not between 0 and 100"));
            }
        }
    }

    /// A mandatory deployment has a deadline, and no deadline comes before availability.
    fn deployment_timing(&mut self, name: &str, spec: &UpdateDeploymentSpec, settings: &DeploymentSettings) {
        let k = "UpdateDeployment";
        let timing = crate::reconcile::timing::Timing::of(spec, settings);
        if settings.mandatory.unwrap_or(true) && timing.deadline.is_none() {
            let msg = "a mandatory deployment needs a deadline: set deadline, or deadlineAfter here or in the template";
            self.at(k, name, "spec.deadline", msg.into());
        }
        if let Some(deadline) = timing.deadline
            && deadline < timing.available
        {
            let msg = format!(
                "deadline {deadline} is before the available time {}; move the deadline later",
                timing.available
            );
            self.at(k, name, "spec.deadline", msg);
        }
    }

    fn packages(&mut self) {
        let k = "DeploymentPackage";
        for (name, p) in &self.state.packages {
            for (i, l) in p.spec.update_lists.iter().enumerate() {
                self.list_ref(k, name, &format!("spec.updateLists[{i}]"), l);
            }
            for (i, f) in p.spec.files.iter().enumerate() {
                if f.sha256.len() != 64 || !f.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                    self.at(k, name, &format!("spec.files[{i}].sha256"), "must be 64 hex digits".into());
                }
            }
        }
    }

    fn rules(&mut self) {
        let k = "DeploymentRule";
        for (name, r) in &self.state.rules {
            self.template_ref(k, name, "spec.template", &r.spec.template);
            if let Some(c) = &r.spec.collection {
                self.collection_ref(k, name, "spec.collection", c);
            }
        }
    }

    fn compliance_policies(&mut self) {
        let k = "CompliancePolicy";
        for (name, p) in &self.state.compliance_policies {
            for (i, t) in p.spec.deadlines.iter().enumerate() {
                self.collection_ref(k, name, &format!("spec.deadlines[{i}].collection"), &t.collection);
                if t.within.as_secs() <= 0 {
                    self.at(k, name, &format!("spec.deadlines[{i}].within"), "must be greater than 0s".into());
                }
            }
            if p.spec.max_waiver_duration.is_some_and(|d| d.as_secs() <= 0) {
                self.at(k, name, "spec.maxWaiverDuration", "must be greater than 0s".into());
            }
        }
    }

    /// What a waiver waives, whom it targets (a collection or machines), and why.
    fn waivers(&mut self) {
        let k = "Waiver";
        for (name, w) in &self.state.waivers {
            let s = &w.spec;
            if s.updates.is_empty() && s.cves.is_empty() {
                self.at(k, name, "spec", "waives nothing: give updates, cves, or both".into());
            }
            for (i, cve) in s.cves.iter().enumerate() {
                if let Err(m) = crate::governance::exposure::parse_cve(cve) {
                    self.at(k, name, &format!("spec.cves[{i}]"), m);
                }
            }
            match (&s.collection, s.machines.is_empty()) {
                (Some(c), true) => self.collection_ref(k, name, "spec.collection", c),
                (None, false) => {}
                (Some(_), false) => {
                    let msg = "give collection or machines, not both (make a Collection naming the machines)";
                    self.at(k, name, "spec.machines", msg.into())
                }
                (None, true) => self.at(k, name, "spec", "no target: give collection or machines".into()),
            }
            if s.reason.trim().is_empty() {
                self.at(k, name, "spec.reason", "say why the updates are not installed".into());
            }
        }
    }

    /// Where notifications go: an address patchops can post to, and a signing secret only
    /// where the receiver checks one.
    fn notification_providers(&mut self) {
        let k = "NotificationProvider";
        for (name, p) in &self.state.notification_providers {
            if let Err(m) = crate::notify::check_address(&p.spec.address) {
                self.at(k, name, "spec.address", m);
            }
            let secret = p.spec.secret_ref.is_some() || p.spec.secret_file.is_some();
            if p.spec.secret_ref.is_some() && p.spec.secret_file.is_some() {
                self.at(k, name, "spec.secretFile", "give secretRef or secretFile, not both".into());
            } else if secret && p.spec.type_ != ProviderType::Generic {
                let msg = "only a generic webhook is signed with a secret; Slack, Teams and Alertmanager URLs carry \
                           their own token: remove secretRef/secretFile";
                self.at(k, name, "spec.type", msg.into());
            }
            if p.spec.timeout.is_some_and(|t| t.as_secs() <= 0) {
                self.at(k, name, "spec.timeout", "must be greater than 0s".into());
            }
        }
    }

    /// Which events go to which provider: the provider exists, some event is named, the
    /// collections filtered on exist.
    fn alerts(&mut self) {
        let k = "Alert";
        for (name, a) in &self.state.alerts {
            if !self.state.notification_providers.contains_key(&a.spec.provider_ref.name) {
                let msg = format!(
                    "NotificationProvider {:?} not found; known providers: {}",
                    a.spec.provider_ref.name,
                    known(&self.state.notification_providers)
                );
                self.missing(k, name, "spec.providerRef.name", msg);
            }
            if a.spec.events.is_empty() {
                self.at(k, name, "spec.events", "sends nothing: name at least one event, e.g. RolloutHalted".into());
            }
            for (i, c) in a.spec.collections.iter().enumerate() {
                self.collection_ref(k, name, &format!("spec.collections[{i}]"), c);
            }
        }
    }
}

fn insert<S: DeserializeOwned, T>(
    map: &mut BTreeMap<String, T>,
    doc: &RawDocument,
    meta: ObjectMeta,
    build: impl FnOnce(ObjectMeta, S) -> T,
) -> Result<(), Vec<Problem>> {
    let spec: S = doc.typed("spec")?;
    let name = meta.name.clone().unwrap_or_default();
    map.insert(name, build(meta, spec));
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod test {
    use super::*;

    const BASE: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
  maintenanceWindows:
    - {name: sat, start: "02:00", duration: 4h, timeZone: Europe/Berlin, recurrence: Weekly, daysOfWeek: [Saturday]}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: dec-sec}
spec:
  criteria: {classifications: [Security Updates]}
---
apiVersion: patchops.dev/v1alpha1
kind: DeploymentTemplate
metadata: {name: std}
spec:
  deadlineAfter: 7d
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: pilot}
spec:
  updateList: dec-sec
  template: std
  collection: servers
  startTime: 2026-12-08T18:00:00Z
"#;

    fn load(files: &[(&str, &str)]) -> Result<DesiredState, Vec<Problem>> {
        let files: Vec<(String, String)> = files.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect();
        DesiredState::load("main@sha1:0", &files)
    }

    fn one_problem(files: &[(&str, &str)]) -> Problem {
        let p = load(files).unwrap_err();
        assert_eq!(p.len(), 1, "{p:#?}");
        p.into_iter().next().unwrap()
    }

    /// The BASE documents as the objects a cluster returns: server metadata and status.
    fn objects(yaml: &str) -> Vec<serde_json::Value> {
        parse_documents("base.yaml", yaml)
            .unwrap()
            .into_iter()
            .map(|d| {
                let mut o = d.value;
                o["metadata"]["namespace"] = "site".into();
                o["metadata"]["uid"] = "0d1e".into();
                o["metadata"]["generation"] = 3.into();
                o["status"] = serde_json::json!({"conditions": []});
                o
            })
            .collect()
    }

    #[test]
    fn custom_resources_from_a_cluster_load_by_the_repository_rules() {
        let (d, problems) = DesiredState::from_objects("cluster", &objects(BASE));
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(d.deployments["pilot"].metadata.namespace.as_deref(), Some("site"));
        assert_eq!(d.collections.len(), 1);
    }

    #[test]
    fn one_wrong_custom_resource_is_left_out_with_its_problem_and_the_rest_loads() {
        let bad = BASE.replace("Europe/Berlin", "Europe/Atlantis");
        let (d, problems) = DesiredState::from_objects("cluster", &objects(&bad));
        let key = ("Collection".to_string(), "servers".to_string());
        let p = &problems[&key][0];
        assert_eq!(
            (p.file.as_str(), p.field.as_str()),
            ("Collection site/servers", "spec.maintenanceWindows[0].timeZone")
        );
        // The deployment targeting it is left out too, and says why.
        let dep = &problems[&("UpdateDeployment".to_string(), "pilot".to_string())][0];
        assert!(dep.message.contains("collection \"servers\" not found"), "{dep}");
        assert!(d.update_lists.contains_key("dec-sec"));
        assert!(d.deployments.is_empty() && d.collections.is_empty());
    }

    #[test]
    fn p2_a_valid_repository_loads_every_kind() {
        let d = load(&[("a.yaml", BASE)]).unwrap();
        assert_eq!(d.deployments.len(), 1);
        assert_eq!(d.deployments["pilot"].spec.collection.as_deref(), Some("servers"));
        assert_eq!(d.origins[&("UpdateDeployment".to_string(), "pilot".to_string())].line, 21);
    }

    #[test]
    fn broken_yaml_names_file_and_line() {
        let p = one_problem(&[("a.yaml", BASE), ("b.yaml", "kind: [unclosed\n")]);
        assert_eq!(p.file, "b.yaml");
        assert!(p.message.starts_with("YAML syntax"), "{p}");
    }

    #[test]
    fn unknown_kinds_and_foreign_api_versions_are_errors() {
        let p = one_problem(&[
            ("a.yaml", BASE),
            ("b.yaml", "apiVersion: patchops.dev/v1alpha1\nkind: UpdateGroup\nmetadata: {name: x}\nspec: {}\n"),
        ]);
        assert_eq!((p.field.as_str(), p.line), ("kind", 2));
        assert!(p.message.contains("known kinds: UpdateCatalog"), "{p}");
        let p = one_problem(&[("a.yaml", BASE), ("b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")]);
        assert_eq!(p.field, "apiVersion");
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path_even_in_template_settings() {
        let typo = BASE.replace("  collection: servers\n", "  colection: servers\n");
        let problems = load(&[("a.yaml", &typo)]).unwrap_err();
        let p = problems.iter().find(|p| p.field == "spec.colection").unwrap_or_else(|| panic!("{problems:#?}"));
        assert_eq!((p.file.as_str(), p.line, p.column), ("a.yaml", 27, 3));
        let status = BASE.replace(
            "kind: UpdateList\nmetadata: {name: dec-sec}\n",
            "kind: UpdateList\nmetadata: {name: dec-sec}\nstatus: {}\n",
        );
        let p = one_problem(&[("a.yaml", &status)]);
        assert_eq!(p.field, "status");
    }

    #[test]
    fn dangling_references_say_what_is_known() {
        let bad = BASE.replace("updateList: dec-sec", "updateList: nov-sec");
        let p = one_problem(&[("a.yaml", &bad)]);
        assert_eq!(p.field, "spec.updateList");
        assert_eq!(p.line, 25);
        assert_eq!(p.message, "UpdateDeployment \"pilot\": updateList \"nov-sec\" not found; known lists: dec-sec");
        assert!(p.missing_reference, "a missing list is marked as such for the controller");
        let bad = BASE.replace("collection: servers", "collection: desktops");
        assert!(
            one_problem(&[("a.yaml", &bad)])
                .message
                .contains("collection \"desktops\" not found; known collections: servers")
        );
    }

    #[test]
    fn duplicate_names_point_at_the_first_declaration() {
        let dup =
            "apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {name: dec-sec}\nspec: {updates: [KB1]}\n";
        let p = one_problem(&[("a.yaml", BASE), ("z.yaml", dup)]);
        assert_eq!((p.file.as_str(), p.field.as_str()), ("z.yaml", "metadata.name"));
        assert!(p.message.contains("already declared at a.yaml:9"), "{p}");
    }

    #[test]
    fn o_dep_a_mandatory_deployment_needs_a_deadline_after_its_start() {
        let no_deadline = BASE.replace("  deadlineAfter: 7d\n", "  mandatory: true\n");
        assert!(one_problem(&[("a.yaml", &no_deadline)]).message.contains("needs a deadline"));
        let early = BASE.replace(
            "  startTime: 2026-12-08T18:00:00Z\n",
            "  startTime: 2026-12-08T18:00:00Z\n  deadline: 2026-12-01T00:00:00Z\n",
        );
        let p = one_problem(&[("a.yaml", &early)]);
        assert!(p.message.contains("is before the available time"), "{p}");
    }

    #[test]
    fn d3_a_window_with_an_unknown_time_zone_is_rejected_at_its_line() {
        let bad = BASE.replace("Europe/Berlin", "Europe/Atlantis");
        let p = one_problem(&[("a.yaml", &bad)]);
        assert_eq!(p.field, "spec.maintenanceWindows[0].timeZone");
        assert_eq!(p.line, 7);
    }

    #[test]
    fn c1_catalog_files_are_data_found_by_exact_path_and_never_fail_the_revision() {
        let catalog = "apiVersion: patchops.dev/v1alpha1\nkind: UpdateCatalog\nmetadata: {name: c}\nspec:\n  source: {path: catalog.yaml}\n";
        let files: Vec<(String, String)> = [
            ("repo/catalog-resource.yaml", catalog),
            ("repo/catalog.yaml", "format: [broken\n"),
            ("repo/a.yaml", BASE),
            // Same file name in another folder: a resource, and checked as one.
            (
                "repo/collections/catalog.yaml",
                "apiVersion: patchops.dev/v1alpha1\nkind: Collection\nmetadata: {name: extra}\nspec: {names: [x]}\n",
            ),
        ]
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect();
        let d = DesiredState::load_in("main@sha1:0", Some("repo"), &files).unwrap();
        assert!(d.collections.contains_key("extra"));
        assert_eq!(d.catalogs.len(), 1);
    }

    #[test]
    fn type_errors_name_the_field() {
        let bad = BASE.replace("deadlineAfter: 7d", "deadlineAfter: seven days");
        let p = one_problem(&[("a.yaml", &bad)]);
        assert_eq!((p.field.as_str(), p.line), ("spec.deadlineAfter", 19));
        assert!(p.message.contains("invalid duration"), "{p}");
    }
}
