fn main() -> std::process::ExitCode {
    vexxy_wait::default_in_flight_for_waiting();
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    runtime.block_on(vexxy_runtime::run(vexxy_events::Stage::Wait, |_| {
        vexxy_wait::WaitHandler::from_env()
    }))
}
