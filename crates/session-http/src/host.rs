//! Without an API key, only requests addressed to a loopback name.
//!
//! A keyless service listens on loopback only, but a web page can still reach
//! it: its host name can be made to resolve to 127.0.0.1 (DNS rebinding),
//! after which the browser treats the service as the page's own origin and
//! lets the page's scripts create, read and revoke sessions. What the browser
//! cannot hide is the name it thinks it is talking to: it sends it as `Host`
//! (the `:authority` of HTTP/2), and scripts cannot change that. So without a
//! key, a request must name `localhost`, an address of 127.0.0.0/8 or `[::1]`,
//! with or without a port, or it is answered 421 before routing.
//!
//! With a key this check is off: the key is the defence (a rebinding page
//! does not have it), and a keyed service is reached under real names.
//! Every route is covered, health, readiness and metrics included: without a
//! key only local clients reach the service and they name a loopback host,
//! while an exemption would let a rebinding page read metrics and readiness.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::extract::Request;
use axum::http::uri::Authority;
use axum::http::{Version, header};

use crate::ApiState;
use crate::error::ApiError;

/// Answers 421 to a keyless request that is not addressed to a loopback name.
pub(crate) fn require_loopback_host(state: &ApiState, request: &Request) -> Result<(), ApiError> {
    if !state.api_keys().is_enabled() && !is_addressed_to_loopback(request) {
        return Err(ApiError::misdirected());
    }
    Ok(())
}

/// Whether every name the request gives for its target is a loopback name.
/// The URI's authority (HTTP/2's `:authority`, or an absolute-form HTTP/1.1
/// target) and every `Host` header are checked, so a request cannot pass on
/// one and be routed by a proxy on the other. A request with no name at all
/// passes only as HTTP/1.0, where `Host` is optional; browsers always send it.
fn is_addressed_to_loopback(request: &Request) -> bool {
    let mut named = false;
    if let Some(authority) = request.uri().authority() {
        if !is_loopback(authority) {
            return false;
        }
        named = true;
    }
    for value in request.headers().get_all(header::HOST) {
        if is_usual_loopback_host(value.as_bytes()) {
            named = true;
            continue;
        }
        let parsed = value
            .to_str()
            .ok()
            .and_then(|host| host.parse::<Authority>().ok());
        if !parsed.is_some_and(|authority| is_loopback(&authority)) {
            return false;
        }
        named = true;
    }
    named || request.version() <= Version::HTTP_10
}

/// Whether a `Host` is `127.0.0.1` or `localhost` (any case), with or
/// without a port of 1 to 65535: what local clients send, decided without
/// parsing an authority. Everything it accepts, [`is_loopback`] accepts;
/// anything else goes the whole way.
fn is_usual_loopback_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().rposition(|&b| b == b':') {
        Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port)
                .ok()
                .and_then(|port| port.parse::<u16>().ok())
                .is_some_and(|port| port != 0)
    });
    port_ok && (name == b"127.0.0.1" || name.eq_ignore_ascii_case(b"localhost"))
}

/// Whether `authority` names this machine's loopback: `localhost` (any
/// case), any address of 127.0.0.0/8, or `::1` in any IPv6 spelling
/// (`[::1]`, `[0:0:0:0:0:0:0:1]`), with or without a port: exactly the
/// addresses a keyless service may listen on (`IpAddr::is_loopback`, the
/// rule session-app's `serve` applies to `--listen`), so its own clients,
/// which name the address they connect to, are served.
///
/// A DNS-rebinding page cannot pass: its browser sends the page's own host
/// name, and a name is accepted only if it is `localhost` itself, which
/// browsers resolve to loopback without asking DNS (RFC 6761 §6.3, and the
/// WHATWG URL standard's "potentially trustworthy" origins). Other forms
/// an IP parser may take (`127.1`, `2130706433`, octal) are refused: browsers
/// and curl send the dotted-quad form, and a name that merely looks like an
/// address (`127.0.0.1.nip.io`) is a DNS name.
fn is_loopback(authority: &Authority) -> bool {
    // A Host never carries user info; `Authority` would accept and skip it.
    if authority.as_str().contains('@') {
        return false;
    }
    let host = authority.host();
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let address = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().map(IpAddr::V4),
    };
    address.is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use axum::http::uri::Authority;

    use super::{is_loopback, is_usual_loopback_host};

    #[test]
    fn the_fast_path_accepts_only_what_the_whole_check_accepts() {
        let hosts = [
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.0.0.1:1",
            "127.0.0.1:65535",
            "localhost",
            "LocalHost:443",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:",
            "127.0.0.1:+80",
            "127.0.0.1:080808",
            "user@127.0.0.1:80",
            "127.0.0.1.nip.io:80",
            "localhost.:80",
            "127.1:80",
            "[::1]:80",
            "example.com:80",
            ":80",
            "",
        ];
        let mut accepted = 0;
        for host in hosts {
            if is_usual_loopback_host(host.as_bytes()) {
                accepted += 1;
                let authority: Authority = host.parse().unwrap();
                assert!(is_loopback(&authority), "{host} passed the fast path only");
            }
        }
        assert_eq!(accepted, 6, "the usual spellings take the fast path");
    }
}
