//! The stratus binary: CLI → configuration → logging → event loop.

use std::process::ExitCode;

use log::{error, info};

use stratus::config::{self, Command, Config, LoadError};
use stratus::net::Server;
use stratus::store::transfer;

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(LoadError::Args(e)) => e.exit(),
        Err(LoadError::File(e)) => {
            eprintln!("stratus: {e}");
            return ExitCode::from(2);
        }
    };
    if loaded.config.print_config {
        if loaded.config.all {
            print!("{}{}", loaded.describe_all(), loaded.describe_projects());
        } else {
            print!("{}{}", loaded.describe(), loaded.describe_projects());
        }
        return ExitCode::SUCCESS;
    }
    let described = loaded.describe();
    let projects = loaded.describe_projects();
    let config = loaded.config;
    if let Some(command) = &config.command {
        return run_tool(command, &config);
    }
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
    server.enable_reload(std::env::args_os().collect(), described, projects);
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
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `stratus export` and `stratus import`: output on stdout, errors on stderr.
fn run_tool(command: &Command, config: &Config) -> ExitCode {
    let result = match command {
        Command::Export { room } => {
            transfer::export(&config.data_dir, room.as_deref()).map(|json| {
                println!("{json}");
            })
        }
        Command::Import { file } => std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))
            .and_then(|json| transfer::import(&config.data_dir, &json))
            .map(|(rooms, variables)| {
                eprintln!(
                    "imported {rooms} rooms, {variables} variables into {}",
                    config.data_dir.display()
                );
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stratus: {e}");
            ExitCode::FAILURE
        }
    }
}
