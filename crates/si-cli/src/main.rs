//! `si-cli`: keys, users, the audit trail, GPUs, deployment files and the
//! supervisor of the Synthetic Intelligence platform. Everything it does is in
//! the `si_cli` library.

/// mimalloc, as the gateway uses: `si-cli serve` runs the gateway itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    si_cli::main(std::env::args_os())
}
