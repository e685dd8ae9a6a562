#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(
        vexxy_events::Stage::Extract,
        vexxy_extract::RUNTIME_DEFAULTS,
        |_config| vexxy_extract::Extract::from_env(),
    )
    .await
}
