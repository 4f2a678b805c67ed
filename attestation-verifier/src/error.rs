//! The one error type of the verifier. Every variant names the rule that failed and, in its
//! message, what to check or fix.
use cada_protocol::ProtocolError;

/// Why evidence or a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Input over the hard size limit, refused before parsing.
    #[error(
        "{what} is {len} bytes; the limit is {max} bytes — is this really an attestation document?"
    )]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a COSE_Sign1 structure.
    #[error("not a COSE_Sign1 structure: {0}")]
    Cose(String),
    /// The COSE protected header names no algorithm.
    #[error("the COSE protected header has no alg; Nitro documents must say ES384 (-35)")]
    MissingAlgorithm,
    /// The COSE protected header names an algorithm other than ES384.
    #[error("the COSE protected header says alg {0}; only ES384 (-35) is accepted")]
    UnsupportedAlgorithm(String),
    /// The COSE header carries `crit` parameters this verifier cannot honour.
    #[error("the COSE header marks parameters critical; none are defined for Nitro documents")]
    CriticalHeader,
    /// The COSE_Sign1 has a detached or empty payload.
    #[error("the COSE_Sign1 payload is missing (detached payloads are not attestation documents)")]
    MissingPayload,
    /// The payload is not well-formed CBOR within the limits.
    #[error("the attestation document payload is malformed: {0}")]
    Payload(String),
    /// The payload repeats a map key.
    #[error(
        "the attestation document repeats the key {0}; duplicate keys are ambiguous and refused"
    )]
    DuplicateKey(String),
    /// A NitroTPM document was presented where an enclave document is required.
    #[error("not an enclave document: this is a NitroTPM attestation document (nitrotpm_pcrs)")]
    NotAnEnclaveDocument,
    /// A mandatory field is absent.
    #[error("the attestation document lacks the mandatory field {0}")]
    MissingField(&'static str),
    /// A field the format does not define.
    #[error("the attestation document has the unknown field {0}")]
    UnknownField(String),
    /// A field breaks its syntactic rule.
    #[error("field {field} is invalid: {rule}")]
    Field {
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        rule: String,
    },
    /// A certificate does not parse as DER X.509 v3.
    #[error("certificate {index} ({role}) does not parse: {detail}")]
    CertificateParse {
        /// Position in the path (0 = root).
        index: usize,
        /// Root, intermediate or leaf.
        role: &'static str,
        /// Parser message.
        detail: String,
    },
    /// The chain does not start at a pinned or configured root.
    #[error("the chain's root (SHA-256 {fingerprint}) is not a trusted root; pin it in the policy if you really mean to trust it")]
    UntrustedRoot {
        /// SHA-256 of the presented root, hex.
        fingerprint: String,
    },
    /// A certificate is not valid yet at the verification time.
    #[error("certificate {index} ({subject}) is not valid before {not_before}; verification time is {at}")]
    CertificateNotYetValid {
        /// Position in the path.
        index: usize,
        /// Subject, printed.
        subject: String,
        /// notBefore, RFC 3339.
        not_before: String,
        /// Verification time, RFC 3339.
        at: String,
    },
    /// A certificate has expired at the verification time.
    #[error("certificate {index} ({subject}) expired at {not_after}; verification time is {at}")]
    CertificateExpired {
        /// Position in the path.
        index: usize,
        /// Subject, printed.
        subject: String,
        /// notAfter, RFC 3339.
        not_after: String,
        /// Verification time, RFC 3339.
        at: String,
    },
    /// A certificate's issuer name differs from its parent's subject.
    #[error("certificate {index}: issuer name does not match the subject of certificate {}", index - 1)]
    IssuerMismatch {
        /// Position in the path.
        index: usize,
    },
    /// A certificate's signature does not verify under its parent's key.
    #[error("certificate {index}: signature does not verify under the key of certificate {}", index - 1)]
    CertificateSignature {
        /// Position in the path.
        index: usize,
    },
    /// A certificate uses a signature or key algorithm outside the allowed set.
    #[error("certificate {index}: unsupported algorithm {oid}")]
    CertificateAlgorithm {
        /// Position in the path.
        index: usize,
        /// The OID.
        oid: String,
    },
    /// An issuing certificate is not a CA, or a path length constraint is exceeded.
    #[error("certificate {index} is used as a CA but {rule}")]
    CaConstraint {
        /// Position in the path.
        index: usize,
        /// What is wrong.
        rule: &'static str,
    },
    /// A key usage forbids the certificate's role.
    #[error("certificate {index}: key usage does not allow {usage}")]
    KeyUsage {
        /// Position in the path.
        index: usize,
        /// The missing usage.
        usage: &'static str,
    },
    /// An extension is marked critical but not understood.
    #[error("certificate {index}: unknown critical extension {oid}")]
    UnknownCriticalExtension {
        /// Position in the path.
        index: usize,
        /// The OID.
        oid: String,
    },
    /// The COSE signature does not verify under the leaf certificate's key.
    #[error("the document signature does not verify under the leaf certificate's key (the document was altered or signed by another key)")]
    DocumentSignature,
    /// The document is unsigned (QEMU's emulated NSM) and emulator mode is off.
    #[error("the document is unsigned (alg -1, as QEMU's emulated NSM produces); accept it only with --insecure-emulator")]
    UnsignedEmulatorDocument,
    /// A debug-mode enclave (PCR0–2 all zero) under a policy that forbids debug.
    #[error("the enclave runs in debug mode (PCR0, PCR1, PCR2 all zero); allow debug explicitly if this is a test enclave")]
    DebugMode,
    /// No allowed PCR set matches.
    #[error("PCRs match no allowed set: {0}")]
    PcrMismatch(String),
    /// The nonce differs from the expected one (or is absent).
    #[error("the nonce does not match the expected nonce (expected {expected}, found {found})")]
    NonceMismatch {
        /// Expected, hex.
        expected: String,
        /// Found, hex or "none".
        found: String,
    },
    /// `user_data` differs from the expected value.
    #[error("user_data does not match the expected value")]
    UserDataMismatch,
    /// `public_key` differs from the expected value.
    #[error("public_key does not match the expected value")]
    PublicKeyMismatch,
    /// The document is older than the policy's maximum age.
    #[error("the document is {age_ms} ms old; the policy allows at most {max_ms} ms")]
    DocumentTooOld {
        /// Age at verification time.
        age_ms: u64,
        /// Maximum allowed.
        max_ms: u64,
    },
    /// The document's timestamp lies after the verification time (beyond the allowed skew).
    #[error("the document timestamp is {ahead_ms} ms after the verification time")]
    DocumentFromFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// The key binding in the evidence is malformed or inconsistent.
    #[error("key binding: {0}")]
    Binding(String),
    /// The DPoP/CB-PoP signature does not verify under the header `jwk`.
    #[error("the proof's signature does not verify under its jwk")]
    PopSignature,
    /// No verified evidence binds this key yet: the client must send `CADA-Evidence`.
    #[error("no verified evidence binds key {jkt}; send the CADA-Evidence header (WWW-Authenticate: DPoP error=\"use_attestation\")")]
    EvidenceRequired {
        /// Thumbprint of the unbound key.
        jkt: String,
    },
    /// The evidence binds a different key than the proof's.
    #[error("the evidence binds key {bound}, but the proof is signed by {presented}")]
    BindingMismatch {
        /// jkt in the evidence.
        bound: String,
        /// jkt of the proof's key.
        presented: String,
    },
    /// `cada.att` names evidence this verifier has not verified for the key.
    #[error("the proof refers to evidence {att} that was not verified for this key; send it in CADA-Evidence")]
    UnknownEvidence {
        /// The claimed digest.
        att: String,
    },
    /// Evidence platform does not match its root (e.g. sim evidence labelled nitro).
    #[error("evidence claims platform {claimed} but chains to the {actual} root")]
    PlatformMismatch {
        /// What the envelope says.
        claimed: String,
        /// What the root says.
        actual: String,
    },
    /// `htm` differs from the request method.
    #[error("the proof is for method {claimed}, the request is {actual}")]
    MethodMismatch {
        /// htm.
        claimed: String,
        /// Request method.
        actual: String,
    },
    /// `htu` differs from the request URL after normalisation.
    #[error("the proof is for {claimed}, the request is for {actual}")]
    UrlMismatch {
        /// Normalised htu.
        claimed: String,
        /// Normalised request URL.
        actual: String,
    },
    /// `iat` / `exp` outside the allowed window.
    #[error("the proof is not fresh: {0}")]
    NotFresh(String),
    /// The same `jti` was seen before within the window.
    #[error("replayed proof: jti {jti} was already used")]
    Replay {
        /// The jti.
        jti: String,
    },
    /// A trust-contract rule refused (rule 13 of `decide`): no contract named, none sent,
    /// another owner, another subject, expired, revoked, stale status, not permitted.
    #[error("{detail}")]
    Contract {
        /// Stable code (`contract.*`).
        code: &'static str,
        /// What failed and how to fix it.
        detail: String,
    },
    /// An access token sent with the proof, from an issuer the policy trusts, does not
    /// attest the key (rule 5): malformed, bad signature, unknown key, expired, for
    /// another audience, or bound to another key.
    #[error("{detail}")]
    AccessToken {
        /// Stable code (`token.*`).
        code: &'static str,
        /// What failed and how to fix it.
        detail: String,
    },
    /// The replay store cannot be reached; nothing is accepted while it is down.
    #[error("replay store unavailable: {0}")]
    ReplayStoreUnavailable(String),
    /// An access token was sent but `ath` is absent or wrong.
    #[error("ath {0}")]
    AccessTokenHash(&'static str),
    /// The proof is not bound to this request's body: `cada.bd` differs from the body's
    /// SHA-256, or is absent where the policy requires it.
    #[error("body binding: {0}")]
    PopBody(String),
    /// The proof's `cada.mcp` (the MCP calls the enclave signed for) is not what the body
    /// calls.
    #[error("MCP calls: {0}")]
    PopMcp(String),
    /// The request's MCP calls are governed (a contract or an access token grants tools,
    /// resources and prompts) but the caller did not read them from the body, and the proof
    /// does not name them with the body's digest ([`crate::calls`]).
    #[error(
        "calls required: {0}; where contracts or tokens grant tools, resources and prompts, \
         send the body (cada-verify serve: `body`) so that its calls are checked, or its digest \
         with a proof that names the body's digest (cada.bd) and calls (cada.mcp), as \
         cada-parent proxy asks the enclave for"
    )]
    CallsRequired(String),
    /// The server demands a nonce and the proof's is absent or wrong.
    #[error("DPoP nonce {0}")]
    PopNonce(&'static str),
    /// A `cada.ctx` policy constraint failed.
    #[error("context constraint failed: {0}")]
    Context(String),
    /// The proof's `htu` is not an absolute http(s) URL.
    #[error("invalid URL {0:?}")]
    BadUrl(String),
    /// The request URL the resource server reported is not an absolute http(s) URL without
    /// userinfo or fragment.
    #[error("the request URL is unusable: {0} (send the full URL the client called, e.g. https://api.example.com/v1/x)")]
    RequestUrl(String),
    /// The request URL's path is not its normal form (dot segments, needless or lower-case
    /// percent-encoding): the server would route other bytes than those the decision
    /// matched, so it is refused, never normalised.
    #[error(
        "the request path is not in normal form: {url:?} is {normal:?} once normalised; the \
         path is forwarded as received, so send it in normal form"
    )]
    RequestUrlNotNormal {
        /// The URL as received (without query, at most 200 characters).
        url: String,
        /// Its normal form.
        normal: String,
    },
    /// No `[[audience]]` of the policy covers the request URL.
    #[error("no audience in the policy covers {0}: add an [[audience]] whose prefix covers it")]
    NoAudience(String),
    /// An audience covers the URL but the key's measurements match none of its sets.
    #[error("measurement policy: {0}")]
    MeasurementsNotAllowed(String),
    /// Evidence that verified but cannot be shown to be recent enough.
    #[error("evidence is not fresh: {0}")]
    EvidenceNotFresh(String),
    /// The SEV-SNP report is malformed (size, version, reserved fields, key kind).
    #[error("SEV-SNP report: {0}")]
    SnpReport(String),
    /// The SEV-SNP report signature does not verify under the VCEK/VLEK.
    #[error("the SEV-SNP report signature does not verify under the VCEK/VLEK (report altered or another chip's key)")]
    SnpSignature,
    /// Report, certificate and root disagree on the processor generation.
    #[error("generation mismatch: {0}")]
    SnpGeneration(String),
    /// The VCEK's hwID is not the report's chip_id.
    #[error("the VCEK belongs to another chip (hwID differs from the report's chip_id)")]
    ChipIdMismatch,
    /// A TCB extension of the VCEK/VLEK differs from the report's reported_tcb.
    #[error("the certificate's {component} TCB is {cert} but the report's is {report}: fetch the VCEK for the reported TCB")]
    TcbMismatch {
        /// Component.
        component: &'static str,
        /// In the certificate.
        cert: u8,
        /// In the report.
        report: u8,
    },
    /// The launch measurement is not allowed.
    #[error("launch measurement {0} is not among the allowed measurements")]
    MeasurementNotAllowed(String),
    /// A TCB component is below the policy minimum.
    #[error("reported {component} TCB {got} is below the minimum {min}")]
    TcbTooLow {
        /// Component.
        component: &'static str,
        /// Reported.
        got: u8,
        /// Minimum.
        min: u8,
    },
    /// A guest policy rule failed (VMPL, SMT, migration agent, ABI, host data).
    #[error("guest policy: {0}")]
    GuestPolicy(String),
    /// A certificate revocation list is not usable: over the size limit, not DER, not a v2
    /// CRL, an unsupported algorithm or critical extension, no nextUpdate, too many entries.
    #[error("the CRL {crl} is not usable: {detail}")]
    CrlMalformed {
        /// Which CRL (generation and kind, or file).
        crl: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A CRL's issuer is not the root it must come from (another generation's ARK, or no
    /// trusted root of that name).
    #[error("the CRL {crl} cannot be used: {detail}")]
    CrlIssuer {
        /// Which CRL.
        crl: String,
        /// What is wrong with its issuer.
        detail: String,
    },
    /// A CRL's signature does not verify under the root that its issuer names.
    #[error("the CRL {crl} is not signed by {root}: it was altered or signed by another key; fetch it again from AMD's KDS")]
    CrlSignature {
        /// Which CRL.
        crl: String,
        /// The root it claims to come from.
        root: String,
    },
    /// A CRL's thisUpdate lies after the verification time.
    #[error("the CRL {crl} is not valid before {this_update}; verification time is {at} (check the clock)")]
    CrlNotYetValid {
        /// Which CRL.
        crl: String,
        /// thisUpdate, RFC 3339.
        this_update: String,
        /// Verification time, RFC 3339.
        at: String,
    },
    /// A CRL is past its nextUpdate by more than the allowed staleness.
    #[error("the CRL {crl} is stale: its nextUpdate was {next_update}, {grace_secs} s of grace have passed at {at}; fetch a fresh CRL from AMD's KDS")]
    CrlStale {
        /// Which CRL.
        crl: String,
        /// nextUpdate, RFC 3339.
        next_update: String,
        /// Allowed staleness past nextUpdate.
        grace_secs: u64,
        /// Verification time, RFC 3339.
        at: String,
    },
    /// A newer CRL is already held; an older one would undo revocations.
    #[error("the CRL {crl} (thisUpdate {offered}) is older than the one held (thisUpdate {held}); refusing to roll back")]
    CrlRollback {
        /// Which CRL.
        crl: String,
        /// thisUpdate of the offered CRL, RFC 3339.
        offered: String,
        /// thisUpdate of the held CRL, RFC 3339.
        held: String,
    },
    /// Revocation must be checked for this chain but no CRL is held for it.
    #[error("no CRL is held for {scope}, and the policy requires one; load the CRL AMD's KDS publishes for it")]
    CrlMissing {
        /// Root and key kind (e.g. "ARK-Milan, VCEK chain").
        scope: String,
    },
    /// A certificate of the chain is listed in its issuer's CRL.
    #[error("certificate {index} ({subject}, serial {serial}) is revoked by the CRL {crl}")]
    Revoked {
        /// Position in the path (0 = root).
        index: usize,
        /// Subject, printed.
        subject: String,
        /// Serial number, hex.
        serial: String,
        /// Which CRL lists it.
        crl: String,
    },
    /// TPM 2.0 evidence refused (`tpm.*`, see [`crate::tpm`]): a structure that does not
    /// parse, an attestation not signed by a restricted AK, a key that may leave its TPM,
    /// another nonce, PCRs that do not match their digest, an AK or EK chain to no trusted
    /// root, an AK not bound to the EK, …
    #[error("{detail}")]
    Tpm {
        /// Stable code (`tpm.*`).
        code: &'static str,
        /// What failed and what to check or fix.
        detail: String,
    },
    /// A protocol-level decoding error (envelope, binding, token).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl VerifyError {
    /// A stable short code naming the failed rule, for JSON output, logs and metrics.
    pub fn code(&self) -> &'static str {
        use VerifyError::*;
        match self {
            TooLarge { .. } => "input.too_large",
            Cose(_) => "cose.malformed",
            MissingAlgorithm => "cose.alg_missing",
            UnsupportedAlgorithm(_) => "cose.alg_unsupported",
            CriticalHeader => "cose.crit",
            MissingPayload => "cose.payload_missing",
            Payload(_) => "doc.malformed",
            DuplicateKey(_) => "doc.duplicate_key",
            NotAnEnclaveDocument => "doc.not_enclave",
            MissingField(_) => "doc.missing_field",
            UnknownField(_) => "doc.unknown_field",
            Field { .. } => "doc.field",
            CertificateParse { .. } => "chain.parse",
            UntrustedRoot { .. } => "chain.untrusted_root",
            CertificateNotYetValid { .. } => "chain.not_yet_valid",
            CertificateExpired { .. } => "chain.expired",
            IssuerMismatch { .. } => "chain.issuer_mismatch",
            CertificateSignature { .. } => "chain.signature",
            CertificateAlgorithm { .. } => "chain.algorithm",
            CaConstraint { .. } => "chain.ca_constraint",
            KeyUsage { .. } => "chain.key_usage",
            UnknownCriticalExtension { .. } => "chain.critical_extension",
            DocumentSignature => "cose.signature",
            UnsignedEmulatorDocument => "cose.unsigned_emulator",
            DebugMode => "policy.debug",
            PcrMismatch(_) => "policy.pcr",
            NonceMismatch { .. } => "policy.nonce",
            UserDataMismatch => "policy.user_data",
            PublicKeyMismatch => "policy.public_key",
            DocumentTooOld { .. } => "policy.too_old",
            DocumentFromFuture { .. } => "policy.from_future",
            Binding(_) => "binding",
            // A proof's task or traceparent not in its strict form names its own rule.
            Protocol(ProtocolError::Trace(e)) => e.code(),
            Protocol(_) => "protocol",
            SnpReport(_) => "snp.report",
            SnpSignature => "snp.signature",
            SnpGeneration(_) => "snp.generation",
            ChipIdMismatch => "snp.chip_id",
            TcbMismatch { .. } => "snp.tcb_mismatch",
            MeasurementNotAllowed(_) => "policy.measurement",
            TcbTooLow { .. } => "policy.tcb",
            GuestPolicy(_) => "policy.guest",
            CrlMalformed { .. } => "snp.crl_malformed",
            CrlIssuer { .. } => "snp.crl_issuer",
            CrlSignature { .. } => "snp.crl_signature",
            CrlNotYetValid { .. } => "snp.crl_not_yet_valid",
            CrlStale { .. } => "snp.crl_stale",
            CrlRollback { .. } => "snp.crl_rollback",
            CrlMissing { .. } => "snp.crl_missing",
            Revoked { .. } => "snp.revoked",
            PopSignature => "pop.signature",
            EvidenceRequired { .. } => "pop.evidence_required",
            BindingMismatch { .. } => "pop.binding_mismatch",
            UnknownEvidence { .. } => "pop.unknown_evidence",
            PlatformMismatch { .. } => "evidence.platform_mismatch",
            MethodMismatch { .. } => "pop.htm",
            UrlMismatch { .. } => "pop.htu",
            NotFresh(_) => "pop.not_fresh",
            Replay { .. } => "pop.replay",
            ReplayStoreUnavailable(_) => "pop.replay_store_unavailable",
            Contract { code, .. } | AccessToken { code, .. } | Tpm { code, .. } => code,
            AccessTokenHash(_) => "pop.ath",
            PopNonce(_) => "pop.nonce",
            PopBody(_) => "pop.body",
            PopMcp(_) => "pop.mcp",
            CallsRequired(_) => "pop.calls_required",
            Context(_) => "pop.ctx",
            BadUrl(_) => "pop.bad_url",
            RequestUrl(_) => "request.url",
            RequestUrlNotNormal { .. } => "request.url_not_normal",
            NoAudience(_) => "policy.audience",
            MeasurementsNotAllowed(_) => "policy.measurements",
            EvidenceNotFresh(_) => "evidence.not_fresh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_protocol::trace::TraceError;

    /// A proof whose `cada.task` or `cada.tp` is malformed is refused at decode under the
    /// custody codes, not the generic `protocol`.
    #[test]
    fn malformed_custody_claims_keep_their_codes() {
        for (e, code) in [
            (TraceError::Task("it is empty"), "trace.task"),
            (
                TraceError::Traceparent("its version is not 00"),
                "trace.traceparent",
            ),
        ] {
            assert_eq!(VerifyError::from(ProtocolError::Trace(e)).code(), code);
        }
        assert_eq!(
            VerifyError::from(ProtocolError::Base64 { what: "x" }).code(),
            "protocol"
        );
    }
}
