//! `patchops completion SHELL`: a completion script for bash, zsh, fish or PowerShell,
//! generated from the same definitions that parse the command line.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::Result;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  source <(patchops completion bash)\n  \
                        patchops completion zsh > \"${fpath[1]}/_patchops\"\n  \
                        patchops completion fish > ~/.config/fish/completions/patchops.fish\n  \
                        patchops completion powershell | Out-String | Invoke-Expression")]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "patchops", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
