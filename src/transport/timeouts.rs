//! How the bound on one exchange is shared among ureq's phases.
//!
//! ureq 3 can bound an exchange as a whole (`timeout_global`, `timeout_per_call`), but a whole
//! bound also covers the host name lookup, and ureq runs any lookup that has a bound on a new
//! thread, one per request, even for an IP literal whose connection comes from the pool. On
//! loopback that thread (spawn, channel, join) nearly doubled the cost of a request. A bound on
//! each phase costs nothing extra, so the configured timeout is split among the phases, and
//! their budgets add up to at most the timeout: an exchange ends within it whichever phase
//! stalls, however the time is spread over the phases.
//!
//! | phase (ureq) | share of the timeout | at the default 30 s |
//! |---|---|---|
//! | name lookup (`timeout_resolve`), only for a host name | 1/10 | 3 s |
//! | connecting, TLS handshake included (`timeout_connect`) | 1/10 | 3 s |
//! | sending the request line and headers (`timeout_send_request`) | 1/20 | 1.5 s |
//! | sending the body (`timeout_send_body`) | 1/10 | 3 s |
//! | waiting for and reading the reply's headers (`timeout_recv_response`) | 1/2 | 15 s |
//! | reading the reply's body (`timeout_recv_body`) | 3/20 | 4.5 s |
//!
//! An IP literal (`http://127.0.0.1:8080`) needs no lookup, so none is bounded and none runs
//! on a thread. ureq's wait for `100 Continue` is never entered: no request sends
//! `Expect: 100-continue`.
//!
//! ureq hands each read and write the time left in its phase, and its TCP transport sets the
//! socket's timeout (a `setsockopt` system call) whenever that value differs from the last
//! one, which it always does: two calls per request, about 4 % of a loopback request.
//! [`SteadyTimeouts`] rounds the time left down to a whole [`STEP`] first, so successive
//! requests on a kept-alive connection ask for the same timeouts and make no such call. A
//! phase may end up to one step early, never late; budgets under a second are left exact.
//! It is a link of ureq's `unversioned` connector chain, like `transport/sent.rs`, which is why
//! `Cargo.toml` keeps ureq on one minor version.

use std::time::Duration;

use ureq::config::ConfigBuilder;
use ureq::typestate::AgentScope;
use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// The granularity of the socket timeouts: see the module's documentation.
pub(crate) const STEP: Duration = Duration::from_millis(50);
/// Time left below this is passed on exact: a step would be a large part of it.
const STEADY_FROM: Duration = Duration::from_secs(1);

/// The longest timeout accepted: ureq adds budgets to `Instant`s, which would overflow (and
/// panic) for absurd values such as `Duration::MAX`.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The budget of each phase of one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PhaseBudgets {
    /// The host name lookup; `None` for an IP literal, which needs none.
    pub(crate) resolve: Option<Duration>,
    pub(crate) connect: Duration,
    pub(crate) send_request: Duration,
    pub(crate) send_body: Duration,
    pub(crate) recv_response: Duration,
    pub(crate) recv_body: Duration,
}

impl PhaseBudgets {
    /// Splits `total` among the phases; `lookup` says whether the host is a name to resolve.
    pub(crate) fn split(total: Duration, lookup: bool) -> Self {
        // Each share is rounded down, so the shares never add up to more than `total`.
        let twentieth = total / 20;
        PhaseBudgets {
            resolve: lookup.then_some(total / 10),
            connect: total / 10,
            send_request: twentieth,
            send_body: total / 10,
            recv_response: total / 2,
            recv_body: twentieth * 3,
        }
    }

    /// The budget of the phase whose bound `expired`; `None` for a bound this split does not
    /// set (ureq's whole-exchange, per-call and per-read bounds).
    pub(crate) fn of(&self, expired: ureq::Timeout) -> Option<Duration> {
        match expired {
            ureq::Timeout::Resolve => self.resolve,
            ureq::Timeout::Connect => Some(self.connect),
            ureq::Timeout::SendRequest => Some(self.send_request),
            ureq::Timeout::SendBody => Some(self.send_body),
            ureq::Timeout::RecvResponse => Some(self.recv_response),
            ureq::Timeout::RecvBody => Some(self.recv_body),
            _ => None,
        }
    }

    /// The longest an exchange can take: the sum of the budgets.
    #[cfg(test)]
    pub(crate) fn total(&self) -> Duration {
        [
            self.resolve.unwrap_or(Duration::ZERO),
            self.connect,
            self.send_request,
            self.send_body,
            self.recv_response,
            self.recv_body,
        ]
        .into_iter()
        .sum()
    }

    /// Sets the budgets on an agent's configuration (and no whole-exchange bound).
    pub(crate) fn apply(&self, builder: ConfigBuilder<AgentScope>) -> ConfigBuilder<AgentScope> {
        builder
            .timeout_global(None)
            .timeout_per_call(None)
            .timeout_resolve(self.resolve)
            .timeout_connect(Some(self.connect))
            .timeout_send_request(Some(self.send_request))
            .timeout_send_body(Some(self.send_body))
            .timeout_recv_response(Some(self.recv_response))
            .timeout_recv_body(Some(self.recv_body))
    }
}

/// Rounds the time left down to a whole [`STEP`] (when at least [`STEADY_FROM`] is left).
fn steady(mut timeout: NextTimeout) -> NextTimeout {
    if let UreqDuration::Exact(left) = timeout.after {
        if left >= STEADY_FROM {
            let steps = left.as_nanos() / STEP.as_nanos();
            // `steps` is at most a year over 50 ms: it fits a u32 many times over.
            timeout.after = UreqDuration::Exact(STEP * u32::try_from(steps).unwrap_or(u32::MAX));
        }
    }
    timeout
}

/// The outermost link of the connector chain: wraps each connection in a [`Steady`] one.
#[derive(Debug, Default)]
pub(crate) struct SteadyTimeouts;

impl<In: Transport> Connector<In> for SteadyTimeouts {
    type Out = Steady<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(Steady))
    }
}

/// A connection whose reads and writes get the time left rounded by [`steady`].
#[derive(Debug)]
pub(crate) struct Steady<T>(T);

impl<T: Transport> Transport for Steady<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.0.transmit_output(amount, steady(timeout))
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.0.maybe_await_input(steady(timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.0.await_input(steady(timeout))
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(after: UreqDuration) -> NextTimeout {
        NextTimeout {
            after,
            ..NextTimeout::default()
        }
    }

    #[test]
    fn time_left_is_rounded_down_to_a_step_from_a_second_on() {
        let exact = |ms: u64, ns: u32| {
            UreqDuration::Exact(Duration::from_millis(ms) + Duration::from_nanos(u64::from(ns)))
        };
        for (given, want) in [
            (exact(14_999, 999_999), exact(14_950, 0)),
            (exact(14_950, 1), exact(14_950, 0)),
            (exact(14_950, 0), exact(14_950, 0)),
            (exact(1_000, 0), exact(1_000, 0)),
            (exact(1_049, 7), exact(1_000, 0)),
            // Under a second: exact, so a short budget is never cut to nothing.
            (exact(999, 5), exact(999, 5)),
            (exact(30, 0), exact(30, 0)),
            (UreqDuration::NotHappening, UreqDuration::NotHappening),
        ] {
            assert_eq!(steady(left(given)).after, want, "{given:?}");
        }
        // Two requests a little apart ask for the same timeout.
        assert_eq!(
            steady(left(exact(14_999, 990_000))).after,
            steady(left(exact(14_999, 980_000))).after
        );
    }

    #[test]
    fn the_budgets_add_up_to_the_timeout_at_most() {
        for total in [
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_millis(7),
            Duration::from_nanos(13),
            MAX_TIMEOUT,
        ] {
            let named = PhaseBudgets::split(total, true);
            assert!(named.total() <= total, "{total:?}: {named:?}");
            // Rounding loses less than a nanosecond per share (three in the 3/20 one).
            assert!(total - named.total() < Duration::from_nanos(8), "{total:?}");
            let literal = PhaseBudgets::split(total, false);
            assert_eq!(literal.resolve, None);
            assert!(literal.total() < named.total() || total < Duration::from_nanos(10));
        }
    }

    #[test]
    fn the_default_split_is_the_documented_one() {
        let b = PhaseBudgets::split(Duration::from_secs(30), true);
        assert_eq!(
            b,
            PhaseBudgets {
                resolve: Some(Duration::from_secs(3)),
                connect: Duration::from_secs(3),
                send_request: Duration::from_millis(1500),
                send_body: Duration::from_secs(3),
                recv_response: Duration::from_secs(15),
                recv_body: Duration::from_millis(4500),
            }
        );
        assert_eq!(b.total(), Duration::from_secs(30));
    }

    #[test]
    fn the_agent_gets_the_phase_budgets_and_no_whole_bound() {
        let b = PhaseBudgets::split(Duration::from_secs(10), false);
        let config = b
            .apply(ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(1))))
            .build();
        let t = config.timeouts();
        assert_eq!((t.global, t.per_call, t.resolve), (None, None, None));
        assert_eq!(t.connect, Some(Duration::from_secs(1)));
        assert_eq!(t.send_request, Some(Duration::from_millis(500)));
        assert_eq!(t.send_body, Some(Duration::from_secs(1)));
        assert_eq!(t.recv_response, Some(Duration::from_secs(5)));
        assert_eq!(t.recv_body, Some(Duration::from_millis(1500)));
    }
}
