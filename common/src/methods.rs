//! The gRPC methods a Dynagate server answers, read once from the descriptor sets compiled into
//! the binary (ours, health, reflection v1 and v1alpha): the only names a request's metrics may
//! carry, and which methods take exactly one request message. A path outside this set is a
//! client's invention and must not reach anything that keeps state by name.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock},
};

use prost::Message;
use prost_types::FileDescriptorSet;

/// The standard health service, which every server adds.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The server reflection services, which every server adds (see `server::add_reflection`).
pub const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// One RPC as its descriptor declares it.
#[derive(Debug, PartialEq, Eq)]
pub struct Method {
    /// The request path, `/package.Service/Method`.
    pub path: String,
    /// The fully qualified service name (`dynagate.auth.v1.AuthService`).
    pub service: String,
    /// The method name (`Login`).
    pub name: String,
    /// Whether the client may send more than one request message.
    pub client_streaming: bool,
}

/// Every method of every compiled-in descriptor set, by path; parsed on first use.
static ALL: LazyLock<HashMap<String, Method>> = LazyLock::new(|| {
    let sets = [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for encoded in sets {
        // Built into the binary by protox and tonic's own builds: a failure here is a build
        // defect, and an empty set only makes every call count as "unknown".
        let Ok(set) = FileDescriptorSet::decode(encoded) else {
            tracing::error!("a compiled-in descriptor set does not decode");
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = match (package.as_str(), service.name()) {
                    ("", name) => name.to_owned(),
                    (package, name) => format!("{package}.{name}"),
                };
                for method in service.method {
                    let path = format!("/{service_name}/{}", method.name());
                    methods.insert(
                        path.clone(),
                        Method {
                            path,
                            service: service_name.clone(),
                            name: method.name().to_owned(),
                            client_streaming: method.client_streaming(),
                        },
                    );
                }
            }
        }
    }
    methods
});

/// The methods of the services one server answers; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServedMethods(Arc<HashMap<&'static str, &'static Method>>);

impl ServedMethods {
    /// The methods of `services` (fully qualified names), plus health and reflection, which
    /// every Dynagate server serves.
    pub fn new(services: &[&str]) -> Self {
        let served = |service: &str| {
            services.contains(&service)
                || service == HEALTH_SERVICE
                || REFLECTION_SERVICES.contains(&service)
        };
        let methods = ALL
            .values()
            .filter(|method| served(&method.service))
            .map(|method| (method.path.as_str(), method))
            .collect();
        Self(Arc::new(methods))
    }

    /// The method at `path`, if this server answers it.
    pub fn get(&self, path: &str) -> Option<&'static Method> {
        self.0.get(path).copied()
    }

    /// Every method this server answers, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &'static Method> + '_ {
        self.0.values().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_knows_its_own_methods_health_and_reflection_only() {
        let auth = ServedMethods::new(&["dynagate.auth.v1.AuthService"]);

        let login = auth.get("/dynagate.auth.v1.AuthService/Login").unwrap();
        assert_eq!(
            (login.service.as_str(), login.name.as_str()),
            ("dynagate.auth.v1.AuthService", "Login")
        );
        assert!(!login.client_streaming);
        let watch = auth.get("/dynagate.auth.v1.AuthService/WatchRevocations");
        assert!(
            !watch.unwrap().client_streaming,
            "a unary request, streamed answers"
        );
        assert!(auth.get("/grpc.health.v1.Health/Check").is_some());
        assert!(auth.get("/grpc.health.v1.Health/Watch").is_some());
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert!(auth.get(reflection).unwrap().client_streaming);
        let old = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
        assert!(auth.get(old).is_some());
        assert!(auth.get("/dynagate.data.v1.DataService/GetItem").is_none());
        assert!(auth.get("/dynagate.auth.v1.AuthService/Nope").is_none());
        assert!(auth.get("/dynagate.auth.v1.AuthService/Login/").is_none());
    }

    #[test]
    fn every_data_rpc_is_known_on_the_data_service() {
        let data = ServedMethods::new(&["dynagate.data.v1.DataService"]);
        let names: Vec<&str> = data
            .iter()
            .filter(|method| method.service == "dynagate.data.v1.DataService")
            .map(|method| method.name.as_str())
            .collect();
        for rpc in [
            "GetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "QueryItems",
            "BatchGetItems",
            "BatchWriteItems",
            "TransactWriteItems",
            "ExportItems",
        ] {
            assert!(names.contains(&rpc), "{rpc} in {names:?}");
        }
        assert_eq!(names.len(), 9);
    }
}
