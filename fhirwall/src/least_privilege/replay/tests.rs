//! Replay over records made the way the sidecar makes them (classify, decide, record), under
//! the example policies and edits of them.

use fhirwall_policy::Policy;

use super::{Direction, Replay};
use crate::{
    audit::Disposition,
    least_privilege::test_support::{CATEGORY, LAB, policy, recorded},
};

#[test]
fn a_candidate_shows_what_it_breaks_and_what_it_opens() {
    let (_d, current) = policy(|t| t);
    let lab_search = format!("GET /Observation?category={CATEGORY}");
    let records = [
        recorded(&current, 1, &lab_search),
        recorded(&current, 2, &lab_search),
        recorded(&current, 3, "GET /ServiceRequest/sr-1"),
        recorded(&current, 4, "GET /Condition?code=44054006"),
    ];
    assert_eq!(
        records[0].decision,
        Disposition::Allow,
        "{:?}",
        records[0].reason
    );
    assert_eq!(records[3].decision, Disposition::Deny);
    let replay = |policy: &Policy| {
        let mut replay = Replay::new(policy, 3);
        for r in &records {
            replay.record(r);
        }
        replay.finish()
    };

    // The policy in force changes nothing.
    let same = replay(&current);
    assert_eq!((same.replayed, same.unchanged), (4, 4));
    assert!(same.changes.is_empty() && !same.breaks_anything());

    // Without the granular laboratory search scope: both lab searches would break.
    let (_d, narrower) = policy(|t| {
        t.replace(
            &format!("  - system/Observation.rs?category={CATEGORY}\n"),
            "",
        )
    });
    let report = replay(&narrower);
    assert!(report.breaks_anything());
    let broken = &report.changes[0];
    assert_eq!(broken.direction, Direction::Breaks);
    assert_eq!((broken.integration.as_str(), broken.count), (LAB, 2));
    assert_eq!(broken.rule, format!("integration/{LAB}/scopes"));
    let ids: Vec<&str> = broken
        .examples
        .iter()
        .map(|e| e.correlation_id.as_str())
        .collect();
    assert_eq!(ids, ["corr-1", "corr-2"]);
    assert_eq!(report.unchanged, 2);

    // With Condition searches granted: the denied search would open.
    let (_d, wider) = policy(|t| {
        t.replace(
            "  - system/Patient.s\n",
            "  - system/Patient.s\n  - system/Condition.rs\n",
        )
        .replace("expected_resources: [", "expected_resources: [Condition, ")
    });
    let widened = replay(&wider);
    assert!(!widened.breaks_anything());
    assert_eq!(widened.changes.len(), 1);
    assert_eq!(widened.changes[0].direction, Direction::Opens);
    assert_eq!(widened.changes[0].examples[0].correlation_id, "corr-4");
    let text = widened.text();
    assert!(
        text.contains("DENY -> ALLOW") && text.contains("corr-4"),
        "{text}"
    );
    assert!(
        !text.contains("44054006"),
        "no request value in the report: {text}"
    );
}
