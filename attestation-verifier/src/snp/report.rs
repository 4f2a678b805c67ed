//! The SEV-SNP ATTESTATION_REPORT (AMD SEV-SNP ABI specification, "ATTESTATION_REPORT
//! Structure"): exactly 1184 bytes, versions 2, 3 and 5, every reserved field zero.
use serde::Serialize;

use crate::roots_amd::Generation;
use crate::VerifyError;

/// Size of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// The signed part: everything before the signature.
pub const SIGNED_LEN: usize = 0x2A0;

/// A TCB_VERSION, decoded for the generation that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Tcb {
    /// Raw little-endian u64.
    #[serde(serialize_with = "ser_hex_u64")]
    pub raw: u64,
    /// Firmware (FMC) SPL — Turin only.
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

fn ser_hex_u64<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#018x}"))
}

impl Tcb {
    /// Decodes `raw` with the layout of `generation`.
    pub fn decode(raw: u64, generation: Generation) -> Self {
        let b = raw.to_le_bytes();
        match generation {
            Generation::Turin => Tcb {
                raw,
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
            Generation::Milan | Generation::Genoa => Tcb {
                raw,
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
        }
    }

    /// Components `(name, value)` in a stable order.
    pub fn components(&self) -> Vec<(&'static str, u8)> {
        let mut v = Vec::with_capacity(5);
        if let Some(f) = self.fmc {
            v.push(("fmc", f));
        }
        v.extend([
            ("bootloader", self.bootloader),
            ("tee", self.tee),
            ("snp", self.snp),
            ("microcode", self.microcode),
        ]);
        v
    }
}

/// Which key signed the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key (per chip and TCB).
    Vcek,
    /// Versioned Loaded Endorsement Key (per cloud provider).
    Vlek,
}

/// Guest policy bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuestPolicy {
    /// Raw value.
    #[serde(serialize_with = "ser_hex_u64")]
    pub raw: u64,
    /// Minimum ABI minor version.
    pub abi_minor: u8,
    /// Minimum ABI major version.
    pub abi_major: u8,
    /// SMT allowed.
    pub smt: bool,
    /// A migration agent may be associated.
    pub migrate_ma: bool,
    /// Debugging allowed (the host can read guest memory).
    pub debug: bool,
    /// Single socket only.
    pub single_socket: bool,
}

impl GuestPolicy {
    fn decode(raw: u64) -> Self {
        GuestPolicy {
            raw,
            abi_minor: raw.to_le_bytes()[0],
            abi_major: raw.to_le_bytes()[1],
            smt: raw & (1 << 16) != 0,
            migrate_ma: raw & (1 << 18) != 0,
            debug: raw & (1 << 19) != 0,
            single_socket: raw & (1 << 20) != 0,
        }
    }
}

/// A decoded report. Byte fields are kept as they are in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SnpReport {
    /// Format version (2, 3 or 5).
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: GuestPolicy,
    /// Family id (from the ID block).
    #[serde(serialize_with = "hex::serde::serialize")]
    pub family_id: [u8; 16],
    /// Image id (from the ID block).
    #[serde(serialize_with = "hex::serde::serialize")]
    pub image_id: [u8; 16],
    /// VMPL the report was requested at.
    pub vmpl: u32,
    /// Current TCB.
    pub current_tcb: Tcb,
    /// Platform info bits.
    pub platform_info: u64,
    /// Whether the author key digest is present.
    pub author_key_en: bool,
    /// Whether the chip id is masked.
    pub mask_chip_key: bool,
    /// Which key signed the report.
    pub signing_key: SigningKey,
    /// Guest-provided data (the CADA binding digest).
    #[serde(serialize_with = "hex::serde::serialize")]
    pub report_data: [u8; 64],
    /// Launch measurement.
    #[serde(serialize_with = "hex::serde::serialize")]
    pub measurement: [u8; 48],
    /// Host-provided data.
    #[serde(serialize_with = "hex::serde::serialize")]
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key.
    #[serde(serialize_with = "hex::serde::serialize")]
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key.
    #[serde(serialize_with = "hex::serde::serialize")]
    pub author_key_digest: [u8; 48],
    /// Report id.
    #[serde(serialize_with = "hex::serde::serialize")]
    pub report_id: [u8; 32],
    /// Report id of the migration agent.
    #[serde(serialize_with = "hex::serde::serialize")]
    pub report_id_ma: [u8; 32],
    /// TCB the report is signed with (selects the VCEK).
    pub reported_tcb: Tcb,
    /// CPUID family/model/stepping (version 3+).
    pub cpuid: Option<(u8, u8, u8)>,
    /// Chip id (zero when masked or VLEK-signed).
    #[serde(serialize_with = "hex::serde::serialize")]
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: Tcb,
    /// Current firmware build/minor/major.
    pub current_version: (u8, u8, u8),
    /// Committed firmware build/minor/major.
    pub committed_version: (u8, u8, u8),
    /// TCB at launch.
    pub launch_tcb: Tcb,
    /// Generation the TCB fields were decoded for.
    pub generation: Generation,
    /// Signature r (big-endian, 48 bytes).
    #[serde(skip)]
    pub sig_r: [u8; 48],
    /// Signature s (big-endian, 48 bytes).
    #[serde(skip)]
    pub sig_s: [u8; 48],
}

fn bad(detail: impl Into<String>) -> VerifyError {
    VerifyError::SnpReport(detail.into())
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn arr<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[o..o + N]);
    a
}

fn zero(b: &[u8], from: usize, to: usize, what: &str) -> Result<(), VerifyError> {
    match b[from..to].iter().position(|x| *x != 0) {
        None => Ok(()),
        Some(i) => Err(bad(format!(
            "reserved byte {:#x} ({what}) is not zero",
            from + i
        ))),
    }
}

/// The signature's little-endian 72-byte integer as a big-endian 48-byte P-384 scalar.
fn scalar(b: &[u8], o: usize, name: &str) -> Result<[u8; 48], VerifyError> {
    zero(b, o + 48, o + 72, name)?;
    let mut out = [0u8; 48];
    for (i, x) in b[o..o + 48].iter().enumerate() {
        out[47 - i] = *x;
    }
    Ok(out)
}

impl SnpReport {
    /// Parses a report. `generation` decides the TCB layout when the report has no CPUID
    /// (version 2); for version 3+ the CPUID must agree with it when it is given.
    pub fn parse(b: &[u8], generation_hint: Option<Generation>) -> Result<Self, VerifyError> {
        if b.len() != REPORT_LEN {
            return Err(bad(format!(
                "a report is exactly {REPORT_LEN} bytes, got {}",
                b.len()
            )));
        }
        let version = u32_at(b, 0x00);
        if !matches!(version, 2 | 3 | 5) {
            return Err(bad(format!(
                "unsupported report version {version} (2, 3 and 5 are known)"
            )));
        }
        let sig_algo = u32_at(b, 0x34);
        if sig_algo != 1 {
            return Err(bad(format!(
                "signature algorithm {sig_algo} is not ECDSA P-384/SHA-384 (1)"
            )));
        }
        let vmpl = u32_at(b, 0x30);
        if vmpl > 3 {
            return Err(bad(format!("VMPL {vmpl} is not 0..=3")));
        }
        let policy_raw = u64_at(b, 0x08);
        if policy_raw & (1 << 17) == 0 {
            return Err(bad("guest policy bit 17 (reserved, must be one) is zero"));
        }
        if policy_raw >> 26 != 0 {
            return Err(bad(format!(
                "guest policy {policy_raw:#x} sets reserved bits 26..63"
            )));
        }
        let flags = u32_at(b, 0x48);
        if flags >> 5 != 0 {
            return Err(bad(format!("flags {flags:#x} set reserved bits")));
        }
        let signing_key = match (flags >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            k => {
                return Err(bad(format!(
                    "signing key {k} is neither VCEK (0) nor VLEK (1)"
                )))
            }
        };
        zero(b, 0x4C, 0x50, "after flags")?;
        // MASK_CHIP_KEY: the firmware writes zeros for CHIP_ID; an id there contradicts the flag.
        if flags & 2 != 0 {
            zero(b, 0x1A0, 0x1E0, "CHIP_ID while MASK_CHIP_KEY is set")?;
        }
        let cpuid = if version >= 3 {
            zero(b, 0x18B, 0x1A0, "after CPUID")?;
            Some((b[0x188], b[0x189], b[0x18A]))
        } else {
            zero(b, 0x188, 0x1A0, "after REPORTED_TCB")?;
            None
        };
        zero(b, 0x1EB, 0x1EC, "after CURRENT_MAJOR")?;
        zero(b, 0x1EF, 0x1F0, "after COMMITTED_MAJOR")?;
        if version >= 5 {
            zero(b, 0x208, SIGNED_LEN, "after CURRENT_MIT_VECTOR")?;
        } else {
            zero(b, 0x1F8, SIGNED_LEN, "after LAUNCH_TCB")?;
        }
        zero(b, 0x2A0 + 144, REPORT_LEN, "signature padding")?;
        // A CPUID the verifier does not know is refused, never read as some generation: the
        // TCB layout (and so every TCB rule) depends on it.
        let from_cpuid = match cpuid {
            Some((f, m, _)) => Some(Generation::from_cpuid(f, m).ok_or_else(|| {
                VerifyError::SnpGeneration(format!(
                    "the report's CPUID family {f:#04x} model {m:#04x} is no SEV-SNP \
                     generation this verifier knows (Milan, Genoa, Turin)"
                ))
            })?),
            None => None,
        };
        let generation = match (from_cpuid, generation_hint) {
            (Some(c), Some(h)) if c != h => {
                return Err(VerifyError::SnpGeneration(format!(
                    "the report's CPUID says {} but the certificate is for {}",
                    c.name(),
                    h.name()
                )))
            }
            (Some(c), _) => c,
            (None, Some(h)) => h,
            (None, None) => Generation::Milan,
        };
        let tcb = |o| Tcb::decode(u64_at(b, o), generation);
        Ok(SnpReport {
            version,
            guest_svn: u32_at(b, 0x04),
            policy: GuestPolicy::decode(policy_raw),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl,
            current_tcb: tcb(0x38),
            platform_info: u64_at(b, 0x40),
            author_key_en: flags & 1 != 0,
            mask_chip_key: flags & 2 != 0,
            signing_key,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: tcb(0x180),
            cpuid,
            chip_id: arr(b, 0x1A0),
            committed_tcb: tcb(0x1E0),
            current_version: (b[0x1E8], b[0x1E9], b[0x1EA]),
            committed_version: (b[0x1EC], b[0x1ED], b[0x1EE]),
            launch_tcb: tcb(0x1F0),
            generation,
            sig_r: scalar(b, 0x2A0, "signature r")?,
            sig_s: scalar(b, 0x2E8, "signature s")?,
        })
    }

    /// `r ‖ s`, big-endian, as ECDSA verification takes it.
    pub fn signature_fixed(&self) -> [u8; 96] {
        let mut out = [0u8; 96];
        out[..48].copy_from_slice(&self.sig_r);
        out[48..].copy_from_slice(&self.sig_s);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcb_layouts_per_generation() {
        // bytes (LE): [0]=3 [1]=0 [2]=5 [3]=8 ... [7]=115
        let raw = u64::from_le_bytes([3, 0, 5, 8, 0, 0, 8, 115]);
        let milan = Tcb::decode(raw, Generation::Milan);
        assert_eq!(
            (
                milan.fmc,
                milan.bootloader,
                milan.tee,
                milan.snp,
                milan.microcode
            ),
            (None, 3, 0, 8, 115)
        );
        let turin = Tcb::decode(raw, Generation::Turin);
        assert_eq!(
            (
                turin.fmc,
                turin.bootloader,
                turin.tee,
                turin.snp,
                turin.microcode
            ),
            (Some(3), 0, 5, 8, 115)
        );
        assert_eq!(turin.components().len(), 5);
    }

    #[test]
    fn cpuid_selects_the_generation() {
        assert_eq!(Generation::from_cpuid(0x19, 0x01), Some(Generation::Milan));
        assert_eq!(Generation::from_cpuid(0x19, 0x11), Some(Generation::Genoa));
        assert_eq!(Generation::from_cpuid(0x1a, 0x02), Some(Generation::Turin));
        assert_eq!(Generation::from_cpuid(0x17, 0x31), None);
    }

    #[test]
    fn cpuid_and_certificate_must_agree() {
        let mut r = vec![0u8; REPORT_LEN];
        r[0] = 3;
        r[0x08..0x10].copy_from_slice(&0x3_0000u64.to_le_bytes());
        r[0x34] = 1;
        r[0x188..0x18B].copy_from_slice(&[0x1a, 0x02, 0x00]);
        let t = SnpReport::parse(&r, None).unwrap();
        assert_eq!(t.generation, Generation::Turin);
        assert!(matches!(
            SnpReport::parse(&r, Some(Generation::Milan)),
            Err(VerifyError::SnpGeneration(_))
        ));
        r[0x4C] = 1;
        assert!(matches!(
            SnpReport::parse(&r, None),
            Err(VerifyError::SnpReport(_))
        ));
    }

    /// Found by the coset/sev comparison: a report whose flags say MASK_CHIP_KEY but which
    /// carries a chip id was accepted.
    #[test]
    fn a_masked_chip_id_must_be_zero() {
        let mut r = vec![0u8; REPORT_LEN];
        r[0] = 3;
        r[0x08..0x10].copy_from_slice(&0x3_0000u64.to_le_bytes());
        r[0x34] = 1;
        r[0x188..0x18B].copy_from_slice(&[0x19, 0x01, 0x00]);
        r[0x48] = 2;
        assert!(SnpReport::parse(&r, None).unwrap().mask_chip_key);
        r[0x1A0] = 1;
        let e = SnpReport::parse(&r, None).unwrap_err();
        assert!(
            matches!(&e, VerifyError::SnpReport(m) if m.contains("CHIP_ID")),
            "{e}"
        );
    }

    /// Found by the coset/sev comparison (tests/parser_hardening.rs): an unknown CPUID was
    /// read as Milan, so Milan's TCB layout was applied to a report of another part.
    #[test]
    fn an_unknown_cpuid_is_refused_not_read_as_milan() {
        let mut r = vec![0u8; REPORT_LEN];
        r[0] = 3;
        r[0x08..0x10].copy_from_slice(&0x3_0000u64.to_le_bytes());
        r[0x34] = 1;
        r[0x188..0x18B].copy_from_slice(&[0x17, 0x31, 0x00]);
        for hint in [None, Some(Generation::Milan)] {
            let e = SnpReport::parse(&r, hint).unwrap_err();
            assert!(
                matches!(&e, VerifyError::SnpGeneration(m) if m.contains("0x17")),
                "{e}"
            );
        }
    }
}
