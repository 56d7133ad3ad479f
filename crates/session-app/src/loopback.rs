//! Whether a URL names this machine: the one rule for where a secret may go
//! over plain HTTP (the CLI's API key, OTLP export's headers).

/// Whether `url`'s host is a loopback address (all of 127.0.0.0/8, `[::1]`)
/// or `localhost`. Traffic to it never leaves the machine, so a secret may
/// cross it in clear text; to any other host, anyone on the path could
/// read it.
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    // The URL parser lower-cases host names and brackets IPv6 addresses.
    let Some(host) = url.host_str() else {
        return false;
    };
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    unbracketed
        .parse::<std::net::IpAddr>()
        .map_or(host == "localhost", |ip| ip.is_loopback())
}
