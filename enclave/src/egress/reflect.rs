//! Whether an upstream's answer reflects the credential the enclave injected (adversary22
//! findings 1, 1b, 2, 3). Such an answer is refused whole (`secret.reflected`), never
//! rewritten: a rewrite can only remove the spellings it knows, and whatever it misses (a
//! piece, another escape) reaches the agent.
//!
//! What is searched for ([`Reflection::new`]): every part of the credential
//! ([`SecretUsage::searched_parts`]: the credential, and for `Basic {}` the decoded
//! `user:password` and its secret part), each at least [`MIN_CREDENTIAL_LEN`] bytes, as
//!
//! * the raw bytes;
//! * hex, lower and upper case;
//! * base64, standard and URL-safe alphabets, padded or not, at the three alignments a
//!   larger document may put it in: the part is encoded after 0, 1 and 2 leading bytes and the
//!   characters that also depend on neighbouring bytes (at most two at each edge) are dropped.
//!   What stays is the stable middle: for `n` bytes at least `⌈(8n − 9)/6⌉` characters, so
//!   at least 15 characters (90 bits) for the 12-byte minimum — no honest answer holds that
//!   by chance, and a shorter part would leave too little to search for.
//!
//! in the answer as sent and in decoded copies of it ([`views`], [`decode_all`]): JSON string
//! escapes (`\/`, `\uXXXX` with surrogate pairs, `\"`, `\\`, `\b\f\n\r\t`), percent-encoding
//! (either hex case) and HTML character references (numeric and the usual named ones),
//! decoded together in one pass, and that copy decoded again until a round changes nothing
//! (a percent-encoded URL inside JSON, JSON inside JSON inside JSON), at most
//! [`MAX_DECODE_ROUNDS`] rounds; an answer still changing then is refused ([`UNSETTLED`]).
//! Each of those copies is also searched with what wraps an encoding into lines or groups
//! removed ([`unwrapped`]: ASCII whitespace, quoted-printable soft line breaks, literal
//! `\n`/`\r`/`\t` escapes — MIME base64 lines, spaced hex dumps), and for hex with `:`/`-`
//! between hex digits removed too ([`hex_joined`]). Other separators (a `0x` before every
//! byte, commas, base64 split by anything but whitespace) are not undone.
//! The parts are searched for as they read in those copies too. All patterns are searched
//! together (Aho–Corasick): one linear pass per view, none longer than the answer.
//!
//! What it cannot see: a credential the upstream transforms in any other way (encrypts,
//! compresses inside a JSON string, splits across answers the agent chooses — pagination with
//! agent-chosen offsets). docs/secrets.md says so: grants must not cover endpoints that echo
//! request headers.
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind};
use base64::Engine as _;
use cada_secrets::{SecretUsage, SecretsError, MIN_CREDENTIAL_LEN};
use zeroize::Zeroizing;

/// The most rounds of decoding ([`decode_all`]) applied to one piece of an answer: it is
/// decoded until a round changes nothing; an answer still changing after this many rounds
/// is refused whole (adversary22b finding R2-2: three levels of JSON escaping hid a
/// credential from a check that decoded twice).
pub const MAX_DECODE_ROUNDS: usize = 8;

/// The [`Found::form`] of an answer whose escapes are nested deeper than
/// [`MAX_DECODE_ROUNDS`]: it cannot be searched, so it is refused (`secret.answer`).
pub const UNSETTLED: &str = "unsettled";

/// The credential's spellings, ready to be searched for in answers.
pub struct Reflection {
    ac: AhoCorasick,
    /// The hex spellings alone, searched for in [`hex_joined`] views.
    hex_ac: AhoCorasick,
    /// The form of each pattern (`raw`, `hex`, `base64`), by pattern index.
    forms: Vec<&'static str>,
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints a pattern.
        write!(f, "Reflection({} patterns)", self.forms.len())
    }
}

/// Where in an answer a reflection was found (no part of the credential in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `raw`, `hex` or `base64`, or [`UNSETTLED`].
    pub form: &'static str,
    /// `as sent`, or decoded so many times ([`views`]); for [`UNSETTLED`], why.
    pub view: String,
}

/// The stable middle of the base64 of `part` placed after `lead` bytes (0, 1 or 2): the
/// characters whose six bits all come from `part`.
fn b64_middle(part: &[u8], lead: usize) -> String {
    let mut buf = Zeroizing::new(vec![0u8; lead]);
    buf.extend_from_slice(part);
    let enc = Zeroizing::new(base64::engine::general_purpose::STANDARD_NO_PAD.encode(&buf[..]));
    // Character i holds bits 6i..6i+6 of the input: bytes 6i/8 to (6i+5)/8.
    let first = (8 * lead).div_ceil(6);
    let total_bits = 8 * (lead + part.len());
    let Some(last_excl) = (total_bits >= 6).then(|| (total_bits - 6) / 6 + 1) else {
        return String::new();
    };
    if first >= last_excl || last_excl > enc.len() {
        return String::new();
    }
    enc[first..last_excl].to_owned()
}

impl Reflection {
    /// The spellings of every part of `credential` as injected under `usage`; refused
    /// (`secret.usage_invalid`) when a part is too short to be searched for.
    pub fn new(usage: &SecretUsage, credential: &[u8]) -> Result<Self, SecretsError> {
        let parts = usage.searched_parts(credential)?;
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut forms = Vec::new();
        let mut add = |p: Vec<u8>, form: &'static str| {
            if p.len() >= MIN_CREDENTIAL_LEN && !patterns.iter().any(|q| q.as_slice() == p) {
                patterns.push(Zeroizing::new(p));
                forms.push(form);
            }
        };
        for part in &parts {
            // The part as the decoded views show it, when it holds escape characters itself
            // (`%41` in a credential reads `A` after decoding).
            let mut cur = Zeroizing::new(part.to_vec());
            for _ in 0..MAX_DECODE_ROUNDS {
                match decode_all(&cur) {
                    Some(next) if next[..] != cur[..] => {
                        add(next.to_vec(), "raw");
                        cur = next;
                    }
                    _ => break,
                }
            }
            add(part.to_vec(), "raw");
            add(hex::encode(part.as_slice()).into_bytes(), "hex");
            add(hex::encode_upper(part.as_slice()).into_bytes(), "hex");
            for lead in 0..3 {
                let mid = Zeroizing::new(b64_middle(part, lead));
                let url: String = mid
                    .chars()
                    .map(|c| match c {
                        '+' => '-',
                        '/' => '_',
                        c => c,
                    })
                    .collect();
                add(mid.as_bytes().to_vec(), "base64");
                add(url.into_bytes(), "base64");
            }
        }
        // A contiguous NFA, not the DFA `AhoCorasick::new` picks for small pattern sets: the
        // automaton is built for every call, and building the DFA cost more than searching a
        // few KiB (scripts/bench-secrets.sh, 16 clients: 4,549 → 7,579 injected calls/s; RSS
        // growth over 200 concurrent calls 201 → 37 KiB each).
        let builder = || {
            let mut b = AhoCorasickBuilder::new();
            b.kind(Some(AhoCorasickKind::ContiguousNFA));
            b
        };
        let ac = builder()
            .build(patterns.iter().map(|p| p.as_slice()))
            .map_err(|e| SecretsError::Key(format!("the reflection search: {e}")))?;
        let hex_ac = builder()
            .build(
                patterns
                    .iter()
                    .zip(&forms)
                    .filter(|(_, f)| **f == "hex")
                    .map(|(p, _)| p.as_slice()),
            )
            .map_err(|e| SecretsError::Key(format!("the reflection search: {e}")))?;
        Ok(Reflection { ac, hex_ac, forms })
    }

    /// The form found in one view, and what was removed to find it: the view itself, then
    /// with separators removed ([`unwrapped`]), then with `:`/`-` between hex digits removed
    /// ([`hex_joined`], hex only). At most three linear passes.
    fn search_view(&self, view: &[u8]) -> Option<(&'static str, &'static str)> {
        let form = |m: aho_corasick::Match| {
            self.forms
                .get(m.pattern().as_usize())
                .copied()
                .unwrap_or("?")
        };
        if let Some(m) = self.ac.find(view) {
            return Some((form(m), ""));
        }
        let joined = unwrapped(view);
        if let Some(m) = joined.as_deref().and_then(|j| self.ac.find(j.as_slice())) {
            return Some((form(m), UNWRAPPED));
        }
        let base: &[u8] = joined.as_deref().map_or(view, |j| j.as_slice());
        if hex_joined(base).is_some_and(|h| self.hex_ac.is_match(h.as_slice())) {
            return Some(("hex", HEX_JOINED));
        }
        None
    }

    /// Whether `text` (a header name or value, or a body) holds the credential in any
    /// searched form, in any view.
    pub fn find(&self, text: &[u8]) -> Option<Found> {
        let mut found = None;
        let settled = views(text, &mut |name, view| {
            if let Some(form) = self.search_view(view) {
                found = Some(Found {
                    form: form.0,
                    view: format!("{name}{}", form.1),
                });
                return true;
            }
            false
        });
        if found.is_none() && !settled {
            return Some(Found {
                form: UNSETTLED,
                view: format!("still changing after {MAX_DECODE_ROUNDS} rounds of decoding"),
            });
        }
        found
    }
}

/// Calls `f` with `text` as sent, then decoded again and again ([`decode_all`]: JSON string
/// escapes, percent-encoding and HTML character references, in one pass each) until a round
/// changes nothing, at most [`MAX_DECODE_ROUNDS`] rounds, or until `f` answers true. Each
/// round is linear and never lengthens the text. Returns false only when the text was still
/// changing after the last round (escapes nested deeper than the cap: not searchable).
pub fn views(text: &[u8], f: &mut dyn FnMut(&str, &[u8]) -> bool) -> bool {
    if f("as sent", text) {
        return true;
    }
    let mut cur: Option<Zeroizing<Vec<u8>>> = None;
    for round in 1..=MAX_DECODE_ROUNDS {
        let src: &[u8] = cur.as_deref().map_or(text, |v| v.as_slice());
        let Some(next) = decode_all(src) else {
            return true;
        };
        if next[..] == src[..] {
            return true;
        }
        let name = if round == 1 {
            "decoded from JSON, percent or HTML escapes".to_owned()
        } else {
            format!("decoded {round} times from JSON, percent or HTML escapes")
        };
        if f(&name, &next) {
            return true;
        }
        cur = Some(next);
    }
    let src: &[u8] = cur.as_deref().map_or(text, |v| v.as_slice());
    decode_all(src).is_none_or(|n| n[..] == src[..])
}

const UNWRAPPED: &str = ", with whitespace, soft line breaks and \\n escapes removed";
const HEX_JOINED: &str =
    ", with whitespace, soft line breaks, \\n escapes and ':'/'-' between hex digits removed";

/// `b` with what wraps an encoding into lines or groups removed (adversary22b finding R2-1:
/// MIME base64 in 76-character lines, hex dumps with a space between bytes): ASCII
/// whitespace, quoted-printable soft line breaks (`=` before CR or LF) and the literal
/// escapes `\n`, `\r`, `\t` (line breaks inside a JSON string not yet decoded). `None` when
/// there is none. One linear pass; never longer than `b`.
pub fn unwrapped(b: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // Bytes that may start a separator.
    let mut lead = [false; 256];
    for c in *b" \t\n\r\x0c=\\" {
        lead[usize::from(c)] = true;
    }
    let sep = |i: usize| -> usize {
        match b[i] {
            c if c.is_ascii_whitespace() => 1,
            b'=' if matches!(b.get(i + 1), Some(b'\r' | b'\n')) => 1,
            b'\\' if matches!(b.get(i + 1), Some(b'n' | b'r' | b't')) => 2,
            _ => 0,
        }
    };
    let mut out: Option<Zeroizing<Vec<u8>>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let Some(p) = b[i..].iter().position(|c| lead[usize::from(*c)]) else {
            break;
        };
        i += p;
        let n = sep(i);
        if n == 0 {
            i += 1;
            continue;
        }
        let o = out.get_or_insert_with(|| Zeroizing::new(Vec::with_capacity(b.len())));
        o.extend_from_slice(&b[copied..i]);
        i += n;
        copied = i;
    }
    let mut o = out?;
    o.extend_from_slice(&b[copied..]);
    Some(o)
}

/// `b` with every `:` and `-` between two hex digits removed (`47:45:54`, `47-45-54`, after
/// [`unwrapped`] took the spaces); `None` when there is none. Searched for hex only: a
/// credential's own `-` stays in the other views.
pub fn hex_joined(b: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let sep = |i: usize| -> bool {
        matches!(b[i], b':' | b'-')
            && i > 0
            && b[i - 1].is_ascii_hexdigit()
            && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
    };
    let first = (0..b.len()).find(|&i| sep(i))?;
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    out.extend_from_slice(&b[..first]);
    for (i, &c) in b.iter().enumerate().skip(first) {
        if !sep(i) {
            out.push(c);
        }
    }
    Some(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One decoded escape: how many input bytes it took, and the character it stands for.
type Escape = (usize, char);

/// The JSON escape at `b[0] == b'\\'`.
fn json_escape(b: &[u8]) -> Option<Escape> {
    let u4 = |at: usize| -> Option<u32> {
        b.get(at..at + 4)?
            .iter()
            .try_fold(0u32, |acc, &c| Some(acc * 16 + u32::from(hex_val(c)?)))
    };
    let simple = match b.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = u4(2)?;
            if (0xD800..0xDC00).contains(&hi) && b.get(6..8) == Some(b"\\u") {
                if let Some(lo) = u4(8).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    return char::from_u32(c).map(|c| (12, c));
                }
            }
            // A lone surrogate is no character: left as written.
            return char::from_u32(hi).map(|c| (6, c));
        }
        _ => return None,
    };
    Some((2, simple))
}

/// The `%XX` at `b[0] == b'%'` (either hex case), as the byte it stands for.
fn percent_escape(b: &[u8]) -> Option<(usize, u8)> {
    Some((3, hex_val(*b.get(1)?)? * 16 + hex_val(*b.get(2)?)?))
}

/// Named character references decoded (the characters credentials and their encodings use).
const ENTITIES: [(&str, char); 30] = [
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("sol", '/'),
    ("bsol", '\\'),
    ("plus", '+'),
    ("equals", '='),
    ("colon", ':'),
    ("semi", ';'),
    ("num", '#'),
    ("percnt", '%'),
    ("lowbar", '_'),
    ("period", '.'),
    ("comma", ','),
    ("excl", '!'),
    ("quest", '?'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lcub", '{'),
    ("rcub", '}'),
    ("dollar", '$'),
    ("commat", '@'),
    ("tilde", '~'),
    ("hat", '^'),
    ("ast", '*'),
    ("vert", '|'),
    ("grave", '`'),
    ("dash", '-'),
];

/// The HTML character reference at `b[0] == b'&'`: `&#NN;`, `&#xHH;` (the `;` optional) or a
/// name of [`ENTITIES`] with its `;`.
fn html_escape(b: &[u8]) -> Option<Escape> {
    let rest = b.get(1..)?;
    if rest.first() == Some(&b'#') {
        let (hexa, at) = match rest.get(1) {
            Some(b'x' | b'X') => (true, 2),
            _ => (false, 1),
        };
        let digits = rest
            .get(at..)?
            .iter()
            .take(8)
            .take_while(|c| {
                if hexa {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
            .count();
        if digits == 0 {
            return None;
        }
        let radix = if hexa { 16 } else { 10 };
        let c = rest[at..at + digits]
            .iter()
            .try_fold(0u32, |acc, &c| Some(acc * radix + u32::from(hex_val(c)?)))
            .and_then(char::from_u32)?;
        let semi = usize::from(rest.get(at + digits) == Some(&b';'));
        return Some((1 + at + digits + semi, c));
    }
    ENTITIES
        .iter()
        .find(|(n, _)| {
            rest.len() > n.len()
                && rest[..n.len()].eq_ignore_ascii_case(n.as_bytes())
                && rest[n.len()] == b';'
        })
        .map(|(n, c)| (n.len() + 2, *c))
}

/// `b` with every escape introduced by one of `triggers` (`\` JSON, `%` percent, `&` HTML)
/// decoded, in one pass (what a decoding produces is not decoded again); `None` when `b`
/// holds no trigger byte. Never longer than `b`.
fn decode_with(b: &[u8], triggers: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut is_trigger = [false; 256];
    for t in triggers {
        is_trigger[usize::from(*t)] = true;
    }
    if !b.iter().any(|c| is_trigger[usize::from(*c)]) {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    let mut i = 0;
    let mut buf = [0u8; 4];
    while i < b.len() {
        // Copy up to the next escape in one go.
        let next = b[i..]
            .iter()
            .position(|c| is_trigger[usize::from(*c)])
            .map_or(b.len(), |p| i + p);
        out.extend_from_slice(&b[i..next]);
        i = next;
        let Some(&t) = b.get(i) else { break };
        let decoded = match t {
            b'\\' => json_escape(&b[i..]).map(|(n, c)| (n, c.encode_utf8(&mut buf).len())),
            b'%' => percent_escape(&b[i..]).map(|(n, byte)| {
                buf[0] = byte;
                (n, 1)
            }),
            _ => html_escape(&b[i..]).map(|(n, c)| (n, c.encode_utf8(&mut buf).len())),
        };
        match decoded {
            Some((n, len)) => {
                out.extend_from_slice(&buf[..len]);
                i += n;
            }
            None => {
                out.push(t);
                i += 1;
            }
        }
    }
    Some(out)
}

/// JSON string escapes, percent-encoding and HTML character references decoded in one pass.
pub fn decode_all(b: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    decode_with(b, b"\\%&")
}

/// JSON string escapes decoded wherever they appear; `None` when there is no `\`.
pub fn json_unescape(b: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    decode_with(b, b"\\")
}

/// `%XX` (either case) decoded; `None` when there is no `%`.
pub fn percent_decode(b: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    decode_with(b, b"%")
}

/// HTML character references decoded; `None` when there is no `&`.
pub fn html_unescape(b: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    decode_with(b, b"&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    const CRED: &str = "AKIAadv/0123+k9Zq&x%y";

    fn usage(format: &str) -> SecretUsage {
        serde_json::from_value(serde_json::json!({
            "name": "s", "upstream": "https://api.example.com", "path_prefix": "/",
            "header": "authorization", "format": format, "expires_at": 2_000_000_000u64,
        }))
        .unwrap()
    }

    fn json_u(s: &str, upper: bool) -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else if upper {
                    format!("\\u{:04X}", u32::from(c))
                } else {
                    format!("\\u{:04x}", u32::from(c))
                }
            })
            .collect()
    }

    fn pct(s: &str, upper: bool) -> String {
        s.bytes()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    char::from(c).to_string()
                } else if upper {
                    format!("%{c:02X}")
                } else {
                    format!("%{c:02x}")
                }
            })
            .collect()
    }

    /// Every spelling the review named, embedded in a larger answer at every offset that
    /// matters: each is found.
    #[test]
    fn every_spelling_at_every_alignment_is_found() {
        let r = Reflection::new(&usage("Bearer {}"), CRED.as_bytes()).unwrap();
        let header = format!("Bearer {CRED}");
        let mut answers = vec![
            format!("x{CRED}y"),
            CRED.replace('/', "\\/"),
            json_u(CRED, false),
            json_u(CRED, true),
            pct(CRED, false),
            pct(CRED, true),
            CRED.replace('&', "&amp;")
                .replace('/', "&#x2F;")
                .replace('+', "&#43;"),
            hex::encode(CRED),
            hex::encode_upper(CRED),
            // A percent-encoded URL inside PHP-escaped JSON.
            format!("{{\"l\":\"https:\\/\\/x\\/?t={}\"}}", pct(CRED, true)),
            // JSON inside an HTML attribute.
            format!(
                "<a data-x=\"{{&quot;k&quot;:&quot;{}&quot;}}\">",
                CRED.replace('/', "\\/").replace('&', "&amp;")
            ),
        ];
        for lead in 0..6 {
            let doc = format!("{}authorization: {header}\r\n", "h".repeat(lead));
            for e in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                answers.push(format!("{{\"content\":\"{}\"}}", e.encode(&doc)));
            }
            answers.push(format!(
                "{{\"content\":\"{}\"}}",
                STANDARD.encode(&doc).replace('/', "\\/")
            ));
        }
        for a in &answers {
            assert!(r.find(a.as_bytes()).is_some(), "not found in {a}");
        }
        assert_eq!(
            r.find(CRED.replace('/', "\\/").as_bytes()).unwrap().view,
            "decoded from JSON, percent or HTML escapes"
        );
        assert_eq!(r.find(b"{\"ok\":true,\"AKIAadv\":1}"), None);
        // A credential holding an escape of its own, then JSON- or percent-encoded.
        let odd = "tok/en%41abc+def&amp;x";
        let r = Reflection::new(&usage("Bearer {}"), odd.as_bytes()).unwrap();
        for a in [odd.replace('/', "\\/"), pct(odd, true), json_u(odd, false)] {
            assert!(r.find(a.as_bytes()).is_some(), "not found in {a}");
        }
    }

    /// R2-2: escapes nested three and more levels deep are decoded until stable; deeper
    /// than the cap, the answer is refused as unsettled.
    #[test]
    fn nested_escapes_are_decoded_until_stable() {
        let cred = "wJalrXUtnFEMI/K7MDENG/abc+adv";
        let r = Reflection::new(&usage("Bearer {}"), cred.as_bytes()).unwrap();
        let php = |v: &serde_json::Value| v.to_string().replace('/', "\\/");
        let l1 = php(&serde_json::json!({"headers": {"Authorization": cred}}));
        let l2 = php(&serde_json::json!({"request": l1}));
        let l3 = php(&serde_json::json!({"event": {"message": l2}}));
        let f = r.find(l3.as_bytes()).unwrap();
        assert_eq!(f.form, "raw");
        // Triple percent-encoding.
        let p3 = cred.replace('/', "%25252F");
        assert!(r.find(p3.as_bytes()).is_some());
        // Nesting at the cap is still searched; one more level is refused.
        let mut deep = cred.replace('/', "%2F");
        for _ in 1..MAX_DECODE_ROUNDS {
            deep = deep.replace('%', "%25");
        }
        assert_eq!(r.find(deep.as_bytes()).unwrap().form, "raw");
        let deeper = deep.replace('%', "%25");
        assert_eq!(r.find(deeper.as_bytes()).unwrap().form, UNSETTLED);
        // Ordinary escaped text settles and is not refused.
        assert_eq!(r.find(b"{\"t\":\"a &amp;amp; b 50% \\u00e9\"}"), None);
    }

    /// R2-1: base64 in lines (MIME, QP soft breaks, JSON `\n`) at every alignment of the
    /// break, and hex dumps with spaces, colons or dashes between bytes.
    #[test]
    fn wrapped_base64_and_spaced_hex_are_found() {
        let r = Reflection::new(&usage("Bearer {}"), CRED.as_bytes()).unwrap();
        for pad in 0..80 {
            let doc = format!(
                "GET /?p={} HTTP/1.1\r\nauthorization: Bearer {CRED}\r\n",
                "x".repeat(pad)
            );
            let b64 = STANDARD.encode(&doc);
            for (width, sep) in [
                (76, "\n"),
                (64, "\r\n"),
                (60, "\\n"),
                (75, "=\r\n"),
                (76, "=\n"),
            ] {
                let lines: Vec<&str> = b64
                    .as_bytes()
                    .chunks(width)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect();
                let text = lines.join(sep);
                assert!(r.find(text.as_bytes()).is_some(), "{pad} {width} {sep:?}");
            }
        }
        let doc = format!("authorization: Bearer {CRED}");
        for sep in [" ", ":", "-", "\n", " : "] {
            let dump: Vec<String> = doc.bytes().map(|b| format!("{b:02X}")).collect();
            assert!(r.find(dump.join(sep).as_bytes()).is_some(), "{sep:?}");
        }
        assert_eq!(unwrapped(b"ab c\\nd=\r\ne").unwrap().as_slice(), b"abcde");
        assert_eq!(
            hex_joined(b"a:b-c x:y -1").unwrap().as_slice(),
            b"abc x:y -1"
        );
        assert!(unwrapped(b"abc").is_none() && hex_joined(b"x-y").is_none());
        // Ordinary text is not a match.
        assert_eq!(
            r.find(b"lorem ipsum dolor 12:30 2026-12-06 de:ad:be:ef"),
            None
        );
    }

    /// JSON surrogate pairs decode to the character they spell.
    #[test]
    fn json_surrogate_pairs_and_lone_surrogates() {
        let d = json_unescape(br#"a\ud83d\ude00b\ud800c\u00e9"#).unwrap();
        assert_eq!(String::from_utf8_lossy(&d), "a\u{1F600}b\\ud800c\u{e9}");
        assert_eq!(&percent_decode(b"%2f%2F%zz%4").unwrap()[..], b"//%zz%4");
        assert_eq!(
            &html_unescape(b"&amp;&#47;&#x2f;&#x2F&sol;&bogus;&").unwrap()[..],
            b"&////&bogus;&"
        );
    }

    /// Basic: the decoded key (Stripe: the user name, empty password), `user:pass` and the
    /// password are searched for, the user name beside a password is not.
    #[test]
    fn basic_credentials_are_searched_for_decoded() {
        let key = "sk_live_0123456789abc";
        let v = STANDARD.encode(format!("{key}:"));
        let r = Reflection::new(&usage("Basic {}"), v.as_bytes()).unwrap();
        let msg = format!("{{\"error\":{{\"message\":\"Invalid API Key provided: {key}\"}}}}");
        assert_eq!(r.find(msg.as_bytes()).unwrap().form, "raw");
        let v = STANDARD.encode("octocat-enterprise:pw-0123456789ab");
        let r = Reflection::new(&usage("Basic {}"), v.as_bytes()).unwrap();
        assert!(r.find(b"password pw-0123456789ab").is_some());
        assert!(r.find(b"octocat-enterprise:pw-0123456789ab").is_some());
        assert_eq!(r.find(b"{\"login\":\"octocat-enterprise\"}"), None);
        // Too short to be searched for: refused.
        assert!(Reflection::new(&usage("Bearer {}"), b"Zq7x9").is_err());
    }

    /// The stable middle: what depends on neighbours is dropped, the rest is long enough.
    #[test]
    fn base64_middles_are_stable_and_long_enough() {
        for n in MIN_CREDENTIAL_LEN..40 {
            let part: Vec<u8> = (0..n)
                .map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26])
                .collect();
            for lead in 0..3 {
                let mid = b64_middle(&part, lead);
                assert!(
                    mid.len() >= (8 * n - 9).div_ceil(6),
                    "{n} {lead} {}",
                    mid.len()
                );
                for (before, after) in [(0u8, 0u8), (255, 255), (b'x', b'?')] {
                    let mut doc = vec![before; lead];
                    doc.extend_from_slice(&part);
                    doc.push(after);
                    doc.push(after);
                    assert!(STANDARD.encode(&doc).contains(&mid), "{n} {lead} {before}");
                }
            }
        }
    }

    /// Cost per KiB of answer (not a test: `cargo test -p cada-enclave --release
    /// reflection_cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a test"]
    fn reflection_cost() {
        let r = Reflection::new(
            &usage("Bearer {}"),
            b"ghp_0123456789abcdefABCDEF0123456789ab",
        )
        .unwrap();
        let mut json = String::new();
        while json.len() < 512 * 1024 {
            json.push_str(
                "{\"id\":12345,\"url\":\"https:\\/\\/api.example.com\\/repos\\/acme\\/app\\/issues\\/1\",\
                 \"title\":\"a &amp; b 50%\",\"body\":\"caf\\u00e9 \\ud83d\\ude00\"},",
            );
        }
        let plain = "lorem ipsum dolor sit amet ".repeat(512 * 1024 / 27);
        for (what, text) in [
            ("escaped JSON", json.as_bytes()),
            ("plain text", plain.as_bytes()),
        ] {
            let t = std::time::Instant::now();
            let rounds = 20;
            for _ in 0..rounds {
                assert!(r.find(text).is_none());
            }
            let per = t.elapsed().as_secs_f64() / f64::from(rounds);
            println!(
                "{what}: {:.1} µs per KiB ({:.2} ms for {} KiB)",
                per * 1e6 / (f64::from(u32::try_from(text.len()).unwrap()) / 1024.0),
                per * 1e3,
                text.len() / 1024
            );
        }
    }
}
