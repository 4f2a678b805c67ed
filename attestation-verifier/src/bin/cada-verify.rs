//! `cada-verify`: verify attestation evidence and CB-PoP proofs from the command line.
//!
//! Exit codes: 0 valid, 1 rejected, 2 usage or I/O error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "../cli/mod.rs"]
mod cli;

/// Verify AWS Nitro Enclaves attestation documents (and CADA evidence and proofs) from
/// public vendor roots alone.
///
/// Exit codes: 0 = valid, 1 = rejected (the reason is printed), 2 = usage or I/O error.
#[derive(Parser)]
#[command(name = "cada-verify", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a Nitro attestation document (raw CBOR, hex or base64; `-` reads stdin).
    ///
    /// Example: cada-verify nitro doc.cbor --at document --pcr 0=f4d4…8b --allow-debug
    Nitro(cli::nitro::NitroArgs),
    /// Verify a CB-PoP proof for a request, with the evidence that binds its key.
    ///
    /// Example: cada-verify pop --method GET --url https://api.example/x --dpop "$DPOP"
    ///          --evidence "$EVIDENCE" --trust-root sim-root.pem
    Pop(cli::pop::PopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Nitro(args) => cli::nitro::run(args),
        Command::Pop(args) => cli::pop::run(args),
    };
    match result {
        Ok(true) => ExitCode::from(0),
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cada-verify: {e}");
            ExitCode::from(2)
        }
    }
}
