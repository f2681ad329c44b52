//! Tells the tests which outside services this build may use, as `cfg` flags, so that a test
//! whose service is missing shows up as `ignored` (with the reason) instead of passing without
//! having run. Stable libtest has no run-time skip; `#[cfg_attr(flag, ignore = "...")]` is one.
//!
//! - `chatapp_no_postgres`: `CHATAPP_TEST_POSTGRES` is unset or empty, or
//!   `CHATAPP_SKIP_POSTGRES_TESTS` is set. `.ci/postgres-env` (and so `bash .ci/test`) sets
//!   the first.
//! - `chatapp_no_keyring`: `CHATAPP_SKIP_KEYRING_TESTS` is set.
//!
//! The library itself never looks at these flags.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for var in [
        "CHATAPP_TEST_POSTGRES",
        "CHATAPP_SKIP_POSTGRES_TESTS",
        "CHATAPP_SKIP_KEYRING_TESTS",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(chatapp_no_postgres)");
    println!("cargo::rustc-check-cfg=cfg(chatapp_no_keyring)");
    let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
    if !set("CHATAPP_TEST_POSTGRES") || set("CHATAPP_SKIP_POSTGRES_TESTS") {
        println!("cargo::rustc-cfg=chatapp_no_postgres");
    }
    if set("CHATAPP_SKIP_KEYRING_TESTS") {
        println!("cargo::rustc-cfg=chatapp_no_keyring");
    }
}
