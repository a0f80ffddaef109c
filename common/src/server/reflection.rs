//! Server reflection: what grpcurl and other tools read to learn the services' methods and
//! messages.

use tonic::service::RoutesBuilder;

use crate::proto::FILE_DESCRIPTOR_SET;

/// Adds server reflection, v1 and v1alpha (grpcurl and older tools still ask for v1alpha),
/// serving every Dynagate proto with its comments, the health service, and the `google.rpc`
/// error details so tools can decode BadRequest, RetryInfo and ErrorInfo. Only `services`
/// (the ones this server implements), health and reflection are listed, although every
/// Dynagate proto is described.
pub fn add_reflection(
    routes: &mut RoutesBuilder,
    services: &[&str],
) -> Result<(), tonic_reflection::server::Error> {
    let builder = |reflection: &str| {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name(reflection);
        for service in services {
            builder = builder.with_service_name(*service);
        }
        builder
    };
    let v1 = builder("grpc.reflection.v1.ServerReflection").build_v1()?;
    let v1alpha = builder("grpc.reflection.v1alpha.ServerReflection").build_v1alpha()?;

    routes.add_service(v1).add_service(v1alpha);
    Ok(())
}
