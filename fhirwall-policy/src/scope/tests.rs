use super::*;

fn scope(text: &str) -> Result<Scope, String> {
    Scope::try_from(text.to_owned())
}

#[test]
fn v1_and_v2_parse_into_the_same_form() {
    // (scope, context, type, perms as canonical letters)
    let table: &[(&str, ScopeContext, Option<ResourceType>, &str)] = &[
        (
            "system/Observation.rs",
            ScopeContext::System,
            Some(ResourceType::Observation),
            "rs",
        ),
        (
            "system/Observation.read",
            ScopeContext::System,
            Some(ResourceType::Observation),
            "rs",
        ),
        ("patient/*.cruds", ScopeContext::Patient, None, "cruds"),
        ("patient/*.*", ScopeContext::Patient, None, "cruds"),
        (
            "user/Claim.write",
            ScopeContext::User,
            Some(ResourceType::Claim),
            "cud",
        ),
        (
            "user/Claim.cud",
            ScopeContext::User,
            Some(ResourceType::Claim),
            "cud",
        ),
        (
            "system/Binary.r",
            ScopeContext::System,
            Some(ResourceType::Binary),
            "r",
        ),
        (
            "system/Coverage.s",
            ScopeContext::System,
            Some(ResourceType::Coverage),
            "s",
        ),
    ];
    for (text, context, resource_type, perms) in table {
        let parsed = scope(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed.context, *context, "{text}");
        assert_eq!(parsed.resource_type, *resource_type, "{text}");
        assert_eq!(parsed.perms.to_string(), *perms, "{text}");
        assert!(parsed.params.is_empty(), "{text}");
        assert_eq!(parsed.to_string(), *text, "kept as written");
    }
}

#[test]
fn granular_parameters_are_kept_literally() {
    let parsed = scope(
        "system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&status=final",
    )
    .expect("valid granular scope");
    assert_eq!(
        parsed.params,
        vec![
            ScopeParam {
                name: "category".into(),
                value: "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
                    .into()
            },
            ScopeParam {
                name: "status".into(),
                value: "final".into()
            }
        ]
    );
    assert!(parsed.is_granular());
    assert!(parsed.covers(ResourceType::Observation));
    assert!(!parsed.covers(ResourceType::Condition));
}

#[test]
fn malformed_scopes_are_refused_with_the_reason() {
    // (scope, words the message must contain)
    let table: &[(&str, &str)] = &[
        ("openid", "launch and identity scopes"),
        ("launch/patient", "not patient, user or system"),
        ("system/observation.rs", "case-sensitive"),
        ("system/Observation", "no .permissions"),
        ("system/Observation.sr", "in that order"),
        ("system/Observation.rr", "in that order"),
        ("system/Observation.x", "letters of cruds"),
        ("system/Observation.", "no permissions"),
        ("system/Observation.READ", "letters of cruds"),
        ("System/Observation.rs", "not patient, user or system"),
        ("system/Observation.read?category=x", "need v2 permissions"),
        ("system/*.rs?category=x", "need a resource type"),
        (
            "system/Observation.cus?category=x",
            "cannot be checked on c, u or d",
        ),
        ("system/Observation.r?category=x", "add s"),
        ("system/Observation.rs?category", "not name=value"),
        ("system/Observation.rs?category=", "one literal value"),
        ("system/Observation.rs?category=a,b", "one literal value"),
        ("system/Observation.rs?category=a%7Cb", "one literal value"),
        ("system/Observation.rs?category:not=a", "no modifiers"),
        ("system/Observation.rs?category=a&category=b", "repeated"),
        ("system/Observation.rs?", "not name=value"),
    ];
    for (text, words) in table {
        let err = scope(text).expect_err(text);
        assert!(err.contains(words), "{text}: {err}");
    }
}

#[test]
fn perms_display_in_canonical_order() {
    let perms = Perms::NONE.with(Perm::Search).with(Perm::Create);
    assert_eq!(perms.to_string(), "cs");
    assert!(perms.contains(Perm::Search) && !perms.contains(Perm::Read));
    assert_eq!(Perms::WRITE.union(Perms::READ_SEARCH), Perms::ALL);
}
