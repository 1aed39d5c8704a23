//! Phased rollouts: phase 1 starts at the available time; each next phase starts once the
//! previous one met its success criteria and the next phase's delay passed. A failure
//! budget halts the rollout: no further phase starts. Start and success times carry over
//! from the previous status, so the outcome is a pure function of its inputs.

use jiff::Timestamp;

use super::timing::Timing;
use crate::resources::{PhaseStatus, UpdateDeploymentSpec};
use crate::time::add;

/// Where a rollout stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rollout {
    pub phases: Vec<PhaseStatus>,
    /// Number of targeting slots that are active (phases started; 1 when not phased).
    pub active: usize,
    pub halted: bool,
    /// When the next phase may start without any new compliance.
    pub next_change: Option<Timestamp>,
}

/// Advance the rollout. `slots[i]` = [members, compliant members] of phase i's
/// collection; `failed(k)` = (failed, targeted) machines over the first k phases.
pub fn advance(
    spec: &UpdateDeploymentSpec,
    timing: &Timing,
    previous: &[PhaseStatus],
    slots: &[[i64; 2]],
    failed: &dyn Fn(usize) -> (i64, i64),
    now: Timestamp,
) -> Rollout {
    let over_budget = |k: usize| -> bool {
        let Some(b) = &spec.failure_budget else { return false };
        let (f, t) = failed(k);
        b.max_failed.is_some_and(|m| f > m as i64)
            || b.max_failed_percent.is_some_and(|p| t > 0 && f as f64 * 100.0 / t as f64 > p)
    };
    let available = now >= timing.available;
    if spec.phases.is_empty() {
        // Nothing is halted before it starts.
        return Rollout { phases: vec![], active: 1, halted: available && over_budget(1), next_change: None };
    }
    // Times from before the available time belong to an earlier schedule (the start
    // time was moved later): they do not count.
    let prev = |name: &str| {
        previous.iter().find(|p| p.name == name).map(|p| PhaseStatus {
            started_time: p.started_time.filter(|t| *t >= timing.available),
            succeeded_time: p.succeeded_time.filter(|t| *t >= timing.available),
            ..p.clone()
        })
    };
    let mut phases: Vec<PhaseStatus> = spec
        .phases
        .iter()
        .enumerate()
        .map(|(i, p)| PhaseStatus {
            name: p.name.clone(),
            state: "Pending".into(),
            started_time: prev(&p.name).and_then(|q| q.started_time),
            succeeded_time: prev(&p.name).and_then(|q| q.succeeded_time),
            targeted: slots[i][0].max(0) as u64,
            compliant: slots[i][1].max(0) as u64,
        })
        .collect();
    if !available {
        return Rollout { phases, active: 0, halted: false, next_change: None };
    }
    if phases[0].started_time.is_none() {
        phases[0].started_time = Some(timing.available);
    }
    let mut active = phases.iter().take_while(|p| p.started_time.is_some()).count();
    let halted = over_budget(active);
    let mut next_change = None;
    let mut i = 0;
    while i < active {
        let met = criteria_met(spec, i, slots[i]);
        if phases[i].succeeded_time.is_none() && met {
            phases[i].succeeded_time = Some(now);
        }
        phases[i].state = if phases[i].succeeded_time.is_some() { "Succeeded" } else { "Active" }.into();
        if i + 1 == active
            && i + 1 < phases.len()
            && !halted
            && let Some(done) = phases[i].succeeded_time
        {
            let start = add(done, spec.phases[i + 1].delay.unwrap_or_default().signed());
            if now >= start {
                phases[i + 1].started_time = Some(start);
                active += 1;
            } else {
                next_change = Some(start);
            }
        }
        i += 1;
    }
    Rollout { phases, active, halted, next_change }
}

fn criteria_met(spec: &UpdateDeploymentSpec, i: usize, [members, compliant]: [i64; 2]) -> bool {
    if members <= 0 {
        return false; // an empty phase proves nothing: the rollout waits
    }
    match &spec.phases[i].success_criteria {
        Some(c) if c.compliant_count.is_some() => compliant >= c.compliant_count.unwrap_or(0) as i64,
        Some(c) => compliant as f64 * 100.0 / members as f64 >= c.compliant_percent.unwrap_or(100.0),
        None => compliant >= members,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::resources::{FailureBudget, Phase, SuccessCriteria};
    use crate::time::Duration;

    fn spec() -> UpdateDeploymentSpec {
        UpdateDeploymentSpec {
            deadline: Some("2026-12-08T00:00:00Z".parse().unwrap()),
            phases: vec![
                Phase {
                    name: "pilot".into(),
                    collection: "pilot".into(),
                    success_criteria: Some(SuccessCriteria { compliant_percent: Some(90.0), compliant_count: None }),
                    delay: None,
                },
                Phase {
                    name: "broad".into(),
                    collection: "all".into(),
                    success_criteria: None,
                    delay: Some(Duration::from_days(1)),
                },
            ],
            failure_budget: Some(FailureBudget { max_failed: Some(5), max_failed_percent: None }),
            ..UpdateDeploymentSpec::new("l", "2026-12-01T00:00:00Z".parse().unwrap())
        }
    }
    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn timing(s: &UpdateDeploymentSpec) -> Timing {
        Timing::of(s, &s.settings())
    }
    const NO_FAILURES: &dyn Fn(usize) -> (i64, i64) = &|_| (0, 100);

    #[test]
    fn o_dep_phase_one_starts_at_the_available_time_and_waits_for_its_criteria() {
        let s = spec();
        let r = advance(&s, &timing(&s), &[], &[[10, 8], [100, 0]], NO_FAILURES, at("2026-12-02T00:00:00Z"));
        assert_eq!(r.active, 1);
        assert_eq!(r.phases[0].state, "Active");
        assert_eq!(r.phases[0].started_time, Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(r.phases[1].state, "Pending");
    }

    #[test]
    fn o_dep_the_next_phase_starts_after_success_and_its_delay() {
        let s = spec();
        let t0 = at("2026-12-02T00:00:00Z");
        let r = advance(&s, &timing(&s), &[], &[[10, 9], [100, 0]], NO_FAILURES, t0);
        assert_eq!(r.phases[0].succeeded_time, Some(t0), "90 % met");
        assert_eq!(r.active, 1, "broad waits one day");
        assert_eq!(r.next_change, Some(at("2026-12-03T00:00:00Z")));
        // A day later, even if the pilot dipped below 90 %, broad starts at success + delay.
        let r2 = advance(&s, &timing(&s), &r.phases, &[[10, 7], [100, 0]], NO_FAILURES, at("2026-12-03T00:00:00Z"));
        assert_eq!(r2.active, 2);
        assert_eq!(r2.phases[1].started_time, Some(at("2026-12-03T00:00:00Z")));
        assert_eq!(r2.phases[0].state, "Succeeded");
    }

    #[test]
    fn o_dep_a_failure_budget_halts_the_rollout() {
        let s = spec();
        let six_failed: &dyn Fn(usize) -> (i64, i64) = &|_| (6, 10);
        let r = advance(&s, &timing(&s), &[], &[[10, 10], [100, 0]], six_failed, at("2026-12-05T00:00:00Z"));
        assert!(r.halted);
        assert_eq!(r.active, 1, "broad never starts");
        let mut pct = spec();
        pct.failure_budget = Some(FailureBudget { max_failed: None, max_failed_percent: Some(50.0) });
        let r = advance(&pct, &timing(&pct), &[], &[[10, 10], [100, 0]], six_failed, at("2026-12-05T00:00:00Z"));
        assert!(r.halted, "60 % > 50 %");
    }

    #[test]
    fn o_dep_an_empty_phase_does_not_succeed() {
        let s = spec();
        let r = advance(&s, &timing(&s), &[], &[[0, 0], [100, 0]], NO_FAILURES, at("2026-12-05T00:00:00Z"));
        assert_eq!(r.phases[0].succeeded_time, None);
        assert_eq!(r.active, 1);
    }
}

#[cfg(test)]
mod moved_start {
    use super::*;

    #[test]
    fn o_dep_moving_the_start_later_resets_the_rollout_and_nothing_halts_before_it() {
        let spec: UpdateDeploymentSpec = serde_saphyr::from_str(
            "updateList: l\nstartTime: 2027-01-10T00:00:00Z\ndeadline: 2027-01-20T00:00:00Z\n\
             phases:\n- {name: pilot, collection: p}\n- {name: broad, collection: b}\nfailureBudget: {maxFailed: 0}\n",
        )
        .unwrap();
        let timing = Timing::of(&spec, &spec.settings());
        // Carried from the schedule before the start time moved.
        let previous = vec![
            PhaseStatus {
                name: "pilot".into(),
                state: "Succeeded".into(),
                started_time: Some("2026-12-01T00:00:00Z".parse().unwrap()),
                succeeded_time: Some("2026-12-05T00:00:00Z".parse().unwrap()),
                targeted: 10,
                compliant: 10,
            },
            PhaseStatus {
                name: "broad".into(),
                state: "Active".into(),
                started_time: Some("2026-12-06T00:00:00Z".parse().unwrap()),
                ..Default::default()
            },
        ];
        let failed: &dyn Fn(usize) -> (i64, i64) = &|_| (3, 10);
        let r =
            advance(&spec, &timing, &previous, &[[10, 10], [100, 0]], failed, "2026-12-20T00:00:00Z".parse().unwrap());
        assert_eq!((r.active, r.halted), (0, false));
        assert!(r.phases.iter().all(|p| p.state == "Pending" && p.started_time.is_none()));
        // At the new start the pilot starts afresh; the old broad start does not count.
        let r = advance(
            &spec,
            &timing,
            &previous,
            &[[10, 0], [100, 0]],
            &|_| (0, 10),
            "2027-01-10T00:00:00Z".parse().unwrap(),
        );
        assert_eq!(r.active, 1);
        assert_eq!(r.phases[0].started_time, Some("2027-01-10T00:00:00Z".parse().unwrap()));
    }
}
