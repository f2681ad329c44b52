//! What a session tells the application about its token pair: the [`Event`]s given to
//! [`SessionBuilder::on_event`](crate::SessionBuilder::on_event).

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

/// Something that happened to a session's token pair. Never holds a secret.
///
/// Events are emitted after the store is updated, and outside the session's locks: the hook
/// may call the session (for a token, say). Their use: re-authorize a realtime socket (ChatApp's
/// push channel authenticates with the access token) on [`Made`](Event::Made),
/// [`Refreshed`](Event::Refreshed) or [`Adopted`](Event::Adopted); metrics; alerts on
/// [`SaveFailed`](Event::SaveFailed) or [`QuotaLow`](Event::QuotaLow).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// tokens.make issued a new pair, and it was saved.
    #[non_exhaustive]
    Made {
        /// When the new access token ends (unix seconds, the server's word).
        access_expires_at: i64,
        /// When the new refresh token ends (unix seconds).
        refresh_expires_at: i64,
        /// The cabinet user of the pair.
        cabinet_user_id: i64,
    },
    /// tokens.refresh issued a new pair, and it was saved.
    #[non_exhaustive]
    Refreshed {
        /// When the new access token ends (unix seconds, the server's word).
        access_expires_at: i64,
        /// When the new refresh token ends (unix seconds).
        refresh_expires_at: i64,
        /// The cabinet user of the pair.
        cabinet_user_id: i64,
    },
    /// The session took up a pair it found in the store: saved by another process (or
    /// another session on the same store, or an earlier run of this program).
    #[non_exhaustive]
    Adopted {
        /// When the access token ends (unix seconds).
        access_expires_at: i64,
        /// When the refresh token ends (unix seconds).
        refresh_expires_at: i64,
        /// The cabinet user of the pair.
        cabinet_user_id: i64,
    },
    /// The server refused the access token in use (`ApiInvalidTokenError`, a bare 401, a
    /// `false` from tokens.check, or [`Session::invalidate`](crate::Session::invalidate)); the
    /// next call gets a fresh one.
    #[non_exhaustive]
    TokenRejected {
        /// The HTTP status of the refusal, when the session saw it itself.
        status: Option<u16>,
    },
    /// A pair the server issued could not be saved to the store.
    #[non_exhaustive]
    SaveFailed {
        /// The store's error, as text (it never holds a secret).
        error: String,
    },
    /// A tokens.make was sent and fewer than 10 makes are left in the rolling 24 h.
    #[non_exhaustive]
    QuotaLow {
        /// Makes counted in the last 24 h.
        used: u32,
        /// Makes this session may send in 24 h (the limit less the reserve).
        allowed: u32,
    },
}

/// The most makes left at which [`Event::QuotaLow`] is emitted is one less than this.
pub(crate) const QUOTA_LOW_BELOW: u32 = 10;

/// The application's hook.
pub(crate) type Hook = Arc<dyn Fn(&Event) + Send + Sync + 'static>;

/// Events waiting for delivery, and the hook. Events are queued where they happen (under
/// the session's locks) and delivered by [`deliver`](Self::deliver) once those are released.
#[derive(Default)]
pub(crate) struct Events {
    hook: Option<Hook>,
    queue: Mutex<Vec<Event>>,
    /// Held while events are handed to the hook, so that they arrive in order.
    delivering: Mutex<()>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("hook", &self.hook.is_some())
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(hook: Option<Hook>) -> Self {
        Events {
            hook,
            queue: Mutex::new(Vec::new()),
            delivering: Mutex::new(()),
        }
    }

    /// Queues `event` (nothing without a hook).
    pub(crate) fn push(&self, event: Event) {
        if self.hook.is_some() {
            self.queue.lock().push(event);
        }
    }

    /// Hands every queued event to the hook, in order. Never waits: when another thread (or
    /// this one, from inside the hook) is delivering, that delivery takes these events too.
    pub(crate) fn deliver(&self) {
        let Some(hook) = &self.hook else {
            return;
        };
        loop {
            {
                let Some(_delivering) = self.delivering.try_lock() else {
                    return;
                };
                loop {
                    let batch = std::mem::take(&mut *self.queue.lock());
                    if batch.is_empty() {
                        break;
                    }
                    for event in &batch {
                        hook(event);
                    }
                }
            }
            // An event queued while the delivering lock was being released is delivered here.
            if self.queue.lock().is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_arrive_in_order_and_a_hook_may_reenter() {
        let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
        let events: Arc<Mutex<Option<Arc<Events>>>> = Arc::default();
        let (seen2, events2) = (seen.clone(), events.clone());
        let hook: Hook = Arc::new(move |e: &Event| {
            seen2.lock().push(e.clone());
            // Re-entering: queue one more from inside the hook, once.
            if let Event::TokenRejected { status: Some(1) } = e {
                if let Some(ev) = events2.lock().clone() {
                    ev.push(Event::TokenRejected { status: Some(2) });
                    ev.deliver();
                }
            }
        });
        let sink = Arc::new(Events::new(Some(hook)));
        *events.lock() = Some(sink.clone());
        sink.push(Event::TokenRejected { status: Some(1) });
        sink.push(Event::TokenRejected { status: None });
        sink.deliver();
        let statuses: Vec<Option<u16>> = seen
            .lock()
            .iter()
            .map(|e| match e {
                Event::TokenRejected { status } => *status,
                _ => Some(0),
            })
            .collect();
        assert_eq!(statuses, [Some(1), None, Some(2)]);
        *events.lock() = None;
    }

    #[test]
    fn without_a_hook_nothing_is_kept() {
        let sink = Events::new(None);
        sink.push(Event::TokenRejected { status: None });
        assert!(sink.queue.lock().is_empty());
        sink.deliver();
    }
}
