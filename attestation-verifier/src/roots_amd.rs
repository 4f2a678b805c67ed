//! AMD SEV-SNP roots pinned in the code, per processor generation: the ARK (root), and the
//! long-lived ASK (signs VCEKs) and ASVK (signs VLEKs) that AMD's key distribution service
//! publishes, so that evidence only needs to carry the VCEK or VLEK. Each is checked against
//! its SHA-256 fingerprint before use.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// An AMD EPYC generation with its own SEV-SNP key hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Generation {
    /// 3rd gen EPYC (Zen 3).
    Milan,
    /// 4th gen EPYC (Zen 4).
    Genoa,
    /// 5th gen EPYC (Zen 5).
    Turin,
}

impl Generation {
    /// All generations.
    pub const ALL: [Generation; 3] = [Generation::Milan, Generation::Genoa, Generation::Turin];

    /// Name as AMD writes it in certificate names (`SEV-Milan`, `ARK-Genoa`, …).
    pub fn name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    /// The generation of a CPUID family/model (reports of version 3 and later).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0f) => Some(Generation::Milan),
            (0x19, 0x10..=0x1f) | (0x19, 0xa0..=0xaf) => Some(Generation::Genoa),
            (0x1a, 0x00..=0x11) => Some(Generation::Turin),
            _ => None,
        }
    }
}

/// Which certificate of a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmdCert {
    /// AMD Root Key.
    Ark,
    /// AMD SEV Key: signs VCEKs.
    Ask,
    /// AMD SEV VLEK Key: signs VLEKs.
    Asvk,
}

const MILAN_ARK: &[&str] = &[
    "MIIGYzCCBBKgAwIBAgIDAQAAMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstTWlsYW4wHhcNMjAxMDIyMTcy",
    "MzA1WhcNNDUxMDIyMTcyMzA1WjB7MRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx",
    "FDASBgNVBAcMC1NhbnRhIENsYXJhMQswCQYDVQQIDAJDQTEfMB0GA1UECgwWQWR2YW5jZWQgTWlj",
    "cm8gRGV2aWNlczESMBAGA1UEAwwJQVJLLU1pbGFuMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIIC",
    "CgKCAgEA0Ld52RJOdeiJlqK2JdsVmD7FktuotWwX1fNgW41XY9Xz1HEhSUmhLz9Cu9DHRlvgJSNx",
    "beYYsnJfvyjx1MfU0V5tkKiU1EesNFta1kTA0szNisdYc9isqk7mXT5+KfGRbfc4V/9zRIcE8jlH",
    "N61S1ju8X93+6dxDUrG2SzxqJ4BhqyYmUDruPXJSX4vUc01P7j98MpqOS95rORdGHeI52Naz5m2B",
    "+O+vjsC060d37jY9LFeuOP4Meri8qgfi2S5kKqg/aF6aPtuAZQVR7u3KFYXP59XmJgtcog05gmI0",
    "T/OitLhuzVvpZcLph0odh/1IPXqx3+MnjD97A7fXpqGd/y8KxX7jksTEzAOgbKAeam3lm+3yKIcT",
    "YMlsRMXPcjNbIvmsBykD//xSniusuHBkgnlENEWx1UcbQQrs+gVDkuVPhsnzIRNgYvM48Y+7LGiJ",
    "YnrmE8xcrexekBxrva2V9TJQqnN3Q53kt5viQi3+gCfmkwC0F0tirIZbLkXPrPwzZ0M9eNxhIySb",
    "2npJfgnqz55I0u33wh4r0ZNQeTGfw03MBUtyuzGesGkcw+loqMaq1qR4tjGbPYxCvpCq7+OgpCCo",
    "MNit2uLo9M18fHz10lOMT8nWAUvRZFzteXCm+7PHdYPlmQwUw3LvenJ/ILXoQPHfbkH0CyPfhl1j",
    "WhJFZasCAwEAAaN+MHwwDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSFrBrRQ/fIrFXUxR1BSKvV",
    "eErUUzAPBgNVHRMBAf8EBTADAQH/MDoGA1UdHwQzMDEwL6AtoCuGKWh0dHBzOi8va2RzaW50Zi5h",
    "bWQuY29tL3ZjZWsvdjEvTWlsYW4vY3JsMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQCh",
    "HDAaBgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBA4ICAQC6m0kDp6zv4Ojfgy+z",
    "leehsx6ol0ocgVelETobpx+EuCsqVFRPK1jZ1sp/lyd9+0fQ0r66n7kagRk4Ca39g66WGTJMeJdq",
    "YriwSTjjDCKVPSesWXYPVAyDhmP5n2v+BYipZWhpvqpaiO+EGK5IBP+578QeW/sSokrKdHaLAxG2",
    "LhZxj9aF73fqC7OAJZ5aPonw4RE299FVarh1Tx2eT3wSgkDgutCTB1YqzT5DuwvAe+co2CIVIzMD",
    "amYuSFjPN0BCgojl7V+bTou7dMsqIu/TW/rPCX9/EUcpKGKqPQ3P+N9r1hjEFY1plBg93t53OOo4",
    "9GNI+V1zvXPLI6xIFVsh+mto2RtgEX/epmMKTNN6psW88qg7c1hTWtN6MbRuQ0vm+O+/2tKBF2h8",
    "THb94OvvHHoFDpbCELlqHnIYhxy0YKXGyaW1NjfULxrrmxVW4wcn5E8GddmvNa6yYm8scJagEi13",
    "mhGu4Jqh3QU3sf8iUSUr09xQDwHtOQUVIqx4maBZPBtSMf+qUDtjXSSq8lfWcd8bLr9mdsUnJZJ0",
    "+tuPMKmBnSH860llKk+VpVQsgqbzDIvOLvD6W1Umq25boxCYJ+TuBoa4s+HHCViAvgT9kf/rBq1d",
    "+ivj6skkHxuzcxbk1xv6ZGxrteJxVH7KlX7YRdZ6eARKwLe4AFZEAwoKCQ==",
];

const MILAN_ASK: &[&str] = &[
    "MIIGiTCCBDigAwIBAgIDAQABMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstTWlsYW4wHhcNMjAxMDIyMTgy",
    "NDIwWhcNNDUxMDIyMTgyNDIwWjB7MRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx",
    "FDASBgNVBAcMC1NhbnRhIENsYXJhMQswCQYDVQQIDAJDQTEfMB0GA1UECgwWQWR2YW5jZWQgTWlj",
    "cm8gRGV2aWNlczESMBAGA1UEAwwJU0VWLU1pbGFuMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIIC",
    "CgKCAgEAnU2drrNTfbhNQIllf+W2y+ROCbSzId1aKZft2T9zjZQOzjGccl17i1mIKWl7NTcB0VYX",
    "t3JxZSzOZjsjLNVAEN2MGj9TiedL+QewKZX0JmQEuYjm+WKksLtxgdLp9E7EZNwNDqV1r0qRP5tB",
    "8OWkyQbIdLeu4aCz7j/Sl1FkBytev9sbFGzt7cwnjzi9m7noqsk+uRVBp3+In35QPdcj8YflEmnH",
    "BNvuUDJhLCJMW8KOjP6++Phbs3iCitJcANEtW4qTNFoKW3CHlbcSCjTM8KsNbUx3A8ek5EVLjZWH",
    "1pt9E3TfpR6XyfQKnY6kl5aEIPwdW3eFYaqCFPrIo9pQT6WuDSP4JCYJbZneKKIbZjzXkJt3NQG3",
    "2EukYImBb9SCkm9+fS5LZFg9ojzubMX3+NkBoSXI7OPvnHMxjup9mw5se6QUV7GqpCA2TNypolmu",
    "Q+cAaxV7JqHE8dl9pWf+Y3arb+9iiFCwFt4lAlJw5D0CTRTC1Y5YWFDBCrA/vGnmTnqG8C+jjUAS",
    "7cjjR8q4OPhyDmJRPnaC/ZG5uP0K0z6GoO/3uen9wqshCuHegLTpOeHEJRKrQFr4PVIwVOB0+ebO",
    "5FgoyOw43nyFD5UKBDxEB4BKo/0uAiKHLRvvgLbORbU8KARIs1EoqEjmF8UtrmQWV2hUjwzqwvHF",
    "ei8rPxMCAwEAAaOBozCBoDAdBgNVHQ4EFgQUO8ZuGCrD/T1iZEib47dHLLT8v/gwHwYDVR0jBBgw",
    "FoAUhawa0UP3yKxV1MUdQUir1XhK1FMwEgYDVR0TAQH/BAgwBgEB/wIBADAOBgNVHQ8BAf8EBAMC",
    "AQQwOgYDVR0fBDMwMTAvoC2gK4YpaHR0cHM6Ly9rZHNpbnRmLmFtZC5jb20vdmNlay92MS9NaWxh",
    "bi9jcmwwRgYJKoZIhvcNAQEKMDmgDzANBglghkgBZQMEAgIFAKEcMBoGCSqGSIb3DQEBCDANBglg",
    "hkgBZQMEAgIFAKIDAgEwowMCAQEDggIBAIgeUQScAf3lDYqgWU1VtlDbmIN8S2dC5kmQzsZ/HtAj",
    "QnLEPI1jh3gJbLxL6gf3K8jxctzOWnkYcbdfMOOr28KT35IaAR20rekKRFptTHhe+DFr3AFzZLDD",
    "7cWK29/GpPitPJDKCvI7A4Ug06rk7J0zBe1fz/qe4i2/F12rvfwCGYhcRxPy7QF3q8fR6GCJdB1U",
    "Q5SlwCjFxD4uezURztIlIAjMkt7DFvKRh+2zK+5plVGGFsjDJtMz2ud9y0pvOE4j3dH5IW9jGxaS",
    "GStqNrabnnpF236ETr1/a43b8FFKL5QNmt8Vr9xnXRpznqCRvqjr+kVrb6dlfuTlliXeQTMlBoRW",
    "FJORL8AcBJxGZ4K2mXftl1jU5TLeh5KXL9NW7a/qAOIUs2FiOhqrtzAhJRg9Ij8QkQ9Pk+cKGzw6",
    "El3T3kFrEg6zkxmvMuabZOsdKfRkWfhH2ZKcTlDfmH1H0zq0Q2bG3uvaVdiCtFY1LlWyB38JS2fN",
    "sR/Py6t5brEJCFNvzaDky6KeC4ion/cVgUai7zzS3bGQWzKDKU35SqNU2WkPI8xCZ00WtIiKKFnX",
    "WUQxvlKmmgZBIYPe01zD0N8atFxmWiSnfJl690B9rJpNR/fIajxCW3Seiws6r1Zm+tCuVbMiNtpS",
    "9ThjNX4uve5thyfE2DgoxRFvY1CsoF5M",
];

const MILAN_ASVK: &[&str] = &[
    "MIIGjzCCBD6gAwIBAgIDAQEBMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstTWlsYW4wHhcNMjIxMTE2MjI0",
    "NTI0WhcNNDcxMTE2MjI0NTI0WjCBgDEUMBIGA1UECwwLRW5naW5lZXJpbmcxCzAJBgNVBAYTAlVT",
    "MRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExHzAdBgNVBAoMFkFkdmFuY2VkIE1p",
    "Y3JvIERldmljZXMxFzAVBgNVBAMMDlNFVi1WTEVLLU1pbGFuMIICIjANBgkqhkiG9w0BAQEFAAOC",
    "Ag8AMIICCgKCAgEA1EUWkz5FTPz+uWT2hCEyisam8FRuXZAmS3l+rXgSCeS1Q0+1olcnFSJpiwfs",
    "sfhoutJqePyicu+OhkX131PMeO/VOtH3upK4YNJmq36IJp7ZWIm5nK2fJNkYEHW0m/NXcIA9U2iH",
    "l5bAQ5cbGp97/FaOJ4VmGoTMV658Yox/plFmZRFfRcsw2hyNhqUl1gzdpnIIgPkygUovFEgaa0IV",
    "SgGLHQhZQiebNLLSVWRVReve0t94zlRIRRdrz84cckP9H9DTAUMyQaxSZbPINKbV6TPmtrwAV9UP",
    "1Qq418xn9I+C0SsWutP/5S1OiL8OTzQ4CvgbHOfd2F3yVv4xDBza4SelF2igoDf+BF4XI/IIHJL2",
    "N5uKy3+gkSB2Xl6prohgVmqRFvBW9OTCEa32WhXu0t1Z1abEKDZ3LpZt9/Crg6zyPpXDLR/tLHHp",
    "SaPRj7CTzHieKMTz+Q6RrCCQcHGfaAD/ETNY56aHvNJRZgbzXDUJvnLr3dYyOvvn/DtKhCSimJyn",
    "n7Len4ArDVQVwXRPe3hR/asCE2CajT7kGC1AOtUzQuIKZS2D0Qk74g297JhLHpEBlQiyjRJ+LCWZ",
    "Nx9uJcixGyzav6fiOWx4U8uWhRzHs8nvDAdcS4LW31tPlA9BeOK/BGimQTu7hM5MDFZL0C9dWK5p",
    "uCUJex6I2vSqvycCAwEAAaOBozCBoDAdBgNVHQ4EFgQUNuJXE6qi45/CgqkKRPtVLObC7pEwHwYD",
    "VR0jBBgwFoAUhawa0UP3yKxV1MUdQUir1XhK1FMwEgYDVR0TAQH/BAgwBgEB/wIBADAOBgNVHQ8B",
    "Af8EBAMCAQQwOgYDVR0fBDMwMTAvoC2gK4YpaHR0cHM6Ly9rZHNpbnRmLmFtZC5jb20vdmxlay92",
    "MS9NaWxhbi9jcmwwRgYJKoZIhvcNAQEKMDmgDzANBglghkgBZQMEAgIFAKEcMBoGCSqGSIb3DQEB",
    "CDANBglghkgBZQMEAgIFAKIDAgEwowMCAQEDggIBAI7ayEXDNj1rCVnjQFb6L91NNOmEIOmi6Xto",
    "pAqr8fj7wqXap1MY82Y0AIi1K9R7C7G1sCmY8QyEyX0zqHsoNbU2IMcSdZrIp8neT8afv8tPt7qo",
    "W3hZ+QQRMtgVkVVrjJZelvlB74xr5ifDcDiBd2vu/C9IqoQS4pVBKNSFpofzjtYKvebBBBXxeM2b",
    "901UxNgVjCY26TtHEWN9cA6cDVqDDCCL6uOeR9UOvKDSSqlM6nXldSj7bgK7Wh9M9587IwRvNZlu",
    "Xc1CDiKMZybLdSKOlyMJH9ss1GPn0eBVEhVjf/gttn7HrcQ9xJZVXyDtL3tkGzemrPK14NOYzmph",
    "6xr1iiedAzOVpNdPiEXn2lvas0P4TD9UgBh0Y7xyf2yENHiSgJT4T8Iktm/TSzuh4vqkQ72A1HdN",
    "TGjoZcfzKCsQJ/YuFICeaNxw5cIAGBK/o+6Ek32NPv5XtixNOhEx7GsaVRG05bq5oTt14b4hKYhq",
    "V1CDrX5hiVRpFFDs/sAGfgTzLdiGXLcvYAUz1tCKIT/eQS9c4/yitn4F3mCPd4uQB+fggMtK0qPR",
    "thpFtc2SqVCTvHnhxyXqo7GpXMsssgLgKNwaFPe2+Ld5OwPR6Pokji9h55m05Dxob8XtD4gW6oFL",
    "o9Icg7XqdOr9Iip5RBIPxy7rKk/ReqGs9KH70YPk",
];

const GENOA_ARK: &[&str] = &[
    "MIIGYzCCBBKgAwIBAgIDAgAAMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstR2Vub2EwHhcNMjIwMTI2MTUz",
    "NDM3WhcNNDcwMTI2MTUzNDM3WjB7MRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx",
    "FDASBgNVBAcMC1NhbnRhIENsYXJhMQswCQYDVQQIDAJDQTEfMB0GA1UECgwWQWR2YW5jZWQgTWlj",
    "cm8gRGV2aWNlczESMBAGA1UEAwwJQVJLLUdlbm9hMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIIC",
    "CgKCAgEA3Cd95S/uFOuRIskW9vz9VDBF69NDQF79oRhL/L2PVQGhK3YdfEBgpF/JiwWFBsT/fXDh",
    "zA01p3LkcT/7LdjcRfKXjHl+0Qq/M4dZkh6QDoUeKzNBLDcBKDDGWo3v35NyrxbA1DnkYwUKU5AA",
    "k4P94tKXLp80oxt84ahyHoLmc/LqsGsp+oq1Bz4PPsYLwTG4iMKVaaT90/oZ4I8oibSru92vJhlq",
    "WO27d/Rxc3iUMyhNeGToOvgx/iUo4gGpG61NDpkEUvIzuKcaMx8IdTpWg2DF6SwF0IgVMffnvtJm",
    "A68BwJNWo1E4PLJdaPfBifcJpuBFwNVQIPQEVX3aP89HJSp8YbY9lySS6PlVEqTBBtaQmi4ATGmM",
    "R+n2K/e+JAhU2Gj7jIpJhOkdH9firQDnmlA2SFfJ/Cc0mGNzW9RmIhyOUnNFoclmkRhl3/AQU5Ys",
    "9Qsan1jT/EiyT+pCpmnA+y9edvhDCbOG8F2oxHGRdTBkylungrkXJGYiwGrR8kaiqv7NN8QhOBMq",
    "YjcbrkEr0f8QMKklIS5ruOfqlLMCBw8JLB3LkjpWgtD7OpxkzSsohN47Uom86RY6lp72g8eXHP1q",
    "YrnvhzaG1S70vw6OkbaaC9EjiH/uHgAJQGxon7u0Q7xgoREWA/e7JcBQwLg80Hq/sbRuqesxz7wB",
    "WSY254cCAwEAAaN+MHwwDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSfXfn+DdjzWtAzGiXvgSlP",
    "vjGoWzAPBgNVHRMBAf8EBTADAQH/MDoGA1UdHwQzMDEwL6AtoCuGKWh0dHBzOi8va2RzaW50Zi5h",
    "bWQuY29tL3ZjZWsvdjEvR2Vub2EvY3JsMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQCh",
    "HDAaBgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBA4ICAQAdIlPBC7DQmvH7kjlO",
    "znFx3i21SzOPDs5L7SgFjMC9rR07292GQCA7Z7Ulq97JQaWeD2ofGGse5swj4OQfKfVv/zaJUFjv",
    "osZOnfZ63epu8MjWgBSXJg5QE/Al0zRsZsp53DBTdA+Uv/s33fexdenT1mpKYzhIg/cKtz4oMxq8",
    "JKWJ8Po1CXLzKcfrTphjlbkh8AVKMXeBd2SpM33B1YP4g1BOdk013kqb7bRHZ1iB2JHG5cMKKbwR",
    "CSAAGHLTzASgDcXr9Fp7Z3liDhGu/ci1opGmkp12QNiJuBbkTU+xDZHm5X8Jm99BX7NEpzlOwIVR",
    "8ClgBDyuBkBC2ljtr3ZSaUIYj2xuyWN95KFY49nWxcz90CFa3Hzmy4zMQmBe9dVyls5eL5p9bkXc",
    "gRMDTbgmVZiAf4afe8DLdmQcYcMFQbHhgVzMiyZHGJgcCrQmA7MkTwEIds1wx/HzMcwU4qqNBAoZ",
    "V7oeIIPxdqFXfPqHqiRlEbRDfX1TG5NFVaeByX0GyH6jzYVuezETzruaky6fp2bl2bczxPE8HdS3",
    "8ijiJmm9vl50RGUeOAXjSuInGR4bsRufeGPB9peTa9BcBOeTWzstqTUB/F/qaZCIZKr4X6TyfUuS",
    "Dz/1JDAGl+lxdM0P9+lLaP9NahQjHCVf0zf1c1salVuGFk2w/wMz1R1BHg==",
];

const GENOA_ASK: &[&str] = &[
    "MIIGiTCCBDigAwIBAgIDAgACMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstR2Vub2EwHhcNMjIxMDMxMTMz",
    "MzQ4WhcNNDcxMDMxMTMzMzQ4WjB7MRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx",
    "FDASBgNVBAcMC1NhbnRhIENsYXJhMQswCQYDVQQIDAJDQTEfMB0GA1UECgwWQWR2YW5jZWQgTWlj",
    "cm8gRGV2aWNlczESMBAGA1UEAwwJU0VWLUdlbm9hMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIIC",
    "CgKCAgEAoHJhvk4Fwwkwb03AMfLySXJSXmEaCZMTRbLgPaj4oEzaD9tGfxCSw/nsCAiXHQaWUt++",
    "bnbjJO05TKT5d+Cdrz4/fiRBpbhf0xzvh11O+wJTBPj3uCzDm48vEZ8l5SXMO4wd/QqwsrejFERP",
    "D/Hdfv1mGCMW7ac0ug8trDzqGe+l+p8NMjp/EqBDY2vd8hLaVLmS+XjAqlYVNRksh9aTzSYL19/c",
    "TrBDmqQ2y8k23zNl2lW6q/BtQOpWGVs3EWvBHb/Qnf3f3S9+lC4H2jdDy9yn7kqyTWq4WCBnE4qh",
    "YJRokulYtzMZM1Ilk4Z6RPkOTR1MJ4gdFtj7lKmrkSuOoJYmqhJIsQJ854lAbJybgU7zyzWAwu3u",
    "aslkYKUEAQf2ja5Hyl3IBqOzpqY31SpKzbl8NXveZybRMklwfe4iDLI25T9ku9CVetDYifCbdGeu",
    "HdTwZBBemW4NE57L7iEV8+zz8nxng8OMX//4pXntWqmQbEAnBLv2ToTgd1H2zYRthyDLc3V119/+",
    "FnTW17LK6bKzTCgEnCHQEcAt0hDQLLF799+2lZTxxfBEoduAZax6IjgAMCi6e1ZfKPJSkdvb2m3B",
    "wfP8bniG7+AEJv1WOEmnBJc1pVQCttbJUodbi07Vfen5JRUqAvSM3ObWQOzSAGzsGnpIigwFpW6m",
    "9F7uYVUCAwEAAaOBozCBoDAdBgNVHQ4EFgQUssZ7pDW7HJVkHAmgQf/F3EmGFVowHwYDVR0jBBgw",
    "FoAUn135/g3Y81rQMxol74EpT74xqFswEgYDVR0TAQH/BAgwBgEB/wIBADAOBgNVHQ8BAf8EBAMC",
    "AQQwOgYDVR0fBDMwMTAvoC2gK4YpaHR0cHM6Ly9rZHNpbnRmLmFtZC5jb20vdmNlay92MS9HZW5v",
    "YS9jcmwwRgYJKoZIhvcNAQEKMDmgDzANBglghkgBZQMEAgIFAKEcMBoGCSqGSIb3DQEBCDANBglg",
    "hkgBZQMEAgIFAKIDAgEwowMCAQEDggIBAIgu3V2tQJOo0/6GvNmwLXbLDrsLKXqHUqdGyOZUpPHM",
    "3ujTaex1G+8bEgBswwBa+wNvl1SQqRqy2x2QwP+i//BcWr3lMrUxci4G7/P8hZBV821nrAUZtbvf",
    "qla5MrRH9AKJXWW/pmtd10czqCHkzdLQNZNjt2dnZHMQAMtGs1AtynREHNwEBiH2KAt7gUc/sKWn",
    "SCipztKE76puN/XXbSx+Ws+VPiFw6CBAeI9dqnEiQ1tpEgqtWEtcKm7Ggb1XH6oWbISoowvc00/A",
    "DWfNom0xl6v2C6RIWYgUoZ2f7PCyV3Dtbu/fQfyyZvmtVLA4gB2Ehc6Omjy21Y55WY9IweHlKENM",
    "PEUVtRqOvRVI0ml9Wbalf049joCu2j33XPqwp3IrzevmPBDGpR2Stdm3K66a/g/BSY7Wc9/VeykP",
    "3RXlxY1TMMJ8F1lpg6Tmu+c+vow7cliyqOoayAnR71U8+rWrL3HRHheSVX8GPYOaDNBTt831Z027",
    "vDWv3811vMoxYxhuTRaokvNWCSzmJ2EWrPYHcHOtkjSFKN7ot0Rc70fIRZEYc2rb3ywLSicEq3JQ",
    "Cnnz6iCZ1tMfplzcrJ2LnW2F1C8yRV+okylyORlsaxOLKYOWjaDTSFaq1NIwodHp7X9fOG48uRuJ",
    "WS8GmifD969sC4Ut2FJFoklceBVUNCHR",
];

const GENOA_ASVK: &[&str] = &[
    "MIIGjzCCBD6gAwIBAgIDAgEBMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstR2Vub2EwHhcNMjIxMTE4MjA0",
    "ODM0WhcNNDcxMTE4MjA0ODM0WjCBgDEUMBIGA1UECwwLRW5naW5lZXJpbmcxCzAJBgNVBAYTAlVT",
    "MRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExHzAdBgNVBAoMFkFkdmFuY2VkIE1p",
    "Y3JvIERldmljZXMxFzAVBgNVBAMMDlNFVi1WTEVLLUdlbm9hMIICIjANBgkqhkiG9w0BAQEFAAOC",
    "Ag8AMIICCgKCAgEAzL2/xihHscEpxS3+OsQZpAuNIJGSEQZrkoWPtqKMjjZOyXMMRHAheTm56Ei0",
    "Mb8TJZlbGDS5x/AdbowstGmpHqh2zvSvjZO7V4v6Ft84p71P6GXfOVEQgCuatiszfIwFrRQk/cmU",
    "7HuJadBq6XtYE+qBJMjus8C0WwW/IWY9j6pNbEA1SnUvVg6t89zfE+AcB5UDCKq09x7qw+rPt9pT",
    "pEch0f1bHdRFJlpgWGTq02ohH9bT+6au8kPpvMa3m2p8zdIIqtuuSG6srIimrpt24lsr4tLhQG65",
    "R/RbVJT9MsK4ULpbAUO5NwdlLwbnpLWHiUwoYrySMD8l3xRDvhPmInlXEFEo8lahcYllxiJJR8oq",
    "qA6x3jPFKmkfhEgaQefcn4P8nA4SScqAoLihn75iiDtU2+ZlkPnKgcNs5U1Le441ypen2n7BOnRy",
    "hmwyAUBGk3OcMXHsJ6KGpDJyTVCaC3fWX3ex4Iv4LkuKRA6O9yu3zHP23N/ubE8/YykffIjMbtBo",
    "OAzdWCn9lE4amo4VZ+8ewIutZAYmC5TIQO+wWUqKYr0iAobccMnZdJjUORjVoqVQ+dLr+/1otk36",
    "gfPc0LpmhWZKfAXF9sgvYtQjcaR9wlGr8ySRtZ2YJWofuR7zgYFJPEXRwAnbAR/05hBmog7CMt1F",
    "9YKSmku6JfRecY8CAwEAAaOBozCBoDAdBgNVHQ4EFgQUhEdjn8HQNI9bN2NAKL9zgM6VNoowHwYD",
    "VR0jBBgwFoAUn135/g3Y81rQMxol74EpT74xqFswEgYDVR0TAQH/BAgwBgEB/wIBADAOBgNVHQ8B",
    "Af8EBAMCAQQwOgYDVR0fBDMwMTAvoC2gK4YpaHR0cHM6Ly9rZHNpbnRmLmFtZC5jb20vdmxlay92",
    "MS9HZW5vYS9jcmwwRgYJKoZIhvcNAQEKMDmgDzANBglghkgBZQMEAgIFAKEcMBoGCSqGSIb3DQEB",
    "CDANBglghkgBZQMEAgIFAKIDAgEwowMCAQEDggIBALgCTyTS/ppxo42n2LOox42LvNIsn2/ZaMs2",
    "NfCj4f2+VN5Xs1NNdptn2nq/SKu5aKnLS5XGWCnHfMSKZ7vqHLKMa0Wxfm+4JahOItQ3+PzbTa0E",
    "wUkq1u6oezhTHywX1PilNRc4EjWgQ6ba/z4BBxO3P10tW/C39VS0Cv8SN5G2bfZrPkjy6LBjGiaT",
    "4MBcsN+SM2o5QgKRG0qqn+edegHMmTPBDV2qCKbe5CBsa122q+F6S9hPEEiGkz/IpShnSGCaFvbE",
    "u0Uvh2dYUlrON2peZMDkevKurDXlGxTehAflCiugBsNeJivx0j7B/HazAvxkLPTCkIdmQJccezF5",
    "PCgmMW0SeP4cMb5Ewzv/yCsTLyh13YsYBww5eW4DBREd/vCAS7F1JQUZ4twQy/jqBAJhcDyGuRnn",
    "wrRevGdWsb3cXBqeLCub7CKZ1n/zqSRHq8FRgoroPRpfFjSGhDVFbjj7bDzWU6WNmF/7LpnqG+tI",
    "MyRc+3Y3yRAYchFNOFHyS6R2C0KTy1nRSYwBUdQtGaQ0rE3e5Mulcidh4qkIxpp089vzqV8JTSJs",
    "RzTOzkujOuHUYPKswJ1TvQr5S1C0gPN2qAESnCs7Nf2x82DSxmEqaiI7xS58pR6vZ8BeXMGPPQqg",
    "Om/oBzOypVR3iCG6MFdjsTNA6M8P7GCZe1p72cko",
];

const TURIN_ARK: &[&str] = &[
    "MIIGYzCCBBKgAwIBAgIDAwAAMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstVHVyaW4wHhcNMjMwNTE1MjAw",
    "MzEyWhcNNDgwNTE1MjAwMzEyWjB7MRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx",
    "FDASBgNVBAcMC1NhbnRhIENsYXJhMQswCQYDVQQIDAJDQTEfMB0GA1UECgwWQWR2YW5jZWQgTWlj",
    "cm8gRGV2aWNlczESMBAGA1UEAwwJQVJLLVR1cmluMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIIC",
    "CgKCAgEAwaAriB7EIuVc4ZB1wD3YfDxL+9eyS7+izm0Jj3W772NINCWl8Bj3w/JD2ZjmbRxWdIq/",
    "4d9iarCKorXloJUB1jRdgxqccTx1aOoig4+2w1XhVVJT7K457wT5ZLNJgQaxqa9Etkwjd6+9sOhl",
    "CDE9l43kQ0R2BikVJa/uyyVOSwEk5w5tXKOuG9jvq6QtAMJasW38wlqRDaKEGtZ9VUgGon27ZuL4",
    "sTJuC/azz9/iQBw8kEilzOl95AiTkeY5jSEBDWbAqnZk5qlM7kISKG20kgQm14mhNKDI2p2oua+z",
    "uAG7i52epoRF2GfU0TYk/yf+vCNB2tnechFQuP2e8bLk95ZdqPi9/UWw4JXjtdEA4u2JYplSSUPQ",
    "VAXKt6LVqujtJcM59JKr2u0XQ75KwxcMp15gSXhBfInvPAwuAY4dEwwGqT8oIg4esPHwEsmChhYe",
    "DIxPG9R4fx9O0q6p8Gb+HXlTiS47P9YNeOpidOUKzDl/S1OvyhDtSL8LJc24QATFydo/iD/KUdvF",
    "TRlD0crkAMkZLoWQ8hLDGc6BZJXsdd7Zf2e4UW3tI/1oh/2t23Ot3zyhTcv5gDbABu0LjVe98uRn",
    "S15SMwK//lJt9e5BqKvgABkSoABf+B4VFtPVEX0ygrYaFaI9i5ABrxnVBmzXpRb21iI1NlNCfOGU",
    "PIhVpWECAwEAAaN+MHwwDgYDVR0PAQH/BAQDAgEGMB0GA1UdDgQWBBRkoF9x4wwKZNg7deUBWZ4r",
    "7gYDRDAPBgNVHRMBAf8EBTADAQH/MDoGA1UdHwQzMDEwL6AtoCuGKWh0dHBzOi8va2RzaW50Zi5h",
    "bWQuY29tL3ZjZWsvdjEvVHVyaW4vY3JsMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQCh",
    "HDAaBgkqhkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBA4ICAQA/i6Mz4IETMK8YU/Hx",
    "P7Bfej5i4aXhenJoTuiDX0nqx5CDJm9ELhskxAkJ/oLA1O92UoLybfFk4gEpKFtyfiUYex9LogZj",
    "5ix0sb2qfSSy9CRnOktGqfpel4e3KAhLgF5n2qZrqyq/8EPPldtSjEXn78sZMlIlUcQKSnnNCQZV",
    "FpktDfDiEiGNuitux3ghHUrcVuxSbZcrXDbsbMF7NDdfLUUS9TijrL33lrCXJs7m8kggGyCusiRQ",
    "KHli1AEswiA4xU+8xsZrByYTopiGYtbJK8s0UCCXylyOuKSubvdAnMDJ5GDD0+DX46LSfv7fgGNS",
    "G+LOBWdif7KoQf9cIhKJtxGxZCn/tvHmwMzu4Jnx8N2vRnT+8DpBqhxtNvdXmrZUelSeQakx4djM",
    "KvmTR8Gd25EnC4RppCkjbmPxY3zPd1X7raalTn34EOF9DeLsC9JfzkDuojxpHWMm30wKnDo20mlD",
    "Qk/zKCDa2Zc+YjtsTZCrTbvdgCukTKNZOUUVlWRu+sO/OwrmS2p16seHTIqHEbE1LntPv3gkCcHG",
    "DSUAKx9c0Aol+Dj9xpb2nmGqoDeJ59Ja6REkHCdw5TduXyqqMqfD1AX0/QDNdevCMKlWBRCQ7DFl",
    "og3H1a+r/kuMUZ/Ij9yyKlSgYZMJ4VgNKDgTQdcsAL0MCEMrzpacMwFusA==",
];

const TURIN_ASK: &[&str] = &[
    "MIIGiTCCBDigAwIBAgIDAwABMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstVHVyaW4wHhcNMjMwNTE1MjAy",
    "NTIxWhcNNDgwNTE1MjAyNTIxWjB7MRQwEgYDVQQLDAtFbmdpbmVlcmluZzELMAkGA1UEBhMCVVMx",
    "FDASBgNVBAcMC1NhbnRhIENsYXJhMQswCQYDVQQIDAJDQTEfMB0GA1UECgwWQWR2YW5jZWQgTWlj",
    "cm8gRGV2aWNlczESMBAGA1UEAwwJU0VWLVR1cmluMIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIIC",
    "CgKCAgEAnvg5Grv2Emd9lAhKdO64RXU3UESb6JTm0Hhzevx1PyxinxYqJL329qTJM0XmdozLYb7r",
    "sHxgM5I2pU18M8gect2pN/YB2LQ1/bIq37TPDbg7ym0MN6KkZ6aERxAX0voYtdDyNxjDAUjpRpCe",
    "1FccAev/Es2n/Fz1G1TmC2XepTQqaKpmt6mnDWSCHCVsQoY0gSibeaG6doM6OiNUCbKXaC7KHH5b",
    "/96BD1DJ84M+JHqPClFhHqUJwzKF5Qxj4wgWAZzK8UPhiNGjrF6+TBdlFGdSzEqw1jOrCTHduYyL",
    "K+5OQ3OIw4S+vZeOVoxJajTIWdsqYP2DLc0HkL0qWOumEOrrc2/4DeETShB0MyIpH05kSalyQN2e",
    "N5P6ptOB84hddCdbJPEepnD+FqQap1ukw3K8uBcgeBSAF23r6UtT8Uc5h7MsWX3MoZiEHcSkDQQ8",
    "IedTk7CLjsK6S7b/lfKqfYiRhKgGkRvsEd/MDNcumHZKIgzasJwgagzSggiUo9jXp3EWm84fqyxN",
    "XzSutPB7qD5P/ULAB+q9QgvrzC8XneaLP0MNrHhM80UejmsBTIktMvFoWVIelYDLdcoi0eMD5DRc",
    "cfsgrYaY6h/+/qf9tgg+mX09UJpuSPRF38oyqnNNFMl5v/tWLgUsChPU6NCQC17Qaqr8mu2ynyyu",
    "HEs5JVUCAwEAAaOBozCBoDAdBgNVHQ4EFgQUbYJXt6v2sMgUALjxD0WvG9aq628wHwYDVR0jBBgw",
    "FoAUZKBfceMMCmTYO3XlAVmeK+4GA0QwEgYDVR0TAQH/BAgwBgEB/wIBADAOBgNVHQ8BAf8EBAMC",
    "AQQwOgYDVR0fBDMwMTAvoC2gK4YpaHR0cHM6Ly9rZHNpbnRmLmFtZC5jb20vdmNlay92MS9UdXJp",
    "bi9jcmwwRgYJKoZIhvcNAQEKMDmgDzANBglghkgBZQMEAgIFAKEcMBoGCSqGSIb3DQEBCDANBglg",
    "hkgBZQMEAgIFAKIDAgEwowMCAQEDggIBAAXWJ3DPahralt5kXLPMm9oKlFRqeU3HcS7kA+VBlBA1",
    "lQRUhXkbXnTvW1GZcgdZvNCB/VlET61KbCzoFIhPIESVjjb/xWX2kg3X0HHmh1EtCDbHaUFM5rq6",
    "l+S1h7qOauRZebvrwApDzAANvW0LTHRumfGm/kqh9NDtVCIWPUZ1VQIgGx1T3dwmgOK8ncT1J3W5",
    "xIyS0Xu3KC6w7oBlq8G2pPgTcCBJ4JBCTXCEXiAAGaTR/TJIaSzoZFLhxYhCMjP8WQGToPGDK2i/",
    "lZhkcGHnJOQ+lgrXfpLGqBtLlS3QODyVP0MomczG4dqw3THP3Y8Aq9c2KE7SylAKsS/bBKCqkj4O",
    "rABkDSkMQEz3BBoFD63aD5ZG/Qiz+tmhnptyPVcweC9uJlSWYm25KiV4lT52uBjxatDZKQcrpdgc",
    "U8+ozzKU8ICnZPOwfWeyuNMq/juyd/rzg5IePyyvt+13aJ5MlZBXZxJKoxCYIMKUwZigf0XsBteT",
    "8gw10/xk5smIFIB2ERtTQPMuTENgrPTUjOeiqmBg663c2dLVol+MDiT4ltqfEm4Kl/cc4f+H6bEw",
    "hj1QKAN2ipRf+mP0NfzJb+6ZHNsOvyq/WByYpLXV9JJoiDW/8RZwPU/Mn7IuQBauCy78G7FS0ta3",
    "q1et74faYBBgeJ6awEasa25CvmsmlU0R",
];

const TURIN_ASVK: &[&str] = &[
    "MIIGjzCCBD6gAwIBAgIDAwEBMEYGCSqGSIb3DQEBCjA5oA8wDQYJYIZIAWUDBAICBQChHDAaBgkq",
    "hkiG9w0BAQgwDQYJYIZIAWUDBAICBQCiAwIBMKMDAgEBMHsxFDASBgNVBAsMC0VuZ2luZWVyaW5n",
    "MQswCQYDVQQGEwJVUzEUMBIGA1UEBwwLU2FudGEgQ2xhcmExCzAJBgNVBAgMAkNBMR8wHQYDVQQK",
    "DBZBZHZhbmNlZCBNaWNybyBEZXZpY2VzMRIwEAYDVQQDDAlBUkstVHVyaW4wHhcNMjMwNTE1MjEw",
    "OTQxWhcNNDgwNTE1MjEwOTQxWjCBgDEUMBIGA1UECwwLRW5naW5lZXJpbmcxCzAJBgNVBAYTAlVT",
    "MRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExHzAdBgNVBAoMFkFkdmFuY2VkIE1p",
    "Y3JvIERldmljZXMxFzAVBgNVBAMMDlNFVi1WTEVLLVR1cmluMIICIjANBgkqhkiG9w0BAQEFAAOC",
    "Ag8AMIICCgKCAgEApjrui4l0ZogEh0fDdVfJ4unowGGolk2wXyzjbjC/fnqlhFqiFj1JSKdkYSvz",
    "PVfgDR0MU2WLlytrAGqOHYBdk4Moz3xHTXJus75Nef0EBZpGk9M4PQGF+nTqYi+hDguq14wQUElt",
    "N9wGunnUeaMz0e6hfCasDevkypILMponvTvaM49RAipCvTgmPRTkQA8hjl3tA6R7S/HKTn6/Q3T7",
    "4A0BfygK49LLkdHF05Wo0pZ9qmPyhi0Rh9epY0L+/T2e17fohWcCavgE+KF5GO5XINzunwKolCCy",
    "H3930iAmb1vv5v4PimnGsfH4ic4kIApR1hZApU3YG3qUE84qkb5SEASQsTZCT0Jv/AxC9So5h2wr",
    "aVzWz6GvpPHEtRKvue5vehkwPjFipJMT5Z7CmNuXc+0lcVSZMHSbswFSHKKtp4F0UDoPnuIWw/dj",
    "GDjkGXS9W5M2N3zVSbn94cJxCMzOTzILhcX/lJatooslfxvqucFH8PpS9xBMhuN4fTPlNk/oVbQ6",
    "w8pxEMibo0K8Q+gOqqzdVm6i7jotobsuYxH1Httjsc61vSskSDT4JkPjqTWiyOmsFI+6Ob/hya/f",
    "qpe0EPy68TPk85COC7uqNMzu58xb0uAtt0beejDx29mRRbiPNL5tnwK9KFmZDpeZWSZgzvn2K+SQ",
    "TK80ZKn8Yq2SKfUCAwEAAaOBozCBoDAdBgNVHQ4EFgQUhcyC6bne81Yf2PT1B54XmiyCCNMwHwYD",
    "VR0jBBgwFoAUZKBfceMMCmTYO3XlAVmeK+4GA0QwEgYDVR0TAQH/BAgwBgEB/wIBADAOBgNVHQ8B",
    "Af8EBAMCAQQwOgYDVR0fBDMwMTAvoC2gK4YpaHR0cHM6Ly9rZHNpbnRmLmFtZC5jb20vdmxlay92",
    "MS9UdXJpbi9jcmwwRgYJKoZIhvcNAQEKMDmgDzANBglghkgBZQMEAgIFAKEcMBoGCSqGSIb3DQEB",
    "CDANBglghkgBZQMEAgIFAKIDAgEwowMCAQEDggIBAH6VbG86NSqZ9yjcqVuBGCEYwK6uDBQQHbXm",
    "YJXVX81sPN9cclAs6J2yiHcyDFq1g7ICnHO0T36vcj3V/27x4o2pmjAk3SU0YbMl9pR+AMHZrIQQ",
    "7FTldVP9HdWYx/KenFF42EFCAtOzgs9yLkyTviwX+d3YrWX0SXLMcuf0TO5VsCPX5DqcggneHruZ",
    "MVICGTukY12cKYmasT74cms5WLzcQ5BVbttJmX+eHW6vDg3hlmvUmjuTNQVoF5k5KcbHVV6VzG9S",
    "ITLFozwdLSr5MbmfYHv7adLoNA5F1Ihff1it0sn5HktUD/2GVGtkXES/KFEnXzS7A9wUlMqAGQOs",
    "EBUhFcg3MUAt0SYnQ/B3JdV87+ZEawMRLxEIinKDERI/i+l9fw61+R5TpSI3yhuQ4NGJAQ97dRqi",
    "y8EdiJOLLeT2DYOvi9pSJw3UqNuelINDlDCjChGimRv5Idjh0zbT6IjzagYY0rpSHbPgiJWrI2dA",
    "3qeJDEiEXQ++v4WP10fq+Jr5FTXiIwNd+1VGxBizw184gLPnEoXv8br+YScnZjB8YW/oWsGuHz2k",
    "MTxOVT5Zizn3yVXvOpXFiwiavWQDJS52woXOwBzIyEdTPUL1E8s4KS2HQBzK1VfwvWcYNE5S0bAI",
    "MX1bYiEyJkr49+VLypQx5sIDU1cbVw3Py5XISUxr",
];

/// `(generation, certificate, base64 DER, SHA-256 fingerprint)`.
const TABLE: &[(Generation, AmdCert, &[&str], &str)] = &[
    (
        Generation::Milan,
        AmdCert::Ark,
        MILAN_ARK,
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    ),
    (
        Generation::Milan,
        AmdCert::Ask,
        MILAN_ASK,
        "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
    ),
    (
        Generation::Milan,
        AmdCert::Asvk,
        MILAN_ASVK,
        "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
    ),
    (
        Generation::Genoa,
        AmdCert::Ark,
        GENOA_ARK,
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    ),
    (
        Generation::Genoa,
        AmdCert::Ask,
        GENOA_ASK,
        "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
    ),
    (
        Generation::Genoa,
        AmdCert::Asvk,
        GENOA_ASVK,
        "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
    ),
    (
        Generation::Turin,
        AmdCert::Ark,
        TURIN_ARK,
        "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    ),
    (
        Generation::Turin,
        AmdCert::Ask,
        TURIN_ASK,
        "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
    ),
    (
        Generation::Turin,
        AmdCert::Asvk,
        TURIN_ASVK,
        "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
    ),
];

/// DER of a pinned AMD certificate, only if it still matches its fingerprint.
pub fn amd_cert(generation: Generation, which: AmdCert) -> Option<Vec<u8>> {
    let (_, _, b64, fp) = TABLE
        .iter()
        .find(|(g, c, _, _)| *g == generation && *c == which)?;
    let der = STANDARD.decode(b64.concat()).ok()?;
    let got = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    (hex::encode(got.as_ref()) == *fp).then_some(der)
}

/// SHA-256 fingerprint (hex) of a pinned AMD certificate.
pub fn amd_fingerprint(generation: Generation, which: AmdCert) -> Option<&'static str> {
    TABLE
        .iter()
        .find(|(g, c, _, _)| *g == generation && *c == which)
        .map(|(_, _, _, fp)| *fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pinned_amd_cert_matches_its_fingerprint() {
        for g in Generation::ALL {
            for c in [AmdCert::Ark, AmdCert::Ask, AmdCert::Asvk] {
                assert!(amd_cert(g, c).is_some(), "{g:?} {c:?}");
            }
        }
    }
}
