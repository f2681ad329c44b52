//! Fault injection: what a test can make the next reply to a route do instead of the usual.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::Endpoint;

/// The fake server tells requests apart by [`Endpoint`] (exported here as
/// [`Route`](super::Route) too): a [`Fault`] applies to one of them.
impl Endpoint {
    /// The endpoint of a request, from its method and path (without the query)., from its method and path (without the query).
    pub(crate) fn of(method: &str, path: &str) -> Endpoint {
        match (method, path) {
            ("POST", "/v1/tokens") => Endpoint::Make,
            ("POST", "/v1/tokens/refresh") => Endpoint::Refresh,
            ("GET", "/v1/tokens/check") => Endpoint::Check,
            _ => Endpoint::Request,
        }
    }
}

/// One `T` per [`Endpoint`]: a lookup that cannot miss.
#[derive(Debug, Default)]
pub(crate) struct PerEndpoint<T> {
    make: T,
    refresh: T,
    check: T,
    request: T,
}

impl<T> PerEndpoint<T> {
    /// The `T` of `endpoint`.
    pub(crate) fn get(&self, endpoint: Endpoint) -> &T {
        match endpoint {
            Endpoint::Make => &self.make,
            Endpoint::Refresh => &self.refresh,
            Endpoint::Check => &self.check,
            Endpoint::Request => &self.request,
        }
    }

    /// The `T` of `endpoint`, to change.
    pub(crate) fn get_mut(&mut self, endpoint: Endpoint) -> &mut T {
        match endpoint {
            Endpoint::Make => &mut self.make,
            Endpoint::Refresh => &mut self.refresh,
            Endpoint::Check => &mut self.check,
            Endpoint::Request => &mut self.request,
        }
    }

    /// Every `T`, to change.
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        [
            &mut self.make,
            &mut self.refresh,
            &mut self.check,
            &mut self.request,
        ]
        .into_iter()
    }
}

/// What the server does instead of its usual reply, once, to the next request on an [`Endpoint`]
/// (see [`FakeChatApp::inject`](super::FakeChatApp::inject)).
///
/// Unless said otherwise a fault replaces the work too: nothing is issued, rotated or
/// counted (but [`Counters::faults_served`](super::Counters::faults_served)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Any canned reply: this status, body and `Content-Type`.
    Status {
        /// The HTTP status.
        status: u16,
        /// The body, sent as it is.
        body: String,
        /// The `Content-Type` header.
        content_type: String,
    },
    /// This status (e.g. 500, 502) with an HTML body, like a proxy in front of the API.
    ServerError(u16),
    /// A 200 reply whose body is broken JSON: `{"success": tru`.
    MalformedJson,
    /// On [`Endpoint::Make`] and [`Endpoint::Refresh`]: the work is done (a pair is issued, a refresh
    /// rotates) and a success reply is sent whose `data` lacks this field (or, when `data` has
    /// no such field, whose envelope lacks it: `"data"` or `"success"`). When the work itself
    /// is refused, the ordinary refusal is sent. On [`Endpoint::Check`] and [`Endpoint::Request`]:
    /// a 200 reply `{"data":{}}`, with no `success` field, and no work done.
    MissingField(String),
    /// On [`Endpoint::Make`] and [`Endpoint::Refresh`]: the work is done and the success reply has
    /// both end times and `cabinetUserId` as strings (refusals are sent as usual). On
    /// [`Endpoint::Check`] and [`Endpoint::Request`]: a 200 reply `{"success":"true","data":{}}`.
    WrongTypes,
    /// The connection is closed without any reply, and nothing is done server-side.
    DropConnection,
    /// Waits this long, then serves the request normally (the wait ends early if the server
    /// is dropped).
    Delay(Duration),
    /// The work is done (a refresh rotates, a make counts and issues, a request is counted),
    /// then the connection is closed without any reply: the client never learns the outcome.
    LostReply,
    /// A 200 reply `{"success":true,"data":"xxxx…` of `bytes` bytes in all, streamed (never
    /// held in memory). With `declare_length` it carries `Content-Length: bytes`; without,
    /// it has no length and ends when the server closes the connection.
    Huge {
        /// The body's size in bytes.
        bytes: u64,
        /// Whether to send `Content-Length`.
        declare_length: bool,
    },
    /// A 429 reply with the envelope
    /// `{"success":false,"error":{"code":"ApiTooManyRequestsError","message":"Too many requests"}}`
    /// and `Retry-After: 1`.
    RateLimited,
}

impl Fault {
    /// A canned reply with a JSON body: [`Fault::Status`] with `Content-Type: application/json`.
    pub fn json(status: u16, body: impl Into<String>) -> Fault {
        Fault::Status {
            status,
            body: body.into(),
            content_type: "application/json".to_owned(),
        }
    }
}

/// One queue of pending faults per route.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queues: Mutex<PerEndpoint<VecDeque<Fault>>>,
}

impl FaultQueue {
    /// Queues `fault` for the next request on `route` not already given one.
    pub(crate) fn push(&self, route: Endpoint, fault: Fault) {
        self.queues.lock().get_mut(route).push_back(fault);
    }

    /// The fault for a request on `route` that just arrived, if any.
    pub(crate) fn pop(&self, route: Endpoint) -> Option<Fault> {
        self.queues.lock().get_mut(route).pop_front()
    }

    /// How many faults wait for `route`.
    pub(crate) fn pending(&self, route: Endpoint) -> usize {
        self.queues.lock().get(route).len()
    }

    /// Forgets every pending fault.
    pub(crate) fn clear(&self) {
        for queue in self.queues.lock().iter_mut() {
            queue.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_told_apart_by_method_and_path() {
        assert_eq!(Endpoint::of("POST", "/v1/tokens"), Endpoint::Make);
        assert_eq!(
            Endpoint::of("POST", "/v1/tokens/refresh"),
            Endpoint::Refresh
        );
        assert_eq!(Endpoint::of("GET", "/v1/tokens/check"), Endpoint::Check);
        assert_eq!(Endpoint::of("GET", "/v1/tokens"), Endpoint::Request);
        assert_eq!(Endpoint::of("POST", "/v1/tokens/check"), Endpoint::Request);
        assert_eq!(Endpoint::of("GET", "/v1/licenses"), Endpoint::Request);
    }

    #[test]
    fn faults_queue_per_route_in_order() {
        let q = FaultQueue::default();
        q.push(Endpoint::Refresh, Fault::DropConnection);
        q.push(Endpoint::Refresh, Fault::RateLimited);
        q.push(Endpoint::Make, Fault::MalformedJson);
        assert_eq!(q.pending(Endpoint::Refresh), 2);
        assert_eq!(q.pop(Endpoint::Check), None);
        assert_eq!(q.pop(Endpoint::Refresh), Some(Fault::DropConnection));
        assert_eq!(q.pop(Endpoint::Refresh), Some(Fault::RateLimited));
        assert_eq!(q.pop(Endpoint::Refresh), None);
        q.clear();
        assert_eq!(q.pop(Endpoint::Make), None);
    }
}
