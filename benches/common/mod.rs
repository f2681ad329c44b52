//! The plain benchmark harness shared by the benches: a candidate and its floor measured in
//! alternating rounds (so that load from other processes hits both alike), medians of the
//! per-round ns/op, and one table line per comparison.

#![allow(dead_code)] // each bench uses its own part of this module

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chatapp_session::store::StoredRecord;
use chatapp_session::{AccessToken, RefreshToken, TokenPair};

/// A closed loopback port: a session that tried the network would fail, not pass unnoticed.
pub const NO_SERVER: &str = "http://127.0.0.1:9";
/// A far-future end time (2096): a pair that ends then stays usable for the whole run.
pub const FAR_FUTURE: i64 = 4_000_000_000;

/// A stored record with a far-future pair (64-character tokens, as ChatApp's are); `n`
/// varies its make ledger.
pub fn far_future_record(n: i64) -> StoredRecord {
    StoredRecord {
        pair: Some(TokenPair {
            access: AccessToken::new("a".repeat(64)),
            access_expires_at: FAR_FUTURE,
            refresh: RefreshToken::new("r".repeat(64)),
            refresh_expires_at: FAR_FUTURE,
            cabinet_user_id: 14545,
        }),
        makes: vec![1_750_000_000 + n],
        ..Default::default()
    }
}

/// One line of the table.
pub struct Row {
    pub name: String,
    pub candidate_ns: f64,
    pub floor_ns: Option<f64>,
    pub goal: Option<f64>,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        self.floor_ns.map(|floor| self.candidate_ns / floor)
    }

    pub fn verdict(&self) -> &'static str {
        match (self.ratio(), self.goal) {
            (Some(ratio), Some(goal)) if ratio <= goal => "PASS",
            (Some(_), Some(_)) => "FAIL",
            _ => "info",
        }
    }
}

/// Prints the header of the table.
pub fn print_header(title: &str) {
    println!("\n{title}");
    println!(
        "{:<44} {:>16} {:>12} {:>7} {:>6}  result",
        "name", "candidate ns/op", "floor ns/op", "ratio", "goal"
    );
}

/// Prints one row (and returns it, for a summary).
pub fn print_row(row: &Row) {
    let floor = row.floor_ns.map_or("-".to_owned(), |f| format!("{f:.1}"));
    let ratio = row.ratio().map_or("-".to_owned(), |r| format!("{r:.3}"));
    let goal = row.goal.map_or("-".to_owned(), |g| format!("{g:.2}x"));
    println!(
        "{:<44} {:>16.1} {:>12} {:>7} {:>6}  {}",
        row.name,
        row.candidate_ns,
        floor,
        ratio,
        goal,
        row.verdict()
    );
}

/// The median of `values` (which it sorts).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    assert!(n > 0, "median of nothing");
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Runs `rounds` rounds; each round runs one batch of `candidate` and one of `floor` (the
/// order alternating from round to round), each batch returning its ns/op. Returns the
/// medians (candidate, floor).
pub fn interleave(
    rounds: usize,
    mut candidate: impl FnMut() -> f64,
    mut floor: impl FnMut() -> f64,
) -> (f64, f64) {
    let mut c = Vec::with_capacity(rounds);
    let mut f = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round % 2 == 0 {
            c.push(candidate());
            f.push(floor());
        } else {
            f.push(floor());
            c.push(candidate());
        }
    }
    (median(&mut c), median(&mut f))
}

/// The median ns/op of `rounds` batches of `op` alone (for costs with no floor).
pub fn measure(rounds: usize, mut batch: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..rounds).map(|_| batch()).collect();
    median(&mut v)
}

/// ns/op of `iters` calls of `op` on this thread.
pub fn batch<T>(iters: u64, mut op: impl FnMut() -> T) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(op());
    }
    elapsed_ns(start.elapsed(), iters)
}

/// Batches of [`batch_threads`] whose threads never ran side by side in any try.
pub static LONELY_BATCHES: AtomicUsize = AtomicUsize::new(0);

/// ns/op of `op` on each of `threads` threads started together, all hammering whatever `op`
/// shares, until one of them has done `iters` calls: the threads' summed running time over
/// their summed calls (a thread's own time per call, averaged over the threads).
///
/// The threads spin until all of them run (a sleeping barrier would wake them one by one),
/// and all stop when the first is done. On a machine whose cores are busy with other work,
/// the threads often do not run side by side at all (one runs its batch while the other waits
/// for a core: nothing contends), so a try counts only when every thread did at least a
/// quarter of the calls of the busiest one; up to 100 tries (which keeps the bench within
/// a minute or so), else the last one is taken and counted in [`LONELY_BATCHES`].
pub fn batch_threads<T>(threads: usize, iters: u64, op: impl Fn() -> T + Sync) -> f64 {
    let mut last = 0.0;
    for _ in 0..100 {
        let runs = run_threads(threads, iters, &op);
        let time: Duration = runs.iter().map(|r| r.0).sum();
        let calls: Vec<u64> = runs.iter().map(|r| r.1).collect();
        last = elapsed_ns(time, calls.iter().sum());
        let (least, most) = (calls.iter().min().unwrap(), calls.iter().max().unwrap());
        if least * 4 >= *most {
            return last;
        }
    }
    LONELY_BATCHES.fetch_add(1, Ordering::Relaxed);
    last
}

/// One try of [`batch_threads`]: each thread's (running time, calls).
fn run_threads<T>(
    threads: usize,
    iters: u64,
    op: &(impl Fn() -> T + Sync),
) -> Vec<(Duration, u64)> {
    const CHUNK: u64 = 64;
    let ready = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    ready.fetch_add(1, Ordering::SeqCst);
                    while ready.load(Ordering::SeqCst) < threads {
                        std::hint::spin_loop();
                    }
                    let start = Instant::now();
                    let mut calls = 0;
                    while calls < iters && !stop.load(Ordering::Relaxed) {
                        for _ in 0..CHUNK {
                            black_box(op());
                        }
                        calls += CHUNK;
                    }
                    stop.store(true, Ordering::Relaxed);
                    (start.elapsed(), calls)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn elapsed_ns(elapsed: Duration, iters: u64) -> f64 {
    elapsed.as_nanos() as f64 / iters as f64
}

/// [`interleave`] for any number of sides: each round runs one batch of every side, in an
/// order shuffled afresh each round (a fixed xorshift sequence, so runs are alike), so that no
/// side always follows the same other side (one side's after-effects, such as a thread it
/// left finishing, would otherwise always land on the same neighbour). Returns the median
/// ns/op of each side, in the order given.
pub fn interleave_all(rounds: usize, sides: &mut [&mut dyn FnMut() -> f64]) -> Vec<f64> {
    let n = sides.len();
    let mut results: Vec<Vec<f64>> = (0..n).map(|_| Vec::with_capacity(rounds)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        for i in (1..n).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        for &side in &order {
            results[side].push(sides[side]());
        }
    }
    results.iter_mut().map(|v| median(v)).collect()
}
