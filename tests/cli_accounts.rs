//! `chatapp accounts`, and the CLI in a clean environment: without credentials it uses the
//! one account stored for the base URL; with several it exits 2 naming them, and `--account`
//! chooses. Run as real child processes against `FakeChatApp`, on a file store.

mod support;

use chatapp_session::testing::FIRST_CABINET_USER_ID;
use chatapp_session::testing::{FakeChatApp, DEFAULT_APP_ID, DEFAULT_EMAIL, DEFAULT_PASSWORD};
use serde_json::Value;
use support::Cli;

const OTHER_EMAIL: &str = "second@example.com";
const OTHER_PASSWORD: &str = "second-password";
const OTHER_APP_ID: &str = "app_other_2";

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The CLI with no `CHATAPP_*` variable at all.
fn clean(cli: &Cli) -> Cli {
    cli.clone()
        .without_env("CHATAPP_EMAIL")
        .without_env("CHATAPP_PASSWORD")
        .without_env("CHATAPP_APP_ID")
}

#[test]
fn a_clean_environment_uses_the_stored_account_and_several_must_be_chosen() {
    let server = FakeChatApp::builder()
        .account(DEFAULT_EMAIL, DEFAULT_PASSWORD, DEFAULT_APP_ID)
        .account(OTHER_EMAIL, OTHER_PASSWORD, OTHER_APP_ID)
        .start()
        .expect("the fake server");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cli = Cli::file(&server, &dir.path().join("session.json"));
    let bare = clean(&cli);

    // Nothing stored: status says so, accounts is an empty list.
    let status = json(&bare.run(&["status"]).expect_code(0, "status, empty").stdout);
    assert_eq!(status["stored"], false);
    assert_eq!(
        json(&bare.run(&["accounts"]).expect_code(0, "accounts").stdout),
        Value::Array(vec![])
    );

    cli.run(&["login"]).expect_code(0, "login");
    let status = json(
        &bare
            .run(&["status"])
            .expect_code(0, "status after login")
            .stdout,
    );
    assert_eq!(status["stored"], true, "{status}");
    assert_eq!(status["cabinet_user_id"], FIRST_CABINET_USER_ID);
    let token = bare.run(&["token"]).expect_code(0, "token").stdout.clone();
    assert!(token.trim().len() > 20, "{token}");
    bare.run(&["call", "GET", "/v1/licenses"])
        .expect_code(0, "call");
    assert_eq!(server.counters().makes, 1, "the stored pair was used");

    let accounts = bare
        .run(&["accounts"])
        .expect_code(0, "accounts")
        .stdout
        .clone();
    assert!(!accounts.contains(token.trim()), "no secret in {accounts}");
    let listed = json(&accounts);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["email"], DEFAULT_EMAIL);
    assert_eq!(listed[0]["app_id"], DEFAULT_APP_ID);
    assert_eq!(listed[0]["stored"], true);

    // A second account: without a choice, exit 2 naming both.
    let other = cli
        .clone()
        .with_env("CHATAPP_EMAIL", OTHER_EMAIL)
        .with_env("CHATAPP_PASSWORD", OTHER_PASSWORD)
        .with_env("CHATAPP_APP_ID", OTHER_APP_ID);
    other
        .run(&["login"])
        .expect_code(0, "login of the second account");
    for command in [
        &["status"][..],
        &["token"],
        &["logout"],
        &["call", "GET", "/v1/licenses"],
    ] {
        let run = bare.run(command);
        run.expect_code(2, "several accounts");
        let line = run.one_error_line("several accounts");
        assert!(
            line.contains(&format!("{DEFAULT_EMAIL}:{DEFAULT_APP_ID}")),
            "{line}"
        );
        assert!(
            line.contains(&format!("{OTHER_EMAIL}:{OTHER_APP_ID}")),
            "{line}"
        );
    }
    let listed = json(&bare.run(&["accounts"]).expect_code(0, "accounts").stdout);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");

    // --account chooses.
    let chosen = format!("{OTHER_EMAIL}:{OTHER_APP_ID}");
    let status = json(
        &bare
            .run(&["--account", &chosen, "status"])
            .expect_code(0, "chosen")
            .stdout,
    );
    assert_eq!(status["cabinet_user_id"], FIRST_CABINET_USER_ID + 1);
    let first = format!("{DEFAULT_EMAIL}:{DEFAULT_APP_ID}");
    bare.run(&["--account", &first, "logout"])
        .expect_code(0, "logout of the first");
    // One account left with a pair: it is the one used.
    let status = json(&bare.run(&["status"]).expect_code(0, "one left").stdout);
    assert_eq!(status["cabinet_user_id"], FIRST_CABINET_USER_ID + 1);
    // The logged-out account is still listed (its ledger stays), as not stored.
    let listed = json(&bare.run(&["accounts"]).expect_code(0, "accounts").stdout);
    let first_entry = listed
        .as_array()
        .and_then(|a| a.iter().find(|e| e["email"] == DEFAULT_EMAIL))
        .cloned()
        .unwrap_or_default();
    assert_eq!(first_entry["stored"], false, "{listed}");

    // Bad --account values and a login for another account than the environment's.
    bare.run(&["--account", "nocolon", "status"])
        .expect_code(2, "bad --account");
    other
        .run(&["--account", &first, "login"])
        .expect_code(2, "login with another --account");
    assert_eq!(server.counters().makes, 2);
}
