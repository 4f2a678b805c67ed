//! The audit-log flags every server that writes one takes (`#[command(flatten)] audit:
//! AuditArgs`), beside its own `--audit-dir` and `--audit-durability`.
use std::path::Path;
use std::time::Duration;

use crate::{AuditConfig, AuditError, AuditLimits, AuditLog, Durability, FloodLimits};

/// Rotation, retention and what unauthenticated requests may cost the log.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Audit log (rotation, retention, unauthenticated requests)")]
pub struct AuditArgs {
    /// Start a new audit file once the current one reaches this size (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub audit_max_bytes: u64,
    /// Also start a new file once the current one is this old (0: by size only).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub audit_rotate_secs: u64,
    /// Keep this many files, deleting the oldest after a rotation (0: keep all). The first
    /// file left starts with a checkpoint: `cada-verify audit verify` proves the chain from
    /// it and reports the files before it as removed by retention.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub audit_keep_files: u32,
    /// Records of unauthenticated requests (no proof, or one refused before its signature
    /// verified under an attested key) written per client (IPv4 address, IPv6 /64) per
    /// second; the rest are counted in one `audit.dropped` record per second. Authenticated
    /// decisions are always written.
    #[arg(long, value_name = "N", default_value_t = FloodLimits::default().per_client)]
    pub audit_unauth_per_client: u32,
    /// Records of unauthenticated requests written per second from all clients together
    /// (each at most 2048 bytes: at most N × 2049 + 4097 bytes per second in all).
    #[arg(long, value_name = "N", default_value_t = FloodLimits::default().per_interval)]
    pub audit_unauth_per_second: u32,
    /// Export an OpenTelemetry span of every audited decision that carries a traceparent to
    /// this OTLP/HTTP collector (JSON, POST URL/v1/traces; http:// only), e.g.
    /// http://127.0.0.1:4318. Spans wait in a bounded queue and never delay a decision; the
    /// ones dropped or refused are counted in /metrics (cada_audit_otlp_spans_total).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (default: this program's name).
    #[arg(long, value_name = "NAME", requires = "otlp_endpoint")]
    pub otlp_service_name: Option<String>,
}

impl AuditArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> AuditLimits {
        AuditLimits {
            max_file_age: (self.audit_rotate_secs > 0)
                .then(|| Duration::from_secs(self.audit_rotate_secs)),
            keep_files: self.audit_keep_files,
            flood: FloodLimits {
                per_client: self.audit_unauth_per_client,
                per_interval: self.audit_unauth_per_second,
                interval_ms: 1000,
            },
        }
    }

    /// Opens (or creates) the log in `dir` with these flags and `durability`, exporting
    /// spans when `--otlp-endpoint` is given.
    pub fn open(&self, dir: &Path, durability: Durability) -> Result<AuditLog, AuditError> {
        let log = AuditLog::open_limited(
            &AuditConfig {
                dir: dir.to_path_buf(),
                max_file_bytes: self.audit_max_bytes,
                durability,
            },
            &self.limits(),
        )?;
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(log);
        };
        let service = self.otlp_service_name.clone().unwrap_or_else(|| {
            std::env::args()
                .next()
                .and_then(|a| {
                    Path::new(&a)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "cada".into())
        });
        let otlp = crate::otlp::Otlp::start(&crate::otlp::OtlpConfig::new(endpoint, &service))?;
        Ok(log.with_otlp(otlp))
    }
}
