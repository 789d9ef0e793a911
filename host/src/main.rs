use envsync_host::cli::Cli;
use envsync_host::{failure, logging};

/// glibc raises its mmap threshold after a large buffer is freed; from then
/// on multi-MiB buffers (S3 parts) come from per-thread arenas that keep
/// their peak, and RSS drifts far past the upload's memory bound. A fixed
/// threshold keeps those mmapped and returned when freed. It sits above the
/// 1 MiB buffers that every stream chunk and row batch allocates: mapping
/// and faulting those in afresh each time (or trimming the heap under
/// them) cost a sanitised backup a third
/// of its host CPU in the kernel (docs/benchmarks.md).
fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        // Freed chunks at the top of the heap are kept up to this much, so
        // the next batch's buffers do not fault their pages in again.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// The host holds passwords, keys and the salt: its memory and environment
/// (`/proc/PID/mem`, `environ`) are closed to other processes of the same
/// user, its children included (they are also in a Landlock domain that
/// cannot trace it; docs/security.md).
fn not_dumpable() {
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
}

fn main() {
    not_dumpable();
    bound_allocator();
    // Before the runtime's threads start, so they inherit it.
    let _ = envsync_host::capabilities::process::lower_priority();
    let cli = Cli::try_parse_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
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
