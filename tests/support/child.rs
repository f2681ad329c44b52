//! The one child-process harness: a test starts its own test binary again, as a child process
//! that runs one entry test and nothing else. The entry test is `#[ignore]`d, so that a normal
//! run lists it as ignored (it is not a test of its own), and the child is started with
//! `--ignored --exact`. Its parameters travel in `CHATAPP_TEST_CHILD_<NAME>` environment
//! variables, and `CHATAPP_TEST_CHILD` names the entry.
//!
//! ```ignore
//! // the parent
//! let child = child::command("child_process").param("store", &spec).spawn().unwrap();
//! // the child
//! #[test]
//! #[ignore = "child process entry: started by this file's tests"]
//! fn child_process() {
//!     child::entry("child_process");
//!     let spec = child::param("store");
//! }
//! ```

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Names the entry test a child process runs.
const ENTRY_ENV: &str = "CHATAPP_TEST_CHILD";

/// The environment variable that carries the parameter `name`.
fn param_env(name: &str) -> String {
    format!(
        "{ENTRY_ENV}_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// The test-binary arguments that run the ignored entry test `entry` alone, its output
/// uncaptured.
pub fn args(entry: &str) -> [&str; 5] {
    [
        entry,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// This test binary, set to run the entry test `entry` as a child process.
pub fn command(entry: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let mut command = Command::new(exe);
    command.args(args(entry)).env(ENTRY_ENV, entry);
    command
}

/// Parameters for a child process.
pub trait Params {
    /// Passes `value` as the child's parameter `name` (see [`param`]).
    fn param(&mut self, name: &str, value: impl AsRef<OsStr>) -> &mut Self;
}

impl Params for Command {
    fn param(&mut self, name: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.env(param_env(name), value)
    }
}

/// Called first in the entry test `entry`: panics unless this process is a child started to
/// run it, so that an entry test run by hand (`--ignored`) fails instead of passing idle.
pub fn entry(entry: &str) {
    match std::env::var(ENTRY_ENV) {
        Ok(started) if started == entry => {}
        _ => panic!(
            "`{entry}` is not a test: it is the child-process entry of this test binary, run \
             only in a child that one of its tests starts (tests/support/child.rs)"
        ),
    }
}

/// In a child: the parameter `name` its parent passed.
pub fn param(name: &str) -> String {
    let var = param_env(name);
    std::env::var(&var).unwrap_or_else(|_| panic!("the child's parameter {var} is missing"))
}

/// In a child: the parameter `name` parsed.
pub fn parsed<T: std::str::FromStr>(name: &str) -> T {
    let text = param(name);
    text.parse()
        .unwrap_or_else(|_| panic!("the child's parameter {name} = {text:?} does not parse"))
}

/// Waits (at most `limit`) until `child` prints a line containing `text` on its piped stdout
/// (libtest may print before it on the same line). The rest of its output is drained in the
/// background, so that the child never blocks on a full pipe. Kills the child and panics when
/// the line does not come.
pub fn wait_for_line(child: &mut Child, text: &str, limit: Duration) {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, rx) = mpsc::channel();
    let want = text.to_owned();
    thread::spawn(move || {
        let mut seen = false;
        // Bytes, not `lines()`: a line that is not UTF-8 must not end the reading (the
        // child would then fail writing to a closed pipe).
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            if !seen && String::from_utf8_lossy(&line).contains(want.as_str()) {
                seen = true;
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(limit).is_err() {
        let _ = child.kill();
        panic!("the child never printed {text:?} (waited {limit:?})");
    }
}

/// Kills and reaps the child when dropped, so that a failing test leaves no process behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
