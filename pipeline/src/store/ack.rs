//! `--store-ack`: how many replicas must hold a single-use write (a proof's `jti`, a
//! single-use grant, a revoked token id, a suspension), or a call's charge to a delegation
//! tree's budgets and rates (`tree.rs`), before it counts.
//!
//! Redis replicates asynchronously: a `jti` set on a master that dies before its replica
//! copied it is unknown to the replica promoted in its place, and the same proof would be
//! accepted a second time there. With `replicas=N` every such write is followed, on the same
//! connection to the same master, by `WAIT N TIMEOUT`; fewer than N acknowledgements within
//! the timeout refuse the request (`store.unacknowledged`, 503) instead of accepting it.
//!
//! | value | meaning |
//! | --- | --- |
//! | `auto` (default) | `replicas=1,timeout=100` on a Redis Cluster, `none` on one Redis or memory |
//! | `none` | answer once the master holds the write (a failover may lose the last writes) |
//! | `replicas=N` | wait for N replicas, at most 100 ms |
//! | `replicas=N,timeout=MS` | wait for N replicas, at most MS ms (1–10000) |
use super::StoreError;

/// The wait for replicas when `replicas=N` names none.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 100;
/// Most replicas one can wait for.
pub const MAX_REPLICAS: u32 = 16;
/// Longest wait for replicas.
pub const MAX_ACK_TIMEOUT_MS: u64 = 10_000;

/// What `--store-ack` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// `replicas=1,timeout=100` on a cluster, [`Ack::None`] elsewhere.
    Auto,
    /// No wait: the master's answer counts.
    None,
    /// `WAIT replicas timeout_ms` after each single-use write.
    Replicas {
        /// Replicas that must acknowledge.
        replicas: u32,
        /// How long to wait for them (milliseconds).
        timeout_ms: u64,
    },
}

impl Ack {
    /// Reads `auto`, `none`, `replicas=N` or `replicas=N,timeout=MS`.
    pub fn parse(given: &str) -> Result<Ack, StoreError> {
        let refuse = |detail: String| StoreError::Ack {
            given: given.chars().take(100).collect(),
            detail,
        };
        match given {
            "auto" => return Ok(Ack::Auto),
            "none" => return Ok(Ack::None),
            _ => {}
        }
        let mut parts = given.split(',');
        let Some(n) = parts.next().and_then(|p| p.strip_prefix("replicas=")) else {
            return Err(refuse(
                "use auto, none, replicas=N or replicas=N,timeout=MS (docs/stores.md)".into(),
            ));
        };
        let replicas = n
            .parse::<u32>()
            .ok()
            .filter(|r| (1..=MAX_REPLICAS).contains(r) && n.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                refuse(format!(
                    "replicas={n}: a number of replicas from 1 to {MAX_REPLICAS} (none for no wait)"
                ))
            })?;
        let mut timeout_ms = DEFAULT_ACK_TIMEOUT_MS;
        if let Some(t) = parts.next() {
            let Some(ms) = t.strip_prefix("timeout=") else {
                return Err(refuse(format!(
                    "{t:?}: only timeout=MS may follow replicas=N"
                )));
            };
            timeout_ms = ms
                .parse::<u64>()
                .ok()
                .filter(|t| {
                    (1..=MAX_ACK_TIMEOUT_MS).contains(t) && ms.bytes().all(|b| b.is_ascii_digit())
                })
                .ok_or_else(|| {
                    refuse(format!(
                        "timeout={ms}: milliseconds from 1 to {MAX_ACK_TIMEOUT_MS} (WAIT 0 would \
                         wait forever)"
                    ))
                })?;
        }
        if let Some(extra) = parts.next() {
            return Err(refuse(format!(
                "{extra:?}: nothing follows replicas=N,timeout=MS"
            )));
        }
        Ok(Ack::Replicas {
            replicas,
            timeout_ms,
        })
    }

    /// What [`Ack::Auto`] means for a store: a wait for one replica on a cluster, none
    /// elsewhere; the others as they are.
    pub fn resolve(self, cluster: bool) -> Ack {
        match self {
            Ack::Auto if cluster => Ack::Replicas {
                replicas: 1,
                timeout_ms: DEFAULT_ACK_TIMEOUT_MS,
            },
            Ack::Auto => Ack::None,
            other => other,
        }
    }
}

impl std::fmt::Display for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ack::Auto => f.write_str("auto"),
            Ack::None => f.write_str("none"),
            Ack::Replicas {
                replicas,
                timeout_ms,
            } => write!(f, "replicas={replicas},timeout={timeout_ms}"),
        }
    }
}

impl std::str::FromStr for Ack {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ack::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_of_the_docs_are_read() {
        assert_eq!(Ack::parse("auto").unwrap(), Ack::Auto);
        assert_eq!(Ack::parse("none").unwrap(), Ack::None);
        assert_eq!(
            Ack::parse("replicas=1").unwrap(),
            Ack::Replicas {
                replicas: 1,
                timeout_ms: 100
            }
        );
        assert_eq!(
            Ack::parse("replicas=2,timeout=250").unwrap(),
            Ack::Replicas {
                replicas: 2,
                timeout_ms: 250
            }
        );
        for s in ["auto", "none", "replicas=3,timeout=7"] {
            assert_eq!(Ack::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn auto_waits_for_one_replica_on_a_cluster_only() {
        assert_eq!(
            Ack::Auto.resolve(true),
            Ack::Replicas {
                replicas: 1,
                timeout_ms: DEFAULT_ACK_TIMEOUT_MS
            }
        );
        assert_eq!(Ack::Auto.resolve(false), Ack::None);
        assert_eq!(Ack::None.resolve(true), Ack::None);
        let two = Ack::parse("replicas=2").unwrap();
        assert_eq!(two.resolve(false), two);
    }

    #[test]
    fn every_other_setting_is_refused_with_what_to_write() {
        for (s, says) in [
            ("", "use auto, none"),
            ("all", "use auto, none"),
            ("replicas", "use auto, none"),
            ("replicas=0", "from 1 to 16"),
            ("replicas=17", "from 1 to 16"),
            ("replicas=+1", "from 1 to 16"),
            ("replicas=x", "from 1 to 16"),
            ("replicas=1,timeout=0", "WAIT 0 would wait forever"),
            ("replicas=1,timeout=10001", "from 1 to 10000"),
            ("replicas=1,timeout=", "from 1 to 10000"),
            ("replicas=1,wait=5", "only timeout=MS"),
            ("replicas=1,timeout=5,x", "nothing follows"),
            ("None", "use auto, none"),
        ] {
            let e = Ack::parse(s).unwrap_err();
            assert_eq!(e.code(), "store.ack");
            assert!(e.to_string().contains(says), "{s:?}: {e}");
        }
    }
}
