use clap::Parser;
use envsync_host::cli::Cli;
use envsync_host::{failure, logging};

/// glibc raises its mmap threshold after a large buffer is freed; from then
/// on multi-MiB buffers (S3 parts, copy chunks) come from per-thread arenas
/// that keep their peak, and RSS drifts far past the upload's memory bound.
/// A fixed threshold keeps large buffers mmapped and returned when freed.
fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

fn main() {
    bound_allocator();
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("envsync-host: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(cli.execute());
    if let Err(error) = result {
        tracing::error!("{error:#}");
        std::process::exit(failure::exit_code(&error));
    }
}
