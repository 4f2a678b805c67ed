//! Our COSE_Sign1 and SEV-SNP report parsers against the design-card crates (`coset`,
//! `sev`) on the same hostile inputs, plus the features the verifier needs from them.
//!
//! Each decode runs under `catch_unwind` with a counting global allocator: the outcome is
//! accepted, a typed error, or a panic, together with the bytes the decode allocated. The
//! tables print with `--nocapture`; the assertions pin the findings ARCHITECTURE.md
//! ("Why our own COSE and SNP parsers (measured)") relies on, so a crate upgrade that changes
//! them fails here. Decode speed is measured by `benches/parsers.rs`.
mod common;

use std::alloc::System;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use cada_attestation_verifier::cose::{self, ALG_ES384};
use cada_attestation_verifier::nitro::MAX_DOCUMENT_LEN;
use cada_attestation_verifier::roots_amd::Generation;
use cada_attestation_verifier::snp::{SigningKey, SnpReport, Tcb};
use cada_attestation_verifier::VerifyError;
use coset::{iana, CborSerializable, CoseSign1, RegisteredLabelWithPrivate};
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::TcbVersion;
use sev::parser::ByteParser;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocation counts are process-wide: tests that measure them run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Typed,
    Panic,
}

/// Outcomes of one decoder over one family of inputs.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    accepted: usize,
    typed: usize,
    panics: usize,
    /// Most bytes one decode allocated.
    max_alloc: usize,
    /// Input length of that decode.
    max_alloc_input: usize,
}

impl Tally {
    fn add(&mut self, outcome: Outcome, alloc: usize, input: usize) {
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Typed => self.typed += 1,
            Outcome::Panic => self.panics += 1,
        }
        if alloc > self.max_alloc {
            self.max_alloc = alloc;
            self.max_alloc_input = input;
        }
    }

    fn cell(&self) -> String {
        format!(
            "acc {} / err {} / panic {} ; max alloc {} B (input {} B)",
            self.accepted, self.typed, self.panics, self.max_alloc, self.max_alloc_input
        )
    }
}

/// Runs one decode; `Ok` means the decoder accepted the input.
fn run<T, E>(f: impl FnOnce() -> Result<T, E>) -> (Outcome, usize) {
    let region = Region::new(GLOBAL);
    let r = catch_unwind(AssertUnwindSafe(|| f().map(drop).map_err(drop)));
    let alloc = region.change().bytes_allocated;
    let outcome = match r {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(())) => Outcome::Typed,
        Err(_) => Outcome::Panic,
    };
    (outcome, alloc)
}

fn cada_cose(b: &[u8]) -> (Outcome, usize) {
    run(|| cose::decode(b, MAX_DOCUMENT_LEN))
}

fn coset_cose(b: &[u8]) -> (Outcome, usize) {
    run(|| CoseSign1::from_slice(b))
}

fn cada_snp(b: &[u8]) -> (Outcome, usize) {
    run(|| SnpReport::parse(b, None))
}

fn sev_snp(b: &[u8]) -> (Outcome, usize) {
    run(|| AttestationReport::from_bytes(b))
}

type Decoder = fn(&[u8]) -> (Outcome, usize);

/// One row: a family of hostile inputs through both decoders.
fn row(
    table: &mut Vec<(String, Tally, Tally)>,
    name: &str,
    inputs: &[Vec<u8>],
    ours: Decoder,
    theirs: Decoder,
) -> (Tally, Tally) {
    let (mut a, mut b) = (Tally::default(), Tally::default());
    quiet(|| {
        for i in inputs {
            let (o, n) = ours(i);
            a.add(o, n, i.len());
            let (o, n) = theirs(i);
            b.add(o, n, i.len());
        }
    });
    table.push((format!("{name} [{}]", inputs.len()), a, b));
    (a, b)
}

fn print(title: &str, theirs: &str, table: &[(String, Tally, Tally)]) {
    println!("\n{title}: case | cada | {theirs}");
    for (name, a, b) in table {
        println!("{name} | {} | {}", a.cell(), b.cell());
    }
}

/// Silences the default panic message while decoders run under `catch_unwind`.
fn quiet<R>(f: impl FnOnce() -> R) -> R {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = f();
    std::panic::set_hook(hook);
    r
}

/// A definite-length CBOR byte string header and body.
fn bstr(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap();
    if let Ok(l) = u8::try_from(len) {
        if l < 24 {
            out.push(0x40 | l);
        } else {
            out.extend_from_slice(&[0x58, l]);
        }
    } else if let Ok(l) = u16::try_from(len) {
        out.push(0x59);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(0x5a);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(b);
}

fn sign1(protected: &[u8], unprotected: &[u8], payload: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut out = vec![0x84];
    bstr(&mut out, protected);
    out.extend_from_slice(unprotected);
    bstr(&mut out, payload);
    bstr(&mut out, sig);
    out
}

/// `{1: -35}`, the protected header of every real Nitro document.
const ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

fn first_doc() -> Vec<u8> {
    common::read("nitro/N01_nitrite_us-east-2_2021-10-28.cbor")
}

#[test]
fn cose_sign1_hostile_inputs() {
    let _serial = SERIAL.lock().unwrap();
    let doc = first_doc();
    let real = cose::decode(&doc, MAX_DOCUMENT_LEN).unwrap();
    let (payload, sig) = (real.payload.clone(), real.signature.clone());
    let mut t = Vec::new();
    let (ours, theirs): (Decoder, Decoder) = (cada_cose, coset_cose);
    {
        let truncs: Vec<Vec<u8>> = (0..doc.len()).map(|n| doc[..n].to_vec()).collect();
        let (a, b) = row(&mut t, "truncated at every length", &truncs, ours, theirs);
        assert_eq!((a.accepted, a.panics, b.accepted, b.panics), (0, 0, 0, 0));

        let flips: Vec<Vec<u8>> = (0..doc.len())
            .map(|i| {
                let mut d = doc.clone();
                d[i] ^= 0xff;
                d
            })
            .collect();
        let (a, b) = row(&mut t, "each byte xor 0xff", &flips, ours, theirs);
        assert_eq!((a.panics, b.panics), (0, 0));

        let mut deep = vec![0x81; 10_000];
        deep.push(0x00);
        let (a, b) = row(&mut t, "arrays nested 10,000 deep", &[deep], ours, theirs);
        assert_eq!((a.typed, b.typed), (1, 1));

        let huge_bstr = vec![0x84, 0x5a, 0xff, 0xff, 0xff, 0xff, 0xa1, 0x01, 0x38, 0x22];
        let huge_bstr64 = vec![
            0x84, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
        ];
        let (a, b) = row(
            &mut t,
            "bstr claiming 4 GiB / 2^64",
            &[huge_bstr, huge_bstr64],
            ours,
            theirs,
        );
        assert_eq!((a.typed, b.typed), (2, 2));
        assert!(a.max_alloc < 64 * 1024 && b.max_alloc < 64 * 1024);

        let huge_array = vec![0x9a, 0xff, 0xff, 0xff, 0xff, 0x00];
        let huge_map = vec![0x84, 0x40, 0xba, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02];
        let (a, b) = row(
            &mut t,
            "array / map claiming 2^32 items",
            &[huge_array, huge_map],
            ours,
            theirs,
        );
        assert_eq!((a.typed, b.typed), (2, 2));
        assert!(a.max_alloc < 64 * 1024 && b.max_alloc < 64 * 1024);

        let big = sign1(&ES384, &[0xa0], &vec![7u8; 1 << 20], &sig);
        assert!(big.len() > MAX_DOCUMENT_LEN);
        let (a, b) = row(
            &mut t,
            "1 MiB payload (> MAX_DOCUMENT_LEN 32 KiB)",
            &[big],
            ours,
            theirs,
        );
        assert_eq!(
            (a.typed, a.max_alloc),
            (1, 0),
            "refused before any allocation"
        );
        assert_eq!(b.accepted, 1, "coset has no size limit");

        let mut trailing = doc.clone();
        trailing.push(0x00);
        let (a, b) = row(&mut t, "one trailing byte", &[trailing], ours, theirs);
        assert_eq!((a.typed, b.typed), (1, 1));

        let dup_protected = sign1(
            &[0xa2, 0x01, 0x38, 0x22, 0x01, 0x26],
            &[0xa0],
            &payload,
            &sig,
        );
        let dup_unprotected = sign1(&ES384, &[0xa2, 0x04, 0x40, 0x04, 0x40], &payload, &sig);
        let dup_payload = {
            // The payload map (attestation document) repeats "nonce": only the document layer
            // above COSE can see it; both COSE decoders treat the payload as opaque bytes.
            let mut p = payload.clone();
            p.extend_from_slice(&[0x65, b'n', b'o', b'n', b'c', b'e', 0xf6]);
            sign1(&ES384, &[0xa0], &p, &sig)
        };
        let (a, b) = row(
            &mut t,
            "duplicate key in protected / unprotected",
            &[dup_protected, dup_unprotected],
            ours,
            theirs,
        );
        assert_eq!((a.typed, b.typed), (2, 2));
        let (a, b) = row(
            &mut t,
            "payload bytes not a single CBOR map (opaque)",
            &[dup_payload],
            ours,
            theirs,
        );
        assert_eq!((a.accepted, b.accepted), (1, 1));

        let mut indef_array = vec![0x9f];
        indef_array.extend_from_slice(&doc[1..]);
        indef_array.push(0xff);
        let mut indef_payload = vec![0x84];
        bstr(&mut indef_payload, &ES384);
        indef_payload.extend_from_slice(&[0xa0, 0x5f]);
        let (p1, p2) = payload.split_at(payload.len() / 2);
        bstr(&mut indef_payload, p1);
        bstr(&mut indef_payload, p2);
        indef_payload.push(0xff);
        bstr(&mut indef_payload, &sig);
        let (a, b) = row(
            &mut t,
            "indefinite-length array / payload bstr",
            &[indef_array, indef_payload],
            ours,
            theirs,
        );
        assert_eq!(
            (a.accepted, b.accepted),
            (2, 2),
            "ciborium under both accepts indefinite lengths"
        );

        let es256 = sign1(&[0xa1, 0x01, 0x26], &[0xa0], &payload, &sig);
        let text_alg = sign1(
            &[0xa1, 0x01, 0x65, b'E', b'S', b'3', b'8', b'4'],
            &[0xa0],
            &payload,
            &sig,
        );
        let (a, b) = row(
            &mut t,
            "alg ES256 (-7) / alg as text",
            &[es256.clone(), text_alg],
            ours,
            theirs,
        );
        assert_eq!((a.accepted, a.typed, b.accepted), (1, 1, 2));
        // Neither decoder enforces the algorithm: both report it and the caller decides
        // (`NitroVerifier` refuses anything but ES384 before the signature check).
        assert_eq!(
            cose::decode(&es256, MAX_DOCUMENT_LEN).unwrap().alg,
            Some(-7)
        );
        assert_eq!(
            CoseSign1::from_slice(&es256).unwrap().protected.header.alg,
            Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES256))
        );

        let mut tag17 = vec![0xd1];
        tag17.extend_from_slice(&doc);
        let (a, b) = row(
            &mut t,
            "CBOR tag 17 (COSE_Mac0) around it",
            &[tag17],
            ours,
            theirs,
        );
        assert_eq!((a.typed, b.typed), (1, 1));

        let detached = sign1(&ES384, &[0xa0], &[], &sig);
        let (a, b) = row(&mut t, "empty payload", &[detached], ours, theirs);
        assert_eq!(
            (a.typed, b.accepted),
            (1, 1),
            "cada refuses a payload-less document at decode"
        );
    }
    print("COSE_Sign1 hostile inputs", "coset 0.4", &t);
}

fn report(rel: &str) -> Vec<u8> {
    common::read(rel)
}

fn set_u32(r: &mut [u8], o: usize, v: u32) {
    r[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn snp_report_hostile_inputs() {
    let _serial = SERIAL.lock().unwrap();
    let v2 = report("sev-snp/S01_milan_virtee_report.bin");
    let v5 = report("sev-snp/S05_milan_gcp_teekit.bin");
    let mut t = Vec::new();
    let (ours, theirs): (Decoder, Decoder) = (cada_snp, sev_snp);
    {
        let mut lens: Vec<Vec<u8>> = (0..v2.len()).map(|n| v2[..n].to_vec()).collect();
        lens.push([v2.as_slice(), &[0]].concat());
        lens.push([v2.as_slice(), v2.as_slice()].concat());
        let (a, b) = row(
            &mut t,
            "short (every length) / long buffers",
            &lens,
            ours,
            theirs,
        );
        assert_eq!((a.accepted, a.panics, b.accepted, b.panics), (0, 0, 0, 0));

        let flips: Vec<Vec<u8>> = (0..v2.len())
            .map(|i| {
                let mut d = v2.clone();
                d[i] ^= 0xff;
                d
            })
            .collect();
        let (a, b) = row(&mut t, "each byte xor 0xff (v2 S01)", &flips, ours, theirs);
        assert_eq!((a.panics, b.panics), (0, 0));
        assert!(b.accepted > a.accepted, "sev checks fewer bytes than cada");

        let versions: Vec<Vec<u8>> = [0u32, 1, 4, 6, 7, u32::MAX]
            .iter()
            .map(|v| {
                let mut d = v5.clone();
                set_u32(&mut d, 0, *v);
                d
            })
            .collect();
        let (a, b) = row(
            &mut t,
            "unknown versions 0,1,4,6,7,2^32-1",
            &versions,
            ours,
            theirs,
        );
        assert_eq!(
            (a.typed, b.typed, b.accepted),
            (6, 3, 3),
            "sev accepts three unknown versions"
        );

        // The first byte of each reserved range, per layout.
        let reserved = |base: &[u8], offsets: &[usize]| -> Vec<Vec<u8>> {
            offsets
                .iter()
                .map(|o| {
                    let mut d = base.to_vec();
                    d[*o] = 1;
                    d
                })
                .collect()
        };
        let mut res = reserved(
            &v2,
            &[
                0x4C,
                0x188,
                0x1EB,
                0x1EF,
                0x1F8,
                0x2A0 + 48,
                0x2E8 + 48,
                0x2A0 + 144,
            ],
        );
        res.extend(reserved(
            &v5,
            &[
                0x4C,
                0x18B,
                0x1EB,
                0x1EF,
                0x208,
                0x2A0 + 48,
                0x2E8 + 48,
                0x2A0 + 144,
            ],
        ));
        let (a, b) = row(
            &mut t,
            "a reserved byte non-zero (v2, v5)",
            &res,
            ours,
            theirs,
        );
        assert_eq!((a.typed, a.panics, b.panics), (16, 0, 0));

        let field = |o: usize, v: u32| {
            let mut d = v5.clone();
            set_u32(&mut d, o, v);
            d
        };
        let mut policy17 = v5.clone();
        policy17[0x0A] &= !0x02;
        let mut policy_hi = v5.clone();
        policy_hi[0x0D] = 1;
        let bad_fields = vec![
            field(0x34, 2),      // SIGNATURE_ALGO
            field(0x30, 7),      // VMPL
            field(0x48, 3 << 2), // signing key 3
            field(0x48, 1 << 5), // reserved flag bit
            policy17,            // policy bit 17 (must be one) cleared
            policy_hi,           // policy reserved bit 40
        ];
        let (a, b) = row(
            &mut t,
            "sig algo 2, VMPL 7, key 3, flag bit 5, policy bits 17/40",
            &bad_fields,
            ours,
            theirs,
        );
        assert_eq!((a.typed, a.panics, b.panics), (6, 0, 0));

        // A legitimate v2 report with MASK_CHIP_KEY: the chip id is zero.
        let mut masked = v2.clone();
        masked[0x48] |= 2;
        masked[0x1A0..0x1E0].fill(0);
        let mut unknown_cpu = v5.clone();
        unknown_cpu[0x188] = 0x17;
        let (a, b) = row(
            &mut t,
            "v2 chip id masked (legitimate) / v5 CPUID family 0x17",
            &[masked.clone(), unknown_cpu],
            ours,
            theirs,
        );
        assert_eq!(cada_snp(&masked).0, Outcome::Accepted);
        assert_eq!(
            sev_snp(&masked).0,
            Outcome::Typed,
            "sev cannot read a masked v2 report"
        );
        assert_eq!(
            (a.accepted, a.typed, b.panics),
            (1, 1, 0),
            "cada refuses an unknown CPUID instead of reading it as Milan"
        );
    }
    print("SNP report hostile inputs", "sev 8", &t);
}

fn tcb_eq(ours: &Tcb, theirs: &TcbVersion) -> bool {
    (
        ours.fmc,
        ours.bootloader,
        ours.tee,
        ours.snp,
        ours.microcode,
    ) == (
        theirs.fmc,
        theirs.bootloader,
        theirs.tee,
        theirs.snp,
        theirs.microcode,
    )
}

/// What the verifier reads from a report, as both parsers see it.
fn same_fields(ours: &SnpReport, theirs: &AttestationReport) -> bool {
    let key = match ours.signing_key {
        SigningKey::Vcek => 0,
        SigningKey::Vlek => 1,
    };
    ours.version == theirs.version
        && ours.measurement == theirs.measurement
        && ours.report_data == theirs.report_data
        && ours.host_data == theirs.host_data
        && ours.chip_id == theirs.chip_id
        && ours.vmpl == theirs.vmpl
        && ours.guest_svn == theirs.guest_svn
        && ours.policy.raw == u64::from(theirs.policy)
        && ours.policy.debug == theirs.policy.debug_allowed()
        && ours.policy.migrate_ma == theirs.policy.migrate_ma_allowed()
        && ours.policy.smt == theirs.policy.smt_allowed()
        && key == theirs.key_info.signing_key()
        && ours.cpuid.map(|c| c.0) == theirs.cpuid_fam_id
        && ours.cpuid.map(|c| c.1) == theirs.cpuid_mod_id
        && ours.cpuid.map(|c| c.2) == theirs.cpuid_step
        && tcb_eq(&ours.reported_tcb, &theirs.reported_tcb)
        && tcb_eq(&ours.current_tcb, &theirs.current_tcb)
        && tcb_eq(&ours.committed_tcb, &theirs.committed_tcb)
        && tcb_eq(&ours.launch_tcb, &theirs.launch_tcb)
}

#[test]
fn what_the_verifier_needs_from_each_crate() {
    // COSE: coset keeps the exact protected bytes and rebuilds the same Sig_structure on every
    // real document, but it has no size limit and leaves `alg` to the caller (see above).
    for (meta, doc) in common::nitro_docs() {
        let ours = cose::decode(&doc, MAX_DOCUMENT_LEN).unwrap();
        let theirs = CoseSign1::from_slice(&doc).unwrap();
        assert_eq!(ours.alg, Some(ALG_ES384), "{meta}");
        assert_eq!(
            theirs.protected.original_data.as_deref(),
            Some(ours.protected.as_slice())
        );
        assert_eq!(theirs.tbs_data(b""), ours.to_be_signed());
        assert_eq!(
            theirs.protected.header.alg,
            Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES384))
        );
    }

    // SNP: every real report (versions 2, 3, 5) reads the same in both.
    let idx = common::index();
    let mut versions = Vec::new();
    for meta in idx["snp_reports"].as_array().unwrap() {
        let r = common::read(meta["file"].as_str().unwrap());
        let ours = SnpReport::parse(&r, None).unwrap();
        let theirs = AttestationReport::from_bytes(&r).unwrap();
        assert!(same_fields(&ours, &theirs), "{}", meta["file"]);
        versions.push(ours.version);
    }
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions, [2, 3, 5]);

    // The fixtures are all Milan: Genoa and Turin TCB layouts are checked on a v5 report
    // whose CPUID is rewritten (parsing only; the signature no longer matters here).
    let v5 = common::read("sev-snp/S05_milan_gcp_teekit.bin");
    for (fam, model, generation) in [
        (0x19, 0x11, Generation::Genoa),
        (0x1a, 0x02, Generation::Turin),
    ] {
        let mut r = v5.clone();
        r[0x188] = fam;
        r[0x189] = model;
        let ours = SnpReport::parse(&r, None).unwrap();
        let theirs = AttestationReport::from_bytes(&r).unwrap();
        assert_eq!(ours.generation, generation);
        assert!(same_fields(&ours, &theirs), "{generation:?}");
    }

    // sev's policy value always has bit 17 set, whatever the report says: a report with the
    // reserved-must-be-one bit cleared reads as a valid policy there (cada refuses it).
    let mut r = v5.clone();
    r[0x0A] &= !0x02;
    let theirs = AttestationReport::from_bytes(&r).unwrap();
    assert_ne!(
        u64::from(theirs.policy),
        u64::from_le_bytes(r[8..16].try_into().unwrap())
    );
    assert!(matches!(
        SnpReport::parse(&r, None),
        Err(VerifyError::SnpReport(_))
    ));
}
