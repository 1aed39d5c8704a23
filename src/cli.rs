//! Subcommands. Exit codes scripts can rely on: 0 success, 1 an error (invalid desired
//! state, unreachable repository, unreadable store…), 2 a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::git::RepoArgs;
use crate::output::OutputFormat;
use crate::{Error, Result};

#[derive(Parser, Debug)]
#[command(name = "patchops", version, about = "Operating-system updates for a fleet, declared in git")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check the desired state at a revision: every problem with file, line, column and
    /// field, and every CompliancePolicy violation (deadline targets against the catalog of
    /// --store when it exists).
    Validate {
        /// Repository (same as --repo).
        repo_pos: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
        /// Store whose catalog deadline targets are checked against (skipped when absent).
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
    },
    /// What merging a branch would change (exit 0 no change, 2 change, 1 error).
    Plan(crate::git::plan::PlanArgs),
    /// Automatic deployment rules: propose matching updates on a branch.
    Rules {
        #[command(subcommand)]
        command: crate::git::rules::RulesCommand,
    },
    /// The standalone reconciler: sync git and catalogs, reconcile, persist status, repeat.
    Run(Box<crate::standalone::RunArgs>),
    /// The management point: the HTTP API agents register with, fetch policy and the
    /// catalog from, and send state messages to.
    Serve {
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
        #[command(flatten)]
        server: crate::server::ServeArgs,
    },
    /// Show the last reconcile from the store; with --at (or --repo), the compliance
    /// snapshot of the status branch as it was at a date.
    Status {
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Read the status branch of this repository (path or URL) instead of the store.
        #[arg(long)]
        repo: Option<String>,
        /// The status branch `patchops run --status-branch` writes.
        #[arg(long, default_value = crate::git::status::DEFAULT_BRANCH)]
        status_branch: String,
        /// The last status commit at or before this RFC 3339 date or date-time (default: now).
        #[arg(long, value_name = "DATE")]
        at: Option<String>,
    },
    /// Print the CustomResourceDefinitions (or write one file per CRD with --dir).
    Crds {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Catalog tools.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Who approved or withdrew which update into which deployment, when, in which commit
    /// and merged pull request, from the branch's history. An update list's criteria are
    /// reported as one entry (`criteria: …`) approved or withdrawn when they change.
    Audit(crate::git::audit::AuditArgs),
    /// Which machines are exposed to a CVE: the updates fixing it in every catalog, per
    /// collection the machines exposed, installed, not applicable and unknown, and the
    /// deployments carrying the fix. `--list` lists CVEs by exposure.
    Cve(crate::governance::cve::CveArgs),
    /// How long patching took: release → approval (merge) → 90 % and 100 % compliant, with
    /// percentiles per severity and collection and the breaches of deadline targets.
    Sla(crate::governance::sla::SlaArgs),
    /// The Kubernetes operator: reconcile the custom resources of a namespace into the
    /// store and their status subresources.
    Controller(crate::kubernetes::ControllerArgs),
    /// Benchmarks of the reconcile core and the store (build with --release).
    Bench(crate::standalone::bench::BenchArgs),
    /// The client: registers with the management point, polls its policy, scans, downloads
    /// and installs what mandatory deployments require, and reports state messages.
    Agent(crate::agent::command::AgentArgs),
    /// The content library the management point serves to agents.
    Content {
        #[command(subcommand)]
        command: ContentCommand,
    },
    /// Registered clients: revoke a token, release a name.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// In-process agents against a management point on loopback, on an accelerated clock,
    /// ending with the compliance table.
    Simulate(crate::sim::simulate::SimulateArgs),
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Synchronize every UpdateCatalog of the desired state now; a new catalog version
    /// only when the content changed.
    Sync {
        #[command(flatten)]
        repo: RepoArgs,
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
        /// Accept a sync that drops more than a source's allowed share of its updates (or
        /// all of them); without it such a sync is refused and the catalog stays.
        #[arg(long)]
        allow_shrink: bool,
    },
    /// Import vendor data (MSRC CVRF, Debian Packages or DSA list, OSV, RPM updateinfo, native).
    Import {
        #[command(flatten)]
        args: crate::catalog::commands::ImportArgs,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Browse and search the catalog (the Update Repository).
    Show {
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
        /// Catalog version (default: the current one).
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        filter: crate::catalog::commands::Filter,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// What changed between two catalog versions: added, changed, removed, expired,
    /// newly superseded.
    Diff {
        from: u64,
        to: u64,
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// The delta a client at catalog version FROM fetches to reach TO (default: the
    /// current version): new or changed updates and removed ids, as JSON or YAML.
    Delta {
        from: u64,
        to: Option<u64>,
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Json)]
        output: OutputFormat,
    },
    /// Print the JSON Schema of the native catalog format.
    Schema,
}

#[derive(Subcommand, Debug)]
pub enum ContentCommand {
    /// Copy files into the content library under their sha256 (what the catalog names).
    Add {
        /// The library folder (`serve --content-dir`).
        #[arg(long, env = "PATCHOPS_CONTENT_DIR", default_value = ".patchops/content")]
        content_dir: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Revoke a client's token at once (every management point sharing the store) and
    /// keep the name from registering again until it is released.
    Revoke {
        name: String,
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
    },
    /// Free a client's name: its token stops working and the next host registering under
    /// the name (with the enrollment secret) gets it, e.g. after a reinstall.
    Release {
        name: String,
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
    },
}

fn client(command: ClientCommand) -> Result<ExitCode> {
    let (name, store, revoke) = match command {
        ClientCommand::Revoke { name, store } => (name, store, true),
        ClientCommand::Release { name, store } => (name, store, false),
    };
    let mut store = crate::store::open_existing(&store)?;
    let found =
        if revoke { store.revoke_client(&name, jiff::Timestamp::now())? } else { store.release_client(&name)? };
    if !found {
        return Err(Error::Usage(format!("no client named {name:?} in {}; check the name", store.location())));
    }
    if revoke {
        println!("client {name}: token revoked; the name cannot register until `patchops client release {name}`");
    } else {
        println!("client {name}: released; the next host registering as {name} gets the name");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATCHOPS_LOG")
        .unwrap_or_else(|_| "info,postgres=warn,tokio_postgres=warn".into());
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Commands that read and print, and talk to nothing that could close a pipe of theirs:
/// `patchops catalog show | head -1` should simply end.
fn only_prints(command: &Command) -> bool {
    matches!(
        command,
        Command::Validate { .. }
            | Command::Plan(_)
            | Command::Status { .. }
            | Command::Crds { .. }
            | Command::Catalog { .. }
            | Command::Audit(_)
    )
}

/// Rust ignores SIGPIPE, so a write to a closed stdout fails and `println!` panics. For
/// commands that only print, the default action — end at once, like `cat` — is what a
/// user of `| head` expects (exit status 141, nothing on stderr).
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread is spawned; restoring a signal's
    // default action has no other effect on this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    if only_prints(&cli.command) {
        end_quietly_on_a_closed_pipe();
    }
    match cli.command {
        Command::Validate { repo_pos, mut repo, store } => {
            if let Some(r) = repo_pos {
                repo.repo = r;
            }
            validate(&repo, &store)
        }
        Command::Run(args) => crate::standalone::run(*args),
        Command::Plan(args) => crate::git::plan::run(&args),
        Command::Rules { command } => crate::git::rules::command(command),
        Command::Serve { store, server } => {
            let store = crate::store::open(&store)?;
            let store = std::sync::Arc::new(std::sync::Mutex::new(store));
            let listen = server.listen;
            let config = server.config()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Usage(format!("cannot start the runtime: {e}")))?;
            // Keep a handle here so the store is dropped outside the runtime: the
            // PostgreSQL client closes its connection synchronously.
            let keep = store.clone();
            let served = rt.block_on(crate::server::serve(listen, store, config, crate::standalone::shutdown_signal()));
            drop(rt);
            drop(keep);
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { repo, status_branch, at, output, .. } if repo.is_some() || at.is_some() => {
            let repo = RepoArgs { repo: repo.unwrap_or_else(|| ".".into()), rev: None, path: None };
            let at =
                at.map(|a| crate::git::audit::parse_date("--at", &a)).transpose()?.unwrap_or_else(jiff::Timestamp::now);
            let status = crate::git::status::snapshot_at(
                &crate::git::git_source(&repo, &crate::standalone::state_dir()),
                &status_branch,
                at,
            )?;
            crate::git::status::print(&status, output);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { store, output, .. } => {
            let store = crate::store::open_existing(&store)?;
            match store.last_reconcile()? {
                Some(record) => {
                    crate::output::print_record(&record, output);
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(Error::Usage(format!(
                    "{} holds no reconcile yet; run `patchops run --once` first",
                    store.location()
                ))),
            }
        }
        Command::Crds { dir } => {
            match dir {
                None => print!("{}", crate::resources::crds_yaml()),
                Some(dir) => {
                    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
                    for (file, crd) in crate::resources::crds() {
                        let path = dir.join(file);
                        std::fs::write(&path, crate::resources::crd_yaml(&crd))
                            .map_err(|source| Error::Io { path, source })?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog { command } => catalog(command),
        Command::Audit(args) => crate::git::audit::run(args),
        Command::Cve(args) => crate::governance::cve::run(&args),
        Command::Sla(args) => crate::governance::sla::run(&args),
        Command::Controller(args) => crate::kubernetes::run(args),
        Command::Bench(args) => crate::standalone::bench::run(args),
        Command::Agent(args) => crate::agent::command::run(args),
        Command::Simulate(args) => crate::sim::simulate::run(args),
        Command::Client { command } => client(command),
        Command::Content { command: ContentCommand::Add { content_dir, files, output } } => {
            let library = crate::server::content::ContentLibrary::open(&content_dir)?;
            let added = files.iter().map(|f| library.add_file(f)).collect::<Result<Vec<_>>>()?;
            match output {
                OutputFormat::Table => {
                    for a in &added {
                        println!("{}  {:>12}  {}", a.sha256, a.size, a.source.display());
                    }
                }
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&added).expect("serializes")),
                OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(&added).expect("serializes")),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn catalog(command: CatalogCommand) -> Result<ExitCode> {
    use crate::catalog::commands;
    match command {
        CatalogCommand::Schema => {
            print!("{}", crate::catalog::native::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Sync { repo, store, allow_shrink } => {
            let state = crate::standalone::state_dir();
            let source = crate::git::git_source(&repo, &state);
            let (tree, desired) = crate::standalone::load_desired(&source)?;
            let mut store = crate::store::open(&store)?;
            let mut syncer = crate::catalog::sync::Syncer::new(&state.join("catalog-cache"));
            syncer.allow_shrink = allow_shrink;
            let outcome = syncer.sync(
                store.as_mut(),
                &desired,
                Some((&source, tree.commit.as_str())),
                jiff::Timestamp::now(),
                true,
            )?;
            for (name, s) in &outcome.statuses {
                let c = s.conditions.first();
                println!(
                    "{name}: {} — {}",
                    c.map(|c| c.reason.as_str()).unwrap_or("-"),
                    c.map(|c| c.message.as_str()).unwrap_or("-")
                );
            }
            println!(
                "catalog version {} ({} updates){}",
                outcome.catalog.version,
                outcome.catalog.len(),
                if outcome.changed { ", new" } else { "" }
            );
            Ok(if outcome.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        CatalogCommand::Import { args, output } => {
            commands::import_files(&args, &crate::standalone::state_dir(), output)
        }
        CatalogCommand::Show { store, version, filter, output } => {
            let store = crate::store::open_existing(&store)?;
            let catalog = match version {
                Some(v) => store.load_catalog_version(v)?,
                None => store.load_catalog()?,
            };
            Ok(commands::show(&catalog, &filter, output))
        }
        CatalogCommand::Delta { from, to, store, output } => {
            let store = crate::store::open_existing(&store)?;
            let to = match to {
                Some(v) => v,
                None => store.catalog_versions()?.last().map_or(0, |v| v.version),
            };
            let delta = store.catalog_delta(from, to)?;
            match output {
                OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(&delta).expect("deltas serialize")),
                _ => println!("{}", serde_json::to_string_pretty(&delta).expect("deltas serialize")),
            }
            Ok(ExitCode::SUCCESS)
        }
        CatalogCommand::Diff { from, to, store, output } => {
            let store = crate::store::open_existing(&store)?;
            let (a, b) = (store.load_catalog_version(from)?, store.load_catalog_version(to)?);
            Ok(commands::diff(&a, &b, output))
        }
    }
}

fn validate(repo: &RepoArgs, store: &str) -> Result<ExitCode> {
    let source = crate::git::git_source(repo, &crate::standalone::state_dir());
    let (tree, desired) = crate::standalone::load_desired(&source)?;
    let fetcher = crate::catalog::source::Fetcher::new(
        &crate::standalone::state_dir().join("catalog-cache"),
        std::time::Duration::from_secs(30),
    );
    let mut failed = false;
    for (_, result) in crate::catalog::sync::check_local_sources(&desired, (&source, tree.commit.as_str()), &fetcher) {
        if let Err(e) = result {
            failed = true;
            eprintln!("error: {e}");
        }
    }
    let counts = [
        ("UpdateCatalog", desired.catalogs.len()),
        ("Collection", desired.collections.len()),
        ("ClientSettings", desired.client_settings.len()),
        ("UpdateList", desired.update_lists.len()),
        ("DeploymentTemplate", desired.templates.len()),
        ("UpdateDeployment", desired.deployments.len()),
        ("DeploymentPackage", desired.packages.len()),
        ("DeploymentRule", desired.rules.len()),
        ("Waiver", desired.waivers.len()),
        ("CompliancePolicy", desired.compliance_policies.len()),
    ];
    let summary: Vec<String> = counts.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{n} {k}")).collect();
    if !desired.compliance_policies.is_empty() {
        let path = store.strip_prefix("sqlite://").unwrap_or(store);
        let catalog = if store.contains("://") && !store.starts_with("sqlite://") || std::path::Path::new(path).exists()
        {
            crate::store::open(store)?.load_catalog()?
        } else {
            crate::catalog::Catalog::default()
        };
        for v in crate::governance::policy::violations(&desired, &catalog, source.commit_time(&tree.commit)?) {
            failed = true;
            eprintln!("error: {v}");
        }
    }
    if failed {
        return Ok(ExitCode::from(1));
    }
    println!("{}: valid ({})", tree.revision, summary.join(", "));
    Ok(ExitCode::SUCCESS)
}
