//! The container files, checked without a Docker engine: every image in docker-compose.yml and
//! every FROM in the Dockerfile pinned by tag or digest (never `latest`), the runtime stage
//! non-root with a health check, and every variable the compose file or the Dockerfile sets
//! for our services one that the service's `--help` documents. (scripts/check-containers
//! validates the compose file against the Compose schema and runs hadolint.)

use std::{collections::BTreeSet, path::PathBuf};

use clap::CommandFactory;
use yaml_rust2::{Yaml, YamlLoader};

/// Variables our binaries read without a flag: the AWS SDK's standard configuration chain and
/// the log filter. Everything else must be a documented `env =` fallback.
const STANDARD_VARIABLES: &[&str] = &[
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_STS",
    "RUST_LOG",
];

const BINARIES: [&str; 2] = ["auth-service", "data-service"];

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The variables a binary's `--help` documents (`[env: NAME=…]`), over every subcommand.
/// `Cli::command()` is what `Cli::parse()` in main.rs renders for `--help`.
fn documented(binary: &str) -> BTreeSet<String> {
    let mut command = match binary {
        "auth-service" => auth_service::config::Cli::command(),
        "data-service" => data_service::config::Cli::command(),
        other => panic!("not one of our binaries: {other}"),
    };
    let mut help = command.render_long_help().to_string();
    for sub in command.get_subcommands_mut() {
        help.push_str(&sub.render_long_help().to_string());
    }
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_owned()))
        .collect()
}

fn parse_yaml(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).expect("docker-compose.yml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

/// A mapping's keys and values, with YAML merge keys (`<<: *anchor`) expanded; an explicit
/// key wins over a merged one, as in Compose.
fn entries(mapping: &Yaml) -> Vec<(String, Yaml)> {
    let Some(hash) = mapping.as_hash() else {
        return Vec::new();
    };
    let mut own: Vec<(String, Yaml)> = Vec::new();
    let mut merged = Vec::new();
    for (key, value) in hash {
        let key = key.as_str().expect("string keys").to_owned();
        if key == "<<" {
            let sources = value
                .as_vec()
                .cloned()
                .unwrap_or_else(|| vec![value.clone()]);
            merged.extend(sources.iter().flat_map(entries));
        } else {
            own.push((key, value.clone()));
        }
    }
    for (key, value) in merged {
        if !own.iter().any(|(k, _)| *k == key) {
            own.push((key, value));
        }
    }
    own
}

fn services(compose: &Yaml) -> Vec<(String, Yaml)> {
    entries(&compose["services"])
}

/// The variable names a service sets, from either Compose form (a mapping or `NAME=value`s).
fn environment(service: &Yaml) -> Vec<String> {
    let env = &service["environment"];
    match env.as_vec() {
        Some(list) => list
            .iter()
            .filter_map(Yaml::as_str)
            .map(|item| item.split('=').next().unwrap_or(item).to_owned())
            .collect(),
        None => entries(env).into_iter().map(|(name, _)| name).collect(),
    }
}

/// An image reference with an explicit tag or digest that is not `latest`.
fn pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    matches!(last.split_once(':'), Some((_, tag)) if !tag.is_empty() && tag != "latest")
}

fn unpinned_images(compose: &str) -> Vec<String> {
    services(&parse_yaml(compose))
        .into_iter()
        .filter_map(|(name, service)| {
            let image = service["image"].as_str()?.to_owned();
            (!pinned(&image)).then(|| format!("service {name}: image {image} is not pinned"))
        })
        .collect()
}

/// Our binaries a service of our image runs (from `entrypoint` and `command`; the image's
/// default command is the auth-service).
fn binaries_run(service: &Yaml) -> Vec<&'static str> {
    let mut words = String::new();
    for key in ["entrypoint", "command"] {
        match &service[key] {
            Yaml::String(s) => words.push_str(s),
            Yaml::Array(items) => items.iter().filter_map(Yaml::as_str).for_each(|s| {
                words.push_str(s);
                words.push(' ');
            }),
            _ => {}
        }
    }
    let named: Vec<_> = BINARIES.into_iter().filter(|b| words.contains(b)).collect();
    if named.is_empty() && service["command"].is_badvalue() {
        vec!["auth-service"]
    } else {
        named
    }
}

fn is_our_image(service: &Yaml) -> bool {
    !service["build"].is_badvalue()
        || service["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("dynagate:"))
}

/// One line for each variable a service of our image sets that a binary it runs does not
/// document; also one for a service of our image that runs neither binary.
fn undocumented_compose_variables(compose: &str) -> Vec<String> {
    let docs: Vec<_> = BINARIES.iter().map(|b| (*b, documented(b))).collect();
    let mut problems = Vec::new();
    for (name, service) in services(&parse_yaml(compose)) {
        if !is_our_image(&service) {
            continue;
        }
        let runs = binaries_run(&service);
        if runs.is_empty() && !environment(&service).is_empty() {
            problems.push(format!(
                "service {name}: sets variables but runs neither binary"
            ));
        }
        for variable in environment(&service) {
            if STANDARD_VARIABLES.contains(&variable.as_str()) {
                continue;
            }
            for (binary, documented) in &docs {
                if runs.contains(binary) && !documented.contains(&variable) {
                    problems.push(format!(
                        "service {name}: {variable} is not in `{binary} --help`"
                    ));
                }
            }
        }
    }
    problems
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let line = line.trim();
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (keyword.to_uppercase(), rest.trim().to_owned())
        })
        .collect()
}

fn dockerfile_problems(dockerfile: &str) -> Vec<String> {
    let instructions = instructions(dockerfile);
    let mut problems = Vec::new();
    let mut stages: Vec<String> = Vec::new();
    for (_, args) in instructions.iter().filter(|(k, _)| k == "FROM") {
        let words: Vec<_> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let image = words.first().copied().unwrap_or_default();
        if !stages.iter().any(|s| s == image) && !pinned(image) {
            problems.push(format!("FROM {image} is not pinned"));
        }
        if let [_, as_, name] = words.as_slice()
            && as_.eq_ignore_ascii_case("as")
        {
            stages.push((*name).to_owned());
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .unwrap_or(0);
    let runtime = &instructions[last_from..];
    match runtime.iter().rev().find(|(k, _)| k == "USER") {
        None => problems.push("the runtime stage runs as root (no USER)".to_owned()),
        Some((_, user)) => {
            let name = user.split(':').next().unwrap_or_default();
            if name == "root" || name == "0" {
                problems.push(format!("the runtime stage runs as root (USER {user})"));
            }
        }
    }
    match runtime.iter().find(|(k, _)| k == "HEALTHCHECK") {
        Some((_, check)) if !check.trim().eq_ignore_ascii_case("NONE") => {}
        _ => problems.push("the runtime stage has no HEALTHCHECK".to_owned()),
    }
    // The image runs either binary, so a variable it sets must be one of theirs.
    let docs: BTreeSet<_> = BINARIES.iter().flat_map(|b| documented(b)).collect();
    for (_, args) in runtime.iter().filter(|(k, _)| k == "ENV") {
        for pair in args.split_whitespace() {
            let name = pair.split('=').next().unwrap_or(pair);
            if !docs.contains(name) && !STANDARD_VARIABLES.contains(&name) {
                problems.push(format!("ENV {name} is in neither binary's --help"));
            }
        }
    }
    problems
}

#[test]
fn every_compose_image_is_pinned() {
    assert_eq!(
        unpinned_images(&repo_file("docker-compose.yml")),
        Vec::<String>::new()
    );
}

#[test]
fn every_variable_compose_sets_for_our_services_is_documented_by_their_help() {
    assert_eq!(
        undocumented_compose_variables(&repo_file("docker-compose.yml")),
        Vec::<String>::new()
    );
}

#[test]
fn the_dockerfile_is_pinned_non_root_health_checked_and_sets_only_documented_variables() {
    assert_eq!(
        dockerfile_problems(&repo_file("Dockerfile")),
        Vec::<String>::new()
    );
}

#[test]
fn the_help_texts_document_the_listen_addresses() {
    assert!(documented("auth-service").contains("DYNAGATE_AUTH_LISTEN_ADDR"));
    assert!(documented("data-service").contains("DYNAGATE_DATA_LISTEN_ADDR"));
    assert!(!documented("auth-service").contains("DYNAGATE_DATA_LISTEN_ADDR"));
}

// The checks themselves can fail: each catches a doctored file.

const BAD_COMPOSE: &str = r#"
x-env: &env
  AWS_REGION: us-east-1
  DYNAGATE_MERGED_TYPO: "1"
services:
  db:
    image: amazon/dynamodb-local
  moto:
    image: motoserver/moto:latest
  registry:
    image: localhost:5000/thing
  auth:
    image: dynagate:local
    command: ["auth-service"]
    environment:
      <<: *env
      DYNAGATE_AUTH_LISTEN_ADDR: 0.0.0.0:50051
      DYNAGATE_DATA_LISTEN_ADDR: 0.0.0.0:50052
  data:
    image: dynagate:local
    command: data-service
    environment:
      - DYNAGATE_AUTH_URL=http://auth:50051
      - DYNAGATE_AUTH_URLL=http://auth:50051
"#;

#[test]
fn unpinned_and_latest_images_are_named() {
    assert_eq!(
        unpinned_images(BAD_COMPOSE),
        [
            "service db: image amazon/dynamodb-local is not pinned",
            "service moto: image motoserver/moto:latest is not pinned",
            "service registry: image localhost:5000/thing is not pinned",
        ]
    );
}

#[test]
fn undocumented_variables_are_named_with_their_service_and_binary() {
    assert_eq!(
        undocumented_compose_variables(BAD_COMPOSE),
        [
            "service auth: DYNAGATE_DATA_LISTEN_ADDR is not in `auth-service --help`",
            "service auth: DYNAGATE_MERGED_TYPO is not in `auth-service --help`",
            "service data: DYNAGATE_AUTH_URLL is not in `data-service --help`",
        ]
    );
}

#[test]
fn an_unpinned_root_dockerfile_without_health_check_is_refused() {
    let bad = "FROM rust:latest AS build\nRUN cargo build\nFROM build AS again\n\
               FROM debian\nUSER 0:0\nENV DYNAGATE_NOPE=1 \\\n    RUST_LOG=info\nCMD [\"x\"]\n";
    assert_eq!(
        dockerfile_problems(bad),
        [
            "FROM rust:latest is not pinned",
            "FROM debian is not pinned",
            "the runtime stage runs as root (USER 0:0)",
            "the runtime stage has no HEALTHCHECK",
            "ENV DYNAGATE_NOPE is in neither binary's --help",
        ]
    );
}
