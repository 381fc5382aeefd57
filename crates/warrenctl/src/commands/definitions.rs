//! export_definitions and import_definitions (RabbitMQ's JSON format),
//! to and from a file or `-` for stdout/stdin.

use serde_json::Value;

use crate::cli::Cli;
use crate::client::{Client, CtlError};
use crate::output::done;

/// `export_definitions PATH`.
pub(crate) fn export(c: &Client, path: &str) -> Result<(), CtlError> {
    let d = c.get("/api/definitions")?;
    let text = serde_json::to_string_pretty(&d).unwrap_or_default();
    if path == "-" {
        println!("{text}");
    } else {
        std::fs::write(path, text + "\n")
            .map_err(|e| CtlError::Usage(format!("cannot write {path}: {e}")))?;
        eprintln!("Exported definitions to {path}");
    }
    Ok(())
}

/// `import_definitions PATH`.
pub(crate) fn import(cli: &Cli, c: &Client, path: &str) -> Result<(), CtlError> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CtlError::Usage(format!("cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CtlError::Usage(format!("cannot read {path}: {e}")))?
    };
    let d: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Usage(format!("{path} is not JSON: {e}")))?;
    c.call("POST", "/api/definitions", Some(&d))?;
    done(cli, format!("Imported definitions from {path}"));
    Ok(())
}
