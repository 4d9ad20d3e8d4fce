//! Who the client is: its address behind trusted proxies, and what a
//! session is bound to.

use std::net::IpAddr;

/// An address block such as `10.0.0.0/8` or `::1/128`; a bare address is
/// a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address or address/prefix"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            Some(len) => len
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

impl Cidr {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (canonical(self.network), ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - self.prefix_len as u32)
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - self.prefix_len as u32)
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address. Only a peer inside `trusted` may name another
/// address, through `X-Forwarded-For` (or `Forwarded: for=`); the client is
/// the rightmost address in that chain that is not itself a trusted proxy.
pub fn client_ip(
    peer: IpAddr,
    trusted: &[Cidr],
    x_forwarded_for: Option<&str>,
    forwarded: Option<&str>,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = match (x_forwarded_for, forwarded) {
        (Some(xff), _) => xff
            .split(',')
            .filter_map(|a| parse_node(a.trim()))
            .collect(),
        (None, Some(forwarded)) => forwarded
            .split([',', ';'])
            .filter_map(|part| {
                let (key, value) = part.trim().split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))?
            })
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut client = peer;
    for ip in chain.into_iter().rev() {
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    text.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains(ip("10.1.2.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.9.9")), "IPv4-mapped");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_cannot_name_another_address() {
        let trusted = cidrs(&["127.0.0.1"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &trusted, Some("1.1.1.1"), None),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("203.0.113.9"), &[], Some("1.1.1.1"), None),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_rightmost_untrusted_first() {
        let trusted = cidrs(&["127.0.0.1", "10.0.0.0/8"]);
        let peer = ip("127.0.0.1");
        assert_eq!(
            client_ip(peer, &trusted, Some("198.51.100.7"), None),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(
                peer,
                &trusted,
                Some("6.6.6.6, 198.51.100.7, 10.0.0.5"),
                None
            ),
            ip("198.51.100.7"),
            "a spoofed leftmost entry is ignored"
        );
        assert_eq!(
            client_ip(peer, &trusted, Some("10.0.0.9"), None),
            ip("10.0.0.9")
        );
        assert_eq!(client_ip(peer, &trusted, Some("garbage"), None), peer);
        assert_eq!(client_ip(peer, &trusted, None, None), peer);
    }

    #[test]
    fn forwarded_header_for_parameters() {
        let trusted = cidrs(&["127.0.0.1"]);
        let peer = ip("127.0.0.1");
        assert_eq!(
            client_ip(
                peer,
                &trusted,
                None,
                Some(r#"for=192.0.2.60;proto=http;by=203.0.113.43"#)
            ),
            ip("192.0.2.60")
        );
        assert_eq!(
            client_ip(
                peer,
                &trusted,
                None,
                Some(r#"for="[2001:db8:cafe::17]:4711", for=127.0.0.1"#)
            ),
            ip("2001:db8:cafe::17")
        );
    }
}
