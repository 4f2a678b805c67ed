//! Safe rendering of what the agent controls (tool name, arguments, refusal, server): the
//! page shows these to the owner, who decides on them, so nothing in them may script the
//! page, hide a part of itself or pass for something else.
//!
//! - Every character is HTML-escaped (`&`, `<`, `>`, `"`, `'`).
//! - Characters that are invisible or change how the text around them is laid out — bidi
//!   controls (U+202A–202E, U+2066–2069, U+200E/F, U+061C), other format characters (zero
//!   width space, joiners, BOM, tags, …), control characters, unusual spaces, fillers,
//!   variation selectors, combining marks — are shown as a visible `\u{…}` escape in a
//!   marked span, and the value carries a warning.
//! - Any other non-ASCII character is shown highlighted, and the value carries a "contains
//!   non-ASCII characters" warning with its fully escaped form (look-alikes: a Cyrillic `а`
//!   in `trаnsfer` reads `tr\u{430}nsfer` there).
//! - Long values are clipped; the warning gives the full length and the SHA-256 of the whole
//!   value, so the owner can compare it with what the agent's side shows.

use std::fmt::Write as _;

use aws_lc_rs::digest;

/// Most characters of a name (tool, DID, server, code, argument name) shown.
pub const MAX_NAME_CHARS: usize = 200;
/// Most characters of one free-text value (a refusal message, one string argument) shown.
pub const MAX_VALUE_CHARS: usize = 1000;
/// Most characters of the whole rendered JSON (arguments, contract summary) shown.
pub const MAX_JSON_CHARS: usize = 16 * 1024;
/// Deepest JSON nesting shown; deeper parts are elided (and the value flagged clipped).
pub const MAX_JSON_DEPTH: usize = 32;
/// Most warnings listed for one value (the count of the rest is given).
pub const MAX_WARNINGS: usize = 16;

/// Something the owner must know about a value before trusting how it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// Invisible or layout-changing characters, shown as `\u{…}`.
    Hidden {
        /// Where (empty for the value itself, else a JSON pointer).
        at: String,
        /// How many.
        count: usize,
    },
    /// Non-ASCII characters that may look like ASCII ones.
    NonAscii {
        /// Where (empty for the value itself, else a JSON pointer).
        at: String,
        /// The value with every non-ASCII character (and `\`) escaped, clipped.
        escaped: String,
    },
    /// The value was longer than the page shows.
    Clipped {
        /// Where (empty for the value itself, else a JSON pointer).
        at: String,
        /// Its full length in bytes (UTF-8; for JSON, its compact serialization).
        total_bytes: usize,
        /// SHA-256 of those bytes, hex.
        sha256: String,
    },
    /// More warnings than listed.
    More {
        /// How many were not listed.
        count: usize,
    },
}

impl Warning {
    /// The warning as one escaped HTML sentence.
    #[must_use]
    pub fn to_html(&self) -> String {
        let at = |at: &str| {
            if at.is_empty() {
                String::new()
            } else {
                format!("<code>{}</code>: ", escape_html(at))
            }
        };
        match self {
            Self::Hidden { at: a, count } => format!(
                "{}contains {count} invisible or direction-changing character{}, shown as \
                 <span class=\"esc\">\\u{{…}}</span>: the text may not be what it seems",
                at(a),
                if *count == 1 { "" } else { "s" }
            ),
            Self::NonAscii { at: a, escaped } => format!(
                "{}contains non-ASCII characters (look-alikes possible); escaped: \
                 <code class=\"escaped\">{}</code>",
                at(a),
                escape_html(escaped)
            ),
            Self::Clipped {
                at: a,
                total_bytes,
                sha256,
            } => format!(
                "{}clipped: {total_bytes} bytes in full, SHA-256 <code>{sha256}</code>",
                at(a)
            ),
            Self::More { count } => format!("… and {count} more warnings"),
        }
    }
}

/// A value made safe to put in a page, with what the owner must be told about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Escaped HTML, to put inside an element (never inside an attribute).
    pub html: String,
    /// The warnings, in order of appearance.
    pub warnings: Vec<Warning>,
}

impl Rendered {
    /// The warnings as a list, or nothing when the value is clean.
    #[must_use]
    pub fn warnings_html(&self) -> String {
        if self.warnings.is_empty() {
            return String::new();
        }
        let mut out = String::from("<ul class=\"warnings\" role=\"alert\">");
        for w in &self.warnings {
            let _ = write!(out, "<li class=\"warning\">⚠ {}</li>", w.to_html());
        }
        out.push_str("</ul>");
        out
    }

    fn warn(&mut self, w: Warning) {
        match self.warnings.len() {
            n if n < MAX_WARNINGS => self.warnings.push(w),
            n if n == MAX_WARNINGS => self.warnings.push(Warning::More { count: 1 }),
            _ => {
                if let Some(Warning::More { count }) = self.warnings.last_mut() {
                    *count += 1;
                }
            }
        }
    }
}

/// HTML-escapes `s` for element content and quoted attribute values.
#[must_use]
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// True for the characters shown as `\u{…}`: invisible, format, bidi, control, unusual
/// spaces, fillers, variation selectors, combining marks, private use, noncharacters.
#[must_use]
pub fn is_hidden(c: char) -> bool {
    let u = u32::from(c);
    matches!(u,
        // C0, DEL, C1 controls
        0x00..=0x1F | 0x7F..=0x9F
        // soft hyphen, combining grapheme joiner, Arabic letter mark and other Cf
        | 0xAD | 0x34F | 0x61C | 0x600..=0x605 | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2
        // combining marks (they restyle the character before them)
        | 0x300..=0x36F | 0x483..=0x489 | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF
        | 0x20D0..=0x20FF | 0xFE20..=0xFE2F
        // Hangul fillers, Khmer invisible vowels, Mongolian selectors and vowel separator
        | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F | 0x3164 | 0xFFA0
        // unusual spaces
        | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
        // zero width space, ZWNJ, ZWJ, LRM, RLM; bidi embeddings and overrides
        | 0x200B..=0x200F | 0x202A..=0x202E
        // word joiner, invisible operators, bidi isolates, deprecated format characters
        | 0x2060..=0x206F
        // braille blank (renders as a space)
        | 0x2800
        // private use, variation selectors, BOM, interlinear annotations, replacement marks
        | 0xE000..=0xF8FF | 0xFE00..=0xFE0F | 0xFEFF | 0xFFF0..=0xFFFB
        // noncharacters
        | 0xFDD0..=0xFDEF
        // supplementary format characters, tags, variation selectors, private use planes
        | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF | 0xF0000..=0x10FFFF
    ) || (u & 0xFFFE) == 0xFFFE
}

/// The escaped form: ASCII printable characters as they are (`\` doubled), everything else
/// as `\u{…}`, at most `max` characters of the input.
#[must_use]
pub fn escaped_form(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
        }
    }
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in d.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Counts of what one run of characters held.
#[derive(Default)]
struct Seen {
    hidden: usize,
    non_ascii: bool,
}

/// Emits one character of agent-controlled text; `json` escapes `"` and `\` the JSON way.
fn push_char(out: &mut String, c: char, json: bool, seen: &mut Seen) {
    if json {
        match c {
            '"' => return out.push_str("\\&quot;"),
            '\\' => return out.push_str("\\\\"),
            '\n' => return out.push_str("\\n"),
            '\r' => return out.push_str("\\r"),
            '\t' => return out.push_str("\\t"),
            _ => {}
        }
    }
    if is_hidden(c) {
        seen.hidden += 1;
        let _ = write!(
            out,
            "<span class=\"esc\" title=\"hidden character\">\\u{{{:x}}}</span>",
            u32::from(c)
        );
    } else if c.is_ascii() {
        push_escaped(out, c);
    } else {
        seen.non_ascii = true;
        out.push_str("<mark class=\"nonascii\">");
        out.push(c);
        out.push_str("</mark>");
    }
}

/// Renders one run of text (`json`: as the inside of a JSON string), clipped at `max`
/// characters, recording its warnings under `at`.
fn run(out: &mut Rendered, at: &str, s: &str, max: usize, json: bool) {
    let mut seen = Seen::default();
    let mut clipped = false;
    for (i, c) in s.chars().enumerate() {
        if i == max {
            clipped = true;
            break;
        }
        push_char(&mut out.html, c, json, &mut seen);
    }
    if clipped {
        out.html.push_str("<span class=\"clip\">…</span>");
    }
    if seen.hidden > 0 {
        out.warn(Warning::Hidden {
            at: at.to_owned(),
            count: seen.hidden,
        });
    }
    if seen.non_ascii {
        out.warn(Warning::NonAscii {
            at: at.to_owned(),
            escaped: escaped_form(s, max),
        });
    }
    if clipped {
        out.warn(Warning::Clipped {
            at: at.to_owned(),
            total_bytes: s.len(),
            sha256: sha256_hex(s.as_bytes()),
        });
    }
}

/// A name the owner recognises things by: a tool, a DID, a server URL, a code.
#[must_use]
pub fn name(s: &str) -> Rendered {
    let mut out = Rendered::default();
    run(&mut out, "", s, MAX_NAME_CHARS, false);
    out
}

/// Free text: a refusal message.
#[must_use]
pub fn text(s: &str) -> Rendered {
    let mut out = Rendered::default();
    run(&mut out, "", s, MAX_VALUE_CHARS, false);
    out
}

/// A JSON value (the arguments, a contract summary), pretty-printed: every key is rendered
/// as a name, every string as a value, the whole clipped at [`MAX_JSON_CHARS`].
#[must_use]
pub fn json(v: &serde_json::Value) -> Rendered {
    let mut out = Rendered::default();
    let mut budget_hit = false;
    json_into(&mut out, v, 0, "", &mut budget_hit);
    if budget_hit {
        out.html
            .push_str("\n<span class=\"clip\">… (clipped)</span>");
        let whole = serde_json::to_vec(v).unwrap_or_default();
        out.warn(Warning::Clipped {
            at: String::new(),
            total_bytes: whole.len(),
            sha256: sha256_hex(&whole),
        });
    }
    out
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn pointer(at: &str, key: &str) -> String {
    let mut p = String::with_capacity(at.len() + key.len() + 1);
    p.push_str(at);
    p.push('/');
    p.push_str(&escaped_form(key, 64).replace('~', "~0").replace('/', "~1"));
    p
}

fn json_into(
    out: &mut Rendered,
    v: &serde_json::Value,
    depth: usize,
    at: &str,
    budget_hit: &mut bool,
) {
    use serde_json::Value;
    if *budget_hit {
        return;
    }
    if out.html.len() > MAX_JSON_CHARS {
        *budget_hit = true;
        return;
    }
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => {
            // serde_json prints these in ASCII without markup-significant characters.
            out.html.push_str(&v.to_string());
        }
        Value::String(s) => {
            out.html.push('"');
            run(out, at, s, MAX_VALUE_CHARS, true);
            out.html.push('"');
        }
        Value::Array(_) | Value::Object(_) if depth >= MAX_JSON_DEPTH => {
            out.html.push_str(if v.is_array() { "[…]" } else { "{…}" });
            *budget_hit = true;
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.html.push_str("[]");
                return;
            }
            out.html.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                indent(&mut out.html, depth + 1);
                json_into(out, item, depth + 1, &format!("{at}/{i}"), budget_hit);
                if *budget_hit {
                    return;
                }
                out.html
                    .push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            indent(&mut out.html, depth);
            out.html.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.html.push_str("{}");
                return;
            }
            out.html.push_str("{\n");
            for (i, (k, item)) in map.iter().enumerate() {
                indent(&mut out.html, depth + 1);
                let here = pointer(at, k);
                out.html.push_str("<span class=\"key\">\"");
                run(out, &here, k, MAX_NAME_CHARS, true);
                out.html.push_str("\"</span>: ");
                json_into(out, item, depth + 1, &here, budget_hit);
                if *budget_hit {
                    return;
                }
                out.html
                    .push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            indent(&mut out.html, depth);
            out.html.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_markup_from_input(html: &str) {
        // Only the renderer's own tags may appear.
        let stripped = html
            .replace("<span class=\"esc\" title=\"hidden character\">", "")
            .replace("<mark class=\"nonascii\">", "")
            .replace("</mark>", "")
            .replace("<span class=\"key\">", "")
            .replace("<span class=\"clip\">", "")
            .replace("</span>", "");
        assert!(!stripped.contains('<'), "markup leaked: {html}");
        assert!(!stripped.contains('>'), "markup leaked: {html}");
    }

    #[test]
    fn script_tags_are_escaped() {
        let r = name("<script>alert(1)</script>");
        assert_eq!(r.html, "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn attribute_breakout_is_escaped() {
        let r = text("\"><img src=x onerror=alert(1)>");
        assert_eq!(r.html, "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;");
        let r = text("' onmouseover='x");
        assert_eq!(r.html, "&#39; onmouseover=&#39;x");
        no_markup_from_input(&r.html);
    }

    #[test]
    fn right_to_left_override_is_shown_and_warned() {
        // "transfer" that displays as something else with U+202E.
        let r = name("safe\u{202E}gnp.exe");
        assert_eq!(
            r.html,
            "safe<span class=\"esc\" title=\"hidden character\">\\u{202e}</span>gnp.exe"
        );
        assert!(!r.html.contains('\u{202E}'));
        assert_eq!(
            r.warnings,
            vec![Warning::Hidden {
                at: String::new(),
                count: 1
            }]
        );
    }

    #[test]
    fn bidi_isolates_and_marks_are_shown() {
        for c in [
            '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
        ] {
            let r = name(&format!("a{c}b"));
            assert!(!r.html.contains(c), "{:x} passed through", u32::from(c));
            assert!(r.html.contains(&format!("\\u{{{:x}}}", u32::from(c))));
            assert_eq!(r.warnings.len(), 1);
        }
    }

    #[test]
    fn zero_width_characters_are_shown() {
        let r = name("tr\u{200D}ans\u{200B}fer\u{FEFF}\u{2060}");
        assert_eq!(
            r.html.matches("class=\"esc\"").count(),
            4,
            "ZWJ, ZWSP, BOM, WJ: {}",
            r.html
        );
        assert_eq!(
            r.warnings,
            vec![Warning::Hidden {
                at: String::new(),
                count: 4
            }]
        );
        for c in ['\u{200D}', '\u{200B}', '\u{FEFF}', '\u{2060}'] {
            assert!(!r.html.contains(c));
        }
    }

    #[test]
    fn tag_characters_and_controls_are_shown() {
        let r = text("ok\u{E0041}\u{E0042}\u{0007}\u{0085}\u{00A0}");
        assert_eq!(r.html.matches("class=\"esc\"").count(), 5, "{}", r.html);
    }

    #[test]
    fn cyrillic_look_alikes_are_flagged_with_the_escaped_form() {
        // "trаnsfer" with U+0430 CYRILLIC SMALL LETTER A.
        let r = name("tr\u{430}nsfer");
        assert_eq!(
            r.html, "tr<mark class=\"nonascii\">\u{430}</mark>nsfer",
            "highlighted"
        );
        assert_eq!(
            r.warnings,
            vec![Warning::NonAscii {
                at: String::new(),
                escaped: "tr\\u{430}nsfer".into()
            }]
        );
        assert!(r.warnings_html().contains("non-ASCII"));
        assert!(r.warnings_html().contains("tr\\u{430}nsfer"));
    }

    #[test]
    fn a_literal_escape_is_not_confused_with_a_real_one() {
        let r = name("a\\u{202e}b");
        assert!(r.warnings.is_empty());
        assert!(!r.html.contains("class=\"esc\""));
        assert_eq!(escaped_form("a\\u{202e}b", 64), "a\\\\u{202e}b");
    }

    #[test]
    fn a_megabyte_value_is_clipped_with_its_digest() {
        let big = "A".repeat(1 << 20);
        let r = text(&big);
        assert!(r.html.len() < MAX_VALUE_CHARS + 100, "{}", r.html.len());
        assert!(r.html.ends_with("<span class=\"clip\">…</span>"));
        assert_eq!(
            r.warnings,
            vec![Warning::Clipped {
                at: String::new(),
                total_bytes: 1 << 20,
                sha256: sha256_hex(big.as_bytes())
            }]
        );
        // And the digest is the real one: compare with an independent computation.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hostile_arguments_render_as_inert_pretty_json() {
        let args = json!({
            "to": "\u{430}lice",
            "memo": "<script>alert(1)</script>",
            "x\"><img onerror=alert(1)>": "\u{2066}evil\u{2069}",
            "amount": 500,
            "nested": {"list": [true, null, "\u{200D}"]}
        });
        let r = json(&args);
        no_markup_from_input(&r.html);
        assert!(r.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(r.html.contains("x\\&quot;&gt;&lt;img onerror=alert(1)&gt;"));
        assert!(r.html.contains("\"amount\"</span>: 500"));
        for c in ['\u{2066}', '\u{2069}', '\u{200D}'] {
            assert!(!r.html.contains(c));
        }
        assert!(r.warnings.contains(&Warning::NonAscii {
            at: "/to".into(),
            escaped: "\\u{430}lice".into()
        }));
        assert!(r.warnings.contains(&Warning::Hidden {
            at: "/nested/list/2".into(),
            count: 1
        }));
        assert!(r.warnings.contains(&Warning::Hidden {
            at: "/x\"><img onerror=alert(1)>".into(),
            count: 2
        }));
        // The warnings escape the pointer too.
        let w = r.warnings_html();
        assert!(!w.contains("<img"), "{w}");
    }

    #[test]
    fn a_megabyte_argument_is_clipped_and_the_page_stays_small() {
        let args = json!({"blob": "B".repeat(1 << 20), "more": vec!["x"; 20000]});
        let r = json(&args);
        assert!(
            r.html.len() < MAX_JSON_CHARS + 2 * MAX_VALUE_CHARS,
            "{}",
            r.html.len()
        );
        assert!(r.warnings.iter().any(|w| matches!(w,
            Warning::Clipped { at, total_bytes, .. } if at == "/blob" && *total_bytes == 1 << 20)));
        assert!(r.warnings.iter().any(|w| matches!(w,
            Warning::Clipped { at, .. } if at.is_empty())));
    }

    #[test]
    fn deep_nesting_is_elided() {
        let mut v = json!("leaf");
        for _ in 0..100 {
            v = json!([v]);
        }
        let r = json(&v);
        assert!(r.html.contains("[…]"));
        assert!(r.html.len() < 10_000);
    }

    #[test]
    fn warnings_are_capped() {
        let map: serde_json::Map<String, serde_json::Value> = (0..100)
            .map(|i| (format!("k{i}"), json!("\u{202E}")))
            .collect();
        let r = json(&serde_json::Value::Object(map));
        assert_eq!(r.warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(r.warnings.last(), Some(&Warning::More { count: 84 }));
    }

    #[test]
    fn ordinary_names_are_unchanged() {
        let r = name("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK");
        assert_eq!(
            r.html,
            "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
        );
        assert!(r.warnings.is_empty());
        assert_eq!(r.warnings_html(), "");
    }
}
