//! The one support module of the integration tests: each test binary says `mod support;`.
//!
//! - [`child`]: the child-process harness (a test binary re-run as a child);
//! - `cli` (feature `testing`): the example binaries as child processes;
//! - `files`: directory listings, private files, polling;
//! - `random`: a seeded xorshift generator and its seed;
//! - `session` (feature `testing`): the fake's default account, calls from many threads;
//! - `stores`: a store from a spec, records, the durable stores' cross-process checks.
//!
//! Every test binary compiles all of it and uses a part, hence the one `allow(dead_code)`.

#![allow(dead_code)]

pub mod child;
#[cfg(feature = "testing")]
mod cli;
mod files;
mod random;
#[cfg(feature = "testing")]
mod session;
mod stores;

// Re-exported flat (`support::Cli`, `support::listing`), each used by some test binaries only.
#[cfg(feature = "testing")]
#[allow(unused_imports)]
pub use cli::*;
#[allow(unused_imports)]
pub use files::*;
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
