//! The `patchops` command line: parse, then call one function per subcommand.

use std::process::ExitCode;

// A management point parses a request on one thread and applies it on the store's: with
// glibc's malloc, freeing memory another thread allocated waits on that arena's lock
// (with 1,000 clients connected, the store's thread was switched out on those locks more
// often than on its own fsyncs). mimalloc's heaps are per thread and take such frees
// without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
