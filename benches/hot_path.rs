//! The hot path: `Session::access_token()` on a usable, cached token, against its floor: a bare
//! `parking_lot::Mutex<Arc<str>>` lock + clone + one `SystemTime::now()` read.
//!
//! `cargo bench --all-features --bench hot_path`

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use chatapp_session::store::{MemoryStore, StoreKey, TokenStore};
use chatapp_session::Session;
use common::{
    batch, batch_threads, far_future_record, interleave, print_header, print_row, Row, NO_SERVER,
};
use parking_lot::Mutex;

/// Short batches, many rounds: a batch rarely meets a preemption, and the median drops those
/// that do.
const ROUNDS: usize = 401;
const ITERS: u64 = 20_000;
/// Threads that contend need longer batches to contend for most of them.
const THREAD_ROUNDS: usize = 61;
const THREAD_ITERS: u64 = 20_000;

/// A session on a memory store holding a far-future pair, its cache warmed by one call, its
/// base URL a closed port.
fn warm_session() -> Session {
    let store = MemoryStore::new();
    store
        .save(&StoreKey::new("bench"), &far_future_record(0))
        .unwrap();
    let session = Session::builder()
        .store(store)
        .store_key("bench")
        .base_url(NO_SERVER)
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
