//! Clients that keep their receive window tiny, and the kernel's view of
//! the server's end of their connection: how the tests see a given-up
//! client lose its socket.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// send-timeout (1 s, as the stalled-client tests set it) + the close grace
/// (2 s) + slack for a debug build.
pub const GONE_WITHIN: Duration = Duration::from_secs(1 + 2 + 3);

/// A socket whose receive buffer is 4 KiB, connected to the server: a
/// client on a slow link, or one that keeps its window tiny on purpose.
pub fn tiny_window_stream(port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&address.into()).unwrap();
    socket.into()
}

/// The kernel's state (`/proc/net/tcp`, 1 = ESTABLISHED) of the server's
/// end of the connection from `client_port`, while a process holds it (an
/// orphan, inode 0, is the kernel's alone: it holds no task or buffer of
/// the gateway's, only its last bytes, until the kernel gives up on them).
pub fn server_socket_state(server_port: u16, client_port: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote) = (port(fields.get(1)?)?, port(fields.get(2)?)?);
        let held = fields.get(9).is_some_and(|inode| *inode != "0");
        (local == server_port && remote == client_port && held)
            .then(|| u8::from_str_radix(fields.get(3)?, 16).ok())
            .flatten()
    })
}

/// Waits until the server no longer holds its end of the connection from
/// `client_port`, which must be established when this is called.
pub fn wait_until_server_lets_go(server_port: u16, client_port: u16, within: Duration, what: &str) {
    assert_eq!(
        server_socket_state(server_port, client_port),
        Some(1),
        "{what}: established"
    );
    super::poll_until(
        &format!("{what}: the server to drop the connection"),
        within,
        || {
            server_socket_state(server_port, client_port)
                .is_none()
                .then_some(())
        },
    );
}

/// A masked client text frame carrying `payload`.
pub fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "a short frame");
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}
