//! Deployment timing: a deployment's settings merged over its template, its available
//! time and deadline, and where it stands at `now`.

use jiff::Timestamp;

use crate::resources::{DeploymentSettings, UpdateDeploymentSpec};
use crate::time::add;

/// The deployment's settings with the template's filling the gaps.
pub fn effective_settings(spec: &UpdateDeploymentSpec, template: Option<DeploymentSettings>) -> DeploymentSettings {
    let own = spec.settings();
    let Some(t) = template else { return own };
    DeploymentSettings {
        collection: own.collection.clone().or_else(|| t.collection.clone()),
        available_after: own.available_after.or(t.available_after),
        deadline_after: own.deadline_after.or(t.deadline_after),
        mandatory: own.mandatory.or(t.mandatory),
        suppress_restart: own.suppress_restart.or(t.suppress_restart),
        honor_maintenance_windows_at_deadline: own
            .honor_maintenance_windows_at_deadline
            .or(t.honor_maintenance_windows_at_deadline),
        state_message_detail: own.state_message_detail.or(t.state_message_detail),
    }
}

/// When a deployment becomes available and when it is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub available: Timestamp,
    /// Mandatory deployments only.
    pub deadline: Option<Timestamp>,
}

/// Where a deployment stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Before the available time: clients get nothing yet.
    Pending,
    /// Available; mandatory updates install in maintenance windows.
    Available,
    /// Past the deadline: mandatory updates install now (outside windows unless the
    /// deployment honours windows at the deadline).
    PastDeadline,
}

impl Timing {
    pub fn of(spec: &UpdateDeploymentSpec, settings: &DeploymentSettings) -> Self {
        let available = add(spec.start_time, settings.available_after.unwrap_or_default().signed());
        let deadline = if settings.mandatory.unwrap_or(true) {
            spec.deadline.or_else(|| settings.deadline_after.map(|d| add(spec.start_time, d.signed())))
        } else {
            None
        };
        Timing { available, deadline }
    }

    pub fn stage(&self, now: Timestamp) -> Stage {
        match self.deadline {
            _ if now < self.available => Stage::Pending,
            Some(d) if now >= d => Stage::PastDeadline,
            _ => Stage::Available,
        }
    }

    /// The timing of a phase that started at `started`: the same availability-to-deadline
    /// span, counted from the phase start.
    pub fn shifted_to(&self, started: Timestamp) -> Timing {
        let available = started.max(self.available);
        let deadline = self.deadline.map(|d| add(available, d.duration_since(self.available)));
        Timing { available, deadline }
    }

    /// The next moment the stage changes, if any.
    pub fn next_change(&self, now: Timestamp) -> Option<Timestamp> {
        [Some(self.available), self.deadline].into_iter().flatten().filter(|t| *t > now).min()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::time::Duration;

    fn spec(start: &str) -> UpdateDeploymentSpec {
        UpdateDeploymentSpec::new("l", start.parse().unwrap())
    }

    #[test]
    fn o_tmpl_deployment_fields_override_the_template() {
        let mut s = spec("2026-12-08T18:00:00Z");
        s.collection = Some("pilot".into());
        let t = DeploymentSettings {
            collection: Some("servers".into()),
            deadline_after: Some(Duration::from_days(7)),
            mandatory: Some(false),
            ..Default::default()
        };
        let e = effective_settings(&s, Some(t));
        assert_eq!(e.collection.as_deref(), Some("pilot"));
        assert_eq!(e.deadline_after, Some(Duration::from_days(7)));
        assert_eq!(e.mandatory, Some(false));
    }

    #[test]
    fn o_dep_stages_follow_available_time_and_deadline() {
        let mut s = spec("2026-12-08T18:00:00Z");
        s.available_after = Some(Duration::from_hours(2));
        s.deadline_after = Some(Duration::from_days(7));
        let t = Timing::of(&s, &s.settings());
        assert_eq!(t.available, "2026-12-08T20:00:00Z".parse().unwrap());
        assert_eq!(t.deadline, Some("2026-12-15T18:00:00Z".parse().unwrap()));
        assert_eq!(t.stage("2026-12-08T19:59:59Z".parse().unwrap()), Stage::Pending);
        assert_eq!(t.stage("2026-12-08T20:00:00Z".parse().unwrap()), Stage::Available);
        assert_eq!(t.stage("2026-12-15T18:00:00Z".parse().unwrap()), Stage::PastDeadline);
        // Explicit deadline wins over the offset.
        s.deadline = Some("2026-12-10T00:00:00Z".parse().unwrap());
        assert_eq!(Timing::of(&s, &s.settings()).deadline, s.deadline);
    }

    #[test]
    fn d4_optional_deployments_have_no_deadline() {
        let mut s = spec("2026-12-08T18:00:00Z");
        s.mandatory = Some(false);
        s.deadline_after = Some(Duration::from_days(7));
        let t = Timing::of(&s, &s.settings());
        assert_eq!(t.deadline, None);
        assert_eq!(t.stage("2030-01-01T00:00:00Z".parse().unwrap()), Stage::Available);
    }
}
