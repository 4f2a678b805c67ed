//! TPM 2.0 roots pinned in the code: TPM manufacturers' endorsement-key (EK) CAs and the
//! clouds' vTPM CAs, each by the SHA-256 of its DER. The certificates are vendored under
//! `testdata/tpm/roots/` with their provenance (`testdata/tpm/README.md`); a file that no
//! longer matches its fingerprint is left out, never trusted.
//!
//! Two uses, never mixed up: an **EK root** is where a TPM's endorsement-key certificate
//! chain may end (the TPM is genuine hardware of that vendor, or a cloud's vTPM); a **cloud
//! AK root** also issues attestation-key certificates for the vTPMs of that cloud's VMs, so
//! an AK certificate under it binds the AK to a genuine vTPM by itself (Google's EK/AK CA).
//! Policies add roots beside these (`[tpm] roots`, `ak_roots`, `ak_roots_without_ek`),
//! never replace them.
use crate::chain::TrustAnchor;

/// What a pinned TPM root may anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TpmRootKind {
    /// EK certificate chains only.
    Ek,
    /// EK certificate chains, and AK certificates that bind an AK to a vTPM of this cloud.
    EkAndCloudAk,
}

/// (vendor, name, kind, DER, SHA-256 hex).
type Row = (
    &'static str,
    &'static str,
    TpmRootKind,
    &'static [u8],
    &'static str,
);

const TABLE: &[Row] = &[
    (
        "AMD",
        "AMD fTPM ECC root (AMDTPM)",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/AMD_AMDTPM_ECC_modern_version.der"),
        "14aac9fd58471a612afd75d8c0955daf99f091b1863702f9e0d4113faf234f9d",
    ),
    (
        "AMD",
        "AMD fTPM RSA root (AMDTPM)",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/AMD_AMDTPM_RSA_modern_version.der"),
        "67bd2472a546751caca5f358a78f80727531671338960a9bcfdfbe6a34d0c6a1",
    ),
    (
        "AMD",
        "AMD Pluton Global Factory ICA",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/AMD_AMD_Pluton_Global_Factory_ICA.der"),
        "593a1794f9e17476c7ad427d2908a97c451451c9e0939fdc80d5d662c232d401",
    ),
    (
        "Google",
        "Google Cloud EK/AK CA Root (Shielded VM vTPM)",
        TpmRootKind::EkAndCloudAk,
        include_bytes!("../../testdata/tpm/roots/GOOGLE_EK_AK_CA_Root.der"),
        "594759594b9b61524f6c8ef668f7177f7b9066bc0674f2f49fe9e052be78beb2",
    ),
    (
        "Infineon",
        "Infineon OPTIGA(TM) ECC Root CA",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/IFX_Infineon_OPTIGA_TM_ECC_Root_CA.der"),
        "cfeb02fecd55ad7a73c6e1d11985d4c47dee248ab63dcb66091a2489660443c3",
    ),
    (
        "Infineon",
        "Infineon OPTIGA(TM) ECC Root CA 2",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/IFX_Infineon_OPTIGA_TM_ECC_Root_CA_2.der"),
        "ee0c827555c4e9012037df4257bb8aaa26084a17b13ede41cd7895c8d6c11190",
    ),
    (
        "Infineon",
        "Infineon OPTIGA(TM) RSA Root CA",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/IFX_Infineon_OPTIGA_TM_RSA_Root_CA.der"),
        "899e35474c9807eb4c7f2f7a12da0028fb250cd02154d0009fca7d9c66574f3b",
    ),
    (
        "Infineon",
        "Infineon OPTIGA(TM) RSA Root CA 2",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/IFX_Infineon_OPTIGA_TM_RSA_Root_CA_2.der"),
        "b413c71580af3ec5efe83fad31db2d4af4612355e3b01e50903b10763d738894",
    ),
    (
        "Intel",
        "Intel OnDie CA RootCA (PTT)",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/INTC_OnDie_CA_RootCA.der"),
        "beb40bb7507b33967226aa80e084749fbb6593893c642e818d682e9a8d07fc24",
    ),
    (
        "Microsoft",
        "Microsoft Pluton Root CA 2021",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/MSFT_Microsoft_Pluton_Root_CA_2021.der"),
        "32ab5fe7cb4396659fcb621ca14c6fb8fc2420f64050637d77e45a86c5d3916e",
    ),
    (
        "NSING",
        "NSING TPM ECC ROOT CA 001",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NSG_NSING_TPM_ECC_ROOT_CA_001.der"),
        "6ccf8a8a803d07a002a15d4889ffa0b125e4a82a1fe4211db3c6e8592919f9dc",
    ),
    (
        "NSING",
        "NSING TPM RSA ROOT CA 001",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NSG_NSING_TPM_RSA_ROOT_CA_001.der"),
        "72ca00612395af027cd84c5514219f110e964dfa0bfc1efbb3ac147e3b173971",
    ),
    (
        "Nuvoton",
        "NPCTxxx ECC521 RootCA",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_NPCTxxx_ECC521_RootCA.der"),
        "083e7bd13e8fe0bb9b0c64db9e0c8356681df65714d2d5c4925eb98ae1369d40",
    ),
    (
        "Nuvoton",
        "NuvotonTPMRootCA1210",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_NuvotonTPMRootCA1210.der"),
        "ba70a6ea7b77c7fee8947a07b1e70e0b26d39ce5e6307f63d5e4b9507f19a157",
    ),
    (
        "Nuvoton",
        "NuvotonTPMRootCA2210",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_NuvotonTPMRootCA2210.der"),
        "fc61abbc18100f460205ebe09d8c3e6995ac2be2234344a7facb62e15f9a7584",
    ),
    (
        "Nuvoton",
        "NuvotonTPMRootCA2211",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_NuvotonTPMRootCA2211.der"),
        "2bbc5db224b8f28a6d2cf336d4da7ab21c8c490e3d60ef497801dc0b6ac00227",
    ),
    (
        "Nuvoton",
        "Nuvoton TPM Root CA 1110",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_Nuvoton_TPM_Root_CA_1110.der"),
        "2782e51a95e86d9557fe4204316cf805bd6f5898f81f9732e944d742bcdc5f54",
    ),
    (
        "Nuvoton",
        "Nuvoton TPM Root CA 1111",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_Nuvoton_TPM_Root_CA_1111.der"),
        "e38c280f7c0e0b49f31efc7531032bb6a86c3fba4eb89beb1d510eaa4510ae4a",
    ),
    (
        "Nuvoton",
        "Nuvoton TPM Root CA 2111",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_Nuvoton_TPM_Root_CA_2111.der"),
        "cd8185ff8995ed09811970090a8c36fafab34ef87f47fa51fdb9ecf95c9c2e04",
    ),
    (
        "Nuvoton",
        "Nuvoton TPM Root CA 2112",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/NTC_Nuvoton_TPM_Root_CA_2112.der"),
        "66e3a1013d4f697700f731e7d68c69b58351f90ec9580d85862d020ab4abf1af",
    ),
    (
        "STMicro",
        "GlobalSign Trusted Platform Module ECC Root CA",
        TpmRootKind::Ek,
        include_bytes!(
            "../../testdata/tpm/roots/STM_GlobalSign_Trusted_Platform_Module_ECC_Root_CA.der"
        ),
        "5a8c7b5eb888cfce9322068e80e82b28b554ffeb7fdc9638dcb3763077401d26",
    ),
    (
        "STMicro",
        "GlobalSign Trusted Platform Module Root CA",
        TpmRootKind::Ek,
        include_bytes!(
            "../../testdata/tpm/roots/STM_GlobalSign_Trusted_Platform_Module_Root_CA.der"
        ),
        "f27bf02c6e00c73d915eeb6a6a2f5fbf0c31ae0393149e6b5c31e41b113841c3",
    ),
    (
        "STMicro",
        "STM TPM ECC Root CA 01",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/STM_STM_TPM_ECC_Root_CA_01.der"),
        "c541d7e5b9e3f935621acbd403896225ec641036c9ae3b5f7ac793a606ff9b79",
    ),
    (
        "STMicro",
        "STM TPM EK Root CA",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/STM_STM_TPM_EK_Root_CA.der"),
        "f8e37a86b689a20a6cc0c40cc3f81fb130fa9f44ce7ffa60d62590aaf87273a9",
    ),
    (
        "STMicro",
        "STSAFE ECC Root CA 02",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/STM_STSAFE_ECC_Root_CA_02.der"),
        "fd1e7b68accd825636b27b3177c67402d463a7f04c97b6c47ab705fcdc1a04f6",
    ),
    (
        "STMicro",
        "STSAFE RSA Root CA 02",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/STM_STSAFE_RSA_Root_CA_02.der"),
        "c8f179943356e13d9d84b100201cefabbf408880241e5329e60d950ce1dea623",
    ),
    (
        "Infineon",
        "IFX TPM EK Root CA (older SLB 96xx)",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/keylime_IFX_RSA_RT.der"),
        "7df2c3751c03ce003e99174d9cb2559f57a1b05b1920dd30bb6f8dfcf17f5e62",
    ),
    (
        "Intel",
        "Intel TPM EK root (PTT, older)",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/keylime_INTEL_RT.der"),
        "2e1b3ba79af56d758be51697621bc4b9e8cee0983db3e749c55eb9b37c6d2ae0",
    ),
    (
        "Nuvoton",
        "NTC TPM EK Root CA 01",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/keylime_NTC1.der"),
        "56b67007f448bd5c5746299fcdea9323971bbdaaefd8e3b9b84773abc888c90e",
    ),
    (
        "Nuvoton",
        "NTC TPM EK Root CA 02",
        TpmRootKind::Ek,
        include_bytes!("../../testdata/tpm/roots/keylime_NTC2.der"),
        "8fac94b462b37acb84431bdc71395585caf518c17f656051ff9c4347a4726ed9",
    ),
];

/// A pinned TPM root.
#[derive(Debug, Clone)]
pub struct PinnedTpmRoot {
    /// Vendor or cloud.
    pub vendor: &'static str,
    /// Certificate name.
    pub name: &'static str,
    /// What it anchors.
    pub kind: TpmRootKind,
    /// DER.
    pub der: &'static [u8],
    /// SHA-256 of the DER, hex.
    pub sha256: &'static str,
}

/// Every pinned TPM root whose bytes still match its fingerprint.
pub fn pinned_tpm_roots() -> Vec<PinnedTpmRoot> {
    TABLE
        .iter()
        .filter(|(_, _, _, der, fp)| {
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)) == *fp
        })
        .map(|(vendor, name, kind, der, sha256)| PinnedTpmRoot {
            vendor,
            name,
            kind: *kind,
            der,
            sha256,
        })
        .collect()
}

/// The pinned roots as trust anchors (those this verifier's X.509 parser accepts), with
/// their DER, for EK chains (`cloud_ak = false`) or for AK certificates (`true`).
pub fn tpm_anchors(cloud_ak: bool) -> Vec<(TrustAnchor, Vec<u8>)> {
    pinned_tpm_roots()
        .into_iter()
        .filter(|r| !cloud_ak || r.kind == TpmRootKind::EkAndCloudAk)
        .filter_map(|r| {
            TrustAnchor::from_der(format!("{} {}", r.vendor, r.name), r.der)
                .ok()
                .map(|a| (a, r.der.to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_root_matches_its_fingerprint_and_parses() {
        let roots = pinned_tpm_roots();
        assert_eq!(roots.len(), TABLE.len(), "a vendored root changed");
        let anchors = tpm_anchors(false);
        let names: Vec<&str> = roots.iter().map(|r| r.name).collect();
        let parsed: Vec<String> = anchors.iter().map(|(a, _)| a.name.clone()).collect();
        for r in &roots {
            assert!(
                parsed.iter().any(|p| p.ends_with(r.name)),
                "{} does not parse as a trust anchor ({names:?})",
                r.name
            );
        }
        assert_eq!(
            tpm_anchors(true).len(),
            1,
            "only Google's root vouches for AKs"
        );
        for vendor in [
            "AMD",
            "Infineon",
            "Intel",
            "Microsoft",
            "Nuvoton",
            "STMicro",
            "Google",
        ] {
            assert!(roots.iter().any(|r| r.vendor == vendor), "{vendor}");
        }
    }
}
