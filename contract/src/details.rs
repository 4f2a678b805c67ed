//! One-transaction grants: RFC 9396 `authorization_details` of type `mcp_tool_call` in a
//! trust contract (`credentialSubject.authorization_details`, schema 2).
//!
//! A detail names one MCP tool, the audience URL prefixes (`locations`) where it may be
//! called, and optionally constraints on its top-level arguments, whether arguments not
//! listed are allowed, and whether it is single use. `docs/contracts.md` ("One-transaction
//! grants") is the reference; "Who checks what and why" says which component checks which
//! part (the enclave cannot see arguments; a gate holding the body can).
//!
//! # Exact JSON
//!
//! Constraint values and call arguments are read by this module's own bounded JSON reader
//! into [`ArgValue`], never into `f64`:
//!
//! * numbers are compared as the exact decimal value of their text (`500`, `500.0` and
//!   `5e2` are equal; `500.0000000000000001` is above `500`; integers beyond 2^53 or 2^64
//!   lose nothing). Rounding to binary floating point is monotone, so an upstream that
//!   reads doubles never sees a value beyond a bound that is itself a double. A number
//!   whose text exceeds [`MAX_NUMBER_LEN`] or whose exponent exceeds ±10^9 is refused;
//! * strings are decoded by `serde_json` (lone surrogates and raw control characters
//!   refused) and compared byte for byte after decoding: no Unicode normalization, no case
//!   folding — `prefix` is a byte prefix, so a look-alike character never matches;
//! * a member name repeated in any object, at any depth, is refused
//!   (`grant.arguments.malformed`), because a gate keeping the first and a server keeping
//!   the last would check one value and act on another;
//! * objects compare as maps (member order ignored), arrays element by element, `null`,
//!   `true` and `false` as themselves; a number never equals a string (`"500"` is not
//!   `500`: `grant.arguments.type` for `min`/`max`, `grant.arguments.eq` for `eq`).
use std::cmp::Ordering;
use std::collections::BTreeMap;

use cada_protocol::url::{HttpUrl, UrlPrefix};
use serde_json::{Map, Value};

use crate::error::clip;
use crate::ContractError;

/// The one `type` of authorization detail this verifier knows.
pub const DETAIL_TYPE: &str = "mcp_tool_call";
/// The one action of an `mcp_tool_call` detail (also the default when `actions` is absent).
pub const ACTION_TOOLS_CALL: &str = "tools/call";
/// Most authorization details in one contract.
pub const MAX_DETAILS: usize = 16;
/// Most locations in one detail.
pub const MAX_LOCATIONS: usize = 16;
/// Most constrained arguments in one detail.
pub const MAX_CONSTRAINED_ARGUMENTS: usize = 32;
/// Most values in one `one_of`.
pub const MAX_ONE_OF: usize = 64;
/// Longest string anywhere in a detail (tool, identifier, argument name, constraint value),
/// in bytes after decoding.
pub const MAX_DETAIL_STRING: usize = 1024;
/// Longest number text (in a detail or in call arguments).
pub const MAX_NUMBER_LEN: usize = 1024;
/// Deepest nesting of arrays and objects in a constraint value or in call arguments.
pub const MAX_ARGUMENT_DEPTH: usize = 64;
/// Largest call-arguments text read by [`CallArguments::parse`] (the MCP body limit).
pub const MAX_ARGUMENTS_LEN: usize = cada_protocol::mcp::MAX_BODY;
/// Largest exponent (absolute) of a number.
const MAX_EXPONENT: i64 = 1_000_000_000;

/// Every refusal code of one-transaction grants, for documentation and tests.
pub const GRANT_CODES: &[&str] = &[
    "grant.tool",
    "grant.arguments.eq",
    "grant.arguments.min",
    "grant.arguments.max",
    "grant.arguments.one_of",
    "grant.arguments.prefix",
    "grant.arguments.unlisted",
    "grant.arguments.missing",
    "grant.arguments.type",
    "grant.arguments.malformed",
    "grant.arguments_unchecked",
    "grant.used",
    "grant.not_within",
];

/// A JSON number kept exactly: its text as written and its decimal value.
#[derive(Debug, Clone)]
pub struct JsonNumber {
    text: String,
    /// Negative (never set for zero).
    neg: bool,
    /// Significant digits (ASCII), no leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    /// The value is `0.digits × 10^exp`.
    exp: i64,
}

impl JsonNumber {
    /// Reads one JSON number (RFC 8259 grammar, nothing around it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let b = text.as_bytes();
        if b.is_empty() || b.len() > MAX_NUMBER_LEN {
            return Err(format!("a number must be 1 to {MAX_NUMBER_LEN} characters"));
        }
        let bad = || format!("{:?} is not a JSON number", clip(text));
        let mut i = 0;
        let neg = b[0] == b'-';
        if neg {
            i += 1;
        }
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int = &b[int_start..i];
        if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
            return Err(bad());
        }
        let mut frac: &[u8] = &[];
        if i < b.len() && b[i] == b'.' {
            let s = i + 1;
            i = s;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            frac = &b[s..i];
            if frac.is_empty() {
                return Err(bad());
            }
        }
        let mut e: i64 = 0;
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            let mut eneg = false;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                eneg = b[i] == b'-';
                i += 1;
            }
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if e > MAX_EXPONENT {
                    return Err(format!(
                        "{:?}: exponents beyond ±{MAX_EXPONENT} are refused",
                        clip(text)
                    ));
                }
                e = e * 10 + i64::from(b[i] - b'0');
                i += 1;
            }
            if i == s {
                return Err(bad());
            }
            if e > MAX_EXPONENT {
                return Err(format!(
                    "{:?}: exponents beyond ±{MAX_EXPONENT} are refused",
                    clip(text)
                ));
            }
            if eneg {
                e = -e;
            }
        }
        if i != b.len() {
            return Err(bad());
        }
        // value = int.frac × 10^e = all × 10^(e - |frac|)
        let mut all: Vec<u8> = int.iter().chain(frac).copied().collect();
        let lead = all.iter().take_while(|&&d| d == b'0').count();
        all.drain(..lead);
        let trail = all.iter().rev().take_while(|&&d| d == b'0').count();
        all.truncate(all.len() - trail);
        let frac_len = i64::try_from(frac.len()).map_err(|_| bad())?;
        let trail = i64::try_from(trail).map_err(|_| bad())?;
        let len = i64::try_from(all.len()).map_err(|_| bad())?;
        let exp = e - frac_len + trail + len;
        Ok(JsonNumber {
            text: text.to_owned(),
            neg: neg && !all.is_empty(),
            exp: if all.is_empty() { 0 } else { exp },
            digits: all,
        })
    }

    /// The number as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn sign(&self) -> i8 {
        if self.digits.is_empty() {
            0
        } else if self.neg {
            -1
        } else {
            1
        }
    }

    fn cmp_magnitude(&self, o: &Self) -> Ordering {
        self.exp
            .cmp(&o.exp)
            .then_with(|| self.digits.as_slice().cmp(o.digits.as_slice()))
    }
}

impl PartialEq for JsonNumber {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for JsonNumber {}
impl PartialOrd for JsonNumber {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for JsonNumber {
    /// Exact comparison of the decimal values.
    fn cmp(&self, o: &Self) -> Ordering {
        match self.sign().cmp(&o.sign()) {
            Ordering::Equal => match self.sign() {
                0 => Ordering::Equal,
                1 => self.cmp_magnitude(o),
                _ => o.cmp_magnitude(self),
            },
            other => other,
        }
    }
}

/// A JSON value read exactly (see the module documentation): numbers keep their decimal
/// value, objects refuse repeated member names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgValue {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, compared by exact decimal value.
    Number(JsonNumber),
    /// A string, compared byte for byte after JSON decoding.
    String(String),
    /// An array, compared element by element.
    Array(Vec<ArgValue>),
    /// An object, compared as a map.
    Object(BTreeMap<String, ArgValue>),
}

impl ArgValue {
    /// Reads one JSON value (whitespace around it allowed) within [`MAX_ARGUMENT_DEPTH`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut p = Reader {
            s: text,
            b: text.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return Err("trailing bytes after the JSON value".into());
        }
        Ok(v)
    }

    /// From a `serde_json` value (numbers as `serde_json` read them: integers exactly,
    /// others as the shortest text of the `f64`). Prefer [`ArgValue::parse`] on the text.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        Self::from_json_at(v, 0)
    }

    fn from_json_at(v: &Value, depth: usize) -> Result<Self, String> {
        if depth > MAX_ARGUMENT_DEPTH {
            return Err(format!("nested deeper than {MAX_ARGUMENT_DEPTH}"));
        }
        Ok(match v {
            Value::Null => ArgValue::Null,
            Value::Bool(b) => ArgValue::Bool(*b),
            Value::Number(n) => ArgValue::Number(JsonNumber::parse(&n.to_string())?),
            Value::String(s) => ArgValue::String(s.clone()),
            Value::Array(a) => ArgValue::Array(
                a.iter()
                    .map(|x| Self::from_json_at(x, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => ArgValue::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), Self::from_json_at(x, depth + 1)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }

    /// As a `serde_json` value (for display: numbers may round, and one beyond `f64`
    /// becomes the string of its text).
    pub fn to_json(&self) -> Value {
        match self {
            ArgValue::Null => Value::Null,
            ArgValue::Bool(b) => Value::Bool(*b),
            ArgValue::Number(n) => serde_json::from_str::<serde_json::Number>(&n.text)
                .map_or_else(|_| Value::String(n.text.clone()), Value::Number),
            ArgValue::String(s) => Value::String(s.clone()),
            ArgValue::Array(a) => Value::Array(a.iter().map(ArgValue::to_json).collect()),
            ArgValue::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// The JSON text (objects with sorted member names, numbers as written).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, out: &mut String) {
        match self {
            ArgValue::Null => out.push_str("null"),
            ArgValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            ArgValue::Number(n) => out.push_str(&n.text),
            ArgValue::String(s) => write_str(out, s),
            ArgValue::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            ArgValue::Object(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, k);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ArgValue::Null => "null",
            ArgValue::Bool(_) => "a boolean",
            ArgValue::Number(_) => "a number",
            ArgValue::String(_) => "a string",
            ArgValue::Array(_) => "an array",
            ArgValue::Object(_) => "an object",
        }
    }

    /// The longest string (member names included) and whether every limit of a detail
    /// value holds.
    fn check_detail_limits(&self) -> Result<(), String> {
        match self {
            ArgValue::String(s) if s.len() > MAX_DETAIL_STRING => Err(format!(
                "a string of {} bytes: at most {MAX_DETAIL_STRING}",
                s.len()
            )),
            ArgValue::Array(a) => a.iter().try_for_each(ArgValue::check_detail_limits),
            ArgValue::Object(m) => m.iter().try_for_each(|(k, v)| {
                if k.len() > MAX_DETAIL_STRING {
                    return Err(format!(
                        "a member name of {} bytes: at most {MAX_DETAIL_STRING}",
                        k.len()
                    ));
                }
                v.check_detail_limits()
            }),
            _ => Ok(()),
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    // serde_json escapes quotes, backslashes and control characters.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

/// The bounded, exact JSON reader behind [`ArgValue::parse`]: structure here, strings
/// decoded by `serde_json`, numbers by [`JsonNumber::parse`].
struct Reader<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &str, v: ArgValue) -> Result<ArgValue, String> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("not JSON at byte {}", self.i))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.b.get(self.i) {
                None => return Err("an unterminated string".into()),
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(_) => self.i += 1,
            }
        }
        let tok = self
            .s
            .get(start..self.i)
            .ok_or_else(|| "an unterminated string".to_owned())?;
        serde_json::from_str::<String>(tok).map_err(|e| format!("a bad string: {e}"))
    }

    fn value(&mut self, depth: usize) -> Result<ArgValue, String> {
        if depth > MAX_ARGUMENT_DEPTH {
            return Err(format!("nested deeper than {MAX_ARGUMENT_DEPTH}"));
        }
        self.ws();
        match self.b.get(self.i) {
            None => Err("empty JSON value".into()),
            Some(b'n') => self.lit("null", ArgValue::Null),
            Some(b't') => self.lit("true", ArgValue::Bool(true)),
            Some(b'f') => self.lit("false", ArgValue::Bool(false)),
            Some(b'"') => self.string().map(ArgValue::String),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(ArgValue::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(ArgValue::Array(items));
                        }
                        _ => return Err(format!("expected , or ] at byte {}", self.i)),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(ArgValue::Object(m));
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(format!("expected a member name at byte {}", self.i));
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(format!("expected : at byte {}", self.i));
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    if m.contains_key(&k) {
                        return Err(format!(
                            "the member {:?} appears twice in one object",
                            clip(&k)
                        ));
                    }
                    m.insert(k, v);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(ArgValue::Object(m));
                        }
                        _ => return Err(format!("expected , or }} at byte {}", self.i)),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while self.i < self.b.len()
                    && matches!(
                        self.b[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let tok = self.s.get(start..self.i).unwrap_or("");
                JsonNumber::parse(tok).map(ArgValue::Number)
            }
            Some(_) => Err(format!("not JSON at byte {}", self.i)),
        }
    }
}

/// A constraint on one argument of a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgConstraint {
    /// `{"eq": V}`: exactly this JSON value (see the module documentation for equality).
    Eq(ArgValue),
    /// `{"min": A}`, `{"max": B}` or both: a number in `[A, B]` (inclusive, exact).
    Range {
        /// Lower bound, inclusive.
        min: Option<JsonNumber>,
        /// Upper bound, inclusive.
        max: Option<JsonNumber>,
    },
    /// `{"one_of": [V, …]}`: equal to one of these values.
    OneOf(Vec<ArgValue>),
    /// `{"prefix": "P"}`: a string starting with these bytes.
    Prefix(String),
}

impl ArgConstraint {
    /// Checks one argument value; `name` is for the message. The message names the rule
    /// and the bound, never the agent's value (arguments are not logged).
    fn check(&self, name: &str, v: &ArgValue) -> Result<(), ContractError> {
        let n = clip(name);
        match self {
            ArgConstraint::Eq(want) if want == v => Ok(()),
            ArgConstraint::Eq(_) => Err(grant(
                "grant.arguments.eq",
                format!("argument {n:?} is not the value the grant fixes"),
            )),
            ArgConstraint::Range { min, max } => {
                let ArgValue::Number(x) = v else {
                    return Err(grant(
                        "grant.arguments.type",
                        format!(
                            "argument {n:?} must be a JSON number (the grant bounds it), not {}",
                            v.kind()
                        ),
                    ));
                };
                if let Some(m) = min {
                    if x < m {
                        return Err(grant(
                            "grant.arguments.min",
                            format!("argument {n:?} is below the grant's min {}", m.text),
                        ));
                    }
                }
                if let Some(m) = max {
                    if x > m {
                        return Err(grant(
                            "grant.arguments.max",
                            format!("argument {n:?} is above the grant's max {}", m.text),
                        ));
                    }
                }
                Ok(())
            }
            ArgConstraint::OneOf(set) if set.contains(v) => Ok(()),
            ArgConstraint::OneOf(set) => Err(grant(
                "grant.arguments.one_of",
                format!(
                    "argument {n:?} is none of the {} values the grant allows",
                    set.len()
                ),
            )),
            ArgConstraint::Prefix(p) => match v {
                ArgValue::String(s) if s.as_bytes().starts_with(p.as_bytes()) => Ok(()),
                ArgValue::String(_) => Err(grant(
                    "grant.arguments.prefix",
                    format!(
                        "argument {n:?} does not start with {:?} (compared byte for byte)",
                        clip(p)
                    ),
                )),
                other => Err(grant(
                    "grant.arguments.type",
                    format!(
                        "argument {n:?} must be a string (the grant fixes its prefix), not {}",
                        other.kind()
                    ),
                )),
            },
        }
    }

    /// Whether every value this constraint allows is allowed by `wider`.
    pub fn is_within(&self, wider: &ArgConstraint) -> bool {
        let allowed = |v: &ArgValue| wider.check("", v).is_ok();
        match self {
            ArgConstraint::Eq(v) => allowed(v),
            ArgConstraint::OneOf(set) => set.iter().all(allowed),
            ArgConstraint::Range { min, max } => match wider {
                ArgConstraint::Range {
                    min: wmin,
                    max: wmax,
                } => {
                    let lo = match (min, wmin) {
                        (_, None) => true,
                        (None, Some(_)) => false,
                        (Some(a), Some(b)) => a >= b,
                    };
                    let hi = match (max, wmax) {
                        (_, None) => true,
                        (None, Some(_)) => false,
                        (Some(a), Some(b)) => a <= b,
                    };
                    lo && hi
                }
                // A range holds infinitely many numbers; a set or a value does not.
                _ => false,
            },
            ArgConstraint::Prefix(p) => match wider {
                ArgConstraint::Prefix(w) => p.as_bytes().starts_with(w.as_bytes()),
                _ => false,
            },
        }
    }

    fn to_value(&self) -> ArgValue {
        let mut m = BTreeMap::new();
        match self {
            ArgConstraint::Eq(v) => {
                m.insert("eq".to_owned(), v.clone());
            }
            ArgConstraint::Range { min, max } => {
                if let Some(x) = min {
                    m.insert("min".to_owned(), ArgValue::Number(x.clone()));
                }
                if let Some(x) = max {
                    m.insert("max".to_owned(), ArgValue::Number(x.clone()));
                }
            }
            ArgConstraint::OneOf(v) => {
                m.insert("one_of".to_owned(), ArgValue::Array(v.clone()));
            }
            ArgConstraint::Prefix(p) => {
                m.insert("prefix".to_owned(), ArgValue::String(p.clone()));
            }
        }
        ArgValue::Object(m)
    }

    fn from_value(name: &str, v: ArgValue) -> Result<Self, ContractError> {
        let what = format!("argument {:?}", clip(name));
        let ArgValue::Object(mut m) = v else {
            return Err(malformed(format!(
                "{what}: a constraint is an object such as {{\"eq\": …}}, {{\"max\": 500}}, \
                 {{\"one_of\": […]}} or {{\"prefix\": \"…\"}}"
            )));
        };
        if let Some(k) = m
            .keys()
            .find(|k| !matches!(k.as_str(), "eq" | "min" | "max" | "one_of" | "prefix"))
        {
            return Err(schema(format!(
                "{what}: unknown constraint kind {:?}; this verifier knows eq, min, max, \
                 one_of and prefix",
                clip(k)
            )));
        }
        let kinds = usize::from(m.contains_key("eq"))
            + usize::from(m.contains_key("one_of"))
            + usize::from(m.contains_key("prefix"))
            + usize::from(m.contains_key("min") || m.contains_key("max"));
        if kinds != 1 {
            return Err(malformed(format!(
                "{what}: give exactly one constraint kind (min and max together count as one)"
            )));
        }
        let num = |x: Option<ArgValue>, k: &str| match x {
            None => Ok(None),
            Some(ArgValue::Number(n)) => Ok(Some(n)),
            Some(o) => Err(malformed(format!(
                "{what}: {k} must be a JSON number, not {}",
                o.kind()
            ))),
        };
        if let Some(v) = m.remove("eq") {
            v.check_detail_limits()
                .map_err(|e| malformed(format!("{what}: eq: {e}")))?;
            return Ok(ArgConstraint::Eq(v));
        }
        if let Some(v) = m.remove("one_of") {
            let ArgValue::Array(vals) = v else {
                return Err(malformed(format!("{what}: one_of must be an array")));
            };
            if vals.is_empty() || vals.len() > MAX_ONE_OF {
                return Err(malformed(format!(
                    "{what}: one_of holds 1 to {MAX_ONE_OF} values, not {}",
                    vals.len()
                )));
            }
            for (i, x) in vals.iter().enumerate() {
                x.check_detail_limits()
                    .map_err(|e| malformed(format!("{what}: one_of: {e}")))?;
                if vals[..i].contains(x) {
                    return Err(malformed(format!("{what}: one_of lists a value twice")));
                }
            }
            return Ok(ArgConstraint::OneOf(vals));
        }
        if let Some(v) = m.remove("prefix") {
            let ArgValue::String(p) = v else {
                return Err(malformed(format!("{what}: prefix must be a string")));
            };
            if p.len() > MAX_DETAIL_STRING {
                return Err(malformed(format!(
                    "{what}: prefix is at most {MAX_DETAIL_STRING} bytes"
                )));
            }
            return Ok(ArgConstraint::Prefix(p));
        }
        let min = num(m.remove("min"), "min")?;
        let max = num(m.remove("max"), "max")?;
        if let (Some(a), Some(b)) = (&min, &max) {
            if a > b {
                return Err(malformed(format!(
                    "{what}: min {} is above max {}: nothing would be allowed",
                    a.text, b.text
                )));
            }
        }
        Ok(ArgConstraint::Range { min, max })
    }
}

/// The arguments of one `tools/call` (`params.arguments`), read exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallArguments(BTreeMap<String, ArgValue>);

impl CallArguments {
    /// No arguments (a `tools/call` without `params.arguments`).
    pub fn empty() -> Self {
        CallArguments::default()
    }

    /// Reads the JSON text of `params.arguments`: a JSON object of at most
    /// [`MAX_ARGUMENTS_LEN`] bytes, nested at most [`MAX_ARGUMENT_DEPTH`] deep, no member
    /// name twice in any object (`grant.arguments.malformed`); anything but an object is
    /// `grant.arguments.type`. This is the reader a gate uses on the body it forwards.
    pub fn parse(raw: &str) -> Result<Self, ContractError> {
        if raw.len() > MAX_ARGUMENTS_LEN {
            return Err(grant(
                "grant.arguments.malformed",
                format!(
                    "the arguments are {} bytes, more than {MAX_ARGUMENTS_LEN}",
                    raw.len()
                ),
            ));
        }
        match ArgValue::parse(raw) {
            Ok(ArgValue::Object(m)) => Ok(CallArguments(m)),
            Ok(other) => Err(grant(
                "grant.arguments.type",
                format!(
                    "params.arguments must be a JSON object, not {}",
                    other.kind()
                ),
            )),
            Err(e) => Err(grant(
                "grant.arguments.malformed",
                format!("params.arguments: {e}"),
            )),
        }
    }

    /// From a `serde_json` map (already parsed: a repeated member was silently merged by
    /// that parser, and non-integer numbers went through `f64`). Prefer [`Self::parse`].
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ContractError> {
        map.iter()
            .map(|(k, v)| {
                ArgValue::from_json_at(v, 1)
                    .map(|x| (k.clone(), x))
                    .map_err(|e| {
                        grant(
                            "grant.arguments.malformed",
                            format!("params.arguments: {e}"),
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(CallArguments)
    }

    /// One argument.
    pub fn get(&self, name: &str) -> Option<&ArgValue> {
        self.0.get(name)
    }

    /// The arguments, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ArgValue)> {
        self.0.iter()
    }

    /// How many arguments.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One RFC 9396 authorization detail of type [`DETAIL_TYPE`]: a grant to call one MCP tool
/// at `locations`, with limits on its arguments. See the module documentation and
/// `docs/contracts.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationDetail {
    /// Audience URL prefixes where the tool may be called (UrlPrefix rules: origin, path on
    /// segment boundaries, normal form; https, or http to a loopback host).
    pub locations: Vec<String>,
    /// The tool (`params.name` of `tools/call`).
    pub tool: String,
    /// Constraints on top-level arguments, by argument name. Every listed argument must be
    /// present in the call.
    pub arguments: BTreeMap<String, ArgConstraint>,
    /// Whether arguments not listed in `arguments` are allowed (default `false`).
    pub additional_arguments: bool,
    /// Whether the detail authorizes one call only (default `false`).
    pub single_use: bool,
    /// A unique identifier (`urn:uuid:…`): the single-use key fleet-wide.
    pub identifier: String,
}

/// The members an `mcp_tool_call` detail may carry.
const MEMBERS: &[&str] = &[
    "type",
    "locations",
    "actions",
    "tool",
    "arguments",
    "additional_arguments",
    "single_use",
    "identifier",
];

impl AuthorizationDetail {
    /// Whether this detail covers a `tools/call` of `tool` sent to `audience` (the enclave's
    /// check: it cannot see arguments). Tool names compare byte for byte.
    pub fn permits_call(&self, audience: &HttpUrl, tool: &str) -> bool {
        self.tool == tool
            && self
                .locations
                .iter()
                .any(|l| UrlPrefix::parse(l).is_ok_and(|p| p.matches(audience)))
    }

    /// Checks a call's arguments (the gate's check): each listed argument present
    /// (`grant.arguments.missing`) and within its constraint (`grant.arguments.eq|min|max|
    /// one_of|prefix|type`), then no argument unlisted unless `additional_arguments`
    /// (`grant.arguments.unlisted`). Callers holding the JSON text should use
    /// [`CallArguments::parse`] and [`Self::check_call_arguments`]: this form takes what
    /// `serde_json` already read.
    pub fn check_arguments(&self, args: &Map<String, Value>) -> Result<(), ContractError> {
        self.check_call_arguments(&CallArguments::from_map(args)?)
    }

    /// [`Self::check_arguments`] on the JSON text of `params.arguments` (exact numbers,
    /// repeated member names refused).
    pub fn check_arguments_json(&self, raw: &str) -> Result<(), ContractError> {
        self.check_call_arguments(&CallArguments::parse(raw)?)
    }

    /// [`Self::check_arguments`] on arguments already read.
    pub fn check_call_arguments(&self, args: &CallArguments) -> Result<(), ContractError> {
        for (name, c) in &self.arguments {
            match args.get(name) {
                None => {
                    return Err(grant(
                        "grant.arguments.missing",
                        format!(
                            "argument {:?} is constrained by the grant and must be sent",
                            clip(name)
                        ),
                    ))
                }
                Some(v) => c.check(name, v)?,
            }
        }
        if !self.additional_arguments {
            if let Some((k, _)) = args.iter().find(|(k, _)| !self.arguments.contains_key(*k)) {
                return Err(grant(
                    "grant.arguments.unlisted",
                    format!(
                        "argument {:?} is not listed by the grant, which allows no other \
                         arguments",
                        clip(k)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Whether the detail limits arguments at all (constraints, or no unlisted arguments):
    /// such a detail needs a checker that holds the body.
    pub fn has_argument_limits(&self) -> bool {
        !self.arguments.is_empty() || !self.additional_arguments
    }

    /// Whether every call this detail permits is permitted by `wider` (the STS rule for a
    /// requested detail): the same tool; each location under one of `wider`'s; every
    /// argument `wider` constrains constrained here at least as tightly; no argument here
    /// that `wider` would refuse as unlisted; additional arguments only if `wider` allows
    /// them; if `wider` is single use, this one is too; and always **the same
    /// identifier**. The identifier names the grant a use spends (the fleet's single-use
    /// key is the owner and the identifier): a narrower detail under another identifier
    /// would, once used, spend whichever other grant of the owner carries it — so even
    /// under a reusable detail the identifier is kept (`grant.not_within` at the STS and
    /// in the enclave otherwise).
    pub fn is_within(&self, wider: &AuthorizationDetail) -> bool {
        if self.tool != wider.tool {
            return false;
        }
        let wide: Vec<UrlPrefix> = wider
            .locations
            .iter()
            .filter_map(|l| UrlPrefix::parse(l).ok())
            .collect();
        let locations_ok = !self.locations.is_empty()
            && self.locations.iter().all(|l| {
                UrlPrefix::parse(l).is_ok_and(|p| wide.iter().any(|w| w.matches(p.url())))
            });
        if !locations_ok {
            return false;
        }
        if self.additional_arguments && !wider.additional_arguments {
            return false;
        }
        let constraints_ok = wider
            .arguments
            .iter()
            .all(|(k, w)| self.arguments.get(k).is_some_and(|c| c.is_within(w)));
        let listed_ok = wider.additional_arguments
            || self
                .arguments
                .keys()
                .all(|k| wider.arguments.contains_key(k));
        let use_ok = self.single_use || !wider.single_use;
        constraints_ok && listed_ok && use_ok && self.identifier == wider.identifier
    }

    /// The detail as RFC 9396 JSON text (`type` included, defaults written out).
    pub fn to_json_text(&self) -> String {
        self.to_value().to_text()
    }

    /// The detail as a `serde_json` value (numbers may round: for display).
    pub fn to_json(&self) -> Value {
        self.to_value().to_json()
    }

    fn to_value(&self) -> ArgValue {
        let mut m = BTreeMap::new();
        let s = |x: &str| ArgValue::String(x.to_owned());
        m.insert("type".to_owned(), s(DETAIL_TYPE));
        m.insert(
            "locations".to_owned(),
            ArgValue::Array(self.locations.iter().map(|l| s(l)).collect()),
        );
        m.insert(
            "actions".to_owned(),
            ArgValue::Array(vec![s(ACTION_TOOLS_CALL)]),
        );
        m.insert("tool".to_owned(), s(&self.tool));
        if !self.arguments.is_empty() {
            m.insert(
                "arguments".to_owned(),
                ArgValue::Object(
                    self.arguments
                        .iter()
                        .map(|(k, c)| (k.clone(), c.to_value()))
                        .collect(),
                ),
            );
        }
        m.insert(
            "additional_arguments".to_owned(),
            ArgValue::Bool(self.additional_arguments),
        );
        m.insert("single_use".to_owned(), ArgValue::Bool(self.single_use));
        m.insert("identifier".to_owned(), s(&self.identifier));
        ArgValue::Object(m)
    }

    /// Reads and checks one detail from its JSON text (the contract's rules: unknown
    /// `type`, member, action or constraint kind is `contract.schema`; a bad value is
    /// `contract.malformed`). `identifier` is required.
    pub fn parse(text: &str) -> Result<Self, ContractError> {
        let v = ArgValue::parse(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
        Self::from_value(v, true)
    }

    /// Reads a detail written by hand (`cada-owner grant --authorization-details`): as
    /// [`Self::parse`], but `identifier` may be absent (returned empty, for the caller to
    /// fill).
    pub fn parse_draft(text: &str) -> Result<Self, ContractError> {
        let v = ArgValue::parse(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
        Self::from_value(v, false)
    }

    /// Reads a JSON array of details (a file of drafts, identifiers optional).
    pub fn parse_draft_list(text: &str) -> Result<Vec<Self>, ContractError> {
        let v = ArgValue::parse(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let ArgValue::Array(items) = v else {
            return Err(malformed(
                "authorization_details is a JSON array of details".to_owned(),
            ));
        };
        if items.is_empty() || items.len() > MAX_DETAILS {
            return Err(malformed(format!(
                "1 to {MAX_DETAILS} details, not {}",
                items.len()
            )));
        }
        items
            .into_iter()
            .map(|i| Self::from_value(i, false))
            .collect()
    }

    fn from_value(v: ArgValue, need_identifier: bool) -> Result<Self, ContractError> {
        let ArgValue::Object(mut m) = v else {
            return Err(malformed("a detail is a JSON object".to_owned()));
        };
        match m.get("type") {
            Some(ArgValue::String(t)) if t == DETAIL_TYPE => {}
            Some(ArgValue::String(t)) => {
                return Err(schema(format!(
                    "authorization detail type {:?} is unknown; this verifier knows \
                     {DETAIL_TYPE:?} only",
                    clip(t)
                )))
            }
            _ => {
                return Err(schema(format!(
                    "an authorization detail needs \"type\": {DETAIL_TYPE:?}"
                )))
            }
        }
        if let Some(k) = m.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(schema(format!(
                "an {DETAIL_TYPE} detail has no member {:?} (known: {})",
                clip(k),
                MEMBERS.join(", ")
            )));
        }
        let string = |v: Option<ArgValue>, what: &str| -> Result<Option<String>, ContractError> {
            match v {
                None => Ok(None),
                Some(ArgValue::String(s)) => Ok(Some(s)),
                Some(o) => Err(malformed(format!(
                    "{what} must be a string, not {}",
                    o.kind()
                ))),
            }
        };
        let boolean = |v: Option<ArgValue>, what: &str| -> Result<bool, ContractError> {
            match v {
                None => Ok(false),
                Some(ArgValue::Bool(b)) => Ok(b),
                Some(o) => Err(malformed(format!(
                    "{what} must be true or false, not {}",
                    o.kind()
                ))),
            }
        };
        let tool = string(m.remove("tool"), "tool")?
            .ok_or_else(|| malformed("a detail names its tool".to_owned()))?;
        if tool.is_empty()
            || tool.len() > 128
            || !tool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        {
            return Err(malformed(format!(
                "tool {:?}: 1 to 128 characters of letters, digits, _ - . /",
                clip(&tool)
            )));
        }
        let what = format!("tool {tool}");
        let locations = match m.remove("locations") {
            Some(ArgValue::Array(a)) => a
                .into_iter()
                .map(|l| match l {
                    ArgValue::String(s) => Ok(s),
                    o => Err(malformed(format!(
                        "{what}: each location is a string, not {}",
                        o.kind()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(malformed(format!(
                    "{what}: locations is an array of audience URL prefixes"
                )))
            }
        };
        if locations.is_empty() || locations.len() > MAX_LOCATIONS {
            return Err(malformed(format!(
                "{what}: 1 to {MAX_LOCATIONS} locations, not {}",
                locations.len()
            )));
        }
        let mut seen: Vec<UrlPrefix> = Vec::new();
        for l in &locations {
            let p = UrlPrefix::parse(l).map_err(|e| {
                malformed(format!(
                    "{what}: location {:?} [{}]: {e}",
                    clip(l),
                    e.code()
                ))
            })?;
            if !(p.url().scheme() == "https" || p.url().has_loopback_host()) {
                return Err(malformed(format!(
                    "{what}: location {p} must be https (http only to a loopback host)"
                )));
            }
            if seen.contains(&p) {
                return Err(malformed(format!("{what}: location {p} appears twice")));
            }
            seen.push(p);
        }
        match m.remove("actions") {
            None => {}
            Some(ArgValue::Array(a)) if !a.is_empty() => {
                for x in a {
                    match x {
                        ArgValue::String(s) if s == ACTION_TOOLS_CALL => {}
                        ArgValue::String(s) => {
                            return Err(schema(format!(
                                "{what}: action {:?} is unknown; an {DETAIL_TYPE} detail knows \
                                 {ACTION_TOOLS_CALL:?} only",
                                clip(&s)
                            )))
                        }
                        o => {
                            return Err(malformed(format!(
                                "{what}: each action is a string, not {}",
                                o.kind()
                            )))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(malformed(format!(
                    "{what}: actions is a non-empty array ([\"{ACTION_TOOLS_CALL}\"])"
                )))
            }
        }
        let arguments = match m.remove("arguments") {
            None => BTreeMap::new(),
            Some(ArgValue::Object(a)) => {
                if a.len() > MAX_CONSTRAINED_ARGUMENTS {
                    return Err(malformed(format!(
                        "{what}: at most {MAX_CONSTRAINED_ARGUMENTS} constrained arguments, \
                         not {}",
                        a.len()
                    )));
                }
                let mut out = BTreeMap::new();
                for (k, c) in a {
                    if k.is_empty() || k.len() > MAX_DETAIL_STRING {
                        return Err(malformed(format!(
                            "{what}: an argument name is 1 to {MAX_DETAIL_STRING} bytes"
                        )));
                    }
                    let c = ArgConstraint::from_value(&k, c)?;
                    out.insert(k, c);
                }
                out
            }
            Some(o) => {
                return Err(malformed(format!(
                    "{what}: arguments is an object of argument name → constraint, not {}",
                    o.kind()
                )))
            }
        };
        let additional_arguments =
            boolean(m.remove("additional_arguments"), "additional_arguments")?;
        let single_use = boolean(m.remove("single_use"), "single_use")?;
        let identifier = string(m.remove("identifier"), "identifier")?.unwrap_or_default();
        if identifier.is_empty() {
            if need_identifier {
                return Err(malformed(format!(
                    "{what}: identifier (a unique URI such as urn:uuid:…) is required"
                )));
            }
        } else if identifier.len() > 256
            || !identifier.contains(':')
            || !identifier.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(malformed(format!(
                "{what}: identifier {:?} must be a URI (urn:uuid:…) of at most 256 printable \
                 ASCII characters",
                clip(&identifier)
            )));
        }
        Ok(AuthorizationDetail {
            locations,
            tool,
            arguments,
            additional_arguments,
            single_use,
            identifier,
        })
    }
}

/// Checks a contract's list of details (count, identifiers unique).
pub(crate) fn check_details(details: &[AuthorizationDetail]) -> Result<(), ContractError> {
    if details.len() > MAX_DETAILS {
        return Err(malformed(format!(
            "at most {MAX_DETAILS} details, not {}",
            details.len()
        )));
    }
    for (i, d) in details.iter().enumerate() {
        if details[..i].iter().any(|o| o.identifier == d.identifier) {
            return Err(malformed(format!(
                "identifier {:?} appears twice",
                clip(&d.identifier)
            )));
        }
    }
    Ok(())
}

/// Whether `(method, url)` is one of the two step-up endpoints under `base`: `POST
/// {base}/v1/step-up` or `GET {base}/v1/step-up/{id}` (`id` one segment of
/// `[A-Za-z0-9_-]{1,64}`), same origin ([`HttpUrl`] carries no query).
pub fn is_step_up_request(base: &UrlPrefix, method: &str, url: &HttpUrl) -> bool {
    if base.url().origin() != url.origin() {
        return false;
    }
    let bp = base.url().path().trim_end_matches('/');
    let Some(rest) = url.path().strip_prefix(bp) else {
        return false;
    };
    match (method, rest.strip_prefix("/v1/step-up")) {
        ("POST", Some("")) => true,
        ("GET", Some(r)) => r.strip_prefix('/').is_some_and(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        }),
        _ => false,
    }
}

/// Which of `covering` — the details that cover one `tools/call` (its tool at its
/// location), in the contract's (or token's) order — admit the call. With its arguments
/// (`Some`): every detail whose limits they meet, in order; none of them: the first
/// detail's refusal (`grant.arguments.*`). Without them (`None`: nobody on the path reads
/// the body): every detail without argument limits; none: `grant.arguments_unchecked`.
/// Several may admit one call: the caller uses a reusable one if any admits it, else the
/// first single-use one not used yet (review grants-1, finding 5: not merely the first).
pub fn admitting<'a>(
    covering: &[&'a AuthorizationDetail],
    tool: &str,
    args: Option<&CallArguments>,
) -> Result<Vec<&'a AuthorizationDetail>, ContractError> {
    if covering.is_empty() {
        return Err(grant(
            "grant.tool",
            format!("no authorization detail covers {:?} here", clip(tool)),
        ));
    }
    match args {
        Some(args) => {
            let mut first = None;
            let mut meeting = Vec::new();
            for d in covering {
                match d.check_call_arguments(args) {
                    Ok(()) => meeting.push(*d),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            match first {
                Some(e) if meeting.is_empty() => Err(e),
                _ => Ok(meeting),
            }
        }
        None => {
            let open: Vec<_> = covering
                .iter()
                .copied()
                .filter(|d| !d.has_argument_limits())
                .collect();
            if open.is_empty() {
                return Err(grant(
                    "grant.arguments_unchecked",
                    format!(
                        "the grant for {:?} limits its arguments and nothing here reads them: \
                         send the call through a CADA gate (or a verifier given the body)",
                        clip(tool)
                    ),
                ));
            }
            Ok(open)
        }
    }
}

/// A refusal of a one-transaction grant with its `grant.*` code.
pub(crate) fn grant(code: &'static str, detail: String) -> ContractError {
    ContractError::Grant { code, detail }
}

fn malformed(detail: String) -> ContractError {
    ContractError::malformed("credentialSubject.authorization_details", detail)
}

fn schema(detail: String) -> ContractError {
    ContractError::Schema { detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(s: &str) -> JsonNumber {
        JsonNumber::parse(s).unwrap()
    }

    fn detail(args: Value) -> AuthorizationDetail {
        AuthorizationDetail::parse(
            &json!({
                "type": "mcp_tool_call",
                "locations": ["https://mcp.example/mcp"],
                "tool": "transfer",
                "arguments": args,
                "single_use": true,
                "identifier": "urn:uuid:00000000-0000-4000-8000-000000000001"
            })
            .to_string(),
        )
        .unwrap()
    }

    fn transfer() -> AuthorizationDetail {
        detail(json!({
            "amount": {"max": 500},
            "currency": {"eq": "USD"},
            "to": {"one_of": ["alice", "bob"]},
            "memo": {"prefix": "inv-"}
        }))
    }

    fn code(r: Result<(), ContractError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    fn check(d: &AuthorizationDetail, raw: &str) -> &'static str {
        code(d.check_arguments_json(raw))
    }

    #[test]
    fn numbers_compare_by_exact_decimal_value() {
        for same in [
            "500", "500.0", "5e2", "5E+2", "0.5e3", "50000e-2", "500.000",
        ] {
            assert_eq!(num(same), num("500"), "{same}");
        }
        assert_eq!(num("-0"), num("0"));
        assert_eq!(num("0e99"), num("0.000"));
        assert!(num("500.0000000000000001") > num("500"));
        assert!(num("499.99999999999999999") < num("500"));
        // Beyond 2^53 and beyond 2^64: no rounding.
        assert!(num("9007199254740993") > num("9007199254740992"));
        assert!(num("18446744073709551617") > num("18446744073709551616"));
        assert!(num("-18446744073709551617") < num("-18446744073709551616"));
        assert!(num("-1") < num("0") && num("0") < num("1e-400"));
        assert!(num("-2") < num("-1.5"));
        assert!(num("1e400") > num("1e399"));
        assert!(num("0.1") < num("0.11") && num("0.12") > num("0.11"));
        assert_eq!(num("1e400").as_str(), "1e400");
    }

    #[test]
    fn number_texts_outside_the_grammar_or_the_limits_are_refused() {
        for bad in [
            "", "01", "1.", ".5", "+1", "1e", "1e+", "--1", "-", "1.2.3", "0x10", "NaN", "1 ",
            "Infinity",
        ] {
            assert!(JsonNumber::parse(bad).is_err(), "{bad:?}");
        }
        assert!(JsonNumber::parse("1e1000000000").is_ok());
        assert!(JsonNumber::parse("1e1000000001").is_err());
        assert!(JsonNumber::parse("1e-99999999999999999999").is_err());
        assert!(JsonNumber::parse(&"9".repeat(MAX_NUMBER_LEN)).is_ok());
        assert!(JsonNumber::parse(&"9".repeat(MAX_NUMBER_LEN + 1)).is_err());
    }

    #[test]
    fn the_reader_refuses_repeated_members_deep_nesting_and_bad_strings() {
        assert!(ArgValue::parse(r#"{"a":1,"a":1}"#)
            .unwrap_err()
            .contains("twice"));
        assert!(ArgValue::parse(r#"{"x":[{"b":{"a":1,"a":2}}]}"#).is_err());
        // The same name spelled with an escape is the same name.
        assert!(ArgValue::parse(r#"{"a":1,"\u0061":2}"#).is_err());
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_ARGUMENT_DEPTH + 2),
            "]".repeat(MAX_ARGUMENT_DEPTH + 2)
        );
        assert!(ArgValue::parse(&deep).unwrap_err().contains("deeper"));
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_ARGUMENT_DEPTH),
            "]".repeat(MAX_ARGUMENT_DEPTH)
        );
        assert!(ArgValue::parse(&ok).is_ok());
        for bad in [
            r#""\ud800""#,
            "\"a\u{1}b\"",
            r#""\x41""#,
            r#""abc"#,
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            r#"[1,]"#,
            r#"{"a":1,}"#,
            r#"{a:1}"#,
            "tru",
            "nul",
            "1 2",
            r#""a"x"#,
            "",
            "[\"\\",
        ] {
            assert!(ArgValue::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ArgValue::parse(r#" "\u0041\n" "#).unwrap(),
            ArgValue::String("A\n".into())
        );
        assert_eq!(
            ArgValue::parse(r#""\ud83d\ude00""#).unwrap(),
            ArgValue::String("😀".into())
        );
    }

    /// The reader of outside bytes: every truncation and byte flip of a realistic input,
    /// garbage and 10,000-deep nesting end in a value or a typed error, never a panic, and
    /// whatever it accepts writes back to text it reads to the same value.
    #[test]
    fn the_reader_survives_truncation_flips_and_deep_nesting() {
        let text = r#"{"amount": -12.5e-3, "to": ["al\u0069ce", {"k": [true, false, null]}], "memo": "inv-\n\ud83d\ude00", "n": 18446744073709551617}"#;
        let check = |t: &str| {
            if let Ok(v) = ArgValue::parse(t) {
                assert_eq!(ArgValue::parse(&v.to_text()).unwrap(), v, "{t}");
            }
        };
        for i in 0..=text.len() {
            if let Some(t) = text.get(..i) {
                check(t);
            }
        }
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80, 0xff] {
                let mut b = bytes.to_vec();
                b[i] ^= flip;
                if let Ok(t) = std::str::from_utf8(&b) {
                    check(t);
                }
            }
        }
        for deep in ["[".repeat(10_000), "{\"a\":".repeat(10_000)] {
            assert!(ArgValue::parse(&deep).unwrap_err().contains("deeper"));
        }
        for garbage in [
            "\u{0}", "}", "]", ",", ":", "\"\\", "-", "1e", "[1 2]", "{\"a\"}",
        ] {
            assert!(ArgValue::parse(garbage).is_err(), "{garbage:?}");
        }
        assert!(CallArguments::parse(&" ".repeat(MAX_ARGUMENTS_LEN + 1)).is_err());
    }

    #[test]
    fn a_call_within_every_constraint_is_permitted() {
        let d = transfer();
        assert_eq!(
            check(
                &d,
                r#"{"amount": 500, "currency": "USD", "to": "bob", "memo": "inv-2024-7"}"#
            ),
            "ok"
        );
        assert_eq!(
            check(
                &d,
                r#"{"amount": 499.99, "currency": "USD", "to": "alice", "memo": "inv-"}"#
            ),
            "ok"
        );
        // 500.0 and 5e2 are 500.
        assert_eq!(
            check(
                &d,
                r#"{"amount":5e2,"currency":"USD","to":"bob","memo":"inv-1"}"#
            ),
            "ok"
        );
    }

    #[test]
    fn each_constraint_kind_refuses_with_its_own_code() {
        let d = transfer();
        let base = json!({"amount": 500, "currency": "USD", "to": "bob", "memo": "inv-1"});
        let with = |k: &str, v: Value| {
            let mut o = base.clone();
            o[k] = v;
            o.to_string()
        };
        let cases = [
            (with("amount", json!(501)), "grant.arguments.max"),
            (with("amount", json!(500.0001)), "grant.arguments.max"),
            (
                r#"{"amount":500.0000000000000001,"currency":"USD","to":"bob","memo":"inv-1"}"#
                    .to_owned(),
                "grant.arguments.max",
            ),
            (with("amount", json!("500")), "grant.arguments.type"),
            (with("amount", json!(null)), "grant.arguments.type"),
            (with("amount", json!([500])), "grant.arguments.type"),
            (with("currency", json!("usd")), "grant.arguments.eq"),
            (with("currency", json!("USD ")), "grant.arguments.eq"),
            (with("currency", json!(["USD"])), "grant.arguments.eq"),
            (with("to", json!("carol")), "grant.arguments.one_of"),
            (with("to", json!("Bob")), "grant.arguments.one_of"),
            (with("to", json!(["bob"])), "grant.arguments.one_of"),
            (with("memo", json!("INV-1")), "grant.arguments.prefix"),
            (with("memo", json!("inv")), "grant.arguments.prefix"),
            (with("memo", json!(7)), "grant.arguments.type"),
            (with("extra", json!(1)), "grant.arguments.unlisted"),
            (
                r#"{"amount":500,"currency":"USD","to":"bob"}"#.to_owned(),
                "grant.arguments.missing",
            ),
            (
                r#"{"amount":1,"amount":500,"currency":"USD","to":"bob","memo":"inv-1"}"#
                    .to_owned(),
                "grant.arguments.malformed",
            ),
            (r#"["amount", 500]"#.to_owned(), "grant.arguments.type"),
            (r#"null"#.to_owned(), "grant.arguments.type"),
            (
                r#"{"amount": 1e99999999999}"#.to_owned(),
                "grant.arguments.malformed",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(check(&d, &raw), want, "{raw}");
        }
        let min = detail(json!({"n": {"min": -10, "max": 10}}));
        assert_eq!(check(&min, r#"{"n": -10}"#), "ok");
        assert_eq!(check(&min, r#"{"n": -10.5}"#), "grant.arguments.min");
        assert_eq!(check(&min, r#"{"n": -1e400}"#), "grant.arguments.min");
        assert_eq!(check(&min, r#"{"n": 1e400}"#), "grant.arguments.max");
        assert_eq!(check(&min, r#"{"n": true}"#), "grant.arguments.type");
    }

    #[test]
    fn messages_name_the_argument_and_rule_never_the_value() {
        let d = transfer();
        let e = d
            .check_arguments_json(
                r#"{"amount":"secret-value-123","currency":"USD","to":"bob","memo":"inv-1"}"#,
            )
            .unwrap_err();
        assert!(e.to_string().contains("amount"), "{e}");
        assert!(!e.to_string().contains("secret-value-123"), "{e}");
    }

    #[test]
    fn strings_compare_byte_for_byte_without_normalization() {
        let d = detail(json!({
            "who": {"eq": "caf\u{e9}"},
            "memo": {"prefix": "inv-"},
            "to": {"one_of": ["alice"]}
        }));
        let ok = r#"{"who":"café","memo":"inv-1","to":"alice"}"#;
        assert_eq!(check(&d, ok), "ok");
        // The same characters through JSON escapes are the same string.
        assert_eq!(
            check(
                &d,
                r#"{"who":"caf\u00e9","memo":"\u0069nv-1","to":"\u0061lice"}"#
            ),
            "ok"
        );
        let cases = [
            // NFD spelling of é.
            (
                "{\"who\":\"cafe\u{301}\",\"memo\":\"inv-1\",\"to\":\"alice\"}",
                "grant.arguments.eq",
            ),
            // U+2010 HYPHEN instead of '-'.
            (
                "{\"who\":\"café\",\"memo\":\"inv\u{2010}1\",\"to\":\"alice\"}",
                "grant.arguments.prefix",
            ),
            // Fullwidth i.
            (
                "{\"who\":\"café\",\"memo\":\"\u{ff49}nv-1\",\"to\":\"alice\"}",
                "grant.arguments.prefix",
            ),
            // Cyrillic а.
            (
                "{\"who\":\"café\",\"memo\":\"inv-1\",\"to\":\"\u{430}lice\"}",
                "grant.arguments.one_of",
            ),
            // Zero-width joiner and bidi override.
            (
                "{\"who\":\"café\",\"memo\":\"inv-1\",\"to\":\"ali\u{200d}ce\"}",
                "grant.arguments.one_of",
            ),
            (
                "{\"who\":\"café\",\"memo\":\"\u{202e}inv-1\",\"to\":\"alice\"}",
                "grant.arguments.prefix",
            ),
            // A NUL after the value is another value.
            (
                r#"{"who":"café\u0000","memo":"inv-1","to":"alice"}"#,
                "grant.arguments.eq",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(check(&d, raw), want, "{raw}");
        }
    }

    #[test]
    fn eq_compares_nested_values_as_json() {
        let d = detail(
            json!({"dest": {"eq": {"iban": "DE00", "amounts": [1, 2.5], "ok": true, "n": null}}}),
        );
        assert_eq!(
            check(
                &d,
                r#"{"dest":{"n":null,"ok":true,"amounts":[1.0,25e-1],"iban":"DE00"}}"#
            ),
            "ok"
        );
        for bad in [
            r#"{"dest":{"n":null,"ok":true,"amounts":[2.5,1],"iban":"DE00"}}"#,
            r#"{"dest":{"ok":true,"amounts":[1,2.5],"iban":"DE00"}}"#,
            r#"{"dest":{"n":null,"ok":true,"amounts":[1,2.5],"iban":"DE00","x":1}}"#,
            r#"{"dest":{"n":null,"ok":"true","amounts":[1,2.5],"iban":"DE00"}}"#,
            r#"{"dest":{"n":false,"ok":true,"amounts":[1,2.5],"iban":"DE00"}}"#,
            r#"{"dest":"{\"iban\":\"DE00\"}"}"#,
        ] {
            assert_eq!(check(&d, bad), "grant.arguments.eq", "{bad}");
        }
        assert_eq!(
            check(
                &d,
                r#"{"dest":{"n":null,"n":null,"ok":true,"amounts":[1,2.5],"iban":"DE00"}}"#
            ),
            "grant.arguments.malformed"
        );
        // A number never equals its string.
        let n = detail(json!({"id": {"eq": 42}, "k": {"one_of": [1, "2"]}}));
        assert_eq!(
            check(&n, r#"{"id":42.0,"k":2e0}"#),
            "grant.arguments.one_of"
        );
        assert_eq!(check(&n, r#"{"id":"42","k":1}"#), "grant.arguments.eq");
        assert_eq!(check(&n, r#"{"id":42,"k":"2"}"#), "ok");
    }

    #[test]
    fn additional_arguments_and_no_constraints() {
        let open = AuthorizationDetail::parse(
            &json!({"type": "mcp_tool_call", "locations": ["https://mcp.example/"],
                    "tool": "search", "additional_arguments": true,
                    "identifier": "urn:x:1"})
            .to_string(),
        )
        .unwrap();
        assert!(!open.has_argument_limits());
        assert_eq!(
            check(&open, r#"{"q":"anything","n":[1,{"deep":true}]}"#),
            "ok"
        );
        let none = AuthorizationDetail {
            additional_arguments: false,
            ..open.clone()
        };
        assert!(none.has_argument_limits());
        assert_eq!(check(&none, "{}"), "ok");
        assert_eq!(check(&none, r#"{"q":1}"#), "grant.arguments.unlisted");
        assert_eq!(
            code(none.check_call_arguments(&CallArguments::empty())),
            "ok"
        );
        let mut some = transfer();
        some.additional_arguments = true;
        assert!(some.has_argument_limits());
        assert_eq!(
            check(
                &some,
                r#"{"amount":1,"currency":"USD","to":"bob","memo":"inv-","x":9}"#
            ),
            "ok"
        );
    }

    #[test]
    fn the_serde_json_map_form_checks_the_same_rules() {
        let d = transfer();
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(
            code(d.check_arguments(&m(
                json!({"amount": 12, "currency": "USD", "to": "bob", "memo": "inv-9"})
            ))),
            "ok"
        );
        assert_eq!(
            code(d.check_arguments(&m(
                json!({"amount": 500.5, "currency": "USD", "to": "bob", "memo": "inv-9"})
            ))),
            "grant.arguments.max"
        );
        assert_eq!(
            code(d.check_arguments(&m(
                json!({"amount": u64::MAX, "currency": "USD", "to": "bob", "memo": "inv-9"})
            ))),
            "grant.arguments.max"
        );
    }

    #[test]
    fn the_tool_and_location_are_matched_exactly_and_on_segments() {
        let d = transfer();
        let u = |s: &str| HttpUrl::parse_canonical(s).unwrap();
        assert!(d.permits_call(&u("https://mcp.example/mcp"), "transfer"));
        assert!(d.permits_call(&u("https://mcp.example/mcp/x"), "transfer"));
        assert!(!d.permits_call(&u("https://mcp.example/mcpx"), "transfer"));
        assert!(!d.permits_call(&u("https://mcp.example/"), "transfer"));
        assert!(!d.permits_call(&u("https://mcp.example.evil/mcp"), "transfer"));
        assert!(!d.permits_call(&u("http://mcp.example/mcp"), "transfer"));
        assert!(!d.permits_call(&u("https://mcp.example/mcp"), "Transfer"));
        assert!(!d.permits_call(&u("https://mcp.example/mcp"), "transfer2"));
    }

    fn draft(v: Value) -> Result<AuthorizationDetail, ContractError> {
        AuthorizationDetail::parse(&v.to_string())
    }

    #[test]
    fn unknown_shapes_are_schema_refusals_and_bad_values_malformed() {
        let ok = json!({"type": "mcp_tool_call", "locations": ["https://mcp.example/mcp"],
                        "tool": "transfer", "identifier": "urn:uuid:1"});
        assert!(draft(ok.clone()).is_ok());
        let with = |k: &str, v: Value| {
            let mut o = ok.clone();
            o[k] = v;
            o
        };
        let without = |k: &str| {
            let mut o = ok.clone();
            o.as_object_mut().unwrap().remove(k);
            o
        };
        let schema_cases = [
            with("type", json!("payment_initiation")),
            with("type", json!(1)),
            without("type"),
            with("datatypes", json!(["x"])),
            with("actions", json!(["tools/list"])),
            with("arguments", json!({"a": {"regex": ".*"}})),
            with("arguments", json!({"a": {"max": 1, "lt": 2}})),
        ];
        for v in schema_cases {
            assert_eq!(
                draft(v.clone()).unwrap_err().code(),
                "contract.schema",
                "{v}"
            );
        }
        let long = "x".repeat(MAX_DETAIL_STRING + 1);
        let many: serde_json::Map<String, Value> = (0..=MAX_CONSTRAINED_ARGUMENTS)
            .map(|i| (format!("a{i}"), json!({"eq": i})))
            .collect();
        let malformed_cases = [
            without("tool"),
            without("locations"),
            without("identifier"),
            with("identifier", json!("no-colon")),
            with("identifier", json!("urn:has space")),
            with("tool", json!("trans fer")),
            with("tool", json!("")),
            with("locations", json!([])),
            with("locations", json!(["http://mcp.example/mcp"])),
            with("locations", json!(["https://mcp.example/a%2Fb"])),
            with("locations", json!(["https://mcp.example/a/../b"])),
            with(
                "locations",
                json!(["https://mcp.example/mcp", "https://mcp.example/mcp"]),
            ),
            with("locations", json!("https://mcp.example/mcp")),
            with("actions", json!([])),
            with("actions", json!("tools/call")),
            with("single_use", json!("true")),
            with("additional_arguments", json!(1)),
            with("arguments", json!([])),
            with("arguments", json!({"a": 5})),
            with("arguments", json!({"a": {}})),
            with("arguments", json!({"a": {"eq": 1, "prefix": "x"}})),
            with("arguments", json!({"a": {"min": 2, "max": 1}})),
            with("arguments", json!({"a": {"max": "500"}})),
            with("arguments", json!({"a": {"one_of": []}})),
            with("arguments", json!({"a": {"one_of": [1, 1.0]}})),
            with(
                "arguments",
                json!({"a": {"one_of": (0..=MAX_ONE_OF).collect::<Vec<_>>()}}),
            ),
            with("arguments", json!({"a": {"one_of": "x"}})),
            with("arguments", json!({"a": {"prefix": 1}})),
            with("arguments", json!({"a": {"prefix": long.clone()}})),
            with("arguments", json!({"a": {"eq": {"k": long.clone()}}})),
            with("arguments", json!({long.clone(): {"eq": 1}})),
            with("arguments", json!({"": {"eq": 1}})),
            with("arguments", Value::Object(many)),
        ];
        for v in malformed_cases {
            assert_eq!(
                draft(v.clone()).unwrap_err().code(),
                "contract.malformed",
                "{v}"
            );
        }
        assert_eq!(
            AuthorizationDetail::parse(
                r#"{"type":"mcp_tool_call","type":"mcp_tool_call","locations":["https://a.example/"],"tool":"t","identifier":"urn:x"}"#
            )
            .unwrap_err()
            .code(),
            "contract.malformed"
        );
        // Loopback http is allowed (tests, local servers).
        assert!(draft(with("locations", json!(["http://127.0.0.1:8080/mcp"]))).is_ok());
        // Drafts may leave the identifier for the CLI.
        assert!(AuthorizationDetail::parse_draft(&without("identifier").to_string()).is_ok());
    }

    #[test]
    fn draft_lists_are_arrays_within_the_limit() {
        let one =
            json!({"type": "mcp_tool_call", "locations": ["https://mcp.example/mcp"], "tool": "t"});
        assert_eq!(
            AuthorizationDetail::parse_draft_list(&json!([one]).to_string())
                .unwrap()
                .len(),
            1
        );
        for bad in [json!([]), one.clone(), json!(vec![one; MAX_DETAILS + 1])] {
            assert!(AuthorizationDetail::parse_draft_list(&bad.to_string()).is_err());
        }
    }

    #[test]
    fn the_json_text_reads_back_to_the_same_detail() {
        let d = detail(json!({
            "amount": {"min": 0.01, "max": 18446744073709551617_f64},
            "exact": {"max": 9007199254740993_u64},
            "currency": {"eq": {"code": "USD", "n": [1, "x", null, false]}},
            "to": {"one_of": ["alice", 3]},
            "memo": {"prefix": "inv-\"\\\u{1}é"}
        }));
        let text = d.to_json_text();
        assert_eq!(AuthorizationDetail::parse(&text).unwrap(), d);
        assert!(text.contains("9007199254740993"), "{text}");
        assert_eq!(d.to_json()["arguments"]["currency"]["eq"]["code"], "USD");
        // A bound written with more digits than a double holds stays exact.
        let exact = AuthorizationDetail::parse(
            r#"{"type":"mcp_tool_call","locations":["https://mcp.example/mcp"],"tool":"t","identifier":"urn:x","arguments":{"a":{"max":0.30000000000000001}}}"#,
        )
        .unwrap();
        assert!(exact.to_json_text().contains("0.30000000000000001"));
        assert_eq!(check(&exact, r#"{"a":0.3}"#), "ok");
        assert_eq!(
            check(&exact, r#"{"a":0.30000000000000002}"#),
            "grant.arguments.max"
        );
    }

    #[test]
    fn is_within_is_the_subset_rule() {
        let wide = transfer();
        let narrow = |args: Value| {
            let mut d = detail(args);
            d.identifier = wide.identifier.clone();
            d
        };
        let full = json!({
            "amount": {"max": 100},
            "currency": {"eq": "USD"},
            "to": {"eq": "alice"},
            "memo": {"prefix": "inv-42"}
        });
        assert!(narrow(full.clone()).is_within(&wide));
        assert!(wide.is_within(&wide));
        let with = |k: &str, v: Value| {
            let mut o = full.clone();
            o[k] = v;
            narrow(o)
        };
        assert!(with("amount", json!({"min": 1, "max": 500})).is_within(&wide));
        assert!(with("amount", json!({"eq": 500})).is_within(&wide));
        assert!(with("amount", json!({"one_of": [1, 2.5, 500]})).is_within(&wide));
        assert!(with("to", json!({"one_of": ["bob", "alice"]})).is_within(&wide));
        assert!(with("memo", json!({"eq": "inv-9"})).is_within(&wide));
        assert!(with("memo", json!({"one_of": ["inv-9", "inv-10"]})).is_within(&wide));
        for (k, v) in [
            ("amount", json!({"max": 501})),
            ("amount", json!({"min": 1})),
            ("amount", json!({"eq": "500"})),
            ("amount", json!({"one_of": [1, 501]})),
            ("amount", json!({"prefix": "5"})),
            ("currency", json!({"eq": "EUR"})),
            ("currency", json!({"prefix": "USD"})),
            ("to", json!({"one_of": ["alice", "carol"]})),
            ("to", json!({"prefix": "al"})),
            ("memo", json!({"prefix": "inv"})),
            ("memo", json!({"prefix": "INV-1"})),
            ("memo", json!({"eq": "x-inv-"})),
            ("extra", json!({"eq": 1})),
        ] {
            assert!(!with(k, v.clone()).is_within(&wide), "{k}: {v}");
        }
        // An argument the wide detail constrains must stay constrained.
        let mut missing = full.clone();
        missing.as_object_mut().unwrap().remove("amount");
        assert!(!narrow(missing).is_within(&wide));
        // Additional arguments only where the wide detail allows them.
        let mut more = narrow(full.clone());
        more.additional_arguments = true;
        assert!(!more.is_within(&wide));
        let mut wide_open = wide.clone();
        wide_open.additional_arguments = true;
        assert!(more.is_within(&wide_open));
        assert!(with("extra", json!({"eq": 1})).is_within(&wide_open));
        // Single use stays single use, under the same identifier.
        let mut reusable = narrow(full.clone());
        reusable.single_use = false;
        assert!(!reusable.is_within(&wide));
        let mut other_id = narrow(full.clone());
        other_id.identifier = "urn:uuid:other".into();
        assert!(!other_id.is_within(&wide));
        // Under a reusable detail too: another identifier would spend another grant of the
        // owner (review grants-1, finding 4); the same one, single use or not, is within.
        let mut wide_reusable = wide.clone();
        wide_reusable.single_use = false;
        assert!(!other_id.is_within(&wide_reusable));
        let mut single_other = other_id.clone();
        single_other.single_use = true;
        assert!(!single_other.is_within(&wide_reusable));
        assert!(narrow(full.clone()).is_within(&wide_reusable));
        assert!(reusable.is_within(&wide_reusable));
        // Tool and locations.
        let mut tool = narrow(full.clone());
        tool.tool = "transfer2".into();
        assert!(!tool.is_within(&wide));
        for (loc, within) in [
            ("https://mcp.example/mcp/payments", true),
            ("https://mcp.example/mcp", true),
            ("https://mcp.example/", false),
            ("https://mcp.example/mcpx", false),
            ("https://other.example/mcp", false),
        ] {
            let mut l = narrow(full.clone());
            l.locations = vec![loc.into()];
            assert_eq!(l.is_within(&wide), within, "{loc}");
        }
        let mut none = narrow(full.clone());
        none.locations.clear();
        assert!(!none.is_within(&wide));
        // A range is never within a set or a value, even a degenerate one.
        let point = detail(json!({"a": {"eq": 5}}));
        let range = detail(json!({"a": {"min": 5, "max": 5}}));
        assert!(!range.is_within(&point));
        assert!(point.is_within(&range));
    }

    #[test]
    fn step_up_endpoints_are_exactly_two() {
        let u = |s: &str| HttpUrl::parse_canonical(s).unwrap();
        for base in ["http://localhost:8470", "http://localhost:8470/"] {
            let b = UrlPrefix::parse(base).unwrap();
            assert!(is_step_up_request(
                &b,
                "POST",
                &u("http://localhost:8470/v1/step-up")
            ));
            assert!(is_step_up_request(
                &b,
                "GET",
                &u("http://localhost:8470/v1/step-up/AbC-_9")
            ));
            for (m, url) in [
                ("GET", "http://localhost:8470/v1/step-up"),
                ("POST", "http://localhost:8470/v1/step-up/abc"),
                ("PUT", "http://localhost:8470/v1/step-up"),
                ("GET", "http://localhost:8470/v1/step-up/"),
                ("GET", "http://localhost:8470/v1/step-up/a/b"),
                ("GET", "http://localhost:8470/v1/step-up/a.b"),
                ("POST", "http://localhost:8470/v1/step-upx"),
                ("POST", "http://localhost:8471/v1/step-up"),
                ("POST", "http://127.0.0.1:8470/v1/step-up"),
                ("POST", "http://localhost:8470/r/abc"),
                ("GET", "http://localhost:8470/"),
            ] {
                assert!(!is_step_up_request(&b, m, &u(url)), "{m} {url}");
            }
            let long = format!("http://localhost:8470/v1/step-up/{}", "a".repeat(65));
            assert!(!is_step_up_request(&b, "GET", &u(&long)));
        }
        let b = UrlPrefix::parse("https://owner.example/cada").unwrap();
        assert!(is_step_up_request(
            &b,
            "POST",
            &u("https://owner.example/cada/v1/step-up")
        ));
        assert!(!is_step_up_request(
            &b,
            "POST",
            &u("https://owner.example/v1/step-up")
        ));
        assert!(!is_step_up_request(
            &b,
            "POST",
            &u("https://owner.example/cadax/v1/step-up")
        ));
    }
}
