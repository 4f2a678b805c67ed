//! Every key CADA writes in a shared store, built here and nowhere else, and the Redis
//! Cluster slot each lands in.
//!
//! | family | key | operations | hash tag |
//! | --- | --- | --- | --- |
//! | proof ids, revoked token ids, reinstatement ids | `cada:jti:<40 hex>` (SHA-256 of the id, truncated) | `SET NX PX` (+ `WAIT`), `EXISTS` | none: one key per operation |
//! | single-use grants | `cada:grant:<64 hex>` ([`cada_attestation_verifier::grants::SingleUse::store_key`]) | `SET NX PX` (+ `WAIT`); release (`DEL` while it holds the claim's value) | none: one key per operation |
//! | a contract's behaviour counters | `cada:cnt:{T}` (a hash: `req`, `req:n`, `ref`, `ref:n`) | one script on that key | `{T}` |
//! | a delegation tree's link counters (issue 24) | `cada:cnt:{R}` for the root, `cada:cnt:{R}:D` below (a hash: `b` budget used, `s`/`s:n` rate second, `req`/`ref` as above) | one script on every link of a chain (+ `WAIT` for a call's charge) | `{R}`, the ROOT's tag |
//! | a contract's suspension | `cada:susp:{T}` (the suspension record) | `GET`, `SET NX` (+ `WAIT`); `DEL` with its counters | `{T}` |
//!
//! `T` is the contract's digest (`cada.dtc`) when it is 1–128 characters of
//! `[A-Za-z0-9._-]` (every digest CADA makes), else `h` and the hex SHA-256 of it: never
//! empty and never holding a brace, so that `{T}` is the whole hash tag and the two keys of
//! one contract always share a slot ([`MULTI_KEY_OPERATIONS`], checked by the tests with
//! the cluster's own CRC16).
//!
//! Before issue 26 the fleet's keys were `cada:cnt:{req|ref}:<dtc>:<window>` and
//! `cada:susp:<dtc>`; a suspension under the old name is still read and lifted on a single
//! Redis ([`legacy_suspension`]), the old counters expire by themselves within two windows.
use aws_lc_rs::digest::{digest, SHA256};

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The key of a proof id (or any single-use mark given as bytes): `cada:jti:` and 40 hex
/// digits of its SHA-256.
pub fn jti(id: &[u8]) -> String {
    let d = digest(&SHA256, id);
    format!("cada:jti:{}", hex::encode(&d.as_ref()[..20]))
}

/// The tag `T` of contract `dtc` (see the module docs).
pub fn contract_tag(dtc: &str) -> String {
    let plain = !dtc.is_empty()
        && dtc.len() <= 128
        && dtc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        dtc.to_owned()
    } else {
        format!("h{}", hex::encode(digest(&SHA256, dtc.as_bytes()).as_ref()))
    }
}

/// The hash holding contract `dtc`'s request and refusal counters.
pub fn counters(dtc: &str) -> String {
    format!("cada:cnt:{{{}}}", contract_tag(dtc))
}

/// The counter hash of link `dtc` of a delegation tree whose root (owner) contract is
/// `root`: the root's own [`counters`] for the root (so its direct calls and its
/// delegations' count together), else `cada:cnt:{R}:D` (`R`, `D` the tags of `root` and
/// `dtc`). Every key of one tree shares the hash tag `{R}`: one script checks and charges
/// all the links of a chain together (issue 24, docs/delegation.md).
pub fn tree_counters(root: &str, dtc: &str) -> String {
    if root == dtc {
        counters(root)
    } else {
        format!("cada:cnt:{{{}}}:{}", contract_tag(root), contract_tag(dtc))
    }
}

/// The suspension of contract `dtc`.
pub fn suspension(dtc: &str) -> String {
    format!("cada:susp:{{{}}}", contract_tag(dtc))
}

/// The suspension key of contract `dtc` before issue 26 (read and lifted on a single
/// Redis only: a cluster never held it).
pub fn legacy_suspension(dtc: &str) -> String {
    format!("cada:susp:{dtc}")
}

/// Whether `key` is a single-use grant's key as the verifier builds it.
pub fn is_grant(key: &str) -> bool {
    key.strip_prefix("cada:grant:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The keys an operation touches for a contract.
pub type KeysOf = fn(&str) -> Vec<String>;

/// Every operation that touches more than one key, with the keys it touches for a contract
/// `dtc`: each must land in one slot (a cluster refuses, or the client splits, anything
/// else; the e2e module cluster_store also asks a real cluster's CLUSTER KEYSLOT).
pub const MULTI_KEY_OPERATIONS: &[(&str, KeysOf)] = &[
    ("fleet reinstate (DEL counters and suspension)", |dtc| {
        vec![counters(dtc), suspension(dtc)]
    }),
    (
        "fleet tree charge (every link's counters of one chain, root dtc)",
        |dtc| {
            vec![
                tree_counters(dtc, dtc),
                tree_counters(dtc, "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"),
                tree_counters(dtc, "{x}"),
            ]
        },
    ),
];

/// The part of `key` a cluster hashes: the text between the first `{` and the first `}`
/// after it when that is not empty, else the whole key.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM: polynomial 0x1021, initial 0) of its
/// hashed part, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in hashed_part(key) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// The epoch sentinel of one Redis: `cada:epoch`, holding the store's epoch start (Unix
/// ms). Its absence tells the store layer that the store lost its memory (see
/// docs/stores.md, "A store that lost its memory").
pub const EPOCH_SENTINEL: &str = "cada:epoch";

/// For each cluster slot, the shortest decimal string whose slot it is (found once by
/// counting up with the cluster's CRC16): `{tag}` puts a key in that slot.
pub fn slot_tags() -> &'static [String] {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; usize::from(SLOTS)];
        let mut left = usize::from(SLOTS);
        let mut n: u64 = 0;
        while left > 0 {
            let t = n.to_string();
            let s = usize::from(slot(t.as_bytes()));
            if tags[s].is_none() {
                tags[s] = Some(t);
                left -= 1;
            }
            n += 1;
        }
        tags.into_iter().flatten().collect()
    })
}

/// The epoch sentinel in `slot` of a cluster: `cada:epoch:{TAG}`, TAG from [`slot_tags`].
pub fn cluster_sentinel(slot: u16) -> String {
    format!("cada:epoch:{{{}}}", slot_tags()[usize::from(slot % SLOTS)])
}

/// The epoch sentinel a claim of `key` checks: the one of `key`'s slot on a cluster (a
/// script touches one slot), [`EPOCH_SENTINEL`] on one Redis.
pub fn sentinel_for(key: &str, cluster: bool) -> String {
    if cluster {
        cluster_sentinel(slot(key.as_bytes()))
    } else {
        EPOCH_SENTINEL.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_is_the_clusters_crc16() {
        // CRC16/XMODEM's check value, and slots from the Redis Cluster specification.
        let mut crc_of_check = 0u16;
        for &b in b"123456789" {
            crc_of_check ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc_of_check = if crc_of_check & 0x8000 != 0 {
                    (crc_of_check << 1) ^ 0x1021
                } else {
                    crc_of_check << 1
                };
            }
        }
        assert_eq!(crc_of_check, 0x31C3);
        assert_eq!(slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"bar"), 5_061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        // Only the first {…} counts; an empty {} hashes the whole key.
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"{}a"), slot(b"{}b"));
        assert_eq!(hashed_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hashed_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hashed_part(b"no tag"), b"no tag");
    }

    /// Contract digests as CADA makes them, and hostile ones (a token's `cada.dtc` is
    /// whatever its issuer wrote).
    fn dtcs() -> Vec<String> {
        vec![
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU".into(),
            "a".into(),
            String::new(),
            "{".into(),
            "}".into(),
            "{}".into(),
            "x}y{z".into(),
            "with space".into(),
            "ü".into(),
            "a".repeat(129),
            "a".repeat(128),
        ]
    }

    #[test]
    fn every_multi_key_operation_stays_in_one_slot() {
        for (name, keys_of) in MULTI_KEY_OPERATIONS {
            for dtc in dtcs() {
                let keys = keys_of(&dtc);
                assert!(keys.len() > 1, "{name}");
                let first = slot(keys[0].as_bytes());
                for k in &keys {
                    assert_eq!(slot(k.as_bytes()), first, "{name} for {dtc:?}: {keys:?}");
                    // The tag is the whole {T}: never empty, never cut by a brace in T.
                    let tag = hashed_part(k.as_bytes());
                    assert_eq!(tag, contract_tag(&dtc).as_bytes(), "{k}");
                }
            }
        }
        // Different contracts spread over slots (the tag is not a constant).
        let a = slot(counters("contract-a").as_bytes());
        let b = slot(counters("contract-b").as_bytes());
        assert_ne!(a, b);
    }

    #[test]
    fn tags_are_plain_digests_or_hashes() {
        let d = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
        assert_eq!(counters(d), format!("cada:cnt:{{{d}}}"));
        assert_eq!(suspension(d), format!("cada:susp:{{{d}}}"));
        for hostile in ["", "{}", "a}b", "x y", &"a".repeat(129)] {
            let t = contract_tag(hostile);
            assert!(t.starts_with('h') && t.len() == 65, "{hostile:?} → {t}");
        }
        assert_ne!(contract_tag(""), contract_tag("{}"));
        assert_eq!(legacy_suspension(d), format!("cada:susp:{d}"));
    }

    #[test]
    fn single_key_families_keep_their_names() {
        // Unchanged from before issue 26: a jti remembered by an older instance is still
        // refused by a newer one sharing the store.
        assert_eq!(
            jti(b"abc"),
            "cada:jti:ba7816bf8f01cfea414140de5dae2223b00361a3"
        );
        assert!(is_grant(&format!("cada:grant:{}", "0f".repeat(32))));
        assert!(!is_grant("cada:grant:xyz"));
        assert!(!is_grant("cada:jti:00"));
    }

    #[test]
    fn the_slot_tag_table_covers_every_slot() {
        let tags = slot_tags();
        assert_eq!(tags.len(), usize::from(SLOTS));
        for (s, t) in tags.iter().enumerate() {
            assert_eq!(usize::from(slot(t.as_bytes())), s, "{t}");
            let k = cluster_sentinel(u16::try_from(s).unwrap());
            assert_eq!(usize::from(slot(k.as_bytes())), s, "{k}");
            assert!(t.len() <= 6, "{t}");
        }
        for key in [jti(b"x"), counters("c"), "cada:grant:00".to_owned()] {
            assert_eq!(
                slot(sentinel_for(&key, true).as_bytes()),
                slot(key.as_bytes())
            );
        }
        assert_eq!(sentinel_for("cada:jti:00", false), EPOCH_SENTINEL);
    }
}
