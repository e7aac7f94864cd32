// The Rust runtime's main is left out: envharness::os::start does what of it the harness needs.
#![no_main]

use std::ffi::{c_char, c_int};
use std::process::exit;

use envharness::config::{self, cli::Invocation};

#[global_allocator]
static ALLOCATOR: envharness::arena::StartupAllocator = envharness::arena::StartupAllocator;

#[no_mangle]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: argc and argv as the C library passes them to main.
    let args = unsafe { envharness::os::start::prepare(argc, argv) };
    let cli = match config::parse(args) {
        Ok(Invocation::Run(cli)) => cli,
        Ok(Invocation::Kv(kv)) => run_kv(*kv),
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

/// Never inlined, as the paths a plain run does not take: their locals would enlarge `main`'s
/// stack frame, which every run touches.
#[inline(never)]
fn run_kv(kv: envharness::registry::kv::Kv) -> ! {
    envharness::logging::init(0, false);
    match envharness::registry::kv::run(kv, |name| std::env::var_os(name)) {
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
