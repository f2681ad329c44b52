//! A seeded chaos soak (issue 15): a fleet of real child processes (this test binary re-run),
//! each with several threads, shares one store and calls a `FakeChatApp` for simulated days
//! while every fault the crate claims to survive is thrown at it at once, and invariants are
//! checked against the server's own record at the end of every simulated day.
//!
//! - **Time.** The parent owns the simulated time: it advances the server's clock one tick
//!   (an hour; two in the long run) every few real milliseconds and writes the simulated time,
//!   the phase and each child's clock skew to a control file. A child's [`Clock`] reads that
//!   file: its time is the server's plus its own skew (up to ±15 days, and it jumps).
//! - **Faults, all from one seed** (xorshift): server 500/502 HTML, malformed JSON, dropped
//!   connections, delays past the HTTP timeout, refresh and make replies lost after the work
//!   was done, 429 on tokens.make, revoked access tokens and revoked pairs; SIGKILL and
//!   SIGSTOP/SIGCONT of children; a disk that refuses saves (a store wrapper every child
//!   consults through the control file); clock skew and jumps. Each kind is forced at least
//!   once in every run and counted when it fired.
//! - **Invariants**, checked at a pause at the end of every simulated day (every child idle,
//!   the server idle), from [`FakeChatApp::token_log`] and the store's record; see
//!   [`Run::check_day`] for the exact statements and bounds.
//! - **Replay.** The seed is printed; `CHATAPP_SOAK_SEED=<seed> CHATAPP_SOAK_DAYS=<days>`
//!   replays the same fault schedule (the children's timing is real, so interleavings differ).
//!
//! The normal suite runs a short soak per store (file, SQLite; PostgreSQL under
//! `.ci/postgres-env`, the keyring under `.ci/keyring-env`); `cargo test --release
//! --all-features --test soak -- --ignored long` runs 365 simulated days on each (the soak
//! needs the `testing` feature, and each store its own). docs/soak.md has the figures.

#![cfg(unix)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chatapp_session::store::{StoreKey, TokenStore};
use chatapp_session::testing::{
    FakeChatApp, Fault, ManualClock, RefusedBecause, Route, TokenEvent, TokenOutcome,
    DEFAULT_APP_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD,
};
use chatapp_session::{Clock, Session};

mod support;
use support::child::{self, Params};
use support::{seed_from_env, XorShift};

const DAY: i64 = 86_400;
/// Where the simulated time starts (a fixed moment, so that a replay starts there too).
const T0: i64 = 1_800_000_000;
/// The HTTP timeout of every child session.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// A delay fault: past the HTTP timeout, so the client gives up before the work is done.
const DELAY: Duration = Duration::from_millis(2_500);
/// Every store's lock timeout (`with_lock_timeout`), so that a stalled holder is felt.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the parent holds the store's lock when it stalls a holder: past the timeout.
/// What libtest writes before the child's own first line, on the same line.
const LIBTEST_PREFIX: &str = "test soak_child ... ";
/// How many of each child's last output lines a failure shows.
const TAIL_LINES: usize = 30;
/// What each child incarnation (slot, incarnation) wrote last.
type Tails = Arc<Mutex<HashMap<(usize, u32), VecDeque<String>>>>;
/// A held lock longer than the lock timeout.
const STALL: Duration = Duration::from_secs(4);
/// The longest a whole call may take, as a child measures it: the wait for another process
/// (the lock timeout plus the HTTP timeout of the holder's exchange), the call's own exchanges
/// (the request, a refresh, a make, the resend: four HTTP timeouts at most), and a second for
/// its own process being stopped (at most 3 ticks) and scheduling.
fn call_bound() -> Duration {
    LOCK_TIMEOUT + HTTP_TIMEOUT + 4 * HTTP_TIMEOUT + Duration::from_secs(1)
}

/// The largest clock skew of a child.
const MAX_SKEW: i64 = 15 * DAY;
/// Where a failure prints from: the last this many events.
const LAST_EVENTS: usize = 50;

/// One soak at a time: they share two cores, and their latencies are measured.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// Randomness and the control file

/// A child's clock skew: within ±[`MAX_SKEW`].
fn skew(rng: &mut XorShift) -> i64 {
    rng.below(2 * MAX_SKEW as u64 + 1) as i64 - MAX_SKEW
}

/// What every child reads from the control file: the server's simulated time, the phase, the
/// disk, and each slot's clock skew. One line: `NOW PHASE DISK SKEW...`.
#[derive(Clone, Debug, PartialEq)]
struct Control {
    now: i64,
    phase: Phase,
    disk_full: bool,
    skews: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Call at will.
    Run,
    /// Finish the call in progress and wait; say `paused N` once every thread is idle.
    Pause(u32),
    /// Stop the threads; one last call per process, then report it.
    Final,
}

impl Control {
    fn encode(&self) -> String {
        let phase = match self.phase {
            Phase::Run => "run".to_owned(),
            Phase::Pause(n) => format!("pause:{n}"),
            Phase::Final => "final".to_owned(),
        };
        let skews: Vec<String> = self.skews.iter().map(i64::to_string).collect();
        format!(
            "{} {} {} {}\n",
            self.now,
            phase,
            u8::from(self.disk_full),
            skews.join(" ")
        )
    }

    fn decode(text: &str) -> Option<Control> {
        let mut words = text.split_whitespace();
        let now = words.next()?.parse().ok()?;
        let phase = match words.next()? {
            "run" => Phase::Run,
            "final" => Phase::Final,
            other => Phase::Pause(other.strip_prefix("pause:")?.parse().ok()?),
        };
        let disk_full = words.next()? == "1";
        let skews = words.map(str::parse).collect::<Result<_, _>>().ok()?;
        Some(Control {
            now,
            phase,
            disk_full,
            skews,
        })
    }

    fn read(path: &Path) -> Option<Control> {
        Control::decode(&std::fs::read_to_string(path).ok()?)
    }

    /// Replaces the file at once (write, then rename): a reader sees the old or the new.
    fn write(&self, path: &Path) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.encode()).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The child

/// A child's clock: the parent's simulated time plus this slot's skew, read from the control
/// file (the last good reading if the file cannot be read).
#[derive(Debug)]
struct SoakClock {
    control: PathBuf,
    slot: usize,
    last: AtomicI64,
}

impl Clock for SoakClock {
    fn now(&self) -> i64 {
        if let Some(c) = Control::read(&self.control) {
            let now = c.now + c.skews.get(self.slot).copied().unwrap_or(0);
            self.last.store(now, Ordering::SeqCst);
        }
        self.last.load(Ordering::SeqCst)
    }
}

/// Opens a store from a spec (`file:PATH`, `sqlite:PATH`, `keyring:SERVICE`, `postgres:CONNINFO`).
fn open_store(spec: &str) -> Box<dyn TokenStore> {
    support::open_store_with(spec, Some(LOCK_TIMEOUT))
}

/// A token's fingerprint (never the token): std's SipHash with fixed keys.
fn fingerprint(secret: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    secret.hash(&mut h);
    h.finish()
}

/// The child: T threads call `GET /v1/licenses` at random (real) intervals while the phase
/// is `run`, and print one line per call: `call SLOT NOW ok|err MILLIS [error]`. Logs at
/// debug level go to stderr, which the parent scans for secrets.
#[test]
#[ignore = "a soak child process: started by the soak tests with --ignored --exact"]
fn soak_child() {
    child::entry("soak_child");
    let slot: usize = child::parsed("slot");
    let threads: usize = child::parsed("threads");
    let gap_ms: u64 = child::parsed("gap-ms");
    let seed: u64 = child::parsed("seed");
    let spec = child::param("store");
    let base = child::param("base");
    let control = PathBuf::from(child::param("control"));
    let _ = env_logger::Builder::new()
        .parse_filters("chatapp_session=debug")
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "[{:?} {} {}] {}",
                std::thread::current().id(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .try_init();
    let clock = SoakClock {
        control: control.clone(),
        slot,
        last: AtomicI64::new(T0),
    };
    clock.now();
    let session = Session::builder()
        .credentials(support::default_credentials())
        .store({
            // Saves fail while the control file says the disk is full (when no real one).
            let control = control.clone();
            support::FullDisk::new(open_store(&spec), move || {
                Control::read(&control).is_some_and(|c| c.disk_full)
            })
        })
        .base_url(base)
        .clock(clock)
        .timeout(HTTP_TIMEOUT)
        .build()
        .unwrap();
    let call = |session: &Session| {
        let now = Control::read(&control).map_or(0, |c| c.now);
        let started = Instant::now();
        let result = session.request("GET", "/v1/licenses", None);
        let ms = started.elapsed().as_millis();
        match result {
            Ok(_) => (format!("{slot} {now} ok {ms}"), true),
            Err(e) => {
                let text = e.to_string().replace('\n', " ");
                (format!("{slot} {now} err {ms} {text}"), false)
            }
        }
    };
    let idle: Arc<Vec<AtomicU32>> = Arc::new((0..threads).map(|_| AtomicU32::new(0)).collect());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (session, idle, control) = (session.clone(), idle.clone(), control.clone());
            let mut rng = XorShift((seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            std::thread::spawn(move || loop {
                match Control::read(&control).map(|c| c.phase) {
                    Some(Phase::Final) => return,
                    Some(Phase::Pause(n)) => {
                        idle[t].store(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    _ => {}
                }
                let now = Control::read(&control).map_or(0, |c| c.now);
                let started = Instant::now();
                let result = session.request("GET", "/v1/licenses", None);
                let ms = started.elapsed().as_millis();
                match result {
                    Ok(_) => println!("call {slot} {now} ok {ms}"),
                    Err(e) => {
                        let text = e.to_string().replace('\n', " ");
                        println!("call {slot} {now} err {ms} {text}");
                    }
                }
                std::thread::sleep(Duration::from_millis(rng.below(2 * gap_ms + 1)));
            })
        })
        .collect();
    let mut acked = 0;
    loop {
        if handles.iter().any(|h| h.is_finished())
            && Control::read(&control).map(|c| c.phase) != Some(Phase::Final)
        {
            // A thread that died (a panic) would never pause: say so and end, so that the
            // parent reports a crash rather than waiting for the pause.
            eprintln!("soak child {slot}: a calling thread ended before the final round");
            std::process::exit(3);
        }
        match Control::read(&control).map(|c| c.phase) {
            Some(Phase::Final) => break,
            Some(Phase::Pause(n))
                if n != acked && idle.iter().all(|i| i.load(Ordering::SeqCst) == n) =>
            {
                println!("paused {n}");
                acked = n;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for h in handles {
        h.join().unwrap();
    }
    // One call after the last fault: it must succeed, with the one stored pair.
    let (line, ok) = call(&session);
    let token = if ok {
        fingerprint(session.access_token().unwrap().expose_secret()).to_string()
    } else {
        "-".to_owned()
    };
    println!("final {line} token {token}");
}

// ---------------------------------------------------------------------------------------------
// The parent

/// The shape of one soak.
#[derive(Clone, Copy, Debug)]
struct Config {
    processes: usize,
    threads: usize,
    /// Simulated days with faults (then a quiet settle period and the final round).
    days: u32,
    /// Simulated seconds per tick.
    tick_secs: i64,
    /// Real milliseconds per tick.
    tick_ms: u64,
}

/// The kinds of fault, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Server5xx,
    Malformed,
    Dropped,
    DelayPastTimeout,
    LostRefreshReply,
    LostMakeReply,
    MakeRateLimited,
    RevokeAccess,
    RevokeAll,
    Kill,
    Stop,
    DiskFull,
    ClockJump,
    LockStall,
}

const KINDS: [Kind; 14] = [
    Kind::Server5xx,
    Kind::Malformed,
    Kind::Dropped,
    Kind::DelayPastTimeout,
    Kind::LostRefreshReply,
    Kind::LostMakeReply,
    Kind::MakeRateLimited,
    Kind::RevokeAccess,
    Kind::RevokeAll,
    Kind::Kill,
    Kind::Stop,
    Kind::DiskFull,
    Kind::ClockJump,
    Kind::LockStall,
];

/// A server fault of `kind` for `route`, drawn from `rng` where there is a choice.
fn server_fault(kind: Kind, rng: &mut XorShift) -> Fault {
    match kind {
        Kind::Server5xx => Fault::ServerError(if rng.chance(0.5) { 500 } else { 502 }),
        Kind::Malformed => Fault::MalformedJson,
        Kind::Dropped => Fault::DropConnection,
        Kind::DelayPastTimeout => Fault::Delay(DELAY),
        Kind::LostRefreshReply | Kind::LostMakeReply => Fault::LostReply,
        Kind::MakeRateLimited => Fault::RateLimited,
        other => panic!("{other:?} is no server fault"),
    }
}

/// One child process of the fleet.
struct Member {
    child: Child,
    incarnation: u32,
    stopped_until: Option<u64>,
}

/// A line from a child, or its end.
enum Said {
    Line(usize, u32, String),
}

/// Everything one soak run knows.
struct Run {
    kind: &'static str,
    spec: String,
    cfg: Config,
    seed: u64,
    rng: XorShift,
    server: FakeChatApp,
    key: StoreKey,
    control_path: PathBuf,
    control: Control,
    members: Vec<Member>,
    said_tx: mpsc::Sender<Said>,
    said_rx: mpsc::Receiver<Said>,
    /// Secrets seen in any child's output (a line each, the secret cut out).
    leaks: Arc<Mutex<Vec<String>>>,
    output_lines: Arc<AtomicI64>,
    /// The last lines each child incarnation wrote, kept or not, for a failure's story.
    tails: Tails,
    /// (simulated time, what happened), for a failure's story.
    events: Vec<(i64, String)>,
    injected: HashMap<Route, Vec<Kind>>,
    counts: BTreeMap<Kind, u64>,
    kills_at: Vec<i64>,
    /// How many of `kills_at` the last check saw.
    kills_checked: usize,
    disk_spans: Vec<(i64, i64)>,
    disk_until: Option<u64>,
    tick: u64,
    spawns: u64,
    calls: u64,
    call_errors: u64,
    max_wait_ms: u64,
    paused_acks: Vec<u32>,
    ledger: Vec<i64>,
    log_seen: usize,
    log: Vec<TokenEvent>,
    final_lines: Vec<Option<String>>,
    /// The store's own small tmpfs, when there is one: a full disk is then a real one.
    disk: Option<support::Tmpfs>,
}

/// What a run found, for the report.
#[derive(Debug)]
struct Figures {
    seed: u64,
    days: u32,
    calls: u64,
    call_errors: u64,
    faults: BTreeMap<Kind, u64>,
    makes: u64,
    refreshes: u64,
    refused_refreshes: u64,
    max_wait_ms: u64,
    spawns: u64,
}

impl Drop for Run {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = Command::new("kill")
                .args(["-CONT", &m.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

fn seed() -> u64 {
    seed_from_env("CHATAPP_SOAK_SEED")
}

impl Run {
    fn new(kind: &'static str, spec: String, cfg: Config, dir: &Path) -> Run {
        let seed = seed();
        let cfg = Config {
            days: std::env::var("CHATAPP_SOAK_DAYS")
                .ok()
                .map(|d| d.parse().expect("CHATAPP_SOAK_DAYS is a number"))
                .unwrap_or(cfg.days),
            ..cfg
        };
        eprintln!(
            "soak {kind}: seed {seed}, {} days, {} processes x {} threads \
             (CHATAPP_SOAK_SEED={seed} CHATAPP_SOAK_DAYS={} replays the fault schedule)",
            cfg.days, cfg.processes, cfg.threads, cfg.days
        );
        let mut rng = XorShift(seed);
        let server = FakeChatApp::builder()
            .clock(ManualClock::new(T0))
            .threads(64)
            .start()
            .unwrap();
        let key = StoreKey::for_account(&server.base_url(), DEFAULT_EMAIL, DEFAULT_APP_ID);
        let control = Control {
            now: T0,
            phase: Phase::Run,
            disk_full: false,
            skews: (0..cfg.processes).map(|_| skew(&mut rng)).collect(),
        };
        let control_path = dir.join("control");
        control.write(&control_path);
        let (said_tx, said_rx) = mpsc::channel();
        let mut run = Run {
            kind,
            spec,
            cfg,
            seed,
            rng,
            server,
            key,
            control_path,
            control,
            members: Vec::new(),
            said_tx,
            said_rx,
            leaks: Arc::default(),
            output_lines: Arc::default(),
            tails: Arc::default(),
            events: Vec::new(),
            injected: HashMap::new(),
            counts: BTreeMap::new(),
            kills_at: Vec::new(),
            kills_checked: 0,
            disk_spans: Vec::new(),
            disk_until: None,
            tick: 0,
            spawns: 0,
            calls: 0,
            call_errors: 0,
            max_wait_ms: 0,
            paused_acks: vec![0; cfg.processes],
            ledger: Vec::new(),
            log_seen: 0,
            log: Vec::new(),
            final_lines: vec![None; cfg.processes],
            disk: None,
        };
        // The first pair: a login by the parent (its clock is the server's), as an operator
        // would before starting the fleet. It is the "1" of invariant 3.
        Session::builder()
            .credentials(run.server.credentials())
            .store(open_store(&run.spec))
            .base_url(run.server.base_url())
            .clock(run.server.clock())
            .build()
            .unwrap()
            .login()
            .unwrap();
        for slot in 0..cfg.processes {
            let child = run.spawn(slot, 0);
            run.members.push(Member {
                child,
                incarnation: 0,
                stopped_until: None,
            });
        }
        run
    }

    fn event(&mut self, what: String) {
        self.events.push((self.control.now, what));
    }

    fn spawn(&mut self, slot: usize, incarnation: u32) -> Child {
        self.spawns += 1;
        let mut child = child::command("soak_child")
            .param("slot", slot.to_string())
            .param("store", &self.spec)
            .param("base", self.server.base_url())
            .param("control", &self.control_path)
            .param("threads", self.cfg.threads.to_string())
            .param("gap-ms", (self.cfg.tick_ms / 2).max(1).to_string())
            .param(
                "seed",
                (self.seed ^ ((slot as u64) << 32 | u64::from(incarnation))).to_string(),
            )
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let secrets = [DEFAULT_PASSWORD.to_owned(), "$2y$10$".to_owned()];
        for (stream, is_stdout) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                true,
            ),
            (Box::new(child.stderr.take().unwrap()), false),
        ] {
            let (tx, leaks, lines, secrets, tails) = (
                self.said_tx.clone(),
                self.leaks.clone(),
                self.output_lines.clone(),
                secrets.clone(),
                self.tails.clone(),
            );
            std::thread::spawn(move || {
                // Bytes, not `lines()`: one line that is not UTF-8 must not end the reader,
                // or the child would block on a full pipe and never pause again.
                let mut reader = BufReader::new(stream);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let line = child_line(&raw);
                    lines.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut tails = tails.lock().unwrap();
                        let tail = tails.entry((slot, incarnation)).or_default();
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.clone());
                    }
                    for secret in &secrets {
                        if let Some(at) = line.find(secret.as_str()) {
                            leaks
                                .lock()
                                .unwrap()
                                .push(format!("slot {slot}: {}[SECRET]", &line[..at]));
                        }
                    }
                    let keep = if is_stdout {
                        line.starts_with("call ")
                            || line.starts_with("paused ")
                            || line.starts_with("final ")
                    } else {
                        std::env::var_os("CHATAPP_SOAK_DEBUG").is_some()
                            || line.contains(" INFO ")
                            || line.contains(" WARN ")
                    };
                    if keep {
                        let _ = tx.send(Said::Line(slot, incarnation, line));
                    }
                }
            });
        }
        child
    }

    fn write_control(&mut self) {
        self.control.write(&self.control_path);
    }

    /// Takes in what the children said so far.
    fn drain(&mut self) {
        while let Ok(Said::Line(slot, inc, line)) = self.said_rx.try_recv() {
            self.heard(slot, inc, &line);
        }
    }

    fn heard(&mut self, slot: usize, inc: u32, line: &str) {
        let words: Vec<&str> = line.splitn(6, ' ').collect();
        match words.first().copied() {
            Some("call") => {
                self.calls += 1;
                let ms: u64 = words.get(4).and_then(|w| w.parse().ok()).unwrap_or(0);
                self.max_wait_ms = self.max_wait_ms.max(ms);
                if words.get(3) == Some(&"err") {
                    self.call_errors += 1;
                    let at = words.get(2).and_then(|w| w.parse().ok()).unwrap_or(0);
                    self.events
                        .push((at, format!("child {slot}.{inc}: {}", line)));
                }
            }
            Some("paused") => {
                if let Some(n) = words.get(1).and_then(|w| w.parse().ok()) {
                    if self.members.get(slot).is_some_and(|m| m.incarnation == inc) {
                        self.paused_acks[slot] = n;
                    }
                }
            }
            Some("final") => self.final_lines[slot] = Some(line.to_owned()),
            _ => self
                .events
                .push((self.control.now, format!("child {slot}.{inc} log: {line}"))),
        }
    }

    fn count(&mut self, kind: Kind) {
        *self.counts.entry(kind).or_default() += 1;
    }

    fn inject(&mut self, route: Route, kind: Kind) {
        let fault = server_fault(kind, &mut self.rng);
        self.event(format!("inject {kind:?} on {route:?}"));
        self.server.inject(route, fault);
        self.injected.entry(route).or_default().push(kind);
    }

    /// Applies one fault of `kind` now.
    fn apply(&mut self, kind: Kind) {
        match kind {
            Kind::Server5xx | Kind::Malformed | Kind::Dropped | Kind::DelayPastTimeout => {
                let route = match self.rng.below(8) {
                    0..=3 => Route::Request,
                    4..=6 => Route::Refresh,
                    _ => Route::Make,
                };
                self.inject(route, kind);
            }
            Kind::LostRefreshReply => self.inject(Route::Refresh, kind),
            Kind::LostMakeReply | Kind::MakeRateLimited => {
                self.inject(Route::Make, kind);
                // A make must happen for it to fire: kill every pair now and then.
                if self.rng.chance(0.5) {
                    self.apply(Kind::RevokeAll);
                }
            }
            Kind::RevokeAccess => {
                self.event("revoke every access token".into());
                self.server.revoke_access_tokens();
                self.count(kind);
            }
            Kind::RevokeAll => {
                self.event("revoke every pair".into());
                self.server.revoke_all();
                self.count(kind);
            }
            Kind::Kill => {
                let slot = self.rng.below(self.cfg.processes as u64) as usize;
                let delay = Duration::from_millis(self.rng.below(self.cfg.tick_ms));
                std::thread::sleep(delay);
                let member = &mut self.members[slot];
                let _ = member.child.kill();
                let _ = member.child.wait();
                let inc = member.incarnation + 1;
                self.kills_at.push(self.control.now);
                self.event(format!(
                    "SIGKILL child {slot} ({delay:?} into the tick); restarted"
                ));
                self.count(kind);
                let child = self.spawn(slot, inc);
                self.members[slot] = Member {
                    child,
                    incarnation: inc,
                    stopped_until: None,
                };
            }
            Kind::Stop => {
                let slot = self.rng.below(self.cfg.processes as u64) as usize;
                let ticks = 1 + self.rng.below(3);
                if self.members[slot].stopped_until.is_none() {
                    signal(&self.members[slot].child, "-STOP");
                    self.members[slot].stopped_until = Some(self.tick + ticks);
                    self.event(format!("SIGSTOP child {slot} for {ticks} ticks"));
                    self.count(kind);
                }
            }
            Kind::DiskFull => {
                let ticks = 1 + self.rng.below(3);
                if self.disk_until.is_none() {
                    match &self.disk {
                        Some(disk) => disk.fill(),
                        None => self.control.disk_full = true,
                    }
                    self.disk_until = Some(self.tick + ticks);
                    self.disk_spans.push((self.control.now, i64::MAX));
                    self.event(format!("disk full for {ticks} ticks"));
                    self.count(kind);
                }
            }
            Kind::LockStall => {
                // The parent holds the store's lock past the timeout, the clock standing
                // still: every waiter gives up with LockTimeout, and a save that times out
                // fails like one on a full disk (it counts as a disk spell in the bounds).
                let store = open_store(&self.spec);
                let locked = store.lock(&self.key);
                if let Ok(guard) = locked {
                    self.event(format!(
                        "the parent stalls with the store's lock for {STALL:?}"
                    ));
                    self.count(kind);
                    self.disk_spans.push((self.control.now, self.control.now));
                    std::thread::sleep(STALL);
                    drop(guard);
                }
            }
            Kind::ClockJump => {
                let slot = self.rng.below(self.cfg.processes as u64) as usize;
                let skew = skew(&mut self.rng);
                self.event(format!(
                    "child {slot}'s clock jumps from {} to {skew} s off",
                    self.control.skews[slot]
                ));
                self.control.skews[slot] = skew;
                self.count(kind);
            }
        }
    }

    /// Ends stops and the full disk whose time has come (all of them when `all`).
    fn end_spells(&mut self, all: bool) {
        let tick = self.tick;
        for slot in 0..self.members.len() {
            if self.members[slot]
                .stopped_until
                .is_some_and(|until| all || until <= tick)
            {
                signal(&self.members[slot].child, "-CONT");
                self.members[slot].stopped_until = None;
                self.event(format!("SIGCONT child {slot}"));
            }
        }
        if self.disk_until.is_some_and(|until| all || until <= tick) {
            self.disk_until = None;
            match &self.disk {
                Some(disk) => disk.empty(),
                None => self.control.disk_full = false,
            }
            if let Some(span) = self.disk_spans.last_mut() {
                span.1 = self.control.now;
            }
            self.event("disk has room again".into());
        }
    }

    /// One tick: faults (when `faults`), then the clock moves on and the fleet calls.
    fn tick(&mut self, faults: &[Kind]) {
        for &kind in faults {
            self.apply(kind);
        }
        self.tick += 1;
        self.end_spells(false);
        // A make on its way sees no hours pass (a real one takes seconds): its in-flight mark,
        // on the server's clock, would otherwise expire at once and let others make too.
        let start = Instant::now();
        while self.server.requests_in_progress_on(Route::Make) > 0
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.control.now += self.cfg.tick_secs;
        self.server.advance(self.cfg.tick_secs);
        self.write_control();
        std::thread::sleep(Duration::from_millis(self.cfg.tick_ms));
        self.drain();
    }

    /// The faults of one tick of the schedule: random draws, plus those forced at this tick.
    fn draw(&mut self, forced: &[(u64, Kind)]) -> Vec<Kind> {
        let p = [
            (Kind::Server5xx, 0.10),
            (Kind::Malformed, 0.06),
            (Kind::Dropped, 0.06),
            (Kind::DelayPastTimeout, 0.04),
            (Kind::LostRefreshReply, 0.03),
            (Kind::LostMakeReply, 0.01),
            (Kind::MakeRateLimited, 0.01),
            (Kind::RevokeAccess, 0.03),
            (Kind::RevokeAll, 0.01),
            (Kind::Kill, 0.04),
            (Kind::Stop, 0.04),
            (Kind::DiskFull, 0.03),
            (Kind::ClockJump, 0.03),
            (Kind::LockStall, 0.01),
        ];
        let mut kinds: Vec<Kind> = p
            .iter()
            .filter_map(|&(kind, p)| self.rng.chance(p).then_some(kind))
            .collect();
        kinds.extend(
            forced
                .iter()
                .filter(|(at, _)| *at == self.tick)
                .map(|&(_, kind)| kind),
        );
        kinds
    }

    /// Fails the soak: the invariant, the day, the seed, and the last events.
    fn fail(&mut self, day: u32, invariant: &str, detail: String) -> ! {
        self.drain();
        let mut story: Vec<(i64, String)> = self.events.clone();
        for (i, e) in self.log.iter().enumerate() {
            story.push((
                e.at,
                format!(
                    "server #{i}: {:?} of pair {:?}: {:?}, fault {:?}",
                    e.route, e.pair, e.outcome, e.fault
                ),
            ));
        }
        story.sort_by_key(|(at, _)| *at);
        let all: Vec<String> = story
            .iter()
            .map(|(at, what)| format!("t+{}s: {what}", at - T0))
            .collect();
        let file = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("soak-{}-{}.log", self.kind, self.seed));
        let _ = std::fs::write(&file, all.join("\n"));
        let start = story.len().saturating_sub(LAST_EVENTS);
        let lines: Vec<String> = story[start..]
            .iter()
            .map(|(at, what)| format!("  t+{}s (day {}): {what}", at - T0, (at - T0) / DAY))
            .collect();
        panic!(
            "soak {} FAILED: invariant {invariant}, simulated day {day}, seed {} \
             (CHATAPP_SOAK_SEED={} CHATAPP_SOAK_DAYS={}):\n{detail}\nevery event: {}\nlast {} events:\n{}",
            self.kind,
            self.seed,
            self.seed,
            self.cfg.days,
            file.display(),
            lines.len(),
            lines.join("\n")
        );
    }

    /// Pauses the fleet: every thread idle, the server idle.
    fn pause(&mut self, n: u32) {
        self.end_spells(true);
        self.control.phase = Phase::Pause(n);
        self.write_control();
        let start = Instant::now();
        while self.paused_acks.iter().any(|&a| a != n) {
            if start.elapsed() > Duration::from_secs(90) {
                let acks = self.paused_acks.clone();
                let states: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| process_state(m.child.id()))
                    .collect();
                let mut detail = format!(
                    "children did not pause: acks {acks:?}; their threads (state, kernel wait): {states:?}"
                );
                for (slot, m) in self.members.iter().enumerate() {
                    if acks[slot] == n {
                        continue;
                    }
                    let tail = self
                        .tails
                        .lock()
                        .unwrap()
                        .get(&(slot, m.incarnation))
                        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n    "))
                        .unwrap_or_default();
                    detail.push_str(&format!(
                        "\nchild {slot}.{} (pid {}), its last output lines:\n    {tail}\nits threads:\n{}",
                        m.incarnation,
                        m.child.id(),
                        backtraces(m.child.id())
                    ));
                }
                self.fail(n, "pause", detail);
            }
            if let Ok(Said::Line(slot, inc, line)) =
                self.said_rx.recv_timeout(Duration::from_millis(20))
            {
                self.heard(slot, inc, &line);
            }
            for slot in 0..self.members.len() {
                if let Ok(Some(status)) = self.members[slot].child.try_wait() {
                    self.fail(
                        n,
                        "no crash",
                        format!("child {slot} ended by itself: {status}"),
                    );
                }
            }
        }
        let start = Instant::now();
        while self.server.requests_in_progress() > 0 {
            if start.elapsed() > Duration::from_secs(30) {
                self.fail(n, "pause", "the server stays busy".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.drain();
    }

    fn resume(&mut self) {
        self.control.phase = Phase::Run;
        self.write_control();
    }

    fn made(&self) -> impl Iterator<Item = &TokenEvent> {
        self.log
            .iter()
            .filter(|e| e.route == Route::Make && e.issued())
    }

    /// Checks the invariants at the pause ending simulated day `day`.
    ///
    /// 1. Ledger: the make-ledger entries added since the last check are at least the makes
    ///    the server issued since then, and at most the makes it received (whatever the
    ///    outcome) plus the SIGKILLs since then (a kill between the write-ahead entry and the
    ///    send leaves an entry for a make that never left; nothing else may).
    /// 2. Every refresh the server refused names a token killed by: a rotation whose reply was
    ///    lost or late (`LostReply`, `Delay` past the timeout), a SIGKILL or a full disk
    ///    between that rotation and the refusal (the new pair could not be saved), a
    ///    revocation; or the refused request was itself late (`Delay`: its sender had given
    ///    up). Never "unknown" or "expired".
    /// 3. Makes issued <= 1 (the parent's login) + rotations with lost/late replies + makes
    ///    with lost/late replies + revocations of every pair + SIGKILLs + SIGSTOPs + clock
    ///    jumps + full-disk spells (a stopped or jumped process can outlive or misjudge the
    ///    in-flight mark of a make on a store whose lock ends with each save); no make was
    ///    refused for the server's quota, and no 24 h of the server's clock holds more than
    ///    100 issued makes.
    /// 4. Refreshes issued <= access-token lifetimes elapsed + 1 + revocations (access and
    ///    all) + lost/late refresh replies + makes issued + SIGKILLs + process starts +
    ///    clock jumps + full-disk spells (each term is one refresh it can force, see
    ///    docs/soak.md).
    /// 5. No child printed a token or the password (stdout and stderr, logs at debug).
    /// 7. No call took longer than [`call_bound`]: the wait the issue bounds (the lock timeout
    ///    plus the HTTP timeout) plus the call's own exchanges.
    fn check_day(&mut self, day: u32) {
        let fresh = self.server.token_log(self.log_seen);
        let from = self.log_seen;
        self.log_seen += fresh.len();
        self.log.extend(fresh);
        let now = self.control.now;
        let kills_since = self.kills_at.len() - self.kills_checked;
        self.kills_checked = self.kills_at.len();
        // 1. The ledger against the server's makes since the last check.
        let record = open_store(&self.spec)
            .load(&self.key)
            .unwrap_or_else(|e| panic!("the store cannot be read: {e}"))
            .unwrap_or_default();
        let mut added = record.makes.clone();
        for t in &self.ledger {
            if let Some(i) = added.iter().position(|x| x == t) {
                added.remove(i);
            }
        }
        let new_events = &self.log[from..];
        let received = new_events.iter().filter(|e| e.route == Route::Make).count();
        let issued = new_events
            .iter()
            .filter(|e| e.route == Route::Make && e.issued())
            .count();
        if added.len() < issued || added.len() > received + kills_since {
            let detail = format!(
                "ledger entries added {} (now {:?}), makes issued {issued}, received {received}, kills {kills_since}",
                added.len(),
                record.makes
            );
            self.fail(day, "1 (ledger)", detail);
        }
        self.ledger = record.makes.clone();
        // 2. Every refused refresh explained.
        for (i, e) in self.log.iter().enumerate().skip(from) {
            let TokenOutcome::Refused(why) = e.outcome else {
                continue;
            };
            if e.route != Route::Refresh {
                continue;
            }
            let late_itself = matches!(e.fault, Some(Fault::Delay(_)));
            let explained = late_itself
                || match why {
                    RefusedBecause::Revoked => true,
                    RefusedBecause::Rotated { by } => {
                        let rotation = &self.log[by];
                        let lost =
                            matches!(rotation.fault, Some(Fault::LostReply | Fault::Delay(_)));
                        let killed = self.kills_at.iter().any(|&k| k >= rotation.at && k <= e.at);
                        let disk = self
                            .disk_spans
                            .iter()
                            .any(|&(a, b)| a <= e.at && b >= rotation.at);
                        lost || killed || disk
                    }
                    _ => false,
                };
            if !explained {
                let detail = format!("refused refresh #{i} at t+{}s: {why:?}", e.at - T0);
                self.fail(day, "2 (every refused refresh explained)", detail);
            }
            // Once refused (and the refusal delivered), a refresh token is known dead: it is
            // not sent again, unless the fleet could not record it (a full disk, a SIGKILL
            // since) or this request was itself late.
            let first = self.log[..i].iter().find(|f| {
                f.route == Route::Refresh
                    && f.pair == e.pair
                    && matches!(f.outcome, TokenOutcome::Refused(_))
                    && f.fault.is_none()
            });
            if let Some(first) = first {
                let (a, b) = (first.at, e.at);
                let killed = self.kills_at.iter().any(|&k| k >= a && k <= b);
                let disk = self.disk_spans.iter().any(|&(x, y)| x <= b && y >= a);
                if !(late_itself || killed || disk) {
                    let detail = format!(
                        "refused refresh #{i} at t+{}s re-sent pair {:?}'s refresh token, refused first at t+{}s",
                        e.at - T0,
                        e.pair,
                        a - T0
                    );
                    self.fail(
                        day,
                        "2 (a refused refresh token is never sent again)",
                        detail,
                    );
                }
            }
        }
        // 3. Makes.
        let lost = |route: Route| {
            self.log
                .iter()
                .filter(|e| {
                    e.route == route
                        && e.issued()
                        && matches!(e.fault, Some(Fault::LostReply | Fault::Delay(_)))
                })
                .count() as u64
        };
        let (lost_refreshes, lost_makes) = (lost(Route::Refresh), lost(Route::Make));
        let c = |k: Kind| self.counts.get(&k).copied().unwrap_or(0);
        let makes = self.made().count() as u64;
        let kills = self.kills_at.len() as u64;
        let disk = self.disk_spans.len() as u64;
        let (stops, jumps) = (c(Kind::Stop), c(Kind::ClockJump));
        let make_bound =
            1 + lost_refreshes + lost_makes + c(Kind::RevokeAll) + kills + stops + jumps + disk;
        if makes > make_bound {
            let detail = format!("{makes} makes > {make_bound} = 1 + {lost_refreshes} lost refresh replies + {lost_makes} lost make replies + {} revocations + {kills} kills + {stops} stops + {jumps} clock jumps + {disk} full-disk spells", c(Kind::RevokeAll));
            self.fail(day, "3 (makes)", detail);
        }
        let quota_refusals = self
            .log
            .iter()
            .filter(|e| e.outcome == TokenOutcome::Refused(RefusedBecause::Quota))
            .count();
        let times: Vec<i64> = self.made().map(|e| e.at).collect();
        let busiest = times
            .iter()
            .map(|&t| times.iter().filter(|&&u| u <= t && u > t - DAY).count())
            .max()
            .unwrap_or(0);
        if quota_refusals > 0 || busiest > 100 {
            let detail =
                format!("{quota_refusals} makes refused for the quota, {busiest} in one day");
            self.fail(day, "3 (server quota)", detail);
        }
        // 4. Refreshes.
        let refreshes = self
            .log
            .iter()
            .filter(|e| e.route == Route::Refresh && e.issued())
            .count() as u64;
        let lifetimes = ((now - T0) / (DAY - 60)) as u64 + 1;
        let refresh_bound = lifetimes
            + c(Kind::RevokeAccess)
            + c(Kind::RevokeAll)
            + lost_refreshes
            + makes
            + kills
            + self.spawns
            + c(Kind::ClockJump)
            + disk;
        if refreshes > refresh_bound {
            let detail = format!(
                "{refreshes} refreshes > {refresh_bound} = {lifetimes} lifetimes + {} revoked access + {} revoked all + {lost_refreshes} lost replies + {makes} makes + {kills} kills + {} starts + {} clock jumps + {disk} full-disk spells",
                c(Kind::RevokeAccess), c(Kind::RevokeAll), self.spawns, c(Kind::ClockJump)
            );
            self.fail(day, "4 (refreshes)", detail);
        }
        // 5. No secret in any output.
        let leaks = self.leaks.lock().unwrap().clone();
        if !leaks.is_empty() {
            self.fail(day, "5 (no secret in any output)", leaks.join("\n"));
        }
        // 7. Waits: a whole call, measured in the child.
        let bound = call_bound().as_millis() as u64;
        if self.max_wait_ms > bound {
            let detail = format!("a call took {} ms > {bound} ms", self.max_wait_ms);
            self.fail(day, "7 (bounded waits)", detail);
        }
    }
}

impl Run {
    /// The whole soak: the fault days (a pause and a check at the end of each), a quiet settle
    /// period longer than the longest 429 cooldown, then the final round (invariant 6).
    fn soak(mut self) -> Figures {
        let ticks_per_day = (DAY / self.cfg.tick_secs) as u64;
        let fault_ticks = ticks_per_day * u64::from(self.cfg.days);
        // Each kind once at least, at a random tick of the first 60% of the fault days.
        let mut forced: Vec<(u64, Kind)> = Vec::new();
        for kind in KINDS {
            let at = 1 + self.rng.below((fault_ticks * 6 / 10).max(1));
            forced.push((at, kind));
        }
        let mut day = 0;
        while self.tick < fault_ticks {
            let faults = self.draw(&forced);
            self.tick(&faults);
            if self.tick.is_multiple_of(ticks_per_day) {
                day += 1;
                self.pause(day);
                self.check_day(day);
                self.resume();
                if day % 30 == 0 {
                    eprintln!(
                        "soak {}: day {day} of {}, {} calls, {} process starts",
                        self.kind, self.cfg.days, self.calls, self.spawns
                    );
                }
            }
        }
        // After the last fault: nothing pending, every process running, the disk back.
        self.server.clear_faults();
        self.end_spells(true);
        self.event("last fault: settling".into());
        let settle_ticks = (25 * 3600 / self.cfg.tick_secs) as u64 + 1;
        for _ in 0..settle_ticks {
            self.tick(&[]);
        }
        day += 1;
        self.pause(day);
        self.check_day(day);
        self.final_round(day);
        self.figures()
    }

    /// Invariant 6: after the last fault every process converges on the one stored pair
    /// within one call, and no call fails.
    fn final_round(&mut self, day: u32) {
        let before = self.server.counters();
        self.control.phase = Phase::Final;
        self.write_control();
        let start = Instant::now();
        while self.final_lines.iter().any(Option::is_none) {
            if start.elapsed() > Duration::from_secs(60) {
                let lines = self.final_lines.clone();
                self.fail(
                    day,
                    "6 (convergence)",
                    format!("no final call from some: {lines:?}"),
                );
            }
            if let Ok(Said::Line(slot, inc, line)) =
                self.said_rx.recv_timeout(Duration::from_millis(20))
            {
                self.heard(slot, inc, &line);
            }
        }
        for m in &mut self.members {
            let _ = m.child.wait();
        }
        let record = open_store(&self.spec)
            .load(&self.key)
            .unwrap()
            .unwrap_or_default();
        let Some(pair) = record.pair else {
            self.fail(day, "6 (convergence)", "no pair stored".into());
        };
        let stored = fingerprint(pair.access.expose_secret()).to_string();
        let lines: Vec<String> = self.final_lines.iter().flatten().cloned().collect();
        for line in &lines {
            // final call SLOT NOW ok MILLIS token FINGERPRINT
            let words: Vec<&str> = line.split(' ').collect();
            let ok = words.get(3) == Some(&"ok");
            if !ok || words.last() != Some(&stored.as_str()) {
                let detail = format!(
                    "a final call failed or used another pair than the stored one:\n{}",
                    lines.join("\n")
                );
                self.fail(day, "6 (convergence)", detail);
            }
            let ms: u64 = words.get(4).and_then(|w| w.parse().ok()).unwrap_or(0);
            self.max_wait_ms = self.max_wait_ms.max(ms);
        }
        let after = self.server.counters();
        if after.makes != before.makes {
            self.fail(
                day,
                "6 (convergence)",
                format!("the final round made: {before:?} -> {after:?}"),
            );
        }
        let log = self.server.token_log(self.log_seen);
        self.log_seen += log.len();
        self.log.extend(log);
    }

    fn figures(&mut self) -> Figures {
        self.drain();
        // Server faults fired: a route's queue is served in order, so all but the pending tail.
        for (route, kinds) in self.injected.clone() {
            let fired = kinds.len() - self.server.pending_faults(route).min(kinds.len());
            for &kind in &kinds[..fired] {
                self.count(kind);
            }
        }
        Figures {
            seed: self.seed,
            days: self.cfg.days,
            calls: self.calls,
            call_errors: self.call_errors,
            faults: self.counts.clone(),
            makes: self.made().count() as u64,
            refreshes: self
                .log
                .iter()
                .filter(|e| e.route == Route::Refresh && e.issued())
                .count() as u64,
            refused_refreshes: self
                .log
                .iter()
                .filter(|e| {
                    e.route == Route::Refresh && matches!(e.outcome, TokenOutcome::Refused(_))
                })
                .count() as u64,
            max_wait_ms: self.max_wait_ms,
            spawns: self.spawns,
        }
    }
}

impl Figures {
    /// One line for docs/soak.md.
    fn report(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k:?} {n}"))
            .collect();
        format!(
            "seed {}, {} days: {} calls ({} failed), faults [{}], {} makes, {} refreshes, \
             {} refused refreshes, longest wait {} ms, {} process starts",
            self.seed,
            self.days,
            self.calls,
            self.call_errors,
            faults.join(", "),
            self.makes,
            self.refreshes,
            self.refused_refreshes,
            self.max_wait_ms,
            self.spawns
        )
    }
}

/// Each thread of process `pid`: its state and the kernel function it waits in (Linux).
fn process_state(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("{pid}: gone");
    };
    let threads: Vec<String> = tasks
        .flatten()
        .map(|t| {
            let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            let state = read("stat").split(") ").nth(1).map_or(String::new(), |r| {
                r.split(' ').next().unwrap_or_default().to_owned()
            });
            format!("{state}/{}", read("wchan"))
        })
        .collect();
    format!("{pid}: {}", threads.join(" "))
}

/// One line a child wrote, as the parent reads it: lossy UTF-8, no line end, and without the
/// `test soak_child ... ` that libtest writes, with no line end, before the child's first
/// line. When that first line was `paused N` (a child restarted just before a pause), the
/// prefix hid it and the parent waited for the pause in vain: the "child that never paused"
/// of the first long runs, on every store.
fn child_line(raw: &[u8]) -> String {
    let line = String::from_utf8_lossy(raw);
    let line = line.trim_end();
    line.strip_prefix(LIBTEST_PREFIX).unwrap_or(line).to_owned()
}

/// Every thread's stack of process `pid`, by gdb when it is installed (else a note).
fn backtraces(pid: u32) -> String {
    match Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "thread apply all bt 25"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(no gdb: {e})"),
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// Runs one soak on `spec` and asserts what the invariants do not cover: every fault kind
/// fired, the fleet did work, output was produced (so the secret scan saw something).
fn soak(kind: &'static str, spec: String, cfg: Config, all_kinds: bool) -> Figures {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir();
    // A real full disk where the store is a file and we may mount one; else the wrapper.
    let disk = spec
        .strip_prefix("file:")
        .or_else(|| spec.strip_prefix("sqlite:"))
        .and_then(|path| support::Tmpfs::mount(Path::new(path).parent()?, "32m"));
    let real_disk = disk.is_some();
    let mut run = Run::new(kind, spec, cfg, dir.path());
    run.disk = disk;
    eprintln!(
        "soak {kind}: a full disk is {}",
        if real_disk {
            "the store's own 32 MiB tmpfs, filled to the last byte"
        } else {
            "a store wrapper whose saves fail (no tmpfs: not root, or not a file store)"
        }
    );
    let lines = run.output_lines.clone();
    let started = Instant::now();
    let figures = run.soak();
    eprintln!(
        "soak {kind}: {} in {:?}, {} output lines scanned",
        figures.report(),
        started.elapsed(),
        lines.load(Ordering::Relaxed)
    );
    assert!(figures.calls > 100, "the fleet hardly called: {figures:?}");
    assert!(figures.makes >= 1 && figures.refreshes >= 1, "{figures:?}");
    if all_kinds {
        let missing: Vec<&Kind> = KINDS
            .iter()
            .filter(|k| !figures.faults.contains_key(k))
            .collect();
        assert!(
            missing.is_empty(),
            "seed {}: these faults never fired: {missing:?} ({figures:?})",
            figures.seed
        );
    }
    figures
}

/// The short soak of the normal suite: 3 processes x 2 threads, 15 simulated days of faults
/// (an hour a tick, 60 ms a tick) and a quiet day: about a minute per store.
const SHORT: Config = Config {
    processes: 3,
    threads: 2,
    days: 15,
    tick_secs: 3600,
    tick_ms: 60,
};

/// The release check: 365 simulated days, two hours a tick.
const LONG: Config = Config {
    processes: 3,
    threads: 2,
    days: 365,
    tick_secs: 7200,
    tick_ms: 40,
};

/// A directory for the control file and the file and SQLite stores: in `/dev/shm` (a RAM
/// tmpfs) where there is one, so that the host's disk filling up (other builds on a shared
/// machine) is never mistaken for an injected full disk.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("chatapp-soak")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

#[cfg(feature = "file")]
fn file_spec(dir: &Path) -> String {
    format!("file:{}", dir.join("soak.json").display())
}

#[cfg(feature = "sqlite")]
fn sqlite_spec(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("soak.db").display())
}

#[cfg(feature = "file")]
#[test]
fn short_soak_on_a_file_store() {
    let dir = scratch_dir();
    soak("file", file_spec(dir.path()), SHORT, true);
}

#[cfg(feature = "sqlite")]
#[test]
fn short_soak_on_a_sqlite_store() {
    let dir = scratch_dir();
    soak("sqlite", sqlite_spec(dir.path()), SHORT, true);
}

#[cfg(feature = "postgres")]
fn postgres_spec() -> String {
    format!("postgres:{}", support::postgres_conninfo())
}

#[cfg(feature = "postgres")]
#[test]
#[cfg_attr(chatapp_no_postgres, ignore = "needs .ci/postgres-env")]
fn short_soak_on_a_postgres_store() {
    soak("postgres", postgres_spec(), SHORT, true);
}

#[cfg(feature = "keyring")]
fn keyring_spec() -> String {
    let service = support::unique_name("chatapp-session-soak");
    let probe = chatapp_session::store::KeyringStore::new(service.clone());
    if let Err(e) = probe.load(&StoreKey::new("probe")) {
        panic!(
            "the keyring is not reachable ({e}): run the suite as `bash .ci/test` \
             (under .ci/keyring-env), or set CHATAPP_SKIP_KEYRING_TESTS=1 when building"
        );
    }
    format!("keyring:{service}")
}

#[cfg(feature = "keyring")]
#[test]
#[cfg_attr(chatapp_no_keyring, ignore = "CHATAPP_SKIP_KEYRING_TESTS")]
fn short_soak_on_a_keyring_store() {
    soak("keyring", keyring_spec(), SHORT, true);
}

#[cfg(feature = "file")]
#[test]
#[ignore = "release check, minutes: cargo test --release --all-features --test soak -- --ignored long"]
fn long_soak_on_a_file_store() {
    let dir = scratch_dir();
    soak("file", file_spec(dir.path()), LONG, true);
}

#[cfg(feature = "sqlite")]
#[test]
#[ignore = "release check, minutes: cargo test --release --all-features --test soak -- --ignored long"]
fn long_soak_on_a_sqlite_store() {
    let dir = scratch_dir();
    soak("sqlite", sqlite_spec(dir.path()), LONG, true);
}

#[cfg(feature = "postgres")]
#[test]
#[ignore = "release check, minutes: cargo test --release --all-features --test soak -- --ignored long"]
fn long_soak_on_a_postgres_store() {
    soak("postgres", postgres_spec(), LONG, true);
}

#[test]
fn a_childs_first_line_is_read_without_libtests_prefix() {
    assert_eq!(
        child_line(b"test soak_child ... paused 125\n"),
        "paused 125"
    );
    assert_eq!(
        child_line(b"call 0 1800000000 ok 3\r\n"),
        "call 0 1800000000 ok 3"
    );
    assert_eq!(child_line(b"final \xff\n"), "final \u{fffd}");
}

#[test]
fn the_control_file_round_trips() {
    let c = Control {
        now: T0,
        phase: Phase::Pause(3),
        disk_full: true,
        skews: vec![-5, 0, MAX_SKEW],
    };
    assert_eq!(Control::decode(&c.encode()), Some(c));
    assert_eq!(
        Control::decode("1 final 0"),
        Some(Control {
            now: 1,
            phase: Phase::Final,
            disk_full: false,
            skews: vec![]
        })
    );
    assert_eq!(Control::decode("1 walk 0"), None);
}
