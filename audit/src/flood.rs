//! What an unauthenticated request may cost the log: a rate per client and a cap per
//! interval on short records, and one counted `audit.dropped` record per interval for the
//! rest. Pure and time-injected (`now_ms`, milliseconds since the Unix epoch); the writer
//! holds one [`Budget`].
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::record::{clip_json, MAX_DROPPED_REASONS};

/// Limits on the records of unauthenticated requests (requests refused before a signature
/// under an attested key verified: no proof, a malformed one, an unknown key, bad
/// evidence). Records of authenticated decisions are never limited.
///
/// Bound: per interval at most `per_interval` short records ([`crate::MAX_SHORT_LINE`]
/// bytes each) and one `audit.dropped` record ([`crate::MAX_DROPPED_LINE`]), whatever the
/// flood: with the defaults (50 per 1 s interval) at most 50 × 2048 + 4096 = 106,496 bytes
/// per second, about 18 KB/s for typical records of ~350 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    /// Records one client (an IPv4 address, an IPv6 /64) gets written per interval.
    pub per_client: u32,
    /// Records all clients together get written per interval (0: none; every one counted).
    pub per_interval: u32,
    /// The interval, milliseconds (at least 1).
    pub interval_ms: u64,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            per_client: 5,
            per_interval: 50,
            interval_ms: 1000,
        }
    }
}

impl FloodLimits {
    /// The most bytes per second the records of unauthenticated requests can add to the
    /// log (short records and `audit.dropped` records, newlines included).
    pub fn max_bytes_per_second(&self) -> u64 {
        let per_interval = u64::from(self.per_interval) * (crate::MAX_SHORT_LINE as u64 + 1)
            + crate::MAX_DROPPED_LINE as u64
            + 1;
        per_interval.saturating_mul(1000) / self.interval_ms.max(1)
    }
}

/// What [`Budget::admit`] decided for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within the limits: write it.
    Write,
    /// Over a limit: counted in the interval's `audit.dropped` record instead.
    Drop,
}

/// The client key of an address: IPv4 whole, IPv6 by its /64 (one host holds a /64). An
/// IPv4 client of a dual-stack listener (`[::]`) arrives as `::ffff:a.b.c.d`: it is keyed
/// by its IPv4 address, not by the /64 all IPv4 clients share.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        ip @ IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// The state of the limits: counts of the current interval and the drops not yet
/// recorded.
#[derive(Debug)]
pub struct Budget {
    limits: FloodLimits,
    /// The interval the counts are for.
    window: u64,
    written: u32,
    /// Records written per client this interval (only clients that got one: at most
    /// `per_interval` entries).
    clients: HashMap<IpAddr, u32>,
    /// Drops by reason, not yet recorded, and the interval they began in.
    dropped: BTreeMap<String, u64>,
    dropped_since: u64,
}

impl Budget {
    /// A budget under `limits`.
    pub fn new(limits: FloodLimits) -> Self {
        Budget {
            limits,
            window: 0,
            written: 0,
            clients: HashMap::new(),
            dropped: BTreeMap::new(),
            dropped_since: 0,
        }
    }

    fn window_of(&self, now_ms: u64) -> u64 {
        now_ms / self.limits.interval_ms.max(1)
    }

    /// Whether a record of `reason` from `peer` at `now_ms` may be written; a record that
    /// may not is counted by reason.
    pub fn admit(&mut self, peer: IpAddr, reason: &str, now_ms: u64) -> Admit {
        let w = self.window_of(now_ms);
        if w != self.window {
            self.window = w;
            self.written = 0;
            self.clients.clear();
        }
        let key = client_key(peer);
        let mine = self.clients.get(&key).copied().unwrap_or(0);
        if self.written < self.limits.per_interval && mine < self.limits.per_client {
            self.written += 1;
            self.clients.insert(key, mine + 1);
            return Admit::Write;
        }
        if self.dropped.is_empty() {
            self.dropped_since = w;
        }
        let reason =
            if self.dropped.contains_key(reason) || self.dropped.len() + 1 < MAX_DROPPED_REASONS {
                clip_json(reason, 64)
            } else {
                "other".to_owned()
            };
        *self.dropped.entry(reason).or_insert(0) += 1;
        Admit::Drop
    }

    /// Puts back counts taken by [`Budget::take_due`] that could not be recorded.
    pub fn restore(&mut self, dropped: BTreeMap<String, u64>) {
        for (reason, n) in dropped {
            *self.dropped.entry(reason).or_insert(0) += n;
        }
    }

    /// The drops to record now: those of intervals before `now_ms`'s (or all of them when
    /// `force`), taken out of the budget.
    pub fn take_due(&mut self, now_ms: u64, force: bool) -> Option<BTreeMap<String, u64>> {
        if self.dropped.is_empty() {
            return None;
        }
        if force || self.window_of(now_ms) > self.dropped_since {
            return Some(std::mem::take(&mut self.dropped));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_rate_and_all_together_the_cap_the_rest_is_counted() {
        let mut b = Budget::new(FloodLimits {
            per_client: 2,
            per_interval: 3,
            interval_ms: 1000,
        });
        let t = 5_000;
        assert_eq!(b.admit(ip("192.0.2.1"), "pop.missing", t), Admit::Write);
        assert_eq!(b.admit(ip("192.0.2.1"), "pop.missing", t), Admit::Write);
        assert_eq!(b.admit(ip("192.0.2.1"), "pop.missing", t), Admit::Drop);
        assert_eq!(b.admit(ip("192.0.2.2"), "pop.signature", t), Admit::Write);
        // The interval's cap is reached: another client is counted, not written.
        assert_eq!(b.admit(ip("192.0.2.3"), "pop.signature", t), Admit::Drop);
        // Nothing is due within the interval; all of it once the next one starts.
        assert_eq!(b.take_due(t + 999, false), None);
        let due = b.take_due(t + 1000, false).unwrap();
        assert_eq!(due["pop.missing"], 1);
        assert_eq!(due["pop.signature"], 1);
        assert_eq!(b.take_due(t + 1000, true), None);
        // A new interval: the client writes again.
        assert_eq!(
            b.admit(ip("192.0.2.1"), "pop.missing", t + 1000),
            Admit::Write
        );
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_are_each_a_client() {
        // Found by the adversarial review: on `--listen [::]:PORT` every IPv4 client
        // arrived as ::ffff:a.b.c.d, and all of them shared the one /64 ::ffff:0:0, so one
        // flooder used up the per-client rate of every IPv4 client.
        let mut b = Budget::new(FloodLimits {
            per_client: 1,
            per_interval: 100,
            interval_ms: 1000,
        });
        assert_eq!(b.admit(ip("::ffff:192.0.2.1"), "r", 0), Admit::Write);
        assert_eq!(b.admit(ip("::ffff:192.0.2.1"), "r", 0), Admit::Drop);
        assert_eq!(b.admit(ip("::ffff:192.0.2.2"), "r", 0), Admit::Write);
        // The same client, whichever way the listener spells it.
        assert_eq!(b.admit(ip("192.0.2.2"), "r", 0), Admit::Drop);
    }

    #[test]
    fn an_ipv6_host_is_one_client_and_reasons_are_bounded() {
        let mut b = Budget::new(FloodLimits {
            per_client: 1,
            per_interval: 100,
            interval_ms: 1000,
        });
        assert_eq!(b.admit(ip("2001:db8::1"), "r", 0), Admit::Write);
        assert_eq!(b.admit(ip("2001:db8::2"), "r", 0), Admit::Drop);
        assert_eq!(b.admit(ip("2001:db8:0:1::1"), "r", 0), Admit::Write);
        for i in 0..100 {
            b.admit(
                ip("2001:db8::3"),
                &format!("reason-{i}-{}", "x".repeat(200)),
                0,
            );
        }
        let due = b.take_due(0, true).unwrap();
        assert_eq!(due.len(), MAX_DROPPED_REASONS);
        assert!(due.keys().all(|k| k.len() <= 64));
        assert_eq!(due.values().sum::<u64>(), 101);
    }
}
