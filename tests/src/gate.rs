//! A TCP relay in front of an in-process server that can be cut and restored on the same
//! port: cutting closes the listener and every relayed connection at once, which is what
//! clients see of a `kill -9` (an in-process server cannot be killed that way: aborting its
//! task leaves its accepted connections serving). The port stays held ([`HeldPort`]) while
//! cut, so connections are refused and the restored listener gets it back for sure.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use crate::ports::HeldPort;

/// The relay; [`Gate::addr`] is where clients connect.
pub struct Gate {
    port: HeldPort,
    target: SocketAddr,
    /// The accept loop and every relayed connection, all dropped by a cut.
    tasks: Arc<Mutex<Option<JoinSet<()>>>>,
}

impl Gate {
    /// Relays a fresh port on loopback to `target`.
    pub async fn open(target: SocketAddr) -> Self {
        let port = HeldPort::new();
        let listener = TcpListener::bind(port.addr()).await.expect("bind a gate");
        let gate = Self {
            port,
            target,
            tasks: Arc::default(),
        };
        gate.serve(listener);
        gate
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.port.addr()
    }

    /// Closes the listener and every connection: from outside, the server died.
    pub fn cut(&self) {
        let tasks = self.tasks.lock().expect("gate lock").take();
        drop(tasks);
    }

    /// Listens again on the same port: from outside, the server came back.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr())
            .await
            .expect("bind the gate's port again");
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let (target, registry) = (self.target, Arc::clone(&self.tasks));
        let mut guard = self.tasks.lock().expect("gate lock");
        let tasks = guard.insert(JoinSet::new());
        tasks.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                };
                match registry.lock().expect("gate lock").as_mut() {
                    Some(tasks) => drop(tasks.spawn(relay)),
                    None => return,
                }
            }
        });
    }
}
