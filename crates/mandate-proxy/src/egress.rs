//! The egress listener (`egress_listen`): HTTP `CONNECT host:port`, the
//! forward-proxy half of `HTTPS_PROXY`, for agents that hold a `reveal`
//! tool's secret themselves. A tunnel opens only
//!
//! - with a live task token as `Proxy-Authorization` (`Bearer <token>`, or
//!   `Basic` with the token as password: what curl, Python and Node send
//!   for `HTTPS_PROXY=http://user:TOKEN@proxy:port`), judged by the one
//!   decision path's token stage (`mandate_policy::check_token`), the
//!   same check every call through the proxy passes first;
//! - to a host that a `reveal` tool in the token's task scope declares
//!   (its upstream's host, its `egress_hosts`), in the proxy's environment.
//!
//! Anything else is refused and audited, and so is every tunnel: its
//! opening record is in the spool before the upstream is reached, its
//! outcome (bytes each way, how long, why it ended) when it closes. A
//! tunnel ends when its token expires or the one decision path stops
//! accepting it (revoked task or agent, ended task), checked every second.
//!
//! The proxy never sees inside: TLS runs end to end between the agent and
//! the upstream. This mode limits *where* a revealed credential can be
//! taken, not what is sent there.

use crate::decide::{HolderFacts, Known};
use crate::error::{Code, Deny};
use crate::record::CallRecord;
use crate::state::State;
use crate::tunnel::{End, splice};
use http::StatusCode;
use mandate_conn::serve::Phase;
use mandate_core::{Host, Target, Tool};
use mandate_policy::{Subject, check_token};
use mandate_token::claims::VerifiedAccess;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Largest request head read (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in a head.
const MAX_HEADERS: usize = 64;
/// What a refusal's message shows of the target the agent sent.
const SHOWN: usize = 80;

/// Accept on `listener` until the proxy drains, each connection holding a
/// place of the proxy's `max_connections` (shared with the injection
/// listener); then wait for open tunnels, which end at [`Phase::Close`].
pub async fn serve(
    listener: TcpListener,
    st: Arc<State>,
    places: Arc<Semaphore>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut conns = JoinSet::new();
    'accepting: loop {
        let place = tokio::select! {
            biased;
            _ = draining(&mut phase) => break,
            place = places.clone().acquire_owned() => match place {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = loop {
            tokio::select! {
                biased;
                _ = draining(&mut phase) => break 'accepting,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                a = listener.accept() => break a,
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                conns.spawn(connection(st.clone(), stream, peer, phase.clone(), place));
            }
            Err(e) => mandate_conn::serve::accept_failed(&e).await,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Until the proxy stops accepting (or is gone).
async fn draining(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p != Phase::Serve).await;
}

/// A request head as the agent sent it.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub target: String,
    /// `Proxy-Authorization`, if sent exactly once; `Err` if sent twice.
    pub authorization: Result<Option<Vec<u8>>, ()>,
    /// Bytes the agent sent after the head (the start of its TLS
    /// handshake, if it did not wait for the answer): go upstream first.
    pub early: Vec<u8>,
}

/// Why no head was read.
enum NoHead {
    /// The agent went away or said nothing in time: nothing to answer.
    Gone,
    /// Something that is not an HTTP/1 request head, or too large.
    Bad(Deny),
}

fn bad_request(message: &str) -> NoHead {
    NoHead::Bad(Deny::new(
        StatusCode::BAD_REQUEST,
        Code::BadRequest,
        message,
    ))
}

/// Read and parse one request head (at most [`MAX_HEAD`] bytes).
async fn read_head(stream: &mut TcpStream) -> Result<Head, NoHead> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(|_| NoHead::Gone)?;
        if n == 0 {
            return Err(NoHead::Gone);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf)? {
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            return Err(bad_request("the request head is larger than 16 KiB"));
        }
    }
}

/// A whole head from `buf`, `None` if more is needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, NoHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(bad_request("more than 64 header fields"));
        }
        Err(_) => return Err(bad_request("not an HTTP/1 request")),
    };
    let mut auth = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("proxy-authorization"));
    let authorization = match (auth.next(), auth.next()) {
        (None, _) => Ok(None),
        (Some(h), None) => Ok(Some(h.value.to_vec())),
        (Some(_), Some(_)) => Err(()),
    };
    Ok(Some(Head {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        authorization,
        early: buf[n..].to_vec(),
    }))
}

fn unauthenticated(code: Code, message: &str) -> Deny {
    Deny::new(StatusCode::PROXY_AUTHENTICATION_REQUIRED, code, message)
}

/// The access token from `Proxy-Authorization`: `Bearer <token>`, or
/// `Basic base64(anything:<token>)`. Anything else is a 407.
pub fn proxy_token(value: Result<Option<&[u8]>, ()>) -> Result<String, Deny> {
    use base64::Engine;
    const HOW: &str = "send the task's access token as `Proxy-Authorization: Bearer <token>`, or as the password of the proxy URL (HTTPS_PROXY=http://mandate:<token>@host:port)";
    let value = match value {
        Ok(Some(v)) => v,
        Ok(None) => return Err(unauthenticated(Code::MissingToken, HOW)),
        Err(()) => {
            return Err(unauthenticated(
                Code::InvalidRequest,
                "send Proxy-Authorization once",
            ));
        }
    };
    let malformed = || unauthenticated(Code::InvalidRequest, HOW);
    let value = std::str::from_utf8(value).map_err(|_| malformed())?;
    let (scheme, rest) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let pair = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| malformed())?;
        let pair = String::from_utf8(pair).map_err(|_| malformed())?;
        let (_, password) = pair.split_once(':').ok_or_else(malformed)?;
        password.to_owned()
    } else {
        return Err(malformed());
    };
    let plausible = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plausible {
        return Err(malformed());
    }
    Ok(token)
}

/// `s` cut for a message.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(SHOWN).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A token refusal on this listener: the one decision path's code, as a
/// 403 (401 would ask for `WWW-Authenticate`, which proxies do not use).
fn forbidden(d: Deny) -> Deny {
    match d.status {
        StatusCode::UNAUTHORIZED => Deny {
            status: StatusCode::FORBIDDEN,
            ..d
        },
        _ => d,
    }
}

/// An admitted tunnel: where to, for which tool, on whose token.
pub struct Admitted {
    pub target: Target,
    pub tool: Arc<Tool>,
    pub token: Arc<VerifiedAccess>,
}

/// Whether `head` may open a tunnel. Fills `known` as facts are learnt.
pub async fn admit(st: &State, head: &Head, known: &mut Known) -> Result<Admitted, Deny> {
    if head.method != "CONNECT" {
        return Err(Deny::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::NotConnect,
            "this is the proxy's egress listener: it takes only `CONNECT host:port` (HTTPS_PROXY); calls with an injected secret go to the proxy's other listener",
        ));
    }
    let target = Target::parse(&head.target).map_err(|e| {
        Deny::new(
            StatusCode::BAD_REQUEST,
            Code::BadTarget,
            format!("CONNECT `{}`: {}", shown(&head.target), e.message),
        )
    })?;
    let now = crate::now_secs();
    st.readiness(crate::now_ms())
        .map_err(|why| Deny::unavailable(Code::NotReady, why))?;
    let snap = st
        .catalog
        .snapshot()
        .ok_or_else(|| Deny::unavailable(Code::NotReady, "the broker's catalog is not loaded"))?;
    let token = proxy_token(
        head.authorization
            .as_ref()
            .map(|v| v.as_deref())
            .map_err(|_| ()),
    )?;
    let issuer = st
        .issuer()
        .ok_or_else(|| Deny::unavailable(Code::NotReady, "the broker's issuer is not known yet"))?;
    let verified = st
        .verifier
        .verify(&st.broker, &issuer, &token)
        .await
        .map_err(forbidden)?;
    known.jti = Some(verified.claims.jti.clone());
    let task = live_task(st, &verified, known, now).await?;
    if verified.claims.cnf.is_some() {
        // A proof signs one request's method and URL; a tunnel carries
        // requests the proxy never sees, so none could be checked.
        return Err(Deny::forbidden(
            Code::DpopBoundToken,
            "a DPoP-bound token cannot prove possession over CONNECT; use it with the proxy's injection listener, or tunnel with an unbound token of the task",
        ));
    }
    let in_scope = task
        .scope
        .items()
        .iter()
        .filter_map(|item| snap.tools.get(item.tool.as_str()))
        .filter(|t| {
            t.environment == task.environment
                && st.config.environment.is_none_or(|e| e == t.environment)
        });
    let mut tools = in_scope.filter(|t| t.admits_egress(&target));
    let Some(tool) = tools.next().cloned() else {
        return Err(Deny::forbidden(
            Code::EgressDenied,
            format!(
                "`{}` is not a host that a reveal tool in task {}'s scope declares",
                shown(&target.to_string()),
                task.id
            ),
        ));
    };
    known.tool = Some(tool.name.to_string());
    Ok(Admitted {
        target,
        tool,
        token: verified,
    })
}

/// The token's task, if the one decision path's token stage accepts the
/// token now; else its refusal (as a 403).
async fn live_task(
    st: &State,
    verified: &VerifiedAccess,
    known: &mut Known,
    now: i64,
) -> Result<Arc<mandate_core::Task>, Deny> {
    let subject = Subject::of(verified).ok();
    if let Some(s) = &subject {
        known.agent = Some(s.agent.to_string());
        known.task = Some(s.task.to_string());
        known.chain = s.chain_names();
        known.breakglass = verified.claims.breakglass;
    }
    let facts = HolderFacts::gather(st, verified, subject.as_ref(), now).await?;
    match check_token(verified, &facts.holder(), now) {
        Ok(live) => Ok(live.task.clone()),
        Err(r) => {
            known.misuse = r.misuse.as_deref().cloned();
            Err(forbidden(Deny::from(r)))
        }
    }
}

/// Whether an open tunnel may go on: its token still accepted, and the
/// proxy still able to tell (`None`: go on).
pub async fn still_allowed(st: &State, token: &VerifiedAccess) -> Option<End> {
    if let Err(why) = st.readiness(crate::now_ms()) {
        return Some(End::Unsure(why));
    }
    let mut known = Known::default();
    match live_task(st, token, &mut known, crate::now_secs()).await {
        Ok(_) => None,
        Err(d) if d.status == StatusCode::SERVICE_UNAVAILABLE => Some(End::Unsure(d.message)),
        Err(d) => Some(End::Refused(format!("{}: {}", d.code, d.message))),
    }
}

/// The answer to a refused request, whole, and the connection closed after.
fn answer(d: &Deny, id: &str) -> Vec<u8> {
    let body = d.body();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {id}\r\n",
        d.status.as_u16(),
        d.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if d.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        head.push_str("proxy-authenticate: Bearer realm=\"mandate-egress\"\r\n");
        head.push_str("proxy-authenticate: Basic realm=\"mandate-egress\"\r\n");
    }
    if d.status == StatusCode::METHOD_NOT_ALLOWED {
        head.push_str("allow: CONNECT\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Record the refusal, answer it and close.
async fn refuse(mut stream: TcpStream, call: CallRecord, d: Deny, wait: Duration) {
    let id = call.refused(&d);
    let _ = tokio::time::timeout(wait, async {
        stream.write_all(&answer(&d, &id)).await?;
        stream.shutdown().await
    })
    .await;
}

/// Reach the target (within `upstream_timeout_secs`).
async fn connect(target: &Target, wait: Duration) -> Result<TcpStream, Deny> {
    let shown_target = shown(&target.to_string());
    let connecting = async {
        match &target.host {
            Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, target.port)).await,
            Host::Name(name) => TcpStream::connect((name.as_str(), target.port)).await,
        }
    };
    match tokio::time::timeout(wait, connecting).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(Deny::upstream(
            Code::UpstreamUnreachable,
            format!("cannot reach {shown_target}: {e}"),
        )),
        Err(_) => Err(Deny::new(
            StatusCode::GATEWAY_TIMEOUT,
            Code::UpstreamTimeout,
            format!("{shown_target} did not answer within {}s", wait.as_secs()),
        )),
    }
}

async fn connection(
    st: Arc<State>,
    mut stream: TcpStream,
    peer: SocketAddr,
    phase: watch::Receiver<Phase>,
    _place: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let wait = Duration::from_secs(st.config.header_read_timeout_secs);
    let head = match tokio::time::timeout(wait, read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(NoHead::Bad(d))) => {
            let call = CallRecord::egress(st.clone(), Some(peer), "");
            return refuse(stream, call, d, wait).await;
        }
        Ok(Err(NoHead::Gone)) | Err(_) => return,
    };
    let call = CallRecord::egress(st.clone(), Some(peer), &head.target);
    let span = tracing::info_span!("egress", request_id = %call.id, target = %shown(&head.target));
    open(st, stream, head, call, phase).instrument(span).await
}

/// Admit the tunnel `head` asks for, record it, open it, carry it.
async fn open(
    st: Arc<State>,
    mut stream: TcpStream,
    head: Head,
    mut call: CallRecord,
    phase: watch::Receiver<Phase>,
) {
    let wait = Duration::from_secs(st.config.header_read_timeout_secs);
    let admitted = admit(&st, &head, &mut call.known).await;
    let a = match admitted {
        Ok(a) => a,
        Err(d) => return refuse(stream, call, d, wait).await,
    };
    call.allowed = true;
    call.reasons = vec![format!("egress to a host of tool `{}`", a.tool.name)];
    if !call.write_ahead() {
        call.allowed = false;
        let d = Deny::unavailable(
            Code::AuditUnavailable,
            "the proxy could not write this tunnel's audit record, so it was not opened",
        );
        return refuse(stream, call, d, wait).await;
    }
    let upstream_wait = Duration::from_secs(st.config.upstream_timeout_secs);
    let upstream = match connect(&a.target, upstream_wait).await {
        Ok(u) => u,
        Err(d) => return refuse(stream, call, d, wait).await,
    };
    let _ = upstream.set_nodelay(true);
    call.status = 200;
    let established = format!(
        "HTTP/1.1 200 Connection Established\r\nx-request-id: {}\r\n\r\n",
        call.id
    );
    if stream.write_all(established.as_bytes()).await.is_err() {
        return call.fail("client_closed: the agent went away before the tunnel opened");
    }
    let token = a.token.clone();
    let st2 = st.clone();
    let outcome = splice(stream, upstream, &head.early, phase, move || {
        let (st, token) = (st2.clone(), token.clone());
        async move { still_allowed(&st, &token).await }
    })
    .await;
    call.bytes = outcome.down;
    call.bytes_up = Some(outcome.up);
    let ended = outcome.end.to_string();
    tracing::info!(up = outcome.up, down = outcome.down, ended = %ended, "tunnel closed");
    call.fail(&ended);
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
