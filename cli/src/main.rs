use std::process::ExitCode;

use clap::Parser;
use vexxy_cli::cli::{Cli, Command};
use vexxy_cli::{CliError, apply, connection, jobs, output, results, submit, subscribe};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vexxy: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Apply(args) = &cli.command {
        return run_apply(args);
    }
    let config = connection::config(&cli.connection)?;
    if let Command::Submit(args) = &cli.command {
        // Validate before connecting: a mistake is reported even without a running vexxy.
        let body = submit::request_body(args)?;
        let msg_id = args.msg_id.clone().unwrap_or_else(submit::new_msg_id);
        let request = submit::validate(&body, &msg_id, &config.policy)?;
        let client = connection::nats(&config, cli.connection.connect_timeout).await?;
        let js = async_nats::jetstream::new(client);
        let duplicate = submit::publish(&js, body, &msg_id).await?;
        output::print(
            args.output,
            &serde_json::json!({
                "job_id": request.job_id,
                "msg_id": msg_id,
                "image": request.pinned_image(),
                "duplicate": duplicate,
            }),
            || vec![vec![request.job_id.clone()]],
        );
        if duplicate {
            eprintln!(
                "vexxy: JetStream already had a request with Nats-Msg-Id {msg_id}; no new job was started (job {})",
                request.job_id
            );
        }
        if args.wait {
            let bucket = connection::status_bucket(&js).await?;
            jobs::watch(&bucket, &request.job_id, args.timeout).await?;
        }
        return Ok(());
    }

    let client = connection::nats(&config, cli.connection.connect_timeout).await?;
    let js = async_nats::jetstream::new(client);
    match cli.command {
        Command::Status { job_id, output } => {
            let bucket = connection::status_bucket(&js).await?;
            jobs::print_status(&jobs::read(&bucket, &job_id).await?, output);
        }
        Command::Watch(args) => {
            let bucket = connection::status_bucket(&js).await?;
            jobs::watch(&bucket, &args.job_id, args.timeout).await?;
        }
        Command::List { limit, output } => {
            let bucket = connection::status_bucket(&js).await?;
            let list = jobs::list(&bucket, limit).await?;
            output::print(output, &list, || jobs::status_rows(&list));
        }
        Command::Results {
            job_id,
            out,
            output,
        } => {
            let bucket = connection::status_bucket(&js).await?;
            results::ensure_completed(&jobs::read(&bucket, &job_id).await?)?;
            let store = connection::store(&config)?;
            let dir = out.unwrap_or_else(|| std::path::PathBuf::from(&job_id));
            let downloaded = results::download(&store, &job_id, &dir).await?;
            output::print(output, &downloaded, || results::rows(&downloaded));
        }
        Command::Subscribe(args) => subscribe::run(&js, &args).await?,
        Command::Submit(_) | Command::Apply(_) => unreachable!("handled above"),
    }
    Ok(())
}

fn run_apply(args: &vexxy_cli::cli::ApplyArgs) -> Result<(), CliError> {
    let read = |path: &std::path::Path, what: &str| -> Result<serde_json::Value, CliError> {
        let text = std::fs::read(path).map_err(|e| {
            CliError::BadInput(format!("cannot read the {what} {}: {e}", path.display()))
        })?;
        serde_json::from_slice(&text).map_err(|e| {
            CliError::BadInput(format!("the {what} {} is not JSON: {e}", path.display()))
        })
    };
    let vex = apply::Vex::parse(&read(&args.vex, "VEX document")?)
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    let mut report = read(&args.report, "report")?;
    if apply::detect(&report) == Ok(apply::ReportFormat::Trivy) && !apply::scanned_an_image(&report)
    {
        eprintln!(
            "vexxy: this Trivy report is of a {} SBOM, not of an image: Trivy gives it no pkg:oci identity, \
             so statements about the image match nothing (as in Trivy). Scan the image itself \
             (trivy image IMAGE@sha256:...), or use the CycloneDX VEX with vexxy's SBOM: \
             trivy sbom sbom.cdx.json --vex vex.cdx.json",
            report["ArtifactType"].as_str().unwrap_or("non-image")
        );
    }
    let counts = apply::apply(&vex, &mut report, args.mark)
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("a JSON value serialises")
    );
    eprintln!(
        "vexxy: {} of {} findings suppressed by the VEX ({} not_affected, {} fixed){}",
        counts.suppressed(),
        counts.findings,
        counts.not_affected,
        counts.fixed,
        if args.mark {
            "; marked with vexxy_vex"
        } else {
            ""
        }
    );
    Ok(())
}
