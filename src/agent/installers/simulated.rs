//! A simulated installer: takes a configurable time, fails at a configurable rate, and
//! needs a restart for updates that say so (or at a configurable rate). Deterministic for
//! a seed, so simulations repeat.

use jiff::SignedDuration;

use super::{InstallOutcome, Installer};
use crate::catalog::Update;

#[derive(Clone, Debug)]
pub struct Simulated {
    /// How long an installation takes when the update gives no max run time.
    pub duration: SignedDuration,
    /// Share of installations that fail (0–1).
    pub failure_rate: f64,
    /// Share of installations that need a restart although the update does not say so.
    pub extra_reboot_rate: f64,
    rng: fastrand::Rng,
}

impl Simulated {
    pub fn new(seed: u64, duration: SignedDuration, failure_rate: f64, extra_reboot_rate: f64) -> Self {
        Simulated { duration, failure_rate, extra_reboot_rate, rng: fastrand::Rng::with_seed(seed) }
    }
}

impl Installer for Simulated {
    fn install(&mut self, update: &Update, _files: &[std::path::PathBuf]) -> InstallOutcome {
        // Somewhere between a tenth of the time and the update's max run time.
        let max = update.max_run_time.signed().min(self.duration.max(SignedDuration::from_secs(1)) * 10);
        let took = SignedDuration::from_secs_f64(max.as_secs_f64() * (0.1 + 0.9 * self.rng.f64()));
        if self.rng.f64() < self.failure_rate {
            return InstallOutcome::Failed {
                error: format!("0x80240022: simulated failure installing {}", update.id),
                took,
            };
        }
        let reboot_required = update.reboot_required || self.rng.f64() < self.extra_reboot_rate;
        InstallOutcome::Installed { reboot_required, took }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;

    #[test]
    fn t1_r3_simulated_installs_fail_and_need_restarts_at_their_rates() {
        let mut u = update("KB1-a", "P", "2026-11-11");
        u.max_run_time = crate::time::Duration::from_mins(30);
        let mut inst = Simulated::new(7, SignedDuration::from_mins(5), 0.1, 0.0);
        let outcomes: Vec<InstallOutcome> = (0..2000).map(|_| inst.install(&u, &[])).collect();
        let failed = outcomes.iter().filter(|o| matches!(o, InstallOutcome::Failed { .. })).count();
        assert!((150..250).contains(&failed), "{failed} of 2000 at a 10 % rate");
        for o in &outcomes {
            let (InstallOutcome::Installed { took, .. } | InstallOutcome::Failed { took, .. }) = o;
            assert!(*took >= SignedDuration::from_mins(3) && *took <= SignedDuration::from_mins(30), "{took:?}");
        }
        u.reboot_required = true;
        assert!(matches!(
            Simulated::new(1, SignedDuration::from_mins(5), 0.0, 0.0).install(&u, &[]),
            InstallOutcome::Installed { reboot_required: true, .. }
        ));
        // The same seed gives the same outcomes.
        let again: Vec<InstallOutcome> = {
            let mut i = Simulated::new(7, SignedDuration::from_mins(5), 0.1, 0.0);
            let mut u2 = update("KB1-a", "P", "2026-11-11");
            u2.max_run_time = crate::time::Duration::from_mins(30);
            (0..2000).map(|_| i.install(&u2, &[])).collect()
        };
        assert_eq!(outcomes, again);
    }
}
