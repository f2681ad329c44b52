//! The hot path: `Session::access_token()` on a usable, cached token, against its floor: a bare
//! `parking_lot::Mutex<Arc<str>>` lock + clone + one `SystemTime::now()` read.
//!
//! `cargo bench --all-features --bench hot_path`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use chatapp_session::store::{MemoryStore, StoreKey, StoredRecord, TokenStore};
use chatapp_session::{AccessToken, RefreshToken, Session, TokenPair};
use common::{batch, batch_threads, interleave, print_header, print_row, Row};
use parking_lot::Mutex;

/// A far-future end time (2096), so the pair stays usable for the whole run.
const FAR_FUTURE: i64 = 4_000_000_000;
/// Short batches, many rounds: a batch rarely meets a preemption, and the median drops those
/// that do.
const ROUNDS: usize = 401;
const ITERS: u64 = 20_000;
/// Threads that contend need longer batches to contend for most of them.
const THREAD_ROUNDS: usize = 61;
const THREAD_ITERS: u64 = 20_000;

/// A session on a memory store holding a far-future pair, its cache warmed by one call.
/// The base URL is a closed loopback port: a network call would fail, not pass unnoticed.
fn warm_session() -> Session {
    let store = MemoryStore::new();
    let key = StoreKey::new("bench");
    let pair = TokenPair {
        access: AccessToken::new("a".repeat(64)),
        access_expires_at: FAR_FUTURE,
        refresh: RefreshToken::new("r".repeat(64)),
        refresh_expires_at: FAR_FUTURE,
        cabinet_user_id: 1,
    };
    store
        .save(
            &key,
            &StoredRecord {
                pair: Some(pair),
                makes: Vec::new(),
            },
        )
        .unwrap();
    let session = Session::builder()
        .store(store)
        .store_key("bench")
        .base_url("http://127.0.0.1:9")
        .build()
        .unwrap();
    session.access_token().expect("the stored pair is usable");
    session
}

/// The floor: what any cached-token getter must at least do.
fn floor_op(cell: &Mutex<Arc<str>>) -> Arc<str> {
    black_box(SystemTime::now());
    cell.lock().clone()
}

fn main() {
    let session = warm_session();
    let cell: Mutex<Arc<str>> = Mutex::new(Arc::from("a".repeat(64)));
    // Warm both up before measuring.
    batch(ITERS, || session.access_token());
    batch(ITERS, || floor_op(&cell));

    print_header("hot path: access_token() on a cached, usable token");
    let (c, f) = interleave(
        ROUNDS,
        || batch(ITERS, || session.access_token()),
        || batch(ITERS, || floor_op(&cell)),
    );
    print_row(&Row {
        name: "access_token, 1 thread".into(),
        candidate_ns: c,
        floor_ns: Some(f),
        goal: Some(1.5),
    });
    let (c, f) = interleave(
        THREAD_ROUNDS,
        || batch_threads(2, THREAD_ITERS, || session.access_token()),
        || batch_threads(2, THREAD_ITERS, || floor_op(&cell)),
    );
    print_row(&Row {
        name: "access_token, 2 threads on one session".into(),
        candidate_ns: c,
        floor_ns: Some(f),
        goal: Some(2.0),
    });
    let lonely = common::LONELY_BATCHES.load(std::sync::atomic::Ordering::Relaxed);
    if lonely > 0 {
        println!("note: in {lonely} two-thread batches the threads never ran side by side");
    }
}
