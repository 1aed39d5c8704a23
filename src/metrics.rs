//! The Prometheus metrics of the drivers that reconcile, `patchops controller` and
//! `patchops run`: the same per-deployment and per-site gauges from either, so one
//! dashboard and one set of alerts (charts/patchops/rules/) serve both. Ages are computed
//! when scraped, so a stuck reconcile loop shows as a growing age, not a frozen one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::compliance::{Fleet, Reason, client_unknown_reason};
use crate::resources::{UpdateCatalogStatus, UpdateDeploymentStatus};
use crate::store::ReconcileRecord;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct DeploymentLabels {
    namespace: String,
    deployment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    deployment: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct SiteLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CatalogLabels {
    namespace: String,
    catalog: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The phases an UpdateDeployment can be in; `patchops_deployment_phase` has one series
/// per phase (1 for the current one), as kube-state-metrics does for pod phases.
pub const DEPLOYMENT_PHASES: [&str; 5] = ["Pending", "Available", "PastDeadline", "Halted", "Invalid"];

/// A site's clients as its gauges show them, read from the fleet a reconcile loaded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SiteFacts {
    /// Registered clients.
    pub clients: u64,
    /// Clients whose states expired (no scan within the scan TTL) or that never reported.
    pub stale: u64,
    /// State messages received but not yet applied (T1.U2), over all clients.
    pub pending_messages: u64,
    /// The oldest last successful scan among the clients that scanned.
    pub oldest_scan: Option<Timestamp>,
    /// When the current catalog version was saved.
    pub catalog_saved: Option<Timestamp>,
}

impl SiteFacts {
    /// Stale is the compliance rule's own: the client is Unknown because its state
    /// expired (F2) or none was received (T1.U3).
    pub fn of(fleet: &Fleet, scan_ttl: SignedDuration, catalog_saved: Option<Timestamp>, now: Timestamp) -> Self {
        let stale = fleet
            .clients
            .iter()
            .filter(|c| {
                matches!(
                    client_unknown_reason(&c.compliance, scan_ttl, None, now),
                    Some(Reason::StateExpired | Reason::NoStateReceived)
                )
            })
            .count();
        SiteFacts {
            clients: fleet.clients.len() as u64,
            stale: stale as u64,
            pending_messages: fleet.clients.iter().map(|c| u64::from(c.compliance.pending_messages)).sum(),
            oldest_scan: fleet.clients.iter().filter_map(|c| c.compliance.last_scan.as_ref().map(|s| s.time)).min(),
            catalog_saved,
        }
    }
}

/// Times whose age the gauges show, turned into seconds at each scrape.
#[derive(Default)]
struct Times {
    oldest_scan: BTreeMap<SiteLabels, Timestamp>,
    catalog_saved: BTreeMap<SiteLabels, Timestamp>,
    catalog_synced: BTreeMap<CatalogLabels, Timestamp>,
    /// The deployments each site's last record had, so a deleted one's series go away.
    deployments: BTreeMap<String, BTreeSet<DeploymentLabels>>,
}

pub struct Metrics {
    registry: Registry,
    duration: Family<KindLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    compliance: Family<DeploymentLabels, FloatGauge>,
    required: Family<DeploymentLabels, Gauge>,
    unknown: Family<DeploymentLabels, Gauge>,
    failed: Family<DeploymentLabels, Gauge>,
    targeted: Family<DeploymentLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    clients: Family<SiteLabels, Gauge>,
    stale: Family<SiteLabels, Gauge>,
    pending: Family<SiteLabels, Gauge>,
    last_scan_age: Family<SiteLabels, FloatGauge>,
    catalog_age: Family<SiteLabels, FloatGauge>,
    catalog_sync_age: Family<CatalogLabels, FloatGauge>,
    catalog_ready: Family<CatalogLabels, Gauge>,
    times: Mutex<Times>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        r.register("patchops_build_info", "The running patchops version (always 1)", build);
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        r.register("patchops_reconcile_duration_seconds", "Time one reconcile took, by kind", duration.clone());
        // prometheus-client appends `_total` to counter names.
        let errors = Family::<ErrorLabels, Counter>::default();
        r.register("patchops_reconcile_errors", "Failed reconciles by kind and error", errors.clone());
        let notify = crate::notify::delivery::counters();
        r.register(
            "patchops_notifications_sent",
            "Notifications delivered, per NotificationProvider",
            notify.sent.clone(),
        );
        r.register(
            "patchops_notification_failures",
            "Failed notification attempts (error or non-2xx answer; retried with backoff), per NotificationProvider",
            notify.failures.clone(),
        );
        r.register(
            "patchops_notifications_abandoned",
            "Notifications given up after the last retry, per NotificationProvider",
            notify.abandoned.clone(),
        );
        r.register(
            "patchops_notifications_dropped",
            "Notifications dropped because the send queue was full, per NotificationProvider",
            notify.dropped.clone(),
        );
        let m = Metrics {
            duration,
            errors,
            compliance: Default::default(),
            required: Default::default(),
            unknown: Default::default(),
            failed: Default::default(),
            targeted: Default::default(),
            phase: Default::default(),
            clients: Default::default(),
            stale: Default::default(),
            pending: Default::default(),
            last_scan_age: Default::default(),
            catalog_age: Default::default(),
            catalog_sync_age: Default::default(),
            catalog_ready: Default::default(),
            times: Mutex::default(),
            registry: Registry::default(),
        };
        r.register(
            "patchops_deployment_compliance_ratio",
            "Compliant machines over targeted machines (0 to 1), per UpdateDeployment",
            m.compliance.clone(),
        );
        r.register(
            "patchops_deployment_machines_required",
            "Machines with a deployed update Required",
            m.required.clone(),
        );
        r.register(
            "patchops_deployment_machines_unknown",
            "Machines with a deployed update Unknown",
            m.unknown.clone(),
        );
        r.register(
            "patchops_deployment_machines_failed",
            "Machines where a deployed update failed to download or install",
            m.failed.clone(),
        );
        r.register("patchops_deployment_machines_targeted", "Machines targeted", m.targeted.clone());
        r.register(
            "patchops_deployment_phase",
            "1 for the UpdateDeployment's current phase (Pending, Available, PastDeadline, Halted, Invalid), else 0",
            m.phase.clone(),
        );
        r.register("patchops_clients", "Registered clients of the site", m.clients.clone());
        r.register(
            "patchops_clients_stale",
            "Clients whose states expired (no scan within the scan TTL) or that never reported",
            m.stale.clone(),
        );
        r.register(
            "patchops_state_messages_pending",
            "State messages received but not yet applied: the ingestion backlog",
            m.pending.clone(),
        );
        r.register(
            "patchops_client_last_scan_age_seconds",
            "Age of the oldest last successful scan among the site's clients",
            m.last_scan_age.clone(),
        );
        r.register("patchops_catalog_age_seconds", "Age of the current catalog version", m.catalog_age.clone());
        r.register(
            "patchops_catalog_last_sync_age_seconds",
            "Time since the UpdateCatalog last synchronized successfully",
            m.catalog_sync_age.clone(),
        );
        r.register(
            "patchops_catalog_ready",
            "1 when the UpdateCatalog's last synchronization succeeded, 0 when it failed",
            m.catalog_ready.clone(),
        );
        Metrics { registry: r, ..m }
    }
}

fn seconds_since(t: Timestamp, now: Timestamp) -> f64 {
    now.duration_since(t).as_secs_f64().max(0.0)
}

impl Metrics {
    pub fn observe(&self, kind: &str, seconds: f64) {
        self.duration.get_or_create(&KindLabels { kind: kind.to_string() }).observe(seconds);
    }

    pub fn error(&self, kind: &str, label: &str) {
        self.errors.get_or_create(&ErrorLabels { kind: kind.to_string(), error: label.to_string() }).inc();
    }

    pub fn deployment(&self, namespace: &str, name: &str, s: &UpdateDeploymentStatus) {
        let l = DeploymentLabels { namespace: namespace.to_string(), deployment: name.to_string() };
        self.compliance.get_or_create(&l).set(s.compliance_percent / 100.0);
        self.required.get_or_create(&l).set(s.machines.required as i64);
        self.unknown.get_or_create(&l).set(s.machines.unknown as i64);
        self.failed.get_or_create(&l).set(s.machines.failed as i64);
        self.targeted.get_or_create(&l).set(s.targeted as i64);
        for phase in DEPLOYMENT_PHASES {
            let p =
                PhaseLabels { namespace: l.namespace.clone(), deployment: l.deployment.clone(), phase: phase.into() };
            self.phase.get_or_create(&p).set(i64::from(s.phase == phase));
        }
    }

    /// A deleted deployment's series go away with it.
    pub fn forget_deployment(&self, namespace: &str, name: &str) {
        let l = DeploymentLabels { namespace: namespace.to_string(), deployment: name.to_string() };
        self.compliance.remove(&l);
        self.required.remove(&l);
        self.unknown.remove(&l);
        self.failed.remove(&l);
        self.targeted.remove(&l);
        for phase in DEPLOYMENT_PHASES {
            self.phase.remove(&PhaseLabels {
                namespace: l.namespace.clone(),
                deployment: l.deployment.clone(),
                phase: phase.into(),
            });
        }
    }

    pub fn catalog(&self, namespace: &str, name: &str, s: &UpdateCatalogStatus) {
        let l = CatalogLabels { namespace: namespace.to_string(), catalog: name.to_string() };
        let ready = s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        self.catalog_ready.get_or_create(&l).set(i64::from(ready));
        if let Some(t) = s.last_sync_time {
            self.times.lock().unwrap_or_else(|e| e.into_inner()).catalog_synced.insert(l, t);
        }
    }

    /// Every deployment and catalog status of one site's reconcile; the deployments the
    /// site's previous record had and this one lacks are forgotten.
    pub fn record(&self, site: &str, record: &ReconcileRecord) {
        let mut seen = BTreeSet::new();
        for s in &record.statuses {
            match s.kind.as_str() {
                "UpdateDeployment" => {
                    if let Ok(status) = serde_json::from_value::<UpdateDeploymentStatus>(s.status.clone()) {
                        self.deployment(&s.namespace, &s.name, &status);
                        seen.insert(DeploymentLabels { namespace: s.namespace.clone(), deployment: s.name.clone() });
                    }
                }
                "UpdateCatalog" => {
                    if let Ok(status) = serde_json::from_value::<UpdateCatalogStatus>(s.status.clone()) {
                        self.catalog(&s.namespace, &s.name, &status);
                    }
                }
                _ => {}
            }
        }
        let gone: Vec<DeploymentLabels> = {
            let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
            let before = times.deployments.insert(site.to_string(), seen.clone()).unwrap_or_default();
            before.difference(&seen).cloned().collect()
        };
        for l in gone {
            self.forget_deployment(&l.namespace, &l.deployment);
        }
    }

    /// The site's clients and catalog.
    pub fn site(&self, namespace: &str, facts: &SiteFacts) {
        let l = SiteLabels { namespace: namespace.to_string() };
        self.clients.get_or_create(&l).set(facts.clients as i64);
        self.stale.get_or_create(&l).set(facts.stale as i64);
        self.pending.get_or_create(&l).set(facts.pending_messages as i64);
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        match facts.oldest_scan {
            Some(t) => {
                times.oldest_scan.insert(l.clone(), t);
            }
            None => {
                times.oldest_scan.remove(&l);
                self.last_scan_age.remove(&l);
            }
        }
        if let Some(t) = facts.catalog_saved {
            times.catalog_saved.insert(l, t);
        }
    }

    /// The text exposition (OpenMetrics), ages computed at `now`.
    pub fn encode_at(&self, now: Timestamp) -> String {
        {
            let times = self.times.lock().unwrap_or_else(|e| e.into_inner());
            for (l, t) in &times.oldest_scan {
                self.last_scan_age.get_or_create(l).set(seconds_since(*t, now));
            }
            for (l, t) in &times.catalog_saved {
                self.catalog_age.get_or_create(l).set(seconds_since(*t, now));
            }
            for (l, t) in &times.catalog_synced {
                self.catalog_sync_age.get_or_create(l).set(seconds_since(*t, now));
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode");
        out
    }

    pub fn encode(&self) -> String {
        self.encode_at(Timestamp::now())
    }
}

/// `/metrics` and `/healthz` on a bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Bind the metrics listener, saying what to do when the address is taken.
pub async fn bind(listen: std::net::SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen for /metrics on {listen}: {e}; choose another --metrics-listen address"))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::compliance::{Client, ClientCompliance, ScanRecord};
    use crate::store::ResourceStatus;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    }

    fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    #[test]
    fn compliance_is_a_ratio_per_deployment_with_its_phase_and_goes_away_with_it() {
        let m = Metrics::default();
        let s = UpdateDeploymentStatus {
            compliance_percent: 62.5,
            targeted: 8,
            phase: "Halted".into(),
            ..Default::default()
        };
        m.deployment("site", "pilot", &s);
        m.observe("UpdateDeployment", 0.02);
        m.error("UpdateDeployment", "store");
        let text = m.encode();
        let scrape = parse(&text);
        let pilot = [("namespace", "site"), ("deployment", "pilot")];
        assert_eq!(value(&scrape, "patchops_deployment_compliance_ratio", &pilot), Some(0.625), "{text}");
        assert_eq!(value(&scrape, "patchops_deployment_machines_targeted", &pilot), Some(8.0));
        let phase = |p| value(&scrape, "patchops_deployment_phase", &[("deployment", "pilot"), ("phase", p)]);
        assert_eq!((phase("Halted"), phase("Available")), (Some(1.0), Some(0.0)));
        assert!(!text.contains("compliance_percent"), "the percent gauge was renamed: {text}");
        assert!(text.contains(r#"patchops_reconcile_errors_total{kind="UpdateDeployment",error="store"} 1"#), "{text}");
        assert!(text.contains("patchops_reconcile_duration_seconds_count{kind=\"UpdateDeployment\"} 1"), "{text}");
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        assert_eq!(value(&scrape, "patchops_build_info", &version), Some(1.0));
        m.forget_deployment("site", "pilot");
        assert!(!m.encode().contains("deployment=\"pilot\""));
    }

    #[test]
    fn a_deployment_missing_from_the_next_record_of_its_site_loses_its_series() {
        let m = Metrics::default();
        let status = |name: &str| ResourceStatus {
            kind: "UpdateDeployment".into(),
            namespace: "site".into(),
            name: name.into(),
            status: serde_json::to_value(UpdateDeploymentStatus { phase: "Available".into(), ..Default::default() })
                .unwrap(),
        };
        let record = |names: &[&str]| ReconcileRecord {
            time: at("2026-12-01T00:00:00Z"),
            revision: "main@sha1:00".into(),
            catalog_version: 1,
            statuses: names.iter().map(|n| status(n)).collect(),
        };
        m.record("site", &record(&["pilot", "broad"]));
        assert!(m.encode().contains("deployment=\"broad\""));
        m.record("site", &record(&["pilot"]));
        let text = m.encode();
        assert!(!text.contains("deployment=\"broad\"") && text.contains("deployment=\"pilot\""), "{text}");
    }

    #[test]
    fn site_gauges_count_stale_clients_by_the_scan_ttl_and_ages_grow_with_the_clock() {
        let scanned = |name: &str, time: &str| Client {
            name: name.into(),
            facts: Default::default(),
            compliance: ClientCompliance {
                last_scan: Some(ScanRecord { time: at(time), catalog_version: 1, error: None }),
                pending_messages: 2,
                ..Default::default()
            },
        };
        let never = Client { name: "new".into(), facts: Default::default(), compliance: Default::default() };
        let fleet =
            Fleet::new(vec![scanned("fresh", "2026-12-01T10:00:00Z"), scanned("old", "2026-11-29T10:00:00Z"), never]);
        let now = at("2026-12-01T12:00:00Z");
        let facts = SiteFacts::of(&fleet, SignedDuration::from_hours(24), Some(at("2026-12-01T11:00:00Z")), now);
        assert_eq!((facts.clients, facts.stale, facts.pending_messages), (3, 2, 4));
        let m = Metrics::default();
        m.site("site", &facts);
        m.catalog(
            "site",
            "msrc",
            &UpdateCatalogStatus {
                last_sync_time: Some(at("2026-12-01T11:30:00Z")),
                conditions: vec![crate::resources::Condition::new("Ready", false, "SyncFailed", "x", now)],
                ..Default::default()
            },
        );
        let scrape = parse(&m.encode_at(now));
        let site = [("namespace", "site")];
        assert_eq!(value(&scrape, "patchops_clients", &site), Some(3.0));
        assert_eq!(value(&scrape, "patchops_clients_stale", &site), Some(2.0));
        assert_eq!(value(&scrape, "patchops_state_messages_pending", &site), Some(4.0));
        assert_eq!(value(&scrape, "patchops_client_last_scan_age_seconds", &site), Some(50.0 * 3600.0));
        assert_eq!(value(&scrape, "patchops_catalog_age_seconds", &site), Some(3600.0));
        let msrc = [("catalog", "msrc")];
        assert_eq!(value(&scrape, "patchops_catalog_last_sync_age_seconds", &msrc), Some(1800.0));
        assert_eq!(value(&scrape, "patchops_catalog_ready", &msrc), Some(0.0));
        // A minute later the ages moved with the clock, no reconcile needed.
        let later = parse(&m.encode_at(at("2026-12-01T12:01:00Z")));
        assert_eq!(value(&later, "patchops_catalog_age_seconds", &site), Some(3660.0));
    }
}
