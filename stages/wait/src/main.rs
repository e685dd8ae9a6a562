#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(vexxy_events::Stage::Wait, |_| {
        vexxy_wait::WaitHandler::from_env()
    })
    .await
}
