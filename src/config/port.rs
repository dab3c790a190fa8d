//! `PORT`, the variable TurboWarp's cloud-server and many hosting platforms use: when nothing
//! else sets `--listen` (no flag, no `STRATUS_LISTEN`, no `listen` in the file), `PORT=8080`
//! means `--listen 8080`, loopback like any bare port.

use super::{Config, LoadError};

/// Applies `PORT` to `config.listen`; whether it did. A `PORT` that is not a port number
/// stops the server rather than being ignored.
pub(super) fn apply(config: &mut Config) -> Result<bool, LoadError> {
    let Some(value) = std::env::var_os("PORT") else {
        return Ok(false);
    };
    let text = value.to_string_lossy();
    let text = text.trim();
    if text.is_empty() {
        return Ok(false);
    }
    let port: u16 = text.parse().map_err(|_| {
        LoadError::File(format!(
            "PORT={text:?} is not a port number (0-65535); set --listen or STRATUS_LISTEN instead"
        ))
    })?;
    config.listen = port.to_string();
    Ok(true)
}
