//! The fake server's threads: one accepting connections on 127.0.0.1, one per open
//! connection reading requests and writing replies, and a limit on how many requests are
//! handled at once. Dropping the [`Server`] stops and joins all of them.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde_json::json;

use super::fault::{FaultQueue, PerEndpoint};
use super::http::{self, ReadError, Response};
use super::routes::{self, Reply};
use super::state::State;
use crate::clock::ManualClock;
use crate::error::Endpoint;

/// A connection idle this long between requests is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A write blocked this long (a client that stopped reading) gives up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every thread of one fake server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Accounts, tokens, quota, counters: one lock, so a refresh is atomic.
    pub(crate) state: Mutex<State>,
    /// Faults waiting for their request.
    pub(crate) faults: FaultQueue,
    /// The server's clock.
    pub(crate) clock: ManualClock,
    /// The status of `ApiInvalidTokenError` replies to ordinary calls and tokens.check.
    pub(crate) invalid_token_status: u16,
    /// Whether replies carry a `Date` header with the server's clock (default yes).
    pub(crate) send_date: bool,
    /// Whether tokens.make and tokens.refresh send lifetimes (`86400`) where end times
    /// belong, as a broken server might.
    pub(crate) end_times_as_lifetimes: bool,
    /// Set when the server is being dropped.
    pub(crate) stop: AtomicBool,
    /// How many requests may be handled at once.
    threads: usize,
    /// Requests being handled now, per route.
    handling: PerEndpoint<AtomicUsize>,
    /// How many more requests may be handled at once.
    permits: Mutex<usize>,
    permit_freed: Condvar,
    /// A handle on every open connection, to shut it down when the server stops.
    connections: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    /// Shared state for a server handling at most `threads` requests at once.
    pub(crate) fn new(
        state: State,
        clock: ManualClock,
        invalid_token_status: u16,
        threads: usize,
    ) -> Self {
        Shared {
            state: Mutex::new(state),
            faults: FaultQueue::default(),
            clock,
            invalid_token_status,
            send_date: true,
            end_times_as_lifetimes: false,
            stop: AtomicBool::new(false),
            threads: threads.max(1),
            handling: Default::default(),
            permits: Mutex::new(threads.max(1)),
            permit_freed: Condvar::new(),
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// The `Date` header of a reply sent now, unless the server is told to send none (or its
    /// clock is before 1970).
    fn date_header(&self) -> Option<String> {
        if !self.send_date {
            return None;
        }
        let secs = u64::try_from(crate::clock::Clock::now(&self.clock)).ok()?;
        let at = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))?;
        Some(httpdate::fmt_http_date(at))
    }

    /// How many client connections are open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.lock().len()
    }

    /// How many requests are being handled now.
    pub(crate) fn in_progress(&self) -> usize {
        self.threads.saturating_sub(*self.permits.lock())
    }

    /// How many requests on `route` are being handled now.
    pub(crate) fn in_progress_on(&self, route: Endpoint) -> usize {
        self.handling.get(route).load(Ordering::SeqCst)
    }

    /// Waits for a free handling slot; `None` when the server stops first.
    fn acquire(&self) -> Option<Permit<'_>> {
        let mut free = self.permits.lock();
        while *free == 0 {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            self.permit_freed
                .wait_for(&mut free, Duration::from_millis(20));
        }
        *free -= 1;
        Some(Permit(self))
    }
}

/// One handling slot, given back on drop.
struct Permit<'a>(&'a Shared);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.permits.lock() += 1;
        self.0.permit_freed.notify_one();
    }
}

/// A running server.
#[derive(Debug)]
pub(crate) struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Listens on an ephemeral port of 127.0.0.1 and starts accepting.
    pub(crate) fn start(shared: Arc<Shared>) -> io::Result<Server> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let for_thread = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("fake-chatapp-accept".to_owned())
            .spawn(move || accept_loop(&listener, &for_thread))?;
        log::debug!("fake ChatApp listening on {addr}");
        Ok(Server {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    /// The address listened on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let Some(accept) = self.accept.take() else {
            return;
        };
        // Wake the accept thread, blocked in accept(), with a connection of our own.
        let woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok();
        let connection_threads = if woken {
            accept.join().unwrap_or_else(|_| {
                log::error!("fake ChatApp: the accept thread panicked");
                Vec::new()
            })
        } else {
            // It will end at the next connection; joining it now could hang.
            log::warn!("fake ChatApp: could not wake the accept thread; leaving it detached");
            Vec::new()
        };
        // Every reader blocked in read() or write() now fails at once.
        let open: Vec<TcpStream> = self
            .shared
            .connections
            .lock()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for stream in open {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for handle in connection_threads {
            let _ = handle.join();
        }
        log::debug!("fake ChatApp on {} stopped", self.addr);
    }
}

/// Accepts connections until the server stops; returns the connection threads still to join.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match incoming {
            Ok(stream) => stream,
            Err(e) => {
                // E.g. out of file descriptors: wait a little rather than spin.
                log::warn!("fake ChatApp: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        threads.retain(|t| !t.is_finished());
        next_id += 1;
        let id = next_id;
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        shared.connections.lock().insert(id, handle);
        let for_thread = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("fake-chatapp-conn".to_owned())
            .spawn(move || {
                serve_connection(&for_thread, stream);
                for_thread.connections.lock().remove(&id);
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                log::warn!("fake ChatApp: could not start a connection thread: {e}");
                let unregistered = shared.connections.lock().remove(&id);
                if let Some(s) = unregistered {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
    threads
}

/// Serves the requests of one connection until it closes.
fn serve_connection(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let request = match http::read_request(&mut reader, &mut writer) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(ReadError::Io(e)) => {
                log::trace!("fake ChatApp: connection ends: {e}");
                break;
            }
            Err(ReadError::Bad(status, message)) => {
                let code = if status == 413 || status == 431 {
                    "ApiPayloadTooLargeError"
                } else {
                    "ApiBadRequestError"
                };
                let error = json!({"code": code, "message": message});
                let body = format!(r#"{{"success":false,"error":{error}}}"#);
                let response = Response::json_text(status, body);
                let _ = http::write_response(&mut writer, &response, false, false);
                break;
            }
        };
        let Some(permit) = shared.acquire() else {
            break;
        };
        let counter = shared
            .handling
            .get(Endpoint::of(&request.method, &request.path));
        counter.fetch_add(1, Ordering::SeqCst);
        let reply = routes::handle(shared, &request);
        counter.fetch_sub(1, Ordering::SeqCst);
        drop(permit);
        let head_only = request.method == "HEAD";
        let keep_open = match reply {
            Reply::Send(mut response) => {
                if let Some(date) = shared.date_header() {
                    response.headers.push(("Date".to_owned(), date));
                }
                http::write_response(&mut writer, &response, request.keep_alive, head_only).is_ok()
                    && request.keep_alive
            }
            Reply::Huge {
                bytes,
                declare_length,
            } => {
                http::write_huge(
                    &mut writer,
                    bytes,
                    declare_length,
                    request.keep_alive,
                    head_only,
                )
                .is_ok()
                    && request.keep_alive
                    && declare_length
            }
            Reply::Close => false,
        };
        if !keep_open {
            break;
        }
    }
    // A FIN, not a reply: the whole request was read, so nothing unread turns it into a reset.
    let _ = writer.shutdown(Shutdown::Both);
}
