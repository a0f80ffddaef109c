//! What moto's STS received, read back through its own API: `/moto-api/data.json` (each
//! assumed role with its session policy) and the request recorder (raw AssumeRole
//! parameters). moto enforces none of it; these records are how tests see what we asked for.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;

/// The AssumedRole records moto holds, as JSON objects.
pub fn assumed_roles(endpoint: &str) -> Vec<Value> {
    let data: Value = ureq::get(format!("{endpoint}/moto-api/data.json"))
        .call()
        .expect("GET /moto-api/data.json")
        .body_mut()
        .read_json()
        .expect("data.json is JSON");
    data["sts"]["AssumedRole"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The AssumedRole records for one RoleSessionName.
pub fn assumed_roles_named(endpoint: &str, session_name: &str) -> Vec<Value> {
    assumed_roles(endpoint)
        .into_iter()
        .filter(|role| role["session_name"] == session_name)
        .collect()
}

/// Temporary credentials moto's STS issued: to whom (the RoleSessionName) and which.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The RoleSessionName, `dynagate-<user id>` for our sessions.
    pub session_name: String,
    /// The access key id.
    pub access_key_id: String,
    /// The session token that must accompany it.
    pub session_token: String,
}

/// Every set of credentials moto has issued through AssumeRole.
pub fn issued_credentials(endpoint: &str) -> Vec<Issued> {
    assumed_roles(endpoint)
        .iter()
        .map(|role| {
            let text = |name: &str| {
                role[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("AssumedRole without {name}: {role}"))
                    .to_owned()
            };
            Issued {
                session_name: text("session_name"),
                access_key_id: text("access_key_id"),
                session_token: text("session_token"),
            }
        })
        .collect()
}

/// Turns on moto's request recorder (idempotent).
pub fn start_recording(endpoint: &str) {
    ureq::post(format!("{endpoint}/moto-api/recorder/start-recording"))
        .send_empty()
        .expect("start recording");
}

/// The form parameters of every recorded AssumeRole request.
pub fn recorded_assume_roles(endpoint: &str) -> Vec<HashMap<String, String>> {
    let recording = ureq::get(format!("{endpoint}/moto-api/recorder/download-recording"))
        .call()
        .expect("download recording")
        .body_mut()
        .read_to_string()
        .expect("recording is text");
    recording
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|entry| {
            let body = entry["body"].as_str()?.to_owned();
            let body = if entry["body_encoded"].as_bool() == Some(true) {
                String::from_utf8(STANDARD.decode(body).ok()?).ok()?
            } else {
                body
            };
            let params: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            (params.get("Action").map(String::as_str) == Some("AssumeRole")).then_some(params)
        })
        .collect()
}
