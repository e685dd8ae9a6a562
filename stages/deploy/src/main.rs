#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(
        vexxy_events::Stage::Deploy,
        vexxy_deploy::RUNTIME_DEFAULTS,
        |_| vexxy_deploy::Deploy::from_env(),
    )
    .await
}
