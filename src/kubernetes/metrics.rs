//! The controller's Prometheus metrics and its `/metrics` and `/healthz` endpoints.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::resources::UpdateDeploymentStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabels {
    namespace: String,
    deployment: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    duration: Family<KindLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    compliance: Family<DeploymentLabels, FloatGauge>,
    required: Family<DeploymentLabels, Gauge>,
    unknown: Family<DeploymentLabels, Gauge>,
    targeted: Family<DeploymentLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        let errors = Family::<ErrorLabels, Counter>::default();
        let compliance = Family::<DeploymentLabels, FloatGauge>::default();
        let required = Family::<DeploymentLabels, Gauge>::default();
        let unknown = Family::<DeploymentLabels, Gauge>::default();
        let targeted = Family::<DeploymentLabels, Gauge>::default();
        registry.register("patchops_reconcile_duration_seconds", "Time one reconcile took, by kind", duration.clone());
        // prometheus-client appends `_total` to counter names.
        registry.register("patchops_reconcile_errors", "Failed reconciles by kind and error", errors.clone());
        registry.register(
            "patchops_deployment_compliance_percent",
            "Compliant machines over targeted machines, per UpdateDeployment",
            compliance.clone(),
        );
        registry.register(
            "patchops_deployment_machines_required",
            "Machines with a deployed update Required",
            required.clone(),
        );
        registry.register(
            "patchops_deployment_machines_unknown",
            "Machines with a deployed update Unknown",
            unknown.clone(),
        );
        registry.register("patchops_deployment_machines_targeted", "Machines targeted", targeted.clone());
        Metrics { registry, duration, errors, compliance, required, unknown, targeted }
    }
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
        self.compliance.get_or_create(&l).set(s.compliance_percent);
        self.required.get_or_create(&l).set(s.machines.required as i64);
        self.unknown.get_or_create(&l).set(s.machines.unknown as i64);
        self.targeted.get_or_create(&l).set(s.targeted as i64);
    }

    /// A deleted deployment's gauges go away with it.
    pub fn forget_deployment(&self, namespace: &str, name: &str) {
        let l = DeploymentLabels { namespace: namespace.to_string(), deployment: name.to_string() };
        self.compliance.remove(&l);
        self.required.remove(&l);
        self.unknown.remove(&l);
        self.targeted.remove(&l);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("metrics encode");
        out
    }
}

/// `/metrics` and `/healthz` on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: std::net::SocketAddr,
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
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn compliance_gauges_are_per_deployment_and_go_away_with_it() {
        let m = Metrics::default();
        let s = UpdateDeploymentStatus { compliance_percent: 62.5, targeted: 8, ..Default::default() };
        m.deployment("site", "pilot", &s);
        m.observe("UpdateDeployment", 0.02);
        m.error("UpdateDeployment", "store");
        let text = m.encode();
        assert!(
            text.contains(r#"patchops_deployment_compliance_percent{namespace="site",deployment="pilot"} 62.5"#),
            "{text}"
        );
        assert!(text.contains(r#"patchops_reconcile_errors_total{kind="UpdateDeployment",error="store"} 1"#), "{text}");
        assert!(text.contains("patchops_reconcile_duration_seconds_count{kind=\"UpdateDeployment\"} 1"), "{text}");
        m.forget_deployment("site", "pilot");
        assert!(!m.encode().contains("deployment=\"pilot\""));
    }
}
