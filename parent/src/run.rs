//! `cada-parent run --env-file .env.cada -- <agent command>`: starts an agent that holds no
//! secret. Its environment gets base URLs that point at the local secrets endpoint of
//! `cada-parent proxy` (`http://127.0.0.1:PORT/<secret>`) and placeholders (`cada:<secret>`)
//! where SDKs insist on a token string; the enclave adds the real credential on its own TLS
//! connection to the upstream.
//!
//! # The `.env.cada` format
//!
//! A template, not a secrets file: one `NAME=VALUE` per line, UTF-8, at most
//! [`MAX_ENV_FILE`] bytes and [`MAX_VARS`] variables.
//!
//! * `NAME` is `[A-Za-z_][A-Za-z0-9_]*`; each at most once. Blank lines and lines starting
//!   with `#` are ignored. No `export`, no multi-line values, no escapes, no `${…}` expansion.
//! * `VALUE` runs to the end of the line; one pair of surrounding `"` or `'` is removed.
//! * In a value, three templates are replaced (`NAME` is a secret name,
//!   `[a-z0-9][a-z0-9_-]{0,63}`):
//!   - `{{cada.url:NAME}}` → `http://127.0.0.1:PORT/NAME`, the secret's base URL at the
//!     endpoint (a request to `…/NAME/repos/acme/app` goes to the secret's upstream with the
//!     path `/repos/acme/app`);
//!   - `{{cada.placeholder:NAME}}` → `cada:NAME` (a literal `cada:NAME` is fine too);
//!   - `{{cada.proxy}}` → `http://127.0.0.1:PORT`.
//!
//!   Any other `{{…}}` is refused (`run.env_template`).
//!
//! ```text
//! # .env.cada for an agent using GitHub and Linear
//! GITHUB_API_URL={{cada.url:github}}
//! GITHUB_TOKEN={{cada.placeholder:github}}
//! LINEAR_API_URL={{cada.url:linear}}/graphql
//! LINEAR_API_KEY=cada:linear
//! ```
//!
//! # What is refused (`run.secret_in_env_file`)
//!
//! A file that tries to carry a real secret, line by line:
//!
//! * a variable whose name says it holds a credential (a `_`-separated word `TOKEN`,
//!   `SECRET`, `PASSWORD`, `PASSWD`, `PASS`, `PASSPHRASE`, `BEARER`, `JWT`, `DSN`, `KEY`,
//!   `APIKEY`, `CREDENTIAL(S)`, `PAT`, `PRIVATE`, `AUTH`, `AUTHORIZATION`, `COOKIE`,
//!   `SESSION`) with any value other than empty, a
//!   placeholder, or a value built on a `{{cada.url:…}}`/`{{cada.proxy}}` template — set such
//!   a variable in the environment instead if it really is no secret;
//! * any value that holds a well-known credential format (`ghp_`, `github_pat_`, `glpat-`,
//!   `xox?-`, `sk_live_`, `sk-`, `AKIA…`, `AIza…`, `ya29.`, a JWT `eyJ…`, a PEM block, …),
//!   a URL with a password (`https://user:pass@…`), or a run of 32 or more token characters
//!   mixing upper case, lower case and digits (how random keys look; hex digests and UUIDs
//!   do not).
//!
//! The caller's environment passes through, except what would let the agent act as the host
//! (adversary22 finding 10, [`inherited_env`]): every `CADA_*` variable (`CADA_SOCKET`, the
//! daemon's socket, above all), every variable whose name contains `OWNER_KEY`, and every
//! variable whose value names an owner key file (`owner-key`, `.cada-owner`). With
//! `--clear-env` only `PATH`, `HOME`, `USER`, `LOGNAME`, `SHELL`, `LANG`, `LC_*`, `TERM`,
//! `TZ` and `TMPDIR` pass. The file's variables override them and are always set (a
//! `CADA_*` the file names on purpose included). `CADA_PROXY` is set to the endpoint's base
//! URL: the only CADA variable the agent needs.
//!
//! # Another uid for the agent
//!
//! Whoever reaches the daemon's socket (mode 0600, the daemon's uid) acts as the host: it can
//! call secrets without the endpoint's audit and placeholder checks, open sealed data and
//! install contracts. Run the agent as another uid than the daemon: `--user NAME|UID`
//! (when `run` runs as root) starts it with that uid, its primary group and no
//! supplementary groups, `HOME`, `USER` and `LOGNAME` set to that user's; the endpoint `run`
//! starts stays with the caller. Without root, `--user` naming another uid is refused
//! (`run.user`).
//!
//! # The endpoint, signals, exit status
//!
//! With `--proxy URL` the agent uses an endpoint already running (`cada-parent proxy`,
//! http on loopback). Without it, `run` starts one for the agent's lifetime
//! (`cada-parent proxy --listen 127.0.0.1:0 --secret NAME …` for every secret its templates
//! name, through the daemon at `--socket`, auditing into `--audit-dir`) and stops it when
//! the agent exits. SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 and SIGWINCH are
//! forwarded to the agent; SIGINT and SIGQUIT too, unless `run` is in the terminal's
//! foreground process group (the terminal then signalled the agent itself). `run` exits with
//! the agent's status, or 128 + the signal that ended it.
//!
//! # After an enclave restart
//!
//! A restarted enclave has a new key and no secrets: the owner seals them again to the new
//! evidence and installs them (`cada-owner seal …` then `cada-parent secret install …`, see
//! docs/secrets.md); the agent and its `.env.cada` stay as they are.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Largest `.env.cada` file read (bytes).
pub const MAX_ENV_FILE: u64 = 64 * 1024;
/// Most variables in one `.env.cada`.
pub const MAX_VARS: usize = 512;
/// Longest variable name.
const MAX_NAME: usize = 128;

/// Stable codes of `run`'s refusals.
pub mod codes {
    /// The env file cannot be read (missing, not a regular file, too large, not UTF-8).
    pub const ENV_FILE: &str = "run.env_file";
    /// A line is not `NAME=VALUE`, or a name repeats.
    pub const ENV_SYNTAX: &str = "run.env_syntax";
    /// An unknown `{{…}}` template or a bad secret name in one.
    pub const ENV_TEMPLATE: &str = "run.env_template";
    /// The file tries to carry a real secret.
    pub const SECRET_IN_ENV_FILE: &str = "run.secret_in_env_file";
    /// The endpoint (`--proxy`, or the one `run` starts) is unusable.
    pub const PROXY: &str = "run.proxy";
    /// The agent could not be started.
    pub const SPAWN: &str = "run.spawn";
    /// `--user` names an unknown user, or another uid without root.
    pub const USER: &str = "run.user";
}

/// A refusal of `run`, with its stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError {
    /// One of [`codes`].
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

fn err(code: &'static str, message: impl Into<String>) -> RunError {
    RunError {
        code,
        message: message.into(),
    }
}

/// `cada-parent run`'s options.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The agent's environment template: NAME=VALUE lines with {{cada.url:NAME}},
    /// {{cada.placeholder:NAME}} and {{cada.proxy}} templates, never a secret.
    #[arg(long, default_value = ".env.cada", value_name = "FILE")]
    pub env_file: PathBuf,
    /// A running secrets endpoint to use (`http://127.0.0.1:PORT` of `cada-parent proxy
    /// --secret NAME …`); without it, `run` starts one for the agent's lifetime.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// The daemon's unix socket for the endpoint `run` starts [default: as `cada-parent
    /// proxy`].
    #[arg(long, env = "CADA_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// For the endpoint `run` starts: audit every secret call into this directory (as
    /// `cada-parent proxy --audit-dir`).
    #[arg(long, value_name = "DIR", conflicts_with = "proxy")]
    pub audit_dir: Option<PathBuf>,
    /// Check the env file and print the agent's variables (placeholders, no secret can be
    /// among them) instead of running the agent.
    #[arg(long)]
    pub check: bool,
    /// Run the agent as this user (name or numeric uid), with its primary group and no
    /// supplementary groups: another uid than the daemon's, so that the agent cannot reach
    /// the daemon's socket. Needs root unless it is the caller's own uid.
    #[arg(long, value_name = "USER|UID")]
    pub user: Option<String>,
    /// Pass only PATH, HOME, USER, LOGNAME, SHELL, LANG, LC_*, TERM, TZ and TMPDIR of the
    /// caller's environment (besides the env file's variables).
    #[arg(long)]
    pub clear_env: bool,
    /// The agent command and its arguments (after `--`).
    #[arg(last = true, required_unless_present = "check", value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// One template piece of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Url(String),
    Placeholder(String),
    Proxy,
}

/// One variable of the env file, its value still a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// The variable's name.
    pub name: String,
    line: usize,
    pieces: Vec<Piece>,
}

impl Var {
    /// The value with the endpoint's base URL (`http://127.0.0.1:PORT`, no trailing `/`).
    pub fn expand(&self, base: &str) -> String {
        let mut s = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => s.push_str(t),
                Piece::Url(n) => {
                    s.push_str(base);
                    s.push('/');
                    s.push_str(n);
                }
                Piece::Placeholder(n) => {
                    s.push_str(crate::placeholder::PREFIX);
                    s.push_str(n);
                }
                Piece::Proxy => s.push_str(base),
            }
        }
        s
    }

    /// The secret names the value refers to.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Url(n) | Piece::Placeholder(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

fn valid_secret_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_var_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Splits a value into text and templates.
fn pieces(value: &str, line: usize) -> Result<Vec<Piece>, RunError> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find("{{") {
        if i > 0 {
            out.push(Piece::Text(rest[..i].to_owned()));
        }
        let after = &rest[i + 2..];
        let end = after.find("}}").ok_or_else(|| {
            err(
                codes::ENV_TEMPLATE,
                format!("line {line}: a '{{{{' without its '}}}}'"),
            )
        })?;
        let t = after[..end].trim();
        let piece = if t == "cada.proxy" {
            Piece::Proxy
        } else if let Some(n) = t.strip_prefix("cada.url:") {
            Piece::Url(n.to_owned())
        } else if let Some(n) = t.strip_prefix("cada.placeholder:") {
            Piece::Placeholder(n.to_owned())
        } else {
            return Err(err(
                codes::ENV_TEMPLATE,
                format!(
                    "line {line}: unknown template {{{{{}}}}}; use {{{{cada.url:NAME}}}}, \
                     {{{{cada.placeholder:NAME}}}} or {{{{cada.proxy}}}}",
                    clip(t)
                ),
            ));
        };
        if let Piece::Url(n) | Piece::Placeholder(n) = &piece {
            if !valid_secret_name(n) {
                return Err(err(
                    codes::ENV_TEMPLATE,
                    format!(
                        "line {line}: {:?} is not a secret name (1–64 of a-z, 0-9, '_', '-', \
                         starting with a letter or digit)",
                        clip(n)
                    ),
                ));
            }
        }
        out.push(piece);
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_owned()));
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(40)
        .collect()
}

/// Words of a variable name that say it holds a credential.
const CREDENTIAL_WORDS: [&str; 19] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PASSPHRASE",
    "BEARER",
    "JWT",
    "DSN",
    "KEY",
    "APIKEY",
    "CREDENTIAL",
    "CREDENTIALS",
    "PAT",
    "PRIVATE",
    "AUTH",
    "AUTHORIZATION",
    "COOKIE",
    "SESSION",
];

/// Prefixes of well-known credential formats (matched at the start of a token).
const CREDENTIAL_PREFIXES: [&str; 30] = [
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxe-",
    "xapp-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "whsec_",
    "sk-",
    "lin_api_",
    "npm_",
    "pypi-",
    "hf_",
    "dop_v1_",
    "shpat_",
    "shpss_",
    "ya29.",
    "AIza",
    "eyJ",
    "-----BEGIN",
];

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.+/=~".contains(c)
}

/// Why `text` (the literal parts of a value) looks like a real secret, if it does.
fn secret_like(text: &str) -> Option<String> {
    if text.contains("-----BEGIN") {
        return Some("a PEM block".into());
    }
    // URL userinfo with a password.
    if let Some(i) = text.find("://") {
        let auth = text[i + 3..].split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = auth.rsplit_once('@') {
            if userinfo.contains(':') {
                return Some("a URL with a password".into());
            }
        }
    }
    for tok in text.split(|c: char| !is_token_char(c)) {
        if tok.is_empty() {
            continue;
        }
        if let Some(p) = CREDENTIAL_PREFIXES
            .iter()
            .find(|p| tok.starts_with(**p) && tok.len() >= p.len() + 8)
        {
            return Some(format!("a credential in the {p}… format"));
        }
        let aws = (tok.starts_with("AKIA") || tok.starts_with("ASIA"))
            && tok.len() == 20
            && tok
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if aws {
            return Some("an AWS access key id".into());
        }
        // Runs of token characters: random keys mix cases and digits.
        for run in tok.split(['.', '/', '=', '~']) {
            let long = run.len() >= 32;
            let upper = run.bytes().any(|b| b.is_ascii_uppercase());
            let lower = run.bytes().any(|b| b.is_ascii_lowercase());
            let digit = run.bytes().any(|b| b.is_ascii_digit());
            if long && upper && lower && digit {
                return Some("a long random-looking string".into());
            }
        }
    }
    None
}

fn credential_name(name: &str) -> bool {
    name.to_ascii_uppercase()
        .split('_')
        .any(|w| CREDENTIAL_WORDS.contains(&w))
}

/// The refusal of a variable that carries (or would carry) a real secret, if it does.
fn check_secret(var: &Var) -> Result<(), RunError> {
    let text: String = var
        .pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ");
    let refuse = |why: String| {
        err(
            codes::SECRET_IN_ENV_FILE,
            format!(
                "line {}: {} holds {why}; .env.cada is a template and never holds a secret: \
                 seal the secret to the enclave (cada-owner seal) and write \
                 {}={{{{cada.placeholder:NAME}}}} (or {{{{cada.url:NAME}}}} for its base URL)",
                var.line, var.name, var.name
            ),
        )
    };
    if let Some(why) = secret_like(&text) {
        return Err(refuse(why));
    }
    if credential_name(&var.name) {
        let literal_placeholder = text.trim().strip_prefix(crate::placeholder::PREFIX);
        let only_placeholder = var.pieces.len() == 1
            && matches!(var.pieces[0], Piece::Placeholder(_))
            || literal_placeholder.is_some_and(valid_secret_name) && var.pieces.len() == 1;
        let url = var
            .pieces
            .iter()
            .any(|p| matches!(p, Piece::Url(_) | Piece::Proxy));
        if !(var.pieces.is_empty() || only_placeholder || url) {
            return Err(refuse(
                "a value, and its name says it is a credential".to_owned(),
            ));
        }
    }
    Ok(())
}

/// Parses and checks an env file's text (see the module docs).
pub fn parse_env(text: &str) -> Result<Vec<Var>, RunError> {
    let mut vars: Vec<Var> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if raw.contains('\r') && !raw.ends_with('\r') || raw.contains('\0') {
            return Err(err(
                codes::ENV_SYNTAX,
                format!("line {line}: control characters"),
            ));
        }
        let (name, value) = l.split_once('=').ok_or_else(|| {
            err(
                codes::ENV_SYNTAX,
                format!("line {line}: expected NAME=VALUE"),
            )
        })?;
        let name = name.trim();
        if !valid_var_name(name) {
            return Err(err(
                codes::ENV_SYNTAX,
                format!(
                    "line {line}: {:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*; no \
                     'export')",
                    clip(name)
                ),
            ));
        }
        if vars.iter().any(|v| v.name == name) {
            return Err(err(
                codes::ENV_SYNTAX,
                format!("line {line}: {name} is set twice"),
            ));
        }
        if vars.len() >= MAX_VARS {
            return Err(err(
                codes::ENV_SYNTAX,
                format!("more than {MAX_VARS} variables"),
            ));
        }
        let mut value = value.trim();
        for q in ['"', '\''] {
            if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
                value = &value[1..value.len() - 1];
                break;
            }
        }
        let var = Var {
            name: name.to_owned(),
            line,
            pieces: pieces(value, line)?,
        };
        check_secret(&var)?;
        vars.push(var);
    }
    Ok(vars)
}

/// Reads and checks the env file at `path`.
pub fn read_env_file(path: &Path) -> Result<Vec<Var>, RunError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        err(
            codes::ENV_FILE,
            format!("{}: {e} (give --env-file FILE)", path.display()),
        )
    })?;
    if !meta.is_file() || meta.len() > MAX_ENV_FILE {
        return Err(err(
            codes::ENV_FILE,
            format!(
                "{}: expected a regular file of at most {MAX_ENV_FILE} bytes",
                path.display()
            ),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| err(codes::ENV_FILE, format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| err(codes::ENV_FILE, format!("{}: not UTF-8", path.display())))?;
    parse_env(&text).map_err(|e| RunError {
        code: e.code,
        message: format!("{}: {}", path.display(), e.message),
    })
}

/// The endpoint's base URL from `--proxy`: http, a loopback host, a port, no path.
pub fn proxy_base(url: &str) -> Result<String, RunError> {
    let bad = |why: &str| {
        err(
            codes::PROXY,
            format!("--proxy {}: {why}; give http://127.0.0.1:PORT", clip(url)),
        )
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("the local endpoint speaks http"))?;
    let hostport = rest.trim_end_matches('/');
    if hostport.contains(['/', '?', '#', '@']) {
        return Err(bad("origin only"));
    }
    let addr: std::net::SocketAddr = hostport
        .replace("localhost:", "127.0.0.1:")
        .parse()
        .map_err(|_| bad("expected a loopback IP:PORT"))?;
    if !addr.ip().is_loopback() {
        return Err(bad("loopback only"));
    }
    Ok(format!("http://{hostport}"))
}

/// The agent's variables for the endpoint at `base`: the file's, expanded, and `CADA_PROXY`.
pub fn agent_env(vars: &[Var], base: &str) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = vars
        .iter()
        .map(|v| (v.name.clone(), v.expand(base)))
        .collect();
    env.entry("CADA_PROXY".into())
        .or_insert_with(|| base.to_owned());
    env
}

/// Whether an inherited variable is kept from the agent: `CADA_*` (the daemon's socket,
/// keys, flags), names containing `OWNER_KEY`, values naming an owner key file.
fn withheld(name: &str, value: &str) -> bool {
    let up = name.to_ascii_uppercase();
    up.starts_with("CADA_")
        || up.contains("OWNER_KEY")
        || value.contains("owner-key")
        || value.contains(".cada-owner")
}

/// Whether `--clear-env` keeps an inherited variable.
fn basic_variable(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "USER" | "LOGNAME" | "SHELL" | "LANG" | "TERM" | "TZ" | "TMPDIR"
    ) || name.starts_with("LC_")
}

/// What the agent inherits of the caller's environment `caller` (see the module doc):
/// never [`withheld`] variables; with `clear` only the basic ones. Variables that are not
/// UTF-8 pass only if not withheld by name (`clear`: not at all).
pub fn inherited_env(
    caller: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    clear: bool,
) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    caller
        .into_iter()
        .filter(|(k, v)| {
            let name = k.to_string_lossy();
            let value = v.to_string_lossy();
            !withheld(&name, &value) && (!clear || basic_variable(&name))
        })
        .collect()
}

/// The agent's uid, gid and (when known) user name and home directory.
type AgentUser = (u32, u32, Option<(String, PathBuf)>);

/// The agent's uid and gid and its user's name and home for `--user`; refused (`run.user`)
/// when unknown, or when another uid than the caller's is asked for without root.
fn agent_user(spec: &str) -> Result<AgentUser, RunError> {
    use nix::unistd::{Uid, User};
    let user = match spec.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(spec),
    }
    .map_err(|e| err(codes::USER, format!("--user {spec}: {e}")))?;
    let (uid, gid, named) = match (user, spec.parse::<u32>()) {
        (Some(u), _) => (u.uid.as_raw(), u.gid.as_raw(), Some((u.name, u.dir))),
        // A numeric uid without a passwd entry: its own number as the group.
        (None, Ok(uid)) => (uid, uid, None),
        (None, Err(_)) => return Err(err(codes::USER, format!("--user {spec}: no such user"))),
    };
    let me = nix::unistd::geteuid();
    if !me.is_root() && me.as_raw() != uid {
        return Err(err(
            codes::USER,
            format!(
                "--user {spec}: starting the agent as uid {uid} needs root (run is uid {me}); \
                 run it as root, or start the agent as that user yourself"
            ),
        ));
    }
    Ok((uid, gid, named))
}

/// A proxy `run` started, stopped when dropped.
struct OwnProxy(tokio::process::Child);

impl Drop for OwnProxy {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Starts `cada-parent proxy --listen 127.0.0.1:0 --secret NAME…` for the secrets the env
/// file names, and reads its address.
async fn start_proxy(a: &RunArgs, vars: &[Var]) -> Result<(OwnProxy, String), RunError> {
    use tokio::io::AsyncBufReadExt;
    let names: std::collections::BTreeSet<&str> = vars.iter().flat_map(Var::secrets).collect();
    if names.is_empty() {
        return Err(err(
            codes::PROXY,
            "the env file names no secret ({{cada.url:NAME}} or {{cada.placeholder:NAME}}), so \
             there is no endpoint to start; give --proxy URL to use a running one",
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| err(codes::PROXY, format!("cannot find cada-parent itself: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["proxy", "--listen", "127.0.0.1:0"]);
    for n in names {
        cmd.args(["--secret", n]);
    }
    if let Some(s) = &a.socket {
        cmd.arg("--socket").arg(s);
    }
    if let Some(d) = &a.audit_dir {
        cmd.arg("--audit-dir").arg(d);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| err(codes::PROXY, format!("starting the secrets endpoint: {e}")))?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| err(codes::PROXY, "the endpoint's stdout"))?;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| {
            err(
                codes::PROXY,
                "the secrets endpoint did not start within 30 s",
            )
        })?
        .map_err(|e| err(codes::PROXY, format!("the secrets endpoint: {e}")))?
        .unwrap_or_default();
    let own = OwnProxy(child);
    let addr = first
        .strip_prefix("ready listen=")
        .ok_or_else(|| {
            err(
                codes::PROXY,
                "the secrets endpoint did not start (its messages are above)",
            )
        })?
        .trim()
        .to_owned();
    // Keep reading (and dropping) its stdout so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let base = proxy_base(&format!("http://{addr}"))?;
    Ok((own, base))
}

/// Signals forwarded to the agent.
const FORWARDED: [nix::sys::signal::Signal; 7] = [
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
    nix::sys::signal::Signal::SIGUSR1,
    nix::sys::signal::Signal::SIGUSR2,
    nix::sys::signal::Signal::SIGWINCH,
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGQUIT,
];

/// Whether this process is in its terminal's foreground process group (then a key press's
/// SIGINT/SIGQUIT reached the agent too).
fn in_foreground() -> bool {
    nix::unistd::tcgetpgrp(std::io::stdin()).is_ok_and(|g| g == nix::unistd::getpgrp())
}

async fn run_agent(a: RunArgs) -> Result<u8, RunError> {
    let vars = read_env_file(&a.env_file)?;
    let (own, base) = match &a.proxy {
        Some(url) => (None, proxy_base(url)?),
        None if a.check => (None, "http://127.0.0.1:PORT".to_owned()),
        None => {
            let (p, base) = start_proxy(&a, &vars).await?;
            (Some(p), base)
        }
    };
    let env = agent_env(&vars, &base);
    let user = a.user.as_deref().map(agent_user).transpose()?;
    if a.check {
        for (k, v) in &env {
            println!("{k}={v}");
        }
        return Ok(0);
    }
    let (prog, args) = a
        .command
        .split_first()
        .ok_or_else(|| err(codes::SPAWN, "give the agent command after --"))?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .env_clear()
        .envs(inherited_env(std::env::vars_os(), a.clear_env))
        .envs(&env);
    if let Some((uid, gid, named)) = user {
        // std drops the supplementary groups (setgroups 0) when it changes the uid as root.
        cmd.uid(uid).gid(gid);
        if let Some((name, home)) = named {
            cmd.env("USER", &name)
                .env("LOGNAME", &name)
                .env("HOME", home);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| err(codes::SPAWN, format!("{prog}: {e}")))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(nix::unistd::Pid::from_raw);
    let mut streams = Vec::new();
    for sig in FORWARDED {
        let kind = tokio::signal::unix::SignalKind::from_raw(sig as i32);
        let s = tokio::signal::unix::signal(kind)
            .map_err(|e| err(codes::SPAWN, format!("listening for {sig}: {e}")))?;
        streams.push((sig, s));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    for (sig, mut s) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(sig).await.is_err() {
                    return;
                }
            }
        });
    }
    let status = loop {
        tokio::select! {
            st = child.wait() => break st.map_err(|e| err(codes::SPAWN, format!("waiting for {prog}: {e}")))?,
            Some(sig) = rx.recv() => {
                let terminal = matches!(sig, nix::sys::signal::Signal::SIGINT | nix::sys::signal::Signal::SIGQUIT)
                    && in_foreground();
                if let (Some(pid), false) = (pid, terminal) {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            }
        }
    };
    drop(own);
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(s)) => u8::try_from(128 + (s & 0x7f)).unwrap_or(1),
        (None, None) => 1,
    })
}

/// Runs `cada-parent run` and returns the process's exit status (the agent's own, or 2 with
/// a message on stderr when `run` refuses).
pub fn main(rt: &tokio::runtime::Runtime, a: RunArgs) -> ExitCode {
    match rt.block_on(run_agent(a)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cada-parent run: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {

    /// Finding 10: the agent never inherits the daemon's socket, CADA flags or owner keys;
    /// `--clear-env` keeps only the basic variables.
    #[test]
    fn the_agent_inherits_no_daemon_socket_or_owner_key() {
        let caller: Vec<(std::ffi::OsString, std::ffi::OsString)> = [
            ("CADA_SOCKET", "/run/cada/agent.sock"),
            ("cada_egress", "unix:/x"),
            ("OWNER_KEY", "/home/x/owner.json"),
            ("MY_OWNER_KEY_PATH", "/k"),
            ("KEYFILE", "/home/x/.cada-owner/owner-key.json"),
            ("PATH", "/usr/bin"),
            ("LC_ALL", "C"),
            ("EDITOR", "vi"),
        ]
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
        let names = |clear| -> Vec<String> {
            inherited_env(caller.clone(), clear)
                .into_iter()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(false), ["PATH", "LC_ALL", "EDITOR"]);
        assert_eq!(names(true), ["PATH", "LC_ALL"]);
    }

    #[test]
    fn user_is_resolved_and_another_uid_needs_root() {
        assert_eq!(
            agent_user("no-such-user-cada").unwrap_err().code,
            codes::USER
        );
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(agent_user(&me.to_string()).unwrap().0, me);
        let other = agent_user("65534");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(other.unwrap().0, 65534);
        } else {
            assert_eq!(other.unwrap_err().code, codes::USER);
        }
    }
    use super::*;

    const BASE: &str = "http://127.0.0.1:8765";

    fn env_of(text: &str) -> BTreeMap<String, String> {
        agent_env(&parse_env(text).unwrap(), BASE)
    }

    fn code_of(text: &str) -> &'static str {
        parse_env(text).unwrap_err().code
    }

    #[test]
    fn templates_expand_to_the_endpoint_and_placeholders() {
        let env = env_of(
            "# agent\n\nGITHUB_API_URL={{cada.url:github}}\nGITHUB_TOKEN={{cada.placeholder:github}}\n\
             LINEAR_API_URL=\"{{ cada.url:linear }}/graphql\"\nLINEAR_API_KEY=cada:linear\n\
             OPENAI_BASE_URL={{cada.url:openai}}/v1\nOPENAI_API_KEY='{{cada.placeholder:openai}}'\n\
             GH_TOKEN=\nLOG_LEVEL=debug\nCADA_PROXY={{cada.proxy}}/\n",
        );
        assert_eq!(env["GITHUB_API_URL"], "http://127.0.0.1:8765/github");
        assert_eq!(env["GITHUB_TOKEN"], "cada:github");
        assert_eq!(
            env["LINEAR_API_URL"],
            "http://127.0.0.1:8765/linear/graphql"
        );
        assert_eq!(env["LINEAR_API_KEY"], "cada:linear");
        assert_eq!(env["OPENAI_BASE_URL"], "http://127.0.0.1:8765/openai/v1");
        assert_eq!(env["OPENAI_API_KEY"], "cada:openai");
        assert_eq!(env["GH_TOKEN"], "");
        assert_eq!(env["LOG_LEVEL"], "debug");
        assert_eq!(env["CADA_PROXY"], "http://127.0.0.1:8765/");
        assert_eq!(env_of("A=b\n")["CADA_PROXY"], BASE);
        let vars = parse_env("X={{cada.url:a}} {{cada.placeholder:b}}").unwrap();
        assert_eq!(vars[0].secrets().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn real_secrets_are_refused() {
        for text in [
            "GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "X=github_pat_11ABCDEFG0123456789_abcdefghij",
            "SLACK=xoxb-1234567890-abcdefghij",
            "STRIPE=sk_live_51Habcdefghij0123456789",
            "OPENAI=sk-proj-abcdefghijklmnop",
            "AWS_ID=AKIAIOSFODNN7EXAMPLE",
            "G=AIzaSyA-1234567890abcdefghij",
            "JWT=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "DATABASE_URL=postgres://app:hunter2@db.internal/app",
            "WEBHOOK=https://hooks.example.com/T0/B0/Xy7Zq9Lm2Np4Rs6Tu8Vw0Ab1Cd3Ef5Gh",
            "KEY_PEM=\"-----BEGIN PRIVATE KEY-----\"",
            // A credential-named variable with any literal value.
            "GITHUB_TOKEN=hunter2",
            "API_KEY=abc",
            "MY_SECRET=x",
            "DB_PASS=hunter2",
            "SENTRY_DSN=https://abc123@o1.ingest.sentry.io/1",
            "GITHUB_TOKEN=cada:github extra",
            "GITHUB_TOKEN={{cada.placeholder:github}}x",
        ] {
            let e = parse_env(text).unwrap_err();
            assert_eq!(e.code, codes::SECRET_IN_ENV_FILE, "{text}: {e}");
            assert!(e.message.contains("line 1"), "{e}");
            // The message names the variable, never the value.
            let value = text.split_once('=').unwrap().1;
            assert!(value.len() < 4 || !e.message.contains(value), "{e}");
        }
    }

    #[test]
    fn ordinary_values_pass() {
        for text in [
            "GIT_COMMIT=0123456789abcdef0123456789abcdef01234567",
            "RUN_ID=123e4567-e89b-12d3-a456-426614174000",
            "HOME_URL=https://example.com/a/b?c=d",
            "DATABASE_URL=postgres://app@db.internal/app",
            "GITHUB_TOKEN_URL={{cada.url:github}}/token",
            "MODEL=claude-sonnet-4-5",
            "PATHS=/usr/local/bin:/usr/bin",
            "AUTHOR=Ada",
            "KEYBOARD=us",
        ] {
            parse_env(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn syntax_and_templates_are_strict() {
        assert_eq!(code_of("export A=b"), codes::ENV_SYNTAX);
        assert_eq!(code_of("A"), codes::ENV_SYNTAX);
        assert_eq!(code_of("1A=b"), codes::ENV_SYNTAX);
        assert_eq!(code_of("A=b\nA=c"), codes::ENV_SYNTAX);
        assert_eq!(code_of("A={{cada.url:GitHub}}"), codes::ENV_TEMPLATE);
        assert_eq!(code_of("A={{cada.secret:github}}"), codes::ENV_TEMPLATE);
        assert_eq!(code_of("A={{env:HOME}}"), codes::ENV_TEMPLATE);
        assert_eq!(code_of("A={{cada.url:github"), codes::ENV_TEMPLATE);
        let many: String = (0..=MAX_VARS).map(|i| format!("V{i}=x\n")).collect();
        assert_eq!(code_of(&many), codes::ENV_SYNTAX);
        let e = parse_env("A=1\n\nB={{x}}").unwrap_err();
        assert!(e.message.starts_with("line 3:"), "{e}");
    }

    #[test]
    fn the_proxy_url_is_a_loopback_origin() {
        assert_eq!(proxy_base("http://127.0.0.1:8765/").unwrap(), BASE);
        assert_eq!(
            proxy_base("http://localhost:8765").unwrap(),
            "http://localhost:8765"
        );
        assert_eq!(proxy_base("http://[::1]:1").unwrap(), "http://[::1]:1");
        for bad in [
            "https://127.0.0.1:1",
            "http://10.0.0.1:1",
            "http://127.0.0.1:1/x",
            "http://u@127.0.0.1:1",
            "http://example.com:1",
            "http://127.0.0.1",
        ] {
            assert_eq!(proxy_base(bad).unwrap_err().code, codes::PROXY, "{bad}");
        }
    }

    /// Garbage, truncations and byte flips of a good file: a typed answer each time, never a
    /// panic.
    #[test]
    fn garbage_never_panics() {
        let good = "# x\nGITHUB_API_URL={{cada.url:github}}/v3\nGITHUB_TOKEN='cada:github'\n\
                    URL=https://u@h/p?q=1\nE=\n";
        for cut in 0..=good.len() {
            if let Some(t) = good.get(..cut) {
                let _ = parse_env(t);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = "{}:=.#'\"\n\r\0 aZ9_-/@cada.urlplaceholderproxyé€";
        let chars: Vec<char> = alphabet.chars().collect();
        for _ in 0..20_000 {
            let len = usize::try_from(x % 64).unwrap();
            let mut s = String::new();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push(chars[usize::try_from(x % chars.len() as u64).unwrap()]);
            }
            if let Ok(vars) = parse_env(&s) {
                let _ = agent_env(&vars, BASE);
            }
            let _ = secret_like(&s);
            let _ = proxy_base(&s);
        }
    }

    #[test]
    fn env_files_are_bounded() {
        let dir = std::env::temp_dir().join(format!("cada-run-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big");
        std::fs::write(&big, "A=b\n".repeat(20_000)).unwrap();
        assert_eq!(read_env_file(&big).unwrap_err().code, codes::ENV_FILE);
        assert_eq!(
            read_env_file(&dir.join("missing")).unwrap_err().code,
            codes::ENV_FILE
        );
        assert_eq!(read_env_file(&dir).unwrap_err().code, codes::ENV_FILE);
        let bin = dir.join("bin");
        std::fs::write(&bin, [b'A', b'=', 0xff]).unwrap();
        assert_eq!(read_env_file(&bin).unwrap_err().code, codes::ENV_FILE);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
