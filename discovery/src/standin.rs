//! A stateful stand-in for Consul's HTTP API, for tests (feature `consul-testing`).
//!
//! No Consul binary can be installed where meshwork is built, so the Consul backend is tested
//! against this in-process axum server, written from Consul's documented requests and
//! responses. It implements what the backend uses:
//!
//! * `PUT /v1/agent/service/register`: `ID` defaults to `Name`; one `Check` or several
//!   `Checks` (HTTP, TCP or TTL) get the default ids `service:<id>` (`service:<id>:<n>` when
//!   several) and the name `Service '<name>' check`, and start **critical** unless a `Status`
//!   is given; `DeregisterCriticalServiceAfter` is raised to the minimum (one minute in Consul,
//!   configurable here so tests don't take minutes).
//! * `PUT /v1/agent/service/deregister/:id`, with Consul's 404 text for an unknown id.
//! * `PUT /v1/agent/check/pass|warn|fail/:check_id?note=` and `PUT /v1/agent/check/update/:id`;
//!   a TTL check not refreshed in time turns critical with the output `TTL expired`; HTTP and
//!   TCP checks are really probed every interval.
//! * The reaper: every `reap_interval` (30 s in Consul), services whose check has been
//!   critical longer than their `DeregisterCriticalServiceAfter` are deregistered.
//! * `GET /v1/health/service/:name` with `passing`, `tag`, `dc`, `filter` (a subset of
//!   Consul's filter language: `==`, `!=`, `contains`, `in`, joined by `and`), and blocking
//!   queries: `index` and `wait` (default 5m, at most 10m, plus up to wait/16 of jitter), the
//!   index answered in `X-Consul-Index`.
//! * ACLs when configured: the token from `X-Consul-Token`, `Authorization: Bearer` or
//!   `?token=`; 403 `ACL not found` for an unknown token, `Permission denied...` for a token
//!   (or the anonymous token) lacking the permission.
//!
//! Its state lives in memory: [`ConsulStandIn::restart`] comes back on the same port with an
//! empty catalog and the index starting over, like a restarted dev agent.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Consul's minimum `DeregisterCriticalServiceAfter`.
pub const CONSUL_MIN_DEREGISTER_CRITICAL_AFTER: Duration = Duration::from_secs(60);
/// How often Consul's reaper runs.
pub const CONSUL_REAP_INTERVAL: Duration = Duration::from_secs(30);
/// The datacenter the stand-in claims to be.
pub const DATACENTER: &str = "dc1";
/// The node name the stand-in registers services on.
pub const NODE: &str = "standin";

/// What an ACL token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AclPolicy {
    /// `service:read` and `node:read`.
    Read,
    /// `service:write` too (register, deregister, update checks).
    Write,
}

/// Options of a [`ConsulStandIn`].
///
/// ```
/// use meshwork_discovery::standin::{AclPolicy, StandInConfig};
/// use std::time::Duration;
///
/// let config = StandInConfig::default()
///     .acl_token("root-token", AclPolicy::Write)
///     .reap_interval(Duration::from_millis(100))
///     .min_deregister_critical_after(Duration::ZERO);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StandInConfig {
    /// Known tokens; when empty, ACLs are off.
    pub acl_tokens: HashMap<String, AclPolicy>,
    /// Time between reaper runs; default [`CONSUL_REAP_INTERVAL`].
    pub reap_interval: Duration,
    /// Floor for `DeregisterCriticalServiceAfter`; default
    /// [`CONSUL_MIN_DEREGISTER_CRITICAL_AFTER`].
    pub min_deregister_critical_after: Duration,
    /// How often TTL deadlines are checked; default 20 ms.
    pub tick: Duration,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            acl_tokens: HashMap::new(),
            reap_interval: CONSUL_REAP_INTERVAL,
            min_deregister_critical_after: CONSUL_MIN_DEREGISTER_CRITICAL_AFTER,
            tick: Duration::from_millis(20),
        }
    }
}

impl StandInConfig {
    /// Turns ACLs on (default deny) and adds a token.
    #[must_use]
    pub fn acl_token(mut self, token: impl Into<String>, policy: AclPolicy) -> Self {
        self.acl_tokens.insert(token.into(), policy);
        self
    }

    /// Sets the reaper interval.
    #[must_use]
    pub fn reap_interval(mut self, every: Duration) -> Self {
        self.reap_interval = every;
        self
    }

    /// Sets the floor for `DeregisterCriticalServiceAfter`.
    #[must_use]
    pub fn min_deregister_critical_after(mut self, min: Duration) -> Self {
        self.min_deregister_critical_after = min;
        self
    }
}

/// A request the stand-in received, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// When it arrived.
    pub at: Instant,
}

/// The status of one check, as the stand-in holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckStatus {
    /// `passing`, `warning` or `critical`.
    pub status: String,
    /// The check's output.
    pub output: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Ttl(Duration),
    Http {
        url: String,
        interval: Duration,
        timeout: Duration,
    },
    Tcp {
        addr: String,
        interval: Duration,
        timeout: Duration,
    },
}

#[derive(Debug, Clone)]
struct CheckState {
    id: String,
    name: String,
    kind: Kind,
    status: String,
    output: String,
    deadline: Option<Instant>,
    next_run: Instant,
    deregister_after: Option<Duration>,
    critical_since: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Svc {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u64,
    meta: BTreeMap<String, String>,
    weights: (u64, u64),
    checks: Vec<CheckState>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Default)]
struct Catalog {
    index: u64,
    services: BTreeMap<String, Svc>,
    service_index: HashMap<String, u64>,
    reported_index: Option<u64>,
    requests: Vec<RecordedRequest>,
}

#[derive(Debug)]
struct Shared {
    config: StandInConfig,
    catalog: Mutex<Catalog>,
    changed: watch::Sender<u64>,
    stopping: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Catalog> {
        self.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, cat: &mut Catalog, service: &str) {
        cat.index += 1;
        cat.service_index.insert(service.to_string(), cat.index);
        if let Some(s) = cat.services.values_mut().find(|s| s.name == service) {
            s.modify_index = s.modify_index.max(cat.index);
        }
        self.changed.send_replace(cat.index);
    }
}

/// A running stand-in: bind it, point a [`ConsulConfig`](crate::ConsulConfig) at
/// [`url`](Self::url), and inspect or disturb it from the test.
///
/// ```
/// use meshwork_discovery::standin::ConsulStandIn;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let consul = ConsulStandIn::start().await?;
/// assert!(consul.url().starts_with("http://127.0.0.1:"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ConsulStandIn {
    addr: SocketAddr,
    config: StandInConfig,
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
}

impl ConsulStandIn {
    /// Starts with the default config on `127.0.0.1:0`.
    pub async fn start() -> io::Result<ConsulStandIn> {
        Self::start_with(StandInConfig::default()).await
    }

    /// Starts with `config` on `127.0.0.1:0`.
    pub async fn start_with(config: StandInConfig) -> io::Result<ConsulStandIn> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = new_shared(&config);
        let mut standin = ConsulStandIn {
            addr,
            config,
            shared,
            server: None,
            ticker: None,
        };
        standin.serve(listener);
        Ok(standin)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let shared = self.shared.clone();
        let app = router(shared.clone());
        let mut stopping = shared.stopping.subscribe();
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|s| *s).await;
                })
                .await;
        }));
        self.ticker = Some(tokio::spawn(ticker(shared)));
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: open blocking queries end with a 500, the port is released.
    pub async fn stop(&mut self) {
        self.shared.stopping.send_replace(true);
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }

    /// Stops (if running) and starts again on the same port with an empty catalog and the
    /// index starting over.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.shared = new_shared(&self.config);
                    self.serve(listener);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not rebind")))
    }

    /// The raft index now.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }

    /// Makes every response report `index` in `X-Consul-Index` (and block against it),
    /// whatever the catalog holds: simulates an index that went backwards (a snapshot
    /// restore) or Consul's old bug of answering 0. `None` goes back to normal.
    pub fn set_reported_index(&self, index: Option<u64>) {
        let mut cat = self.shared.lock();
        cat.reported_index = index;
        drop(cat);
        self.shared.changed.send_modify(|i| *i += 0);
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The status and output of a check.
    pub fn check(&self, check_id: &str) -> Option<CheckStatus> {
        let cat = self.shared.lock();
        cat.services
            .values()
            .flat_map(|s| s.checks.iter())
            .find(|c| c.id == check_id)
            .map(|c| CheckStatus {
                status: c.status.clone(),
                output: c.output.clone(),
            })
    }

    /// Ids of the registered services.
    pub fn service_ids(&self) -> Vec<String> {
        self.shared.lock().services.keys().cloned().collect()
    }
}

impl Drop for ConsulStandIn {
    fn drop(&mut self) {
        self.shared.stopping.send_replace(true);
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

fn new_shared(config: &StandInConfig) -> Arc<Shared> {
    Arc::new(Shared {
        config: config.clone(),
        catalog: Mutex::new(Catalog {
            index: 1,
            ..Catalog::default()
        }),
        changed: watch::Sender::new(1),
        stopping: watch::Sender::new(false),
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route("/v1/agent/check/pass/{id}", put(check_pass))
        .route("/v1/agent/check/warn/{id}", put(check_warn))
        .route("/v1/agent/check/fail/{id}", put(check_fail))
        .route("/v1/agent/check/update/{id}", put(check_update))
        .route("/v1/health/service/{name}", get(health_service))
        .layer(middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let query = req.uri().query().map(parse_query).unwrap_or_default();
    shared.lock().requests.push(RecordedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query,
        at: Instant::now(),
    });
    next.run(req).await
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && s.is_char_boundary(i + 1)
                && s.is_char_boundary(i + 3) =>
            {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// Checks the request's token; `Err` is the 403 to answer.
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    write: bool,
    resource: &str,
) -> Result<(), Box<Response>> {
    let tokens = &shared.config.acl_tokens;
    if tokens.is_empty() {
        return Ok(());
    }
    let token = headers
        .get("x-consul-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .or_else(|| query.get("token").cloned())
        .filter(|t| !t.is_empty());
    let needed = if write {
        "service:write"
    } else {
        "service:read"
    };
    match token {
        None => Err(Box::new(text(
            StatusCode::FORBIDDEN,
            format!(
                "Permission denied: anonymous token lacks permission '{needed}' on \"{resource}\". The anonymous token is used implicitly when a request does not specify a token."
            ),
        ))),
        Some(t) => match tokens.get(&t) {
            None => Err(Box::new(text(StatusCode::FORBIDDEN, "ACL not found"))),
            Some(AclPolicy::Read) if write => Err(Box::new(text(
                StatusCode::FORBIDDEN,
                format!("Permission denied: token lacks permission '{needed}' on \"{resource}\""),
            ))),
            Some(_) => Ok(()),
        },
    }
}

/// Parses a Go duration string ("10s", "1m30s", "1.5s", "250ms", "0").
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| {
            k.eq_ignore_ascii_case(name) || k.replace('_', "").eq_ignore_ascii_case(name)
        })
        .map(|(_, v)| v)
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    field(v, name).and_then(Value::as_str).map(str::to_string)
}

fn dur_field(v: &Value, name: &str) -> Result<Option<Duration>, String> {
    match field(v, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_go_duration(s)
            .map(Some)
            .ok_or_else(|| format!("invalid duration \"{s}\" for {name}")),
        Some(Value::Number(n)) => Ok(n.as_u64().map(Duration::from_nanos)),
        Some(other) => Err(format!("invalid duration {other} for {name}")),
    }
}

fn parse_check(
    def: &Value,
    default_id: String,
    default_name: String,
    min_dereg: Duration,
    now: Instant,
) -> Result<CheckState, String> {
    let ttl = dur_field(def, "TTL")?;
    let interval = dur_field(def, "Interval")?;
    let timeout = dur_field(def, "Timeout")?.unwrap_or(Duration::from_secs(10));
    let kind = if let Some(ttl) = ttl {
        Kind::Ttl(ttl)
    } else if let Some(url) = str_field(def, "HTTP").filter(|u| !u.is_empty()) {
        let interval = interval.ok_or("Interval must be > 0 for Script, HTTP, or TCP checks")?;
        Kind::Http {
            url,
            interval,
            timeout,
        }
    } else if let Some(addr) = str_field(def, "TCP").filter(|u| !u.is_empty()) {
        let interval = interval.ok_or("Interval must be > 0 for Script, HTTP, or TCP checks")?;
        Kind::Tcp {
            addr,
            interval,
            timeout,
        }
    } else {
        return Err(
            "Must provide TTL or Script/DockerContainerID/HTTP/TCP/... and Interval".into(),
        );
    };
    let status = str_field(def, "Status").unwrap_or_else(|| "critical".into());
    if !matches!(status.as_str(), "passing" | "warning" | "critical") {
        return Err("Status for checks must 'passing', 'warning', 'critical'".to_string());
    }
    let deregister_after = dur_field(def, "DeregisterCriticalServiceAfter")?
        .filter(|d| !d.is_zero())
        .map(|d| d.max(min_dereg));
    Ok(CheckState {
        id: str_field(def, "CheckID")
            .or_else(|| str_field(def, "ID"))
            .filter(|s| !s.is_empty())
            .unwrap_or(default_id),
        name: str_field(def, "Name")
            .filter(|s| !s.is_empty())
            .unwrap_or(default_name),
        critical_since: (status == "critical").then_some(now),
        status,
        output: String::new(),
        deadline: ttl.map(|t| now + t),
        next_run: now,
        deregister_after,
        kind,
    })
}

async fn register(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let def: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            );
        }
    };
    let Some(name) = str_field(&def, "Name").filter(|n| !n.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "Missing service name");
    };
    if let Err(r) = authorize(&shared, &headers, &query, true, &name) {
        return *r;
    }
    let id = str_field(&def, "ID")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let port = match field(&def, "Port") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(p) if p <= 65535 => p,
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Request decode failed: invalid Port {v}"),
                );
            }
        },
    };
    let weights = match field(&def, "Weights") {
        None | Some(Value::Null) => (1, 1),
        Some(w) => {
            let passing = field(w, "Passing").and_then(Value::as_u64).unwrap_or(1);
            let warning = field(w, "Warning").and_then(Value::as_u64).unwrap_or(1);
            if passing == 0 {
                return text(StatusCode::BAD_REQUEST, "Passing must be greater than 0");
            }
            (passing, warning)
        }
    };
    let mut defs: Vec<Value> = Vec::new();
    if let Some(c) = field(&def, "Check").filter(|c| !c.is_null()) {
        defs.push(c.clone());
    }
    if let Some(Value::Array(cs)) = field(&def, "Checks") {
        defs.extend(cs.iter().cloned());
    }
    let now = Instant::now();
    let min = shared.config.min_deregister_critical_after;
    let several = defs.len() > 1;
    let mut checks = Vec::new();
    for (n, c) in defs.iter().enumerate() {
        let default_id = if several {
            format!("service:{id}:{}", n + 1)
        } else {
            format!("service:{id}")
        };
        match parse_check(c, default_id, format!("Service '{name}' check"), min, now) {
            Ok(c) => checks.push(c),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("Invalid check: {e}")),
        }
    }
    let meta = match field(&def, "Meta") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    let tags = match field(&def, "Tags") {
        Some(Value::Array(t)) => t
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let mut cat = shared.lock();
    // A re-registered check keeps the status it had (as Consul's agent does).
    if let Some(old) = cat.services.get(&id) {
        for c in &mut checks {
            if let Some(prev) = old.checks.iter().find(|p| p.id == c.id) {
                c.status = prev.status.clone();
                c.output = prev.output.clone();
                c.critical_since = prev.critical_since;
                c.deadline = prev.deadline;
            }
        }
    }
    let create_index = cat
        .services
        .get(&id)
        .map(|s| s.create_index)
        .unwrap_or(cat.index + 1);
    let svc = Svc {
        id: id.clone(),
        name: name.clone(),
        tags,
        address: str_field(&def, "Address").unwrap_or_default(),
        port,
        meta,
        weights,
        checks,
        create_index,
        modify_index: cat.index + 1,
    };
    let old_name = cat.services.insert(id, svc).map(|s| s.name);
    if let Some(old_name) = old_name.filter(|o| *o != name) {
        shared.bump(&mut cat, &old_name);
    }
    shared.bump(&mut cat, &name);
    StatusCode::OK.into_response()
}

async fn deregister(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut cat = shared.lock();
    let name = cat.services.get(&id).map(|s| s.name.clone());
    if let Err(r) = authorize(
        &shared,
        &headers,
        &query,
        true,
        name.as_deref().unwrap_or(&id),
    ) {
        return *r;
    }
    match name {
        None => text(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name."
            ),
        ),
        Some(name) => {
            cat.services.remove(&id);
            shared.bump(&mut cat, &name);
            StatusCode::OK.into_response()
        }
    }
}

fn set_check(
    shared: &Shared,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    check_id: &str,
    status: &str,
    output: String,
    ttl_only: bool,
) -> Response {
    let mut cat = shared.lock();
    let found = cat.services.values().find_map(|s| {
        s.checks
            .iter()
            .find(|c| c.id == check_id)
            .map(|c| (s.name.clone(), matches!(c.kind, Kind::Ttl(_))))
    });
    let Some((name, is_ttl)) = found else {
        if let Err(r) = authorize(shared, headers, query, true, check_id) {
            return *r;
        }
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown check ID \"{check_id}\". Ensure that the check ID is passed, not the check name."
            ),
        );
    };
    if let Err(r) = authorize(shared, headers, query, true, &name) {
        return *r;
    }
    if ttl_only && !is_ttl {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CheckID \"{check_id}\" does not have associated TTL"),
        );
    }
    let now = Instant::now();
    let mut changed = false;
    for s in cat.services.values_mut() {
        for c in s.checks.iter_mut().filter(|c| c.id == check_id) {
            if let Kind::Ttl(ttl) = c.kind {
                c.deadline = Some(now + ttl);
            }
            if c.status != status || c.output != output {
                changed = true;
                if status == "critical" && c.status != "critical" {
                    c.critical_since = Some(now);
                } else if status != "critical" {
                    c.critical_since = None;
                }
                c.status = status.to_string();
                c.output = output.clone();
            }
        }
    }
    if changed {
        shared.bump(&mut cat, &name);
    }
    StatusCode::OK.into_response()
}

async fn check_pass(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let note = query.get("note").cloned().unwrap_or_default();
    set_check(&shared, &headers, &query, &id, "passing", note, true)
}

async fn check_warn(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let note = query.get("note").cloned().unwrap_or_default();
    set_check(&shared, &headers, &query, &id, "warning", note, true)
}

async fn check_fail(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let note = query.get("note").cloned().unwrap_or_default();
    set_check(&shared, &headers, &query, &id, "critical", note, true)
}

async fn check_update(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let def: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            );
        }
    };
    let status = str_field(&def, "Status").unwrap_or_default();
    if !matches!(status.as_str(), "passing" | "warning" | "critical") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Invalid check status: \"{status}\""),
        );
    }
    let output = str_field(&def, "Output").unwrap_or_default();
    set_check(&shared, &headers, &query, &id, &status, output, true)
}

/// One clause of the filter subset: `selector op "value"` or `"value" in selector`.
#[derive(Debug)]
struct Clause {
    selector: String,
    op: &'static str,
    value: String,
}

fn parse_filter(filter: &str) -> Result<Vec<Clause>, String> {
    let mut out = Vec::new();
    for part in filter.split(" and ") {
        let part = part.trim();
        let unquote = |s: &str| -> Option<String> {
            let s = s.trim();
            s.strip_prefix('"')?.strip_suffix('"').map(str::to_string)
        };
        let clause = if let Some((l, r)) = part.split_once(" == ") {
            unquote(r).map(|v| Clause {
                selector: l.trim().into(),
                op: "==",
                value: v,
            })
        } else if let Some((l, r)) = part.split_once(" != ") {
            unquote(r).map(|v| Clause {
                selector: l.trim().into(),
                op: "!=",
                value: v,
            })
        } else if let Some((l, r)) = part.split_once(" contains ") {
            unquote(r).map(|v| Clause {
                selector: l.trim().into(),
                op: "contains",
                value: v,
            })
        } else if let Some((l, r)) = part.split_once(" in ") {
            unquote(l).map(|v| Clause {
                selector: r.trim().into(),
                op: "contains",
                value: v,
            })
        } else {
            None
        };
        out.push(clause.ok_or_else(|| {
            format!(
                "Failed to create boolean expression evaluator: unsupported expression {part:?}"
            )
        })?);
    }
    Ok(out)
}

fn select(entry: &Value, selector: &str) -> Option<Value> {
    let mut v = entry;
    for seg in selector.split('.') {
        v = v.get(seg)?;
    }
    Some(v.clone())
}

fn matches_filter(entry: &Value, clauses: &[Clause]) -> bool {
    clauses.iter().all(|c| {
        let v = select(entry, &c.selector);
        match c.op {
            "==" => v.as_ref().and_then(Value::as_str) == Some(c.value.as_str()),
            "!=" => v.as_ref().and_then(Value::as_str) != Some(c.value.as_str()),
            _ => match v {
                Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(c.value.as_str())),
                Some(Value::String(s)) => s.contains(&c.value),
                Some(Value::Object(m)) => m.contains_key(&c.value),
                _ => false,
            },
        }
    })
}

fn entry_json(s: &Svc) -> Value {
    json!({
        "Node": {
            "ID": "00000000-0000-0000-0000-000000000001",
            "Node": NODE,
            "Address": "127.0.0.1",
            "Datacenter": DATACENTER,
            "TaggedAddresses": {"lan": "127.0.0.1", "wan": "127.0.0.1"},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": 1,
            "ModifyIndex": 1
        },
        "Service": {
            "ID": s.id,
            "Service": s.name,
            "Tags": s.tags,
            "Address": s.address,
            "Meta": if s.meta.is_empty() { Value::Null } else { json!(s.meta) },
            "Port": s.port,
            "Weights": {"Passing": s.weights.0, "Warning": s.weights.1},
            "EnableTagOverride": false,
            "Namespace": "default",
            "CreateIndex": s.create_index,
            "ModifyIndex": s.modify_index
        },
        "Checks": std::iter::once(json!({
            "Node": NODE,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "CreateIndex": 1,
            "ModifyIndex": 1
        })).chain(s.checks.iter().map(|c| json!({
            "Node": NODE,
            "CheckID": c.id,
            "Name": c.name,
            "Status": c.status,
            "Notes": "",
            "Output": c.output,
            "ServiceID": s.id,
            "ServiceName": s.name,
            "ServiceTags": s.tags,
            "Type": match c.kind { Kind::Ttl(_) => "ttl", Kind::Http { .. } => "http", Kind::Tcp { .. } => "tcp" },
            "CreateIndex": s.create_index,
            "ModifyIndex": s.modify_index
        }))).collect::<Vec<_>>()
    })
}

async fn health_service(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&shared, &headers, &query, false, &name) {
        return *r;
    }
    if let Some(dc) = query
        .get("dc")
        .filter(|d| !d.is_empty() && *d != DATACENTER)
    {
        let _ = dc;
        return text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
    }
    let clauses = match query.get("filter").filter(|f| !f.is_empty()) {
        Some(f) => match parse_filter(f) {
            Ok(c) => c,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        },
        None => Vec::new(),
    };
    let min_index: u64 = match query.get("index").map(|i| i.parse::<u64>()) {
        None => 0,
        Some(Ok(i)) => i,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
    };
    let wait = match query.get("wait") {
        None => Duration::from_secs(300),
        Some(w) => match parse_go_duration(w) {
            Some(w) => w.min(Duration::from_secs(600)),
            None => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
        },
    };
    let passing = query
        .get("passing")
        .is_some_and(|v| !matches!(v.as_str(), "false" | "0"));
    let tag = query.get("tag").cloned();

    let index_of = |cat: &Catalog| -> u64 {
        cat.reported_index
            .unwrap_or_else(|| cat.service_index.get(&name).copied().unwrap_or(cat.index))
    };
    if min_index > 0 {
        let jitter = wait.mul_f64(fastrand::f64() / 16.0);
        let deadline = Instant::now() + wait + jitter;
        let mut changed = shared.changed.subscribe();
        let mut stopping = shared.stopping.subscribe();
        loop {
            if index_of(&shared.lock()) > min_index {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                r = changed.changed() => if r.is_err() { break },
                _ = stopping.wait_for(|s| *s) => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "agent is shutting down");
                }
            }
        }
    }
    let cat = shared.lock();
    let index = index_of(&cat);
    let entries: Vec<Value> = cat
        .services
        .values()
        .filter(|s| s.name == name)
        .filter(|s| !passing || s.checks.iter().all(|c| c.status == "passing"))
        .filter(|s| tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .map(entry_json)
        .filter(|e| matches_filter(e, &clauses))
        .collect();
    drop(cat);
    let mut response = axum::Json(Value::Array(entries)).into_response();
    let h = response.headers_mut();
    h.insert("x-consul-index", HeaderValue::from(index));
    h.insert("x-consul-knownleader", HeaderValue::from_static("true"));
    h.insert("x-consul-lastcontact", HeaderValue::from_static("0"));
    response
}

async fn ticker(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.tick);
    let mut next_reap = Instant::now() + shared.config.reap_interval;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut probes = Vec::new();
        {
            let mut cat = shared.lock();
            let mut touched = Vec::new();
            for s in cat.services.values_mut() {
                for c in &mut s.checks {
                    match &c.kind {
                        Kind::Ttl(_) => {
                            if c.deadline.is_some_and(|d| now >= d) {
                                c.deadline = None;
                                if c.status != "critical" {
                                    c.critical_since = Some(now);
                                }
                                if c.status != "critical" || c.output != "TTL expired" {
                                    c.status = "critical".into();
                                    c.output = "TTL expired".into();
                                    touched.push(s.name.clone());
                                }
                            }
                        }
                        Kind::Http { interval, .. } | Kind::Tcp { interval, .. } => {
                            if now >= c.next_run {
                                c.next_run = now + *interval;
                                probes.push((s.id.clone(), c.id.clone(), c.kind.clone()));
                            }
                        }
                    }
                }
            }
            if now >= next_reap {
                next_reap = now + shared.config.reap_interval;
                let dead: Vec<(String, String)> = cat
                    .services
                    .values()
                    .filter(|s| {
                        s.checks.iter().any(|c| {
                            c.status == "critical"
                                && matches!((c.deregister_after, c.critical_since), (Some(after), Some(since)) if now.duration_since(since) >= after)
                        })
                    })
                    .map(|s| (s.id.clone(), s.name.clone()))
                    .collect();
                for (id, name) in dead {
                    cat.services.remove(&id);
                    touched.push(name);
                }
            }
            for name in touched {
                shared.bump(&mut cat, &name);
            }
        }
        for (service_id, check_id, kind) in probes {
            let shared = shared.clone();
            tokio::spawn(async move {
                let (status, output) = probe(&kind).await;
                let mut cat = shared.lock();
                let now = Instant::now();
                let mut name = None;
                if let Some(s) = cat.services.get_mut(&service_id)
                    && let Some(c) = s.checks.iter_mut().find(|c| c.id == check_id)
                    && (c.status != status || c.output != output)
                {
                    if status == "critical" && c.status != "critical" {
                        c.critical_since = Some(now);
                    } else if status != "critical" {
                        c.critical_since = None;
                    }
                    c.status = status.into();
                    c.output = output;
                    name = Some(s.name.clone());
                }
                if let Some(name) = name {
                    shared.bump(&mut cat, &name);
                }
            });
        }
    }
}

async fn probe(kind: &Kind) -> (&'static str, String) {
    match kind {
        Kind::Tcp { addr, timeout, .. } => {
            match tokio::time::timeout(*timeout, tokio::net::TcpStream::connect(addr.as_str()))
                .await
            {
                Ok(Ok(_)) => ("passing", format!("TCP connect {addr}: Success")),
                Ok(Err(e)) => ("critical", format!("dial tcp {addr}: {e}")),
                Err(_) => ("critical", format!("dial tcp {addr}: i/o timeout")),
            }
        }
        Kind::Http { url, timeout, .. } => {
            match tokio::time::timeout(*timeout, http_get(url)).await {
                Ok(Ok((code, reason))) => {
                    let status = match code {
                        200..=299 => "passing",
                        429 => "warning",
                        _ => "critical",
                    };
                    (status, format!("HTTP GET {url}: {code} {reason} Output: "))
                }
                Ok(Err(e)) => ("critical", format!("Get \"{url}\": {e}")),
                Err(_) => (
                    "critical",
                    format!(
                        "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                    ),
                ),
            }
        }
        Kind::Ttl(_) => ("critical", String::new()),
    }
}

async fn http_get(url: &str) -> io::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| io::Error::other("the stand-in probes only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(target).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: Consul Health Check\r\nAccept: text/plain, text/*, */*\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.splitn(3, ' ');
    let _version = parts.next();
    let code = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| io::Error::other(format!("malformed HTTP response: {line:?}")))?;
    Ok((code, parts.next().unwrap_or_default().to_string()))
}
