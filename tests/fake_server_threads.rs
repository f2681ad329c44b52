//! Starting and dropping many fake servers leaks no threads, even when clients keep their
//! connections open. Alone in its own test binary so that the thread count is its own.

use std::time::Duration;

use chatapp_session::testing::{FakeChatApp, Fault, Route};

/// Threads of this process (Linux only; elsewhere the test just has to finish).
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

#[test]
fn fifty_servers_started_and_dropped_leave_no_threads() {
    let agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let before = threads();
    for i in 0..50 {
        let fake = match FakeChatApp::start() {
            Ok(fake) => fake,
            Err(e) => panic!("start {i}: {e}"),
        };
        // A kept-alive connection, and a request stuck in a long delay: drop must end both.
        let status = agent
            .get(format!("{}/v1/licenses", fake.base_url()))
            .call()
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(401));
        fake.inject(Route::Check, Fault::Delay(Duration::from_secs(60)));
        let url = format!("{}/v1/tokens/check", fake.base_url());
        let stuck = std::thread::spawn(move || {
            let agent = ureq::Agent::config_builder()
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .new_agent();
            agent.get(url).call().is_ok()
        });
        while fake.pending_faults(Route::Check) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(fake);
        assert!(
            !stuck.join().unwrap_or(true),
            "the stuck request got a reply"
        );
    }
    if let (Some(before), Some(after)) = (before, threads()) {
        assert!(after <= before, "threads before {before}, after {after}");
    }
}
