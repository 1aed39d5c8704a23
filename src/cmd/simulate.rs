//! `patchops simulate`: a fleet of in-process agents talking HTTP to a management point
//! on loopback, on an accelerated (virtual) clock. Without `--server` it runs the whole
//! system in one process — the standalone reconciler on a fresh store, the management
//! point on an ephemeral loopback port, the agents — and ends with the compliance table.
//! Agents due at the same virtual moment run in parallel; the clock then jumps to the next
//! moment anything is due, so days pass in seconds.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use jiff::{SignedDuration, Timestamp};
use rayon::prelude::*;
use tracing::info;

use crate::agent::machine::FactsMachine;
use crate::agent::runner::{Agent, AgentOptions, AgentStats, Download};
use crate::git::RepoArgs;
use crate::output::OutputFormat;
use crate::pipeline::Pipeline;
use crate::sim::{FleetSpec, SimClient, SimFleet};
use crate::time::{Duration, add};
use crate::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Number of in-process agents.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Fleet description giving the agents their facts (scaled to --clients).
    #[arg(long, default_value = "examples/fleet.yaml")]
    pub fleet: PathBuf,
    /// Desired state for the embedded reconciler (ignored with --server).
    #[command(flatten)]
    pub repo: RepoArgs,
    /// A running management point to use instead of the embedded one.
    #[arg(long)]
    pub server: Option<String>,
    /// Enrollment secret of --server.
    #[arg(long, env = "PATCHOPS_ENROLL_SECRET", hide_env_values = true)]
    pub enroll_secret: Option<String>,
    /// Store of the embedded reconciler (recreated at each run).
    #[arg(long, default_value = ".patchops/simulate.db")]
    pub store: PathBuf,
    /// Virtual time to simulate.
    #[arg(long, default_value = "3d")]
    pub duration: Duration,
    /// Virtual time between reconciles of the embedded reconciler.
    #[arg(long, default_value = "15m")]
    pub reconcile_interval: Duration,
    /// Virtual start time (default: now).
    #[arg(long)]
    pub start: Option<Timestamp>,
    /// Content downloads: `simulated` (nothing transferred: the example catalog names vendor
    /// files no library here holds) or `http` (from the management point's content library).
    #[arg(long, value_enum, default_value_t = DownloadArg::Simulated)]
    pub download: DownloadArg,
    /// Threads running agents in parallel.
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DownloadArg {
    Simulated,
    Http,
}

/// Agents on a virtual clock.
pub struct VirtualFleet {
    pub agents: Vec<Mutex<Agent<FactsMachine>>>,
    wake: Vec<Timestamp>,
    pool: rayon::ThreadPool,
}

impl VirtualFleet {
    pub fn new(agents: Vec<Agent<FactsMachine>>, start: Timestamp, threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| Error::Usage(format!("cannot start the agent threads: {e}")))?;
        let wake = vec![start; agents.len()];
        Ok(VirtualFleet { agents: agents.into_iter().map(Mutex::new).collect(), wake, pool })
    }

    /// The next moment an agent is due.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.wake.iter().min().copied()
    }

    /// Tick every agent due at `now` (in parallel). Returns how many ran.
    pub fn run_due(&mut self, now: Timestamp) -> Result<usize> {
        let due: Vec<usize> = (0..self.agents.len()).filter(|i| self.wake[*i] <= now).collect();
        let agents = &self.agents;
        let results: Vec<(usize, Result<Timestamp>)> = self.pool.install(|| {
            due.par_iter().map(|&i| (i, agents[i].lock().unwrap_or_else(|p| p.into_inner()).tick(now))).collect()
        });
        for (i, r) in results {
            self.wake[i] = r?;
        }
        Ok(due.len())
    }

    pub fn stats(&self) -> AgentStats {
        let mut total = AgentStats::default();
        for a in &self.agents {
            total += a.lock().unwrap_or_else(|p| p.into_inner()).stats;
        }
        total
    }
}

/// In-process agents for the fleet's clients (those that never scan are left out: they
/// stay Unknown, as a broken agent does).
pub fn fleet_agents(
    fleet: &SimFleet,
    server: &str,
    secret: &str,
    download: Download,
    state_root: Option<&std::path::Path>,
) -> Result<Vec<Agent<FactsMachine>>> {
    let mut agents = Vec::new();
    let catalogs = std::sync::Arc::new(crate::agent::runner::CatalogCache::default());
    for (i, c) in fleet.clients.iter().enumerate() {
        if c.never_scans() {
            continue;
        }
        let seed = fleet.seed ^ ((i as u64 + 1) << 24);
        let options = AgentOptions {
            name: c.info.name.clone(),
            server: server.to_string(),
            enroll_secret: secret.to_string(),
            state_dir: state_root.map(|r| r.join(&c.info.name)),
            download,
            agent_version: c.info.agent_version.clone().unwrap_or_else(|| crate::agent::runner::AGENT_VERSION.into()),
            catalogs: Some(catalogs.clone()),
            seed,
        };
        agents.push(Agent::new(options, machine(c, seed))?);
    }
    Ok(agents)
}

/// This client as a machine an in-process agent manages: its facts and patch level,
/// installs that take up to 10 minutes and fail at the group's rate, scans that fail
/// for the clients whose scans fail.
fn machine(client: &SimClient, seed: u64) -> FactsMachine {
    use crate::agent::installers::simulated::Simulated;
    let installer = Simulated::new(seed, SignedDuration::from_mins(10), client.install_failure_rate, 0.0);
    let mut m = crate::agent::machine::FactsMachine::new(
        crate::agent::machine::FactsDocument {
            facts: client.facts.values.clone(),
            packages: client.facts.packages.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ..Default::default()
        },
        installer,
    );
    m.patched_through = Some(client.patched_through);
    if client.fails_scans {
        m.scan_error = Some("0x8024402C: the update source could not be reached".into());
    }
    m
}

pub fn run(args: SimulateArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.fleet).map_err(|source| Error::Io { path: args.fleet.clone(), source })?;
    let spec: FleetSpec =
        crate::yaml::from_str(&text).map_err(|e| Error::Usage(format!("{}: {e}", args.fleet.display())))?;
    let fleet = SimFleet::generate_scaled(&spec, args.clients);
    // Whole seconds: the store keeps times to the second.
    let start = args.start.unwrap_or_else(|| Timestamp::from_second(Timestamp::now().as_second()).expect("now"));
    let end = add(start, args.duration.signed());
    let download = if args.download == DownloadArg::Http { Download::Http } else { Download::Simulated };

    let (base, secret, mut runner, server) = match &args.server {
        Some(url) => {
            let secret = args
                .enroll_secret
                .clone()
                .ok_or_else(|| Error::Usage("--server needs --enroll-secret (or PATCHOPS_ENROLL_SECRET)".into()))?;
            (url.clone(), secret, None, None)
        }
        None => {
            let store = args.store.to_string_lossy().to_string();
            if let Some(parent) = args.store.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.into(), source })?;
            }
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{store}{suffix}"));
            }
            let source = crate::git::git_source(&args.repo, &crate::process::state_dir());
            let mut runner = Pipeline::new(source, crate::store::open(&store)?, None);
            // The first reconcile syncs the catalog, so the first policies announce it.
            runner.reconcile_once(start)?;
            let secret = format!("simulate-{}", fastrand::u64(..));
            let content = (download == Download::Http).then(|| crate::process::state_dir().join("content"));
            let server = crate::server::BackgroundServer::start(
                "127.0.0.1:0".parse().expect("address"),
                &store,
                &secret,
                content,
            )?;
            (server.base.clone(), secret, Some(runner), Some(server))
        }
    };
    info!(clients = fleet.clients.len(), server = %base, from = %start, to = %end, "simulating");
    let agents = fleet_agents(&fleet, &base, &secret, download, None)?;
    let mut virtual_fleet = VirtualFleet::new(agents, start, args.threads)?;

    let total = args.duration.as_secs().max(1) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {percent:>3}% virtual {msg} ({elapsed} real)")
            .expect("template")
            .progress_chars("=> "),
    );
    let interval = args.reconcile_interval.signed().max(SignedDuration::from_mins(1));
    let mut next_reconcile = add(start, interval);
    let mut now = start;
    let mut last = None;
    let run = (|| -> Result<()> {
        loop {
            virtual_fleet.run_due(now)?;
            if now >= end {
                break;
            }
            if let Some(r) = runner.as_mut()
                && next_reconcile <= now
            {
                last = Some(r.reconcile_once(now)?.0);
                next_reconcile = add(now, interval);
            }
            let mut next = virtual_fleet.next_due().unwrap_or(end).min(end);
            if runner.is_some() {
                next = next.min(next_reconcile);
            }
            now = next.max(add(now, SignedDuration::from_secs(1))).min(end);
            bar.set_position((now.as_second() - start.as_second()).clamp(0, total as i64) as u64);
            bar.set_message(format!("{}", now.strftime("%Y-%m-%d %H:%M")));
        }
        if let Some(r) = runner.as_mut() {
            last = Some(r.reconcile_once(end)?.0);
        }
        Ok(())
    })();
    bar.finish_and_clear();
    let stopped = server.map(crate::server::BackgroundServer::stop).transpose();
    run?;
    stopped?;

    let s = virtual_fleet.stats();
    eprintln!(
        "{} agents over {}: {} scans ({} skipped inside the scan TTL), {} downloads, {} installs \
         ({} failed), {} state batches sent ({} retried)",
        virtual_fleet.agents.len(),
        args.duration,
        s.scans,
        s.scans_skipped,
        s.downloads,
        s.installs,
        s.install_failures,
        s.batches_sent,
        s.send_failures
    );
    if let Some(record) = last {
        crate::output::print_record(&record, args.output);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::agent::installers::InstallOutcome;
    use crate::agent::machine::Machine;
    use crate::catalog::{Applicability, Catalog, RpmPackageTest, Rule, ScanVerdict};

    #[test]
    fn a_simulated_install_raises_the_packages_the_advisory_names() {
        let mut update = crate::catalog::test_support::update("ALSA-2", "AlmaLinux 9", "2026-07-01");
        let test = |below: bool| {
            Rule::RpmPackage(RpmPackageTest {
                name: "openssl-libs".into(),
                version_below: below.then(|| "1:3.5.1-7.el9".to_string()),
                version_at_least: (!below).then(|| "1:3.5.1-7.el9".to_string()),
                ..Default::default()
            })
        };
        update.applicability =
            Applicability { is_installable: test(true), is_installed: test(false), prerequisites: vec![] };
        let catalog = Catalog::new(1, vec![update], &std::collections::HashMap::new());
        let spec: FleetSpec = serde_saphyr::from_str(
            "seed: 1\nagentVersion: \"2.1.0\"\ngroups:\n  - count: 1\n    namePrefix: alma\n    os: {\"AlmaLinux 9\": 1}\n    \
             patchedThrough: {\"2026-05-31\": 1}\n    packages: {openssl-libs: \"1:3.5.1-4.el9\"}\n",
        )
        .unwrap();
        let fleet = SimFleet::generate(&spec);
        let mut machine = machine(&fleet.clients[0], 7);
        assert_eq!(catalog.updates[0].applicability.evaluate(&machine.facts(&catalog).unwrap()), ScanVerdict::Missing);
        assert!(matches!(machine.install(&catalog.updates[0], &[]), InstallOutcome::Installed { .. }));
        let after = machine.facts(&catalog).unwrap();
        assert_eq!(after.packages["openssl-libs"], "1:3.5.1-7.el9");
        assert_eq!(catalog.updates[0].applicability.evaluate(&after), ScanVerdict::Installed);
    }
}
