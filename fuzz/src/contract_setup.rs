//! A fixed owner (a test key, not a secret) and enclave DID for the `contract` target, so
//! that seeds written by one process verify in another.
use std::sync::OnceLock;

use cada_contract::{OwnerKey, TrustedOwners};

/// Verification time of the target (2026-11-28T00:00:00Z).
pub const CONTRACT_AT: u64 = 1_795_824_000;

/// The enclave key the seeds' contracts and locks name.
pub const ENCLAVE_DID: &str = "did:key:z6MkkRU1nimx7bbcK8FMRMp62iCKNN4oo4RdvdQF72W7QgB3";

const OWNER_KEY_FILE: &str = "{\n  \"type\": \"cada-owner-key\",\n  \"alg\": \"EdDSA\",\n  \"did\": \"did:key:z6Mkn3apKGWN7VnQS7sciqfTr3VyN1rzXyn2iP6zvjCr4RGh\",\n  \"kid\": \"did:key:z6Mkn3apKGWN7VnQS7sciqfTr3VyN1rzXyn2iP6zvjCr4RGh#z6Mkn3apKGWN7VnQS7sciqfTr3VyN1rzXyn2iP6zvjCr4RGh\",\n  \"pkcs8\": \"MFECAQEwBQYDK2VwBCIEIDT7FDpfNHqVb5ONwDhFy-oUlxQYHrH6QUVa43x6NNxYgSEAcMzH0pridqy2e-R8WCbUSUsN6zq02GvJ15UX0wCKGVY\"\n}";

/// The fuzzing owner's key.
pub fn owner() -> &'static OwnerKey {
    static K: OnceLock<OwnerKey> = OnceLock::new();
    K.get_or_init(|| OwnerKey::from_key_file(OWNER_KEY_FILE).expect("the embedded test key"))
}

/// The owner as verifiers trust it.
pub fn owners() -> &'static TrustedOwners {
    static T: OnceLock<TrustedOwners> = OnceLock::new();
    T.get_or_init(|| TrustedOwners::from_did_key(owner().did()).expect("a did:key"))
}
