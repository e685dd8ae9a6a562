#[tokio::main]
async fn main() -> std::process::ExitCode {
    vexxy_runtime::run(vexxy_events::Stage::InstallCheck, |_| {
        vexxy_install_check::InstallCheck::from_env()
    })
    .await
}
