//! Subcommands. Exit codes scripts can rely on: 0 success, 1 an error (invalid desired
//! state, unreachable repository, unreadable store…), 2 a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::git::GitSource;
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

/// Where the desired state is.
#[derive(clap::Args, Debug, Clone)]
pub struct RepoArgs {
    /// Git repository: a local path or a URL (https://, ssh://, git@host:path).
    #[arg(long, default_value = ".")]
    pub repo: String,
    /// Branch, tag or commit to read (default: HEAD).
    #[arg(long)]
    pub rev: Option<String>,
    /// Folder inside the repository holding the resources.
    #[arg(long)]
    pub path: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check the desired state at a revision: every problem with file, line, column and field.
    Validate {
        /// Repository (same as --repo).
        repo_pos: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// The standalone reconciler: sync git and catalogs, reconcile, persist status, repeat.
    Run(crate::standalone::RunArgs),
    /// Show the last reconcile from the store.
    Status {
        /// Store: a SQLite file path or a postgres:// URL.
        #[arg(long, env = "PATCHOPS_STORE", default_value = crate::standalone::DEFAULT_STORE)]
        store: String,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
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
    /// Benchmarks of the reconcile core and the store (build with --release).
    Bench(crate::standalone::bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Print the JSON Schema of the native catalog format.
    Schema,
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

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { repo_pos, mut repo } => {
            if let Some(r) = repo_pos {
                repo.repo = r;
            }
            validate(&repo)
        }
        Command::Run(args) => crate::standalone::run(args),
        Command::Status { store, output } => {
            let path = store.strip_prefix("sqlite://").unwrap_or(&store);
            let is_file = !store.contains("://") || store.starts_with("sqlite://");
            if is_file && !std::path::Path::new(path).exists() {
                return Err(Error::Usage(format!(
                    "no store at {path}; run `patchops run --once` first, or pass --store"
                )));
            }
            let store = crate::store::open(&store)?;
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
        Command::Catalog { command: CatalogCommand::Schema } => {
            print!("{}", crate::catalog::native::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => crate::standalone::bench::run(args),
    }
}

fn validate(repo: &RepoArgs) -> Result<ExitCode> {
    let source = git_source(repo, &crate::standalone::state_dir());
    let (tree, desired) = crate::standalone::load_desired(&source)?;
    let catalogs = crate::standalone::read_catalogs(&source, &tree, &desired);
    let mut failed = false;
    for (_, result) in &catalogs {
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
    ];
    let summary: Vec<String> = counts.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{n} {k}")).collect();
    if failed {
        return Ok(ExitCode::from(1));
    }
    println!("{}: valid ({})", tree.revision, summary.join(", "));
    Ok(ExitCode::SUCCESS)
}

pub fn git_source(repo: &RepoArgs, state_dir: &std::path::Path) -> GitSource {
    GitSource {
        repo: repo.repo.clone(),
        revision: repo.rev.clone(),
        path: repo.path.clone(),
        cache_dir: state_dir.join("git-cache"),
    }
}
