//! The origin policy (PROTOCOL.md section 7): which pages may talk to a service.

/// An allow-list of origins such as `https://app.example.com` or
/// `https://*.example.com`; an empty list allows every origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// A policy allowing exactly these origins (and the gateway's own pages,
    /// see [`OriginPolicy::allows`]).
    pub fn allow_only<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        OriginPolicy {
            allowed: origins.into_iter().map(|o| normalize(o.as_ref())).collect(),
        }
    }

    /// True when any origin is allowed.
    pub fn allows_all(&self) -> bool {
        self.allowed.is_empty()
    }

    /// The allowed origins as configured (normalized).
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// Whether a request with this `Origin` header may proceed. `host` is the
    /// request's `Host`. A request without `Origin` comes from no browser
    /// page that could be refused this way, so it proceeds.
    ///
    /// Beside the list, the gateway's own pages (the iframe page, whose
    /// transports post from the gateway's origin) are allowed: an `Origin`
    /// equal to `Host` whose name DNS cannot rebind, that is an IP address
    /// or `localhost`, or an `https://` one, whose name the certificate
    /// vouched for. Any other `Origin` equal to `Host` may be a DNS-rebinding
    /// page (`evil.test` resolved to the gateway's address) and must be on
    /// the list like every other origin.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.allows_all() {
            return true;
        }
        let origin = normalize(origin);
        if host.is_some_and(|host| is_own_page(&origin, host)) {
            return true;
        }
        self.allowed.iter().any(|pattern| matches(pattern, &origin))
    }

    /// The `/info` `origins` value.
    pub fn info_origins(&self) -> Vec<String> {
        if self.allows_all() {
            vec!["*:*".to_owned()]
        } else {
            self.allowed.clone()
        }
    }

    /// The `Content-Security-Policy` of the iframe page, so only allowed pages
    /// (and the gateway's own) may embed it.
    pub fn frame_ancestors(&self) -> Option<String> {
        (!self.allows_all()).then(|| format!("frame-ancestors 'self' {}", self.allowed.join(" ")))
    }
}

/// Lowercase, without a trailing slash or the scheme's default port.
fn normalize(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("http://", ":80"), ("https://", ":443")] {
        if origin.starts_with(scheme) {
            if let Some(stripped) = origin.strip_suffix(port) {
                return stripped.to_owned();
            }
        }
    }
    origin
}

fn matches(pattern: &str, origin: &str) -> bool {
    if pattern == origin {
        return true;
    }
    // `https://*.example.com` allows any subdomain, not the bare domain.
    let Some((scheme, rest)) = pattern.split_once("://*.") else {
        return false;
    };
    origin
        .strip_prefix(scheme)
        .and_then(|o| o.strip_prefix("://"))
        .and_then(|host| host.strip_suffix(rest))
        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1 && !sub.contains('/'))
}

/// An origin equal to `host` that a DNS-rebinding page cannot have: see
/// [`OriginPolicy::allows`].
fn is_own_page(origin: &str, host: &str) -> bool {
    if !same_host(origin, host) {
        return false;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    scheme == "https" || names_no_dns(authority)
}

/// `HOST[:PORT]` whose host is an IP address or `localhost`.
fn names_no_dns(authority: &str) -> bool {
    let (name, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, rest)) if ip.parse::<std::net::Ipv6Addr>().is_ok() => (None, rest),
            _ => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((name, _)) => (Some(name), &authority[name.len()..]),
            None => (Some(authority), ""),
        },
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok =
        name.is_none_or(|name| name == "localhost" || name.parse::<std::net::Ipv4Addr>().is_ok());
    port_ok && name_ok
}

fn same_host(origin: &str, host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let without_scheme = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    without_scheme == host
        || (origin.starts_with("http://") && format!("{without_scheme}:80") == host)
        || (origin.starts_with("https://") && format!("{without_scheme}:443") == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_allows_everything() {
        let policy = OriginPolicy::default();
        assert!(policy.allows(Some("https://evil.example"), None));
        assert!(policy.allows(Some("null"), None));
        assert_eq!(policy.info_origins(), vec!["*:*"]);
        assert_eq!(policy.frame_ancestors(), None);
    }

    #[test]
    fn a_list_allows_exactly_its_origins() {
        let policy = OriginPolicy::allow_only(["https://app.example.com", "http://localhost:3000"]);
        assert!(policy.allows(Some("https://app.example.com"), None));
        assert!(policy.allows(Some("HTTPS://APP.EXAMPLE.COM/"), None));
        assert!(policy.allows(Some("https://app.example.com:443"), None));
        assert!(policy.allows(Some("http://localhost:3000"), None));
        for refused in [
            "https://evil.example",
            "http://app.example.com",
            "https://app.example.com.evil",
            "http://localhost:3001",
            "null",
            "",
        ] {
            assert!(!policy.allows(Some(refused), None), "{refused}");
        }
    }

    #[test]
    fn wildcards_allow_subdomains_only() {
        let policy = OriginPolicy::allow_only(["https://*.example.com"]);
        assert!(policy.allows(Some("https://a.example.com"), None));
        assert!(policy.allows(Some("https://a.b.example.com"), None));
        assert!(!policy.allows(Some("https://example.com"), None));
        assert!(!policy.allows(Some("https://evilexample.com"), None));
        assert!(!policy.allows(Some("http://a.example.com"), None));
    }

    #[test]
    fn requests_without_origin_and_from_the_gateway_itself_proceed() {
        let policy = OriginPolicy::allow_only(["https://app.example.com"]);
        assert!(policy.allows(None, None));
        assert!(policy.allows(Some("http://127.0.0.1:8081"), Some("127.0.0.1:8081")));
        assert!(policy.allows(Some("http://10.0.0.5"), Some("10.0.0.5:80")));
        assert!(policy.allows(Some("http://[::1]:8081"), Some("[::1]:8081")));
        assert!(policy.allows(Some("http://localhost:8081"), Some("localhost:8081")));
        assert!(policy.allows(Some("https://gw.example.com"), Some("gw.example.com:443")));
        assert!(policy.allows(
            Some("https://gw.example.com:8443"),
            Some("gw.example.com:8443")
        ));
        assert!(!policy.allows(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8081")));
        assert!(!policy.allows(Some("http://127.0.0.1:8081"), None));
    }

    #[test]
    fn a_dns_rebinding_page_is_not_the_gateways_own() {
        let policy = OriginPolicy::allow_only(["https://app.example.com"]);
        for (origin, host) in [
            ("http://evil.test:8081", "evil.test:8081"),
            ("http://evil.test", "evil.test"),
            ("http://evil.test", "evil.test:80"),
            (
                "http://localhost.evil.test:8081",
                "localhost.evil.test:8081",
            ),
            (
                "http://127.0.0.1.evil.test:8081",
                "127.0.0.1.evil.test:8081",
            ),
            ("http://[::1].evil.test:8081", "[::1].evil.test:8081"),
            ("http://gw.example.com", "gw.example.com"),
        ] {
            assert!(!policy.allows(Some(origin), Some(host)), "{origin} {host}");
        }
        let listed = OriginPolicy::allow_only(["http://gw.example.com"]);
        assert!(
            listed.allows(Some("http://gw.example.com"), Some("gw.example.com")),
            "a named plain-HTTP origin of the gateway's is allowed by listing it"
        );
        assert!(
            OriginPolicy::default().allows(Some("http://evil.test:8081"), Some("evil.test:8081"))
        );
    }

    #[test]
    fn info_and_iframe_reflect_the_list() {
        let policy = OriginPolicy::allow_only(["https://a.example", "https://b.example"]);
        assert_eq!(
            policy.info_origins(),
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(
            policy.frame_ancestors().as_deref(),
            Some("frame-ancestors 'self' https://a.example https://b.example")
        );
    }
}
