//! Numbers and sets: DynamoDB's number syntax, range and precision, and distinct, non-empty
//! set members (numbers compared by value).

use super::*;

#[test]
fn valid_numbers_are_accepted() {
    for n in [
        "0",
        "-0",
        "0.000",
        "000",
        "007",
        "1",
        "-1",
        "1.5",
        "-0.25",
        "1e5",
        "1E5",
        "1e+5",
        "1e-5",
        "1.0e0",
        "9.9999999999999999999999999999999999999E+125",
        "-9.9999999999999999999999999999999999999E+125",
        "1E-130",
        "-1E-130",
        "10E-131",
        "0.1E-129",
        "12345678901234567890123456789012345678",
        // 38 significant digits; trailing zeros are not significant.
        "1234567890123456789012345678901234567800000",
        "0.00000000000000000000000000000012345678901234567890123456789012345678",
        // Leading zeros are not significant either.
        "000000000000000000000000000000000000000000001",
        "0e9999",
        "0.0e-9999",
        "1e000000000000000000000000000000000000125",
    ] {
        accepts(number(n));
    }
}

#[test]
fn malformed_numbers_are_rejected() {
    for n in [
        "",
        "-",
        "+1",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        ".5",
        "5.",
        "-.5",
        "1e",
        "1e+",
        "1e-",
        "e5",
        "1.2.3",
        " 1",
        "1 ",
        "1_000",
        "0x10",
        "1,5",
        "١",
        "1e5.0",
        "--1",
        "1ee5",
    ] {
        let violation = only_violation(number(n));
        assert_eq!(violation.field, r#"attributes["x"].number_value"#, "{n:?}");
        assert!(
            violation.description.contains("must be a decimal number"),
            "{n:?}: {violation:?}"
        );
    }
}

#[test]
fn numbers_outside_dynamodbs_range_are_rejected() {
    for (n, expected) in [
        ("1e126", "too large"),
        ("-1e126", "too large"),
        ("10e125", "too large"),
        ("1e9999", "too large"),
        ("1E-131", "too small"),
        ("0.1E-130", "too small"),
        ("-0.9e-130", "too small"),
        ("1e-9999", "too small"),
        ("1e10000", "exponent beyond"),
        ("0e10000", "exponent beyond"),
        ("0e-10000", "exponent beyond"),
        ("1e99999999999999999999999999999", "exponent beyond"),
    ] {
        let violation = only_violation(number(n));
        assert!(
            violation.description.contains(expected),
            "{n}: {violation:?}"
        );
    }
}

#[test]
fn numbers_with_more_than_38_significant_digits_are_rejected() {
    for n in [
        "123456789012345678901234567890123456789",
        "1.00000000000000000000000000000000000001",
        "99999999999999999999999999999999999999.9",
    ] {
        let violation = only_violation(number(n));
        assert!(
            violation.description.contains("39 significant digits"),
            "{n}: {violation:?}"
        );
    }
}

#[test]
fn numbers_have_one_canonical_form_per_value() {
    let canonical = |n: &str| Decimal::parse(n).map(|d| d.to_string());
    assert_eq!(canonical("1"), Ok("1E0".to_owned()));
    assert_eq!(canonical("1.0"), Ok("1E0".to_owned()));
    assert_eq!(canonical("10E-1"), Ok("1E0".to_owned()));
    assert_eq!(canonical("0.0100"), Ok("1E-2".to_owned()));
    assert_eq!(canonical("-1500"), Ok("-1.5E3".to_owned()));
    assert_eq!(canonical("-0.000"), Ok("0".to_owned()));
    assert_eq!(canonical("0e5"), Ok("0".to_owned()));
    assert_eq!(Decimal::parse("-0"), Decimal::parse("0"));
    assert_ne!(Decimal::parse("1"), Decimal::parse("-1"));
    assert_ne!(Decimal::parse("1"), Decimal::parse("10"));
}

#[test]
fn number_sets_compare_members_as_numbers() {
    let found = violations(&[("ns", number_set(&["1", "1.0", "2", "10E-1"]))]);
    let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            r#"attributes["ns"].number_set[1]"#,
            r#"attributes["ns"].number_set[3]"#
        ]
    );
    assert!(found[0].description.contains("member [0]"), "{found:?}");
    assert!(found[0].description.contains("1E0"), "{found:?}");

    assert_eq!(
        violations(&[("z", number_set(&["0", "-0", "0.000"]))]).len(),
        2
    );
    assert_eq!(violations(&[("h", number_set(&["1e2", "100"]))]).len(), 1);
    accepts(number_set(&["1", "-1", "10", "0.1", "1.01"]));
}

#[test]
fn string_and_bytes_sets_must_have_distinct_members() {
    let violation = only_violation(string_set(&["a", "b", "a"]));
    assert_eq!(violation.field, r#"attributes["x"].string_set[2]"#);
    assert!(violation.description.contains("duplicates member [0]"));

    let violation = only_violation(bytes_set(&[b"\x01", b"\x01"]));
    assert_eq!(violation.field, r#"attributes["x"].bytes_set[1]"#);

    accepts(string_set(&["a", "A", "a "]));
    accepts(bytes_set(&[b"a", b"A"]));
}

#[test]
fn empty_sets_are_rejected() {
    for (value, field) in [
        (string_set(&[]), "string_set"),
        (number_set(&[]), "number_set"),
        (bytes_set(&[]), "bytes_set"),
    ] {
        let violation = only_violation(value);
        assert_eq!(violation.field, format!(r#"attributes["x"].{field}"#));
        assert!(violation.description.contains("at least one member"));
    }
}

#[test]
fn invalid_set_numbers_are_reported_at_their_index_and_nothing_else() {
    let found = violations(&[("ns", number_set(&["x", "NaN"]))]);
    let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            r#"attributes["ns"].number_set[0]"#,
            r#"attributes["ns"].number_set[1]"#
        ]
    );
}
