//! The page's HTML. Every agent-controlled value goes through `render`; everything else is
//! this module's own text or escaped with `render::escape_html`. No inline script or style
//! (the CSP forbids both): one script and one style sheet under `/assets/`.

use std::fmt::Write as _;

use super::render::{self, escape_html, Rendered};
use super::requests::{DecideError, DecisionOutcome, RequestView, MAX_MINUTES};
use super::state::Session;
use super::WebError;

fn layout(base: &str, title: &str, session: Option<&Session>, script: bool, body: &str) -> String {
    let b = escape_html(base);
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · CADA approvals</title>\
         <link rel=\"stylesheet\" href=\"{b}/assets/style.css\">{}</head><body>\
         <header><span class=\"brand\">CADA approvals</span>",
        escape_html(title),
        if script {
            format!("<script src=\"{b}/assets/webauthn.js\" defer></script>")
        } else {
            String::new()
        }
    );
    if let Some(s) = session {
        let _ = write!(
            out,
            "<a href=\"{b}/\">Requests</a><a href=\"{b}/passkeys/add\">Add a passkey</a>\
             <form method=\"post\" action=\"{b}/signout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button id=\"signout\" type=\"submit\">Sign out</button></form>",
            escape_html(&s.csrf)
        );
    }
    out.push_str("</header><main>");
    if script {
        let _ = write!(out, "<input type=\"hidden\" id=\"base\" value=\"{b}\">");
    }
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

/// The sign-in and first-registration page.
#[must_use]
pub fn signin(base: &str, has_passkeys: bool, next: &str) -> String {
    let intro = if has_passkeys {
        "<p>Sign in with your passkey. To add another passkey, sign in first.</p>"
    } else {
        "<p>No passkey is registered yet. Type the one-time code that <code>cada-owner \
         serve</code> printed when it started, then register a passkey (your authenticator \
         will ask for its PIN or biometric).</p>"
    };
    let body = format!(
        "<h1>Sign in</h1>{intro}\
         <input type=\"hidden\" id=\"next\" value=\"{next}\">\
         <p><label for=\"code\">One-time code</label><br>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" spellcheck=\"false\" \
         placeholder=\"XXXX-XXXX-XXXX-XXXX-XXXX\"></p>\
         <p><button id=\"register\" type=\"button\">Register a passkey</button> \
         <button id=\"signin\" type=\"button\">Sign in with a passkey</button></p>\
         <p id=\"status\" class=\"status\" role=\"status\"></p>",
        next = escape_html(next)
    );
    layout(base, "Sign in", None, true, &body)
}

/// Adding a passkey while signed in: ask for a fresh code, then register with it.
#[must_use]
pub fn add_passkey(base: &str, session: &Session, code_sent: bool) -> String {
    let sent = if code_sent {
        "<p class=\"banner\">A new one-time code was printed where <code>cada-owner serve</code> \
         runs (its terminal or log). Type it below.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Add a passkey</h1>{sent}\
         <p>Registering another passkey needs this session and a fresh one-time code, printed \
         only where <code>cada-owner serve</code> runs: a stolen session alone cannot add one.</p>\
         <form method=\"post\" action=\"{b}/passkeys/code\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button id=\"new-code\" type=\"submit\">Print a new code</button></form>\
         <input type=\"hidden\" id=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" id=\"next\" value=\"/\">\
         <p><label for=\"code\">One-time code</label><br>\
         <input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" spellcheck=\"false\"></p>\
         <p><button id=\"register\" type=\"button\">Register a passkey</button></p>\
         <p id=\"status\" class=\"status\" role=\"status\"></p>",
        csrf = escape_html(&session.csrf),
        b = escape_html(base),
    );
    layout(base, "Add a passkey", Some(session), true, &body)
}

fn minutes_left(until: u64, now: u64) -> String {
    let s = until.saturating_sub(now);
    if s == 0 {
        "expired".into()
    } else if s < 60 {
        format!("{s} s left")
    } else {
        format!("{} min left", s / 60)
    }
}

/// Renders an inline value and its warnings.
fn inline(r: &Rendered) -> String {
    format!("{}{}", r.html, r.warnings_html())
}

/// The list of pending requests.
#[must_use]
pub fn list(base: &str, session: &Session, requests: &[RequestView], now: u64) -> String {
    let mut body = String::from("<h1>Pending requests</h1>");
    if requests.is_empty() {
        body.push_str("<p class=\"muted\">No request is waiting.</p>");
    }
    body.push_str(
        "<table id=\"requests\"><thead><tr><th>Tool</th><th>Agent</th><th>Server</th>\
         <th>Expires</th></tr></thead><tbody>",
    );
    for r in requests {
        let tool = render::name(&r.tool);
        let did = render::name(&r.agent_did);
        let server = render::name(&r.audience);
        let flagged = !(tool.warnings.is_empty() && server.warnings.is_empty());
        let _ = write!(
            body,
            "<tr><td><a class=\"request\" href=\"{b}/r/{id}\">{tool}</a>{flag}</td>\
             <td class=\"mono\">{did}</td><td class=\"mono\">{server}</td><td>{left}</td></tr>",
            id = escape_html(&r.id),
            tool = tool.html,
            flag = if flagged {
                " <span class=\"error\">⚠ check the warnings</span>"
            } else {
                ""
            },
            did = did.html,
            server = server.html,
            left = minutes_left(r.expires_at, now),
            b = escape_html(base),
        );
    }
    body.push_str("</tbody></table>");
    layout(base, "Requests", Some(session), false, &body)
}

/// One request, with the decision form when it is pending.
#[must_use]
pub fn request(base: &str, session: &Session, r: &RequestView, now: u64) -> String {
    let did = render::name(&r.agent_did);
    let platform = render::name(&r.platform);
    let measurement = render::name(&r.measurement);
    let contract = render::name(&r.contract);
    let summary = r.contract_summary.as_ref().map(render::json);
    let audience = render::name(&r.audience);
    let method = render::name(&r.method);
    let tool = render::name(&r.tool);
    let args = render::json(&r.arguments);
    let code = render::name(&r.refusal.code);
    let by = render::name(&r.refusal.by);
    let server = render::name(&r.refusal.server);
    let message = render::text(&r.refusal.message);
    let want = render::name(&r.want);
    let all = [
        &did,
        &platform,
        &measurement,
        &contract,
        &audience,
        &method,
        &tool,
        &args,
        &code,
        &by,
        &server,
        &message,
        &want,
    ];
    let warned = all.iter().any(|x| !x.warnings.is_empty())
        || summary.as_ref().is_some_and(|s| !s.warnings.is_empty());
    let mut body = String::from("<h1>Step-up request</h1>");
    if warned {
        body.push_str(
            "<p class=\"banner\" id=\"warning\" role=\"alert\">This request contains characters \
             that can disguise what it asks for (invisible, direction-changing, look-alike or \
             clipped). Read the warnings below before deciding.</p>",
        );
    }
    let _ = write!(
        body,
        "<dl class=\"request\">\
         <dt>Agent (enclave key)</dt><dd id=\"agent-did\" class=\"mono\">{did}</dd>\
         <dt>Image measurement</dt><dd id=\"measurement\" class=\"mono\">{platform}: {measurement}</dd>\
         <dt>Contract</dt><dd id=\"contract\" class=\"mono\">{contract}{summary}</dd>\
         <dt>Server</dt><dd id=\"audience\" class=\"mono\">{method} {audience}</dd>\
         <dt>Tool</dt><dd id=\"tool\" class=\"mono\">{tool}</dd>\
         <dt>Arguments</dt><dd><pre id=\"arguments\">{args}</pre>{args_w}</dd>\
         <dt>Refused</dt><dd id=\"refusal\"><code>{code}</code> by {by} at \
         <span class=\"mono\">{server}</span>{unverified}: {message}</dd>\
         <dt>Asked for</dt><dd id=\"want\">{want}</dd>\
         <dt>Status</dt><dd id=\"status\">{status}, {left}</dd></dl>",
        did = inline(&did),
        platform = inline(&platform),
        measurement = inline(&measurement),
        contract = inline(&contract),
        summary = summary
            .as_ref()
            .map(|s| format!("<pre>{}</pre>{}", s.html, s.warnings_html()))
            .unwrap_or_default(),
        method = inline(&method),
        audience = inline(&audience),
        tool = inline(&tool),
        args = args.html,
        args_w = args.warnings_html(),
        code = inline(&code),
        by = inline(&by),
        server = inline(&server),
        // An upstream's 401/403 is the server's own claim (`by: server`): say so.
        unverified = if r.refusal.by == "server" {
            " <strong id=\"unverified\">(the server's own claim: not verified by CADA)</strong>"
        } else {
            ""
        },
        message = inline(&message),
        want = inline(&want),
        status = r.status.as_str(),
        left = minutes_left(r.expires_at, now),
    );
    if r.status == super::RequestStatus::Pending {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{b}/r/{id}\" class=\"decide\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button id=\"approve-once\" type=\"submit\" name=\"action\" value=\"once\">Approve once</button>\
             <span><button id=\"approve-minutes\" type=\"submit\" name=\"action\" value=\"minutes\">Approve for</button> \
             <input id=\"minutes\" name=\"minutes\" type=\"number\" min=\"1\" max=\"{MAX_MINUTES}\" value=\"15\"> \
             <label for=\"minutes\">minutes</label></span>\
             <button id=\"deny\" type=\"submit\" name=\"action\" value=\"deny\">Deny</button></form>\
             <p class=\"muted\">Approve once: a grant for exactly this call, usable once. \
             Approve for N minutes: the same tool within the same argument limits, for N minutes. \
             The grant is signed with your owner key.</p>",
            id = escape_html(&r.id),
            csrf = escape_html(&session.csrf),
            b = escape_html(base),
        );
    }
    layout(base, "Request", Some(session), false, &body)
}

/// The page after a decision.
#[must_use]
pub fn result(
    base: &str,
    session: &Session,
    id: &str,
    outcome: &Result<DecisionOutcome, DecideError>,
) -> String {
    let body = match outcome {
        Ok(o) => format!(
            "<div id=\"result\" class=\"{status}\"><h1>{title}</h1><p>{msg}</p></div>",
            status = o.status.as_str(),
            title = match o.status {
                super::RequestStatus::Approved => "Approved",
                super::RequestStatus::Denied => "Denied",
                super::RequestStatus::Expired => "Expired",
                super::RequestStatus::Pending => "Still pending",
            },
            msg = escape_html(&o.message),
        ),
        Err(e) => format!(
            "<div id=\"result\" class=\"refused\"><h1>Not applied</h1>\
             <p><code id=\"error-code\">{}</code>: {}</p></div>",
            escape_html(&e.code),
            escape_html(&e.message)
        ),
    };
    let body = format!(
        "{body}<p><a href=\"{b}/r/{}\">The request</a> · <a href=\"{b}/\">All requests</a></p>",
        escape_html(id),
        b = escape_html(base),
    );
    layout(base, "Decision", Some(session), false, &body)
}

/// A refusal as a page naming its rule.
#[must_use]
pub fn error(base: &str, e: &WebError) -> String {
    let body = format!(
        "<h1>Refused</h1><p><code id=\"error-code\">{}</code></p><p id=\"error-message\">{}</p>\
         <p><a href=\"{b}/signin\">Sign in</a> · <a href=\"{b}/\">Requests</a></p>",
        e.code(),
        escape_html(&e.to_string()),
        b = escape_html(base),
    );
    layout(base, "Refused", None, false, &body)
}
