//! `patchops version`: the version, the git commit and the build date of this binary.

use std::process::ExitCode;

use serde::Serialize;

use crate::Result;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  patchops version\n  patchops version -o json | jq -r .gitCommit")]
pub struct Args {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What this binary is, as `-o json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version: &'static str,
    pub git_commit: &'static str,
    pub build_date: &'static str,
}

pub const VERSION: Version = Version {
    version: env!("CARGO_PKG_VERSION"),
    git_commit: env!("PATCHOPS_GIT_COMMIT"),
    build_date: env!("PATCHOPS_BUILD_DATE"),
};

pub fn run(args: Args) -> Result<ExitCode> {
    match args.output {
        Format::Text => {
            println!("patchops {} (commit {}, built {})", VERSION.version, VERSION.git_commit, VERSION.build_date)
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&VERSION).expect("versions serialize")),
    }
    Ok(ExitCode::SUCCESS)
}
