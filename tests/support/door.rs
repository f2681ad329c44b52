//! [`Door`]: a port on 127.0.0.1 in front of a server, closed (a network that is down) or
//! open, and then forwarding at once or after a delay (a slow network).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// A port of 127.0.0.1 that nothing listens on (connections to it are refused).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A port on 127.0.0.1 that refuses connections (nothing can be sent) until `open`, from
/// when on it forwards every connection to `target`.
pub struct Door {
    port: u16,
    target: SocketAddr,
}

impl Door {
    /// A closed door in front of `target` (`http://127.0.0.1:<port>`).
    pub fn closed(target: &str) -> Door {
        let target = target
            .trim_start_matches("http://")
            .parse()
            .expect("the fake server's address");
        Door {
            port: closed_port(),
            target,
        }
    }

    /// The door's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forwards every connection from now on.
    pub fn open(&self) {
        self.open_after(Duration::ZERO);
    }

    /// Forwards every connection from now on, each after `delay` (the client's request
    /// waits in the door, written but not yet at the server).
    pub fn open_after(&self, delay: Duration) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("the door's port");
        let target = self.target;
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                thread::spawn(move || {
                    thread::sleep(delay);
                    let Ok(server) = TcpStream::connect(target) else {
                        return;
                    };
                    forward(client, server);
                });
            }
        });
    }
}

/// Copies both ways between `client` and `server` until each side ends.
fn forward(client: TcpStream, server: TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let (mut from, mut to) = (server, client);
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}
