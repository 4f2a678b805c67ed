// The approval page's only script (served from /assets/webauthn.js; the CSP forbids inline
// scripts): registers a passkey with the one-time code and signs in with it, through
// navigator.credentials.create/get. The server checks everything; this only moves bytes,
// converting between ArrayBuffers and base64url.
"use strict";
(function () {
  function b64urlToBuf(s) {
    var b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }
  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function field(id) {
    var el = document.getElementById(id);
    return el ? el.value : "";
  }
  function status(msg, bad) {
    var el = document.getElementById("status");
    if (el) {
      el.textContent = msg;
      el.className = bad ? "status error" : "status";
    }
  }
  async function post(path, body) {
    // The public URL's path, when a proxy serves the page below one (#base, "" at the root).
    var r = await fetch(field("base") + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store"
    });
    var j;
    try { j = await r.json(); } catch (e) { j = { code: "web.request", message: "HTTP " + r.status }; }
    if (!r.ok) { throw new Error((j.code || "error") + ": " + (j.message || "HTTP " + r.status)); }
    return j;
  }
  async function register() {
    status("Checking the code…");
    var opts = await post("/webauthn/register/options", { code: field("code"), csrf: field("csrf") });
    var pk = opts.publicKey;
    pk.challenge = b64urlToBuf(pk.challenge);
    pk.user.id = b64urlToBuf(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    status("Confirm on your authenticator…");
    var cred = await navigator.credentials.create({ publicKey: pk });
    var res = await post("/webauthn/register", {
      csrf: field("csrf"),
      next: field("next"),
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      response: {
        clientDataJSON: bufToB64url(cred.response.clientDataJSON),
        attestationObject: bufToB64url(cred.response.attestationObject)
      }
    });
    status("Passkey registered.");
    window.location.assign(res.next);
  }
  async function signin() {
    status("Asking for a challenge…");
    var opts = await post("/webauthn/signin/options", {});
    var pk = opts.publicKey;
    pk.challenge = b64urlToBuf(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = b64urlToBuf(c.id); });
    status("Confirm on your authenticator…");
    var cred = await navigator.credentials.get({ publicKey: pk });
    var res = await post("/webauthn/signin", {
      next: field("next"),
      id: cred.id,
      rawId: bufToB64url(cred.rawId),
      type: cred.type,
      response: {
        clientDataJSON: bufToB64url(cred.response.clientDataJSON),
        authenticatorData: bufToB64url(cred.response.authenticatorData),
        signature: bufToB64url(cred.response.signature),
        userHandle: cred.response.userHandle ? bufToB64url(cred.response.userHandle) : null
      }
    });
    status("Signed in.");
    window.location.assign(res.next);
  }
  function wire(id, action) {
    var el = document.getElementById(id);
    if (!el) { return; }
    el.addEventListener("click", function (ev) {
      ev.preventDefault();
      if (!window.PublicKeyCredential) {
        status("This browser does not support passkeys (WebAuthn).", true);
        return;
      }
      el.disabled = true;
      action().catch(function (err) {
        status(err && err.message ? err.message : String(err), true);
      }).finally(function () { el.disabled = false; });
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    wire("register", register);
    wire("signin", signin);
  });
})();
