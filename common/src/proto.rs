//! Generated protobuf messages and gRPC stubs, plus the descriptor set for server reflection.

use std::fmt;

use time::OffsetDateTime;

/// `dynagate.auth.v1`: registration, login, tokens and credentials.
pub mod auth {
    /// Version 1 of the auth API.
    pub mod v1 {
        #![allow(missing_docs, clippy::doc_lazy_continuation)]
        tonic::include_proto!("dynagate.auth.v1");
    }
}

/// `dynagate.data.v1`: the caller's items in DynamoDB.
pub mod data {
    /// Version 1 of the data API.
    pub mod v1 {
        #![allow(missing_docs, clippy::doc_lazy_continuation)]
        tonic::include_proto!("dynagate.data.v1");
    }
}

/// `dynagate.admin.v1`: acting on accounts, on the auth-service's mTLS admin listener.
pub mod admin {
    /// Version 1 of the admin API.
    pub mod v1 {
        #![allow(missing_docs, clippy::doc_lazy_continuation)]
        tonic::include_proto!("dynagate.admin.v1");
    }
}

/// Every Dynagate proto file and its imports, encoded as a `FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dynagate_descriptor");

/// A `google.protobuf.Timestamp` for a point in time.
pub fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // Always 0..1e9, so it fits in an i32.
        nanos: i32::try_from(at.nanosecond()).unwrap_or_default(),
    }
}

/// Implements `Debug` printing `[REDACTED]` for the secret fields.
macro_rules! redacted_debug {
    ($($ty:ty { $($field:ident),* ; $($secret:ident),* })*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut out = f.debug_struct(stringify!($ty));
                $(out.field(stringify!($field), &self.$field);)*
                $(out.field(stringify!($secret), &"[REDACTED]");)*
                out.finish()
            }
        }
    )*};
}

redacted_debug! {
    auth::v1::RegisterRequest { username; password }
    auth::v1::LoginRequest { username; password, totp_code, recovery_code }
    auth::v1::LoginResponse { access_token_expires_at, refresh_token_expires_at, user_id; access_token, refresh_token }
    auth::v1::RefreshRequest { ; refresh_token }
    auth::v1::RefreshResponse { access_token_expires_at, refresh_token_expires_at; access_token, refresh_token }
    auth::v1::LogoutRequest { ; refresh_token }
    auth::v1::GetCredentialsResponse { access_key_id, expiration, region, table_name, partition_key; secret_access_key, session_token }
    auth::v1::ChangePasswordRequest { ; old_password, new_password }
    auth::v1::EnrollTotpRequest { ; password }
    auth::v1::EnrollTotpResponse { ; secret, otpauth_uri }
    auth::v1::ConfirmTotpRequest { ; code }
    auth::v1::ConfirmTotpResponse { ; recovery_codes }
    auth::v1::DisableTotpRequest { ; code, recovery_code }
}

#[cfg(test)]
mod tests {
    use super::auth::v1::LoginRequest;

    #[test]
    fn debug_output_redacts_secrets() {
        let request = LoginRequest {
            username: "alice".into(),
            password: "hunter2 hunter2".into(),
            ..Default::default()
        };
        let printed = format!("{request:?}");
        assert!(printed.contains("alice"));
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
