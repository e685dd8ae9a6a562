//! Bad input, end to end through the running stage processes, with kubesim as the cluster (the
//! scenario and its checks: `bad_input_support`).

mod bad_input_support;
mod security_support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_fails_cleanly_and_good_ones_in_the_same_batch_complete()
-> anyhow::Result<()> {
    bad_input_support::run_scenario("vexxy-bad-input-", false).await
}

#[test]
fn the_catalogue_is_large_and_named_uniquely() {
    let cases = bad_input_support::catalogue();
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    // The oversized case is above vexxy's limit but below the broker's max_payload (1 MiB), so
    // it reaches vexxy and is rejected there.
    let oversized = cases
        .iter()
        .find(|c| c.name == "payload_over_vexxy_limit")
        .unwrap();
    assert!(
        oversized.body.len() > bad_input_support::MAX_REQUEST_BYTES
            && oversized.body.len() < 1024 * 1024
    );
}
