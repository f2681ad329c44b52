//! Logging for the examples, shared by `chatapp` and `demo`.

/// env_logger from `RUST_LOG` (default `warn`), except that `ureq_proto` never logs at TRACE:
/// there it writes every byte of every exchange as hex, tokens and password included.
pub fn init_logging() {
    let env = || env_logger::Env::default().default_filter_or("warn");
    let byte_dumps = log::Metadata::builder()
        .level(log::Level::Trace)
        .target("ureq_proto::util")
        .build();
    let dumps_bytes = log::Log::enabled(&env_logger::Builder::from_env(env()).build(), &byte_dumps);
    let mut builder = env_logger::Builder::from_env(env());
    if dumps_bytes {
        // Replaces a `ureq_proto` or `ureq_proto::util` directive, and outranks `trace` or `ureq`.
        builder
            .filter_module("ureq_proto", log::LevelFilter::Debug)
            .filter_module("ureq_proto::util", log::LevelFilter::Debug);
    }
    builder.target(env_logger::Target::Stderr).init();
}
