//! Chain of custody: the task identifier and the W3C Trace Context `traceparent` that travel
//! in proofs (`cada.task`, `cada.tp`), through the proxy, the gate, the STS and upstream, and
//! into every audit record, so that the logs of one task can be joined end to end.
//!
//! Both are strictly validated wherever they enter (an agent's request to the daemon, a
//! client's header at the proxy, a proof's claims at decode): a task is 1 to
//! [`MAX_TASK_LEN`] bytes of `[A-Za-z0-9._:-]`; a traceparent is exactly the version-00
//! form of W3C Trace Context §3.2 (`00-<32 hex>-<16 hex>-<2 hex>`, lower-case hex, neither
//! id all zeros). Later versions are refused rather than read in part: a proof signs what a
//! verifier can read whole.
use std::fmt;

/// Longest task identifier, in bytes.
pub const MAX_TASK_LEN: usize = 128;

/// Length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
pub const TRACEPARENT_LEN: usize = 55;

/// The HTTP header a task identifier travels in (proxy in, gate out).
pub const TASK_HEADER: &str = "cada-task";

/// The W3C Trace Context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A task identifier or traceparent that is not in its strict form. Each has a stable
/// [`TraceError::code`]: `trace.task` or `trace.traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The task identifier is empty, too long or holds a byte outside `[A-Za-z0-9._:-]`.
    #[error("task identifier refused: {0} (send 1 to 128 bytes of A-Z a-z 0-9 . _ : -)")]
    Task(&'static str),
    /// The traceparent is not a version-00 W3C traceparent.
    #[error(
        "traceparent refused: {0} (send the W3C form 00-<32 lower-case hex trace id>-<16 \
         lower-case hex parent id>-<2 hex flags>, ids not all zeros)"
    )]
    Traceparent(&'static str),
}

impl TraceError {
    /// The stable code: `trace.task` or `trace.traceparent`.
    pub fn code(&self) -> &'static str {
        match self {
            TraceError::Task(_) => "trace.task",
            TraceError::Traceparent(_) => "trace.traceparent",
        }
    }
}

/// Checks a task identifier: 1 to [`MAX_TASK_LEN`] bytes of `[A-Za-z0-9._:-]`.
pub fn check_task(task: &str) -> Result<(), TraceError> {
    if task.is_empty() {
        return Err(TraceError::Task("it is empty"));
    }
    if task.len() > MAX_TASK_LEN {
        return Err(TraceError::Task("it is longer than 128 bytes"));
    }
    if !task
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(TraceError::Task(
            "it holds a character outside A-Z a-z 0-9 . _ : -",
        ));
    }
    Ok(())
}

/// A version-00 W3C `traceparent`: trace id, parent (span) id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id (16 bytes, not all zeros).
    pub trace_id: [u8; 16],
    /// The id of the span that made the call (8 bytes, not all zeros).
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// The value of one lower-case hex digit.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes lower-case hex into `out` (`s` is exactly twice as long).
fn hex_into(s: &[u8], out: &mut [u8]) -> Option<()> {
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(())
}

impl TraceParent {
    /// Parses a traceparent strictly: exactly [`TRACEPARENT_LEN`] bytes, version `00`,
    /// lower-case hex, `-` separators, trace id and parent id not all zeros.
    pub fn parse(s: &str) -> Result<Self, TraceError> {
        let b = s.as_bytes();
        if b.len() != TRACEPARENT_LEN {
            return Err(TraceError::Traceparent("it is not 55 bytes long"));
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceError::Traceparent(
                "its fields are not separated by '-' at bytes 2, 35 and 52",
            ));
        }
        if &b[..2] != b"00" {
            return Err(TraceError::Traceparent("its version is not 00"));
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            parent_id: [0; 8],
            flags: 0,
        };
        let mut flags = [0u8; 1];
        if hex_into(&b[3..35], &mut tp.trace_id).is_none()
            || hex_into(&b[36..52], &mut tp.parent_id).is_none()
            || hex_into(&b[53..55], &mut flags).is_none()
        {
            return Err(TraceError::Traceparent(
                "it holds a character that is not lower-case hex",
            ));
        }
        tp.flags = flags[0];
        if tp.trace_id == [0; 16] {
            return Err(TraceError::Traceparent("its trace id is all zeros"));
        }
        if tp.parent_id == [0; 8] {
            return Err(TraceError::Traceparent("its parent id is all zeros"));
        }
        Ok(tp)
    }

    /// A new trace (random trace id and parent id, sampled).
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            // A failing system RNG leaves zeros: tried again, never used as an id.
            let _ = aws_lc_rs::rand::fill(&mut trace_id);
        }
        TraceParent {
            trace_id,
            parent_id: new_span_id(),
            flags: 1,
        }
    }

    /// The traceparent a hop sends on: the same trace id and flags, `span_id` as parent id.
    pub fn child(&self, span_id: [u8; 8]) -> Self {
        TraceParent {
            parent_id: span_id,
            ..*self
        }
    }

    /// The trace id in lower-case hex (32 characters).
    pub fn trace_id_hex(&self) -> String {
        hex_lower(&self.trace_id)
    }

    /// The parent id in lower-case hex (16 characters).
    pub fn parent_id_hex(&self) -> String {
        hex_lower(&self.parent_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.parent_id_hex(),
            self.flags
        )
    }
}

impl std::str::FromStr for TraceParent {
    type Err = TraceError;
    fn from_str(s: &str) -> Result<Self, TraceError> {
        TraceParent::parse(s)
    }
}

/// Lower-case hex of `b`.
pub fn hex_lower(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(D[usize::from(x >> 4)]));
        s.push(char::from(D[usize::from(x & 15)]));
    }
    s
}

/// A new random span id (8 bytes, never all zeros).
pub fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        let _ = aws_lc_rs::rand::fill(&mut id);
    }
    id
}

/// Checks the optional task and traceparent of a request or proof together.
pub fn check_pair(task: Option<&str>, traceparent: Option<&str>) -> Result<(), TraceError> {
    if let Some(t) = task {
        check_task(t)?;
    }
    if let Some(tp) = traceparent {
        TraceParent::parse(tp)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_parses_and_prints_back() {
        let tp = TraceParent::parse(GOOD).unwrap();
        assert_eq!(tp.to_string(), GOOD);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id_hex(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        let c = tp.child([7; 8]);
        assert_eq!(c.trace_id, tp.trace_id);
        assert_eq!(
            c.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0707070707070707-01"
        );
        let r = TraceParent::new_root();
        assert_eq!(TraceParent::parse(&r.to_string()).unwrap(), r);
        assert_ne!(new_span_id(), new_span_id());
    }

    #[test]
    fn every_malformed_traceparent_is_refused() {
        let cases = [
            ("", "55 bytes"),
            (&GOOD[..54], "55 bytes"),
            (&format!("{GOOD}0"), "55 bytes"),
            (&format!("{GOOD}-"), "55 bytes"),
            (&format!(" {}", &GOOD[1..]), "version"),
            (&GOOD.replacen("00-", "01-", 1), "version"),
            (&GOOD.replacen("00-", "ff-", 1), "version"),
            (&GOOD.replacen("00-", "0A-", 1), "version"),
            (&GOOD.to_uppercase(), "hex"),
            (&GOOD.replace("4bf9", "4BF9"), "hex"),
            (&GOOD.replace("00f0", "00g0"), "hex"),
            (&GOOD.replace("-01", "-0x"), "hex"),
            (&GOOD.replace("-01", "-1 "), "hex"),
            (
                &GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
                "trace id",
            ),
            (
                &GOOD.replace("00f067aa0ba902b7", &"0".repeat(16)),
                "parent id",
            ),
            (&GOOD.replacen('-', "_", 1), "separated"),
            (&GOOD.replace("-00f0", "_00f0"), "separated"),
            (&GOOD.replace("-01", ":01"), "separated"),
            (&GOOD.replace("4bf9", "4bé"), "hex"),
        ];
        for (s, why) in cases {
            let e = TraceParent::parse(s).unwrap_err();
            assert_eq!(e.code(), "trace.traceparent", "{s:?}");
            assert!(e.to_string().contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn tasks_are_checked_strictly() {
        for ok in ["t", "task-1", "a.b_c:d-E9", &"x".repeat(128)] {
            check_task(ok).unwrap();
        }
        for bad in [
            "",
            &"x".repeat(129),
            "a b",
            "a/b",
            "é",
            "a\n",
            "a\0",
            "ta$k",
            "a,b",
        ] {
            assert_eq!(check_task(bad).unwrap_err().code(), "trace.task", "{bad:?}");
        }
        assert_eq!(
            check_pair(Some("ok"), Some("00-x")).unwrap_err().code(),
            "trace.traceparent"
        );
        assert!(check_pair(None, None).is_ok());
    }
}
