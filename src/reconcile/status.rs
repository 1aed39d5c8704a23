//! Statuses from the tally, one step per kind: collections (members, next window), update
//! lists (fleet counts per update), deployments (rollout, counts, conditions, events),
//! waivers (in force or expired) and packages (content files).

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};

use super::prepare::{Prepared, PreparedDeployment};
use super::resolve::ResolvedList;
use super::tally::{Acc, Layout, Machines, add_counts, counts};
use super::timing::Stage;
use super::{Event, Inputs, Outcome, phases, windows};
use crate::resources::*;

/// Reads the tally and writes statuses. Each step also adds to `horizon` the moments
/// its statuses stop being exact without new inputs.
pub(super) struct Statuses<'a> {
    pub prepared: &'a Prepared,
    pub layout: &'a Layout,
    pub acc: &'a Acc,
    pub inputs: &'a Inputs<'a>,
}

/// Per deployment (prepared order), what the client policies need from its rollout.
#[derive(Default)]
pub(super) struct Rollouts {
    /// Slots that receive the deployment now (0 before it is available).
    pub active: Vec<usize>,
    pub halted: Vec<bool>,
}

/// A deployment's counts over its active slots.
struct DeploymentCounts {
    machines: Machines,
    /// Required (machine, update) pairs a waiver keeps out.
    waived_pairs: i64,
    /// Summed over the deployed updates.
    updates: StateCounts,
}

impl Statuses<'_> {
    /// Collections: members and next window.
    pub fn collections(&self, out: &mut Outcome, horizon: &mut Vec<Timestamp>) {
        let now = self.inputs.now;
        let collections = &self.prepared.collections;
        for (ci, name) in collections.names.iter().enumerate() {
            let next = windows::next_window(&collections.spec(ci).maintenance_windows, now, SignedDuration::ZERO);
            if let Some(w) = next {
                horizon.push(if w.start > now { w.start } else { w.end });
            }
            let members = self.acc.collection_members[ci].max(0) as u64;
            out.collections.insert(
                name.clone(),
                CollectionStatus {
                    member_count: members,
                    next_window: next.map(|w| w.start),
                    next_window_end: next.map(|w| w.end),
                    conditions: vec![Condition::new("Ready", true, "Reconciled", format!("{members} members"), now)],
                },
            );
        }
    }

    /// Update lists: per-update fleet counts (P1).
    pub fn update_lists(&self, out: &mut Outcome) {
        for (name, resolved) in &self.prepared.lists {
            out.update_lists.insert(name.clone(), self.update_list(resolved));
        }
    }

    fn update_list(&self, resolved: &ResolvedList) -> UpdateListStatus {
        let (acc, catalog) = (self.acc, self.inputs.catalog);
        let fleet_unknown = acc.fleet_clients - acc.fleet_valid_by_version.values().sum::<i64>();
        let mut status = UpdateListStatus { catalog_version: catalog.version, ..Default::default() };
        for &i in &resolved.updates {
            let u = &catalog.updates[i as usize];
            let since = catalog.since_version[i as usize];
            let c =
                counts(acc.fleet_clients, fleet_unknown, &acc.fleet_valid_by_version, since, acc.fleet_upd[i as usize]);
            add_counts(&mut status.totals, &c);
            status.updates.push(UpdateCounts { id: u.id.clone(), kb: u.kb.clone(), title: u.title.clone(), counts: c });
        }
        status.update_count = status.updates.len() as u64;
        status.excluded = resolved.excluded.clone();
        let msg = if resolved.excluded.is_empty() {
            format!("{} updates; {} required installations", status.update_count, status.totals.required)
        } else {
            format!(
                "{} updates; {} left out: {}",
                status.update_count,
                resolved.excluded.len(),
                resolved.excluded.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ")
            )
        };
        status.conditions = vec![Condition::new("Ready", true, "Resolved", msg, self.inputs.now)];
        status
    }

    /// Deployments: phases, timing, counts, conditions and events.
    pub fn deployments(&self, out: &mut Outcome, horizon: &mut Vec<Timestamp>) -> Rollouts {
        let mut rollouts = Rollouts::default();
        for (di, d) in self.prepared.deployments.iter().enumerate() {
            let (active, halted) = self.deployment(di, d, out, horizon);
            rollouts.active.push(active);
            rollouts.halted.push(halted);
        }
        rollouts
    }

    /// One deployment; returns its active slots and whether its rollout is halted.
    fn deployment(
        &self,
        di: usize,
        d: &PreparedDeployment,
        out: &mut Outcome,
        horizon: &mut Vec<Timestamp>,
    ) -> (usize, bool) {
        let now = self.inputs.now;
        let spec = &self.inputs.desired.deployments[&d.name].spec;
        let prev = self.inputs.previous.deployments.get(&d.name);
        let rollout = self.rollout(di, d, spec, prev);
        horizon.extend(rollout.next_change);
        horizon.extend(d.timing.next_change(now));
        let stage = d.timing.stage(now);
        let active = if stage == Stage::Pending { 0 } else { rollout.active };
        let counted = self.deployment_counts(di, d, active);
        let (pct, conditions) = self.deployment_conditions(d, spec, prev, rollout.halted, &counted.machines);
        out.events.extend(warning_events(d, prev, now));
        let status = UpdateDeploymentStatus {
            phase: phase_name(rollout.halted, stage).to_string(),
            rollout_phase: (!spec.phases.is_empty() && active > 0).then(|| spec.phases[active - 1].name.clone()),
            phases: rollout.phases,
            available_time: Some(d.timing.available),
            deadline: d.timing.deadline,
            targeted: counted.machines.targeted.max(0) as u64,
            machines: machine_counts(&counted.machines),
            waived_pairs: counted.waived_pairs.max(0) as u64,
            updates: counted.updates,
            compliance_percent: pct,
            update_count: d.updates.len() as u64,
            next_maintenance_window: self.next_window(di, d, active),
            last_applied_revision: Some(self.inputs.desired.revision.clone()),
            conditions,
        };
        out.events.extend(events_for(&d.name, prev, &status, now));
        out.deployments.insert(d.name.clone(), status);
        (active, rollout.halted)
    }

    /// Advance the rollout from the slot counts and the previous phases.
    fn rollout(
        &self,
        di: usize,
        d: &PreparedDeployment,
        spec: &UpdateDeploymentSpec,
        prev: Option<&UpdateDeploymentStatus>,
    ) -> phases::Rollout {
        let (acc, base) = (self.acc, self.layout.bases[di]);
        let slot_counts = &acc.slot_counts[base.slot..base.slot + d.slots.len()];
        let bucket_failed = |k: usize| -> (i64, i64) {
            let mut m = Machines::default();
            (0..k).for_each(|b| m.add(&acc.bucket_machines[base.bucket + b]));
            (m.failed, m.targeted)
        };
        let previous = prev.map(|p| p.phases.as_slice()).unwrap_or(&[]);
        phases::advance(spec, &d.timing, previous, slot_counts, &bucket_failed, self.inputs.now)
    }

    /// Machines and per-update counts over the first `active` slots.
    fn deployment_counts(&self, di: usize, d: &PreparedDeployment, active: usize) -> DeploymentCounts {
        let (acc, base) = (self.acc, self.layout.bases[di]);
        let mut m = Machines::default();
        let mut waived_pairs = 0i64;
        let mut per_update = vec![[0i64; 2]; d.updates.len()];
        let mut unknown_clients = 0;
        let mut valid = BTreeMap::new();
        for b in 0..active {
            let bucket = base.bucket + b;
            m.add(&acc.bucket_machines[bucket]);
            waived_pairs += acc.bucket_waived_pairs[bucket];
            let scanned: i64 = acc.bucket_valid_by_version[bucket].values().sum();
            unknown_clients += acc.bucket_machines[bucket].targeted - scanned;
            for (v, n) in &acc.bucket_valid_by_version[bucket] {
                *valid.entry(*v).or_insert(0) += n;
            }
            for (p, pu) in per_update.iter_mut().enumerate() {
                let c = acc.bucket_upd[base.upd + b * d.updates.len() + p];
                pu[0] += c[0];
                pu[1] += c[1];
            }
        }
        let mut updates = StateCounts::default();
        for (p, &i) in d.updates.iter().enumerate() {
            let since = self.inputs.catalog.since_version[i as usize];
            add_counts(&mut updates, &counts(m.targeted, unknown_clients, &valid, since, per_update[p]));
        }
        // A waived pair was counted NotRequired by subtraction; it is neither.
        updates.not_required = updates.not_required.saturating_sub(waived_pairs.max(0) as u64);
        DeploymentCounts { machines: m, waived_pairs, updates }
    }

    /// The next window that fits the longest run time, over the windows of every
    /// collection a targeted machine is in (before availability: of the machines the
    /// first phase will target).
    fn next_window(&self, di: usize, d: &PreparedDeployment, active: usize) -> Option<Timestamp> {
        let (collections, bucket) = (&self.prepared.collections, self.layout.bases[di].bucket);
        let members = |b: usize, ci: usize| self.acc.bucket_window_members[(bucket + b) * collections.len() + ci];
        let target_windows: Vec<MaintenanceWindow> = self
            .layout
            .windowed
            .iter()
            .filter(|&&ci| (0..active.max(1)).any(|b| members(b, ci) > 0))
            .flat_map(|&ci| collections.spec(ci).maintenance_windows.iter().cloned())
            .collect();
        windows::next_window(&target_windows, self.inputs.now, d.max_run_time).map(|w| w.start)
    }

    /// Ready (or halted / list not found), Superseded when the list warns, with
    /// transition times carried from the previous status; and the compliance percentage.
    fn deployment_conditions(
        &self,
        d: &PreparedDeployment,
        spec: &UpdateDeploymentSpec,
        prev: Option<&UpdateDeploymentStatus>,
        halted: bool,
        m: &Machines,
    ) -> (f64, Vec<Condition>) {
        let now = self.inputs.now;
        let (pct, summary) = compliance_summary(m);
        let mut conditions = if halted {
            halted_conditions(&summary, now)
        } else if d.list.is_none() {
            let message = format!("updateList {:?} not found", spec.update_list);
            vec![Condition::new("Ready", false, "UpdateListNotFound", message, now)]
        } else {
            vec![Condition::new("Ready", true, "Reconciled", summary, now)]
        };
        if !d.warnings.is_empty() {
            let superseded = d.warnings.iter().any(|w| w.0 == "UpdateSuperseded");
            let reason = if superseded { "UpdateSuperseded" } else { "UpdateExpired" };
            let message = d.warnings.iter().map(|w| w.1.as_str()).collect::<Vec<_>>().join("; ");
            conditions.push(Condition::new("Superseded", true, reason, message, now));
        }
        if let Some(p) = prev {
            conditions = conditions.into_iter().map(|c| c.carry_transition(&p.conditions)).collect();
        }
        (pct, conditions)
    }

    /// Waivers: in force or expired, what they cover, an event when one ended.
    pub fn waivers(&self, out: &mut Outcome, horizon: &mut Vec<Timestamp>) {
        let waivers = &self.layout.waivers;
        if let Some(t) = waivers.next_expiry() {
            horizon.push(t);
        }
        let positions: HashMap<&str, usize> = waivers.names().enumerate().map(|(i, n)| (n, i)).collect();
        for (name, w) in &self.inputs.desired.waivers {
            let status = match positions.get(name.as_str()) {
                Some(&i) => self.active_waiver(i, &w.spec),
                None => {
                    let was_active = self.inputs.previous.waivers.get(name).is_some_and(|p| p.state == "Active");
                    if was_active {
                        out.events.push(crate::governance::waivers::expired_event(name, &w.spec));
                    }
                    expired_waiver(&w.spec, self.inputs.now)
                }
            };
            out.waivers.insert(name.clone(), status);
        }
    }

    /// The status of the waiver in force at position `i`.
    fn active_waiver(&self, i: usize, spec: &WaiverSpec) -> WaiverStatus {
        let [machines, pairs] = self.acc.waiver_counts[i];
        let message = format!("in force until {}: {} required pair(s) waived", spec.expires, pairs.max(0));
        WaiverStatus {
            state: "Active".into(),
            updates: self.layout.waivers.covered_ids(i, self.inputs.catalog),
            machines: machines.max(0) as u64,
            waived_pairs: pairs.max(0) as u64,
            conditions: vec![Condition::new("Ready", true, "Active", message, self.inputs.now)],
        }
    }

    /// Packages: content files of their updates.
    pub fn packages(&self, out: &mut Outcome) {
        for (name, p) in &self.inputs.desired.packages {
            out.packages.insert(name.clone(), self.package(&p.spec));
        }
    }

    fn package(&self, spec: &DeploymentPackageSpec) -> DeploymentPackageStatus {
        let catalog = self.inputs.catalog;
        let mut idx: Vec<u32> = spec.updates.iter().flat_map(|u| catalog.find(u)).collect();
        for l in &spec.update_lists {
            if let Some((_, r)) = self.prepared.lists.iter().find(|(n, _)| n == l) {
                idx.extend(&r.updates);
            }
        }
        idx.sort_unstable();
        idx.dedup();
        let files: Vec<(u64, &str)> = idx
            .iter()
            .flat_map(|&i| catalog.updates[i as usize].files.iter().map(|f| (f.size, f.sha256.as_str())))
            .chain(spec.files.iter().map(|f| (f.size, f.sha256.as_str())))
            .collect();
        let bytes = files.iter().map(|f| f.0).sum();
        let message = format!("{} files, {bytes} bytes for {} updates", files.len(), idx.len());
        DeploymentPackageStatus {
            files: files.len() as u64,
            verified_files: 0,
            bytes,
            conditions: vec![Condition::new("Ready", true, "Resolved", message, self.inputs.now)],
        }
    }
}

fn phase_name(halted: bool, stage: Stage) -> &'static str {
    match (halted, stage) {
        (true, _) => "Halted",
        (false, Stage::Pending) => "Pending",
        (false, Stage::Available) => "Available",
        (false, Stage::PastDeadline) => "PastDeadline",
    }
}

fn machine_counts(m: &Machines) -> MachineCounts {
    MachineCounts {
        compliant: m.compliant.max(0) as u64,
        required: m.required.max(0) as u64,
        unknown: m.unknown.max(0) as u64,
        failed: m.failed.max(0) as u64,
        pending_reboot: m.pending_reboot.max(0) as u64,
        waived: m.waived.max(0) as u64,
    }
}

/// The compliance percentage (waived machines are out of the denominator) and its summary.
fn compliance_summary(m: &Machines) -> (f64, String) {
    let counted = m.targeted - m.waived;
    let pct = if counted > 0 { (m.compliant as f64 * 1000.0 / counted as f64).round() / 10.0 } else { 0.0 };
    let waived_text = if m.waived > 0 { format!(", {} waived", m.waived) } else { String::new() };
    let summary = format!(
        "{pct}% compliant ({}/{counted} machines), {} required, {} unknown, {} failed{waived_text}",
        m.compliant, m.required, m.unknown, m.failed
    );
    (pct, summary)
}

fn halted_conditions(summary: &str, now: Timestamp) -> Vec<Condition> {
    vec![
        Condition::new(
            "Ready",
            false,
            "RolloutHalted",
            format!(
                "failure budget exceeded: {summary}; fix the failures, then raise the budget or remove failed machines from the target"
            ),
            now,
        ),
        Condition::new("Stalled", true, "RolloutHalted", "failure budget exceeded; waiting for a change", now),
    ]
}

fn expired_waiver(spec: &WaiverSpec, now: Timestamp) -> WaiverStatus {
    WaiverStatus {
        state: "Expired".into(),
        conditions: vec![Condition::new(
            "Ready",
            false,
            "WaiverExpired",
            format!("expired at {}; renew it in a pull request or install the updates", spec.expires),
            now,
        )],
        ..Default::default()
    }
}

/// An event for each warning the previous status did not carry.
fn warning_events(d: &PreparedDeployment, prev: Option<&UpdateDeploymentStatus>, now: Timestamp) -> Vec<Event> {
    let before = prev
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Superseded"))
        .map(|c| c.message.as_str())
        .unwrap_or("");
    d.warnings
        .iter()
        .filter(|(_, message)| !before.contains(message.as_str()))
        .map(|(reason, message)| Event {
            kind: "UpdateDeployment".into(),
            name: d.name.clone(),
            reason: reason.to_string(),
            message: message.clone(),
            time: now,
            severity: super::Severity::Warning,
        })
        .collect()
}

/// Events for a deployment's phase changes since the previous status.
fn events_for(
    name: &str,
    prev: Option<&UpdateDeploymentStatus>,
    now_status: &UpdateDeploymentStatus,
    now: Timestamp,
) -> Vec<Event> {
    let mut out = Vec::new();
    let ev = |reason: &str, message: String| Event {
        kind: "UpdateDeployment".into(),
        name: name.into(),
        reason: reason.into(),
        message,
        time: now,
        severity: if reason == "RolloutHalted" { super::Severity::Warning } else { super::Severity::Normal },
    };
    let before = prev.map(|p| p.phase.as_str()).unwrap_or("");
    if before != now_status.phase {
        match now_status.phase.as_str() {
            "Available" => {
                out.push(ev("DeploymentActivated", format!("updates available to {} machines", now_status.targeted)))
            }
            "PastDeadline" => out.push(ev("DeadlinePassed", "deadline reached: mandatory updates install now".into())),
            "Halted" => out.push(ev(
                "RolloutHalted",
                format!("failure budget exceeded: {} machines failed", now_status.machines.failed),
            )),
            _ => {}
        }
    }
    for p in &now_status.phases {
        let was = prev.and_then(|s| s.phases.iter().find(|q| q.name == p.name)).map(|q| q.state.as_str());
        if p.state == "Active" && was != Some("Active") && was != Some("Succeeded") {
            out.push(ev("PhaseAdvanced", format!("phase {} started", p.name)));
        }
    }
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::reconcile::Severity;

    #[test]
    fn a_halted_rollout_is_a_warning_event_and_an_activation_a_normal_one() {
        let now: Timestamp = "2026-11-20T12:00:00Z".parse().unwrap();
        let status = |phase: &str| UpdateDeploymentStatus { phase: phase.into(), ..Default::default() };
        let severity = |from: &str, to: &str, reason: &str| {
            events_for("d", Some(&status(from)), &status(to), now)
                .into_iter()
                .find(|e| e.reason == reason)
                .map(|e| e.severity)
        };
        assert_eq!(severity("Available", "Halted", "RolloutHalted"), Some(Severity::Warning));
        assert_eq!(severity("Pending", "Available", "DeploymentActivated"), Some(Severity::Normal));
    }
}
