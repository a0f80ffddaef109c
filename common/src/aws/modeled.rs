//! Which failure each SDK operation error's modeled variants mean: the `is_…` checks the
//! service models give DynamoDB's and STS's operation errors, mapped to [`AwsFailure`].

use aws_sdk_dynamodb::operation::{
    batch_get_item::BatchGetItemError, batch_write_item::BatchWriteItemError,
    create_table::CreateTableError, delete_item::DeleteItemError,
    describe_table::DescribeTableError, get_item::GetItemError, put_item::PutItemError,
    query::QueryError, scan::ScanError, update_item::UpdateItemError,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::AwsFailure;

/// An operation error type of the SDK, classified by the variants its service model gives it.
pub trait Modeled: ProvideErrorMetadata {
    /// What a modeled variant means; `None` for errors the model leaves unnamed.
    fn modeled(&self) -> Option<AwsFailure>;
}

/// Implements [`Modeled`] for DynamoDB operation errors from the `is_…` checks each has.
macro_rules! dynamodb_modeled {
    ($($error:ty { $($check:ident => $failure:ident),* $(,)? })*) => {$(
        impl Modeled for $error {
            fn modeled(&self) -> Option<AwsFailure> {
                $(if self.$check() { return Some(AwsFailure::$failure); })*
                None
            }
        }
    )*};
}

dynamodb_modeled! {
    GetItemError {
        is_internal_server_error => Unavailable,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
        is_throttling_exception => Throttled,
    }
    QueryError {
        is_internal_server_error => Unavailable,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
        is_throttling_exception => Throttled,
    }
    ScanError {
        is_internal_server_error => Unavailable,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
        is_throttling_exception => Throttled,
    }
    PutItemError {
        is_conditional_check_failed_exception => ConditionFailed,
        is_internal_server_error => Unavailable,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
        is_throttling_exception => Throttled,
        is_transaction_conflict_exception => Unavailable,
        is_replicated_write_conflict_exception => Unavailable,
    }
    UpdateItemError {
        is_conditional_check_failed_exception => ConditionFailed,
        is_internal_server_error => Unavailable,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
        is_throttling_exception => Throttled,
        is_transaction_conflict_exception => Unavailable,
        is_replicated_write_conflict_exception => Unavailable,
    }
    DeleteItemError {
        is_conditional_check_failed_exception => ConditionFailed,
        is_internal_server_error => Unavailable,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
        is_throttling_exception => Throttled,
        is_transaction_conflict_exception => Unavailable,
        is_replicated_write_conflict_exception => Unavailable,
    }
    BatchWriteItemError {
        is_internal_server_error => Unavailable, is_throttling_exception => Throttled,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
    }
    BatchGetItemError {
        is_internal_server_error => Unavailable,
        is_provisioned_throughput_exceeded_exception => Throttled,
        is_request_limit_exceeded => Throttled,
        is_throttling_exception => Throttled,
    }
    DescribeTableError {
        is_internal_server_error => Unavailable,
    }
    CreateTableError {
        is_internal_server_error => Unavailable,
        is_limit_exceeded_exception => Throttled,
    }
}

impl Modeled for aws_sdk_sts::operation::assume_role::AssumeRoleError {
    fn modeled(&self) -> Option<AwsFailure> {
        if self.is_expired_token_exception() {
            Some(AwsFailure::CredentialsExpired)
        } else if self.is_region_disabled_exception() {
            Some(AwsFailure::AccessDenied)
        } else {
            // A malformed or oversized session policy is our bug, not the caller's.
            None
        }
    }
}
