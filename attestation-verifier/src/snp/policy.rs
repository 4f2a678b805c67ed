//! What a caller requires of an SEV-SNP guest beyond the report's authenticity.
use serde::{Deserialize, Serialize};

use super::report::SnpReport;
use crate::checks::Checks;
use crate::VerifyError;

/// Minimum TCB, per component (absent: no minimum).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// Firmware (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader.
    pub bootloader: Option<u8>,
    /// PSP OS.
    pub tee: Option<u8>,
    /// SNP firmware.
    pub snp: Option<u8>,
    /// Microcode.
    pub microcode: Option<u8>,
}

/// Policy for SEV-SNP reports.
#[derive(Debug, Clone)]
pub struct SnpPolicy {
    /// Accept guests whose policy allows debugging. Off by default.
    pub allow_debug: bool,
    /// Allowed launch measurements (any one); empty: any.
    pub measurements: Vec<Vec<u8>>,
    /// Minimum reported TCB.
    pub min_tcb: MinTcb,
    /// Highest VMPL accepted (0 is the most privileged; `None`: any). Default 0: a report
    /// requested from a less privileged level (an SVSM's guest, a paravisor's) is refused
    /// unless the policy says it may be.
    pub max_vmpl: Option<u32>,
    /// Accept guests that allow SMT.
    pub allow_smt: bool,
    /// Accept guests that allow a migration agent.
    pub allow_migration_agent: bool,
    /// Require the single-socket policy bit.
    pub require_single_socket: bool,
    /// Lowest guest-policy ABI `(major, minor)` accepted.
    pub min_abi: Option<(u8, u8)>,
    /// Highest guest-policy ABI `(major, minor)` accepted.
    pub max_abi: Option<(u8, u8)>,
    /// Required report_data.
    pub expected_report_data: Option<Vec<u8>>,
    /// Required host_data.
    pub expected_host_data: Option<Vec<u8>>,
    /// Refuse a chain whose root and key kind have no CRL configured
    /// (`snp.crl_missing`). Off by default: a chain whose slot is configured always needs a
    /// current CRL; a chain whose slot is not is accepted and its report says
    /// `revocation: not_checked`.
    pub require_crl: bool,
    /// How long past its nextUpdate a CRL is still used (seconds).
    pub crl_grace_secs: u64,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            allow_debug: false,
            measurements: vec![],
            min_tcb: MinTcb::default(),
            max_vmpl: Some(0),
            allow_smt: true,
            allow_migration_agent: false,
            require_single_socket: false,
            min_abi: None,
            max_abi: None,
            expected_report_data: None,
            expected_host_data: None,
            require_crl: false,
            crl_grace_secs: crate::crl::DEFAULT_CRL_GRACE_SECS,
        }
    }
}

impl SnpPolicy {
    pub(crate) fn check(&self, r: &SnpReport, checks: &mut Checks) -> Result<(), VerifyError> {
        if r.policy.debug && !self.allow_debug {
            checks.fail(VerifyError::DebugMode)?;
        }
        if !self.measurements.is_empty()
            && !self
                .measurements
                .iter()
                .any(|m| m.as_slice() == r.measurement)
        {
            checks.fail(VerifyError::MeasurementNotAllowed(hex::encode(
                r.measurement,
            )))?;
        }
        let t = &r.reported_tcb;
        let mins = [
            ("fmc", self.min_tcb.fmc, t.fmc),
            ("bootloader", self.min_tcb.bootloader, Some(t.bootloader)),
            ("tee", self.min_tcb.tee, Some(t.tee)),
            ("snp", self.min_tcb.snp, Some(t.snp)),
            ("microcode", self.min_tcb.microcode, Some(t.microcode)),
        ];
        for (name, min, got) in mins {
            if let (Some(min), Some(got)) = (min, got) {
                if got < min {
                    checks.fail(VerifyError::TcbTooLow {
                        component: name,
                        got,
                        min,
                    })?;
                }
            }
        }
        if let Some(max) = self.max_vmpl {
            if r.vmpl > max {
                checks.fail(VerifyError::GuestPolicy(format!(
                    "VMPL {} is above the allowed {max}",
                    r.vmpl
                )))?;
            }
        }
        if r.policy.smt && !self.allow_smt {
            checks.fail(VerifyError::GuestPolicy("the guest allows SMT".into()))?;
        }
        if r.policy.migrate_ma && !self.allow_migration_agent {
            checks.fail(VerifyError::GuestPolicy(
                "the guest allows a migration agent".into(),
            ))?;
        }
        if self.require_single_socket && !r.policy.single_socket {
            checks.fail(VerifyError::GuestPolicy(
                "the guest is not restricted to a single socket".into(),
            ))?;
        }
        let abi = (r.policy.abi_major, r.policy.abi_minor);
        if self.min_abi.is_some_and(|m| abi < m) || self.max_abi.is_some_and(|m| abi > m) {
            checks.fail(VerifyError::GuestPolicy(format!(
                "guest ABI {}.{} is outside the allowed range",
                abi.0, abi.1
            )))?;
        }
        if let Some(d) = &self.expected_report_data {
            checks.ensure(d.as_slice() == r.report_data, || {
                VerifyError::Binding("report_data is not the expected value".into())
            })?;
        }
        if let Some(d) = &self.expected_host_data {
            checks.ensure(d.as_slice() == r.host_data, || {
                VerifyError::GuestPolicy("host_data is not the expected value".into())
            })?;
        }
        Ok(())
    }
}
