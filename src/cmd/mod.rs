//! The command layer: one file per subcommand, each holding its clap arguments and its
//! `run`. This module parses, sets up logging, and dispatches; nothing below it imports it.
//!
//! Exit codes scripts and CI gates rely on (`patchops help exit-codes` in the README):
//! 0 success (and "no changes" for `plan` and `catalog diff`), 1 an error (invalid desired
//! state, unreachable repository, unreadable store…), 2 changes found (`plan`, `catalog
//! diff`, like terraform's `-detailed-exitcode`), 64 a usage error (unknown flag, bad
//! value), 141 a closed pipe (`| head`).

pub mod agent;
pub mod audit;
pub mod catalog;
pub mod client;
pub mod completion;
pub mod content;
pub mod controller;
pub mod crds;
pub mod describe;
pub mod get;
pub mod plan;
pub mod rules;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod validate;
pub mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::Result;

/// Exit status: changes found (`plan`, `catalog diff`).
pub const EXIT_CHANGES: u8 = 2;
/// Exit status: the command line is wrong (sysexits' EX_USAGE), never shared with a result.
pub const EXIT_USAGE: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "patchops",
    version,
    about = "Operating-system updates for a fleet, declared in git",
    after_help = "Exit codes: 0 success or no changes, 1 error, 2 changes found (plan, catalog diff), \
                  64 usage error.\nEnvironment: PATCHOPS_STORE, PATCHOPS_LOG (a tracing filter, e.g. debug), \
                  NO_COLOR."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log lines on stderr (-v debug, -vv trace); PATCHOPS_LOG, when set, wins.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// No colour in logs (also when NO_COLOR is set or stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Tables without their header row (for awk, cut, sort).
    #[arg(long, global = true)]
    pub no_headers: bool,
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
    #[command(
        after_help = "Examples:\n  patchops validate --repo . --path examples/repo\n  patchops validate https://git.example.org/site.git --rev main"
    )]
    Validate(validate::Args),
    /// What merging a branch would change (exit 0 no change, 2 change, 1 error).
    #[command(
        after_help = "Examples:\n  patchops plan --path examples/repo --base main --head my-change\n  patchops plan --base main --head HEAD -o markdown > plan.md   # exit 2: changes"
    )]
    Plan(plan::Args),
    /// Automatic deployment rules: propose matching updates on a branch.
    #[command(after_help = "Examples:\n  patchops rules run --repo . --path examples/repo --rules-push origin")]
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
    /// The standalone reconciler: sync git and catalogs, reconcile, persist status, repeat.
    #[command(
        after_help = "Examples:\n  patchops run --path examples/repo --simulate-fleet examples/fleet.yaml\n  patchops run --repo https://git.example.org/site.git --store postgres://patchops@db/patchops --once"
    )]
    Run(Box<run::RunArgs>),
    /// The management point: the HTTP API agents register with, fetch policy and the
    /// catalog from, and send state messages to.
    #[command(
        after_help = "Examples:\n  patchops serve --listen 0.0.0.0:8080 --enroll-secret-file /etc/patchops/enroll"
    )]
    Serve(serve::Args),
    /// Show the last reconcile from the store; with --at (or --repo), the compliance
    /// snapshot of the status branch as it was at a date.
    #[command(
        after_help = "Examples:\n  patchops status\n  patchops status -o wide --no-headers | sort -k3 -n\n  patchops status --repo . --at 2026-11-15 -o json"
    )]
    Status(status::Args),
    /// List deployments, collections, updates or clients through the management point's
    /// read API (a read token in PATCHOPS_TOKEN or ~/.config/patchops/config.yaml).
    #[command(after_help = "Examples:\n  patchops get deployments --server http://mp.example.org:8080\n  \
                            patchops get updates --cve CVE-2025-21298 -o wide\n  \
                            patchops get clients --selector role=server,site=BER -o csv > servers.csv\n  \
                            patchops get deployments --watch")]
    Get(get::Args),
    /// One deployment, client or update in full: conditions and the machines holding a
    /// deployment back, or a client's updates with their Table 1 reasons.
    #[command(after_help = "Examples:\n  patchops describe deployment 2026-11-servers\n  \
                            patchops describe client ber-ws-0042\n  patchops describe update KB5032189 -o json")]
    Describe(describe::Args),
    /// Print the CustomResourceDefinitions (or write one file per CRD with --dir).
    #[command(after_help = "Examples:\n  patchops crds | kubectl apply -f -\n  patchops crds --dir crds/")]
    Crds(crds::Args),
    /// Catalog tools.
    #[command(
        after_help = "Examples:\n  patchops catalog sync --path examples/repo\n  patchops catalog show --filter KB5032189 -o wide"
    )]
    Catalog {
        #[command(subcommand)]
        command: catalog::CatalogCommand,
    },
    /// Who approved or withdrew which update into which deployment, when, in which commit
    /// and merged pull request, from the branch's history. An update list's criteria are
    /// reported as one entry (`criteria: …`) approved or withdrawn when they change.
    #[command(
        after_help = "Examples:\n  patchops audit --path examples/repo --update KB5032189\n  patchops audit --deployment 2026-11-servers --since 2026-11-01 -o json"
    )]
    Audit(audit::Args),
    /// Which machines are exposed to a CVE: the updates fixing it in every catalog, per
    /// collection the machines exposed, installed, not applicable and unknown, and the
    /// deployments carrying the fix. `--list` lists CVEs by exposure.
    #[command(
        after_help = "Examples:\n  patchops cve CVE-2025-21298 --path examples/repo\n  patchops cve --list --severity Critical -o csv > exposure.csv"
    )]
    Cve(crate::governance::cve::CveArgs),
    /// How long patching took: release → approval (merge) → 90 % and 100 % compliant, with
    /// percentiles per severity and collection and the breaches of deadline targets.
    #[command(after_help = "Examples:\n  patchops sla --path examples/repo --since 2026-01-01\n  \
                            patchops sla --severity Critical --collection servers -o csv > sla.csv")]
    Sla(crate::governance::sla::SlaArgs),
    /// The Kubernetes operator: reconcile the custom resources of a namespace into the
    /// store and their status subresources.
    #[command(
        after_help = "Examples:\n  patchops controller --namespace patchops-site\n  patchops controller --print-rbac"
    )]
    Controller(controller::Args),
    /// Benchmarks of the reconcile core and the store (build with --release).
    #[command(after_help = "Examples:\n  cargo run --release -- bench\n  cargo run --release -- bench --suite server")]
    Bench(crate::bench::BenchArgs),
    /// The client: registers with the management point, polls its policy, scans, downloads
    /// and installs what mandatory deployments require, and reports state messages.
    #[command(
        after_help = "Examples:\n  patchops agent --server http://mp.example.org:8080 --enroll-secret-file /etc/patchops/enroll\n  patchops agent --server http://127.0.0.1:8080 --scan-now --once"
    )]
    Agent(agent::AgentArgs),
    /// The content library the management point serves to agents.
    #[command(after_help = "Examples:\n  patchops content add --content-dir /srv/patchops/content *.deb")]
    Content {
        #[command(subcommand)]
        command: content::ContentCommand,
    },
    /// Registered clients: revoke a token, release a name.
    #[command(after_help = "Examples:\n  patchops client revoke web-042\n  patchops client release web-042")]
    Client {
        #[command(subcommand)]
        command: client::ClientCommand,
    },
    /// In-process agents against a management point on loopback, on an accelerated clock,
    /// ending with the compliance table.
    #[command(after_help = "Examples:\n  patchops simulate --clients 500 --path examples/repo --duration 3d")]
    Simulate(simulate::SimulateArgs),
    /// The version, git commit and build date of this binary.
    Version(version::Args),
    /// A shell completion script: `source <(patchops completion bash)`.
    Completion(completion::Args),
}

/// Parse the command line; a usage error prints clap's message and exits 64, `--help`
/// and `--version` print and exit 0.
pub fn parse() -> std::result::Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        let _ = e.print();
        if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS }
    })
}

/// Logs on stderr: `PATCHOPS_LOG` when set, else the level `-v`/`-q` choose; colour only on
/// a terminal, without `--no-color` and without `NO_COLOR`.
pub fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATCHOPS_LOG")
        .unwrap_or_else(|_| format!("{level},postgres=warn,tokio_postgres=warn").into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(cli.no_color, std::io::stderr().is_terminal()));
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether to colour output: a terminal, no `--no-color`, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
pub fn colour(no_color_flag: bool, terminal: bool) -> bool {
    terminal && !no_color_flag && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Commands that read and print, and talk to nothing that could close a pipe of theirs:
/// `patchops catalog show | head -1` should simply end.
fn only_prints(command: &Command) -> bool {
    matches!(
        command,
        Command::Validate(_)
            | Command::Plan(_)
            | Command::Status(_)
            | Command::Crds(_)
            | Command::Get(_)
            | Command::Describe(_)
            | Command::Catalog { .. }
            | Command::Audit(_)
            | Command::Cve(_)
            | Command::Sla(_)
            | Command::Version(_)
            | Command::Completion(_)
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
    crate::output::set_no_headers(cli.no_headers);
    match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Run(args) => run::run(*args),
        Command::Plan(args) => plan::run(&args),
        Command::Rules { command } => rules::run(command),
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => status::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Get(args) => get::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Catalog { command } => catalog::run(command),
        Command::Audit(args) => audit::run(args),
        Command::Cve(args) => crate::governance::cve::run(&args),
        Command::Sla(args) => crate::governance::sla::run(&args),
        Command::Controller(args) => controller::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Client { command } => client::run(command),
        Command::Content { command } => content::run(command),
        Command::Version(args) => version::run(args),
        Command::Completion(args) => completion::run(args),
    }
}
