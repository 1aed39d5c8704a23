//! The `patchops` command line: parse, then call one function per subcommand.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = patchops::cli::Cli::parse();
    patchops::cli::init_logging(cli.log_format);
    patchops::secrets::warn_about_passwords_in_argv();
    match patchops::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
