//! `cada-verify`: verify attestation evidence and CB-PoP proofs from the command line.
//!
//! Exit codes: 0 valid, 1 rejected, 2 usage or I/O error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Verify AWS Nitro Enclaves attestation documents, CADA evidence and CB-PoP proofs from
/// public vendor roots alone — once from the command line, or as an HTTP endpoint.
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
    ///          --evidence "$EVIDENCE" --policy policy.toml
    Pop(Box<cli::pop::PopArgs>),
    /// Verify an AMD SEV-SNP report with its VCEK or VLEK.
    ///
    /// Example: cada-verify snp report.bin --vcek vcek.der --measurement 7a1e…841f
    Snp(Box<cli::snp::SnpArgs>),
    /// Verify TPM 2.0 evidence (`tpm evidence`), or a raw TPM quote with its AK given,
    /// certified or bound by an Azure HCL report (`tpm quote`).
    ///
    /// Example: cada-verify tpm evidence ev.b64 --ek-root swtpm-ca.pem --ak-root enroll.pem
    Tpm(Box<cli::tpm::TpmArgs>),
    /// Verify a CADA evidence envelope of any platform (and the key binding it carries)
    /// under the same policy as `serve`; with --audience, also whether its measurements may
    /// call that URL.
    ///
    /// Example: cada-verify evidence evidence.b64 --policy policy.toml
    ///          --audience https://api.example.com/v1/orders
    Evidence(Box<cli::evidence::EvidenceArgs>),
    /// Encrypt data to an agent's attested HPKE key, after verifying its evidence and its
    /// measurements under the policy (as for a proof to --audience). The envelope opens only
    /// inside that enclave, for a label its owner's contract grants (`cada-parent open`).
    ///
    /// Example: cada-verify seal --evidence evidence.b64 --policy policy.toml
    ///          --audience https://api.example.com/reports --label report --in report.txt
    Seal(Box<cli::seal::SealArgs>),
    /// Compute PCR0/1/2 (and PCR8 when signed) of an enclave image file, as JSON.
    Pcrs(cli::pcrs::PcrsArgs),
    /// Run the HTTP verification endpoint.
    ///
    /// Example: cada-verify serve --listen 127.0.0.1:8080 --policy /etc/cada/policy.toml
    ///          --replay-store redis://127.0.0.1:6379 --audit-dir /var/lib/cada/audit
    Serve(Box<cli::serve::ServeArgs>),
    /// Policy file tools.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// DID tools: resolve the DIDs of enclave keys (did:key) and owners (did:key, did:web).
    #[command(subcommand)]
    Did(DidCmd),
}

#[derive(Subcommand)]
enum DidCmd {
    /// Resolve a DID to its DID document and print it (JSON by default).
    ///
    /// did:key (Ed25519, P-256, P-384) resolves offline: the document is computed from the
    /// key inside the DID. did:web is fetched from the URL the did:web method maps it to
    /// (did:web:example.com → https://example.com/.well-known/did.json,
    /// did:web:example.com%3A8443:owners:alice → https://example.com:8443/owners/alice/did.json)
    /// with one GET: at most 64 KiB, within --timeout, redirects refused; the document's
    /// `id` must equal the DID and it must list an assertionMethod key CADA can read.
    /// The fetch is HTTPS: the server's certificate must chain to the Mozilla CA set built
    /// into the binary, or to the CAs given with --fetch-ca (which then replace it), and
    /// name the host.
    ///
    /// Exit codes: 0 resolved; 1 refused (malformed DID, unsupported method, non-200 or
    /// redirect answer, oversize or invalid document, id mismatch), with the `did.*` code;
    /// 2 could not find out (unreachable, timeout, TLS handshake or certificate failure).
    ///
    /// Example: cada-verify did resolve did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp
    ///
    /// Example: cada-verify did resolve did:web:owners.example.com:alice --text
    ///
    /// Example: cada-verify did resolve did:web:127.0.0.1%3A8443:alice --fetch-ca my-ca.pem
    Resolve(cli::did::ResolveArgs),
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate a policy file and print the effective policy (exit 0 valid, 1 invalid
    /// with the file, line and reason).
    ///
    /// Example: cada-verify policy check /etc/cada/policy.toml
    Check(cli::policy::PolicyCheckArgs),
    /// Decide one request under a policy and show, rule by rule in the fixed order, which
    /// rules passed and which one decided.
    ///
    /// Example: cada-verify policy explain --policy policy.toml --method GET
    ///          --url https://api.example.com/x --dpop "$DPOP" --evidence "$EVIDENCE"
    Explain(Box<cli::policy::ExplainArgs>),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check every complete line of the hash chain of an audit directory (exit 0 intact,
    /// 1 broken); reports the first broken link, and a partial last line on its own.
    Verify(cli::audit::AuditVerifyArgs),
    /// The chain of custody of one task: verifies the hash chain of every log given, joins
    /// the records of the task (and the enclaves' delegation events of it), and prints the
    /// tree of who called what for whom, each call with its decision (exit 1 when a chain
    /// is broken).
    ///
    /// Example: cada-verify audit trace task-42 --log /var/log/cada/gate --log
    ///          /var/log/cada/sts --enclave planner-contracts.json
    Trace(cli::audit::AuditTraceArgs),
}

fn main() -> ExitCode {
    // `… | head -1`: a closed stdout ends the command quietly (status 141), no panic.
    cada_protocol::cli::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Nitro(args) => cli::nitro::run(args),
        Command::Pop(args) => cli::pop::run(*args),
        Command::Serve(args) => cli::serve::run(*args),
        Command::Pcrs(args) => cli::pcrs::run(args),
        Command::Snp(args) => cli::snp::run(*args),
        Command::Tpm(args) => cli::tpm::run(*args),
        Command::Evidence(args) => cli::evidence::run(*args),
        Command::Seal(args) => cli::seal::run(*args),
        Command::Policy(PolicyCmd::Check(args)) => cli::policy::check(args),
        Command::Policy(PolicyCmd::Explain(args)) => cli::policy::explain(*args),
        Command::Audit(AuditCmd::Verify(args)) => cli::audit::audit_verify(args),
        Command::Audit(AuditCmd::Trace(args)) => cli::audit::audit_trace(&args),
        Command::Did(DidCmd::Resolve(args)) => cli::did::run(args),
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
