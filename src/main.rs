//! The stratus binary: CLI → configuration → logging → event loop.

use std::process::ExitCode;

use clap::Parser;
use log::{error, info};

use stratus::config::Config;
use stratus::net::Server;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = stratus::logging::init(config.log_level, config.log_dir.as_deref()) {
        eprintln!("stratus: {e}");
        return ExitCode::FAILURE;
    }
    let mut server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addresses() {
        Ok(addresses) => {
            for (address, tls) in addresses {
                // Tests and scripts read the address from these lines.
                let kind = if tls {
                    "listening for TLS on"
                } else {
                    "listening on"
                };
                info!("stratus {} {kind} {address}", env!("CARGO_PKG_VERSION"));
            }
        }
        Err(e) => error!("cannot read the listening address: {e}"),
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
