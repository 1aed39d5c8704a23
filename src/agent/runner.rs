//! The agent: one `tick(now)` does everything due at `now` and says when to wake next.
//! The clock is a parameter, so tests and `simulate` drive agents on a virtual clock
//! while `patchops agent` drives one on the wall clock.
//!
//! Each tick, in order: poll the policy when the policy interval has passed (S1; a new
//! catalog schedules a randomised scan, S2–S4; a new deployment scans at once, D1);
//! decide which due triggers scan and how (Table 2, F1/F2, O1/O2) and scan (S5); carry
//! out mandatory deployments (download only what the scan found Required, D2/D5; install
//! in maintenance windows or at the deadline, D3; re-scan and report, D6/D7); send the
//! cached state messages when the batch is due (S6). The state — token, spool, history,
//! the batch in flight — is written to disk before anything is sent, so a crash or a
//! server outage loses nothing, and a batch is retried with the same sequence number so
//! the server applies it once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::client::{CallError, CatalogAnswer, ManagementPoint, PolicyAnswer};
use super::installers::InstallOutcome;
use super::machine::Machine;
use super::scanners::scan;
use super::schedule::{CatalogWatch, Decision, ScanHistory, Spool, Trigger, decide};
use crate::catalog::{Catalog, ScanVerdict, Update};
use crate::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use crate::compliance::{Enforcement, ScanResult};
use crate::reconcile::policy::{ClientPolicy, DeploymentAssignment};
use crate::reconcile::windows::{in_window, next_window};
use crate::resources::ClientSettingsSpec;
use crate::time::add;
use crate::{Error, Result};

/// The agent's version, sent at registration and with every scan (S7).
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// How content files reach the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Download {
    /// `GET /v1/content/{sha256}` from the management point, checked against the sha256.
    Http,
    /// Nothing is transferred (simulated fleets whose catalog names vendor files that are
    /// not in any content library); the download is reported as done.
    Simulated,
}

/// Catalog versions held once for many in-process agents.
pub type CatalogCache = std::sync::Mutex<HashMap<u64, Arc<Catalog>>>;

/// Settings of one agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The client name (host name).
    pub name: String,
    /// Management point base URL, e.g. http://127.0.0.1:8080.
    pub server: String,
    pub enroll_secret: String,
    /// Where the agent keeps its state, spool, cached catalog and downloads. None: in
    /// memory only (in-process simulated agents).
    pub state_dir: Option<PathBuf>,
    pub download: Download,
    /// Version reported at registration and with each scan (S7); `AGENT_VERSION` for a
    /// real agent, the simulated client's for in-process agents.
    pub agent_version: String,
    /// Catalogs shared by in-process agents of one management point (`simulate`): the same
    /// version is held once. None: the agent keeps its own.
    pub catalogs: Option<Arc<CatalogCache>>,
    /// Seed for the random scan times (S2).
    pub seed: u64,
}

/// What the agent keeps between ticks (and on disk).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    pub token: Option<String>,
    /// Sequence number of the last batch formed.
    pub sequence: u64,
    pub policy: Option<ClientPolicy>,
    pub policy_etag: Option<String>,
    pub last_poll: Option<Timestamp>,
    pub history: ScanHistory,
    pub watch: CatalogWatch,
    /// Messages waiting for the next batch (S6).
    pub spool: Spool<StateMessage>,
    /// A batch sent but not yet acknowledged: resent as it is until the server takes it.
    pub in_flight: Option<StateBatch>,
    pub send_retry_at: Option<Timestamp>,
    pub last_general_scan: Option<Timestamp>,
    pub last_reevaluation: Option<Timestamp>,
    /// Deployment name → fingerprint of what it asks, to notice new deployment policy (D1).
    pub deployments: BTreeMap<String, String>,
    /// Triggers already fired ("activation:<deployment>", "deadline:<deployment>").
    pub fired: BTreeSet<String>,
    /// Triggers waiting for the next scan decision (D1, D6, user-started).
    pub queued: Vec<Trigger>,
    /// Updates the last scan found Missing.
    pub missing: BTreeSet<String>,
    /// Where enforcement of each update stands.
    pub enforcement: BTreeMap<String, Enforcement>,
    /// When a failed download or installation is tried again.
    pub retry_at: BTreeMap<String, Timestamp>,
    /// Policy polls that failed in a row (the retry backs off: 30 s, 1 min, 2 min, … up
    /// to the policy interval).
    #[serde(default)]
    pub poll_failures: u32,
}

/// Counters for simulations and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub scans: u64,
    pub scans_skipped: u64,
    pub downloads: u64,
    pub bytes_downloaded: u64,
    pub installs: u64,
    pub install_failures: u64,
    pub batches_sent: u64,
    pub send_failures: u64,
}

impl std::ops::AddAssign for AgentStats {
    fn add_assign(&mut self, s: AgentStats) {
        self.scans += s.scans;
        self.scans_skipped += s.scans_skipped;
        self.downloads += s.downloads;
        self.bytes_downloaded += s.bytes_downloaded;
        self.installs += s.installs;
        self.install_failures += s.install_failures;
        self.batches_sent += s.batches_sent;
        self.send_failures += s.send_failures;
    }
}

pub struct Agent<M: Machine> {
    pub options: AgentOptions,
    pub state: AgentState,
    pub machine: M,
    pub stats: AgentStats,
    catalog: Option<Arc<Catalog>>,
    server: ManagementPoint,
    rng: fastrand::Rng,
    /// Whether the management point answered during this tick.
    reachable: bool,
    /// Why the management point refused to register this client, if it did (a wrong
    /// enrollment secret or a name held by another host is a configuration error, not an
    /// outage: the agent stops instead of trying again).
    pub registration_refused: Option<CallError>,
    /// What went wrong during the last tick (server unreachable, an answer that is not
    /// what the API promises, a catalog that cannot be read, a batch not delivered):
    /// each is logged at warn; `agent --once` exits non-zero when there is any.
    pub problems: Vec<String>,
    /// The state file's content as last written (unchanged state is not written again).
    saved: std::cell::RefCell<Vec<u8>>,
}

const STATE_FILE: &str = "state.json";
const CATALOG_FILE: &str = "catalog.json";

#[derive(Serialize, Deserialize)]
struct CachedCatalog {
    version: u64,
    updates: Vec<Update>,
}

fn fingerprint(d: &DeploymentAssignment) -> String {
    serde_json::to_string(&(&d.updates, d.available_time, d.deadline, d.mandatory)).expect("serializes")
}

impl<M: Machine> Agent<M> {
    /// An agent, with the state saved in `state_dir` if there is one (a restarted agent
    /// continues with its token, spool and unacknowledged batch).
    pub fn new(options: AgentOptions, machine: M) -> Result<Self> {
        let mut state = AgentState::default();
        let mut catalog = None;
        if let Some(dir) = &options.state_dir {
            create_private_dir(dir)?;
            std::fs::create_dir_all(dir.join("content")).map_err(|source| Error::Io { path: dir.clone(), source })?;
            let path = dir.join(STATE_FILE);
            if path.exists() {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
                state = serde_json::from_str(&text).map_err(|e| {
                    Error::Usage(format!(
                        "{}: the agent state is not readable ({e}); move it away to start as a new client",
                        path.display()
                    ))
                })?;
            }
            let path = dir.join(CATALOG_FILE);
            if path.exists() {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
                match serde_json::from_str::<CachedCatalog>(&text) {
                    Ok(c) => catalog = Some(Arc::new(Catalog::new(c.version, c.updates, &HashMap::new()))),
                    // A damaged cache is only a cache: the next scan fetches the catalog.
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "cached catalog unreadable; it will be fetched again");
                        state.history.cached_version = None;
                    }
                }
            }
        }
        let server = ManagementPoint::new(&options.server);
        let rng = fastrand::Rng::with_seed(options.seed);
        Ok(Agent {
            options,
            state,
            machine,
            stats: AgentStats::default(),
            catalog,
            server,
            rng,
            reachable: true,
            registration_refused: None,
            problems: Vec::new(),
            saved: Default::default(),
        })
    }

    /// The client settings in force: the policy's, or the defaults before the first policy.
    pub fn settings(&self) -> ClientSettingsSpec {
        self.state.policy.as_ref().map(|p| p.settings.clone()).unwrap_or_default()
    }

    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_deref()
    }

    /// A user started a re-evaluation (T2.5) or a deployment evaluation (T2.6).
    pub fn user_trigger(&mut self, trigger: Trigger) {
        self.state.queued.push(trigger);
    }

    /// Do what is due at `now`; returns when to wake next.
    pub fn tick(&mut self, now: Timestamp) -> Result<Timestamp> {
        self.reachable = true;
        self.problems.clear();
        self.poll_policy(now);
        self.scan_if_due(now)?;
        self.enforce(now)?;
        self.save()?;
        self.send_states(now)?;
        Ok(self.next_wake(now))
    }

    /// Send every spooled state message now, batch interval or not (`agent --once`: one
    /// whole cycle ends with its results delivered). True when nothing is left to send.
    pub fn flush(&mut self, now: Timestamp) -> Result<bool> {
        if !self.state.spool.pending.is_empty() {
            self.state.spool.send_at = Some(now);
        }
        self.state.send_retry_at = None;
        self.send_states(now)?;
        Ok(self.state.in_flight.is_none() && self.state.spool.pending.is_empty())
    }

    fn ensure_token(&mut self) -> Option<String> {
        if let Some(t) = &self.state.token {
            return Some(t.clone());
        }
        let inventory = self.machine.inventory();
        match self.server.register(
            &self.options.name,
            &inventory,
            &self.options.agent_version,
            &self.options.enroll_secret,
        ) {
            Ok(token) => {
                self.registration_refused = None;
                info!(client = %self.options.name, server = %self.options.server, "registered");
                self.state.token = Some(token.clone());
                Some(token)
            }
            Err(e) => {
                if matches!(e, CallError::Unreachable(_)) {
                    self.problem(format!("cannot register at {}/v1/register: {e}", self.options.server));
                } else {
                    warn!(client = %self.options.name, server = %self.options.server, error = %e, "registration refused");
                    self.registration_refused = Some(e);
                }
                self.reachable = false;
                None
            }
        }
    }

    /// S1: poll the policy on the policy interval.
    fn poll_policy(&mut self, now: Timestamp) {
        let interval = self.settings().policy_poll_interval.signed();
        if self.state.last_poll.is_some_and(|t| now < add(t, interval)) {
            return;
        }
        let Some(token) = self.ensure_token() else { return };
        self.state.last_poll = Some(now);
        if self.state.last_general_scan.is_none() {
            // The general schedule counts from the first contact; the first scan is the
            // new-catalog scan the first policy schedules.
            self.state.last_general_scan = Some(now);
            self.state.last_reevaluation = Some(now);
        }
        let answer = self.server.policy(&token, self.state.policy_etag.as_deref());
        if answer.is_ok() {
            self.state.poll_failures = 0;
        }
        match answer {
            Ok(PolicyAnswer::New(policy, etag)) => self.on_policy(*policy, etag, now),
            Ok(PolicyAnswer::NotModified) => {}
            Ok(PolicyAnswer::NotYet) => {
                // A new client waits for the reconciler's next run: ask again after the
                // batch interval instead of a whole policy interval.
                let retry = self.settings().state_message_batch_interval.signed();
                self.state.last_poll = Some(add(now, retry - interval));
            }
            Err(CallError::Unauthorized(m)) => {
                warn!(client = %self.options.name, error = %m, "token refused; registering again");
                self.state.token = None;
                self.state.last_poll = None;
            }
            Err(e) => {
                // Back off visibly: 30 s, 1 min, 2 min, … up to the policy interval.
                self.state.poll_failures = self.state.poll_failures.saturating_add(1);
                let backoff = SignedDuration::from_secs(30 << self.state.poll_failures.clamp(1, 12).saturating_sub(1));
                let retry = backoff.min(interval);
                self.state.last_poll = Some(add(now, retry - interval));
                self.problem(format!(
                    "policy poll of {}/v1/policy failed (attempt {}): {e}; next attempt in {} s",
                    self.options.server,
                    self.state.poll_failures,
                    retry.as_secs()
                ));
                self.reachable = false;
            }
        }
    }

    /// Log a problem of this tick at warn and keep it for `--once`'s exit code.
    fn problem(&mut self, message: String) {
        warn!(client = %self.options.name, "{message}");
        self.problems.push(message);
    }

    fn on_policy(&mut self, policy: ClientPolicy, etag: String, now: Timestamp) {
        let randomization = policy.settings.scan_randomization.signed();
        let random = self.rng.f64();
        let server = self.options.server.clone();
        if self.state.watch.on_policy(
            &mut self.state.history,
            policy.catalog_version,
            &server,
            randomization,
            random,
            now,
        ) {
            info!(client = %self.options.name, catalog_version = policy.catalog_version, scan_at = %self.state.watch.scheduled.unwrap_or(now), "new catalog announced");
        }
        let mut seen = BTreeMap::new();
        for d in &policy.deployments {
            let fp = fingerprint(d);
            if self.state.deployments.get(&d.name) != Some(&fp) {
                if d.available_time <= now {
                    // D1: confirm the state at once; the activation has passed.
                    self.state.queued.push(Trigger::NewDeploymentPolicy);
                    self.state.fired.insert(format!("activation:{}", d.name));
                } else {
                    self.state.fired.remove(&format!("activation:{}", d.name));
                }
                self.state.fired.remove(&format!("deadline:{}", d.name));
                // A changed deployment is a new chance for failed installs.
                for u in &d.updates {
                    self.state.retry_at.remove(u);
                    if matches!(
                        self.state.enforcement.get(u),
                        Some(Enforcement::InstallFailed | Enforcement::DownloadFailed)
                    ) {
                        self.state.enforcement.remove(u);
                    }
                }
            }
            seen.insert(d.name.clone(), fp);
        }
        self.state.fired.retain(|k| k.split_once(':').is_some_and(|(_, name)| seen.contains_key(name)));
        self.state.deployments = seen;
        self.state.policy = Some(policy);
        self.state.policy_etag = Some(etag);
    }

    /// The triggers due at `now`.
    fn due_triggers(&mut self, now: Timestamp) -> Vec<Trigger> {
        let settings = self.settings();
        let mut due: Vec<Trigger> = std::mem::take(&mut self.state.queued);
        if let Some(t) = self.state.last_general_scan
            && now >= add(t, settings.scan_schedule.signed())
        {
            due.push(Trigger::GeneralSchedule);
            self.state.last_general_scan = Some(now);
        }
        if let Some(t) = self.state.last_reevaluation
            && now >= add(t, settings.deployment_reevaluation.signed())
        {
            due.push(Trigger::ReevaluationSchedule);
            self.state.last_reevaluation = Some(now);
        }
        if let Some(t) = self.state.watch.take_due(now) {
            due.push(t);
        }
        if let Some(policy) = &self.state.policy {
            for d in &policy.deployments {
                let activation = format!("activation:{}", d.name);
                if d.available_time <= now && !self.state.fired.contains(&activation) {
                    due.push(Trigger::DeploymentActivation);
                    self.state.fired.insert(activation);
                }
                let deadline = format!("deadline:{}", d.name);
                if d.deadline.is_some_and(|t| t <= now) && !self.state.fired.contains(&deadline) {
                    due.push(Trigger::DeploymentDeadline);
                    self.state.fired.insert(deadline);
                }
            }
        }
        due
    }

    /// Table 2: every due trigger is decided; at most one scan runs, online when any
    /// decision asks for it.
    fn scan_if_due(&mut self, now: Timestamp) -> Result<()> {
        let due = self.due_triggers(now);
        if due.is_empty() {
            return Ok(());
        }
        if self.state.policy.is_none() && self.reachable {
            // Registered, but the reconciler has not assigned a policy (and with it the
            // catalog version) yet: the scan waits for it.
            self.state.queued.extend(
                due.into_iter().filter(|t| !matches!(t, Trigger::GeneralSchedule | Trigger::ReevaluationSchedule)),
            );
            return Ok(());
        }
        let ttl = self.settings().scan_ttl.signed();
        let server_version = self.state.policy.as_ref().filter(|_| self.reachable).map(|p| p.catalog_version);
        let mut scan: Option<(bool, Trigger)> = None;
        let mut failure = None;
        for trigger in &due {
            match decide(*trigger, &self.state.history, ttl, server_version, now) {
                Decision::Scan { online, .. } => {
                    let online = online || scan.is_some_and(|(o, _)| o);
                    scan = Some((online, scan.map_or(*trigger, |(_, t)| t)));
                }
                Decision::Skip { reason } => {
                    self.stats.scans_skipped += 1;
                    debug!(client = %self.options.name, ?trigger, %reason, "scan skipped");
                }
                Decision::Fail { reason } => failure = Some(reason),
            }
        }
        match (scan, failure) {
            (Some((online, trigger)), _) => self.scan(online, trigger, now),
            (None, Some(reason)) => {
                let version = self.state.history.cached_version.unwrap_or(0);
                self.report(
                    StateMessage::ScanFailed { time: now, catalog_version: version, error: reason },
                    false,
                    now,
                );
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// O1: an online scan brings the cached catalog up to the server's version (a delta
    /// from the cached version when there is one).
    fn refresh_catalog(&mut self) -> std::result::Result<(), CallError> {
        let token = self.state.token.clone().ok_or_else(|| CallError::Unreachable("not registered".into()))?;
        let cached = self.catalog.as_ref().map(|c| c.version).filter(|v| *v > 0);
        let answer = match self.server.catalog(&token, cached) {
            // The server no longer has our version's history, or it is newer than its own:
            // fetch the whole catalog.
            Err(CallError::Rejected { status: 400, .. }) if cached.is_some() => self.server.catalog(&token, None)?,
            other => other?,
        };
        let (version, updates) = match answer {
            CatalogAnswer::Full { version, updates } => (version, updates),
            CatalogAnswer::Delta(delta) => {
                let base = self.catalog.as_ref().map(|c| c.updates.as_slice()).unwrap_or(&[]);
                (delta.to, delta.apply(base))
            }
        };
        if self.catalog.as_ref().is_none_or(|c| c.version != version) {
            if let Some(dir) = &self.options.state_dir {
                let body =
                    serde_json::to_vec(&CachedCatalog { version, updates: updates.clone() }).expect("serializes");
                let _ = write_atomic(&dir.join(CATALOG_FILE), &body);
            }
            let shared = self.options.catalogs.as_ref().map(|c| c.lock().unwrap_or_else(|p| p.into_inner()));
            self.catalog = Some(match shared {
                // In-process agents of one server share each version's catalog in memory.
                Some(mut cache) => cache
                    .entry(version)
                    .or_insert_with(|| Arc::new(Catalog::new(version, updates, &HashMap::new())))
                    .clone(),
                None => Arc::new(Catalog::new(version, updates, &HashMap::new())),
            });
        }
        self.state.history.cached_version = Some(version);
        Ok(())
    }

    /// S5: scan against the catalog and cache the result as a state message.
    fn scan(&mut self, online: bool, trigger: Trigger, now: Timestamp) -> Result<()> {
        // O2: when the server cannot be reached, a scan that may be offline uses the
        // cached catalog; one that must be online fails.
        let refreshed = if online { self.refresh_catalog() } else { Ok(()) };
        if let Err(e) = &refreshed {
            self.problem(format!("cannot fetch the catalog from {}/v1/catalog: {e}", self.options.server));
        }
        if let Err(e) = refreshed
            && (self.catalog.is_none() || trigger.kind().catalog == super::schedule::CatalogChoice::Online)
        {
            let version = self.state.history.cached_version.unwrap_or(0);
            let error = format!("the catalog could not be fetched: {e}");
            self.report(StateMessage::ScanFailed { time: now, catalog_version: version, error }, false, now);
            return Ok(());
        }
        let Some(catalog) = self.catalog.as_ref() else { return Ok(()) };
        let facts = match self.machine.facts(catalog) {
            Ok(f) => f,
            Err(e) => {
                let message =
                    StateMessage::ScanFailed { time: now, catalog_version: catalog.version, error: e.to_string() };
                self.report(message, false, now);
                return Ok(());
            }
        };
        let mut updates = Vec::new();
        let mut missing = BTreeSet::new();
        for (idx, verdict) in scan(catalog, &facts) {
            let id = &catalog.updates[idx as usize].id;
            let result = match verdict {
                ScanVerdict::Missing => {
                    missing.insert(id.clone());
                    ScanResult::Missing
                }
                _ => ScanResult::Installed,
            };
            let enforcement = match (result, self.state.enforcement.get(id).copied()) {
                (ScanResult::Installed, Some(Enforcement::PendingReboot)) => Enforcement::PendingReboot,
                (ScanResult::Missing, Some(e)) if e != Enforcement::PendingReboot => e,
                _ => Enforcement::None,
            };
            updates.push(UpdateReport { id: id.clone(), result, enforcement });
        }
        // What is no longer missing needs no enforcement, except a pending restart.
        self.state
            .enforcement
            .retain(|id, e| missing.contains(id) || (*e == Enforcement::PendingReboot && !missing.contains(id)));
        let version = catalog.version;
        self.state.missing = missing;
        self.state.history.last_scan = Some(now);
        self.state.history.last_scan_version = Some(version);
        self.stats.scans += 1;
        let after_install = trigger == Trigger::AfterInstall;
        let message = StateMessage::ScanCompleted {
            time: now,
            catalog_version: version,
            agent_version: Some(self.options.agent_version.clone()),
            updates,
        };
        self.report(message, after_install, now);
        Ok(())
    }

    /// Cache a state message (S6); one that follows an installation is due within the
    /// after-install delay (D7) instead of the batch interval.
    fn report(&mut self, message: StateMessage, after_install: bool, now: Timestamp) {
        let settings = self.settings();
        let interval = if after_install {
            settings.state_message_after_install.signed()
        } else {
            settings.state_message_batch_interval.signed()
        };
        self.state.spool.push(message, false, interval, now);
    }

    fn enforcement(&mut self, update: &str, state: Enforcement, now: Timestamp, after_install: bool) {
        self.state.enforcement.insert(update.to_string(), state);
        self.report(StateMessage::Enforcement { time: now, update: update.to_string(), state }, after_install, now);
    }

    /// Seed step 4 for the mandatory deployments that are available: download the files of
    /// the updates the last scan found Required (D2, D5), install in a maintenance window
    /// — at once without one, at the deadline even outside one unless the deployment
    /// honours windows at the deadline (D3) — then re-scan and report (D6, D7).
    fn enforce(&mut self, now: Timestamp) -> Result<()> {
        let (Some(policy), Some(catalog)) = (self.state.policy.clone(), self.catalog.as_ref()) else {
            return Ok(());
        };
        let role_is_server = self.machine.inventory().get("role").is_some_and(|r| r == "server");
        let mut work: Vec<(Update, DeploymentAssignment)> = Vec::new();
        let mut planned = BTreeSet::new();
        let mut deployments: Vec<&DeploymentAssignment> = policy.deployments.iter().collect();
        deployments.sort_by_key(|d| d.deadline.unwrap_or(Timestamp::MAX));
        for d in deployments {
            // D4: optional deployments download nothing until a user starts them.
            if !d.mandatory || d.halted || d.available_time > now {
                continue;
            }
            for id in &d.updates {
                if !self.state.missing.contains(id) || !planned.insert(id.clone()) {
                    continue;
                }
                if let Some(i) = catalog.index_of(id) {
                    work.push((catalog.updates[i as usize].clone(), d.clone()));
                }
            }
        }
        let mut installed_any = false;
        let mut restart = false;
        for (update, d) in work {
            let id = update.id.clone();
            if self.state.retry_at.get(&id).is_some_and(|t| *t > now) {
                continue;
            }
            let state = self.state.enforcement.get(&id).copied().unwrap_or_default();
            let files = match state {
                Enforcement::None
                | Enforcement::DownloadFailed
                | Enforcement::InstallFailed
                | Enforcement::Downloading => match self.download(&update) {
                    Ok(files) => {
                        self.enforcement(&id, Enforcement::Downloaded, now, false);
                        files
                    }
                    Err(e) => {
                        warn!(client = %self.options.name, update = %id, error = %e, "download failed");
                        self.enforcement(&id, Enforcement::DownloadFailed, now, false);
                        let retry = self.settings().policy_poll_interval.signed();
                        self.state.retry_at.insert(id.clone(), add(now, retry));
                        continue;
                    }
                },
                Enforcement::Downloaded | Enforcement::WaitingForWindow => self.content_paths(&update),
                // Installed and waiting for the re-scan or a restart: nothing to do.
                _ => continue,
            };
            let needed = update.max_run_time.signed();
            let windows = &policy.maintenance_windows;
            let at_deadline = d.deadline.is_some_and(|t| t <= now);
            let allowed = windows.is_empty()
                || in_window(windows, now, needed)
                || (at_deadline && !d.honor_maintenance_windows_at_deadline);
            if !allowed {
                if state != Enforcement::WaitingForWindow {
                    self.enforcement(&id, Enforcement::WaitingForWindow, now, false);
                }
                continue;
            }
            match self.machine.install(&update, &files) {
                InstallOutcome::Installed { reboot_required, .. } => {
                    self.stats.installs += 1;
                    installed_any = true;
                    self.state.retry_at.remove(&id);
                    let suppressed =
                        if role_is_server { d.suppress_restart.servers } else { d.suppress_restart.workstations };
                    if reboot_required && suppressed {
                        // T1.R3: installed, Required until the machine restarts.
                        self.enforcement(&id, Enforcement::PendingReboot, now, true);
                    } else {
                        restart |= reboot_required;
                        self.enforcement(&id, Enforcement::InstalledPendingScan, now, true);
                    }
                }
                InstallOutcome::Failed { error, .. } => {
                    self.stats.install_failures += 1;
                    warn!(client = %self.options.name, update = %id, %error, "installation failed");
                    self.enforcement(&id, Enforcement::InstallFailed, now, true);
                    let retry = self.settings().deployment_reevaluation.signed();
                    self.state.retry_at.insert(id.clone(), add(now, retry));
                }
            }
        }
        if restart {
            self.machine.restart();
        }
        if installed_any {
            // D6: re-scan so the server sees the new state without waiting for a full scan.
            self.state.queued.push(Trigger::AfterInstall);
            self.scan_if_due(now)?;
        }
        Ok(())
    }

    fn content_path(&self, sha256: &str) -> Option<PathBuf> {
        self.options.state_dir.as_ref().map(|d| d.join("content").join(sha256))
    }

    fn content_paths(&self, update: &Update) -> Vec<PathBuf> {
        if self.machine.fetches_own_content() {
            return Vec::new();
        }
        update.files.iter().filter_map(|f| self.content_path(&f.sha256)).collect()
    }

    /// D5: only this update's files, each checked against its sha256. Where the machine's
    /// package manager fetches from its own mirrors (apt, dnf, zypper), it downloads them.
    fn download(&mut self, update: &Update) -> std::result::Result<Vec<PathBuf>, String> {
        if self.machine.fetches_own_content() {
            self.machine.prefetch(update)?;
            self.stats.downloads += 1;
            return Ok(Vec::new());
        }
        if self.options.download == Download::Simulated || self.options.state_dir.is_none() {
            self.stats.downloads += update.files.len() as u64;
            return Ok(Vec::new());
        }
        let token = self.state.token.clone().ok_or_else(|| "not registered with the management point".to_string())?;
        let mut paths = Vec::new();
        for f in &update.files {
            let dest = self.content_path(&f.sha256).expect("a state dir");
            if !(dest.exists() && super::client::file_sha256(&dest).as_deref() == Some(f.sha256.as_str())) {
                let size = self.server.download(&token, &f.sha256, &dest).map_err(|e| e.to_string())?;
                self.stats.downloads += 1;
                self.stats.bytes_downloaded += size;
            }
            paths.push(dest);
        }
        Ok(paths)
    }

    /// S6: send the batch when due; a batch that is not acknowledged stays in flight and
    /// is sent again, unchanged, after the batch interval.
    fn send_states(&mut self, now: Timestamp) -> Result<()> {
        loop {
            if self.state.in_flight.is_none() {
                let Some(messages) = self.state.spool.take_due(now) else { return Ok(()) };
                // Sequence numbers grow even if the state file is lost: never below the clock.
                let sequence = (self.state.sequence + 1).max(now.as_millisecond().max(0) as u64);
                self.state.sequence = sequence;
                self.state.in_flight = Some(StateBatch { client: self.options.name.clone(), sequence, messages });
                self.state.send_retry_at = None;
                self.save()?;
            }
            if self.state.send_retry_at.is_some_and(|t| t > now) {
                return Ok(());
            }
            let Some(token) = self.ensure_token() else {
                self.retry_send(now);
                return Ok(());
            };
            let batch = self.state.in_flight.as_ref().expect("a batch in flight");
            match self.server.post_states(&token, batch) {
                Ok(()) => {
                    self.stats.batches_sent += 1;
                    self.state.in_flight = None;
                    self.state.send_retry_at = None;
                    self.save()?;
                }
                Err(CallError::Unauthorized(m)) => {
                    warn!(client = %self.options.name, error = %m, "token refused; registering again");
                    self.state.token = None;
                    self.retry_send(now);
                    return Ok(());
                }
                Err(CallError::Rejected { status, message }) => {
                    // The server keeps what it could not take (400) or refuses it for a
                    // reason resending cannot change; say so and go on with new messages.
                    self.problem(format!(
                        "{}/v1/states refused the state batch ({status}): {message}; it is dropped",
                        self.options.server
                    ));
                    self.state.in_flight = None;
                    self.save()?;
                }
                Err(e) => {
                    self.problem(format!(
                        "state batch not delivered to {}/v1/states: {e}; it stays spooled and is sent again",
                        self.options.server
                    ));
                    self.retry_send(now);
                    return Ok(());
                }
            }
        }
    }

    fn retry_send(&mut self, now: Timestamp) {
        self.stats.send_failures += 1;
        let interval = self.settings().state_message_batch_interval.signed();
        self.state.send_retry_at = Some(add(now, interval));
    }

    /// Write the state file (atomically) when there is a state dir.
    fn save(&self) -> Result<()> {
        let Some(dir) = &self.options.state_dir else { return Ok(()) };
        let body = serde_json::to_vec(&self.state).expect("agent state serializes");
        if *self.saved.borrow() == body {
            return Ok(());
        }
        write_atomic(&dir.join(STATE_FILE), &body)?;
        *self.saved.borrow_mut() = body;
        Ok(())
    }

    /// The earliest moment something becomes due.
    pub fn next_wake(&self, now: Timestamp) -> Timestamp {
        let s = self.settings();
        let mut wake: Vec<Timestamp> = Vec::new();
        wake.push(self.state.last_poll.map_or(now, |t| add(t, s.policy_poll_interval.signed())));
        wake.extend(self.state.spool.send_at);
        if self.state.in_flight.is_some() {
            wake.push(self.state.send_retry_at.unwrap_or(now));
        }
        wake.extend(self.state.watch.scheduled);
        wake.extend(self.state.last_general_scan.map(|t| add(t, s.scan_schedule.signed())));
        wake.extend(self.state.last_reevaluation.map(|t| add(t, s.deployment_reevaluation.signed())));
        wake.extend(self.state.retry_at.values().copied());
        if let Some(policy) = &self.state.policy {
            for d in &policy.deployments {
                if !self.state.fired.contains(&format!("activation:{}", d.name)) {
                    wake.push(d.available_time);
                }
                if let Some(t) = d.deadline
                    && !self.state.fired.contains(&format!("deadline:{}", d.name))
                {
                    wake.push(t);
                }
            }
            // The next window the longest waiting update fits in.
            let needed = self
                .state
                .enforcement
                .iter()
                .filter(|(_, e)| **e == Enforcement::WaitingForWindow)
                .filter_map(|(id, _)| {
                    let catalog = self.catalog.as_ref()?;
                    catalog.index_of(id).map(|i| catalog.updates[i as usize].max_run_time.signed())
                })
                .max();
            if let Some(needed) = needed
                && let Some(w) = next_window(&policy.maintenance_windows, now, needed)
            {
                wake.push(w.start.max(add(now, SignedDuration::from_secs(1))));
            }
        }
        // Queued triggers run at once, or wait for the first policy (its poll is above).
        if !self.state.queued.is_empty() && self.state.policy.is_some() {
            wake.push(now);
        }
        let soonest = add(now, SignedDuration::from_secs(1));
        wake.into_iter().min().unwrap_or(soonest).max(soonest)
    }
}

/// Write a file so a reader sees the old or the new content, never a mix. Created 0600:
/// the state file holds the client's token.
fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |source| Error::Io { path: path.into(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    file.write_all(body).map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}

/// The agent's state folder, readable by its owner only (0700), also when it existed
/// with wider permissions; a state file from an older agent is narrowed to 0600.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| Error::Io { path: dir.into(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let state = dir.join(STATE_FILE);
    if state.exists() {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| Error::Io { path: state.clone(), source })?;
    }
    Ok(())
}
