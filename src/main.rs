//! The `patchops` command line: parse, then call one function per subcommand.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match patchops::cmd::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    patchops::cmd::init_logging(&cli);
    patchops::secrets::warn_about_passwords_in_argv();
    match patchops::cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
