//! The one support module of the integration tests: each test binary says `mod support;`.
//!
//! - [`child`]: the child-process harness (a test binary re-run as a child);
//! - `cli` (feature `testing`): the example binaries as child processes;
//! - `door`: a port in front of a server, closed, open, or slow;
//! - `files`: directory listings, private files, polling;
//! - `full_disk`: a store wrapper whose saves fail as on a full disk;
//! - `random`: a seeded xorshift generator and its seed;
//! - `session` (feature `testing`): the fake's default account, calls from many threads;
//! - `stores`: a store from a spec, records, the durable stores' cross-process checks.
//!
//! Every test binary compiles all of it and uses a part, hence the one `allow(dead_code)`.

#![allow(dead_code)]

pub mod child;
#[cfg(feature = "testing")]
mod cli;
mod door;
mod files;
mod full_disk;
mod random;
#[cfg(feature = "testing")]
mod session;
mod stores;

// Re-exported flat (`support::Cli`, `support::listing`), each used by some test binaries only.
#[cfg(feature = "testing")]
#[allow(unused_imports)]
pub use cli::*;
#[allow(unused_imports)]
pub use door::*;
#[allow(unused_imports)]
pub use files::*;
#[allow(unused_imports)]
pub use full_disk::*;
#[allow(unused_imports)]
pub use random::*;
#[cfg(feature = "testing")]
#[allow(unused_imports)]
pub use session::*;
#[allow(unused_imports)]
pub use stores::*;

/// Asserts some of a `FakeChatApp`'s counters at once, showing them all when one differs:
/// `assert_counters!(server, makes: 1, refreshes: 0);`.
#[allow(unused_macros)]
macro_rules! assert_counters {
    ($server:expr, $($field:ident: $value:expr),+ $(,)?) => {{
        let c = $server.counters();
        assert_eq!(($(c.$field),+), ($($value),+), "{c:?}");
    }};
}
#[allow(unused_imports)]
pub(crate) use assert_counters;

/// The cross-process tests of a durable store, and the entry test of their children: a child
/// holds the lock (the parent's `lock` waits), is killed holding it (the lock is released),
/// is stopped holding it (every waiter times out), two children increment a ledger (nothing
/// is lost). `place` is an expression giving `(keep, path)`: something to keep alive for the
/// test's length and the `&Path` the store's `open: fn(&Path) -> Store` opens (for PostgreSQL,
/// a conninfo); the attributes go on every test but the child entry.
#[allow(unused_macros)]
macro_rules! cross_process_tests {
    ($(#[$attr:meta])* place: $place:expr, open: $open:expr) => {
        /// Plays a child process's part when this binary is re-run by a cross-process test.
        #[test]
        #[ignore = "child process entry: started by this file's cross-process tests"]
        fn child_process() {
            $crate::support::run_child($open);
        }

        #[test]
        $(#[$attr])*
        fn lock_waits_for_another_process() {
            let (_keep, path) = $place;
            let store = $open(&path);
            $crate::support::lock_waits_for_other_process(&store, &path);
        }

        #[test]
        $(#[$attr])*
        fn a_killed_holder_releases_the_lock() {
            let (_keep, path) = $place;
            drop($open(&path));
            $crate::support::killed_child_releases_lock($open, &path);
        }

        #[test]
        $(#[$attr])*
        fn two_processes_increment_without_losing_updates() {
            let (_keep, path) = $place;
            let store = $open(&path);
            $crate::support::two_processes_increment(&store, &path);
        }

        /// Issue 9: a lock holder stopped with SIGSTOP (Ctrl-Z, a paused VM) no longer blocks
        /// the other processes for ever: each waiter ends with `LockTimeout` within its lock
        /// timeout + 2 s.
        #[cfg(unix)]
        #[test]
        $(#[$attr])*
        fn a_stopped_lock_holder_times_out_every_waiter() {
            let (_keep, path) = $place;
            drop($open(&path));
            let key = chatapp_session::store::StoreKey::new("stopped holder");
            let mut holder = $crate::support::spawn_child("hold-forever", &path, &key);
            $crate::support::wait_until_locked(&mut holder);
            $crate::support::stopped_holder_times_out_every_waiter(holder, &key, || {
                $open(&path).with_lock_timeout($crate::support::STOPPED_LOCK_TIMEOUT)
            });
        }
    };
}
#[allow(unused_imports)]
pub(crate) use cross_process_tests;
