//! RFC 9728 protected resource metadata, served at
//! `/.well-known/oauth-protected-resource[/<path>]`: the resource (the public URL of
//! `<path>`), the authorization servers (the `cada-sts` issuers, when configured), that
//! access tokens must be DPoP-bound and which proof algorithms are accepted, and CADA's
//! own requirements (attestation evidence, body binding) so a client knows what to send.
use serde_json::{json, Value};

/// Where RFC 9728 puts the metadata (inserted between host and path).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata URL for the resource at `path` under `base`.
pub fn metadata_url(base: &str, path: &str) -> String {
    let path = if path == "/" { "" } else { path };
    format!("{base}{WELL_KNOWN}{path}")
}

/// The metadata document for the resource `base` + `path`.
pub fn document(
    base: &str,
    path: &str,
    authorization_servers: &[String],
    require_body_digest: bool,
    require_nonce: bool,
) -> Value {
    let path = if path == "/" { "" } else { path };
    let mut doc = json!({
        "resource": format!("{base}{path}"),
        "bearer_methods_supported": ["header"],
        "dpop_bound_access_tokens_required": true,
        "dpop_signing_alg_values_supported": ["EdDSA", "ES256", "ES384"],
        // CADA: proofs come from an attested key; evidence travels in CADA-Evidence once
        // (a 401 with error="use_attestation" asks for it), the owner's contract in
        // CADA-Contract once.
        "cada_attestation_required": true,
        "cada_evidence_header": "CADA-Evidence",
        "cada_contract_header": "CADA-Contract",
        "cada_body_digest_required": require_body_digest,
        "cada_dpop_nonce_required": require_nonce,
    });
    if !authorization_servers.is_empty() {
        doc["authorization_servers"] = json!(authorization_servers);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_document() {
        assert_eq!(
            metadata_url("https://g.example", "/mcp"),
            "https://g.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://g.example", "/"),
            "https://g.example/.well-known/oauth-protected-resource"
        );
        let d = document(
            "https://g.example",
            "/mcp",
            &["https://sts.example".into()],
            true,
            false,
        );
        assert_eq!(d["resource"], "https://g.example/mcp");
        assert_eq!(d["authorization_servers"][0], "https://sts.example");
        assert_eq!(d["dpop_bound_access_tokens_required"], true);
        assert!(document("https://g.example", "/", &[], false, false)
            .get("authorization_servers")
            .is_none());
    }
}
