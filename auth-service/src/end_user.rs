//! Who is at the other end of a call: the end user's address and user agent, for throttling,
//! the audit log and session records. Our callers are backend services, so one peer stands for
//! many end users; a peer in `--trusted-proxies` may name the end user in `x-forwarded-for`,
//! like Cognito's UserContextData: the right-most address that is not itself a trusted proxy
//! (see [`forwarded`]). Anyone else's header is ignored.

mod forwarded;

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use tonic::Request;

/// Longest user agent kept; the rest is cut, so a client cannot fill logs or session items.
const MAX_USER_AGENT: usize = 256;

/// The networks whose peers may say who the end user is (`x-forwarded-for`).
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts these networks.
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn contains(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&addr))
    }
}

/// A network for `--trusted-proxies`: CIDR (`10.0.0.0/8`) or a single address.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    IpNet::from_str(text)
        .or_else(|_| IpAddr::from_str(text).map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP network (CIDR) or address"))
}

/// The end user of one call.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The end user's address: the trusted proxy's word for it, else the peer's.
    pub addr: Option<IpAddr>,
    /// The `user-agent` metadata, cut to a sane length.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The end user of `request`.
    pub fn of<T>(request: &Request<T>, trusted: &TrustedProxies) -> Self {
        let addr = request.remote_addr().map(|peer| {
            let values = request.metadata().get_all("x-forwarded-for");
            let values = values.iter().map(|value| value.as_bytes());
            forwarded::end_user(peer.ip(), values, trusted)
        });
        let user_agent = request
            .metadata()
            .get("user-agent")
            .map(|value| clean_user_agent(value.as_bytes()))
            .filter(|agent| !agent.is_empty());
        Self { addr, user_agent }
    }
}

impl fmt::Debug for ClientInfo {
    /// The user agent cut like any text a client typed, should a line ever log a `ClientInfo`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInfo")
            .field("addr", &self.addr)
            .field(
                "user_agent",
                &self.user_agent.as_deref().map(common::telemetry::typed),
            )
            .finish()
    }
}

/// A user agent as kept: bytes that are not UTF-8 replaced, control characters dropped, cut to
/// [`MAX_USER_AGENT`] characters (on a character boundary).
fn clean_user_agent(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        let peer: SocketAddr = peer.parse().unwrap();
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(peer),
            });
        if let Some(forwarded) = forwarded {
            request
                .metadata_mut()
                .insert("x-forwarded-for", forwarded.parse().unwrap());
        }
        request
    }

    fn trusting(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| parse_network(n).unwrap()).collect())
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_end_user() {
        let forwarded = request("10.1.2.3:4000", Some("203.0.113.7, 10.1.2.3"));
        let trusted = ClientInfo::of(&forwarded, &trusting(&["10.0.0.0/8"]));
        assert_eq!(trusted.addr, Some("203.0.113.7".parse().unwrap()));
        let untrusted = ClientInfo::of(&forwarded, &trusting(&["192.168.0.0/16"]));
        assert_eq!(untrusted.addr, Some("10.1.2.3".parse().unwrap()));
        let nobody = ClientInfo::of(&forwarded, &TrustedProxies::default());
        assert_eq!(nobody.addr, Some("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_end_user() {
        // A proxy appending with $proxy_add_x_forwarded_for after its client sent a header.
        let appended = request("10.1.2.3:4000", Some("192.0.2.66, 203.0.113.7"));
        let info = ClientInfo::of(&appended, &trusting(&["10.0.0.0/8"]));
        assert_eq!(info.addr, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn every_x_forwarded_for_header_is_read_in_order() {
        let mut twice = request("10.1.2.3:4000", Some("192.0.2.66"));
        twice
            .metadata_mut()
            .append("x-forwarded-for", "203.0.113.7, 10.0.0.8".parse().unwrap());
        let info = ClientInfo::of(&twice, &trusting(&["10.0.0.0/8"]));
        assert_eq!(info.addr, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn a_trusted_peer_with_a_garbled_header_is_taken_for_itself() {
        let garbled = request("10.1.2.3:4000", Some("not an address"));
        let info = ClientInfo::of(&garbled, &trusting(&["10.1.2.3"]));
        assert_eq!(info.addr, Some("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn a_logged_client_shows_no_more_than_a_cut_user_agent() {
        let info = ClientInfo {
            addr: None,
            user_agent: Some("x".repeat(MAX_USER_AGENT)),
        };
        let shown = format!("{info:?}");
        assert!(!shown.contains(&"x".repeat(65)), "{shown}");
        assert!(shown.contains(&"x".repeat(40)), "{shown}");
    }

    #[test]
    fn user_agents_are_cut_on_a_char_boundary_without_control_characters() {
        assert_eq!(clean_user_agent(b"curl/8.5\tx\x7f"), "curl/8.5x");
        let long = "é".repeat(300);
        let kept = clean_user_agent(long.as_bytes());
        assert_eq!(kept.chars().count(), MAX_USER_AGENT);
        assert_eq!(clean_user_agent(b"a\xffb"), "a\u{fffd}b");
        let mut request = request("10.1.2.3:4000", None);
        request
            .metadata_mut()
            .insert("user-agent", "\t".parse().unwrap());
        assert_eq!(
            ClientInfo::of(&request, &TrustedProxies::default()).user_agent,
            None
        );
    }

    #[test]
    fn networks_parse_as_cidr_or_single_addresses() {
        assert!(parse_network("10.0.0.0/8").is_ok());
        assert!(parse_network(" ::1 ").is_ok());
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("proxy.local").is_err());
    }
}
