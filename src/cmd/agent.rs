//! `patchops agent`: one agent on this machine, on the wall clock, until SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use jiff::Timestamp;
use tracing::{info, warn};

use crate::agent::client::CallError;
use crate::agent::installers::Installer;
use crate::agent::installers::dnf::Dnf;
use crate::agent::installers::simulated::Simulated;
use crate::agent::installers::zypper::Zypper;
use crate::agent::machine::{DpkgMachine, FactsDocument, FactsMachine, Machine, RpmMachine};
use crate::agent::runner::{Agent, AgentOptions, Download};
use crate::agent::scanners::rpm::RpmDb;
use crate::agent::schedule::Trigger;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScannerKind {
    /// This Debian/Ubuntu machine's dpkg status file.
    Dpkg,
    /// The rpm database of this RHEL/Fedora/SUSE-family machine (or of --rpm-root).
    Rpm,
    /// Applicability rules over a facts document (--facts).
    Rules,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InstallerKind {
    /// apt-get: a dry run (`-s`) unless --apply.
    Apt,
    /// dnf: a dry run (`--assumeno`) unless --apply.
    Dnf,
    /// zypper: a dry run (`--dry-run`) unless --apply.
    Zypper,
    /// Simulated installs (Windows-like catalogs, demos).
    Simulated,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Management point base URL, e.g. http://patchops.example.org:8080.
    #[arg(long, env = "PATCHOPS_SERVER")]
    pub server: String,
    /// The enrollment secret (used once, to get this client's own token). Prefer
    /// --enroll-secret-file or the environment variable: an argument shows in `ps`.
    #[arg(
        long,
        env = "PATCHOPS_ENROLL_SECRET",
        hide_env_values = true,
        required_unless_present = "enroll_secret_file"
    )]
    pub enroll_secret: Option<String>,
    /// A file holding the enrollment secret (its first line).
    #[arg(long, env = "PATCHOPS_ENROLL_SECRET_FILE", conflicts_with = "enroll_secret")]
    pub enroll_secret_file: Option<PathBuf>,
    /// Client name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Where the agent keeps its token, spool, cached catalog and downloads (created
    /// 0700, the state file 0600). Default: /var/lib/patchops/agent for a system agent
    /// (run as root), .patchops/agent otherwise.
    #[arg(long, env = "PATCHOPS_AGENT_DIR")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = ScannerKind::Dpkg)]
    pub scanner: ScannerKind,
    /// The dpkg status file (scanner dpkg).
    #[arg(long, default_value = "/var/lib/dpkg/status")]
    pub dpkg_status: PathBuf,
    /// The root whose rpm database the rpm scanner reads and dnf/zypper install into
    /// (`--installroot`/`--root` when not `/`).
    #[arg(long, default_value = "/")]
    pub rpm_root: PathBuf,
    /// The rpm database directory inside --rpm-root.
    #[arg(long, default_value = crate::agent::scanners::rpm::DEFAULT_DBPATH)]
    pub rpm_dbpath: PathBuf,
    /// A dnf.conf for the dnf installer instead of the system's (`dnf --config`).
    #[arg(long)]
    pub dnf_config: Option<PathBuf>,
    /// `dnf --releasever` (a private --rpm-root has no release package to read it from).
    #[arg(long)]
    pub releasever: Option<String>,
    /// Facts document (scanner rules): `facts`, `installed`, `packages`.
    #[arg(long)]
    pub facts: Option<PathBuf>,
    /// Extra facts collections select on, e.g. --fact role=server --fact site=BER.
    #[arg(long = "fact", value_parser = parse_fact)]
    pub extra_facts: Vec<(String, String)>,
    /// Installer (default: apt for dpkg; for rpm zypper on SUSE, else dnf; simulated for rules).
    #[arg(long, value_enum)]
    pub installer: Option<InstallerKind>,
    /// Let apt, dnf or zypper really install (without it they only resolve: `apt-get -s`,
    /// `dnf --assumeno`, `zypper --dry-run`).
    #[arg(long)]
    pub apply: bool,
    /// Start with a user-requested re-evaluation (T2.5: forced, online).
    #[arg(long)]
    pub scan_now: bool,
    /// Do what is due now once, then exit.
    #[arg(long)]
    pub once: bool,
}

fn parse_fact(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The state folder of a system agent (run as root).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/patchops/agent";

/// Whether this process runs as root (the owner of its own /proc entry).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub fn run(mut args: AgentArgs) -> Result<ExitCode> {
    let extra: BTreeMap<String, String> = args.extra_facts.iter().cloned().collect();
    let secret = crate::secrets::secret(
        "the enrollment secret",
        args.enroll_secret.as_deref(),
        "--enroll-secret",
        args.enroll_secret_file.as_deref(),
    )?
    .unwrap_or_default();
    let state_dir = args
        .state_dir
        .get_or_insert_with(|| PathBuf::from(if is_root() { SYSTEM_STATE_DIR } else { ".patchops/agent" }));
    let options = AgentOptions {
        name: args.name.clone().unwrap_or_else(host_name),
        server: args.server.clone(),
        enroll_secret: secret,
        state_dir: Some(state_dir.clone()),
        download: Download::Http,
        agent_version: crate::agent::runner::AGENT_VERSION.to_string(),
        catalogs: None,
        seed: fastrand::u64(..),
    };
    match args.scanner {
        ScannerKind::Dpkg => {
            if args.installer.is_some_and(|i| i != InstallerKind::Apt) {
                return Err(Error::Usage("the dpkg scanner installs with apt; use --installer apt".into()));
            }
            let machine = DpkgMachine::new(&args.dpkg_status, !args.apply, extra);
            drive(Agent::new(options, machine)?, &args)
        }
        ScannerKind::Rpm => {
            let rpmdb = RpmDb::new(&args.rpm_root, Some(&args.rpm_dbpath));
            let suse = rpmdb.os_facts().get("osFamily").is_some_and(|f| f == "suse");
            let installer: Box<dyn Installer + Send> = match args.installer {
                Some(InstallerKind::Dnf) => Box::new(dnf(&args, rpmdb.clone())),
                Some(InstallerKind::Zypper) => Box::new(Zypper::new(!args.apply, rpmdb.clone())),
                None if suse => Box::new(Zypper::new(!args.apply, rpmdb.clone())),
                None => Box::new(dnf(&args, rpmdb.clone())),
                Some(other) => {
                    return Err(Error::Usage(format!(
                        "the rpm scanner installs with dnf or zypper, not {other:?}; use --installer dnf or --installer zypper"
                    )));
                }
            };
            let machine = RpmMachine::new(rpmdb, installer, extra);
            drive(Agent::new(options, machine)?, &args)
        }
        ScannerKind::Rules => {
            let Some(path) = &args.facts else {
                return Err(Error::Usage("the rules scanner needs --facts FILE (a facts document)".into()));
            };
            if args.installer.is_some_and(|i| i != InstallerKind::Simulated) {
                return Err(Error::Usage("the rules scanner installs with the simulated installer".into()));
            }
            let mut doc = FactsDocument::load(path)?;
            doc.facts.extend(extra);
            let machine = FactsMachine::new(
                doc,
                Simulated::new(fastrand::u64(..), jiff::SignedDuration::from_mins(10), 0.0, 0.0),
            );
            drive(Agent::new(options, machine)?, &args)
        }
    }
}

fn dnf(args: &AgentArgs, rpmdb: RpmDb) -> Dnf {
    let mut dnf = Dnf::new(!args.apply, rpmdb);
    dnf.config = args.dnf_config.clone();
    dnf.releasever = args.releasever.clone();
    dnf
}

/// `--once`: one whole cycle — registered, policy fetched, scanned when due (always with
/// --scan-now), installed what is due — ends with every state message delivered and
/// acknowledged; anything short of that is an error with what to do.
fn finish_once<M: Machine>(agent: &mut Agent<M>) -> Result<ExitCode> {
    if agent.problems.is_empty() && agent.state.policy.is_none() {
        return Err(Error::Runtime(format!(
            "registered with {}, but it has no policy for {} yet: no reconcile has run since the \
             registration; run `patchops run --once` against the management point's store, then this again",
            agent.options.server, agent.options.name
        )));
    }
    let delivered = agent.flush(Timestamp::now())?;
    if !agent.problems.is_empty() || !delivered {
        return Err(Error::Runtime(format!(
            "the agent's cycle did not complete ({} problem(s)): {}",
            agent.problems.len(),
            if agent.problems.is_empty() { "state messages not delivered".into() } else { agent.problems.join("; ") }
        )));
    }
    let s = agent.stats;
    info!(
        scans = s.scans,
        installs = s.installs,
        batches_sent = s.batches_sent,
        "done: every state message acknowledged"
    );
    Ok(ExitCode::SUCCESS)
}

fn drive<M: Machine>(mut agent: Agent<M>, args: &AgentArgs) -> Result<ExitCode> {
    if args.scan_now {
        agent.user_trigger(Trigger::UserReevaluation);
    }
    if args.once {
        // One whole cycle starts with a policy poll, whenever the last one was.
        agent.state.last_poll = None;
    }
    let state_dir = agent.options.state_dir.clone().unwrap_or_default();
    info!(client = %agent.options.name, server = %agent.options.server, state_dir = %state_dir.display(), "agent started");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
    loop {
        let wake = agent.tick(Timestamp::now())?;
        if let Some(why) = &agent.registration_refused {
            let hint = match why {
                CallError::Rejected { status: 409, .. } => {
                    "another host holds this client name; give this one its own --name, or have the operator \
                     release the name if this host replaces it"
                        .to_string()
                }
                CallError::Rejected { status: 403, .. } => "the operator revoked this client".to_string(),
                _ => {
                    format!("check --enroll-secret-file (PATCHOPS_ENROLL_SECRET) and --server {}", agent.options.server)
                }
            };
            return Err(Error::Usage(format!("{why}; {hint}")));
        }
        if args.once {
            return finish_once(&mut agent);
        }
        // Wake at the next due moment, at least once a minute (the clock may jump).
        let wait =
            Timestamp::now().duration_until(wake).clamp(jiff::SignedDuration::ZERO, jiff::SignedDuration::from_mins(1));
        let stop = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(wait.unsigned_abs()) => false,
                _ = crate::process::shutdown_signal() => true,
            }
        });
        if stop {
            warn!("agent stopping; its spool is on disk");
            return Ok(ExitCode::SUCCESS);
        }
    }
}
