//! The Enclave Image File format (EIF, version 4) and the PCRs an enclave booted from it
//! reports: PCR0 over kernel, cmdline and every ramdisk; PCR1 over kernel, cmdline and the
//! first (bootstrap) ramdisk; PCR2 over the other (application) ramdisks; PCR8 over the
//! signing certificate when the image is signed. Each is `SHA-384(0⁴⁸ ‖ SHA-384(data))`,
//! one extension of a zeroed register, as the Nitro hypervisor and QEMU's `nitro-enclave`
//! machine compute them.
//!
//! Layout: a 548-byte big-endian header (magic `.eif`, version, flags, default memory and
//! CPUs, section count, 32 section offsets and sizes, CRC-32 of everything after it except
//! the CRC itself), then sections, each a 12-byte header (type, flags, size) and its data.
use aws_lc_rs::digest::{self, SHA384};
use serde::Serialize;

use crate::ImageError;

/// Header size.
pub const HEADER_LEN: usize = 548;
const SECTION_HEADER_LEN: usize = 12;
const MAX_SECTIONS: usize = 32;
/// Largest EIF accepted (4 GiB of sections is far beyond any enclave image).
pub const MAX_EIF_LEN: u64 = 4 << 30;

/// Section types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SectionType {
    /// Linux kernel (bzImage).
    Kernel,
    /// Kernel command line.
    Cmdline,
    /// An initramfs (cpio, possibly compressed).
    Ramdisk,
    /// COSE signature over the PCRs (signed images).
    Signature,
    /// JSON build metadata.
    Metadata,
    /// Anything else.
    Other(u16),
}

impl SectionType {
    fn from_u16(v: u16) -> Self {
        match v {
            1 => SectionType::Kernel,
            2 => SectionType::Cmdline,
            3 => SectionType::Ramdisk,
            4 => SectionType::Signature,
            5 => SectionType::Metadata,
            o => SectionType::Other(o),
        }
    }

    fn to_u16(self) -> u16 {
        match self {
            SectionType::Kernel => 1,
            SectionType::Cmdline => 2,
            SectionType::Ramdisk => 3,
            SectionType::Signature => 4,
            SectionType::Metadata => 5,
            SectionType::Other(o) => o,
        }
    }
}

/// PCRs of an image, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EifPcrs {
    /// Whole image.
    #[serde(rename = "PCR0")]
    pub pcr0: String,
    /// Kernel and bootstrap.
    #[serde(rename = "PCR1")]
    pub pcr1: String,
    /// Application.
    #[serde(rename = "PCR2")]
    pub pcr2: String,
    /// Signing certificate (signed images only).
    #[serde(rename = "PCR8", skip_serializing_if = "Option::is_none")]
    pub pcr8: Option<String>,
}

fn bad(detail: impl Into<String>) -> ImageError {
    ImageError::Eif(detail.into())
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

fn extend(measurement: &[u8]) -> String {
    let mut ctx = digest::Context::new(&SHA384);
    ctx.update(&[0u8; 48]);
    ctx.update(measurement);
    hex::encode(ctx.finish().as_ref())
}

/// Parses an EIF, checks its structure and CRC, and computes its PCRs.
pub fn pcrs(eif: &[u8]) -> Result<EifPcrs, ImageError> {
    if eif.len() < HEADER_LEN {
        return Err(bad(format!(
            "{} bytes is shorter than the {HEADER_LEN}-byte header",
            eif.len()
        )));
    }
    if eif.len() as u64 > MAX_EIF_LEN {
        return Err(bad("larger than 4 GiB"));
    }
    if &eif[..4] != b".eif" {
        return Err(bad("magic is not \".eif\""));
    }
    let version = be16(eif, 4);
    if version < 4 {
        return Err(bad(format!("version {version}; 4 or later is required")));
    }
    if be16(eif, 6) != 0 {
        return Err(bad("header flags must be 0"));
    }
    let count = usize::from(be16(eif, 26));
    if count > MAX_SECTIONS {
        return Err(bad(format!("{count} sections; at most {MAX_SECTIONS}")));
    }
    let stored_crc = u32::from_be_bytes([eif[544], eif[545], eif[546], eif[547]]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&eif[..HEADER_LEN - 4]);
    let (mut h0, mut h1, mut h2) = (
        digest::Context::new(&SHA384),
        digest::Context::new(&SHA384),
        digest::Context::new(&SHA384),
    );
    let (mut kernel, mut cmdline, mut ramdisks) = (false, false, 0usize);
    let mut pcr8 = None;
    // Sections must tile the file exactly after the header: no gaps, no overlaps, no
    // trailing bytes that no CRC or hash covers.
    let mut expected_start = HEADER_LEN;
    for i in 0..count {
        let off = be64(eif, 28 + 8 * i);
        let size = be64(eif, 28 + 8 * MAX_SECTIONS + 8 * i);
        let start = usize::try_from(off).map_err(|_| bad("section offset out of range"))?;
        if start != expected_start {
            return Err(bad(format!(
                "section {i} starts at {start}, expected {expected_start} (gap or overlap)"
            )));
        }
        let hdr_end = start
            .checked_add(SECTION_HEADER_LEN)
            .filter(|e| *e <= eif.len())
            .ok_or_else(|| bad(format!("section {i} header is outside the file")))?;
        let h = &eif[start..hdr_end];
        let kind = SectionType::from_u16(be16(h, 0));
        if be16(h, 2) != 0 {
            return Err(bad(format!("section {i} has non-zero flags")));
        }
        if be64(h, 4) != size {
            return Err(bad(format!(
                "section {i}: size in header {size} differs from section header {}",
                be64(h, 4)
            )));
        }
        let len = usize::try_from(size).map_err(|_| bad("section size out of range"))?;
        let end = hdr_end
            .checked_add(len)
            .filter(|e| *e <= eif.len())
            .ok_or_else(|| bad(format!("section {i} data is outside the file")))?;
        let data = &eif[hdr_end..end];
        expected_start = end;
        crc.update(h);
        crc.update(data);
        match kind {
            SectionType::Kernel | SectionType::Cmdline => {
                let seen = if kind == SectionType::Kernel {
                    &mut kernel
                } else {
                    &mut cmdline
                };
                if *seen {
                    return Err(bad(format!("more than one {kind:?} section")));
                }
                *seen = true;
                h0.update(data);
                h1.update(data);
            }
            SectionType::Ramdisk => {
                h0.update(data);
                if ramdisks == 0 {
                    h1.update(data);
                } else {
                    h2.update(data);
                }
                ramdisks += 1;
            }
            SectionType::Signature => pcr8 = Some(signing_cert_fingerprint(data)?),
            SectionType::Metadata | SectionType::Other(_) => {}
        }
    }
    if expected_start != eif.len() {
        return Err(bad(format!(
            "{} bytes after the last section",
            eif.len() - expected_start
        )));
    }
    for i in count..MAX_SECTIONS {
        if be64(eif, 28 + 8 * i) != 0 || be64(eif, 28 + 8 * MAX_SECTIONS + 8 * i) != 0 {
            return Err(bad(format!("unused section slot {i} is not zero")));
        }
    }
    if !kernel || !cmdline || ramdisks == 0 {
        return Err(bad(
            "an EIF needs a kernel, a cmdline and at least one ramdisk",
        ));
    }
    if crc.finalize() != stored_crc {
        return Err(bad("CRC-32 mismatch: the image is corrupted"));
    }
    Ok(EifPcrs {
        pcr0: extend(h0.finish().as_ref()),
        pcr1: extend(h1.finish().as_ref()),
        pcr2: extend(h2.finish().as_ref()),
        pcr8: pcr8.map(|f: Vec<u8>| extend(&f)),
    })
}

/// SHA-384 of the signing certificate in a signature section: a CBOR array whose first
/// element is a map `{signing_certificate: [bytes as uints], signature: …}`.
fn signing_cert_fingerprint(section: &[u8]) -> Result<Vec<u8>, ImageError> {
    use ciborium::Value;
    let v = cada_protocol::cbor::decode_value("EIF signature", section, 1 << 20)
        .map_err(|e| bad(e.to_string()))?;
    let first = match v {
        Value::Array(a) => a.into_iter().next(),
        _ => None,
    };
    let Some(Value::Map(m)) = first else {
        return Err(bad("signature section is not an array of maps"));
    };
    let cert = cada_protocol::cbor::map_get(&m, "signing_certificate")
        .ok_or_else(|| bad("no signing_certificate"))?;
    let bytes: Vec<u8> = match cert {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Integer(n) => {
                    u8::try_from(*n).map_err(|_| bad("certificate byte out of range"))
                }
                _ => Err(bad("certificate is not an array of bytes")),
            })
            .collect::<Result<_, _>>()?,
        Value::Bytes(b) => b.clone(),
        _ => return Err(bad("signing_certificate has an unexpected type")),
    };
    Ok(digest::digest(&SHA384, &bytes).as_ref().to_vec())
}

/// Writes an EIF (version 4, flags 0) from `(type, data)` sections, deterministically.
pub fn write(
    sections: &[(SectionType, &[u8])],
    default_memory: u64,
    default_cpus: u64,
) -> Result<Vec<u8>, ImageError> {
    if sections.len() > MAX_SECTIONS {
        return Err(bad(format!("at most {MAX_SECTIONS} sections")));
    }
    let total: usize = sections
        .iter()
        .map(|(_, d)| SECTION_HEADER_LEN + d.len())
        .sum();
    let mut out = vec![0u8; HEADER_LEN];
    out.reserve(total);
    out[..4].copy_from_slice(b".eif");
    out[4..6].copy_from_slice(&4u16.to_be_bytes());
    out[8..16].copy_from_slice(&default_memory.to_be_bytes());
    out[16..24].copy_from_slice(&default_cpus.to_be_bytes());
    let count = u16::try_from(sections.len()).map_err(|_| bad("too many sections"))?;
    out[26..28].copy_from_slice(&count.to_be_bytes());
    for (i, (kind, data)) in sections.iter().enumerate() {
        let off = out.len() as u64;
        let size = data.len() as u64;
        out[28 + 8 * i..36 + 8 * i].copy_from_slice(&off.to_be_bytes());
        out[28 + 8 * MAX_SECTIONS + 8 * i..36 + 8 * MAX_SECTIONS + 8 * i]
            .copy_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&kind.to_u16().to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out[..HEADER_LEN - 4]);
    crc.update(&out[HEADER_LEN..]);
    let c = crc.finalize();
    out[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&c.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // mutation offsets from a u64 generator
mod tests {
    use super::*;

    fn sample(app: &[u8]) -> Vec<u8> {
        write(
            &[
                (SectionType::Kernel, b"kernel"),
                (SectionType::Cmdline, b"console=ttyS0"),
                (SectionType::Ramdisk, b"bootstrap"),
                (SectionType::Ramdisk, app),
            ],
            512,
            2,
        )
        .unwrap()
    }

    fn sha(parts: &[&[u8]]) -> Vec<u8> {
        let mut c = digest::Context::new(&SHA384);
        for p in parts {
            c.update(p);
        }
        c.finish().as_ref().to_vec()
    }

    #[test]
    fn pcrs_are_one_extension_of_the_section_hashes() {
        let eif = sample(b"app");
        let p = pcrs(&eif).unwrap();
        assert_eq!(
            p.pcr0,
            extend(&sha(&[b"kernel", b"console=ttyS0", b"bootstrap", b"app"]))
        );
        assert_eq!(
            p.pcr1,
            extend(&sha(&[b"kernel", b"console=ttyS0", b"bootstrap"]))
        );
        assert_eq!(p.pcr2, extend(&sha(&[b"app"])));
        assert_eq!(p.pcr8, None);
        // deterministic; one changed byte of the application changes PCR0 and PCR2 only
        assert_eq!(sample(b"app"), eif);
        let q = pcrs(&sample(b"apq")).unwrap();
        assert_ne!(q.pcr0, p.pcr0);
        assert_ne!(q.pcr2, p.pcr2);
        assert_eq!(q.pcr1, p.pcr1);
    }

    #[test]
    fn signed_images_have_pcr8_over_the_signing_certificate() {
        // [{signing_certificate: [bytes…], signature: [..]}], as nitro-cli writes it
        use ciborium::Value;
        let cert = b"DER of the signing certificate".to_vec();
        let sig = Value::Array(vec![Value::Map(vec![
            (
                Value::Text("signing_certificate".into()),
                Value::Array(cert.iter().map(|b| Value::Integer((*b).into())).collect()),
            ),
            (Value::Text("signature".into()), Value::Array(vec![])),
        ])]);
        let mut sig_bytes = Vec::new();
        ciborium::ser::into_writer(&sig, &mut sig_bytes).unwrap();
        let eif = write(
            &[
                (SectionType::Kernel, b"k"),
                (SectionType::Cmdline, b"c"),
                (SectionType::Ramdisk, b"r"),
                (SectionType::Signature, &sig_bytes),
            ],
            512,
            2,
        )
        .unwrap();
        let p = pcrs(&eif).unwrap();
        assert_eq!(p.pcr8, Some(extend(&sha(&[&cert]))));
        // The signature section is not part of PCR0.
        assert_eq!(p.pcr0, extend(&sha(&[b"k", b"c", b"r"])));
    }

    #[test]
    fn random_mutants_never_pass_the_checks() {
        // xorshift64*: reproducible. Flips, overwrites, insertions, deletions, splices,
        // truncations: every mutant that differs from the image is refused.
        let mut s = 0x5eed_e1f0_u64;
        let mut next = move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            s.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let image = sample(b"app");
        for _ in 0..20_000 {
            let mut m = image.clone();
            for _ in 0..1 + next() % 4 {
                if m.is_empty() {
                    break;
                }
                let len = m.len() as u64;
                let i = (next() % len) as usize;
                match next() % 6 {
                    0 => m[i] ^= 1 << (next() % 8),
                    1 => m[i] = next() as u8,
                    2 => m.insert(i, next() as u8),
                    3 => {
                        m.remove(i);
                    }
                    4 => {
                        let j = (next() % len) as usize;
                        let n = ((len as usize - i.max(j)).min(64)) as u64;
                        let n = (next() % (n + 1)) as usize;
                        let run = m[i..i + n].to_vec();
                        m[j..j + n].copy_from_slice(&run);
                    }
                    _ => m.truncate(i),
                }
            }
            if m != image {
                assert!(
                    matches!(pcrs(&m), Err(ImageError::Eif(_))),
                    "a mutated image passed"
                );
            }
        }
    }

    #[test]
    fn corruption_and_truncation_are_typed_errors() {
        let eif = sample(b"app");
        for len in 0..eif.len() {
            assert!(
                matches!(pcrs(&eif[..len]), Err(ImageError::Eif(_))),
                "len {len}"
            );
        }
        for pos in (0..eif.len()).step_by(7) {
            let mut m = eif.clone();
            m[pos] ^= 0x10;
            assert!(pcrs(&m).is_err(), "flip at {pos} accepted");
        }
    }
}
