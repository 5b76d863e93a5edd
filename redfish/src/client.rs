//! The Redfish client an agent drives BMCs with.
//!
//! One connection state per BMC, kept between operations: a pooled HTTP/1.1 connection, the
//! session token (renewed when the BMC answers 401), the service root and the system's URI.
//! Operations on one BMC run one at a time (its lock), BMCs side by side.
//!
//! What the BMC's answers cost:
//! * 500, 502, 503, 504 and a connection that fails: sent again after a backoff (the BMC's
//!   `Retry-After` where it gives one), up to [`Options::attempts`] times, then reported with
//!   the last answer.
//! * 401 on a session: one new login, then the request again. A login the BMC refuses is not
//!   tried again for [`Options::auth_hold`] (BMCs lock an account out after a few failures;
//!   a poll every few seconds would do that on its own).
//! * 202 with a task monitor: followed until it finishes or [`Options::task_deadline`].
//! * A certificate that is not the pinned one or not signed by the CA bundle: refused at
//!   once, naming both fingerprints.

use crate::trust::{BmcVerifier, Trust, provider};
use crate::vendor::{self, Quirks, Under};
use ferric_proto::Secret;
use ferric_proto::hardware::{CpuInfo, DiskInfo, DmiInfo, Inventory, NicInfo, SensorReading};
use ferric_proto::msg::{BmcAddress, BmcScheme};
use ferric_proto::plan::{BootDevice, PowerAction, SelEntry};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Stable kinds of Redfish failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The BMC refused the user name or password.
    AuthFailed,
    /// The BMC's certificate is not the pinned one, or no CA of the bundle signed it.
    Untrusted,
    /// The BMC did not answer (after every retry).
    Unreachable,
    /// The account may not do this (403).
    InsufficientPrivilege,
    /// The BMC does not offer this (no such action, reset type, boot target or collection).
    Unsupported,
    /// A resource named in the address or the request does not exist.
    NotFound,
    /// A task, or a state asked for, did not come before its deadline.
    Timeout,
    /// The BMC answered with an error, or something that is not Redfish.
    Failed,
}

/// A Redfish failure, naming the BMC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Redfish BMC {bmc}: {message}")]
pub struct Error {
    /// Kind.
    pub kind: ErrorKind,
    /// The BMC (`host:port`).
    pub bmc: String,
    /// What happened.
    pub message: String,
}

/// A BMC and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `redfish://` or `redfish+http://` address.
    pub address: BmcAddress,
    /// Password.
    pub password: Secret,
}

impl Target {
    /// A target from an address (which must be Redfish) and a password.
    pub fn new(address: BmcAddress, password: Secret) -> Target {
        Target { address, password }
    }

    /// Parses `redfish[+http]://USER@HOST[:PORT][?system=ID][&pin=sha256:HEX]`.
    pub fn parse(url: &str, password: Secret) -> Result<Target, String> {
        let address = BmcAddress::parse(url).map_err(|e| e.to_string())?;
        if !address.scheme.is_redfish() {
            return Err(format!("`{url}` is not a redfish:// address"));
        }
        Ok(Target { address, password })
    }

    /// `host:port`, how errors and logs name the BMC.
    pub fn name(&self) -> String {
        let a = &self.address;
        if a.host.contains(':') {
            format!("[{}]:{}", a.host, a.port)
        } else {
            format!("{}:{}", a.host, a.port)
        }
    }

    fn base(&self) -> String {
        let scheme = match self.address.scheme {
            BmcScheme::RedfishHttp => "http",
            _ => "https",
        };
        format!("{scheme}://{}", self.name())
    }
}

/// How patient the client is.
#[derive(Debug, Clone)]
pub struct Options {
    /// One request's limit (connect, send, answer).
    pub request_timeout: Duration,
    /// Tries of a request that fails to connect or is answered 500/502/503/504.
    pub attempts: u32,
    /// The first backoff; doubled each time up to `backoff_max`.
    pub backoff: Duration,
    /// The longest backoff (and the most a `Retry-After` is honoured).
    pub backoff_max: Duration,
    /// After the BMC refuses the credentials, how long no login is tried with them.
    pub auth_hold: Duration,
    /// How long a task (an action answered 202) may run.
    pub task_deadline: Duration,
    /// How often a task monitor is read.
    pub task_poll: Duration,
    /// How long a power action may take to show in `PowerState`.
    pub power_settle: Duration,
    /// CAs that sign BMC certificates (checked with the BMC's host name); `None`: only
    /// pinned certificates are accepted.
    pub ca_bundle: Option<Arc<rustls::RootCertStore>>,
    /// Log in through the session service (false: basic authentication on every request).
    pub sessions: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            request_timeout: Duration::from_secs(20),
            attempts: 4,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            auth_hold: Duration::from_secs(300),
            task_deadline: Duration::from_secs(600),
            task_poll: Duration::from_secs(1),
            power_settle: Duration::from_secs(60),
            ca_bundle: None,
            sessions: true,
        }
    }
}

/// How requests to one BMC are authenticated.
#[derive(Debug, Clone)]
enum Auth {
    /// Not logged in yet.
    None,
    /// `X-Auth-Token`; the session's URI, to log out.
    Session {
        token: Secret,
        location: Option<String>,
    },
    /// HTTP basic authentication on every request.
    Basic,
}

#[derive(Debug)]
struct State {
    auth: Auth,
    root: Option<Value>,
    system: Option<String>,
    /// When and why the BMC last refused the credentials.
    refused: Option<(Instant, String)>,
    /// Logins sent (for the tests and the logs).
    logins: u32,
}

/// One BMC's connection.
#[derive(Debug)]
struct Conn {
    target: Target,
    name: String,
    base: String,
    http: reqwest::Client,
    verifier: Arc<BmcVerifier>,
    state: tokio::sync::Mutex<State>,
}

/// A request.
#[derive(Debug)]
struct Req<'a> {
    method: Method,
    path: &'a str,
    body: Option<&'a Value>,
    if_match: Option<&'a str>,
    /// Whether it carries the session token or basic credentials.
    auth: bool,
}

impl<'a> Req<'a> {
    fn new(method: Method, path: &'a str) -> Req<'a> {
        Req {
            method,
            path,
            body: None,
            if_match: None,
            auth: true,
        }
    }

    fn body(self, body: &'a Value) -> Req<'a> {
        Req {
            body: Some(body),
            ..self
        }
    }

    fn anonymous(self) -> Req<'a> {
        Req {
            auth: false,
            ..self
        }
    }
}

/// An answer.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// The boot override a system reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootOverride {
    /// `BootSourceOverrideTarget` (`Pxe`, `Hdd`, `Cd`, `UefiHttp`, `None`, …).
    pub target: Option<String>,
    /// `BootSourceOverrideEnabled` (`Once`, `Continuous`, `Disabled`).
    pub enabled: Option<String>,
    /// `BootSourceOverrideMode` (`UEFI`, `Legacy`), where the system has it.
    pub mode: Option<String>,
}

impl BootOverride {
    /// The override as a boot device, when it is one Ferric names.
    pub fn device(&self) -> Option<BootDevice> {
        match self.target.as_deref()? {
            "Pxe" => Some(BootDevice::Pxe),
            "Hdd" => Some(BootDevice::Disk),
            "Cd" => Some(BootDevice::Cdrom),
            "BiosSetup" => Some(BootDevice::Bios),
            "UefiHttp" => Some(BootDevice::UefiHttp),
            _ => None,
        }
    }

    /// Whether it stays for every boot.
    pub fn persistent(&self) -> bool {
        self.enabled.as_deref() == Some("Continuous")
    }

    /// Whether it boots in UEFI mode.
    pub fn uefi(&self) -> bool {
        self.mode.as_deref() == Some("UEFI")
    }
}

/// A virtual media slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSlot {
    /// Its URI.
    pub uri: String,
    /// `MediaTypes` (`CD`, `DVD`, `USBStick`, …).
    pub media_types: Vec<String>,
    /// Whether media is inserted.
    pub inserted: bool,
    /// The inserted image's URL.
    pub image: Option<String>,
}

/// Redfish's name for a boot device.
pub fn boot_target(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Cdrom => "Cd",
        BootDevice::Bios => "BiosSetup",
        BootDevice::UefiHttp => "UefiHttp",
    }
}

fn odata_id(v: &Value) -> Option<String> {
    v.get("@odata.id")?.as_str().map(str::to_owned)
}

fn link(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(odata_id)
}

/// The Redfish error message of an answer (`error.@Message.ExtendedInfo[].Message`, else
/// `error.message`), or its first bytes.
fn redfish_message(body: &Value) -> String {
    let err = body.get("error").unwrap_or(body);
    let mut msgs: Vec<String> = err
        .get("@Message.ExtendedInfo")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("Message").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if msgs.is_empty()
        && let Some(m) = err.get("message").and_then(Value::as_str)
    {
        msgs.push(m.to_owned());
    }
    if msgs.is_empty() {
        if let Some(s) = body.as_str() {
            return s.chars().take(200).collect();
        }
        return String::new();
    }
    msgs.join("; ")
}

fn retry_after(headers: &HeaderMap, cap: Duration) -> Option<Duration> {
    let s = headers.get("retry-after")?.to_str().ok()?;
    let secs: u64 = s.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(cap))
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2026-12-08T03:15:00+01:00`, `…Z`), or
/// of one without an offset, taken as UTC (some BMCs write them so).
pub fn parse_time(s: &str) -> Option<i64> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::PrimitiveDateTime::parse(s, &Iso8601::DEFAULT).map(|t| t.assume_utc()))
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

/// Redfish over HTTPS (or HTTP where the address says so), for many BMCs.
#[derive(Debug)]
pub struct Client {
    opts: Options,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
}

impl Default for Client {
    fn default() -> Client {
        Client::new(Options::default())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Client {
    /// A client with these options.
    pub fn new(opts: Options) -> Client {
        Client {
            opts,
            conns: Mutex::default(),
        }
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    fn err(t: &Target, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            bmc: t.name(),
            message: message.into(),
        }
    }

    /// The connection state of a target, made on first use; a target whose address or
    /// password changed gets a new one.
    fn conn(&self, t: &Target) -> Result<Arc<Conn>, Error> {
        let key = t.address.to_string();
        let mut conns = lock(&self.conns);
        if let Some(c) = conns.get(&key)
            && c.target == *t
        {
            return Ok(c.clone());
        }
        let trust = match (t.address.pin, &self.opts.ca_bundle) {
            (Some(pin), _) => Trust::Pin(pin),
            (None, Some(roots)) => Trust::Roots(roots.clone()),
            (None, None) => Trust::Nothing,
        };
        let provider = provider();
        let verifier = Arc::new(BmcVerifier::new(trust, provider.clone()));
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Self::err(t, ErrorKind::Failed, format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(self.opts.request_timeout)
            .connect_timeout(self.opts.request_timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(50))
            .pool_max_idle_per_host(2)
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .build()
            .map_err(|e| Self::err(t, ErrorKind::Failed, format!("HTTP client setup: {e}")))?;
        let c = Arc::new(Conn {
            target: t.clone(),
            name: t.name(),
            base: t.base(),
            http,
            verifier,
            state: tokio::sync::Mutex::new(State {
                auth: Auth::None,
                root: None,
                system: None,
                refused: None,
                logins: 0,
            }),
        });
        conns.insert(key, c.clone());
        Ok(c)
    }

    /// Logs out of every session and forgets every BMC.
    pub async fn close_all(&self) {
        let conns: Vec<Arc<Conn>> = lock(&self.conns).drain().map(|(_, c)| c).collect();
        for c in conns {
            let mut st = c.state.lock().await;
            self.logout(&c, &mut st).await;
        }
    }

    /// Logs out of a BMC's session (if it has one) and forgets it.
    pub async fn close(&self, t: &Target) {
        let c = lock(&self.conns).remove(&t.address.to_string());
        if let Some(c) = c {
            let mut st = c.state.lock().await;
            self.logout(&c, &mut st).await;
        }
    }

    async fn logout(&self, c: &Conn, st: &mut State) {
        if let Auth::Session {
            token,
            location: Some(loc),
        } = std::mem::replace(&mut st.auth, Auth::None)
        {
            let url = c.url(&loc);
            let r = c
                .http
                .delete(url)
                .header("X-Auth-Token", token.expose())
                .send()
                .await;
            debug!(bmc = %c.name, ok = r.is_ok_and(|r| r.status().is_success()), "Redfish session closed");
        }
    }

    /// How many logins the client sent to a BMC (each session renewal is one).
    pub async fn logins(&self, t: &Target) -> u32 {
        match self.conn(t) {
            Ok(c) => c.state.lock().await.logins,
            Err(_) => 0,
        }
    }

    /// Sends one request, with the retries the module describes; `auth` false sends none.
    async fn send(&self, c: &Conn, st: &mut State, req: Req<'_>) -> Result<Reply, Error> {
        let Req {
            method,
            path,
            body,
            if_match,
            auth,
        } = req;
        let t = &c.target;
        let started = Instant::now();
        let mut backoff = self.opts.backoff;
        let mut relogged = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if auth && matches!(st.auth, Auth::None) {
                self.login(c, st).await?;
            }
            let mut req = c
                .http
                .request(method.clone(), c.url(path))
                .header("Accept", "application/json")
                .header("OData-Version", "4.0");
            if auth {
                req = match &st.auth {
                    Auth::Session { token, .. } => req.header("X-Auth-Token", token.expose()),
                    Auth::Basic => req.basic_auth(&t.address.user, Some(t.password.expose())),
                    Auth::None => req,
                };
            }
            if let Some(tag) = if_match {
                req = req.header("If-Match", tag);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let failure = match req.send().await {
                Ok(mut resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    // A BMC's answer is read up to a bound: one that keeps sending is cut off
                    // and reported, not held in memory.
                    let mut bytes = Vec::new();
                    loop {
                        match resp.chunk().await {
                            Ok(Some(c)) if bytes.len() + c.len() <= MAX_ANSWER => {
                                bytes.extend_from_slice(&c)
                            }
                            Ok(Some(_)) => {
                                return Err(Self::err(
                                    t,
                                    ErrorKind::Failed,
                                    format!(
                                        "{method} {path}: the answer is over {} MiB; refused",
                                        MAX_ANSWER >> 20
                                    ),
                                ));
                            }
                            Ok(None) | Err(_) => break,
                        }
                    }
                    let body: Value = if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&bytes).into_owned())
                        })
                    };
                    if status == StatusCode::UNAUTHORIZED && auth {
                        match st.auth {
                            Auth::Session { .. } if !relogged => {
                                // The session expired or the BMC restarted: one new login.
                                debug!(bmc = %c.name, "Redfish session no longer valid: logging in again");
                                st.auth = Auth::None;
                                relogged = true;
                                attempt -= 1;
                                continue;
                            }
                            _ => {
                                let msg = format!(
                                    "the BMC refused user `{}` (HTTP 401 on {path}{})",
                                    t.address.user,
                                    match redfish_message(&body) {
                                        m if m.is_empty() => String::new(),
                                        m => format!(": {m}"),
                                    }
                                );
                                st.refused = Some((Instant::now(), msg.clone()));
                                st.auth = Auth::None;
                                return Err(Self::err(t, ErrorKind::AuthFailed, msg));
                            }
                        }
                    }
                    if matches!(status.as_u16(), 500 | 502 | 503 | 504) {
                        let wait = retry_after(&headers, self.opts.backoff_max).unwrap_or(backoff);
                        let what = format!(
                            "{method} {path} was answered {status}{}",
                            match redfish_message(&body) {
                                m if m.is_empty() => String::new(),
                                m => format!(" ({m})"),
                            }
                        );
                        (what, wait, ErrorKind::Failed)
                    } else {
                        return Ok(Reply {
                            status,
                            headers,
                            body,
                        });
                    }
                }
                Err(e) => {
                    if let Some(refusal) = c.verifier.take_refusal() {
                        return Err(Self::err(t, ErrorKind::Untrusted, refusal));
                    }
                    let what = format!("{method} {path}: {}", error_chain(&e));
                    (what, backoff, ErrorKind::Unreachable)
                }
            };
            let (what, wait, kind) = failure;
            if attempt >= self.opts.attempts {
                return Err(Self::err(
                    t,
                    kind,
                    format!(
                        "{what}; gave up after {attempt} tries over {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                ));
            }
            debug!(bmc = %c.name, attempt, wait_ms = wait.as_millis() as u64, "{what}: trying again");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.opts.backoff_max);
        }
    }

    /// Logs in: a session where the BMC has a session service, basic authentication where it
    /// has none. A refusal holds further logins off for [`Options::auth_hold`].
    async fn login(&self, c: &Conn, st: &mut State) -> Result<(), Error> {
        let t = &c.target;
        if let Some((at, msg)) = &st.refused
            && at.elapsed() < self.opts.auth_hold
        {
            return Err(Self::err(
                t,
                ErrorKind::AuthFailed,
                format!(
                    "{msg}; not trying again for {} s (BMCs lock an account out after a few \
                     failed logins; change the password to try at once)",
                    (self.opts.auth_hold - at.elapsed()).as_secs()
                ),
            ));
        }
        if !self.opts.sessions {
            st.auth = Auth::Basic;
            return Ok(());
        }
        if st.root.is_none() {
            // The service root answers without authentication (DSP0266, 13.3.1); a BMC that
            // wants it anyway is read again after the login.
            let r = Box::pin(self.send(c, st, Req::new(Method::GET, "/redfish/v1/").anonymous()))
                .await?;
            if r.status.is_success() && r.body.is_object() {
                st.root = Some(r.body);
            }
        }
        // A service root that names no session service means there is none (sushy-tools'
        // emulator answers a login there with 401, as to any request without credentials).
        if let Some(root) = &st.root
            && root.pointer("/Links/Sessions").is_none()
            && root.get("SessionService").is_none()
        {
            info!(bmc = %c.name, "the BMC has no session service: using basic authentication");
            st.auth = Auth::Basic;
            return Ok(());
        }
        let sessions = st
            .root
            .as_ref()
            .and_then(|r| r.get("Links"))
            .and_then(|l| link(l, "Sessions"))
            .unwrap_or_else(|| "/redfish/v1/SessionService/Sessions".into());
        st.logins += 1;
        let body = json!({"UserName": t.address.user, "Password": t.password.expose()});
        let r = Box::pin(self.send(
            c,
            st,
            Req::new(Method::POST, &sessions).body(&body).anonymous(),
        ))
        .await?;
        match r.status.as_u16() {
            200 | 201 => {
                let token = r
                    .headers
                    .get("x-auth-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match token {
                    Some(token) => {
                        let location = r
                            .headers
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                            .or_else(|| odata_id(&r.body));
                        debug!(bmc = %c.name, "Redfish session opened");
                        st.auth = Auth::Session {
                            token: Secret::new(token),
                            location,
                        };
                    }
                    None => {
                        warn!(bmc = %c.name, "the BMC opened a session without a token: using basic authentication");
                        st.auth = Auth::Basic;
                    }
                }
                st.refused = None;
                Ok(())
            }
            401 | 403 => {
                let msg = format!(
                    "the BMC refused user `{}` (HTTP {} on {sessions}{})",
                    t.address.user,
                    r.status.as_u16(),
                    match redfish_message(&r.body) {
                        m if m.is_empty() => String::new(),
                        m => format!(": {m}"),
                    }
                );
                st.refused = Some((Instant::now(), msg.clone()));
                Err(Self::err(t, ErrorKind::AuthFailed, msg))
            }
            // No session service: basic authentication on every request.
            404 | 405 | 501 => {
                info!(bmc = %c.name, status = r.status.as_u16(), "the BMC has no session service: using basic authentication");
                st.auth = Auth::Basic;
                Ok(())
            }
            _ => Err(Self::err(
                t,
                ErrorKind::Failed,
                format!(
                    "login at {sessions} was answered {}: {}",
                    r.status,
                    redfish_message(&r.body)
                ),
            )),
        }
    }

    /// An authenticated request whose answer must be a success; 4xx become errors of their
    /// kind, naming the request and the BMC's message.
    async fn call(
        &self,
        c: &Conn,
        st: &mut State,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, Error> {
        let r = self
            .send(
                c,
                st,
                Req {
                    method: method.clone(),
                    path,
                    body,
                    if_match,
                    auth: true,
                },
            )
            .await?;
        if r.status.is_success() {
            return Ok(r);
        }
        let kind = match r.status.as_u16() {
            403 => ErrorKind::InsufficientPrivilege,
            404 => ErrorKind::NotFound,
            405 | 501 => ErrorKind::Unsupported,
            _ => ErrorKind::Failed,
        };
        let m = redfish_message(&r.body);
        Err(Self::err(
            &c.target,
            kind,
            format!(
                "{method} {path} was answered {}{}",
                r.status,
                if m.is_empty() {
                    String::new()
                } else {
                    format!(": {m}")
                }
            ),
        ))
    }

    async fn get(&self, c: &Conn, st: &mut State, path: &str) -> Result<Value, Error> {
        Ok(self.call(c, st, Method::GET, path, None, None).await?.body)
    }

    /// A POST of an action; a task it starts (202) is followed to its end.
    async fn action(
        &self,
        c: &Conn,
        st: &mut State,
        path: &str,
        body: &Value,
    ) -> Result<(), Error> {
        let r = self
            .call(c, st, Method::POST, path, Some(body), None)
            .await?;
        if r.status == StatusCode::ACCEPTED
            && let Some(monitor) = r
                .headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| odata_id(&r.body))
        {
            self.follow_task(c, st, &monitor).await?;
        }
        Ok(())
    }

    /// Reads a task monitor until the task finishes, or fails at the deadline.
    async fn follow_task(&self, c: &Conn, st: &mut State, monitor: &str) -> Result<(), Error> {
        let t = &c.target;
        let started = Instant::now();
        loop {
            let r = self.send(c, st, Req::new(Method::GET, monitor)).await?;
            let state = r
                .body
                .get("TaskState")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match (r.status.as_u16(), state.as_str()) {
                (_, "Exception" | "Killed" | "Cancelled") => {
                    return Err(Self::err(
                        t,
                        ErrorKind::Failed,
                        format!("task {monitor} ended {state}: {}", redfish_message(&r.body)),
                    ));
                }
                (_, "Completed") => return Ok(()),
                // A task monitor answers 202 while the task runs, and the action's own answer
                // (or 204) once it is done.
                (202, _) | (200, "New" | "Starting" | "Running" | "Pending" | "Stopping") => {}
                (s, _) if (200..300).contains(&s) => return Ok(()),
                (404 | 410, _) => return Ok(()),
                (s, _) => {
                    return Err(Self::err(
                        t,
                        ErrorKind::Failed,
                        format!(
                            "task {monitor} was answered {s}: {}",
                            redfish_message(&r.body)
                        ),
                    ));
                }
            }
            if started.elapsed() >= self.opts.task_deadline {
                return Err(Self::err(
                    t,
                    ErrorKind::Timeout,
                    format!(
                        "task {monitor} is still {} after {} s (its deadline)",
                        if state.is_empty() { "running" } else { &state },
                        self.opts.task_deadline.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(self.opts.task_poll).await;
        }
    }

    async fn root(&self, c: &Conn, st: &mut State) -> Result<Value, Error> {
        if let Some(r) = &st.root {
            return Ok(r.clone());
        }
        let r = self.get(c, st, "/redfish/v1/").await?;
        st.root = Some(r.clone());
        Ok(r)
    }

    /// The system's URI: the one named in the address, or the only one.
    async fn system_uri(&self, c: &Conn, st: &mut State) -> Result<String, Error> {
        if let Some(s) = &st.system {
            return Ok(s.clone());
        }
        let t = &c.target;
        let root = self.root(c, st).await?;
        let systems = link(&root, "Systems").unwrap_or_else(|| "/redfish/v1/Systems".into());
        let coll = self.get(c, st, &systems).await?;
        let members: Vec<String> = coll
            .get("Members")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(odata_id).collect())
            .unwrap_or_default();
        let ids: Vec<&str> = members
            .iter()
            .map(|m| m.trim_end_matches('/').rsplit('/').next().unwrap_or(m))
            .collect();
        let chosen = match &t.address.system {
            Some(want) => members
                .iter()
                .zip(&ids)
                .find(|(_, id)| **id == want.as_str())
                .map(|(m, _)| m.clone())
                .ok_or_else(|| {
                    Self::err(
                        t,
                        ErrorKind::NotFound,
                        format!(
                            "no system `{want}` at {systems} (it has: {})",
                            ids.join(", ")
                        ),
                    )
                })?,
            None => match members.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Self::err(
                        t,
                        ErrorKind::NotFound,
                        format!("{systems} lists no system"),
                    ));
                }
                _ => {
                    return Err(Self::err(
                        t,
                        ErrorKind::Failed,
                        format!(
                            "the BMC manages {} systems ({}): name one in the address with ?system=ID",
                            members.len(),
                            ids.join(", ")
                        ),
                    ));
                }
            },
        };
        st.system = Some(chosen.clone());
        Ok(chosen)
    }

    async fn system(
        &self,
        c: &Conn,
        st: &mut State,
    ) -> Result<(String, Value, Option<String>), Error> {
        let uri = self.system_uri(c, st).await?;
        let r = self.call(c, st, Method::GET, &uri, None, None).await?;
        let etag = r
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                r.body
                    .get("@odata.etag")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        Ok((uri, r.body, etag))
    }

    /// The system's power: true when on (or powering off).
    pub async fn power_on(&self, t: &Target) -> Result<bool, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let (_, sys, _) = self.system(&c, &mut st).await?;
        power_of(t, &sys)
    }

    /// Does a power action and waits, up to [`Options::power_settle`], for the state it leaves
    /// (a soft off: as long as the OS takes, up to the task deadline). Returns whether anything
    /// was sent, and the power read last.
    pub async fn power(&self, t: &Target, action: PowerAction) -> Result<(bool, bool), Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let (uri, sys, _) = self.system(&c, &mut st).await?;
        let on = power_of(t, &sys)?;
        let send = match (action, on) {
            (PowerAction::Status, _) => None,
            (PowerAction::On, true) | (PowerAction::Off | PowerAction::Soft, false) => None,
            // A cycle or reset of a machine that is off powers it on (as IPMI's do).
            (PowerAction::Cycle | PowerAction::Reset, false) => Some(PowerAction::On),
            (a, _) => Some(a),
        };
        let Some(a) = send else {
            return Ok((false, on));
        };
        let (target, allowed) = self.reset_action(&c, &mut st, &uri, &sys).await?;
        let (reset, off_then_on) =
            vendor::reset_for(a.as_str(), allowed.as_deref()).ok_or_else(|| {
                Self::err(
                    t,
                    ErrorKind::Unsupported,
                    format!(
                        "the system offers no reset type for power {} (it allows {})",
                        a.as_str(),
                        allowed.as_deref().map(|a| a.join(", ")).unwrap_or_default()
                    ),
                )
            })?;
        self.action(&c, &mut st, &target, &json!({ "ResetType": reset }))
            .await?;
        info!(bmc = %c.name, reset, "Redfish reset sent");
        if off_then_on {
            self.wait_power(&c, &mut st, &uri, false, self.opts.power_settle)
                .await?;
            self.action(&c, &mut st, &target, &json!({ "ResetType": "On" }))
                .await?;
        }
        let Some(want) = a.leaves_on() else {
            return Ok((true, on));
        };
        let limit = if a == PowerAction::Soft {
            self.opts.task_deadline
        } else {
            self.opts.power_settle
        };
        let now = self.wait_power(&c, &mut st, &uri, want, limit).await?;
        Ok((true, now))
    }

    async fn wait_power(
        &self,
        c: &Conn,
        st: &mut State,
        uri: &str,
        want: bool,
        limit: Duration,
    ) -> Result<bool, Error> {
        let started = Instant::now();
        loop {
            let sys = self.get(c, st, uri).await?;
            let on = power_of(&c.target, &sys)?;
            if on == want {
                return Ok(on);
            }
            if started.elapsed() >= limit {
                return Err(Self::err(
                    &c.target,
                    ErrorKind::Timeout,
                    format!(
                        "power is still {} {:.0} s after asking for {}",
                        if on { "on" } else { "off" },
                        started.elapsed().as_secs_f64(),
                        if want { "on" } else { "off" }
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The reset action's target and the reset types the system allows (`None`: it does not
    /// say).
    async fn reset_action(
        &self,
        c: &Conn,
        st: &mut State,
        uri: &str,
        sys: &Value,
    ) -> Result<(String, Option<Vec<String>>), Error> {
        let action = sys
            .get("Actions")
            .and_then(|a| a.get("#ComputerSystem.Reset"));
        let target = action
            .and_then(|a| a.get("target"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                format!("{}/Actions/ComputerSystem.Reset", uri.trim_end_matches('/'))
            });
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(v) = action.and_then(|a| a.get("ResetType@Redfish.AllowableValues")) {
            return Ok((target, Some(strings(v))));
        }
        if let Some(info) = action
            .and_then(|a| a.get("@Redfish.ActionInfo"))
            .and_then(Value::as_str)
        {
            let info = self.get(c, st, info).await?;
            let allowed = info
                .get("Parameters")
                .and_then(Value::as_array)
                .and_then(|p| {
                    p.iter()
                        .find(|p| p.get("Name").and_then(Value::as_str) == Some("ResetType"))
                })
                .and_then(|p| p.get("AllowableValues"))
                .map(strings);
            return Ok((target, allowed));
        }
        Ok((target, None))
    }

    /// The system's boot override.
    pub async fn boot_override(&self, t: &Target) -> Result<BootOverride, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let (_, sys, _) = self.system(&c, &mut st).await?;
        Ok(boot_of(&sys))
    }

    /// Sets the boot override (once or continuous; UEFI or legacy where the system has a
    /// mode) and reads it back. Returns false when it was already so.
    pub async fn set_boot_override(
        &self,
        t: &Target,
        device: BootDevice,
        persistent: bool,
        uefi: bool,
    ) -> Result<bool, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let (uri, sys, etag) = self.system(&c, &mut st).await?;
        let now = boot_of(&sys);
        let has_mode = sys
            .get("Boot")
            .is_some_and(|b| b.get("BootSourceOverrideMode").is_some());
        let target = boot_target(device);
        if let Some(allowed) = sys
            .get("Boot")
            .and_then(|b| b.get("BootSourceOverrideTarget@Redfish.AllowableValues"))
            .and_then(Value::as_array)
            && !allowed.iter().any(|v| v.as_str() == Some(target))
        {
            return Err(Self::err(
                t,
                ErrorKind::Unsupported,
                format!(
                    "the system cannot boot {target} (it allows {})",
                    allowed
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let enabled = if persistent { "Continuous" } else { "Once" };
        let mode = if uefi { "UEFI" } else { "Legacy" };
        if now.target.as_deref() == Some(target)
            && now.enabled.as_deref() == Some(enabled)
            && (!has_mode || now.mode.as_deref() == Some(mode))
        {
            return Ok(false);
        }
        let mut boot = json!({
            "BootSourceOverrideTarget": target,
            "BootSourceOverrideEnabled": enabled,
        });
        if has_mode {
            boot["BootSourceOverrideMode"] = json!(mode);
        }
        self.call(
            &c,
            &mut st,
            Method::PATCH,
            &uri,
            Some(&json!({ "Boot": boot })),
            etag.as_deref(),
        )
        .await?;
        let after = boot_of(&self.get(&c, &mut st, &uri).await?);
        if after.target.as_deref() != Some(target) {
            return Err(Self::err(
                t,
                ErrorKind::Failed,
                format!(
                    "asked for boot override {target}, the system reports {}",
                    after.target.as_deref().unwrap_or("none")
                ),
            ));
        }
        Ok(true)
    }

    /// The first chassis the system is in.
    async fn chassis_uri(&self, c: &Conn, st: &mut State) -> Result<String, Error> {
        let (_, sys, _) = self.system(c, st).await?;
        if let Some(ch) = sys
            .get("Links")
            .and_then(|l| l.get("Chassis"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(odata_id)
        {
            return Ok(ch);
        }
        let root = self.root(c, st).await?;
        let coll = link(&root, "Chassis").unwrap_or_else(|| "/redfish/v1/Chassis".into());
        let coll = self.get(c, st, &coll).await?;
        coll.get("Members")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(odata_id)
            .ok_or_else(|| Self::err(&c.target, ErrorKind::NotFound, "the BMC lists no chassis"))
    }

    async fn members(&self, c: &Conn, st: &mut State, coll: &str) -> Result<Vec<Value>, Error> {
        let coll = self.get(c, st, coll).await?;
        let mut out = Vec::new();
        for m in coll
            .get("Members")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            // Members may come expanded; else each is read.
            if m.as_object().is_some_and(|o| o.len() > 1) {
                out.push(m);
            } else if let Some(id) = odata_id(&m) {
                out.push(self.get(c, st, &id).await?);
            }
        }
        Ok(out)
    }

    /// The members of a collection a resource links but the BMC may not serve (sushy-tools
    /// links `Memory` and answers 404, and `Storage` with 500 when it has no storage
    /// configured): what it cannot give is empty, said in the log; a BMC that refuses the
    /// credentials or does not answer is still an error.
    async fn optional_members(
        &self,
        c: &Conn,
        st: &mut State,
        coll: &str,
    ) -> Result<Vec<Value>, Error> {
        match self.members(c, st, coll).await {
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::NotFound | ErrorKind::Unsupported | ErrorKind::Failed
                ) =>
            {
                warn!(bmc = %c.name, coll, "left out of the inventory: {}", e.message);
                Ok(vec![])
            }
            r => r,
        }
    }

    /// Sensor readings: the chassis' `Sensors` collection where it has one, else its
    /// `Thermal` (temperatures, fans) and `Power` (voltages, power consumed) resources.
    pub async fn sensors(&self, t: &Target) -> Result<Vec<SensorReading>, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let ch_uri = self.chassis_uri(&c, &mut st).await?;
        let ch = self.get(&c, &mut st, &ch_uri).await?;
        let mut out = Vec::new();
        if let Some(sensors) = link(&ch, "Sensors") {
            for s in self.members(&c, &mut st, &sensors).await? {
                out.push(SensorReading {
                    name: str_of(&s, "Name"),
                    kind: str_of(&s, "ReadingType").to_ascii_lowercase(),
                    value: s.get("Reading").and_then(Value::as_f64),
                    unit: str_of(&s, "ReadingUnits"),
                });
            }
            return Ok(out);
        }
        if let Some(thermal) = link(&ch, "Thermal") {
            let th = self.get(&c, &mut st, &thermal).await?;
            for s in array(&th, "Temperatures") {
                out.push(SensorReading {
                    name: str_of(s, "Name"),
                    kind: "temperature".into(),
                    value: s.get("ReadingCelsius").and_then(Value::as_f64),
                    unit: "degrees C".into(),
                });
            }
            for s in array(&th, "Fans") {
                out.push(SensorReading {
                    name: str_of(s, "Name"),
                    kind: "fan".into(),
                    value: s.get("Reading").and_then(Value::as_f64),
                    unit: match str_of(s, "ReadingUnits").as_str() {
                        "Percent" => "percent".into(),
                        _ => "RPM".into(),
                    },
                });
            }
        }
        if let Some(power) = link(&ch, "Power") {
            let pw = self.get(&c, &mut st, &power).await?;
            for s in array(&pw, "Voltages") {
                out.push(SensorReading {
                    name: str_of(s, "Name"),
                    kind: "voltage".into(),
                    value: s.get("ReadingVolts").and_then(Value::as_f64),
                    unit: "volts".into(),
                });
            }
            for s in array(&pw, "PowerControl") {
                out.push(SensorReading {
                    name: str_of(s, "Name"),
                    kind: "power".into(),
                    value: s.get("PowerConsumedWatts").and_then(Value::as_f64),
                    unit: "watts".into(),
                });
            }
        }
        Ok(out)
    }

    /// The manager (BMC) that manages the system.
    async fn manager_uri(&self, c: &Conn, st: &mut State) -> Result<String, Error> {
        let (_, sys, _) = self.system(c, st).await?;
        if let Some(m) = sys
            .get("Links")
            .and_then(|l| l.get("ManagedBy"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(odata_id)
        {
            return Ok(m);
        }
        let root = self.root(c, st).await?;
        let coll = link(&root, "Managers").unwrap_or_else(|| "/redfish/v1/Managers".into());
        let coll = self.get(c, st, &coll).await?;
        coll.get("Members")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(odata_id)
            .ok_or_else(|| Self::err(&c.target, ErrorKind::NotFound, "the BMC lists no manager"))
    }

    /// A collection linked from the system or its manager, looked for in the vendor's order.
    async fn find_under(
        &self,
        c: &Conn,
        st: &mut State,
        order: &[Under],
        key: &str,
    ) -> Result<Option<String>, Error> {
        for place in order {
            let res = match place {
                Under::Systems => self.system(c, st).await?.1,
                Under::Managers => {
                    let m = self.manager_uri(c, st).await?;
                    self.get(c, st, &m).await?
                }
            };
            if let Some(l) = link(&res, key) {
                return Ok(Some(l));
            }
        }
        Ok(None)
    }

    async fn quirks(&self, c: &Conn, st: &mut State) -> Result<Quirks, Error> {
        Ok(vendor::quirks(&self.root(c, st).await?))
    }

    /// The event log service: the vendor's, else the first whose id is a usual one, else the
    /// first.
    async fn log_service(&self, c: &Conn, st: &mut State) -> Result<Value, Error> {
        let q = self.quirks(c, st).await?;
        let Some(coll) = self.find_under(c, st, q.logs, "LogServices").await? else {
            return Err(Self::err(
                &c.target,
                ErrorKind::Unsupported,
                "the BMC has no log services",
            ));
        };
        let services = self.members(c, st, &coll).await?;
        let pick = q
            .log_ids
            .iter()
            .chain(GENERIC_LOG_IDS)
            .find_map(|id| services.iter().find(|s| str_of(s, "Id") == *id))
            .or_else(|| services.first())
            .cloned();
        pick.ok_or_else(|| Self::err(&c.target, ErrorKind::NotFound, format!("{coll} is empty")))
    }

    /// The event log, oldest first; cleared afterwards when `clear`. Entries are numbered by
    /// their `Id` where it is a number.
    pub async fn event_log(&self, t: &Target, clear: bool) -> Result<(Vec<SelEntry>, bool), Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let svc = self.log_service(&c, &mut st).await?;
        let entries = match link(&svc, "Entries") {
            Some(e) => self.members(&c, &mut st, &e).await?,
            None => vec![],
        };
        let mut out: Vec<SelEntry> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| SelEntry {
                id: str_of(e, "Id").parse().unwrap_or(i as u16 + 1),
                at_s: e
                    .get("Created")
                    .and_then(Value::as_str)
                    .and_then(parse_time)
                    .and_then(|s| u32::try_from(s).ok()),
                sensor: match str_of(e, "SensorType") {
                    s if s.is_empty() => str_of(e, "EntryType"),
                    s => s,
                },
                sensor_number: e
                    .get("SensorNumber")
                    .and_then(Value::as_u64)
                    .and_then(|n| u8::try_from(n).ok())
                    .unwrap_or(0),
                event: str_of(e, "Message"),
                asserted: e
                    .get("EntryCode")
                    .and_then(Value::as_str)
                    .is_none_or(|c| !c.contains("Deassert")),
                raw: String::new(),
            })
            .collect();
        out.sort_by_key(|e| (e.at_s, e.id));
        let mut cleared = false;
        if clear {
            let target = svc
                .get("Actions")
                .and_then(|a| a.get("#LogService.ClearLog"))
                .and_then(|a| a.get("target"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Self::err(
                        t,
                        ErrorKind::Unsupported,
                        "the event log has no ClearLog action",
                    )
                })?;
            self.action(&c, &mut st, &target, &json!({})).await?;
            cleared = true;
        }
        Ok((out, cleared))
    }

    /// What the BMC knows of the machine without booting it: processors, memory, drives,
    /// NICs with their MACs, and the system's identity.
    pub async fn inventory(&self, t: &Target) -> Result<Inventory, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let (_, sys, _) = self.system(&c, &mut st).await?;
        let mut inv = Inventory {
            dmi: DmiInfo {
                vendor: str_of(&sys, "Manufacturer"),
                product: str_of(&sys, "Model"),
                serial: str_of(&sys, "SerialNumber"),
                uuid: str_of(&sys, "UUID").to_ascii_lowercase(),
            },
            ..Inventory::default()
        };
        let summary = sys.get("ProcessorSummary");
        let mut threads = 0u64;
        if let Some(p) = link(&sys, "Processors") {
            for cpu in self.optional_members(&c, &mut st, &p).await? {
                if str_of(&cpu, "ProcessorType").is_empty()
                    || str_of(&cpu, "ProcessorType") == "CPU"
                {
                    if inv.cpu.model.is_empty() {
                        inv.cpu.model = str_of(&cpu, "Model");
                    }
                    threads += cpu
                        .get("TotalThreads")
                        .or_else(|| cpu.get("TotalCores"))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                }
            }
        }
        if threads == 0 {
            threads = summary
                .and_then(|s| s.get("LogicalProcessorCount").or_else(|| s.get("Count")))
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        if inv.cpu.model.is_empty() {
            inv.cpu.model = summary.map(|s| str_of(s, "Model")).unwrap_or_default();
        }
        inv.cpu = CpuInfo {
            model: inv.cpu.model,
            count: u32::try_from(threads).unwrap_or(u32::MAX),
        };
        let mut memory = 0u64;
        if let Some(m) = link(&sys, "Memory") {
            for dimm in self.optional_members(&c, &mut st, &m).await? {
                memory += dimm.get("CapacityMiB").and_then(Value::as_u64).unwrap_or(0) << 20;
            }
        }
        if memory == 0 {
            let gib = sys
                .get("MemorySummary")
                .and_then(|m| m.get("TotalSystemMemoryGiB"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            memory = (gib * 1024.0 * 1024.0 * 1024.0) as u64;
        }
        inv.memory_bytes = memory;
        if let Some(s) = link(&sys, "Storage") {
            for ctrl in self.optional_members(&c, &mut st, &s).await? {
                for d in array(&ctrl, "Drives") {
                    let Some(uri) = odata_id(d) else { continue };
                    let d = self.get(&c, &mut st, &uri).await?;
                    inv.disks.push(DiskInfo {
                        name: str_of(&d, "Id"),
                        size_bytes: d.get("CapacityBytes").and_then(Value::as_u64).unwrap_or(0),
                        model: str_of(&d, "Model"),
                        serial: str_of(&d, "SerialNumber"),
                        wwn: array(&d, "Identifiers")
                            .iter()
                            .find(|i| str_of(i, "DurableNameFormat") == "NAA")
                            .map(|i| str_of(i, "DurableName"))
                            .unwrap_or_default(),
                        rotational: str_of(&d, "MediaType") == "HDD",
                    });
                }
            }
        } else if let Some(s) = link(&sys, "SimpleStorage") {
            for ctrl in self.optional_members(&c, &mut st, &s).await? {
                for d in array(&ctrl, "Devices") {
                    inv.disks.push(DiskInfo {
                        name: str_of(d, "Name"),
                        size_bytes: d.get("CapacityBytes").and_then(Value::as_u64).unwrap_or(0),
                        model: str_of(d, "Model"),
                        ..DiskInfo::default()
                    });
                }
            }
        }
        if let Some(n) = link(&sys, "EthernetInterfaces") {
            for nic in self.optional_members(&c, &mut st, &n).await? {
                let mac = str_of(&nic, "MACAddress").to_ascii_lowercase();
                if mac.is_empty() {
                    continue;
                }
                inv.nics.push(NicInfo {
                    name: str_of(&nic, "Id"),
                    mac,
                    link_up: str_of(&nic, "LinkStatus") == "LinkUp",
                    speed_mbps: nic.get("SpeedMbps").and_then(Value::as_u64),
                });
            }
        }
        Ok(inv)
    }

    /// The virtual media slots, where the vendor keeps them.
    async fn media_slots(
        &self,
        c: &Conn,
        st: &mut State,
    ) -> Result<Vec<(MediaSlot, Value)>, Error> {
        let q = self.quirks(c, st).await?;
        let Some(coll) = self
            .find_under(c, st, q.virtual_media, "VirtualMedia")
            .await?
        else {
            return Err(Self::err(
                &c.target,
                ErrorKind::Unsupported,
                "the BMC offers no virtual media (neither its manager nor the system links VirtualMedia)",
            ));
        };
        Ok(self
            .members(c, st, &coll)
            .await?
            .into_iter()
            .map(|m| {
                let slot = MediaSlot {
                    uri: odata_id(&m).unwrap_or_default(),
                    media_types: array(&m, "MediaTypes")
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                    inserted: m.get("Inserted").and_then(Value::as_bool).unwrap_or(false),
                    image: m
                        .get("Image")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                };
                (slot, m)
            })
            .collect())
    }

    /// The virtual media slots.
    pub async fn virtual_media(&self, t: &Target) -> Result<Vec<MediaSlot>, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        Ok(self
            .media_slots(&c, &mut st)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    async fn cd_slot(&self, c: &Conn, st: &mut State) -> Result<(MediaSlot, Value), Error> {
        let slots = self.media_slots(c, st).await?;
        let n = slots.len();
        slots
            .into_iter()
            .find(|(s, _)| s.media_types.iter().any(|m| m == "CD" || m == "DVD"))
            .ok_or_else(|| {
                Self::err(
                    &c.target,
                    ErrorKind::Unsupported,
                    format!("none of the BMC's {n} virtual media slots takes a CD or DVD"),
                )
            })
    }

    /// Inserts an ISO image (the BMC fetches it from `image`, an http(s) URL) as a CD,
    /// ejecting what was there, and reads the slot back.
    pub async fn insert_media(&self, t: &Target, image: &str) -> Result<MediaSlot, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let (slot, res) = self.cd_slot(&c, &mut st).await?;
        if slot.inserted && slot.image.as_deref() == Some(image) {
            return Ok(slot);
        }
        if slot.inserted {
            self.eject(&c, &mut st, &slot, &res).await?;
        }
        match action_target(&res, "#VirtualMedia.InsertMedia") {
            Some(target) => {
                self.action(
                    &c,
                    &mut st,
                    &target,
                    &json!({"Image": image, "Inserted": true, "WriteProtected": true}),
                )
                .await?
            }
            None => {
                self.call(
                    &c,
                    &mut st,
                    Method::PATCH,
                    &slot.uri,
                    Some(&json!({"Image": image, "Inserted": true, "WriteProtected": true})),
                    None,
                )
                .await?;
            }
        }
        let after = self.get(&c, &mut st, &slot.uri).await?;
        let now = after.get("Image").and_then(Value::as_str).unwrap_or("");
        if now != image {
            return Err(Self::err(
                t,
                ErrorKind::Failed,
                format!(
                    "inserted {image} into {}, the BMC reports `{now}`",
                    slot.uri
                ),
            ));
        }
        Ok(MediaSlot {
            inserted: after
                .get("Inserted")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            image: Some(now.to_owned()),
            ..slot
        })
    }

    /// Ejects the CD, if one is inserted; returns whether one was.
    pub async fn eject_media(&self, t: &Target) -> Result<bool, Error> {
        let c = self.conn(t)?;
        let mut st = c.state.lock().await;
        let (slot, res) = self.cd_slot(&c, &mut st).await?;
        if !slot.inserted && slot.image.is_none() {
            return Ok(false);
        }
        self.eject(&c, &mut st, &slot, &res).await?;
        Ok(true)
    }

    async fn eject(
        &self,
        c: &Conn,
        st: &mut State,
        slot: &MediaSlot,
        res: &Value,
    ) -> Result<(), Error> {
        match action_target(res, "#VirtualMedia.EjectMedia") {
            Some(target) => self.action(c, st, &target, &json!({})).await,
            None => self
                .call(
                    c,
                    st,
                    Method::PATCH,
                    &slot.uri,
                    Some(&json!({"Image": null, "Inserted": false})),
                    None,
                )
                .await
                .map(drop),
        }
    }
}

/// The largest answer read from a BMC (a whole expanded collection fits many times over).
const MAX_ANSWER: usize = 16 << 20;

const GENERIC_LOG_IDS: &[&str] = &["Sel", "SEL", "EventLog", "Log1"];

impl Conn {
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }
}

fn action_target(res: &Value, name: &str) -> Option<String> {
    res.get("Actions")?
        .get(name)?
        .get("target")?
        .as_str()
        .map(str::to_owned)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn power_of(t: &Target, sys: &Value) -> Result<bool, Error> {
    match sys.get("PowerState").and_then(Value::as_str) {
        Some("On" | "PoweringOff" | "Paused") => Ok(true),
        Some("Off" | "PoweringOn") => Ok(false),
        other => Err(Client::err(
            t,
            ErrorKind::Failed,
            format!("the system reports power state {other:?}"),
        )),
    }
}

fn boot_of(sys: &Value) -> BootOverride {
    let b = sys.get("Boot");
    let s = |k: &str| {
        b.and_then(|b| b.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    BootOverride {
        target: s("BootSourceOverrideTarget"),
        enabled: s("BootSourceOverrideEnabled"),
        mode: s("BootSourceOverrideMode"),
    }
}

/// The error and its causes, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_and_without_offsets() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("2026-12-08T03:15:00+00:00"), Some(1_796_699_700));
        assert_eq!(
            parse_time("2026-12-08T04:15:00.123+01:00"),
            Some(1_796_699_700)
        );
        assert_eq!(parse_time("2026-12-08T03:15:00"), Some(1_796_699_700));
        assert_eq!(parse_time("2026-13-08T03:15:00Z"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn messages_come_from_extended_info_or_the_error() {
        let b = json!({"error": {"code": "Base.1.8.GeneralError", "message": "outer",
            "@Message.ExtendedInfo": [{"Message": "inner one"}, {"Message": "inner two"}]}});
        assert_eq!(redfish_message(&b), "inner one; inner two");
        assert_eq!(
            redfish_message(&json!({"error": {"message": "only"}})),
            "only"
        );
        assert_eq!(redfish_message(&json!("plain text")), "plain text");
    }
}
