//! Client policies from the statuses: each client gets a signature (the deployment slots
//! that reach it, its client settings, the collections whose windows it gets), and clients
//! with the same signature share one policy document, named by its ETag.

use std::collections::HashMap;
use std::sync::Arc;

use super::policy::{ClientPolicy, DeploymentAssignment};
use super::status::Rollouts;
use super::targeting::member;
use super::{Engine, Inputs, Outcome};
use crate::resources::ClientSettingsSpec;

/// Signature entries that are not deployments: the client settings, and a collection
/// whose maintenance windows the client gets.
const SETTINGS: u32 = u32::MAX;
const WINDOWS_OF: u32 = u32::MAX - 1;

impl Engine {
    /// Every client's policy, from scratch. A signature depends only on the client's
    /// membership row, so it is worked out once per distinct row (clients in the same
    /// collections share it), and the clients per document are summed per slot.
    pub(super) fn assign_policies(&mut self, inputs: &Inputs<'_>, rollouts: &Rollouts, out: &mut Outcome) {
        let clients = inputs.fleet.clients.len();
        self.slot_of.clear();
        self.slot_sigs.clear();
        self.slot_users.clear();
        out.assignments = Vec::with_capacity(clients);
        let mut slot_by_row: HashMap<Vec<u64>, u32> = HashMap::new();
        for i in 0..clients {
            let row = self.membership.row(i);
            let slot = match slot_by_row.get(row) {
                Some(&slot) => slot,
                None => {
                    let row = row.to_vec();
                    let sig = self.signature(&row, &rollouts.active);
                    let slot = self.slot_for(&sig, inputs, out, &rollouts.halted);
                    slot_by_row.insert(row, slot);
                    slot
                }
            };
            self.slot_users[slot as usize] += 1;
            out.assignments.push(slot);
        }
        self.etag_users.clear();
        for (slot, &users) in self.slot_users.iter().enumerate() {
            if users > 0 {
                *self.etag_users.entry(out.policy_etags[slot].clone()).or_default() += users;
            }
        }
    }

    /// The policies of the clients `changed` after a change to them alone (a client past
    /// the known ones joined), keeping every other document; None when the change moved a
    /// rollout (then any client's policy may differ).
    pub(super) fn reassign_policies(
        &mut self,
        inputs: &Inputs<'_>,
        changed: &[usize],
        rollouts: &Rollouts,
        out: &mut Outcome,
    ) -> Option<()> {
        if self.rollout_moved(out, &rollouts.halted) {
            return None;
        }
        // Only these clients' policies can differ; every shared document is unchanged.
        out.policies = std::mem::take(&mut self.outcome.policies);
        out.policy_etags = std::mem::take(&mut self.outcome.policy_etags);
        out.assignments = std::mem::take(&mut self.outcome.assignments);
        for &i in changed {
            let sig = self.signature(self.membership.row(i), &rollouts.active);
            let slot = self.slot_for(&sig, inputs, out, &rollouts.halted);
            self.slot_users[slot as usize] += 1;
            if i == out.assignments.len() {
                *self.etag_users.entry(out.policy_etags[slot as usize].clone()).or_default() += 1;
                out.assignments.push(slot);
                continue;
            }
            let old_slot = out.assignments[i];
            self.slot_users[old_slot as usize] -= 1;
            if self.slot_users[old_slot as usize] == 0 && old_slot != slot {
                self.slot_of.remove(&self.slot_sigs[old_slot as usize]);
            }
            self.move_etag_user(old_slot, slot, out);
            out.assignments[i] = slot;
        }
        Some(())
    }

    /// A rollout halted, resumed or started a phase since the last outcome.
    fn rollout_moved(&self, out: &Outcome, halted: &[bool]) -> bool {
        halted != self.halted
            || out
                .deployments
                .values()
                .zip(self.outcome.deployments.values())
                .any(|(a, b)| a.phases.iter().map(|p| p.started_time).ne(b.phases.iter().map(|p| p.started_time)))
    }

    /// One client moved from `old_slot` to `slot`: a document goes with its last client.
    fn move_etag_user(&mut self, old_slot: u32, slot: u32, out: &mut Outcome) {
        let (old_etag, new_etag) = (&out.policy_etags[old_slot as usize], &out.policy_etags[slot as usize]);
        if old_etag == new_etag {
            return;
        }
        *self.etag_users.entry(new_etag.clone()).or_default() += 1;
        let left = self.etag_users.get_mut(old_etag).expect("every assigned ETag is counted");
        *left -= 1;
        if *left == 0 {
            self.etag_users.remove(old_etag);
            out.policies.remove(old_etag);
        }
    }

    /// What decides the policy of a client with this membership row: the first active slot
    /// of each deployment that targets it, its client settings, and the collections with
    /// windows it is in.
    fn signature(&self, row: &[u64], active_slots: &[usize]) -> Vec<(u32, u32)> {
        let prepared = &self.prepared;
        let mut sig: Vec<(u32, u32)> = Vec::new();
        for (di, d) in prepared.deployments.iter().enumerate() {
            if let Some(first) = d.slots.iter().position(|&c| member(row, c))
                && first < active_slots[di]
            {
                sig.push((di as u32, first as u32));
            }
        }
        sig.push((SETTINGS, self.layout.settings_for(row).map_or(u32::MAX, |s| s as u32)));
        for &ci in &self.layout.windowed {
            if member(row, Some(ci)) {
                sig.push((WINDOWS_OF, ci as u32));
            }
        }
        sig
    }

    /// The policy slot for a signature, creating its document on first use.
    fn slot_for(&mut self, sig: &[(u32, u32)], inputs: &Inputs<'_>, out: &mut Outcome, halted: &[bool]) -> u32 {
        if let Some(&slot) = self.slot_of.get(sig) {
            return slot;
        }
        let policy = self.policy_for(sig, inputs, out, halted);
        let etag = policy.etag();
        out.policies.insert(etag.clone(), Arc::new(policy));
        out.policy_etags.push(etag);
        self.slot_users.push(0);
        self.slot_sigs.push(sig.to_vec());
        let slot = (out.policy_etags.len() - 1) as u32;
        self.slot_of.insert(sig.to_vec(), slot);
        slot
    }

    fn policy_for(&self, sig: &[(u32, u32)], inputs: &Inputs<'_>, out: &Outcome, halted: &[bool]) -> ClientPolicy {
        let (prepared, catalog) = (&self.prepared, inputs.catalog);
        let mut policy = ClientPolicy {
            catalog_version: catalog.version,
            revision: inputs.desired.revision.clone(),
            settings: ClientSettingsSpec::default(),
            maintenance_windows: Vec::new(),
            deployments: Vec::new(),
        };
        for &(a, b) in sig {
            match a {
                SETTINGS if b != u32::MAX => policy.settings = self.layout.settings[b as usize].1.clone(),
                SETTINGS => {}
                WINDOWS_OF => policy
                    .maintenance_windows
                    .extend(prepared.collections.spec(b as usize).maintenance_windows.iter().cloned()),
                _ => policy.deployments.push(self.assignment(a as usize, b as usize, inputs, out, halted[a as usize])),
            }
        }
        policy
    }

    /// Deployment `di` as a client targeted through `slot` receives it.
    fn assignment(
        &self,
        di: usize,
        slot: usize,
        inputs: &Inputs<'_>,
        out: &Outcome,
        halted: bool,
    ) -> DeploymentAssignment {
        let d = &self.prepared.deployments[di];
        let spec = &inputs.desired.deployments[&d.name].spec;
        let timing = match out.deployments[&d.name].phases.get(slot).and_then(|p| p.started_time) {
            Some(started) => d.timing.shifted_to(started),
            None => d.timing,
        };
        DeploymentAssignment {
            name: d.name.clone(),
            phase: spec.phases.get(slot).map(|p| p.name.clone()),
            updates: d.updates.iter().map(|&i| inputs.catalog.updates[i as usize].id.clone()).collect(),
            available_time: timing.available,
            deadline: timing.deadline,
            mandatory: d.settings.mandatory.unwrap_or(true),
            suppress_restart: d.settings.suppress_restart.unwrap_or_default(),
            honor_maintenance_windows_at_deadline: d.settings.honor_maintenance_windows_at_deadline.unwrap_or(false),
            state_message_detail: d.settings.state_message_detail.unwrap_or_default(),
            halted,
        }
    }
}
