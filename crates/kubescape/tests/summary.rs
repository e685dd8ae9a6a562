use serde_json::json;
use vexxy_kubescape::{ParseError, read_summary};

#[test]
fn summary_points_at_the_relevant_and_image_manifests() {
    // Shape per storage v1beta1 VulnerabilityManifestSummarySpec json tags.
    let object = json!({
        "apiVersion": "spdx.softwarecomposition.kubescape.io/v1beta1",
        "kind": "VulnerabilityManifestSummary",
        "metadata": {"name": "deployment-nginx-nginx", "namespace": "default"},
        "spec": {
            "severities": {"critical": {"all": 1, "relevant": 1}, "high": {"all": 2}},
            "vulnerabilitiesRef": {
                "all": {"namespace": "default", "name": "docker.io-library-nginx-1.14.2-0c1a2b", "kind": "vulnerabilitymanifest"},
                "relevant": {"namespace": "default", "name": "replicaset-nginx-7c5ddbdf54-nginx-1234-abcd", "kind": "vulnerabilitymanifest"}
            }
        }
    });
    let s = read_summary(&object).unwrap();
    assert_eq!(
        s.relevant.unwrap().name,
        "replicaset-nginx-7c5ddbdf54-nginx-1234-abcd"
    );
    assert_eq!(s.all.unwrap().name, "docker.io-library-nginx-1.14.2-0c1a2b");
    assert_eq!(s.severities.critical.relevant, 1);
    assert_eq!(s.severities.high.all, 2);
    assert_eq!(
        s.severities.high.relevant, 0,
        "omitempty relevant reads as 0"
    );

    // kubevuln#325: a summary with empty refs ("--") reads as no refs rather than empty names.
    let empty = json!({"kind": "VulnerabilityManifestSummary", "metadata": {"name": "--"},
                       "spec": {"severities": {"low": {"all": 1}}, "vulnerabilitiesRef": {"all": {"name": ""}, "relevant": {"name": ""}}}});
    let s = read_summary(&empty).unwrap();
    assert!(s.relevant.is_none() && s.all.is_none());
    // With nothing else in it, it is indistinguishable from the storage server's metadata-only
    // view (every count 0, every name ""), which carries no spec.
    let nothing = json!({"kind": "VulnerabilityManifestSummary", "metadata": {"name": "--"},
                         "spec": {"severities": {}, "vulnerabilitiesRef": {"all": {"name": ""}, "relevant": {"name": ""}}}});
    assert!(matches!(
        read_summary(&nothing).unwrap_err(),
        ParseError::SpecMissing { .. }
    ));

    let bad = json!({"kind": "VulnerabilityManifestSummary", "metadata": {"name": "x"},
                     "spec": {"severities": {"critical": {"all": "many"}}}});
    match read_summary(&bad).unwrap_err() {
        ParseError::InvalidField { path, .. } => assert_eq!(path, "spec.severities.critical.all"),
        other => panic!("unexpected {other}"),
    }
}
