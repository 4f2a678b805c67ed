//! `tpm`: a TPM 2.0 (discrete, firmware, a cloud vTPM, or swtpm) through the system TSS
//! (`tss-esapi` over libtss2), in the evidence format of [`cada_protocol::tpm`].
//!
//! At start the signer
//! 1. opens the TPM through a TCTI (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=…`);
//! 2. loads the attestation key (AK) that `cada-enclave tpm enroll` created under the
//!    endorsement key and stored, wrapped by the TPM, in the state directory, with the AK
//!    certificate the enrollment CA issued after credential activation ([`super::tpm_enroll`]);
//! 3. creates the proof key **in the TPM** under the owner hierarchy's storage primary key:
//!    ECC NIST P-256, ECDSA/SHA-256, nameAlg SHA-256, attributes `sign`, `fixedTPM`,
//!    `fixedParent`, `sensitiveDataOrigin`, `noDA`; `restricted`, `decrypt`,
//!    `encryptedDuplication`, `x509sign` clear; with [`KeyPolicy::Pcr`] (the default) its
//!    `authPolicy` is `TPM2_PolicyPCR` over the quoted PCRs at their current values and
//!    `userWithAuth` is clear, so the TPM signs with it only while the machine is in the boot
//!    state the evidence quotes; with [`KeyPolicy::None`] `userWithAuth` is set instead. The
//!    key's wrapped private part stays in this process only (never written anywhere), so it
//!    dies with the process like an enclave key.
//!
//! Evidence for (binding, nonce) is `TPM2_Certify(key, AK)` and `TPM2_Quote(AK, PCRs)`, both
//! with qualifyingData = SHA-256(binding ‖ nonce), the PCR values the quote covers, the AK
//! certificate and the EK certificate chain. Proofs are ES256, signed by `TPM2_Sign` over
//! SHA-256 of the JWS signing input; the TPM's (r, s) become JOSE's 64-byte r ‖ s.
//!
//! With a session key ([`TpmOptions::session_secs`]) the proof key is a software key instead,
//! and every evidence carries the TPM key's signature over [`cada_protocol::tpm::session_digest`]
//! for its validity: a verifier caps the evidence there, and a policy may refuse it.
//!
//! The TSS context is not thread-safe: one worker thread owns it and runs every TPM command
//! in turn; callers wait for their answer over a channel.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Mutex;

use cada_protocol::envelope::{EvidenceEnvelope, Platform as PlatformName};
use cada_protocol::jwk::{Jwk, SigAlg};
use cada_protocol::tpm::{self as fmt, AkBinding, SessionKey, TpmDocument};
use serde_bytes::ByteBuf;
use tss_esapi::abstraction::ek;
use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    AttestInfo, Auth, Data, Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    KeyDerivationFunctionScheme, PcrSelectSize, PcrSelectionList, PcrSlot, Private, Public,
    PublicBuilder, PublicEccParametersBuilder, Signature, SignatureScheme, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::Context;

use super::Platform;
use crate::key::{DeviceKey, SigningKey};
use crate::EnclaveError;

/// Files of the state directory (written by `cada-enclave tpm enroll`).
pub mod files {
    /// The AK's `TPMT_PUBLIC`.
    pub const AK_PUBLIC: &str = "tpm-ak.pub";
    /// The AK's private part, wrapped by the TPM (only this TPM can load it).
    pub const AK_PRIVATE: &str = "tpm-ak.priv";
    /// The AK certificate chain (PEM, leaf first) the enrollment CA issued.
    pub const AK_CERTS: &str = "tpm-ak-certs.pem";
    /// The EK certificate chain (PEM, leaf first; the root may be left out).
    pub const EK_CERTS: &str = "tpm-ek-certs.pem";
}

/// The SHA-256 PCRs quoted by default: the firmware, its configuration, option ROMs, the
/// boot loader and its configuration, secure-boot policy (PC Client PCRs 0–7).
pub const DEFAULT_PCRS: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// What must hold for the TPM to sign with the proof key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPolicy {
    /// `authPolicy` = `TPM2_PolicyPCR` over the quoted PCRs at their values when the key was
    /// created; `userWithAuth` clear: the key signs only in that boot state.
    Pcr,
    /// No policy; `userWithAuth` set (an empty authValue): the key signs whenever this
    /// process asks.
    None,
}

/// How to run the TPM platform.
#[derive(Debug, Clone)]
pub struct TpmOptions {
    /// The TCTI: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, `tabrmd:`, ….
    pub tcti: String,
    /// The directory `cada-enclave tpm enroll` wrote the AK and its certificates to.
    pub state_dir: PathBuf,
    /// SHA-256 PCR indices to quote (0..=23).
    pub pcrs: Vec<u8>,
    /// The proof key's policy.
    pub key_policy: KeyPolicy,
    /// A session key valid this many seconds (1..=[`fmt::MAX_SESSION_SECS`]) signs proofs
    /// instead of the TPM key; `None`: every proof is signed in the TPM.
    pub session_secs: Option<u64>,
    /// The TCG event log to send with every evidence (the firmware's, e.g.
    /// `/sys/kernel/security/tpm0/binary_bios_measurements`, read once at start), so that
    /// verifiers can replay the quoted PCRs to the events that made them.
    pub event_log: Option<PathBuf>,
}

pub(crate) fn err(detail: impl Into<String>) -> EnclaveError {
    EnclaveError::Platform {
        platform: "tpm",
        detail: detail.into(),
    }
}

pub(crate) fn tss(what: &str) -> impl FnOnce(tss_esapi::Error) -> EnclaveError + '_ {
    move |e| err(format!("{what}: {e}"))
}

type Job = Box<dyn FnOnce(&mut Context) + Send>;

/// The thread that owns the TSS context; every TPM command runs on it, one at a time.
pub(crate) struct Worker {
    tx: Mutex<mpsc::Sender<Job>>,
}

impl Worker {
    /// Opens the TPM at `tcti` on a new thread.
    pub(crate) fn open(tcti: &str) -> Result<Self, EnclaveError> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| {
            err(format!(
                "TCTI {tcti:?}: {e} (give device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=PORT)"
            ))
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), EnclaveError>>();
        let tcti_owned = tcti.to_owned();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut ctx = match Context::new(conf) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(err(format!(
                            "cannot open the TPM at {tcti_owned:?}: {e} (is the TPM there, and may this user open it?)"
                        ))));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut ctx);
                }
            })
            .map_err(|e| EnclaveError::io("start the TPM thread", e))?;
        ready_rx
            .recv()
            .map_err(|_| err("the TPM thread ended while opening the TPM"))??;
        Ok(Worker { tx: Mutex::new(tx) })
    }

    /// Runs `f` on the TPM thread and waits for its result.
    pub(crate) fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Context) -> Result<R, EnclaveError> + Send + 'static,
    ) -> Result<R, EnclaveError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |ctx| {
            let _ = tx.send(f(ctx));
        });
        self.tx
            .lock()
            .map_err(|_| err("TPM queue lock poisoned"))?
            .send(job)
            .map_err(|_| err("the TPM thread has ended"))?;
        rx.recv()
            .map_err(|_| err("the TPM thread ended during a command"))?
    }
}

/// Whether the TCTI reaches the TPM without a resource manager (swtpm, the simulator, the
/// raw device): transient objects then outlive the process that loaded them.
fn without_resource_manager(tcti: &str) -> bool {
    tcti.starts_with("swtpm") || tcti.starts_with("mssim") || tcti.starts_with("device:/dev/tpm0")
}

/// Flushes the transient objects a killed predecessor left in a TPM reached without a
/// resource manager (it has room for three); this process is then the TPM's only user.
/// (Sessions cannot be named through ESAPI: without a resource manager the signer keeps
/// none open between commands, see [`Shared::sign_digest`].)
pub(crate) fn flush_stale_objects(ctx: &mut Context, tcti: &str) -> Result<usize, EnclaveError> {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::handles::TpmHandle;
    use tss_esapi::structures::CapabilityData;
    if !without_resource_manager(tcti) {
        return Ok(0);
    }
    let mut n = 0;
    {
        let first = tss_esapi::constants::tss::TPM2_TRANSIENT_FIRST;
        let (data, _) = ctx
            .get_capability(CapabilityType::Handles, first, 64)
            .map_err(tss("list transient objects"))?;
        let CapabilityData::Handles(list) = data else {
            return Ok(0);
        };
        for h in list.iter() {
            if !matches!(h, TpmHandle::Transient(_)) {
                continue;
            }
            if let Ok(obj) = ctx.execute_without_session(|c| c.tr_from_tpm_public(*h)) {
                if ctx.flush_context(obj).is_ok() {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// A PCR selection of the SHA-256 bank (three select octets: PCRs 0–23).
pub(crate) fn selection(pcrs: &[u8]) -> Result<PcrSelectionList, EnclaveError> {
    let mut slots = Vec::new();
    let mut sorted = pcrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for i in sorted {
        if i > 23 {
            return Err(EnclaveError::BadRequest(format!(
                "PCR {i}: a TPM 2.0 PC Client has PCRs 0..=23"
            )));
        }
        slots.push(PcrSlot::try_from(1u32 << i).map_err(|e| err(format!("PCR {i}: {e}")))?);
    }
    if slots.is_empty() {
        return Err(EnclaveError::BadRequest(
            "select at least one PCR to quote".into(),
        ));
    }
    PcrSelectionList::builder()
        .with_size_of_select(PcrSelectSize::ThreeOctets)
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(tss("PCR selection"))
}

/// `TPML_PCR_SELECTION` of the SHA-256 bank with three select octets, as the TPM hashes it
/// into a PolicyPCR digest and as the quote carries it.
pub fn marshal_selection(pcrs: &[u8]) -> Vec<u8> {
    let mut bits = [0u8; 3];
    for &i in pcrs.iter().filter(|i| **i < 24) {
        bits[usize::from(i / 8)] |= 1 << (i % 8);
    }
    let mut out = Vec::with_capacity(10);
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&0x000Bu16.to_be_bytes()); // TPM_ALG_SHA256
    out.push(3);
    out.extend_from_slice(&bits);
    out
}

/// The `authPolicy` of a key usable only under `TPM2_PolicyPCR(selection, values)` (from an
/// empty policy): SHA-256(0³² ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ SHA-256(values…)),
/// the values in selection order. A verifier recomputes it from the quoted PCRs to see that
/// the certified key signs only in the boot state the quote shows.
pub fn pcr_policy_digest(pcrs: &[u8], values: &[Vec<u8>]) -> [u8; 32] {
    use aws_lc_rs::digest::{Context as Hash, SHA256};
    let mut h = Hash::new(&SHA256);
    for v in values {
        h.update(v);
    }
    let pcr_digest = h.finish();
    let mut p = Hash::new(&SHA256);
    p.update(&[0u8; 32]);
    p.update(&0x0000_017Fu32.to_be_bytes()); // TPM_CC_PolicyPCR
    p.update(&marshal_selection(pcrs));
    p.update(pcr_digest.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(p.finish().as_ref());
    out
}

/// `TPM_CC_PolicyAuthValue`.
const TPM_CC_POLICY_AUTH_VALUE: u32 = 0x0000_016B;

/// The proof key's `authPolicy` under [`KeyPolicy::Pcr`]: `TPM2_PolicyPCR(selection, values)`
/// then `TPM2_PolicyAuthValue`, i.e. SHA-256([`pcr_policy_digest`] ‖ TPM_CC_PolicyAuthValue).
/// The key then signs only in that boot state **and** for a caller that knows its authValue
/// (random at every start, held only by the signer): another TPM client satisfies PolicyPCR
/// (it checks the TPM's PCRs, not the caller) but not PolicyAuthValue.
pub fn pcr_auth_policy_digest(pcrs: &[u8], values: &[Vec<u8>]) -> [u8; 32] {
    let mut m = pcr_policy_digest(pcrs, values).to_vec();
    m.extend_from_slice(&TPM_CC_POLICY_AUTH_VALUE.to_be_bytes());
    sha256(&m)
}

/// A fresh random authValue (32 bytes from the OS RNG) for an object only this process uses.
fn random_auth() -> Result<Auth, EnclaveError> {
    use aws_lc_rs::rand::SecureRandom;
    let mut v = zeroize::Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut v)
        .map_err(|_| err("the OS random generator failed"))?;
    Auth::try_from(v.to_vec()).map_err(tss("authValue"))
}

/// Starts an HMAC session (SHA-256, unbound, unsalted, no parameter encryption) for objects
/// whose authValue is set in the context: the authValue never crosses the TPM interface, only
/// HMACs keyed with it (32 random bytes: no offline guessing). Flush it after use.
fn hmac_session(ctx: &mut Context) -> Result<AuthSession, EnclaveError> {
    start_session(ctx, SessionType::Hmac)
}

/// Flushes a session this process started.
fn flush_session(ctx: &mut Context, s: AuthSession) {
    let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(s).into());
}

fn start_session(ctx: &mut Context, kind: SessionType) -> Result<AuthSession, EnclaveError> {
    let s = ctx
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::Null,
            HashingAlgorithm::Sha256,
        )
        .map_err(|e| {
            err(format!(
                "start a TPM session: {e} (a TPM reached without a resource manager may still \
                 hold the sessions of a killed process: restart it, e.g. scripts/swtpm.sh stop \
                 and start, or reach it through /dev/tpmrm0 or tpm2-abrmd)"
            ))
        })?
        .ok_or_else(|| err("the TPM returned no session"))?;
    let (attrs, mask) = SessionAttributesBuilder::new()
        .with_continue_session(true)
        .build();
    ctx.tr_sess_set_attributes(s, attrs, mask)
        .map_err(tss("session attributes"))?;
    Ok(s)
}

/// Starts a policy session (SHA-256, no parameter encryption), kept open after each command
/// until flushed (a one-shot session would stay in the wrapper's handle table).
fn policy_session(ctx: &mut Context) -> Result<PolicySession, EnclaveError> {
    let s = start_session(ctx, SessionType::Policy)?;
    match s {
        AuthSession::PolicySession(p) => Ok(p),
        _ => Err(err("the TPM returned no policy session")),
    }
}

/// Reads the selected PCRs in the quote's order (bank by bank, indices ascending).
fn read_pcrs(ctx: &mut Context, sel: &PcrSelectionList) -> Result<Vec<Vec<u8>>, EnclaveError> {
    let mut out = Vec::new();
    let mut left = sel.clone();
    // TPM2_PCR_Read returns at most eight digests per call, in selection order.
    for _ in 0..8 {
        if left.is_empty() {
            break;
        }
        let (_, read, digests) = ctx
            .execute_without_session(|c| c.pcr_read(left.clone()))
            .map_err(tss("PCR read"))?;
        if read.is_empty() {
            return Err(err(
                "the TPM read none of the selected PCRs (is the SHA-256 bank active?)",
            ));
        }
        out.extend(digests.value().iter().map(|d| d.value().to_vec()));
        left.subtract(&read).map_err(tss("PCR selection"))?;
    }
    if !left.is_empty() {
        return Err(err("the TPM did not return every selected PCR"));
    }
    Ok(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The owner hierarchy's storage primary key (the TCG's ECC P-256 SRK template): the parent
/// of the proof key; re-created from the owner seed, so every start gets the same key.
fn srk_template() -> Result<Public, EnclaveError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(tss("SRK attributes"))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()
            .map_err(tss("SRK parameters"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(tss("SRK template"))
}

/// The proof key's template (see the module docs for every attribute).
pub(crate) fn key_template(auth_policy: Option<[u8; 32]>) -> Result<Public, EnclaveError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(auth_policy.is_none())
        .with_admin_with_policy(false)
        .with_no_da(true)
        .with_sign_encrypt(true)
        .with_restricted(false)
        .with_decrypt(false)
        .with_encrypted_duplication(false)
        .build()
        .map_err(tss("key attributes"))?;
    let mut b = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
            .build()
            .map_err(tss("key parameters"))?,
        )
        .with_ecc_unique_identifier(EccPoint::default());
    if let Some(p) = auth_policy {
        b = b.with_auth_policy(Digest::try_from(p.to_vec()).map_err(tss("key policy"))?);
    }
    b.build().map_err(tss("key template"))
}

/// The uncompressed SEC1 point of a TPM ECC P-256 public key.
pub(crate) fn p256_point(public: &Public) -> Result<Vec<u8>, EnclaveError> {
    let Public::Ecc { unique, .. } = public else {
        return Err(err("the key is not an ECC key"));
    };
    let pad = |v: &[u8]| -> Result<Vec<u8>, EnclaveError> {
        if v.len() > 32 {
            return Err(err("an ECC coordinate longer than P-256's"));
        }
        let mut out = vec![0u8; 32 - v.len()];
        out.extend_from_slice(v);
        Ok(out)
    };
    let mut p = vec![0x04];
    p.extend(pad(unique.x().value())?);
    p.extend(pad(unique.y().value())?);
    Ok(p)
}

/// JOSE's ES256 signature (r ‖ s, 32 bytes each, low-s) from a TPM ECDSA signature.
pub(crate) fn jose_es256(sig: &Signature) -> Result<Vec<u8>, EnclaveError> {
    let Signature::EcDsa(s) = sig else {
        return Err(err("the TPM did not return an ECDSA signature"));
    };
    let mut out = Vec::with_capacity(64);
    for part in [s.signature_r().value(), s.signature_s().value()] {
        // A TPM may drop leading zero octets (a TPM2B); more than 32 is not P-256.
        let part = &part[part.iter().position(|b| *b != 0).unwrap_or(part.len())..];
        if part.len() > 32 {
            return Err(err("an ECDSA signature component longer than P-256's"));
        }
        out.extend(std::iter::repeat_n(0u8, 32 - part.len()));
        out.extend_from_slice(part);
    }
    // A TPM writes either spelling of s; verifiers accept only the low-s one.
    cada_protocol::jws::ecdsa_low_s(SigAlg::ES256, &mut out);
    Ok(out)
}

fn null_ticket() -> Result<HashcheckTicket, EnclaveError> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
    .map_err(tss("hash-check ticket"))
}

/// Loads the AK the enrollment stored: the EK is re-created (its template is fixed, so it is
/// the same key), the AK loaded under it with the EK's policy, the EK flushed.
pub(crate) fn load_ak(
    ctx: &mut Context,
    public: Public,
    private: Private,
) -> Result<KeyHandle, EnclaveError> {
    let ek = ek::create_ek_object_2(
        ctx,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        None,
    )
    .map_err(tss("create the EK"))?;
    let ak = tss_esapi::abstraction::ak::load_ak(ctx, ek, None, private, public);
    let _ = ctx.flush_context(ek.into());
    ak.map_err(tss("load the AK (was it enrolled on this TPM?)"))
}

/// Loads the enrolled AK for the signer under a fresh authValue only this process knows:
/// the stored blob (empty authValue) is loaded, `TPM2_ObjectChangeAuth` makes a new private
/// part with `auth` (the same key and name: the AK certificate still names it), that part is
/// loaded with `auth` set in the context, and the empty-auth copy and the EK are flushed. So
/// another client of a TPM without a resource manager cannot quote or certify with the AK the
/// signer holds loaded; whoever can read the stored blob (`tpm-ak.priv`, 0600: the signer's
/// user, root) can still load it and use the AK (not the proof key).
fn load_ak_for_signer(
    ctx: &mut Context,
    public: Public,
    private: Private,
    auth: Auth,
) -> Result<KeyHandle, EnclaveError> {
    let ek = ek::create_ek_object_2(
        ctx,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        None,
    )
    .map_err(tss("create the EK"))?;
    let res = (|| {
        let stored = tss_esapi::abstraction::ak::load_ak(ctx, ek, None, private, public.clone())
            .map_err(tss("load the AK (was it enrolled on this TPM?)"))?;
        let changed = ctx.execute_with_session(Some(AuthSession::Password), |c| {
            c.object_change_auth(stored.into(), ek.into(), auth.clone())
                .map_err(tss("give the AK a new authValue"))
        });
        let _ = ctx.flush_context(stored.into());
        tss_esapi::abstraction::ak::load_ak(ctx, ek, Some(auth), changed?, public)
            .map_err(tss("load the AK with its new authValue"))
    })();
    let _ = ctx.flush_context(ek.into());
    res
}

/// Reads a PEM bundle of certificates (DER each, in file order).
pub(crate) fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, EnclaveError> {
    use base64::Engine;
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnclaveError::io(format!("read {}", path.display()), e))?;
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let b = body.take().unwrap_or_default();
            out.push(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|e| {
                        err(format!(
                            "{}: a certificate is not base64: {e}",
                            path.display()
                        ))
                    })?,
            );
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if out.is_empty() {
        return Err(err(format!("{}: no certificate", path.display())));
    }
    Ok(out)
}

/// Writes DER certificates as one PEM bundle.
pub(crate) fn write_pem_certs(path: &Path, certs: &[Vec<u8>]) -> Result<(), EnclaveError> {
    use base64::Engine;
    let mut text = String::new();
    for der in certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        text.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            text.push_str(&String::from_utf8_lossy(chunk));
            text.push('\n');
        }
        text.push_str("-----END CERTIFICATE-----\n");
    }
    std::fs::write(path, text).map_err(|e| EnclaveError::io(format!("write {}", path.display()), e))
}

/// The TPM-side state the worker thread keeps between commands.
struct Loaded {
    ak: KeyHandle,
    key: KeyHandle,
    /// The policy session of a PCR-bound key, kept open across signatures.
    policy: Option<PolicySession>,
}

/// Handles live in the worker's context; this only names them.
struct Shared {
    worker: Worker,
    loaded: Mutex<Option<Loaded>>,
    selection: PcrSelectionList,
    key_policy: KeyPolicy,
    /// The selected PCRs' values when the proof key was made (the boot state a session key
    /// is certified for).
    quoted: Vec<Vec<u8>>,
    /// When the PCRs last read equal to `quoted` (a session key re-checks at most every
    /// [`PCR_CHECK_EVERY`]).
    checked: Mutex<Option<std::time::Instant>>,
    /// Set for good once a quoted PCR was seen changed.
    moved: std::sync::atomic::AtomicBool,
}

/// How long a session key signs on the strength of the last PCR read: a quoted PCR extended
/// after start stops session-key proofs within this bound.
pub const PCR_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Shared {
    /// Refuses when the selected PCRs no longer hold the values the proof key was made with
    /// (read again at most every [`PCR_CHECK_EVERY`]; once changed, refused for good).
    fn check_boot_state(&self) -> Result<(), EnclaveError> {
        use std::sync::atomic::Ordering;
        let refused = || {
            err("a quoted PCR changed since the signer started: the boot state the evidence quotes is gone, so the session key signs no more (restart the signer for new evidence)")
        };
        if self.moved.load(Ordering::SeqCst) {
            return Err(refused());
        }
        let mut checked = self
            .checked
            .lock()
            .map_err(|_| err("PCR check lock poisoned"))?;
        if checked.is_some_and(|t| t.elapsed() < PCR_CHECK_EVERY) {
            return Ok(());
        }
        let sel = self.selection.clone();
        let now = self.worker.call(move |ctx| read_pcrs(ctx, &sel))?;
        if now != self.quoted {
            self.moved.store(true, Ordering::SeqCst);
            *checked = None;
            tracing::error!("a quoted PCR changed since start: the signer refuses to sign");
            return Err(refused());
        }
        *checked = Some(std::time::Instant::now());
        Ok(())
    }
}

impl Drop for Shared {
    /// Flushes the proof key, the AK and a kept policy session when the signer ends (a
    /// graceful exit: SIGTERM, SIGINT); after SIGKILL they stay loaded in a TPM without a
    /// resource manager until the next start flushes them, unusable without the authValues
    /// that died with this process.
    fn drop(&mut self) {
        let Ok(mut l) = self.loaded.lock() else {
            return;
        };
        if let Some(Loaded { ak, key, policy }) = l.take() {
            let _ = self.worker.call(move |ctx| {
                if let Some(p) = policy {
                    let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(p).into());
                }
                let _ = ctx.flush_context(key.into());
                let _ = ctx.flush_context(ak.into());
                Ok(())
            });
        }
    }
}

/// A session key whose every signature first checks that the quoted PCRs did not move.
struct SessionKeyDevice {
    key: SigningKey,
    shared: std::sync::Arc<Shared>,
}

impl DeviceKey for SessionKeyDevice {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, EnclaveError> {
        self.shared.check_boot_state()?;
        self.key.sign(msg)
    }
}

// The handles are plain numbers the TSS context on the worker thread resolves.
fn loaded(shared: &Shared) -> Result<(KeyHandle, KeyHandle, Option<PolicySession>), EnclaveError> {
    let l = shared
        .loaded
        .lock()
        .map_err(|_| err("TPM state lock poisoned"))?;
    let l = l
        .as_ref()
        .ok_or_else(|| err("the TPM keys are not loaded"))?;
    Ok((l.ak, l.key, l.policy))
}

impl Shared {
    /// TPM2_Sign of a SHA-256 digest with the proof key (through PolicyPCR when bound).
    fn sign_digest(&self, digest: [u8; 32]) -> Result<Signature, EnclaveError> {
        let (_, key, policy) = loaded(self)?;
        let sel = self.selection.clone();
        let bound = self.key_policy == KeyPolicy::Pcr;
        self.worker.call(move |ctx| {
            let digest = Digest::try_from(digest.to_vec()).map_err(tss("digest"))?;
            let scheme = SignatureScheme::EcDsa {
                hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
            };
            let (policy, fresh) = match policy {
                Some(p) => (Some(p), false),
                None if bound => (Some(policy_session(ctx)?), true),
                None => (None, false),
            };
            let ticket = null_ticket()?;
            let signed = match policy {
                Some(p) => {
                    // A policy session's digest resets after each use: PolicyPCR again. With
                    // an empty expected digest the TPM takes its current PCR values; TPM2_Sign
                    // then fails unless they are the ones the key's authPolicy names.
                    // Then PolicyAuthValue: the HMAC of TPM2_Sign is keyed with the key's
                    // authValue, which only this process knows.
                    ctx.execute_without_session(|c| {
                        c.policy_pcr(p, Digest::default(), sel.clone())?;
                        c.policy_auth_value(p)
                    })
                    .and_then(|()| {
                        ctx.execute_with_session(Some(AuthSession::PolicySession(p)), |c| {
                            c.sign(key, digest, scheme, ticket)
                        })
                    })
                    .map_err(|e| {
                        err(format!(
                            "TPM2_Sign under PolicyPCR: {e} (the key signs only while the quoted PCRs hold the values they had when it was made)"
                        ))
                    })
                }
                None => {
                    let h = hmac_session(ctx)?;
                    let r = ctx
                        .execute_with_session(Some(h), |c| c.sign(key, digest, scheme, ticket))
                        .map_err(|e| err(format!("TPM2_Sign: {e}")));
                    flush_session(ctx, h);
                    r
                }
            };
            if let (Some(p), true) = (policy, fresh) {
                let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(p).into());
            }
            signed
        })
    }
}

/// The proof key in the TPM.
struct TpmKey {
    shared: std::sync::Arc<Shared>,
}

impl DeviceKey for TpmKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, EnclaveError> {
        jose_es256(&self.shared.sign_digest(sha256(msg))?)
    }
}

/// The TPM platform.
pub struct Tpm {
    shared: std::sync::Arc<Shared>,
    pcrs: Vec<u8>,
    ak_public: Vec<u8>,
    key_public: Vec<u8>,
    certs: Vec<ByteBuf>,
    ak_certs: usize,
    session: Option<(u64, u64)>,
    event_log: Option<Vec<u8>>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tpm(pcrs {:?})", self.pcrs)
    }
}

impl Tpm {
    /// Opens the TPM, loads the enrolled AK, creates the proof key in the TPM, and returns
    /// the platform with the key proofs are signed with: the TPM key itself, or a session
    /// key of `session_alg` the TPM key certifies in every evidence.
    pub fn open(
        opts: &TpmOptions,
        session_alg: SigAlg,
    ) -> Result<(Self, SigningKey), EnclaveError> {
        let dir = &opts.state_dir;
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| {
                EnclaveError::io(
                    format!(
                        "read {} (enroll this TPM first: cada-enclave tpm enroll --state-dir {})",
                        p.display(),
                        dir.display()
                    ),
                    e,
                )
            })
        };
        let ak_public = read(files::AK_PUBLIC)?;
        let ak_private = read(files::AK_PRIVATE)?;
        let ak_certs = read_pem_certs(&dir.join(files::AK_CERTS))?;
        let ek_certs = read_pem_certs(&dir.join(files::EK_CERTS))?;
        if ak_certs.len() > usize::try_from(fmt::MAX_AK_CERTS).unwrap_or(4) {
            return Err(err(format!(
                "{}: more than {} AK certificates",
                files::AK_CERTS,
                fmt::MAX_AK_CERTS
            )));
        }
        if let Some(s) = opts.session_secs {
            if s == 0 || s > fmt::MAX_SESSION_SECS {
                return Err(EnclaveError::BadRequest(format!(
                    "--tpm-session must be 1..={} seconds",
                    fmt::MAX_SESSION_SECS
                )));
            }
        }
        let event_log = match &opts.event_log {
            None => None,
            Some(p) => {
                let log = std::fs::read(p).map_err(|e| {
                    EnclaveError::io(format!("read the event log {}", p.display()), e)
                })?;
                if log.is_empty() || log.len() > fmt::MAX_EVENT_LOG_LEN {
                    return Err(err(format!(
                        "the event log {} is {} bytes; evidence carries 1..={} bytes",
                        p.display(),
                        log.len(),
                        fmt::MAX_EVENT_LOG_LEN
                    )));
                }
                Some(log)
            }
        };
        let sel = selection(&opts.pcrs)?;
        let worker = Worker::open(&opts.tcti)?;
        let key_policy = opts.key_policy;
        let pcrs = {
            let mut p = opts.pcrs.clone();
            p.sort_unstable();
            p.dedup();
            p
        };
        let pcrs_for_policy = pcrs.clone();
        let sel2 = sel.clone();
        let tcti = opts.tcti.clone();
        let (ak, key, key_public, policy, quoted) = worker.call(move |ctx| {
            let stale = flush_stale_objects(ctx, &tcti)?;
            if stale > 0 {
                tracing::warn!(
                    stale,
                    "flushed transient objects a previous process left in the TPM"
                );
            }
            let akp = Public::unmarshall(&ak_public).map_err(tss("the stored AK public"))?;
            let akpriv = Private::try_from(ak_private).map_err(tss("the stored AK private"))?;
            let ak = load_ak_for_signer(ctx, akp, akpriv, random_auth()?)?;
            let (auth_policy, quoted) = match key_policy {
                KeyPolicy::Pcr => {
                    let values = read_pcrs(ctx, &sel2)?;
                    (
                        Some(pcr_auth_policy_digest(&pcrs_for_policy, &values)),
                        values,
                    )
                }
                KeyPolicy::None => (None, read_pcrs(ctx, &sel2)?),
            };
            let key_auth = random_auth()?;
            let srk = ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.create_primary(Hierarchy::Owner, srk_template()?, None, None, None, None)
                        .map_err(tss("create the storage primary key"))
                })?
                .key_handle;
            let made = ctx.execute_with_session(Some(AuthSession::Password), |c| {
                let created = c
                    .create(
                        srk,
                        key_template(auth_policy)?,
                        Some(key_auth.clone()),
                        None,
                        None,
                        None,
                    )
                    .map_err(tss("create the proof key"))?;
                let handle = c
                    .load(srk, created.out_private, created.out_public.clone())
                    .map_err(tss("load the proof key"))?;
                c.tr_set_auth(handle.into(), key_auth)
                    .map_err(tss("the proof key's authValue"))?;
                Ok::<_, EnclaveError>((handle, created.out_public))
            });
            let _ = ctx.flush_context(srk.into());
            let (key, key_public) = made?;
            // Through a resource manager one policy session serves every signature (the
            // manager flushes it when this process ends); without one, a session left open
            // by a killed process would stay in the TPM (which holds three), so each
            // signature then starts its own and flushes it after TPM2_Sign.
            let policy = match key_policy {
                KeyPolicy::Pcr if !without_resource_manager(&tcti) => Some(policy_session(ctx)?),
                _ => None,
            };
            Ok((ak, key, key_public, policy, quoted))
        })?;
        let key_public_bytes = key_public.marshall().map_err(tss("marshal the key"))?;
        let point = p256_point(&key_public)?;
        let shared = std::sync::Arc::new(Shared {
            worker,
            loaded: Mutex::new(Some(Loaded { ak, key, policy })),
            selection: sel,
            key_policy,
            quoted,
            checked: Mutex::new(None),
            moved: std::sync::atomic::AtomicBool::new(false),
        });
        let tpm_jwk =
            Jwk::ec(SigAlg::ES256, &point).map_err(|_| err("the TPM key is not a P-256 point"))?;
        let (signing_key, session) = match opts.session_secs {
            None => (
                SigningKey::from_device(
                    SigAlg::ES256,
                    tpm_jwk,
                    Box::new(TpmKey {
                        shared: shared.clone(),
                    }),
                )?,
                None,
            ),
            Some(secs) => {
                let nbf = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| err("the clock is before 1970"))?
                    .as_secs();
                let soft = SigningKey::generate(session_alg)?;
                let jwk = soft.jwk().clone();
                (
                    SigningKey::from_device(
                        session_alg,
                        jwk,
                        Box::new(SessionKeyDevice {
                            key: soft,
                            shared: shared.clone(),
                        }),
                    )?,
                    Some((nbf, nbf + secs)),
                )
            }
        };
        let ak_n = ak_certs.len();
        let certs = ak_certs
            .into_iter()
            .chain(ek_certs)
            .map(ByteBuf::from)
            .collect();
        let ak_public = std::fs::read(dir.join(files::AK_PUBLIC))
            .map_err(|e| EnclaveError::io("read the AK public", e))?;
        Ok((
            Tpm {
                shared,
                pcrs,
                ak_public,
                key_public: key_public_bytes,
                certs,
                ak_certs: ak_n,
                session,
                event_log,
            },
            signing_key,
        ))
    }

    /// The session key's validity (Unix seconds), when proofs are signed by one.
    pub fn session(&self) -> Option<(u64, u64)> {
        self.session
    }

    /// Whether the proof key is bound to the PCRs by its policy.
    pub fn key_policy(&self) -> KeyPolicy {
        self.shared.key_policy
    }

    /// The proof key's `TPMT_PUBLIC` (marshalled).
    pub fn key_public(&self) -> &[u8] {
        &self.key_public
    }

    /// Runs `f` on the TPM thread between the signer's own commands, on its connection
    /// (administration and tests, e.g. extending a PCR on a TPM reached without a resource
    /// manager, which serves one connection at a time).
    pub fn with_tpm<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Context) -> Result<R, EnclaveError> + Send + 'static,
    ) -> Result<R, EnclaveError> {
        self.shared.worker.call(f)
    }

    /// Signs `msg` in the TPM with the proof key (ES256, JOSE form): what a proof costs
    /// when every proof is signed in the TPM (also for benchmarks).
    pub fn sign_in_tpm(&self, msg: &[u8]) -> Result<Vec<u8>, EnclaveError> {
        jose_es256(&self.shared.sign_digest(sha256(msg))?)
    }
}

impl Platform for Tpm {
    fn name(&self) -> &'static str {
        "tpm"
    }

    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        let sel = self.shared.selection.clone();
        let values = self.shared.worker.call(move |ctx| read_pcrs(ctx, &sel))?;
        Ok(self
            .pcrs
            .iter()
            .zip(values)
            .map(|(i, v)| (format!("TPM_PCR{i}"), hex::encode(v)))
            .collect())
    }

    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        self.attest_with(binding, nonce, true)
    }

    /// Without the TCG event log: a delegation's evidence must fit 24 KiB and a real log
    /// alone takes 40–48 KiB. The quote still names the PCR values and binds the nonce; a
    /// verifier that replays the log cannot hold a TPM delegator to it (docs/tpm.md).
    fn attest_for_delegation(
        &self,
        binding: &[u8],
        nonce: &[u8],
    ) -> Result<EvidenceEnvelope, EnclaveError> {
        self.attest_with(binding, nonce, false)
    }
}

impl Tpm {
    /// [`Platform::attest`], with the configured event log or without it.
    fn attest_with(
        &self,
        binding: &[u8],
        nonce: &[u8],
        with_log: bool,
    ) -> Result<EvidenceEnvelope, EnclaveError> {
        if binding.len() > 512 || nonce.len() > 512 {
            return Err(EnclaveError::BadRequest(
                "binding and nonce are limited to 512 bytes".into(),
            ));
        }
        if self.session.is_some() {
            // The session key is certified for the boot state at start: no evidence once a
            // quoted PCR moved.
            self.shared.check_boot_state()?;
        }
        let q = fmt::qualifying_data(binding, nonce);
        let (ak, key, _) = loaded(&self.shared)?;
        let sel = self.shared.selection.clone();
        let (certify, certify_sig, quote, quote_sig, pcrs) =
            self.shared.worker.call(move |ctx| {
                let data = || Data::try_from(q.to_vec()).map_err(tss("qualifying data"));
                // The PCRs may move between the read and the quote (an extend in between): read,
                // quote, and keep the pair only when the values hash to the quote's digest.
                let mut last = String::new();
                for _ in 0..3 {
                    let values = read_pcrs(ctx, &sel)?;
                    let h = hmac_session(ctx)?;
                    let quoted = ctx.execute_with_session(Some(h), |c| {
                        c.quote(ak, data()?, SignatureScheme::Null, sel.clone())
                            .map_err(tss("TPM2_Quote"))
                    });
                    flush_session(ctx, h);
                    let (attest, sig) = quoted?;
                    let AttestInfo::Quote { info } = attest.attested() else {
                        return Err(err("TPM2_Quote returned no quote"));
                    };
                    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
                    for v in &values {
                        h.update(v);
                    }
                    if h.finish().as_ref() != info.pcr_digest().value() {
                        last = "the PCRs changed while quoting them".into();
                        continue;
                    }
                    // The key (ADMIN role: its authValue, adminWithPolicy being clear) and the
                    // AK (USER role) authorize with their authValues, in HMAC sessions.
                    let hk = hmac_session(ctx)?;
                    let ha = match hmac_session(ctx) {
                        Ok(h) => h,
                        Err(e) => {
                            flush_session(ctx, hk);
                            return Err(e);
                        }
                    };
                    let certified = ctx.execute_with_sessions((Some(hk), Some(ha), None), |c| {
                        c.certify(key.into(), ak, data()?, SignatureScheme::Null)
                            .map_err(tss("TPM2_Certify"))
                    });
                    flush_session(ctx, hk);
                    flush_session(ctx, ha);
                    let (c_attest, c_sig) = certified?;
                    let m = |r: Result<Vec<u8>, tss_esapi::Error>| r.map_err(tss("marshal"));
                    return Ok((
                        m(c_attest.marshall())?,
                        m(c_sig.marshall())?,
                        m(attest.marshall())?,
                        m(sig.marshall())?,
                        values,
                    ));
                }
                Err(err(last))
            })?;
        let session = match self.session {
            None => None,
            Some((nbf, exp)) => {
                let sig = self
                    .shared
                    .sign_digest(fmt::session_digest(&q, nbf, exp))?
                    .marshall()
                    .map_err(tss("marshal"))?;
                Some(SessionKey { nbf, exp, sig })
            }
        };
        let doc = TpmDocument {
            ak: self.ak_public.clone(),
            ak_binding: AkBinding::Certificate {
                ak_certs: self.ak_certs,
            },
            key: self.key_public.clone(),
            certify,
            certify_sig,
            quote,
            quote_sig,
            pcrs,
            log: if with_log {
                self.event_log.clone()
            } else {
                None
            },
            session,
        };
        Ok(EvidenceEnvelope {
            platform: PlatformName::Tpm,
            document: doc.to_cbor(),
            certs: self.certs.clone(),
            binding: binding.to_vec(),
            nonce: nonce.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_marshals_as_the_tpm_hashes_it() {
        assert_eq!(
            marshal_selection(&[0, 1, 2, 3, 4, 5, 6, 7]),
            vec![0, 0, 0, 1, 0x00, 0x0B, 3, 0xFF, 0, 0]
        );
        assert_eq!(
            marshal_selection(&[7, 16, 23]),
            vec![0, 0, 0, 1, 0x00, 0x0B, 3, 0x80, 0, 0x81]
        );
    }

    #[test]
    fn pcr_policy_is_the_digest_the_tpm_computes() {
        // swtpm (libtpms) signed under PolicyPCR(SHA-256 PCRs 0–7, all zero) with a key whose
        // authPolicy was this value, and `cada-verify tpm evidence` printed the same policy.
        assert_eq!(
            hex::encode(pcr_policy_digest(&DEFAULT_PCRS, &vec![vec![0u8; 32]; 8])),
            "9a72c2e06a93c453a86efb47532e9c7a91dcab018e675919910c58d6a1a5aa78"
        );
        assert_ne!(
            pcr_policy_digest(&DEFAULT_PCRS, &vec![vec![0u8; 32]; 8]),
            pcr_policy_digest(
                &DEFAULT_PCRS,
                &[vec![vec![0u8; 32]; 7], vec![vec![1u8; 32]]].concat()
            )
        );
    }

    #[test]
    fn jose_signature_is_fixed_width() {
        use tss_esapi::structures::{EccParameter, EccSignature};
        let sig = Signature::EcDsa(
            EccSignature::create(
                HashingAlgorithm::Sha256,
                EccParameter::try_from(vec![1u8; 31]).unwrap(),
                EccParameter::try_from([vec![0u8], vec![2u8; 32]].concat()).unwrap(),
            )
            .unwrap(),
        );
        let j = jose_es256(&sig).unwrap();
        assert_eq!(j.len(), 64);
        assert_eq!(j[0], 0);
        assert_eq!(&j[1..32], &[1u8; 31]);
        assert_eq!(&j[32..], &[2u8; 32]);
        let long = Signature::EcDsa(
            EccSignature::create(
                HashingAlgorithm::Sha256,
                EccParameter::try_from(vec![1u8; 33]).unwrap(),
                EccParameter::try_from(vec![2u8; 32]).unwrap(),
            )
            .unwrap(),
        );
        assert!(jose_es256(&long).is_err());
    }
}
