//! Simulated clients for demos and tests: a fleet described by groups (counts, fact
//! mixes, patch levels, failure rates) is generated deterministically; each client
//! "scans" by evaluating the catalog's applicability rules against its facts and
//! reports through the store's state-message path, as a real agent would. `simulate`
//! runs the same clients as in-process agents against a management point instead.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use crate::catalog::{Catalog, Facts, ScanVerdict};
use crate::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use crate::compliance::{Enforcement, ScanResult};
use crate::store::{ClientInfo, Store};
use crate::{Error, Result};

/// A fleet description (examples/fleet.yaml).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetSpec {
    /// Seed for every random choice: the same file gives the same fleet.
    pub seed: u64,
    /// Agent version most clients run.
    pub agent_version: String,
    pub groups: Vec<Group>,
}

/// Machines sharing facts and behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Group {
    pub count: usize,
    /// Host names are `<namePrefix>-<n>`.
    pub name_prefix: String,
    /// Facts every member has (role, site…).
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
    /// Operating systems (the `os` fact) with relative weights.
    pub os: BTreeMap<String, u32>,
    /// Patch levels: everything released on or before the date is installed, by weight.
    pub patched_through: BTreeMap<String, u32>,
    /// Installed packages every member has (name → version), before its patch level:
    /// the updates it has installed raise them to their fixed versions (see
    /// [`install_packages`]), so package rules (`rpmPackage`, `package`) see a real state.
    #[serde(default)]
    pub packages: BTreeMap<String, String>,
    #[serde(default)]
    pub never_scanned_rate: f64,
    #[serde(default)]
    pub scan_failure_rate: f64,
    #[serde(default)]
    pub old_agent_rate: f64,
    #[serde(default)]
    pub pending_reboot_rate: f64,
    #[serde(default)]
    pub install_failure_rate: f64,
}

/// One generated client.
#[derive(Clone, Debug)]
pub struct SimClient {
    pub info: ClientInfo,
    pub facts: Facts,
    /// Every update for its `os` released on or before this date is installed.
    pub patched_through: jiff::civil::Date,
    never_scans: bool,
    /// Its scans fail (the update source cannot be reached).
    pub fails_scans: bool,
    pending_reboot_rate: f64,
    /// Share of installs that fail.
    pub install_failure_rate: f64,
    /// Offset inside the scan schedule, so scans spread over the day.
    phase: SignedDuration,
}

/// A simulated fleet with its scan schedule.
pub struct SimFleet {
    pub clients: Vec<SimClient>,
    /// The seed clients and their agents derive their randomness from.
    pub seed: u64,
    last_scan: HashMap<String, Timestamp>,
}

fn pick<'a>(rng: &mut fastrand::Rng, weights: &'a BTreeMap<String, u32>) -> &'a str {
    let total: u32 = weights.values().sum();
    let mut roll = rng.u32(0..total.max(1));
    for (k, w) in weights {
        if roll < *w {
            return k;
        }
        roll -= w;
    }
    weights.keys().next().map(String::as_str).unwrap_or("")
}

impl SimFleet {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let spec: FleetSpec =
            serde_saphyr::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
        Ok(Self::generate(&spec))
    }

    pub fn generate(spec: &FleetSpec) -> Self {
        let mut rng = fastrand::Rng::with_seed(spec.seed);
        let mut clients = Vec::new();
        for g in &spec.groups {
            for n in 1..=g.count {
                let name = format!("{}-{n:04}", g.name_prefix);
                let os = pick(&mut rng, &g.os).to_string();
                let patched: jiff::civil::Date =
                    pick(&mut rng, &g.patched_through).parse().unwrap_or(jiff::civil::Date::MIN);
                let mut values = g.facts.clone();
                values.insert("os".into(), os);
                values.insert("hostname".into(), name.clone());
                let agent = if rng.f64() < g.old_agent_rate { "0.9.0".to_string() } else { spec.agent_version.clone() };
                clients.push(SimClient {
                    info: ClientInfo { name: name.clone(), facts: values.clone(), agent_version: Some(agent) },
                    facts: Facts {
                        values,
                        packages: g.packages.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        ..Default::default()
                    },
                    patched_through: patched,
                    never_scans: rng.f64() < g.never_scanned_rate,
                    fails_scans: rng.f64() < g.scan_failure_rate,
                    pending_reboot_rate: g.pending_reboot_rate,
                    install_failure_rate: g.install_failure_rate,
                    phase: SignedDuration::from_secs(rng.i64(0..20 * 3600)),
                });
            }
        }
        SimFleet { clients, seed: spec.seed, last_scan: HashMap::new() }
    }

    /// Register every client, then let each client whose scan is due scan and report.
    /// First call: every client scans, at a time spread over the last 20 hours.
    /// Returns the number of scans reported.
    pub fn scan_due(
        &mut self,
        store: &mut dyn Store,
        catalog: &Catalog,
        schedule: SignedDuration,
        now: Timestamp,
    ) -> Result<usize> {
        let first = self.last_scan.is_empty();
        let mut scans = 0;
        for (i, c) in self.clients.iter().enumerate() {
            if first {
                store.upsert_client(&c.info, now)?;
            }
            if c.never_scans {
                continue;
            }
            let due = match self.last_scan.get(&c.info.name) {
                None => true,
                Some(t) => now.duration_since(*t) >= schedule,
            };
            if !due {
                continue;
            }
            let time = if first { now - c.phase } else { now };
            // Deterministic per client and catalog version: the same fleet file gives the
            // same numbers on every run.
            let batch = c.scan(catalog, time, self.seed ^ ((i as u64) << 20) ^ catalog.version);
            store.apply_batch(&batch, now)?;
            self.last_scan.insert(c.info.name.clone(), time);
            scans += 1;
        }
        Ok(scans)
    }
}

impl SimFleet {
    /// The fleet with its group sizes scaled so it has `n` clients (at least one per
    /// group while n allows), keeping the mix of the description.
    pub fn generate_scaled(spec: &FleetSpec, n: usize) -> Self {
        let total: usize = spec.groups.iter().map(|g| g.count).sum::<usize>().max(1);
        let mut spec = spec.clone();
        let mut left = n;
        let groups = spec.groups.len();
        for (i, g) in spec.groups.iter_mut().enumerate() {
            let share = if i + 1 == groups { left } else { (g.count * n).div_ceil(total).min(left) };
            g.count = share;
            left -= share;
        }
        Self::generate(&spec)
    }
}

impl SimClient {
    /// Whether this client never scans (its agent is broken): it stays Unknown.
    pub fn never_scans(&self) -> bool {
        self.never_scans
    }

    /// One scan: the catalog's applicability rules over this client's facts.
    pub fn scan(&self, catalog: &Catalog, time: Timestamp, seed: u64) -> StateBatch {
        let mut rng = fastrand::Rng::with_seed(seed);
        let sequence = time.as_millisecond().max(0) as u64;
        if self.fails_scans {
            return StateBatch {
                client: self.info.name.clone(),
                sequence,
                messages: vec![StateMessage::ScanFailed {
                    time,
                    catalog_version: catalog.version,
                    error: "0x8024402C: the update source could not be reached".into(),
                }],
            };
        }
        let mut facts = self.facts.clone();
        crate::catalog::patch_level::mark_patched(&mut facts, catalog, self.patched_through);
        let mut updates = Vec::new();
        for u in &catalog.updates {
            let (result, enforcement) = match u.applicability.evaluate(&facts) {
                ScanVerdict::NotApplicable => continue,
                ScanVerdict::Installed if u.reboot_required && rng.f64() < self.pending_reboot_rate => {
                    (ScanResult::Installed, Enforcement::PendingReboot)
                }
                ScanVerdict::Installed => (ScanResult::Installed, Enforcement::None),
                ScanVerdict::Missing if rng.f64() < self.install_failure_rate => {
                    (ScanResult::Missing, Enforcement::InstallFailed)
                }
                ScanVerdict::Missing => (ScanResult::Missing, Enforcement::None),
            };
            updates.push(UpdateReport { id: u.id.clone(), result, enforcement });
        }
        StateBatch {
            client: self.info.name.clone(),
            sequence,
            messages: vec![StateMessage::ScanCompleted {
                time,
                catalog_version: catalog.version,
                agent_version: self.info.agent_version.clone(),
                updates,
            }],
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::{Applicability, RpmPackageTest, Rule};

    fn advisory(id: &str, released: &str, fixed: &str) -> crate::catalog::Update {
        let mut u = crate::catalog::test_support::update(id, "AlmaLinux 9", released);
        let test = |below: bool| {
            Rule::RpmPackage(RpmPackageTest {
                name: "openssl-libs".into(),
                version_below: below.then(|| fixed.to_string()),
                version_at_least: (!below).then(|| fixed.to_string()),
                ..Default::default()
            })
        };
        u.applicability =
            Applicability { is_installable: test(true), is_installed: test(false), prerequisites: vec![] };
        u
    }

    #[test]
    fn simulated_packages_follow_the_patch_level_and_simulated_installs() {
        let catalog = Catalog::new(
            1,
            vec![advisory("ALSA-1", "2026-03-01", "1:3.5.1-5.el9"), advisory("ALSA-2", "2026-07-01", "1:3.5.1-7.el9")],
            &HashMap::new(),
        );
        let spec: FleetSpec = serde_saphyr::from_str(
            "seed: 1\nagentVersion: \"2.1.0\"\ngroups:\n  - count: 1\n    namePrefix: alma\n    os: {\"AlmaLinux 9\": 1}\n    \
             patchedThrough: {\"2026-05-31\": 1}\n    packages: {openssl-libs: \"1:3.5.1-4.el9\"}\n",
        )
        .unwrap();
        let fleet = SimFleet::generate(&spec);
        let client = &fleet.clients[0];
        let mut facts = client.facts.clone();
        crate::catalog::patch_level::mark_patched(&mut facts, &catalog, client.patched_through);
        assert_eq!(facts.packages["openssl-libs"], "1:3.5.1-5.el9", "raised by the March advisory only");
        assert_eq!(catalog.updates[0].applicability.evaluate(&facts), ScanVerdict::Installed);
        assert_eq!(catalog.updates[1].applicability.evaluate(&facts), ScanVerdict::Missing);
    }
}
