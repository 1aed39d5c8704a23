//! The management point's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Counters, registered in their own registry (`/metrics` encodes it).
pub(super) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    messages: Counter,
    batches: Family<OutcomeLabels, Counter>,
    policy_fetches: Family<ResultLabels, Counter>,
    enrollment_failures: Family<ReasonLabels, Counter>,
    rejected_batches: Counter,
    rejected_bytes: Counter,
    /// Store transactions that applied state batches, and the batches not yet answered:
    /// kept by the group commit.
    pub(super) commits: Counter,
    pub(super) pending: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

impl Metrics {
    pub(super) fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let messages = Counter::default();
        let batches = Family::<OutcomeLabels, Counter>::default();
        let policy_fetches = Family::<ResultLabels, Counter>::default();
        // prometheus-client appends `_total` to counter names.
        registry.register("patchops_http_requests", "HTTP requests by route template and status", requests.clone());
        registry.register("patchops_state_messages", "State messages in applied batches", messages.clone());
        registry.register(
            "patchops_state_batches",
            "State batches by outcome (applied, duplicate, malformed, forbidden, too_large, unknown_update, \
             invalid, store_error, unread = the body did not arrive whole or in time)",
            batches.clone(),
        );
        registry.register(
            "patchops_policy_fetches",
            "Policy fetches: hit = the client's copy was current (304), miss = the document was sent",
            policy_fetches.clone(),
        );
        let enrollment_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "patchops_enrollment_failures",
            "Refused registrations by reason (wrong_secret, name_taken, revoked, throttled)",
            enrollment_failures.clone(),
        );
        let rejected_batches = Counter::default();
        registry.register(
            "patchops_rejected_batches",
            "Malformed state batches kept as rejected (size and a bounded prefix only)",
            rejected_batches.clone(),
        );
        let rejected_bytes = Counter::default();
        registry.register(
            "patchops_rejected_batch_bytes",
            "Bytes received in rejected state batches",
            rejected_bytes.clone(),
        );
        let commits = Counter::default();
        registry.register(
            "patchops_state_commits",
            "Store transactions that applied state batches; batches that arrive together share one \
             (group commit), so applied batches / commits is the batches per commit",
            commits.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "patchops_state_batches_pending",
            "State batches received and not yet answered (waiting for the store or in its transaction)",
            pending.clone(),
        );
        Metrics {
            registry,
            commits,
            pending,
            requests,
            messages,
            batches,
            policy_fetches,
            enrollment_failures,
            rejected_batches,
            rejected_bytes,
        }
    }

    pub(super) fn request(&self, route: &str, status: u16) {
        self.requests.get_or_create(&RequestLabels { route: route.to_string(), status: status.to_string() }).inc();
    }

    pub(super) fn messages(&self, n: u64) {
        self.messages.inc_by(n);
    }

    pub(super) fn batch(&self, outcome: &str) {
        self.batches.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub(super) fn policy_fetch(&self, result: &str) {
        self.policy_fetches.get_or_create(&ResultLabels { result: result.to_string() }).inc();
    }

    pub(super) fn enrollment_failure(&self, reason: &str) {
        self.enrollment_failures.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    pub(super) fn rejected(&self, bytes: u64) {
        self.rejected_batches.inc();
        self.rejected_bytes.inc_by(bytes);
    }

    pub(super) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
