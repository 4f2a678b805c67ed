//! Subcommands of `cada-verify`, one module each, plus shared input handling.
pub mod audit;
pub mod did;
pub mod evidence;
pub mod nitro;
pub mod pcrs;
pub mod policy;
pub mod pop;
pub mod seal;
pub mod serve;
pub mod snp;
pub mod tpm;

use std::io::Read;

use base64::Engine;

/// A usage or I/O problem (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A flag value, or the trimmed contents of a file for `@FILE`.
pub fn arg_value(v: &str) -> Result<String, UsageError> {
    match v.strip_prefix('@') {
        Some(path) => read_input(path).and_then(|b| {
            String::from_utf8(b)
                .map(|s| s.trim().to_owned())
                .map_err(|_| UsageError(format!("{path} is not UTF-8 text")))
        }),
        None => Ok(v.trim().to_owned()),
    }
}

/// Largest input file read.
const MAX_INPUT: u64 = 1024 * 1024;

/// Reads a file (or stdin for `-`), at most 1 MiB.
pub fn read_input(path: &str) -> Result<Vec<u8>, UsageError> {
    read_input_limited(path, MAX_INPUT)
}

/// Reads a file (or stdin for `-`), at most `max` bytes.
pub fn read_input_limited(path: &str, max: u64) -> Result<Vec<u8>, UsageError> {
    let mut buf = Vec::new();
    let res = if path == "-" {
        std::io::stdin().take(max + 1).read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(max + 1).read_to_end(&mut buf))
    };
    res.map_err(|e| UsageError(format!("cannot read {path}: {e}")))?;
    if buf.len() as u64 > max {
        return Err(UsageError(format!("{path} is larger than {max} bytes")));
    }
    Ok(buf)
}

/// Accepts raw binary, hex or base64 (standard or url-safe, padded or not).
pub fn decode_flexible(raw: Vec<u8>) -> Vec<u8> {
    let text = match std::str::from_utf8(&raw) {
        Ok(t) => t.trim(),
        Err(_) => return raw,
    };
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.is_empty()
        && compact.len() % 2 == 0
        && compact.bytes().all(|b| b.is_ascii_hexdigit())
    {
        if let Ok(b) = hex::decode(&compact) {
            return b;
        }
    }
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        if let Ok(b) = engine.decode(&compact) {
            return b;
        }
    }
    raw
}

/// Parses `--at`: RFC 3339, or `now`.
pub fn parse_time(s: &str) -> Result<cada_attestation_verifier::UnixTime, UsageError> {
    if s == "now" {
        return Ok(cada_attestation_verifier::UnixTime::now());
    }
    cada_attestation_verifier::UnixTime::parse_rfc3339(s).ok_or_else(|| {
        UsageError(format!(
            "--at {s:?}: expected RFC 3339 (2023-01-18T13:07:19Z), `now` or `document`"
        ))
    })
}

/// Parses a hex argument.
pub fn parse_hex(flag: &str, s: &str) -> Result<Vec<u8>, UsageError> {
    hex::decode(s.trim_start_matches("0x"))
        .map_err(|_| UsageError(format!("{flag} {s:?} is not hex")))
}

/// Reads every certificate of a PEM file (or one DER certificate).
pub fn read_certs(path: &str) -> Result<Vec<Vec<u8>>, UsageError> {
    let raw = read_input(path)?;
    cada_attestation_verifier::x509::certs_from_pem_or_der(&raw)
        .ok_or_else(|| UsageError(format!("{path}: bad PEM")))
}

/// Reads a PEM or DER certificate file (the first certificate).
pub fn read_cert(path: &str) -> Result<Vec<u8>, UsageError> {
    read_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| UsageError(format!("{path}: no certificate")))
}

/// Prints `v` as pretty JSON on stdout; a value that cannot be JSON (never one of ours) is
/// reported on stderr instead of printing an empty line.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print the result as JSON: {e}"),
    }
}

/// Says loudly that emulator mode is on.
pub fn warn_emulator() {
    eprintln!(
        "WARNING: --insecure-emulator accepts UNSIGNED attestation documents (QEMU's emulated NSM). \
         They prove nothing about hardware; never use this outside emulator tests."
    );
}
