//! The services' settings as an operator types them: every boolean environment variable
//! takes the usual spellings, checked on the real binaries (clap reads the process's own
//! environment, which a test must not change under its neighbours).

use std::process::Command;

use clap::{ArgAction, CommandFactory};
use tests::{emulators::dead_addr, process::binary};

/// The environment variables of `T`'s switches.
fn switch_variables<T: CommandFactory>() -> Vec<String> {
    T::command()
        .get_arguments()
        .filter(|arg| matches!(arg.get_action(), ArgAction::SetTrue))
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}

/// Runs `name health-check` against a dead address with every switch variable set to
/// `value`: it must get past parsing (exit 1, not SERVING) rather than fail on a value
/// (clap's exit 2).
fn health_check_with_switches(name: &str, listen_variable: &str, switches: &[String], value: &str) {
    let mut command = Command::new(binary(name).expect("the service binary"));
    command
        .arg("health-check")
        .env(listen_variable, dead_addr().to_string());
    for variable in switches {
        command.env(variable, value);
    }
    let output = command.output().expect("run the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{name} with {switches:?} = {value:?}: {stderr}"
    );
    assert!(!stderr.contains("invalid value"), "{stderr}");
}

#[test]
fn every_boolean_variable_takes_the_usual_spellings() {
    let auth = switch_variables::<auth_service::config::Cli>();
    let data = switch_variables::<data_service::config::Cli>();
    assert!(
        auth.contains(&"DYNAGATE_DEV_EPHEMERAL_TOTP_KEY".to_owned()),
        "{auth:?}"
    );
    assert!(!data.is_empty());
    for value in ["1", "yes", "on", "true", "0", "no", "off", "false"] {
        health_check_with_switches("auth-service", "DYNAGATE_AUTH_LISTEN_ADDR", &auth, value);
        health_check_with_switches("data-service", "DYNAGATE_DATA_LISTEN_ADDR", &data, value);
    }
}

#[test]
fn a_boolean_variable_with_another_word_is_refused_with_clap_s_message() {
    let output = Command::new(binary("auth-service").expect("the service binary"))
        .arg("health-check")
        .env("DYNAGATE_DEV_EPHEMERAL_TOTP_KEY", "maybe")
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value 'maybe'"), "{stderr}");
}
