//! Starting and dropping many fake servers leaks no threads, even when clients keep their
//! connections open. Alone in its own test binary so that the thread count is its own.

use std::time::Duration;

use chatapp_session::testing::{FakeChatApp, Fault, Route};

/// Threads of this process (counted on Linux only; elsewhere the test just has to finish).
#[cfg(target_os = "linux")]
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap_or_else(|e| panic!("/proc/self/task: {e}"))
        .count()
}

#[test]
fn fifty_servers_started_and_dropped_leave_no_threads() {
    let agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    #[cfg(target_os = "linux")]
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
    // A joined thread may stay listed a moment after its join returns: a few seconds at
    // most to leave, never more threads for good.
    #[cfg(target_os = "linux")]
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads() > before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let after = threads();
        assert!(after <= before, "threads before {before}, after {after}");
    }
}
