//! A TCP proxy in front of DynamoDB that rewrites one byte pattern in its answers into another
//! of the same length: how a test makes DynamoDB return what no emulator stores, such as an
//! attribute of a type the SDK does not know (`{"BOOL"` → `{"BOOX"`). Same length, so the
//! HTTP framing stays valid.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, copy},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A running proxy; stops when dropped.
pub struct RewritingProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RewritingProxy {
    /// Forwards every connection to `target`, replacing `from` with `to` in the answers.
    pub async fn start(target: SocketAddr, from: &[u8], to: &[u8]) -> Self {
        assert_eq!(from.len(), to.len(), "a rewrite must keep the length");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (from, to) = (from.to_vec(), to.to_vec());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (from, to) = (from.clone(), to.clone());
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        relay(inbound, outbound, &from, &to).await;
                    }
                });
            }
        });
        Self { addr, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RewritingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(inbound: TcpStream, outbound: TcpStream, from: &[u8], to: &[u8]) {
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let requests = async {
        let _ = copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let answers = async {
        let mut pending = Vec::new();
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let read = match server_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            pending.extend_from_slice(&chunk[..read]);
            let ready = rewrite(&mut pending, from, to);
            if client_write.write_all(&ready).await.is_err() {
                return;
            }
        }
        let _ = client_write.write_all(&pending).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(requests, answers);
}

/// Rewrites every whole occurrence of `from` in `pending` and returns the bytes that can go:
/// all but a tail that may be the start of an occurrence split across reads.
fn rewrite(pending: &mut Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut start = 0;
    while let Some(at) = pending[start..]
        .windows(from.len())
        .position(|window| window == from)
    {
        let at = start + at;
        pending[at..at + from.len()].copy_from_slice(to);
        start = at + from.len();
    }
    let keep = (1..from.len())
        .rev()
        .find(|&tail| pending.len() >= tail && from.starts_with(&pending[pending.len() - tail..]))
        .unwrap_or(0);
    pending.drain(..pending.len() - keep).collect()
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn occurrences_are_rewritten_even_when_split_across_reads() {
        let mut pending = b"xx\"a\":{\"BO".to_vec();
        let sent = rewrite(&mut pending, b"{\"BOOL\"", b"{\"BOOX\"");
        assert_eq!(sent, b"xx\"a\":");
        pending.extend_from_slice(b"OL\":true}}");
        let sent = rewrite(&mut pending, b"{\"BOOL\"", b"{\"BOOX\"");
        assert_eq!(sent, b"{\"BOOX\":true}}");
        assert!(pending.is_empty());
    }
}
