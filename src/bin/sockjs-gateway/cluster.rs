//! Cluster mode in the binary: what a node advertises, and what it refuses.

use std::net::SocketAddr;

/// Where the other nodes reach this one: `--advertise`, or else the first
/// address the server is bound to, which must then be a specific one.
pub fn advertised_address(given: Option<&str>, bound: &[SocketAddr]) -> Result<String, String> {
    if let Some(given) = given {
        return Ok(given.to_owned());
    }
    let first = bound
        .first()
        .ok_or_else(|| "cluster mode: no listen address to advertise".to_owned())?;
    if first.ip().is_unspecified() {
        return Err(format!(
            "cluster mode: the first listen address {first} is not one other nodes can reach; \
             give --advertise HOST:PORT"
        ));
    }
    Ok(first.to_string())
}

/// Nodes forward to each other over plain HTTP, so a node that serves only
/// TLS could not be reached: terminate TLS at the balancer instead.
pub fn check_tls(redis: Option<&str>, tls: bool) -> Result<(), String> {
    match (redis, tls) {
        (Some(_), true) => Err(
            "cluster mode (--redis) with TLS is not supported: nodes forward to each other over \
             plain HTTP; terminate TLS at the balancer"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bound_address_unless_given() {
        let bound: Vec<SocketAddr> = vec![
            "127.0.0.1:40001".parse().unwrap(),
            "127.0.0.1:40002".parse().unwrap(),
        ];
        assert_eq!(advertised_address(None, &bound).unwrap(), "127.0.0.1:40001");
        assert_eq!(
            advertised_address(Some("node1:8081"), &bound).unwrap(),
            "node1:8081"
        );
        let any: Vec<SocketAddr> = vec!["0.0.0.0:8081".parse().unwrap()];
        assert!(advertised_address(None, &any).is_err());
        assert!(advertised_address(Some("10.0.0.5:8081"), &any).is_ok());
    }

    #[test]
    fn no_cluster_with_tls() {
        assert!(check_tls(Some("redis://h:1"), true).is_err());
        assert!(check_tls(Some("redis://h:1"), false).is_ok());
        assert!(check_tls(None, true).is_ok());
    }
}
