//! The end user behind trusted proxies, read from `x-forwarded-for` the way nginx's
//! `real_ip_recursive on` reads it: from the right, skipping every address that is itself a
//! trusted proxy. Each proxy appends the address that connected to it, so the right-most
//! entries are the ones our own proxies wrote and anything left of the first untrusted address
//! is whatever that client chose to send: never believed.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use super::TrustedProxies;

/// Entries walked at most; a longer chain of trusted proxies stops here, as if the header
/// ended (the last address reached counts). Real chains are a few hops long.
pub const MAX_HOPS: usize = 16;

/// The end user's address for a call from `peer`, given the `x-forwarded-for` values in the
/// order they arrived (several headers count as one list, concatenated in order).
///
/// Walking from the right, starting at the peer: while the current address is a trusted
/// proxy, step left to the entry it wrote. The walk stops at the first address that is not a
/// trusted proxy — the end user — or, when it cannot go on (no entry left, an entry that is
/// not an address, [`MAX_HOPS`] reached), at the last address it reached, which is then a
/// trusted proxy's (an end user inside a trusted network, or a proxy that wrote nothing
/// usable). An untrusted peer is its own end user: its header is never read.
pub fn end_user<'a>(
    peer: IpAddr,
    values: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut current = peer.to_canonical();
    let mut hops = 0;
    for value in values.rev() {
        // A value that is not text is one unreadable entry.
        let text = std::str::from_utf8(value).unwrap_or_default();
        for entry in text.rsplit(',') {
            if !trusted.contains(current) || hops == MAX_HOPS {
                return current;
            }
            let Some(next) = parse_entry(entry) else {
                return current;
            };
            current = next;
            hops += 1;
        }
    }
    current
}

/// One `x-forwarded-for` entry: an IPv4 or IPv6 address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:443`) or in brackets (`[2001:db8::1]`), with surrounding whitespace.
/// IPv4-mapped IPv6 addresses are taken as the IPv4 address. Anything else (`unknown`, host
/// names, zone ids, an empty entry) is `None`.
pub fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches(|c: char| c == ' ' || c == '\t');
    let addr = IpAddr::from_str(entry)
        .ok()
        .or_else(|| SocketAddr::from_str(entry).ok().map(|addr| addr.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(addr.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::end_user::parse_network;

    fn trusting(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| parse_network(n).unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The end user for `peer` and these header values, trusting `10.0.0.0/8` and `fd00::/8`.
    fn walk(peer: &str, values: &[&str]) -> IpAddr {
        let trusted = trusting(&["10.0.0.0/8", "fd00::/8"]);
        end_user(ip(peer), values.iter().map(|v| v.as_bytes()), &trusted)
    }

    #[test]
    fn an_untrusted_peer_is_the_end_user_whatever_it_sends() {
        assert_eq!(walk("198.51.100.9", &["203.0.113.7"]), ip("198.51.100.9"));
        assert_eq!(walk("198.51.100.9", &[]), ip("198.51.100.9"));
    }

    #[test]
    fn a_proxy_that_sets_the_header_names_the_end_user() {
        assert_eq!(walk("10.1.2.3", &["203.0.113.7"]), ip("203.0.113.7"));
    }

    #[test]
    fn a_proxy_that_appends_cannot_be_fooled_by_what_its_client_sent() {
        // The client sent "1.1.1.1, 10.9.9.9"; the proxy appended the client's own address.
        let forged = walk("10.1.2.3", &["1.1.1.1, 10.9.9.9, 203.0.113.7"]);
        assert_eq!(forged, ip("203.0.113.7"));
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let chain = walk("10.1.2.3", &["192.0.2.1, 203.0.113.7, 10.0.0.5, 10.0.0.6"]);
        assert_eq!(chain, ip("203.0.113.7"));
    }

    #[test]
    fn when_every_entry_is_trusted_the_left_most_counts() {
        assert_eq!(walk("10.1.2.3", &["10.0.0.4, 10.0.0.5"]), ip("10.0.0.4"));
        assert_eq!(walk("10.1.2.3", &[]), ip("10.1.2.3"));
    }

    #[test]
    fn several_headers_are_one_list_in_order() {
        let split = walk(
            "10.1.2.3",
            &["192.0.2.1, 203.0.113.7", "10.0.0.5", "10.0.0.6"],
        );
        assert_eq!(split, ip("203.0.113.7"));
        let last_header_wins = walk("10.1.2.3", &["203.0.113.7", "198.51.100.4"]);
        assert_eq!(last_header_wins, ip("198.51.100.4"));
    }

    #[test]
    fn whitespace_ports_and_brackets_are_read() {
        assert_eq!(walk("10.1.2.3", &[" \t203.0.113.7 \t"]), ip("203.0.113.7"));
        assert_eq!(walk("10.1.2.3", &["203.0.113.7:52000"]), ip("203.0.113.7"));
        assert_eq!(walk("10.1.2.3", &["2001:db8::7"]), ip("2001:db8::7"));
        assert_eq!(walk("10.1.2.3", &["[2001:db8::7]"]), ip("2001:db8::7"));
        assert_eq!(walk("10.1.2.3", &["[2001:db8::7]:443"]), ip("2001:db8::7"));
        assert_eq!(
            walk("fd00::1", &["2001:db8::7, [fd00::2]:8080"]),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d: still a trusted proxy.
        assert_eq!(walk("::ffff:10.1.2.3", &["203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(walk("10.1.2.3", &["::ffff:203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(
            walk("10.1.2.3", &["203.0.113.7, ::ffff:10.0.0.5"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn an_unreadable_entry_stops_the_walk_at_the_last_address_reached() {
        assert_eq!(walk("10.1.2.3", &["not an address"]), ip("10.1.2.3"));
        assert_eq!(walk("10.1.2.3", &["unknown, 10.0.0.5"]), ip("10.0.0.5"));
        assert_eq!(walk("10.1.2.3", &["203.0.113.7,,10.0.0.5"]), ip("10.0.0.5"));
        assert_eq!(walk("10.1.2.3", &[""]), ip("10.1.2.3"));
        assert_eq!(walk("10.1.2.3", &["fe80::1%eth0"]), ip("10.1.2.3"));
        assert_eq!(walk("10.1.2.3", &["proxy.local:80"]), ip("10.1.2.3"));
        // Garbage left of the end user was the end user's own to send: never reached.
        assert_eq!(
            walk("10.1.2.3", &["garbage, 203.0.113.7"]),
            ip("203.0.113.7")
        );
        // A header value that is not text is one unreadable entry.
        let trusted = trusting(&["10.0.0.0/8"]);
        let bytes: [&[u8]; 2] = [b"203.0.113.7", b"\xff\xfe"];
        assert_eq!(
            end_user(ip("10.1.2.3"), bytes.into_iter(), &trusted),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_walk_is_bounded() {
        let long = vec!["10.0.0.9"; 1000].join(",");
        let header = format!("203.0.113.7,{long}");
        assert_eq!(walk("10.1.2.3", &[&header]), ip("10.0.0.9"));
        let hops: Vec<String> = (1..=MAX_HOPS).map(|n| format!("10.0.0.{n}")).collect();
        let exactly = format!("203.0.113.7,{}", hops.join(","));
        assert_eq!(walk("10.1.2.3", &[&exactly]), ip("10.0.0.1"));
        let fewer = format!("203.0.113.7,{}", hops[1..].join(","));
        assert_eq!(walk("10.1.2.3", &[&fewer]), ip("203.0.113.7"));
    }
}
