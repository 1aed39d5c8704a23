//! Waivers in force: which (machine, update) pairs a `Waiver` covers at a moment, when the
//! next one ends, and the WaiverExpired events between two moments. Pure: `now` is passed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::desired::DesiredState;
use crate::reconcile::Event;
use crate::reconcile::targeting::{Collections, Membership};
use crate::resources::WaiverSpec;

/// Where a waiver stands at a moment: in force strictly before its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum WaiverState {
    Active,
    Expired,
}

pub fn state(spec: &WaiverSpec, now: Timestamp) -> WaiverState {
    if now < spec.expires { WaiverState::Active } else { WaiverState::Expired }
}

/// Whom a waiver covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    /// A collection index (of the [`Collections`] the set was built with).
    Collection(usize),
    /// Lower-cased client names, sorted.
    Machines(Vec<String>),
    /// The collection is not declared (validation reports it): covers nobody.
    Nobody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Active {
    name: String,
    /// Catalog indices of the covered updates, sorted.
    updates: Vec<u32>,
    target: Target,
    expires: Timestamp,
}

/// The waivers in force at one moment, resolved against a catalog and collections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Waivers {
    active: Vec<Active>,
}

/// Catalog indices of the updates a waiver names: by id or KB, and every update fixing
/// one of its CVEs.
pub fn covered_updates(spec: &WaiverSpec, catalog: &Catalog, cves: &BTreeMap<String, Vec<u32>>) -> Vec<u32> {
    let mut out: Vec<u32> = spec.updates.iter().flat_map(|u| catalog.find(u)).collect();
    for cve in &spec.cves {
        out.extend(cves.get(&cve.trim().to_ascii_uppercase()).into_iter().flatten());
    }
    out.sort_unstable();
    out.dedup();
    out
}

impl Waivers {
    /// The waivers of `desired` in force at `now`.
    pub fn at(
        desired: &DesiredState,
        catalog: &Catalog,
        cves: &BTreeMap<String, Vec<u32>>,
        collections: &Collections,
        now: Timestamp,
    ) -> Self {
        let active = desired
            .waivers
            .iter()
            .filter(|(_, w)| state(&w.spec, now) == WaiverState::Active)
            .map(|(name, w)| {
                let target = match &w.spec.collection {
                    Some(c) => collections.index_of(c).map_or(Target::Nobody, Target::Collection),
                    None => {
                        let mut m: Vec<String> = w.spec.machines.iter().map(|m| m.to_ascii_lowercase()).collect();
                        m.sort();
                        Target::Machines(m)
                    }
                };
                Active {
                    name: name.clone(),
                    updates: covered_updates(&w.spec, catalog, cves),
                    target,
                    expires: w.spec.expires,
                }
            })
            .collect();
        Waivers { active }
    }

    pub fn is_empty(&self) -> bool {
        self.active.iter().all(|w| w.updates.is_empty())
    }

    fn targets(w: &Active, client: usize, name: &str, membership: &Membership) -> bool {
        Self::targets_row(w, membership.row(client), name)
    }

    fn targets_row(w: &Active, row: &[u64], name: &str) -> bool {
        match &w.target {
            Target::Collection(c) => row[c / 64] >> (c % 64) & 1 == 1,
            Target::Machines(names) => names.binary_search(&name.to_ascii_lowercase()).is_ok(),
            Target::Nobody => false,
        }
    }

    /// The waivers in force (by position, as [`Self::names`]) covering a client with
    /// this collection-membership row, each with the catalog indices it covers (sorted).
    pub fn targeting<'s>(&'s self, row: &'s [u64], name: &'s str) -> impl Iterator<Item = (usize, &'s [u32])> + 's {
        self.active
            .iter()
            .enumerate()
            .filter(move |(_, w)| Self::targets_row(w, row, name))
            .map(|(i, w)| (i, w.updates.as_slice()))
    }

    /// Names of the waivers in force, in position order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.active.iter().map(|w| w.name.as_str())
    }

    /// Catalog ids a waiver in force covers (by position).
    pub fn covered_ids(&self, position: usize, catalog: &Catalog) -> Vec<String> {
        self.active[position].updates.iter().map(|&i| catalog.updates[i as usize].id.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// The waivers covering (client, update): client by fleet index and name, update by
    /// catalog index.
    pub fn covering(&self, client: usize, name: &str, membership: &Membership, update: u32) -> Vec<&str> {
        self.active
            .iter()
            .filter(|w| w.updates.binary_search(&update).is_ok() && Self::targets(w, client, name, membership))
            .map(|w| w.name.as_str())
            .collect()
    }

    /// Catalog indices of every update waived for this client, sorted.
    pub fn updates_for(&self, client: usize, name: &str, membership: &Membership) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .active
            .iter()
            .filter(|w| Self::targets(w, client, name, membership))
            .flat_map(|w| w.updates.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The first moment one of these waivers ends (the outcome changes then).
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.active.iter().filter(|w| !w.updates.is_empty()).map(|w| w.expires).min()
    }
}

/// A WaiverExpired event for each waiver whose expiry lies in (`after`, `until`]: the
/// moment its machines count again.
pub fn expired_between(desired: &DesiredState, after: Timestamp, until: Timestamp) -> Vec<Event> {
    desired
        .waivers
        .iter()
        .filter(|(_, w)| after < w.spec.expires && w.spec.expires <= until)
        .map(|(name, w)| expired_event(name, &w.spec))
        .collect()
}

/// The event saying a waiver ended and its machines count again.
pub fn expired_event(name: &str, spec: &WaiverSpec) -> Event {
    let target = match &spec.collection {
        Some(c) => format!("collection {c}"),
        None => format!("{} machine(s)", spec.machines.len()),
    };
    Event {
        kind: "Waiver".into(),
        name: name.to_string(),
        reason: "WaiverExpired".into(),
        message: format!(
            "waiver {name} for {target} expired at {}: its updates count as required again ({})",
            spec.expires, spec.reason
        ),
        time: spec.expires,
        severity: crate::reconcile::Severity::Normal,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;
    use crate::compliance::Client;
    use std::collections::HashMap;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const DESIRED: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: sql}
spec:
  selector: {matchFacts: {role: sql}}
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: sql-vendor}
spec:
  updates: [KB2]
  collection: sql
  reason: the SQL vendor supports KB2 from March
  expires: 2026-12-01T00:00:00Z
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: lab-cve}
spec:
  cves: [cve-2026-0007]
  machines: [LAB-1]
  reason: air-gapped lab, compensating control
  expires: 2026-12-15T00:00:00Z
"#;

    fn scene() -> (DesiredState, Catalog, Vec<Client>) {
        let desired = DesiredState::load("main@sha1:0", &[("w.yaml".into(), DESIRED.into())]).unwrap();
        let mut u3 = update("KB3-srv", "P", "2026-11-01");
        u3.cves = vec!["CVE-2026-0007".into()];
        let catalog = Catalog::new(
            1,
            vec![update("KB1-srv", "P", "2026-10-01"), update("KB2-srv", "P", "2026-11-01"), u3],
            &HashMap::new(),
        );
        let client = |name: &str, role: &str| Client {
            name: name.into(),
            facts: [("role".to_string(), role.to_string())].into(),
            ..Default::default()
        };
        (desired, catalog, vec![client("sql-1", "sql"), client("lab-1", "lab"), client("web-1", "web")])
    }

    #[test]
    fn waived_pairs_follow_target_updates_cves_and_the_clock() {
        let (desired, catalog, clients) = scene();
        let collections = Collections::new(&desired.collections);
        let membership = collections.membership(&clients);
        let cves = crate::governance::exposure::cve_index(&catalog);
        let (kb1, kb2, kb3) = (0u32, 1u32, 2u32);
        // (now, client, update, waivers covering)
        let cases: Vec<(&str, usize, u32, Vec<&str>)> = vec![
            ("2026-11-20T00:00:00Z", 0, kb2, vec!["sql-vendor"]),
            ("2026-11-20T00:00:00Z", 0, kb1, vec![]),
            ("2026-11-20T00:00:00Z", 0, kb3, vec![]),
            ("2026-11-20T00:00:00Z", 1, kb3, vec!["lab-cve"]), // by CVE, machine name in any case
            ("2026-11-20T00:00:00Z", 1, kb2, vec![]),
            ("2026-11-20T00:00:00Z", 2, kb2, vec![]),
            ("2026-11-30T23:59:59Z", 0, kb2, vec!["sql-vendor"]),
            ("2026-12-01T00:00:00Z", 0, kb2, vec![]), // expired at its expiry
            ("2026-12-01T00:00:00Z", 1, kb3, vec!["lab-cve"]),
            ("2026-12-15T00:00:00Z", 1, kb3, vec![]),
        ];
        for (now, client, upd, expected) in cases {
            let w = Waivers::at(&desired, &catalog, &cves, &collections, at(now));
            assert_eq!(w.covering(client, &clients[client].name, &membership, upd), expected, "{now} {client} {upd}");
        }
        let w = Waivers::at(&desired, &catalog, &cves, &collections, at("2026-11-20T00:00:00Z"));
        assert_eq!(w.updates_for(0, "sql-1", &membership), vec![kb2]);
        assert_eq!(w.next_expiry(), Some(at("2026-12-01T00:00:00Z")));
        let w = Waivers::at(&desired, &catalog, &cves, &collections, at("2026-12-02T00:00:00Z"));
        assert_eq!(w.next_expiry(), Some(at("2026-12-15T00:00:00Z")));
        assert!(Waivers::at(&desired, &catalog, &cves, &collections, at("2027-01-01T00:00:00Z")).is_empty());
    }

    #[test]
    fn an_event_says_when_a_waiver_expired_between_two_reconciles() {
        let (desired, _, _) = scene();
        let names = |a: &str, b: &str| -> Vec<String> {
            expired_between(&desired, at(a), at(b)).into_iter().map(|e| format!("{} {}", e.reason, e.name)).collect()
        };
        assert_eq!(names("2026-11-30T00:00:00Z", "2026-11-30T23:00:00Z"), Vec::<String>::new());
        assert_eq!(names("2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"), ["WaiverExpired sql-vendor"]);
        assert_eq!(names("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z"), Vec::<String>::new(), "only once");
        assert_eq!(
            names("2026-11-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ["WaiverExpired lab-cve", "WaiverExpired sql-vendor"]
        );
        let e = &expired_between(&desired, at("2026-11-30T00:00:00Z"), at("2026-12-01T00:00:00Z"))[0];
        assert_eq!(e.time, at("2026-12-01T00:00:00Z"));
        assert!(e.message.contains("collection sql") && e.message.contains("SQL vendor"), "{}", e.message);
    }

    #[test]
    fn a_waiver_without_expiry_target_or_reason_is_rejected_naming_file_line_and_field() {
        let cases = [
            ("  expires: 2026-12-01T00:00:00Z\n", "", "spec: missing field `expires`"),
            ("  collection: sql\n", "", "no target"),
            ("  collection: sql\n", "  collection: sql\n  machines: [a]\n", "not both"),
            ("  collection: sql\n", "  collection: nope\n", "collection \"nope\" not found"),
            ("  reason: the SQL vendor supports KB2 from March\n", "  reason: \" \"\n", "spec.reason"),
            ("  updates: [KB2]\n", "", "waives nothing"),
            ("  updates: [KB2]\n", "  cves: [KB2]\n", "spec.cves[0]"),
        ];
        for (remove, add, expected) in cases {
            let text = DESIRED.replacen(remove, add, 1);
            let problems = DesiredState::load("main@sha1:0", &[("w.yaml".into(), text)]).unwrap_err();
            let shown = crate::desired::render_problems(&problems);
            let line: usize = shown.trim().split(':').nth(1).unwrap().parse().unwrap();
            // The first waiver spans lines 7 to 15 of the file.
            assert!((7..=15).contains(&line) && shown.contains(expected), "{expected}: {shown}");
        }
    }

    const FLEET_DESIRED: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: ClientSettings
metadata: {name: defaults}
spec:
  scanTtl: 30d
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: nov}
spec:
  updates: [KB1-srv, KB2-srv]
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: nov-servers}
spec:
  updateList: nov
  collection: servers
  startTime: 2026-11-12T00:00:00Z
  deadline: 2026-11-30T00:00:00Z
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: srv-0-kb2}
spec:
  updates: [KB2]
  machines: [srv-0, srv-1]
  reason: application certification pending
  expires: 2026-12-01T00:00:00Z
"#;

    /// srv-0 misses KB2 only (waived), srv-1 misses KB1 and KB2 (KB2 waived), srv-2 has
    /// both, srv-3 misses KB2 (not waived).
    fn reconcile_scene() -> (DesiredState, Catalog, crate::compliance::Fleet) {
        use crate::compliance::{ClientCompliance, Enforcement, ScanRecord, ScanResult};
        let desired = DesiredState::load("main@sha1:0", &[("d.yaml".into(), FLEET_DESIRED.into())]).unwrap();
        let catalog = Catalog::new(
            1,
            vec![update("KB1-srv", "P", "2026-10-01"), update("KB2-srv", "P", "2026-11-01")],
            &HashMap::new(),
        );
        let scan = Some(ScanRecord { time: at("2026-11-20T00:00:00Z"), catalog_version: 1, error: None });
        let missing = |k| PackedState::new(k, ScanResult::Missing, Enforcement::None);
        let installed = |k| PackedState::new(k, ScanResult::Installed, Enforcement::None);
        let clients = [
            vec![installed(0), missing(1)],
            vec![missing(0), missing(1)],
            vec![installed(0), installed(1)],
            vec![installed(0), missing(1)],
        ]
        .into_iter()
        .enumerate()
        .map(|(i, states)| Client {
            name: format!("srv-{i}"),
            facts: [("role".to_string(), "server".to_string())].into(),
            compliance: ClientCompliance {
                agent_version: Some("1".into()),
                last_scan: scan.clone(),
                states,
                ..Default::default()
            },
        })
        .collect();
        (desired, catalog, crate::compliance::Fleet::new(clients))
    }

    use crate::compliance::PackedState;
    use crate::reconcile::{Inputs, Previous, previous_from, reconcile};

    #[test]
    fn waived_pairs_leave_the_compliance_denominator_until_the_waiver_expires() {
        let (desired, catalog, fleet) = reconcile_scene();
        let previous = Previous::default();
        let before = reconcile(&Inputs {
            desired: &desired,
            catalog: &catalog,
            fleet: &fleet,
            previous: &previous,
            now: at("2026-11-25T00:00:00Z"),
        });
        let d = &before.deployments["nov-servers"];
        // srv-0 waived, srv-1 still requires KB1, srv-2 compliant, srv-3 requires KB2.
        assert_eq!((d.machines.compliant, d.machines.required, d.machines.waived), (1, 2, 1));
        assert_eq!((d.waived_pairs, d.updates.required, d.updates.installed, d.updates.not_required), (2, 2, 4, 0));
        assert_eq!(d.compliance_percent, 33.3, "1 of 3 counted machines");
        let w = &before.waivers["srv-0-kb2"];
        assert_eq!(
            (w.state.as_str(), w.machines, w.waived_pairs, w.updates.clone()),
            ("Active", 2, 2, vec!["KB2-srv".to_string()])
        );
        assert!(before.valid_until.is_some_and(|t| t <= at("2026-12-01T00:00:00Z")), "{:?}", before.valid_until);
        assert!(before.events.iter().all(|e| e.reason != "WaiverExpired"));

        // At the expiry the pairs count again, and an event says so once.
        let statuses: Vec<crate::store::ResourceStatus> = before
            .waivers
            .iter()
            .map(|(n, s)| crate::store::ResourceStatus {
                kind: "Waiver".into(),
                namespace: "default".into(),
                name: n.clone(),
                status: serde_json::to_value(s).unwrap(),
            })
            .collect();
        let previous = previous_from(&statuses);
        let after = reconcile(&Inputs {
            desired: &desired,
            catalog: &catalog,
            fleet: &fleet,
            previous: &previous,
            now: at("2026-12-01T00:00:00Z"),
        });
        let d = &after.deployments["nov-servers"];
        assert_eq!((d.machines.compliant, d.machines.required, d.machines.waived, d.waived_pairs), (1, 3, 0, 0));
        assert_eq!(d.compliance_percent, 25.0);
        assert_eq!(after.waivers["srv-0-kb2"].state, "Expired");
        let expired: Vec<&str> =
            after.events.iter().filter(|e| e.reason == "WaiverExpired").map(|e| e.name.as_str()).collect();
        assert_eq!(expired, ["srv-0-kb2"]);
        let previous = previous_from(&[crate::store::ResourceStatus {
            kind: "Waiver".into(),
            namespace: "default".into(),
            name: "srv-0-kb2".into(),
            status: serde_json::to_value(&after.waivers["srv-0-kb2"]).unwrap(),
        }]);
        let later = reconcile(&Inputs {
            desired: &desired,
            catalog: &catalog,
            fleet: &fleet,
            previous: &previous,
            now: at("2026-12-02T00:00:00Z"),
        });
        assert!(later.events.iter().all(|e| e.reason != "WaiverExpired"), "only once");
    }

    #[test]
    fn a_client_update_applied_incrementally_keeps_waived_counts_exact() {
        let (desired, catalog, fleet) = reconcile_scene();
        let now = at("2026-11-25T00:00:00Z");
        let previous = Previous::default();
        let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now };
        let (mut engine, _) = crate::reconcile::Engine::new(&inputs);
        // srv-1 installs KB1: it becomes waived (only the waived KB2 is missing).
        let mut changed = fleet.clone();
        let before = changed.clients[1].clone();
        changed.clients[1].compliance.states[0] =
            PackedState::new(0, crate::compliance::ScanResult::Installed, crate::compliance::Enforcement::None);
        let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &changed, previous: &previous, now };
        let incremental = engine.update_client(&inputs, 1, &before).unwrap();
        let full = reconcile(&inputs);
        assert_eq!(incremental.deployments, full.deployments);
        assert_eq!(incremental.waivers, full.waivers);
        assert_eq!(full.deployments["nov-servers"].machines.waived, 2);
    }
}
