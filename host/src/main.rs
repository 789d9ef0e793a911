use clap::Parser;
use envsync_host::cli::Cli;
use envsync_host::{failure, logging};

fn main() {
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
