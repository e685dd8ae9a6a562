#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(vexxy_events::Stage::Enrich, |_| {
        vexxy_enrich::Enrich::from_env()
    })
    .await
}
