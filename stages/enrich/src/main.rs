#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(
        vexxy_events::Stage::Enrich,
        vexxy_enrich::RUNTIME_DEFAULTS,
        |_| vexxy_enrich::Enrich::from_env(),
    )
    .await
}
