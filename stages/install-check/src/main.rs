#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(
        vexxy_events::Stage::InstallCheck,
        vexxy_install_check::RUNTIME_DEFAULTS,
        |_| vexxy_install_check::InstallCheck::from_env(),
    )
    .await
}
