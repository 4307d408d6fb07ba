//! Closing the listener without dropping a connection. The kernel completes
//! TCP handshakes on its own and queues the connections until `accept`;
//! closing the socket resets every one still queued, and the client, which
//! has already sent its request (or its TLS ClientHello), gets a reset for a
//! review it cannot know was never read. So the listener first stops taking
//! handshakes (a socket filter that drops every packet: a new SYN goes
//! unanswered, the client retries it and finds the port closed, never an
//! established connection that is then reset), then the queue is emptied,
//! and only then is the socket closed.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};

/// Classic BPF `ret #0`: keep nothing of any packet.
#[cfg(target_os = "linux")]
const DROP_ALL: [socket2::SockFilter; 1] = [socket2::SockFilter::new(0x06, 0, 0, 0)];

/// Stops the kernel from completing new handshakes on `listener`. Returns
/// false if it could not (the caller closes anyway, as it did before).
#[cfg(target_os = "linux")]
pub fn stop_handshakes(listener: &TcpListener) -> bool {
    match SockRef::from(listener).attach_filter(&DROP_ALL) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "cannot stop new handshakes before closing the listener");
            false
        }
    }
}

/// Socket filters are Linux's (where meshgate runs); elsewhere the
/// listener just closes.
#[cfg(not(target_os = "linux"))]
pub fn stop_handshakes(_listener: &TcpListener) -> bool {
    false
}

/// Every connection already queued on `listener`, without waiting for new
/// ones. The listener is non-blocking (tokio made it so), so the queue is
/// empty at the first `WouldBlock`.
pub fn queued(listener: &TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let socket = SockRef::from(listener);
    let mut taken = Vec::new();
    loop {
        match socket.accept() {
            Ok((conn, addr)) => {
                let Some(peer) = addr.as_socket() else {
                    continue;
                };
                let stream: std::net::TcpStream = conn.into();
                match stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream))
                {
                    Ok(stream) => taken.push((stream, peer)),
                    Err(error) => tracing::warn!(%error, "cannot serve a queued connection"),
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return taken,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(%error, "cannot accept the queued connections");
                return taken;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_connections_are_taken_and_new_handshakes_are_not_completed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first = std::net::TcpStream::connect(addr).unwrap();
        let second = std::net::TcpStream::connect(addr).unwrap();
        assert!(stop_handshakes(&listener));
        // The SYN is dropped: no connection is established while the
        // listener is still open.
        let late = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            TcpStream::connect(addr),
        )
        .await;
        assert!(late.is_err(), "a handshake completed after the stop");
        let taken = queued(&listener);
        let peers: Vec<SocketAddr> = taken.iter().map(|(_, peer)| *peer).collect();
        assert_eq!(
            peers,
            [first.local_addr().unwrap(), second.local_addr().unwrap()]
        );
    }
}
