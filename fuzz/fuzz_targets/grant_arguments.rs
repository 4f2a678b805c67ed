//! One-transaction grants (`cada_contract::details`): the contract crate's own exact JSON
//! reader (call arguments, constraint values, numbers), authorization details, the
//! argument check and the subset rule.
//!
//! Input: a mode byte, then text. Mode 0: `params.arguments` checked against a fixed
//! detail. Mode 1: an authorization detail. Mode 2: two numbers, one per line.
//! Oracles: whatever the reader accepts writes back to text that reads to the same value;
//! an accepted detail reads back from its own JSON and is within itself; a refused call
//! names a `grant.*` code; numbers order like `i128` where both fit and never against the
//! correctly rounded `f64` order (rounding is monotone).
#![no_main]

use std::cmp::Ordering;

use cada_contract::{ArgValue, AuthorizationDetail, CallArguments, JsonNumber, GRANT_CODES};
use libfuzzer_sys::fuzz_target;

fn fixed() -> &'static AuthorizationDetail {
    static D: std::sync::OnceLock<AuthorizationDetail> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        AuthorizationDetail::parse(
            r#"{"type":"mcp_tool_call","locations":["https://mcp.example/mcp"],"tool":"transfer","arguments":{"amount":{"min":0.01,"max":500},"currency":{"eq":"USD"},"to":{"one_of":["alice","bob",{"iban":"DE00"}]},"memo":{"prefix":"inv-"}},"single_use":true,"identifier":"urn:uuid:1"}"#,
        )
        .expect("the fixed detail")
    })
}

fn integer(t: &str) -> Option<i128> {
    if t.len() > 30 || t.contains(['.', 'e', 'E']) {
        return None;
    }
    t.parse().ok()
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("grant_arguments");
    },
    |data: &[u8]| {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        match mode % 3 {
            0 => {
                if let Ok(v) = ArgValue::parse(text) {
                    assert_eq!(ArgValue::parse(&v.to_text()).as_ref(), Ok(&v));
                }
                if let Ok(args) = CallArguments::parse(text) {
                    if let Err(e) = fixed().check_call_arguments(&args) {
                        assert!(GRANT_CODES.contains(&e.code()), "{}", e.code());
                    }
                } else if let Err(e) = fixed().check_arguments_json(text) {
                    assert!(e.code().starts_with("grant.arguments."), "{}", e.code());
                }
            }
            1 => {
                if let Ok(d) = AuthorizationDetail::parse(text) {
                    let again = AuthorizationDetail::parse(&d.to_json_text())
                        .expect("a detail reads back from its own JSON");
                    assert_eq!(again, d);
                    assert!(d.is_within(&d));
                    let _ = d.is_within(fixed());
                    let _ = fixed().is_within(&d);
                }
            }
            _ => {
                let Some((a, b)) = text.split_once('\n') else {
                    return;
                };
                let (Ok(x), Ok(y)) = (JsonNumber::parse(a), JsonNumber::parse(b)) else {
                    return;
                };
                assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
                assert_eq!(JsonNumber::parse(x.as_str()).map(|z| z.cmp(&x)), Ok(Ordering::Equal));
                if let (Some(i), Some(j)) = (integer(a), integer(b)) {
                    assert_eq!(x.cmp(&y), i.cmp(&j), "{a} {b}");
                }
                if let (Ok(f), Ok(g)) = (a.parse::<f64>(), b.parse::<f64>()) {
                    if f.is_finite() && g.is_finite() {
                        match f.partial_cmp(&g) {
                            Some(Ordering::Less) => assert_eq!(x.cmp(&y), Ordering::Less, "{a} {b}"),
                            Some(Ordering::Greater) => {
                                assert_eq!(x.cmp(&y), Ordering::Greater, "{a} {b}");
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
);
