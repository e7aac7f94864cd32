use std::process::exit;

use envharness::config::cli::{self, Invocation};

#[global_allocator]
static ALLOCATOR: envharness::arena::StartupAllocator = envharness::arena::StartupAllocator;

// Runs before the Rust runtime sets SIGPIPE to SIG_IGN, so the command can get back the
// disposition the harness was started with (see signals.rs).
#[used]
#[link_section = ".init_array"]
static RECORD_STARTUP_DISPOSITIONS: extern "C" fn() =
    envharness::os::signals::record_startup_dispositions;

fn main() {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(Invocation::Run(cli)) => cli,
        Ok(Invocation::Kv(kv)) => {
            envharness::logging::init(0, false);
            match envharness::registry::kv::run(*kv, |name| std::env::var_os(name)) {
                Ok(status) => exit(status),
                Err(err) => fail(err),
            }
        }
        Ok(Invocation::Show(text)) => {
            print!("{text}");
            exit(0);
        }
        Err(err) => fail(err),
    };
    envharness::logging::init(cli.verbose, cli.quiet);
    match envharness::run(*cli) {
        Ok(status) => exit(status),
        Err(err) => fail(err),
    }
}

fn fail(err: envharness::Error) -> ! {
    eprintln!(
        "envharness: {}",
        envharness::logging::one_line(&err.to_string())
    );
    exit(err.exit_status())
}
