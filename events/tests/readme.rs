//! The contract README stays true: its example JSON validates against the schemas, parses as
//! the Rust types, and its reason-code table lists every code with the right retryability.

use serde_json::Value;
use vexxy_events::{
    AnalysisCompleted, AnalysisFailed, CloudEvent, FailureReason, ValidationPolicy, parse_request,
    schemas,
};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// `(schema file, JSON text)` of every block preceded by `<!-- schema: FILE -->`.
fn examples(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .strip_prefix("<!-- schema: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```json"),
            "a JSON block must follow the marker for {file}"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        found.push((file.to_string(), body.join("\n")));
    }
    found
}

#[test]
fn readme_examples_validate_and_parse() {
    let text = readme();
    let examples = examples(&text);
    assert_eq!(
        examples.len(),
        4,
        "expected the request, CloudEvent request, completed and failed examples"
    );
    for (file, json) in examples {
        let instance: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("README example for {file} is not JSON: {e}"));
        let schema = schemas::all()
            .into_iter()
            .find(|(name, _)| *name == file)
            .unwrap_or_else(|| panic!("README names an unknown schema {file}"))
            .1;
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "README example for {file}: {errors:?}");
        match file.as_str() {
            schemas::REQUESTED | schemas::REQUESTED_CLOUD_EVENT => {
                parse_request(json.as_bytes(), Some("m"), &ValidationPolicy::default())
                    .unwrap_or_else(|r| panic!("README request example rejected: {r}"));
            }
            schemas::COMPLETED => {
                serde_json::from_value::<CloudEvent<AnalysisCompleted>>(instance).unwrap();
            }
            schemas::FAILED => {
                serde_json::from_value::<CloudEvent<AnalysisFailed>>(instance).unwrap();
            }
            other => panic!("no typed check for {other}"),
        }
    }
}

#[test]
fn readme_reason_table_lists_every_code_with_its_retryability() {
    let text = readme();
    for reason in FailureReason::ALL {
        let prefix = format!("| `{}` |", reason.as_str());
        let row = text
            .lines()
            .find(|line| line.starts_with(&prefix))
            .unwrap_or_else(|| panic!("README reason table has no row for {reason}"));
        let columns: Vec<&str> = row.split(" | ").map(str::trim).collect();
        let expected = if reason.default_retryable() {
            "yes"
        } else {
            "no"
        };
        assert_eq!(
            columns.get(2).copied(),
            Some(expected),
            "retryable column of {reason}: {row}"
        );
    }
}
