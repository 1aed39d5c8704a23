//! The background sender: per provider a bounded queue the reconcile puts deliveries on
//! without ever waiting (a full queue drops with a warning and a metric), and a thread that
//! POSTs them, retrying failures (transport errors and non-2xx answers) with exponential
//! backoff. Outcomes are counted per provider in the process's metrics.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// One POST to a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub provider: String,
    pub address: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How long one attempt may take.
    pub timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// Notification outcomes per provider, registered in the shared metrics registry.
#[derive(Clone, Default)]
pub struct Counters {
    /// Delivered (a 2xx answer).
    pub sent: Family<ProviderLabels, Counter>,
    /// Failed attempts (transport error, non-2xx answer, unreadable secret).
    pub failures: Family<ProviderLabels, Counter>,
    /// Given up after the last retry.
    pub abandoned: Family<ProviderLabels, Counter>,
    /// Dropped because the queue was full.
    pub dropped: Family<ProviderLabels, Counter>,
}

impl Counters {
    fn of(f: &Family<ProviderLabels, Counter>, provider: &str) -> u64 {
        f.get_or_create(&ProviderLabels { provider: provider.to_string() }).get()
    }

    fn inc(f: &Family<ProviderLabels, Counter>, provider: &str) {
        f.get_or_create(&ProviderLabels { provider: provider.to_string() }).inc();
    }

    pub fn failed(&self, provider: &str) {
        Self::inc(&self.failures, provider);
    }

    /// (sent, failed attempts, abandoned, dropped) for a provider.
    pub fn get(&self, provider: &str) -> (u64, u64, u64, u64) {
        (
            Self::of(&self.sent, provider),
            Self::of(&self.failures, provider),
            Self::of(&self.abandoned, provider),
            Self::of(&self.dropped, provider),
        )
    }
}

/// How the last delivery attempt to a provider ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastAttempt {
    pub time: jiff::Timestamp,
    /// None when the receiver accepted it; the error otherwise.
    pub error: Option<String>,
}

fn attempts() -> &'static Mutex<HashMap<String, LastAttempt>> {
    static ATTEMPTS: OnceLock<Mutex<HashMap<String, LastAttempt>>> = OnceLock::new();
    ATTEMPTS.get_or_init(Default::default)
}

/// Remember how the last attempt to `provider` ended, for the provider's status.
pub fn record_attempt(provider: &str, error: Option<String>) {
    let attempt = LastAttempt { time: jiff::Timestamp::now(), error };
    attempts().lock().unwrap_or_else(|e| e.into_inner()).insert(provider.to_string(), attempt);
}

/// How the last attempt to `provider` in this process ended, if one was made.
pub fn last_attempt(provider: &str) -> Option<LastAttempt> {
    attempts().lock().unwrap_or_else(|e| e.into_inner()).get(provider).cloned()
}

/// The process's notification counters (the metrics registry shares them).
pub fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    COUNTERS.get_or_init(Counters::default)
}

/// How the sender queues and retries.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Deliveries waiting at most; more are dropped.
    pub capacity: usize,
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// The wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { capacity: 1024, attempts: 6, backoff: Duration::from_secs(2), max_backoff: Duration::from_secs(300) }
    }
}

/// The queue ends the reconcile sends on: one bounded queue and one sending thread per
/// provider, so a provider that never answers delays only its own notifications.
pub struct Sender {
    config: Config,
    queues: Mutex<HashMap<String, SyncSender<Delivery>>>,
}

impl Sender {
    pub fn new(config: Config) -> Self {
        Sender { config, queues: Mutex::default() }
    }

    /// The process's sender.
    pub fn global() -> &'static Sender {
        static SENDER: OnceLock<Sender> = OnceLock::new();
        SENDER.get_or_init(|| Sender::new(Config::default()))
    }

    /// Queue a delivery without waiting: a full queue drops it (warning + metric).
    pub fn send(&self, d: Delivery) {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            queues
                .entry(d.provider.clone())
                .or_insert_with(|| {
                    let (queue, rx) = sync_channel(self.config.capacity);
                    let config = self.config;
                    std::thread::Builder::new()
                        .name(format!("notify-{}", d.provider))
                        .spawn(move || worker(rx, config))
                        .expect("a thread can be started");
                    queue
                })
                .clone()
        };
        match queue.try_send(d) {
            Ok(()) => {}
            Err(TrySendError::Full(d)) => {
                tracing::warn!(provider = %d.provider, "notification queue full: notification dropped");
                Counters::inc(&counters().dropped, &d.provider);
            }
            Err(TrySendError::Disconnected(d)) => {
                tracing::warn!(provider = %d.provider, "notification sender stopped: notification dropped");
                Counters::inc(&counters().dropped, &d.provider);
            }
        }
    }
}

/// A delivery waiting for its next attempt.
struct Pending {
    due: Instant,
    seq: u64,
    attempt: u32,
    delivery: Delivery,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// The wait before attempt `attempt` + 1 (attempt counts from 1).
pub fn backoff(config: &Config, attempt: u32) -> Duration {
    config.backoff.saturating_mul(1u32 << (attempt - 1).min(20)).min(config.max_backoff)
}

fn worker(rx: Receiver<Delivery>, config: Config) {
    let mut waiting: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut open = true;
    while open || !waiting.is_empty() {
        let next = waiting.peek().map(|Reverse(p)| p.due.saturating_duration_since(Instant::now()));
        let received = match (open, next) {
            (true, Some(wait)) => rx.recv_timeout(wait),
            (true, None) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (false, Some(wait)) => {
                std::thread::sleep(wait);
                Err(RecvTimeoutError::Timeout)
            }
            (false, None) => break,
        };
        match received {
            Ok(delivery) => {
                seq += 1;
                waiting.push(Reverse(Pending { due: Instant::now(), seq, attempt: 1, delivery }));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        while waiting.peek().is_some_and(|Reverse(p)| p.due <= Instant::now()) {
            let Reverse(p) = waiting.pop().expect("peeked");
            let d = &p.delivery;
            match post(d) {
                Ok(()) => {
                    Counters::inc(&counters().sent, &d.provider);
                    record_attempt(&d.provider, None);
                }
                Err(e) if p.attempt < config.attempts => {
                    Counters::inc(&counters().failures, &d.provider);
                    record_attempt(&d.provider, Some(e.clone()));
                    let wait = backoff(&config, p.attempt);
                    tracing::warn!(
                        provider = %d.provider, address = %d.address, attempt = p.attempt,
                        "notification failed: {e}; retrying in {wait:?}"
                    );
                    seq += 1;
                    waiting.push(Reverse(Pending { due: Instant::now() + wait, seq, attempt: p.attempt + 1, ..p }));
                }
                Err(e) => {
                    Counters::inc(&counters().failures, &d.provider);
                    Counters::inc(&counters().abandoned, &d.provider);
                    record_attempt(&d.provider, Some(format!("{e} (given up after {} attempts)", p.attempt)));
                    tracing::warn!(
                        provider = %d.provider, address = %d.address, attempts = p.attempt,
                        "notification failed: {e}; given up after {} attempts", p.attempt
                    );
                }
            }
        }
    }
}

fn post(d: &Delivery) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(d.timeout))
        .http_status_as_error(false)
        .user_agent(concat!("patchops/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut request = agent.post(&d.address);
    for (k, v) in &d.headers {
        request = request.header(k, v);
    }
    let response = request.send(&d.body[..]).map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("{} answered {status}", d.address)) }
}
