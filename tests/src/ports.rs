//! A loopback port held for as long as a test needs it, so a server can stop and start again
//! on it with nobody else taking it meanwhile: no "find a free port, then bind it" race.
//!
//! The holder is a socket bound with `SO_REUSEADDR` that never listens. On Linux a listener
//! that also sets `SO_REUSEADDR` (tokio's and std's do) may bind the same address, and while
//! it listens nobody else can; once it is gone, connections are refused again (no listener)
//! but the port stays ours: no other bind takes it and the kernel never picks it for a port-0
//! bind or an outgoing connection. A stopped server therefore looks from outside like a dead
//! one, and comes back where its clients expect it.

use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

/// A loopback port held until dropped; serve on it by binding [`HeldPort::addr`].
#[derive(Debug)]
pub struct HeldPort {
    /// Never listens: it only keeps the port bound (closed, and the port freed, on drop).
    _socket: Socket,
    addr: SocketAddr,
}

impl HeldPort {
    /// Holds a port the kernel picks (port 0).
    pub fn new() -> Self {
        Self::at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("hold a fresh loopback port")
    }

    /// Holds `addr` (which must be free or only held or served with `SO_REUSEADDR`, like a
    /// port whose server just stopped).
    pub fn at(addr: SocketAddr) -> std::io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("not an IP address"))?;
        Ok(Self {
            _socket: socket,
            addr,
        })
    }

    /// The address to serve on (and to connect to).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for HeldPort {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    #[tokio::test]
    async fn a_held_port_refuses_connections_until_served_and_again_after() {
        let held = HeldPort::new();
        let refused = TcpStream::connect(held.addr()).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

        let listener = TcpListener::bind(held.addr()).await.expect("serve on it");
        let _client = TcpStream::connect(held.addr()).await.expect("served");
        listener.accept().await.expect("accepted");
        drop(listener);

        let refused = TcpStream::connect(held.addr()).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
        let again = TcpListener::bind(held.addr()).await;
        assert!(again.is_ok(), "served again: {again:?}");
    }

    #[tokio::test]
    async fn nobody_else_binds_a_held_port() {
        let held = HeldPort::new();
        // A bind without SO_REUSEADDR is refused at once…
        let plain = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        assert!(plain.bind(&held.addr().into()).is_err(), "without reuse");

        // …and one with it while the port is served.
        let _listener = TcpListener::bind(held.addr()).await.expect("serve on it");
        let other = HeldPort::at(held.addr());
        assert!(other.is_err(), "a second holder while it is served");
    }
}
