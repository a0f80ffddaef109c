//! The STS session policy and request names for a user's temporary credentials. Pure
//! functions, golden-tested: this file is the security boundary of the data path, so any
//! change to its output must be deliberate.

use std::fmt;

use serde::Serialize;

/// Every DynamoDB action the data-service performs with user credentials, and nothing else.
/// `deploy/iam/data-access-role-policy.json` must allow exactly these (a test checks).
pub const ITEM_ACTIONS: [&str; 7] = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
    "dynamodb:ConditionCheckItem",
];

/// STS caps inline session policies at 2,048 characters.
pub const MAX_POLICY_LEN: usize = 2048;
/// Prefix of every RoleSessionName; CloudTrail shows it next to the user id.
pub const SESSION_NAME_PREFIX: &str = "dynagate-";
/// The longest user id we vend credentials for: RoleSessionName is at most 64 characters.
pub const MAX_USER_ID_LEN: usize = 64 - SESSION_NAME_PREFIX.len();

/// A user id that is safe to put in a RoleSessionName, a SourceIdentity and a session tag:
/// 2 to 55 characters from `[A-Za-z0-9+=,.@_-]` (the characters STS allows in all three).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StsUserId(String);

impl StsUserId {
    /// Checks `user_id`; `None` if STS would refuse it anywhere.
    pub fn new(user_id: &str) -> Option<Self> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        ((2..=MAX_USER_ID_LEN).contains(&user_id.len()) && user_id.chars().all(allowed))
            .then(|| Self(user_id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StsUserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The RoleSessionName for a user: `dynagate-<user id>`, at most 64 characters.
pub fn role_session_name(user_id: &StsUserId) -> String {
    format!("{SESSION_NAME_PREFIX}{user_id}")
}

/// A DynamoDB table ARN, `arn:<partition>:dynamodb:<region>:<account>:table/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableArn {
    arn: String,
    region: String,
    table_name: String,
}

impl TableArn {
    /// Parses and checks a table ARN.
    pub fn parse(arn: &str) -> Result<Self, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts[..] else {
            return Err(format!("{arn:?} is not an ARN"));
        };
        let table_name = resource.strip_prefix("table/").unwrap_or_default();
        let name_ok = (3..=255).contains(&table_name.len())
            && table_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if prefix != "arn"
            || partition.is_empty()
            || service != "dynamodb"
            || region.is_empty()
            || account.len() != 12
            || !account.bytes().all(|b| b.is_ascii_digit())
            || !name_ok
        {
            return Err(format!(
                "{arn:?} is not a DynamoDB table ARN (arn:aws:dynamodb:<region>:<account>:table/<name>)"
            ));
        }
        Ok(Self {
            arn: arn.to_owned(),
            region: region.to_owned(),
            table_name: table_name.to_owned(),
        })
    }

    /// The whole ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The table's region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table_name
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Policy<'a> {
    version: &'static str,
    statement: [Statement<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statement<'a> {
    sid: &'static str,
    effect: &'static str,
    action: &'static [&'static str],
    resource: &'a str,
    condition: Condition<'a>,
}

#[derive(Serialize)]
struct Condition<'a> {
    #[serde(rename = "ForAllValues:StringEquals")]
    for_all_values_string_equals: LeadingKeys<'a>,
}

#[derive(Serialize)]
struct LeadingKeys<'a> {
    #[serde(rename = "dynamodb:LeadingKeys")]
    leading_keys: [&'a str; 1],
}

/// The inline session policy for `user_id`: the item actions, on the items table only, for
/// items whose partition key is exactly the user's id. The effective permissions are the
/// intersection of this and the role's own policy, so both must hold for any access.
pub fn session_policy(table: &TableArn, user_id: &StsUserId) -> String {
    let policy = Policy {
        version: "2012-10-17",
        statement: [Statement {
            sid: "OwnPartitionOnly",
            effect: "Allow",
            action: &ITEM_ACTIONS,
            resource: table.as_str(),
            condition: Condition {
                for_all_values_string_equals: LeadingKeys {
                    leading_keys: [user_id.as_str()],
                },
            },
        }],
    };
    // Serialising plain strings and arrays cannot fail.
    serde_json::to_string(&policy).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TABLE: &str = "arn:aws:dynamodb:eu-west-1:123456789012:table/dynagate-items";

    fn user(id: &str) -> StsUserId {
        StsUserId::new(id).unwrap()
    }

    #[test]
    fn the_session_policy_is_exactly_the_golden_one() {
        let table = TableArn::parse(TABLE).unwrap();
        let policy = session_policy(&table, &user("6f1c2a7e-9b1d-4c3e-8f00-0123456789ab"));
        let golden = concat!(
            r#"{"Version":"2012-10-17","Statement":[{"Sid":"OwnPartitionOnly","Effect":"Allow","#,
            r#""Action":["dynamodb:GetItem","dynamodb:PutItem","dynamodb:UpdateItem","#,
            r#""dynamodb:DeleteItem","dynamodb:Query","dynamodb:BatchGetItem","#,
            r#""dynamodb:ConditionCheckItem"],"#,
            r#""Resource":"arn:aws:dynamodb:eu-west-1:123456789012:table/dynagate-items","#,
            r#""Condition":{"ForAllValues:StringEquals":"#,
            r#"{"dynamodb:LeadingKeys":["6f1c2a7e-9b1d-4c3e-8f00-0123456789ab"]}}}]}"#,
        );
        assert_eq!(policy, golden);
    }

    #[test]
    fn the_policy_for_the_longest_user_id_and_table_fits_the_sts_limit() {
        let longest_table = format!(
            "arn:aws-iso-b:dynamodb:ap-southeast-5:123456789012:table/{}",
            "t".repeat(255)
        );
        let table = TableArn::parse(&longest_table).unwrap();
        let longest_user = user(&"u".repeat(MAX_USER_ID_LEN));
        let policy = session_policy(&table, &longest_user);
        assert!(policy.len() < MAX_POLICY_LEN, "{} characters", policy.len());
        assert!(role_session_name(&longest_user).len() <= 64);
    }

    #[test]
    fn user_ids_sts_would_refuse_are_rejected() {
        assert!(StsUserId::new("u").is_none(), "too short");
        assert!(
            StsUserId::new(&"u".repeat(MAX_USER_ID_LEN + 1)).is_none(),
            "too long"
        );
        for bad in ["a b", "a\"b", "a/b", "a*b", "é-user", "a]b"] {
            assert!(StsUserId::new(bad).is_none(), "{bad:?}");
        }
        assert!(StsUserId::new("6f1c2a7e-9b1d-4c3e-8f00-0123456789ab").is_some());
    }

    #[test]
    fn table_arns_are_checked() {
        let table = TableArn::parse(TABLE).unwrap();
        assert_eq!(table.region(), "eu-west-1");
        assert_eq!(table.table_name(), "dynagate-items");
        for bad in [
            "dynagate-items",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/",
            "arn:aws:s3:eu-west-1:123456789012:table/items",
            "arn:aws:dynamodb:eu-west-1:1234:table/items",
            "arn:aws:dynamodb:eu-west-1:123456789012:table/items/index/by-date",
            "arn:aws:dynamodb::123456789012:table/items",
        ] {
            assert!(TableArn::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn every_valid_user_id_gets_a_policy_naming_only_that_id(id in "[A-Za-z0-9+=,.@_-]{2,55}") {
            let table = TableArn::parse(TABLE).unwrap();
            let user = user(&id);
            let policy: serde_json::Value = serde_json::from_str(&session_policy(&table, &user)).unwrap();
            let statement = &policy["Statement"][0];
            prop_assert_eq!(
                &statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"],
                &serde_json::json!([id])
            );
            prop_assert_eq!(&statement["Resource"], TABLE);
            prop_assert!(session_policy(&table, &user).len() < MAX_POLICY_LEN);
        }
    }
}

#[cfg(test)]
mod deploy_documents {
    //! The IAM documents shipped in deploy/iam must agree with the code.
    use super::ITEM_ACTIONS;
    use serde_json::Value;

    fn document(name: &str) -> Value {
        let path = format!("{}/../deploy/iam/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn strings(value: &Value) -> Vec<&str> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_role_policy_allows_exactly_the_item_actions_in_the_tagged_partition() {
        let policy = document("data-access-role-policy.json");
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1);
        let statement = &statements[0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(strings(&statement["Action"]), ITEM_ACTIONS);
        assert_eq!(
            strings(&statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:LeadingKeys"]),
            ["${aws:PrincipalTag/user_id}"]
        );
        assert_eq!(
            statement["Condition"]["Null"]["aws:PrincipalTag/user_id"],
            "false"
        );
    }

    #[test]
    fn the_trust_policy_lets_the_auth_service_assume_tag_and_set_source_identity() {
        let policy = document("data-access-role-trust-policy.json");
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(
            strings(&statement["Action"]),
            ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
        );
        assert!(
            statement["Principal"]["AWS"]
                .as_str()
                .unwrap()
                .ends_with(":role/dynagate-auth-service")
        );
        assert_eq!(
            strings(&statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]),
            ["user_id"]
        );
    }

    #[test]
    fn the_emergency_brakes_deny_everything_to_credentials_issued_before_the_moment() {
        for (name, one_user) in [
            ("revoke-older-credentials-policy.json", false),
            ("revoke-one-users-older-credentials-policy.json", true),
        ] {
            let policy = document(name);
            assert_eq!(policy["Version"], "2012-10-17", "{name}");
            let statements = policy["Statement"].as_array().unwrap();
            assert_eq!(statements.len(), 1, "{name}");
            let statement = &statements[0];
            assert_eq!(statement["Effect"], "Deny", "{name}");
            assert_eq!(statement["Action"], "*", "{name}");
            assert_eq!(statement["Resource"], "*", "{name}");
            let condition = statement["Condition"].as_object().unwrap();
            assert_eq!(
                condition["DateLessThan"]["aws:TokenIssueTime"], "ISSUED_BEFORE",
                "{name}"
            );
            let expected_keys = if one_user { 2 } else { 1 };
            assert_eq!(condition.len(), expected_keys, "{name}: {condition:?}");
            if one_user {
                assert_eq!(
                    condition["StringEquals"]["aws:SourceIdentity"], "USER_ID",
                    "matched on the source identity GetCredentials sets"
                );
            }
        }
    }

    #[test]
    fn the_auth_service_policy_can_assume_the_data_access_role() {
        let policy = document("auth-service-policy.json");
        let vend = &policy["Statement"][1];
        assert_eq!(
            strings(&vend["Action"]),
            ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
        );
        assert!(
            vend["Resource"]
                .as_str()
                .unwrap()
                .ends_with(":role/dynagate-data-access")
        );
    }
}
