//! Support for sandbox tests that watch, from outside, what an agent could do.

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

/// A TCP listener and a UDP socket on 127.0.0.1 that an agent is told to reach;
/// afterwards they say whether anything arrived.
#[derive(Debug)]
pub struct Listeners {
    tcp: TcpListener,
    udp: UdpSocket,
}

impl Listeners {
    /// Binds both on free loopback ports.
    ///
    /// # Panics
    /// When a loopback socket cannot be bound.
    #[must_use]
    pub fn new() -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP listener on 127.0.0.1");
        tcp.set_nonblocking(true).expect("non-blocking listener");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1");
        udp.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("UDP read timeout");
        Listeners { tcp, udp }
    }

    /// The TCP listener's port.
    ///
    /// # Panics
    /// When the socket has no local address.
    #[must_use]
    pub fn tcp_port(&self) -> u16 {
        self.tcp.local_addr().expect("TCP local address").port()
    }

    /// The UDP socket's port.
    ///
    /// # Panics
    /// When the socket has no local address.
    #[must_use]
    pub fn udp_port(&self) -> u16 {
        self.udp.local_addr().expect("UDP local address").port()
    }

    /// Whether the TCP listener was connected to.
    ///
    /// # Panics
    /// When `accept` fails otherwise than by having nothing to accept.
    #[must_use]
    pub fn tcp_seen(&self) -> bool {
        match self.tcp.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    /// Whether the UDP socket received a datagram (waiting up to 300 ms).
    #[must_use]
    pub fn udp_seen(&self) -> bool {
        let mut buf = [0u8; 64];
        self.udp.recv_from(&mut buf).is_ok()
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the test `test` of the current test binary again with `var` set to a
/// fresh marker, in its own initial environment (`/proc/<pid>/environ` shows the
/// environment a process started with, not later `setenv`s), as a host's
/// `GITHUB_TOKEN` would be. Returns the marker in that inner run, and `None` in
/// the outer one, after checking that the inner run passed.
///
/// # Panics
/// When the inner run cannot start or its test did not pass.
#[must_use]
pub fn with_marker(var: &str, test: &str) -> Option<String> {
    if let Ok(m) = std::env::var(var) {
        return Some(m);
    }
    let marker = format!("sandbox-marker-{}-{test}", std::process::id());
    let out = crate::rerun(test)
        .env(var, &marker)
        .output()
        .expect("run the test again with the marker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} with the marker:\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
    eprint!("{stderr}");
    None
}
