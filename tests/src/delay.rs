//! A TCP proxy that delays every byte the target sends back by a fixed time, without reordering
//! or throttling, and can hold the answers back until told to let them through: how tests make
//! a dependency slow enough that concurrent callers are sure to meet inside one of its calls
//! (held: for as long as the test needs, not for a time it hopes is long enough).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, copy},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

/// A running proxy; stops accepting when dropped.
pub struct DelayProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
    held: watch::Sender<bool>,
}

impl DelayProxy {
    /// Forwards every connection on a fresh loopback port to `target`, holding each chunk of
    /// the answer back for `delay`.
    pub async fn start(target: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (held, holding) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, target, delay, holding.clone()));
            }
        });
        Self { addr, task, held }
    }

    /// From now on, every answer (on every connection) waits until [`Self::release`];
    /// requests still reach the target.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Lets the held answers through, and every later one.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    inbound: TcpStream,
    target: SocketAddr,
    delay: Duration,
    mut holding: watch::Receiver<bool>,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut target_read, mut target_write) = outbound.into_split();
    let requests = tokio::spawn(async move {
        let _ = copy(&mut client_read, &mut target_write).await;
        let _ = target_write.shutdown().await;
    });
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0; 16 * 1024];
        while let Ok(read @ 1..) = target_read.read(&mut buffer).await {
            if chunks
                .send((Instant::now() + delay, buffer[..read].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    while let Some((at, chunk)) = due.recv().await {
        tokio::time::sleep_until(at).await;
        // A dropped proxy holds nothing back (the error says the sender is gone).
        let _ = holding.wait_for(|held| !held).await;
        if client_write.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = client_write.shutdown().await;
    reader.abort();
    requests.abort();
}
