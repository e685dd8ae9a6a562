#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(
        vexxy_events::Stage::Wait,
        vexxy_wait::RUNTIME_DEFAULTS,
        |_| vexxy_wait::WaitHandler::from_env(),
    )
    .await
}
