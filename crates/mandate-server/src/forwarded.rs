//! Which address a request comes from, behind reverse proxies the operator
//! trusts. The forwarding header (`X-Forwarded-For`, or RFC 7239
//! `Forwarded` — one of them, the one the operator's proxies write; the
//! other could come from the client untouched) is believed only from a peer
//! inside `trusted_proxies`, and only as far back as the chain of trusted
//! proxies goes: the rightmost address that is not itself a trusted proxy
//! is the client. Everything left of it could have been written by the
//! client.

use http::HeaderMap;
use std::net::IpAddr;

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is
/// its own /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

/// IPv4 mapped into IPv6 is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = s.trim().split_once('/').unwrap_or((s.trim(), ""));
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            max
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`/{len}` is not a prefix length of 0..={max}"))?
        };
        Ok(Cidr { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (addr, addr_width)) = (bits(self.net), bits(canonical(ip)));
        if width != addr_width {
            return false;
        }
        let mask = if self.len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.len))
        };
        net & mask == addr & mask
    }
}

/// Which header the trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardingHeader {
    #[default]
    XForwardedFor,
    /// RFC 7239: `Forwarded: for=192.0.2.1;proto=https, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl ForwardingHeader {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(format!("`{s}` is not one of x-forwarded-for, forwarded")),
        }
    }

    /// The hops it lists, nearest last; `None` for a hop with no address
    /// (`unknown`, an obfuscated `_name`, no `for=`).
    fn hops(self, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let name = match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        };
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|hop| match self {
                Self::XForwardedFor => hop.trim().parse().ok(),
                Self::Forwarded => forwarded_for(hop),
            })
            .collect()
    }
}

/// The address in one RFC 7239 element's `for=` (quoted, bracketed IPv6,
/// with or without a port).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let node = value.trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    // An IPv4 address, maybe with `:port` (IPv6 must be bracketed).
    node.split(':')
        .next()?
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
    header: ForwardingHeader,
}

impl TrustedProxies {
    /// The blocks, or the index and problem of the first bad one.
    pub fn parse(list: &[String], header: ForwardingHeader) -> Result<Self, (usize, String)> {
        let blocks = list
            .iter()
            .enumerate()
            .map(|(i, s)| Cidr::parse(s).map_err(|e| (i, e)))
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { blocks, header })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|c| c.contains(ip))
    }

    /// The client behind `peer`, the address that connected.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        for hop in self.header.hops(headers).into_iter().rev() {
            // An entry that is no address ends the chain we can follow:
            // the last trusted proxy is then the client we count.
            let Some(ip) = hop else {
                return client;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.200.3.4")));
        assert!(c.contains(ip("::ffff:10.1.1.1")), "mapped IPv4");
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::a00:1")), "IPv6 is not IPv4");
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "2001:db8::/129", "nope", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()], ForwardingHeader::default()).unwrap();
        let lb = ip("10.0.0.5");
        // Untrusted peer: its header is ignored (it could say anything).
        assert_eq!(
            t.client(ip("198.51.100.9"), &xff(&["1.2.3.4"])),
            ip("198.51.100.9")
        );
        // Trusted peer: the client it names.
        assert_eq!(t.client(lb, &xff(&["198.51.100.7"])), ip("198.51.100.7"));
        // A spoofed entry left of the real client is not believed.
        assert_eq!(
            t.client(lb, &xff(&["6.6.6.6, 198.51.100.7", "10.0.0.9"])),
            ip("198.51.100.7")
        );
        // No header, or only trusted hops: the nearest proxy.
        assert_eq!(t.client(lb, &HeaderMap::new()), lb);
        assert_eq!(t.client(lb, &xff(&["10.1.1.1"])), ip("10.1.1.1"));
        // Garbage ends the chain at the last trusted hop.
        assert_eq!(t.client(lb, &xff(&["198.51.100.7, unknown"])), lb);
        // Nothing trusted: the peer, always.
        let none = TrustedProxies::default();
        assert_eq!(none.client(lb, &xff(&["198.51.100.7"])), lb);
        assert_eq!(
            TrustedProxies::parse(&["10.0.0.0/8".into(), "x".into()], Default::default())
                .unwrap_err()
                .0,
            1
        );
    }

    #[test]
    fn rfc7239_forwarded_is_read_only_when_chosen() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into()], ForwardingHeader::Forwarded).unwrap();
        let lb = ip("10.0.0.5");
        let fwd = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("forwarded", v.parse().unwrap());
            }
            h
        };
        assert_eq!(
            t.client(lb, &fwd(&["for=198.51.100.7;proto=https"])),
            ip("198.51.100.7")
        );
        assert_eq!(
            t.client(lb, &fwd(&["for=\"198.51.100.7:4711\""])),
            ip("198.51.100.7")
        );
        assert_eq!(
            t.client(lb, &fwd(&["for=\"[2001:db8::1]:4711\""])),
            ip("2001:db8::1")
        );
        // Spoofed elements left of the real client are not believed.
        assert_eq!(
            t.client(
                lb,
                &fwd(&["for=6.6.6.6, For=198.51.100.7", "for=10.0.0.9;by=10.0.0.5"])
            ),
            ip("198.51.100.7")
        );
        // Hidden or unknown nodes end the chain at the last trusted hop.
        for opaque in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=2001:db8::1",
        ] {
            assert_eq!(t.client(lb, &fwd(&[opaque])), lb, "{opaque}");
        }
        // The header not chosen is ignored: a client could send it.
        assert_eq!(t.client(lb, &xff(&["198.51.100.7"])), lb);
        let by_xff = TrustedProxies::parse(&["10.0.0.0/8".into()], Default::default()).unwrap();
        assert_eq!(by_xff.client(lb, &fwd(&["for=198.51.100.7"])), lb);
        assert!(ForwardingHeader::parse("x-real-ip").is_err());
    }
}
