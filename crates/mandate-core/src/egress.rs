//! Where a task's own traffic may go: the hosts its tools declare. The
//! proxy's egress listener admits an HTTP `CONNECT host:port` tunnel only
//! to a host declared by a `reveal` tool in the task's scope (the agent
//! holds such a tool's secret itself, so the tunnel limits where that
//! secret can be sent, not what is sent). A tool declares the host of its
//! `upstream` URL and, besides, its `egress_hosts`.
//!
//! Both sides are parsed strictly, so that what is compared is what a
//! resolver would look up: names are lowercase ASCII labels, a name whose
//! last label is a number is refused (`127.1` and `2130706433` are IPv4 to
//! `inet_aton`), IP literals are compared as addresses, and a port is
//! always explicit on the target and defaulted (443) on a declaration.

use crate::Invalid;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// Most hosts one tool may declare in `egress_hosts`.
pub const MAX_EGRESS_HOSTS: usize = 32;
/// Longest host name (RFC 1035).
const MAX_NAME: usize = 253;
/// Longest authority looked at: a bracketed IPv6 address or a name, `:`,
/// five digits.
const MAX_AUTHORITY: usize = MAX_NAME + 7;

/// A host as a resolver sees it: a lowercase name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// Why `name` is not a lowercase host name as a resolver looks it up
/// (no trailing dot): `None` when it is one.
pub fn host_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Some("a host name is 1-253 characters");
    }
    let labels_ok = name.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return Some("a host name is dot-separated labels of a-z, 0-9, `-` and `_`");
    }
    // WHATWG URL and inet_aton read a name ending in a number as IPv4.
    let last = name.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Some("a name ending in a number is an IPv4 address in disguise; write the address");
    }
    None
}

/// `host` (no port): an IP literal (IPv6 in brackets) or a host name,
/// lowercased, one trailing dot dropped.
fn parse_host(host: &str) -> Result<Host, &'static str> {
    if let Some(inner) = host.strip_prefix('[') {
        let v6 = inner
            .strip_suffix(']')
            .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
            .ok_or("an IPv6 address in brackets is `[address]`")?;
        return Ok(Host::Ip(IpAddr::V6(v6)));
    }
    if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    if host.contains(':') {
        return Err("an IPv6 address must be in brackets: `[::1]:443`");
    }
    let name = host.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name);
    match host_name_problem(name) {
        Some(p) => Err(p),
        None => Ok(Host::Name(name.to_owned())),
    }
}

/// `host:port` → (host, port); `None` for the port when there is none.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = match authority.rsplit_once(':') {
        // `[::1]` alone: the colons are the address's.
        Some((h, p)) if !authority.starts_with('[') || h.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n = p
                .parse::<u16>()
                .ok()
                .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("the port must be a number from 1 to 65535")?;
            Some(n)
        }
    };
    Ok((host, port))
}

/// Where a `CONNECT` asks to go: the request target in authority form,
/// `host:port` (RFC 9110 §9.3.6), the port required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// Parse untrusted input: the error says what is wrong, never echoes
    /// more than a short prefix of it.
    pub fn parse(authority: &str) -> Result<Target, Invalid> {
        let bad = |why: &str| Invalid::new("authority", why);
        if authority.len() > MAX_AUTHORITY {
            return Err(bad("longer than any host:port"));
        }
        if authority.contains('@') {
            return Err(bad(
                "user information (`user@`) has no place in a CONNECT target",
            ));
        }
        if authority.is_empty()
            || authority
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/?#\\%".contains(&b))
        {
            return Err(bad("must be host:port, with nothing else"));
        }
        let (host, port) = split_port(authority).map_err(bad)?;
        let port = port.ok_or_else(|| bad("a port is required: host:port"))?;
        let host = parse_host(host).map_err(bad)?;
        Ok(Target { host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What a declaration names: one host, or every name below a domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pattern {
    Exact(Host),
    /// `*.example.com`: any name ending in `.example.com`, at any depth;
    /// not `example.com` itself.
    Below(String),
}

/// A host a tool declares for egress, and its port: `api.example.com`
/// (port 443), `api.example.com:8443`, `*.example.com`, `10.0.0.5:8443`,
/// `[2001:db8::1]:443`. Written back in that form, always with the port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EgressHost {
    pattern: Pattern,
    port: u16,
}

impl EgressHost {
    /// A declaration as an operator writes it.
    pub fn parse(s: &str) -> Result<EgressHost, Invalid> {
        let bad = |why: &str| Invalid::new("egress_hosts", why);
        if s.len() > MAX_AUTHORITY
            || s.is_empty()
            || s.bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/?#@\\%".contains(&b))
        {
            return Err(bad(
                "must be a host (a name, an IP or `*.` and a name) and an optional port, nothing else",
            ));
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("must be lowercase"));
        }
        let (host, port) = split_port(s).map_err(bad)?;
        let port = port.unwrap_or(443);
        let pattern = match host.strip_prefix("*.") {
            Some(below) => match parse_host(below).map_err(bad)? {
                Host::Name(n) => Pattern::Below(n),
                Host::Ip(_) => return Err(bad("`*.` goes before a name, not an address")),
            },
            None if host.contains('*') => {
                return Err(bad("a wildcard is only `*.` before a name"));
            }
            None => Pattern::Exact(parse_host(host).map_err(bad)?),
        };
        Ok(EgressHost { pattern, port })
    }

    /// The host and port of an `http(s)://` upstream base URL (443 or 80
    /// by scheme when it names none); `None` when it has no usable host.
    pub fn of_upstream(url: &str) -> Option<EgressHost> {
        let (rest, default) = match url.split_once("://")? {
            ("https", r) => (r, 443),
            ("http", r) => (r, 80),
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = split_port(authority).ok()?;
        Some(EgressHost {
            pattern: Pattern::Exact(parse_host(host).ok()?),
            port: port.unwrap_or(default),
        })
    }

    /// Whether a tunnel to `target` is to this declared host.
    pub fn allows(&self, target: &Target) -> bool {
        if self.port != target.port {
            return false;
        }
        match (&self.pattern, &target.host) {
            (Pattern::Exact(h), t) => h == t,
            (Pattern::Below(domain), Host::Name(n)) => n
                .strip_suffix(domain.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (Pattern::Below(_), Host::Ip(_)) => false,
        }
    }
}

impl fmt::Display for EgressHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Pattern::Exact(h) => write!(f, "{h}:{}", self.port),
            Pattern::Below(d) => write!(f, "*.{d}:{}", self.port),
        }
    }
}

impl TryFrom<String> for EgressHost {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        EgressHost::parse(&s)
    }
}

impl From<EgressHost> for String {
    fn from(h: EgressHost) -> String {
        h.to_string()
    }
}

/// A tool's `egress_hosts` as registered: each valid, none twice, at most
/// [`MAX_EGRESS_HOSTS`].
pub(crate) fn parse_egress_hosts(list: &[String]) -> Result<Vec<EgressHost>, Invalid> {
    if list.len() > MAX_EGRESS_HOSTS {
        return Err(Invalid::new(
            "egress_hosts",
            format!("at most {MAX_EGRESS_HOSTS} hosts"),
        ));
    }
    let mut out: Vec<EgressHost> = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let h = EgressHost::parse(s)
            .map_err(|e| Invalid::new(format!("egress_hosts[{i}]"), e.message))?;
        if out.contains(&h) {
            return Err(Invalid::new(
                format!("egress_hosts[{i}]"),
                format!("`{h}` is listed twice"),
            ));
        }
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn declared(s: &str) -> EgressHost {
        EgressHost::parse(s).unwrap()
    }

    #[test]
    fn a_connect_target_is_host_and_port() {
        let t = target("API.Example.com:443");
        assert_eq!(t.host, Host::Name("api.example.com".into()));
        assert_eq!(t.port, 443);
        assert_eq!(
            target("api.example.com.:443"),
            t,
            "one trailing dot is the same name"
        );
        assert_eq!(target("127.0.0.1:9000").to_string(), "127.0.0.1:9000");
        assert_eq!(target("[::1]:443").to_string(), "[::1]:443");
    }

    #[test]
    fn hostile_connect_targets_are_refused_with_the_reason() {
        for (bad, why) in [
            ("", "host:port"),
            ("api.example.com", "port is required"),
            ("api.example.com:0", "1 to 65535"),
            ("api.example.com:65536", "1 to 65535"),
            ("api.example.com:+443", "1 to 65535"),
            ("api.example.com:", "1 to 65535"),
            ("a@b:443", "user information"),
            ("user:pw@api.example.com:443", "user information"),
            ("api.example.com:443/x", "nothing else"),
            ("api example.com:443", "nothing else"),
            ("api.example.com\r\n:443", "nothing else"),
            ("a%2eb:443", "nothing else"),
            ("::1:443", "brackets"),
            ("[::1:443", "port is required"),
            ("[zz]:443", "brackets"),
            ("127.1:443", "IPv4"),
            ("2130706433:443", "IPv4"),
            ("0x7f000001:443", "IPv4"),
            ("a..b:443", "labels"),
            ("-a.b:443", "labels"),
            (":443", "1-253"),
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.message.contains(why), "{bad:?}: {e}");
        }
        let long = format!("{}:443", "a".repeat(300));
        assert!(Target::parse(&long).unwrap_err().message.contains("longer"));
        let long_label = format!("{}.com:443", "a".repeat(64));
        assert!(Target::parse(&long_label).is_err());
    }

    #[test]
    fn a_declared_host_defaults_to_port_443_and_is_written_with_it() {
        assert_eq!(
            declared("api.example.com").to_string(),
            "api.example.com:443"
        );
        assert_eq!(
            declared("*.example.com:8443").to_string(),
            "*.example.com:8443"
        );
        assert_eq!(declared("[::1]").to_string(), "[::1]:443");
        let json = serde_json::to_string(&declared("api.example.com")).unwrap();
        assert_eq!(json, "\"api.example.com:443\"");
        let back: EgressHost = serde_json::from_str(&json).unwrap();
        assert_eq!(back, declared("api.example.com:443"));
    }

    #[test]
    fn declarations_are_lowercase_hosts_with_at_most_a_leading_wildcard() {
        for bad in [
            "API.example.com",
            "*",
            "*.",
            "a.*.example.com",
            "*example.com",
            "**.example.com",
            "*.10.0.0.1",
            "https://api.example.com",
            "api.example.com/x",
            "user@api.example.com",
            "api.example.com:0",
            "",
            "10.1",
        ] {
            assert!(EgressHost::parse(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_EGRESS_HOSTS)
            .map(|i| format!("h{i}.example.com"))
            .collect();
        assert_eq!(parse_egress_hosts(&many).unwrap_err().field, "egress_hosts");
        let twice = vec!["a.example.com".to_owned(), "a.example.com:443".to_owned()];
        assert_eq!(
            parse_egress_hosts(&twice).unwrap_err().field,
            "egress_hosts[1]"
        );
        let bad = vec!["a.example.com".to_owned(), "A".to_owned()];
        assert_eq!(
            parse_egress_hosts(&bad).unwrap_err().field,
            "egress_hosts[1]"
        );
    }

    #[test]
    fn a_tunnel_is_allowed_only_to_the_declared_host_and_port() {
        let api = declared("api.example.com");
        assert!(api.allows(&target("api.example.com:443")));
        assert!(api.allows(&target("API.EXAMPLE.COM:443")));
        assert!(!api.allows(&target("api.example.com:80")));
        assert!(!api.allows(&target("api.example.com.evil.net:443")));
        assert!(!api.allows(&target("evilapi.example.com:443")));
        assert!(!api.allows(&target("x.api.example.com:443")));
    }

    #[test]
    fn a_wildcard_covers_names_below_it_and_not_the_domain_or_look_alikes() {
        let below = declared("*.example.com");
        assert!(below.allows(&target("a.example.com:443")));
        assert!(below.allows(&target("a.b.example.com:443")));
        assert!(!below.allows(&target("example.com:443")));
        assert!(!below.allows(&target("badexample.com:443")));
        assert!(!below.allows(&target("a.example.com:8443")));
    }

    #[test]
    fn ip_literals_match_only_the_same_declared_address() {
        let ip = declared("10.0.0.5:8443");
        assert!(ip.allows(&target("10.0.0.5:8443")));
        assert!(!ip.allows(&target("10.0.0.6:8443")));
        assert!(!declared("*.example.com").allows(&target("10.0.0.5:443")));
        let v6 = declared("[2001:db8::1]");
        assert!(v6.allows(&target("[2001:db8:0::1]:443")));
        assert!(!v6.allows(&target("[::1]:443")));
        // The mapped form is another address: not declared, not allowed.
        assert!(!declared("127.0.0.1:443").allows(&target("[::ffff:127.0.0.1]:443")));
    }

    #[test]
    fn an_upstream_url_declares_its_host_and_scheme_port() {
        let of = |u: &str| EgressHost::of_upstream(u).map(|h| h.to_string());
        assert_eq!(
            of("https://api.example.com").as_deref(),
            Some("api.example.com:443")
        );
        assert_eq!(
            of("https://API.example.com/v1/").as_deref(),
            Some("api.example.com:443")
        );
        assert_eq!(
            of("http://127.0.0.1:9000").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            of("http://tickets.internal").as_deref(),
            Some("tickets.internal:80")
        );
        assert_eq!(
            of("https://u:p@api.example.com:8443/x").as_deref(),
            Some("api.example.com:8443")
        );
        assert_eq!(of("https://[::1]:8443").as_deref(), Some("[::1]:8443"));
        assert_eq!(of("ftp://api.example.com"), None);
        assert_eq!(of("https://"), None);
        assert_eq!(of("https://bad host"), None);
    }

    proptest::proptest! {
        /// Whatever the bytes, parsing answers (never panics), and a parsed
        /// target reads back as itself.
        #[test]
        fn any_authority_parses_or_is_refused(s in "\\PC{0,80}") {
            if let Ok(t) = Target::parse(&s) {
                proptest::prop_assert_eq!(Target::parse(&t.to_string()).unwrap(), t);
            }
            let _ = EgressHost::parse(&s);
            let _ = EgressHost::of_upstream(&s);
        }
    }
}
