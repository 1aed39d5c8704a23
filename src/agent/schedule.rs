//! When the agent scans and how (seed step 2 and Table 2), as pure functions of the
//! agent's state and `now`: who started a scan decides whether it is forced and how the
//! catalog is obtained; forced scans always run, unforced ones are skipped inside the scan
//! TTL; online scans fetch the catalog, offline scans use the cached copy. State messages
//! are cached and sent in batches, except right after an installation.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::time::add;

/// Who started a scan (Table 2, plus the seed's other triggers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trigger {
    /// T2.1: the general scan schedule of the client settings.
    GeneralSchedule,
    /// T2.2: the deployment re-evaluation schedule of the client settings.
    ReevaluationSchedule,
    /// T2.3: a deployment's activation (available) time.
    DeploymentActivation,
    /// T2.4: a deployment's deadline.
    DeploymentDeadline,
    /// T2.5: a user started a re-evaluation on the client.
    UserReevaluation,
    /// T2.6: a user started the evaluation of a deployment on the client.
    UserDeploymentEvaluation,
    /// S2: a policy announced a new catalog version; scheduled at a random time.
    NewCatalog,
    /// D1: a new deployment policy arrived; the client confirms its state at once.
    NewDeploymentPolicy,
    /// D6: an installation finished; the re-scan reports the new state.
    AfterInstall,
}

/// How the catalog for a scan is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogChoice {
    /// Always fetch the catalog from the server.
    Online,
    /// Online only when the server's catalog is newer than the cached one (O2).
    ByCatalogVersion,
    /// Like `ByCatalogVersion`, and an unforced scan inside the TTL is skipped only if it
    /// ran against the current catalog version.
    ByTtlAndCatalogVersion,
}

/// Table 2: whether the scan is forced, and how it gets its catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanKind {
    pub forced: bool,
    pub catalog: CatalogChoice,
}

impl Trigger {
    pub fn kind(self) -> ScanKind {
        use CatalogChoice::*;
        let (forced, catalog) = match self {
            Trigger::GeneralSchedule => (true, Online),
            Trigger::ReevaluationSchedule => (false, ByCatalogVersion),
            Trigger::DeploymentActivation => (false, ByTtlAndCatalogVersion),
            Trigger::DeploymentDeadline => (true, Online),
            Trigger::UserReevaluation => (true, Online),
            Trigger::UserDeploymentEvaluation => (true, ByCatalogVersion),
            // A new catalog must be fetched to be scanned against.
            Trigger::NewCatalog => (true, Online),
            Trigger::NewDeploymentPolicy => (true, ByCatalogVersion),
            Trigger::AfterInstall => (true, ByCatalogVersion),
        };
        ScanKind { forced, catalog }
    }
}

/// What the scanner knows of its own history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanHistory {
    /// When the last scan completed (the TTL counts from here).
    pub last_scan: Option<Timestamp>,
    /// The catalog version of that scan.
    pub last_scan_version: Option<u64>,
    /// The catalog version cached on the client, if any.
    pub cached_version: Option<u64>,
}

/// The decision for one trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Unforced, and the last scan is younger than the TTL (F2).
    Skip { reason: String },
    /// Scan, fetching the catalog first (online) or with the cached copy (offline). For
    /// an online scan, `delta_from` is the cached version a delta can start from.
    Scan { online: bool, delta_from: Option<u64> },
    /// The scan cannot run: it must be online and the server cannot be reached, or there
    /// is no catalog at all. The client reports a failed scan (Unknown, T1.U1).
    Fail { reason: String },
}

/// Decide whether and how to scan. `server_version`: the catalog version the management
/// point announces, or None when it cannot be reached.
pub fn decide(
    trigger: Trigger,
    history: &ScanHistory,
    ttl: SignedDuration,
    server_version: Option<u64>,
    now: Timestamp,
) -> Decision {
    let kind = trigger.kind();
    let young = history.last_scan.is_some_and(|t| now < add(t, ttl));
    if !kind.forced && young {
        let same_catalog = server_version.is_none() || history.last_scan_version >= server_version;
        let skip = match kind.catalog {
            CatalogChoice::ByTtlAndCatalogVersion => same_catalog,
            _ => true,
        };
        if skip {
            return Decision::Skip {
                reason: format!(
                    "unforced {trigger:?} scan: the last scan is younger than the scan TTL ({})",
                    crate::time::Duration(ttl)
                ),
            };
        }
    }
    let newer_on_server = match (server_version, history.cached_version) {
        (Some(s), Some(c)) => s > c,
        (Some(_), None) => true,
        (None, _) => false,
    };
    match (kind.catalog, server_version, history.cached_version) {
        (CatalogChoice::Online, None, _) => {
            Decision::Fail { reason: "an online scan needs the management point, which cannot be reached".into() }
        }
        (CatalogChoice::Online, Some(_), cached) => Decision::Scan { online: true, delta_from: cached },
        (_, _, None) if server_version.is_none() => {
            Decision::Fail { reason: "no cached catalog and the management point cannot be reached".into() }
        }
        _ if newer_on_server => Decision::Scan { online: true, delta_from: history.cached_version },
        _ => Decision::Scan { online: false, delta_from: None },
    }
}

/// What the agent does with a policy announcing `catalog_version` (seed step 2): a new
/// catalog version schedules a scan at a uniformly random moment within the
/// randomisation window (S2), clears the scan history (S3), and points the scanner at
/// the management point the policy came from (S4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogWatch {
    /// The newest catalog version a policy announced.
    pub announced: Option<u64>,
    /// The scan scheduled for it.
    pub scheduled: Option<Timestamp>,
    /// The management point the scanner uses.
    pub scan_server: Option<String>,
}

impl CatalogWatch {
    /// Apply a fetched policy. `random` is uniform in [0, 1) (the caller's RNG, so tests
    /// control it). Returns true when a new catalog was announced.
    pub fn on_policy(
        &mut self,
        history: &mut ScanHistory,
        catalog_version: u64,
        management_point: &str,
        randomization: SignedDuration,
        random: f64,
        now: Timestamp,
    ) -> bool {
        if self.announced.is_some_and(|v| v >= catalog_version) {
            return false;
        }
        self.announced = Some(catalog_version);
        let offset = SignedDuration::from_secs_f64(randomization.as_secs_f64() * random.clamp(0.0, 1.0));
        self.scheduled = Some(add(now, offset));
        history.last_scan = None;
        history.last_scan_version = None;
        self.scan_server = Some(management_point.to_string());
        true
    }

    /// The scheduled new-catalog scan, once its time has come (and forgets it).
    pub fn take_due(&mut self, now: Timestamp) -> Option<Trigger> {
        match self.scheduled {
            Some(at) if at <= now => {
                self.scheduled = None;
                Some(Trigger::NewCatalog)
            }
            _ => None,
        }
    }
}

/// The next policy poll (S1): every poll interval after the last one.
pub fn next_policy_poll(last_poll: Timestamp, interval: SignedDuration) -> Timestamp {
    add(last_poll, interval)
}

/// State messages waiting to be sent (S6). Cached, and sent together once the batch
/// interval has passed since the first was cached — or at once after an installation (D7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spool<M> {
    pub pending: Vec<M>,
    /// When the pending messages are due.
    pub send_at: Option<Timestamp>,
}

impl<M> Default for Spool<M> {
    fn default() -> Self {
        Spool { pending: Vec::new(), send_at: None }
    }
}

impl<M> Spool<M> {
    /// Cache a message; `urgent` (a state after installation) makes the batch due now.
    pub fn push(&mut self, message: M, urgent: bool, batch_interval: SignedDuration, now: Timestamp) {
        self.pending.push(message);
        let due = if urgent { now } else { add(now, batch_interval) };
        self.send_at = Some(self.send_at.map_or(due, |t| t.min(due)));
    }

    /// The messages to send now, if the batch is due.
    pub fn take_due(&mut self, now: Timestamp) -> Option<Vec<M>> {
        match self.send_at {
            Some(t) if t <= now && !self.pending.is_empty() => {
                self.send_at = None;
                Some(std::mem::take(&mut self.pending))
            }
            _ => None,
        }
    }

    /// A batch that could not be delivered goes back in front, due again after the interval.
    pub fn requeue(&mut self, mut batch: Vec<M>, batch_interval: SignedDuration, now: Timestamp) {
        batch.append(&mut self.pending);
        self.pending = batch;
        self.send_at = Some(add(now, batch_interval));
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const TTL: SignedDuration = SignedDuration::from_hours(24);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn scanned(hours_ago: i64, version: u64) -> ScanHistory {
        ScanHistory {
            last_scan: Some(at("2026-11-24T12:00:00Z") - SignedDuration::from_hours(hours_ago)),
            last_scan_version: Some(version),
            cached_version: Some(version),
        }
    }
    const NOW: &str = "2026-11-24T12:00:00Z";

    fn decide_now(t: Trigger, h: &ScanHistory, server: Option<u64>) -> Decision {
        decide(t, h, TTL, server, at(NOW))
    }

    #[test]
    fn table_2_kinds_are_the_seeds() {
        use CatalogChoice::*;
        let table = [
            (Trigger::GeneralSchedule, true, Online),
            (Trigger::ReevaluationSchedule, false, ByCatalogVersion),
            (Trigger::DeploymentActivation, false, ByTtlAndCatalogVersion),
            (Trigger::DeploymentDeadline, true, Online),
            (Trigger::UserReevaluation, true, Online),
            (Trigger::UserDeploymentEvaluation, true, ByCatalogVersion),
        ];
        for (t, forced, catalog) in table {
            assert_eq!(t.kind(), ScanKind { forced, catalog }, "{t:?}");
        }
    }

    #[test]
    fn t2_1_general_schedule_scans_are_forced_and_online() {
        assert_eq!(
            decide_now(Trigger::GeneralSchedule, &scanned(1, 5), Some(5)),
            Decision::Scan { online: true, delta_from: Some(5) }
        );
    }

    #[test]
    fn t2_2_reevaluation_is_unforced_and_by_catalog_version() {
        assert!(matches!(decide_now(Trigger::ReevaluationSchedule, &scanned(1, 5), Some(6)), Decision::Skip { .. }));
        assert_eq!(
            decide_now(Trigger::ReevaluationSchedule, &scanned(30, 5), Some(5)),
            Decision::Scan { online: false, delta_from: None }
        );
        assert_eq!(
            decide_now(Trigger::ReevaluationSchedule, &scanned(30, 5), Some(6)),
            Decision::Scan { online: true, delta_from: Some(5) }
        );
    }

    #[test]
    fn t2_3_activation_is_unforced_by_ttl_and_catalog_version() {
        assert!(matches!(decide_now(Trigger::DeploymentActivation, &scanned(1, 5), Some(5)), Decision::Skip { .. }));
        // Inside the TTL, but the server has a newer catalog than the last scan used.
        assert_eq!(
            decide_now(Trigger::DeploymentActivation, &scanned(1, 5), Some(6)),
            Decision::Scan { online: true, delta_from: Some(5) }
        );
        assert_eq!(
            decide_now(Trigger::DeploymentActivation, &scanned(25, 5), Some(5)),
            Decision::Scan { online: false, delta_from: None }
        );
    }

    #[test]
    fn t2_4_deadline_scans_are_forced_and_online() {
        assert_eq!(
            decide_now(Trigger::DeploymentDeadline, &scanned(1, 5), Some(5)),
            Decision::Scan { online: true, delta_from: Some(5) }
        );
        assert!(
            matches!(decide_now(Trigger::DeploymentDeadline, &scanned(1, 5), None), Decision::Fail { .. }),
            "online needs the server"
        );
    }

    #[test]
    fn t2_5_user_reevaluation_is_forced_and_online() {
        assert_eq!(
            decide_now(Trigger::UserReevaluation, &scanned(0, 5), Some(5)),
            Decision::Scan { online: true, delta_from: Some(5) }
        );
    }

    #[test]
    fn t2_6_user_deployment_evaluation_is_forced_by_catalog_version() {
        assert_eq!(
            decide_now(Trigger::UserDeploymentEvaluation, &scanned(0, 5), Some(5)),
            Decision::Scan { online: false, delta_from: None }
        );
        assert_eq!(
            decide_now(Trigger::UserDeploymentEvaluation, &scanned(0, 5), Some(7)),
            Decision::Scan { online: true, delta_from: Some(5) }
        );
    }

    #[test]
    fn f1_forced_scans_always_run() {
        for t in [
            Trigger::GeneralSchedule,
            Trigger::DeploymentDeadline,
            Trigger::UserReevaluation,
            Trigger::UserDeploymentEvaluation,
        ] {
            assert!(matches!(decide_now(t, &scanned(0, 5), Some(5)), Decision::Scan { .. }), "{t:?}");
        }
    }

    #[test]
    fn f2_unforced_scans_are_skipped_inside_the_ttl_only() {
        let t = Trigger::ReevaluationSchedule;
        assert!(matches!(decide_now(t, &scanned(23, 5), Some(5)), Decision::Skip { .. }));
        let exactly = decide(t, &scanned(24, 5), TTL, Some(5), at(NOW));
        assert!(matches!(exactly, Decision::Scan { .. }), "24 h old: the TTL has run out");
        assert!(matches!(
            decide_now(t, &ScanHistory { cached_version: Some(5), ..Default::default() }, Some(5)),
            Decision::Scan { .. }
        ));
    }

    #[test]
    fn o1_online_scans_fetch_the_catalog_and_offline_scans_use_the_cache() {
        assert_eq!(
            decide_now(Trigger::UserReevaluation, &scanned(0, 5), Some(5)),
            Decision::Scan { online: true, delta_from: Some(5) }
        );
        assert_eq!(
            decide_now(Trigger::UserDeploymentEvaluation, &scanned(0, 5), Some(5)),
            Decision::Scan { online: false, delta_from: None }
        );
    }

    #[test]
    fn o2_version_decides_online_or_offline_and_an_unreachable_server_means_offline() {
        let t = Trigger::UserDeploymentEvaluation;
        assert_eq!(
            decide_now(t, &scanned(0, 5), Some(5)),
            Decision::Scan { online: false, delta_from: None },
            "same version"
        );
        assert_eq!(
            decide_now(t, &scanned(0, 5), None),
            Decision::Scan { online: false, delta_from: None },
            "unreachable"
        );
        assert_eq!(
            decide_now(t, &scanned(0, 5), Some(6)),
            Decision::Scan { online: true, delta_from: Some(5) },
            "newer: fetch a delta from 5"
        );
        let empty = ScanHistory::default();
        assert_eq!(
            decide_now(t, &empty, Some(6)),
            Decision::Scan { online: true, delta_from: None },
            "no cache: the whole catalog"
        );
        assert!(matches!(decide_now(t, &empty, None), Decision::Fail { .. }));
    }

    #[test]
    fn s1_policy_is_polled_every_interval() {
        assert_eq!(next_policy_poll(at(NOW), SignedDuration::from_mins(60)), at("2026-11-24T13:00:00Z"));
    }

    #[test]
    fn s2_s3_s4_a_new_catalog_schedules_a_random_scan_clears_history_and_points_at_the_server() {
        let mut watch = CatalogWatch::default();
        let mut history = scanned(1, 5);
        let window = SignedDuration::from_hours(2);
        assert!(watch.on_policy(&mut history, 6, "https://mp1", window, 0.25, at(NOW)));
        assert_eq!(watch.scheduled, Some(at("2026-11-24T12:30:00Z")), "a quarter into the 2 h window");
        assert_eq!((history.last_scan, history.last_scan_version), (None, None), "S3");
        assert_eq!(history.cached_version, Some(5), "the cached catalog stays for a delta");
        assert_eq!(watch.scan_server.as_deref(), Some("https://mp1"), "S4");
        // The same version again changes nothing.
        assert!(!watch.on_policy(&mut history, 6, "https://mp2", window, 0.9, at(NOW)));
        assert_eq!(watch.scan_server.as_deref(), Some("https://mp1"));
        // S5: at the scheduled time the scan runs, forced and online.
        assert_eq!(watch.take_due(at("2026-11-24T12:29:59Z")), None);
        assert_eq!(watch.take_due(at("2026-11-24T12:30:00Z")), Some(Trigger::NewCatalog));
        assert_eq!(Trigger::NewCatalog.kind(), ScanKind { forced: true, catalog: CatalogChoice::Online });
    }

    #[test]
    fn s2_scan_times_are_uniform_over_the_whole_window() {
        let window = SignedDuration::from_hours(2);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut buckets = [0u32; 8];
        for _ in 0..8000 {
            let mut w = CatalogWatch::default();
            w.on_policy(&mut ScanHistory::default(), 1, "mp", window, rng.f64(), at(NOW));
            let offset = w.scheduled.unwrap().duration_since(at(NOW));
            assert!(offset >= SignedDuration::ZERO && offset < window);
            buckets[(offset.as_secs() * 8 / window.as_secs()) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (850..1150).contains(&b)), "{buckets:?}");
    }

    #[test]
    fn d1_a_new_deployment_policy_scans_at_once_to_confirm_the_state() {
        assert!(
            matches!(decide_now(Trigger::NewDeploymentPolicy, &scanned(0, 5), Some(5)), Decision::Scan { .. }),
            "forced"
        );
    }

    #[test]
    fn s6_state_messages_are_cached_and_sent_in_batches() {
        let mut spool = Spool::default();
        let five = SignedDuration::from_mins(5);
        spool.push("scan 1", false, five, at(NOW));
        spool.push("scan 2", false, five, at("2026-11-24T12:03:00Z"));
        assert_eq!(spool.take_due(at("2026-11-24T12:04:59Z")), None);
        assert_eq!(
            spool.take_due(at("2026-11-24T12:05:00Z")),
            Some(vec!["scan 1", "scan 2"]),
            "one batch, 5 min after the first"
        );
        assert_eq!(spool.take_due(at("2026-11-24T12:10:00Z")), None);
    }

    #[test]
    fn d7_a_state_after_installation_is_sent_at_once() {
        let mut spool = Spool::default();
        let five = SignedDuration::from_mins(5);
        spool.push("scan", false, five, at(NOW));
        spool.push("installed", true, five, at("2026-11-24T12:01:00Z"));
        assert_eq!(spool.take_due(at("2026-11-24T12:01:00Z")), Some(vec!["scan", "installed"]));
    }

    #[test]
    fn s6_an_undelivered_batch_is_kept_in_order_and_retried() {
        let mut spool = Spool::default();
        let five = SignedDuration::from_mins(5);
        spool.push(1, false, five, at(NOW));
        let batch = spool.take_due(at("2026-11-24T12:05:00Z")).unwrap();
        spool.push(2, false, five, at("2026-11-24T12:05:30Z"));
        spool.requeue(batch, five, at("2026-11-24T12:06:00Z"));
        assert_eq!(spool.pending, vec![1, 2]);
        assert_eq!(spool.take_due(at("2026-11-24T12:11:00Z")), Some(vec![1, 2]));
    }
}
