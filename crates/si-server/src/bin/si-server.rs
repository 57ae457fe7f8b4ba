//! `si-server`: the gateway. Everything it does is in [`si_server::command`].

/// mimalloc: per-thread free lists suit a server that allocates and frees small
/// buffers on every request, on any worker thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    si_server::command::main(std::env::args_os())
}
