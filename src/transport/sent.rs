//! Whether a request left this machine: the last link of the ureq connector chain wraps
//! every connection and notes, per thread, whether any byte of a request was handed to it
//! for sending. ureq runs a request on the calling thread, so the note read after
//! `Agent::run` speaks of that request alone. TLS handshakes and proxy negotiation happen in
//! the links below this one and do not count: a failure there proves nothing was sent.
//!
//! This uses ureq's `unversioned` connector API, which is why `Cargo.toml` keeps ureq on
//! one minor version.

use std::cell::Cell;

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

thread_local! {
    static WROTE: Cell<bool> = const { Cell::new(false) };
}

/// Forgets what the previous request on this thread wrote: call before sending one.
pub(super) fn start() {
    WROTE.with(|w| w.set(false));
}

/// Whether any byte of a request was handed to a connection on this thread since
/// [`start`].
pub(super) fn wrote() -> bool {
    WROTE.with(Cell::get)
}

/// The connector link that wraps each connection in a [`Watched`] one.
#[derive(Debug, Default)]
pub(super) struct WatchSends;

impl Connector<Box<dyn Transport>> for WatchSends {
    type Out = Watched;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(Watched))
    }
}

/// A connection that notes when a request is handed to it for sending.
#[derive(Debug)]
pub(super) struct Watched(Box<dyn Transport>);

impl Transport for Watched {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if amount > 0 {
            WROTE.with(|w| w.set(true));
        }
        self.0.transmit_output(amount, timeout)
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.0.maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.0.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}
