//! `cargo xtask lint`: the gate every change passes: `cargo fmt --check` and clippy with warnings
//! as errors over every crate and target. `.ci/run` runs it beside the tests.

use crate::paths::Paths;
use crate::test::step;

pub fn run(paths: &Paths) -> anyhow::Result<bool> {
    let format = step(paths, &[], "check formatting", &["fmt", "--all", "--check"])?;
    let clippy = step(
        paths,
        &[],
        "lint every crate and target",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let verdict = |passed: bool, fix: &str| {
        if passed {
            "passed".to_string()
        } else {
            format!("FAILED ({fix})")
        }
    };
    println!(
        "\nxtask lint: formatting {}, clippy {}",
        verdict(format.success(), "run `cargo fmt --all`"),
        verdict(clippy.success(), "fix the warnings above")
    );
    Ok(format.success() && clippy.success())
}
