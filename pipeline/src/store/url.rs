//! The `--replay-store` URL: which store a fleet shares, read strictly.
//!
//! | URL | store |
//! | --- | --- |
//! | `memory` | this process only |
//! | `redis://[USER[:PASS]@]HOST[:PORT][/DB]` | one Redis (port 6379 by default) |
//! | `rediss://…` | the same over TLS (the system's CA roots) |
//! | `unix:///PATH[?db=N]`, `redis+unix:///PATH[?db=N]` | one Redis on a unix socket |
//! | `redis+cluster://[USER[:PASS]@]HOST:PORT[,HOST:PORT…]` | a Redis Cluster (or Valkey), given by seed nodes |
//! | `rediss+cluster://…` | the same over TLS |
//!
//! Anything else is refused with the rule it breaks (`store.url`): no query string (except
//! `db` on a unix socket), no fragment, no database but 0 on a cluster, no empty or repeated
//! seed node, no whitespace. The URL is shown with its password replaced by `***`
//! ([`StoreUrl::shown`]): it never reaches a log with the secret.
use super::StoreError;

/// Longest URL read.
const MAX_URL_LEN: usize = 4096;
/// Most seed nodes of a cluster URL.
pub const MAX_SEEDS: usize = 64;

/// A store URL, validated.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory`: this process only.
    Memory,
    /// One Redis server.
    Single {
        /// The URL as given (handed to the redis client; it may hold a password).
        url: String,
        /// The URL with its password hidden.
        shown: String,
    },
    /// A Redis Cluster.
    Cluster {
        /// One `redis://` (or `rediss://`) URL per seed node, credentials included.
        seeds: Vec<String>,
        /// The URL with its password hidden.
        shown: String,
    },
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shown())
    }
}

fn refuse(shown: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Url {
        shown: shown.to_owned(),
        detail: detail.into(),
    }
}

const SCHEMES: &str = "use memory, redis://HOST:PORT, rediss://HOST:PORT, unix:///PATH or \
                       redis+cluster://HOST:PORT,HOST:PORT,… (docs/stores.md)";

impl StoreUrl {
    /// Reads a `--replay-store` value.
    pub fn parse(given: &str) -> Result<StoreUrl, StoreError> {
        if given == "memory" {
            return Ok(StoreUrl::Memory);
        }
        if given.len() > MAX_URL_LEN {
            return Err(refuse(
                "(too long)",
                format!("a store URL has at most {MAX_URL_LEN} characters"),
            ));
        }
        let shown = hide_password(given);
        if given.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse(
                &shown,
                "the URL holds whitespace or a control character: remove it (percent-encode \
                 such characters in a password)",
            ));
        }
        let Some((scheme, rest)) = given.split_once("://") else {
            return Err(refuse(&shown, format!("not a store URL: {SCHEMES}")));
        };
        if rest.contains('#') {
            return Err(refuse(
                &shown,
                "a store URL has no fragment (#…): remove it",
            ));
        }
        match scheme {
            "redis" | "rediss" => {
                let (authority, path, query) = split_rest(rest);
                if let Some(q) = query {
                    return Err(refuse(
                        &shown,
                        format!(
                            "a {scheme}:// URL takes no query (?{q}): name the database as the \
                             path (/N) and credentials as USER:PASS@"
                        ),
                    ));
                }
                let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                check_host_port(hostport).map_err(|d| refuse(&shown, d))?;
                check_db(path).map_err(|d| refuse(&shown, d))?;
                check_client(given).map_err(|d| refuse(&shown, d))?;
                Ok(StoreUrl::Single {
                    url: given.to_owned(),
                    shown,
                })
            }
            "unix" | "redis+unix" => {
                let (path, query) = match rest.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (rest, None),
                };
                if !path.starts_with('/') || path.len() < 2 {
                    return Err(refuse(
                        &shown,
                        format!(
                            "{scheme}:// needs an absolute socket path: {scheme}:///run/redis.sock"
                        ),
                    ));
                }
                if let Some(q) = query {
                    for pair in q.split('&') {
                        match pair.split_once('=') {
                            Some(("db", n)) => {
                                check_db(&format!("/{n}")).map_err(|d| refuse(&shown, d))?;
                            }
                            Some(("user" | "pass", v)) if !v.is_empty() => {}
                            _ => {
                                return Err(refuse(
                                    &shown,
                                    format!(
                                        "a {scheme}:// URL takes only db=N, user=… and pass=… \
                                         in its query, not {pair:?}"
                                    ),
                                ))
                            }
                        }
                    }
                }
                check_client(given).map_err(|d| refuse(&shown, d))?;
                Ok(StoreUrl::Single {
                    url: given.to_owned(),
                    shown,
                })
            }
            "redis+cluster" | "rediss+cluster" => {
                let node_scheme = if scheme == "rediss+cluster" {
                    "rediss"
                } else {
                    "redis"
                };
                let (authority, path, query) = split_rest(rest);
                if let Some(q) = query {
                    return Err(refuse(
                        &shown,
                        format!("a cluster URL takes no query (?{q}): remove it"),
                    ));
                }
                if !matches!(path, "" | "/" | "/0") {
                    return Err(refuse(
                        &shown,
                        format!("a Redis Cluster has only database 0: remove the path {path:?}"),
                    ));
                }
                let (userinfo, nodes) = match authority.rsplit_once('@') {
                    Some((u, n)) => (Some(u), n),
                    None => (None, authority),
                };
                if nodes.is_empty() {
                    return Err(refuse(
                        &shown,
                        "name at least one seed node: redis+cluster://HOST:PORT,HOST:PORT",
                    ));
                }
                let mut seeds = Vec::new();
                let mut seen = Vec::new();
                for node in nodes.split(',') {
                    if node.is_empty() {
                        return Err(refuse(
                            &shown,
                            "an empty seed node (two commas, or one at either end): \
                             separate HOST:PORT seed nodes with single commas",
                        ));
                    }
                    check_host_port(node).map_err(|d| refuse(&shown, d))?;
                    if !has_port(node) {
                        return Err(refuse(
                            &shown,
                            format!(
                                "seed node {node:?} has no port: cluster nodes are named \
                                 HOST:PORT"
                            ),
                        ));
                    }
                    let normal = node.to_ascii_lowercase();
                    if seen.contains(&normal) {
                        return Err(refuse(
                            &shown,
                            format!("seed node {node} is named twice: name it once"),
                        ));
                    }
                    seen.push(normal);
                    if seeds.len() == MAX_SEEDS {
                        return Err(refuse(
                            &shown,
                            format!(
                                "at most {MAX_SEEDS} seed nodes: the client learns the others \
                                 from the cluster"
                            ),
                        ));
                    }
                    let seed = match userinfo {
                        Some(u) => format!("{node_scheme}://{u}@{node}"),
                        None => format!("{node_scheme}://{node}"),
                    };
                    check_client(&seed).map_err(|d| refuse(&shown, d))?;
                    seeds.push(seed);
                }
                Ok(StoreUrl::Cluster { seeds, shown })
            }
            other => Err(refuse(
                &shown,
                format!("unknown scheme {other:?}: {SCHEMES}"),
            )),
        }
    }

    /// The URL with its password replaced by `***`, for messages and logs.
    pub fn shown(&self) -> &str {
        match self {
            StoreUrl::Memory => "memory",
            StoreUrl::Single { shown, .. } | StoreUrl::Cluster { shown, .. } => shown,
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, StoreUrl::Cluster { .. })
    }
}

/// `authority`, `path` and the query of what follows `scheme://`.
fn split_rest(rest: &str) -> (&str, &str, Option<&str>) {
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..], query),
        None => (before_query, "", query),
    }
}

/// Whether `HOST:PORT` names a port (an IPv6 literal is in brackets).
fn has_port(hostport: &str) -> bool {
    match hostport.rfind(']') {
        Some(i) => hostport[i + 1..].starts_with(':'),
        None => hostport.contains(':'),
    }
}

/// `HOST[:PORT]`: a DNS name, an IPv4 address or a bracketed IPv6 literal, and a port in
/// 1–65535.
fn check_host_port(hostport: &str) -> Result<(), String> {
    let (host, port) = if let Some(after) = hostport.strip_prefix('[') {
        let Some((v6, tail)) = after.split_once(']') else {
            return Err(format!(
                "{hostport:?}: an IPv6 address needs its closing bracket"
            ));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{hostport:?}: [{v6}] is not an IPv6 address"));
        }
        match tail {
            "" => return Ok(()),
            t => match t.strip_prefix(':') {
                Some(p) => (None, Some(p)),
                None => {
                    return Err(format!(
                        "{hostport:?}: only :PORT may follow an IPv6 address"
                    ))
                }
            },
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(hostport), None),
        }
    };
    if let Some(h) = host {
        if h.is_empty() {
            return Err(format!("{hostport:?}: the host is empty: name HOST:PORT"));
        }
        if h.contains(':') {
            return Err(format!(
                "{hostport:?}: an IPv6 address goes in brackets: [ADDR]:PORT"
            ));
        }
        let ok = h.len() <= 253
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return Err(format!(
                "{hostport:?}: {h:?} is not a host name or IPv4 address"
            ));
        }
    }
    if let Some(p) = port {
        let valid = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !valid {
            return Err(format!(
                "{hostport:?}: the port must be a number from 1 to 65535, not {p:?}"
            ));
        }
    }
    Ok(())
}

/// The path naming a database: none, `/`, or `/N` (N at most 9 digits).
fn check_db(path: &str) -> Result<(), String> {
    match path {
        "" | "/" => Ok(()),
        p => {
            let n = &p[1..];
            if !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()) {
                Ok(())
            } else {
                Err(format!(
                    "the path names the database as /N (a number), not {p:?}"
                ))
            }
        }
    }
}

/// Whether the redis client reads `url` too (percent-encoding of credentials, TLS support).
fn check_client(url: &str) -> Result<(), String> {
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("the redis client refuses it: {e}"))
}

/// `given` with the password of its userinfo (and a unix URL's `pass=`) replaced by `***`.
fn hide_password(given: &str) -> String {
    let Some((scheme, rest)) = given.split_once("://") else {
        return given.chars().take(200).collect();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, nodes)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{nodes}"),
            None => format!("{userinfo}@{nodes}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, q)) => {
            let q: Vec<String> = q
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("pass", _)) => "pass=***".to_owned(),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match StoreUrl::parse(url) {
            Err(e) => {
                assert_eq!(e.code(), "store.url", "{url}");
                e.to_string()
            }
            Ok(u) => panic!("{url} was accepted as {u:?}"),
        }
    }

    #[test]
    fn the_schemes_of_the_docs_are_read() {
        assert_eq!(StoreUrl::parse("memory").unwrap(), StoreUrl::Memory);
        for single in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1",
            "redis://redis.internal:6380/2",
            "redis://cada:s3cr%40t@10.0.0.5:6379/",
            "rediss://redis.example.com:6380",
            "redis://[::1]:6379",
            "unix:///run/redis/redis.sock",
            "redis+unix:///run/redis.sock?db=3",
        ] {
            let u = StoreUrl::parse(single).unwrap();
            assert!(matches!(u, StoreUrl::Single { .. }), "{single}");
            assert!(!u.is_cluster());
        }
        let u =
            StoreUrl::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001,[::1]:7002").unwrap();
        let StoreUrl::Cluster { seeds, .. } = &u else {
            panic!("{u:?}")
        };
        assert_eq!(
            seeds,
            &[
                "redis://127.0.0.1:7000",
                "redis://127.0.0.1:7001",
                "redis://[::1]:7002"
            ]
        );
        let u = StoreUrl::parse("rediss+cluster://cada:pw@a.example:7000,b.example:7000/").unwrap();
        let StoreUrl::Cluster { seeds, shown } = &u else {
            panic!("{u:?}")
        };
        assert_eq!(
            seeds,
            &[
                "rediss://cada:pw@a.example:7000",
                "rediss://cada:pw@b.example:7000"
            ]
        );
        assert_eq!(
            shown,
            "rediss+cluster://cada:***@a.example:7000,b.example:7000/"
        );
        assert!(u.is_cluster());
    }

    #[test]
    fn a_password_is_never_shown() {
        for (url, shown) in [
            ("redis://u:hunter2@h:1", "redis://u:***@h:1"),
            ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
            (
                "unix:///s.sock?db=1&pass=hunter2",
                "unix:///s.sock?db=1&pass=***",
            ),
            (
                "redis+cluster://u:hunter2@a:1,b:2",
                "redis+cluster://u:***@a:1,b:2",
            ),
        ] {
            let u = StoreUrl::parse(url).unwrap();
            assert_eq!(u.shown(), shown);
            assert_eq!(format!("{u}"), shown);
            assert_eq!(format!("{u:?}"), shown);
        }
        // Refusals show the URL without the password too.
        let e = refused("redis+cluster://u:hunter2@a:1,,b:2");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("u:***@"), "{e}");
    }

    #[test]
    fn every_malformed_url_is_refused_with_its_rule() {
        for (url, says) in [
            ("redis", "not a store URL"),
            ("Memory", "not a store URL"),
            ("http://h:1", "unknown scheme \"http\""),
            ("redis-cluster://h:1", "unknown scheme"),
            ("redis://h:1?protocol=resp3", "takes no query"),
            ("redis://h:1#x", "no fragment"),
            ("redis://h:0", "port must be a number from 1 to 65535"),
            ("redis://h:65536", "port must be a number from 1 to 65535"),
            ("redis://h:", "port must be a number"),
            ("redis://:6379", "host is empty"),
            ("redis://h :1", "whitespace"),
            ("redis://h:1/x", "database as /N"),
            ("redis://::1:6379", "IPv6 address goes in brackets"),
            ("redis://[::1:6379", "closing bracket"),
            ("redis://[zz]:1", "not an IPv6 address"),
            ("redis://ex_ample..com:1", "not a host name"),
            ("unix://run/redis.sock", "absolute socket path"),
            ("unix:///r.sock?timeout=1", "takes only db=N"),
            ("redis+cluster://", "at least one seed node"),
            ("redis+cluster://a:1,,b:2", "empty seed node"),
            ("redis+cluster://a:1,", "empty seed node"),
            ("redis+cluster://a:1,b", "has no port"),
            ("redis+cluster://a:1,A:1", "named twice"),
            ("redis+cluster://a:1/3", "only database 0"),
            ("redis+cluster://a:1?x=1", "takes no query"),
            ("redis+unix+cluster:///s", "unknown scheme"),
        ] {
            let e = refused(url);
            assert!(e.contains(says), "{url}: {e}");
        }
        let many: Vec<String> = (1..=65).map(|p| format!("h:{p}")).collect();
        assert!(refused(&format!("redis+cluster://{}", many.join(","))).contains("at most 64"));
        assert!(refused(&"x".repeat(5000)).contains("at most 4096"));
    }
}
