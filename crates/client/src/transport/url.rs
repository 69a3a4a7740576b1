//! The server address: `https://HOST[:PORT]` and nothing else.

use super::*;

/// The parts of `https://HOST[:PORT]` the transport keeps.
pub(super) struct ServerUrl {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) authority: Authority,
    pub(super) server_name: ServerName<'static>,
}

impl ServerUrl {
    pub(super) fn parse(url: &str) -> Result<ServerUrl, Error> {
        let bad = Error::InvalidServerUrl;
        let (scheme, rest) = url.split_once("://").ok_or(bad("it has no scheme"))?;
        if scheme.eq_ignore_ascii_case("http") {
            return Err(bad("plain http:// is refused; the sync server is reached over HTTPS only"));
        }
        if !scheme.eq_ignore_ascii_case("https") {
            return Err(bad("only https:// is accepted"));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(bad("it must not carry a user name or password"));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(bad("it must name only the server: no path, query or fragment"));
        }
        if !authority.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("it must be visible ASCII (write an international name in its xn-- form)"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or(bad("an IPv6 address must end with ']'"))?;
                if host.parse::<std::net::Ipv6Addr>().is_err() {
                    return Err(bad("the host in brackets is not an IPv6 address"));
                }
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').ok_or(bad("a ':' must follow the ']'"))?)),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(bad("it names no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&n| n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(bad("the port must be a number from 1 to 65535"))?,
        };
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| bad("the host is not a valid DNS name or IP address"))?;
        let authority =
            Authority::from_str(authority).map_err(|_| bad("the host and port are not a valid authority"))?;
        Ok(ServerUrl { host: host.to_owned(), port, authority, server_name })
    }
}
