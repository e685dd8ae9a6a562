//! Executed docs: every `nats` command of README.md and events/README.md, and the Python
//! (nats-py) and Go (nats.go) client examples of events/README.md, run as written against a live
//! stack, so the docs cannot rot.
//!
//! The commands and programs are read from the markdown files: an edit to the docs is what gets
//! tested. The one substitution is the server: the docs say `"$NATS_URL"`, and the test puts
//! `NATS_URL` in the environment as `source .vexxy/env` does for a user of the local stack (that
//! line stays required where the docs have it; `sh` has no `source`, and the test's stack is not
//! the one `.vexxy/env` names). Every `nats` command runs with `sh -c` and the real nats CLI
//! (natscli from `cargo xtask setup`, `.tools/bin/nats`, or `$VEXXY_NATS_CLI`); the Python example
//! runs with the nats-py setup installs (`.tools/nats-py`, or `$VEXXY_DOCS_PYTHON`), the Go one
//! with `go run` in a copy of `tests/docs/go/` (nats.go pinned by its go.mod and go.sum,
//! `-mod=readonly`). A missing tool fails the test, naming `cargo xtask setup`.
//!
//! What is checked is what the docs say each step does:
//!
//! * `nats consumer add`: a new durable pull consumer on the public stream, filtered to the
//!   outcomes (completed + failed), explicit acks;
//! * `nats pub --jetstream`: a PubAck from the public stream for a request with a `Nats-Msg-Id`;
//!   the same command again is acknowledged as a duplicate and stores nothing (a later publish
//!   with an id already used must be a duplicate too);
//! * `nats kv watch vexxy-jobs` (it never ends by itself: stopped once it showed the outcome):
//!   the job record of every request published so far, up to `completed`;
//! * `nats consumer next`: the completed event of a request the commands published, with its
//!   `Vexxy-Request-Msg-Id` and `Vexxy-Job-Id` headers;
//! * the Python and Go examples: each publishes one new request, exits by itself once its job
//!   completed, and prints the job id, its `Nats-Msg-Id` and the OpenVEX URL of the job record.
//!
//! The stack is the bad-input and security suites' (`security_support`: nats-server, s3s-fs,
//! kubesim with Kubescape installed, the five stages) with the local stack's policy (analysis
//! windows down to `LOCAL_MIN_ANALYSIS_SECONDS`); kubesim's alpine fixture image is the one the
//! docs use.

mod security_support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream::{self, consumer::AckPolicy};
use futures::TryStreamExt;
use vexxy_events::{AnalysisOutcome, JobState, JobStatus, derive_job_id, subjects};
use vexxy_harness::stack::LOCAL_MIN_ANALYSIS_SECONDS;
use vexxy_harness::{ChildProcess, find_binary, workspace_root};

use security_support::{StackOptions, TestStack};

const README: &str = "README.md";
const EVENTS_README: &str = "events/README.md";
/// The line of a command block that gives the shell the local stack's settings.
const ENV_LINE: &str = "source .vexxy/env";
/// Where `cargo xtask setup` puts the virtual environment with nats-py, and the variable that
/// may point at another Python that has it.
const NATS_PY_VENV: &str = ".tools/nats-py";
const PYTHON_ENV: &str = "VEXXY_DOCS_PYTHON";
/// The Go module the Go example is run in (its go.mod and go.sum pin nats.go).
const GO_MODULE: &str = "tests/docs/go";

/// A one-shot `nats` command (the CLI's own timeout is 5 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// From a request to its outcome: a 5 s window and a few seconds of stages when idle.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// A cold build of nats.go on a busy 2-core machine (the go build cache makes later ones quick).
const GO_BUILD_TIMEOUT: Duration = Duration::from_secs(240);

// ---------------------------------------------------------------------------------------------
// What the docs hold

/// A fenced code block.
struct Block {
    /// The line of the opening fence (1-based).
    line: usize,
    lang: String,
    body: String,
}

fn blocks(file: &'static str) -> Result<Vec<Block>> {
    let path = workspace_root().join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, line)| line)
            .take_while(|line| line.trim_end() != "```")
            .collect();
        found.push(Block {
            line: index + 1,
            lang: lang.trim().to_string(),
            body: body.join("\n") + "\n",
        });
    }
    Ok(found)
}

/// What a documented command does, so the test knows what to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// `source .vexxy/env`: the test sets `NATS_URL` itself.
    Env,
    ConsumerAdd,
    Publish,
    KvWatch,
    ConsumerNext,
}

/// One shell command of the docs, as written (continuation lines included).
struct Step {
    file: &'static str,
    line: usize,
    text: String,
    kind: Kind,
}

impl Step {
    fn place(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// The commands of a block: comment and blank lines dropped, `\`-continued lines kept together.
fn commands(block: &Block) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (offset, line) in block.body.lines().enumerate() {
        let number = block.line + 1 + offset;
        let (start, text) = match open.take() {
            Some((start, mut text)) => {
                text.push('\n');
                text.push_str(line);
                (start, text)
            }
            None => {
                let trimmed = line.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                (number, line.to_string())
            }
        };
        if line.trim_end().ends_with('\\') {
            open = Some((start, text));
        } else {
            found.push((start, text));
        }
    }
    found.extend(open);
    found
}

/// The `nats` subcommand of a command line, after the global `--server`/`-s` option.
fn kind_of(text: &str) -> Option<Kind> {
    let joined = text.replace("\\\n", " ");
    let words: Vec<&str> = joined.split_whitespace().collect();
    if words.first() != Some(&"nats") {
        return None;
    }
    let mut at = 1;
    while let Some(word) = words.get(at).filter(|word| word.starts_with('-')) {
        at += if *word == "--server" || *word == "-s" {
            2
        } else {
            1
        };
    }
    match (words.get(at).copied(), words.get(at + 1).copied()) {
        (Some("consumer"), Some("add")) => Some(Kind::ConsumerAdd),
        (Some("pub" | "publish"), _) => Some(Kind::Publish),
        (Some("kv"), Some("watch")) => Some(Kind::KvWatch),
        (Some("consumer"), Some("next")) => Some(Kind::ConsumerNext),
        _ => None,
    }
}

/// Every `nats` command of both files in document order, with the environment lines of the
/// blocks they are in. A block with a `nats` command holds nothing the test cannot check.
fn nats_steps() -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for file in [README, EVENTS_README] {
        for block in blocks(file)? {
            if !matches!(block.lang.as_str(), "sh" | "shell" | "bash" | "console") {
                continue;
            }
            let commands = commands(&block);
            if !commands.iter().any(|(_, text)| text.starts_with("nats ")) {
                continue;
            }
            for (line, text) in commands {
                let kind = if text.trim() == ENV_LINE {
                    Kind::Env
                } else {
                    kind_of(&text).with_context(|| {
                        format!(
                            "{file}:{line}: `{text}` is in a block of nats commands, and the \
                             executed-docs test (tests/system/tests/docs.rs) has no check for it: \
                             add one"
                        )
                    })?
                };
                steps.push(Step {
                    file,
                    line,
                    text,
                    kind,
                });
            }
        }
    }
    Ok(steps)
}

/// The one block of `lang` in `file`.
fn example(file: &'static str, lang: &str) -> Result<Block> {
    let mut found: Vec<Block> = blocks(file)?
        .into_iter()
        .filter(|block| block.lang == lang)
        .collect();
    ensure!(
        found.len() == 1,
        "{file} has {} `{lang}` blocks; the executed-docs test runs exactly one",
        found.len()
    );
    Ok(found.remove(0))
}

#[test]
fn the_docs_hold_the_commands_and_examples_the_live_test_runs() -> Result<()> {
    let steps = nats_steps()?;
    let kinds: BTreeSet<Kind> = steps.iter().map(|step| step.kind).collect();
    for kind in [
        Kind::Env,
        Kind::ConsumerAdd,
        Kind::Publish,
        Kind::KvWatch,
        Kind::ConsumerNext,
    ] {
        ensure!(kinds.contains(&kind), "no {kind:?} step in the docs");
    }
    // The publish of README.md's walk-through comes before its watch and its read.
    let position = |kind| steps.iter().position(|step| step.kind == kind);
    ensure!(
        position(Kind::ConsumerAdd) < position(Kind::Publish)
            && position(Kind::Publish) < position(Kind::KvWatch)
            && position(Kind::KvWatch) < position(Kind::ConsumerNext),
        "README.md's walk-through: consumer add, pub, kv watch, consumer next, in that order"
    );
    for (lang, reads) in [("python", "os.environ"), ("go", "os.Getenv")] {
        let block = example(EVENTS_README, lang)?;
        ensure!(
            block.body.contains("NATS_URL") && block.body.contains(reads),
            "the {lang} example must read NATS_URL from the environment"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tools

struct Tools {
    nats: PathBuf,
    python: PathBuf,
    go: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools> {
        let nats = find_binary("VEXXY_NATS_CLI", "nats")
            .context("the nats CLI runs the documented commands")?;
        let python = match std::env::var_os(PYTHON_ENV) {
            Some(path) => PathBuf::from(path),
            None => workspace_root().join(NATS_PY_VENV).join("bin/python3"),
        };
        let imports = Command::new(&python)
            .args(["-c", "import nats"])
            .output()
            .ok()
            .filter(|output| output.status.success());
        ensure!(
            imports.is_some(),
            "no Python with nats-py at {} (${PYTHON_ENV} names another); run `cargo xtask setup`, \
             which installs nats-py into {NATS_PY_VENV}",
            python.display()
        );
        let go = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("go"))
                    .find(|candidate| candidate.is_file())
            })
            .context(
                "the go command is not on PATH; the Go example runs with `go run` (Go 1.26, as \
                 for the real control plane tier: `cargo xtask setup` says how to get it)",
            )?;
        Ok(Tools { nats, python, go })
    }
}

// ---------------------------------------------------------------------------------------------
// Running things

/// Runs commands the way a user would in a shell with `.vexxy/env` sourced: `NATS_URL` set, the
/// nats CLI on PATH, no other NATS settings or nats CLI contexts.
struct Runner {
    dir: PathBuf,
    bin: PathBuf,
    nats_url: String,
    count: usize,
}

/// A finished command: how it exited and everything it printed (stdout and stderr).
struct Ran {
    status: ExitStatus,
    output: String,
}

impl Runner {
    fn new(dir: &Path, nats: &Path, nats_url: String) -> Result<Runner> {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::create_dir_all(dir.join("config"))?;
        std::os::unix::fs::symlink(nats, bin.join("nats"))
            .context("cannot link the nats CLI into the test's PATH")?;
        Ok(Runner {
            dir: dir.to_path_buf(),
            bin,
            nats_url,
            count: 0,
        })
    }

    /// `program` in `dir` with the user's environment, in its own process group.
    fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("NATS_") {
                command.env_remove(name);
            }
        }
        let mut path = vec![self.bin.clone()];
        if let Some(inherited) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&inherited));
        }
        command
            .current_dir(dir)
            .env("NATS_URL", &self.nats_url)
            .env("PATH", std::env::join_paths(path).expect("PATH entries"))
            // The nats CLI reads its contexts from here: none.
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .process_group(0);
        command
    }

    fn spawn(&mut self, name: &str, command: Command) -> Result<ChildProcess> {
        self.count += 1;
        let log = self.dir.join(format!("{:02}-{name}.log", self.count));
        ChildProcess::spawn(name, command, &log)
    }

    fn spawn_sh(&mut self, name: &str, script: &str) -> Result<ChildProcess> {
        let mut command = self.command(Path::new("sh"), &self.dir);
        command.arg("-c").arg(script);
        self.spawn(name, command)
    }

    /// Runs `command` to its end, killing it after `timeout`.
    fn run(&mut self, name: &str, command: Command, timeout: Duration) -> Result<Ran> {
        let mut process = self.spawn(name, command)?;
        let status = tokio::task::block_in_place(|| process.wait_timeout(timeout))?;
        let Some(status) = status else {
            stop(&mut process);
            bail!(
                "{name} did not finish within {timeout:?}; it printed:\n{}",
                process.logs()
            );
        };
        Ok(Ran {
            status,
            output: process.logs(),
        })
    }

    fn run_sh(&mut self, name: &str, script: &str) -> Result<Ran> {
        let mut command = self.command(Path::new("sh"), &self.dir);
        command.arg("-c").arg(script);
        self.run(name, command, COMMAND_TIMEOUT)
    }
}

/// Kills a process started by [`Runner`] with everything it started (its process group).
fn stop(process: &mut ChildProcess) {
    if !process.is_running() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(process.pid()) {
        // SAFETY: kill(2) has no memory-safety preconditions; the group is our unreaped child's.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = process.kill();
}

fn succeeded(step: &Step, ran: &Ran) -> Result<()> {
    ensure!(
        ran.status.success(),
        "{}: `{}` exited with {}; it printed:\n{}",
        step.place(),
        step.text,
        ran.status,
        ran.output
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading what the nats CLI printed

/// `(stream, sequence, duplicate)` from `nats pub --jetstream`'s
/// `Stored in Stream: S Sequence: 5 Duplicate: true`.
fn pub_ack(output: &str) -> Option<(String, u64, bool)> {
    let line = output
        .lines()
        .find(|line| line.contains("Stored in Stream: "))?;
    let words: Vec<&str> = line
        .split_once("Stored in Stream: ")?
        .1
        .split_whitespace()
        .collect();
    let stream = words.first()?.to_string();
    let sequence = words
        .iter()
        .position(|word| *word == "Sequence:")
        .and_then(|at| words.get(at + 1))?
        .parse()
        .ok()?;
    let duplicate = words
        .iter()
        .position(|word| *word == "Duplicate:")
        .and_then(|at| words.get(at + 1))
        .is_some_and(|value| *value == "true");
    Some((stream, sequence, duplicate))
}

/// The records `nats kv watch` printed (`[time] PUT bucket > key: value`), the last per key.
fn watched_records(output: &str) -> BTreeMap<String, String> {
    let mut records = BTreeMap::new();
    for line in output.lines() {
        let Some((_, rest)) = line.split_once("] PUT ") else {
            continue;
        };
        let Some((bucket, rest)) = rest.split_once(" > ") else {
            continue;
        };
        if bucket != subjects::STATUS_BUCKET {
            continue;
        }
        if let Some((key, value)) = rest.split_once(": ") {
            records.insert(key.to_string(), value.to_string());
        }
    }
    records
}

/// The headers and the body of the message `nats consumer next` printed.
fn next_message(output: &str) -> Option<(BTreeMap<String, String>, String)> {
    let (head, rest) = output.split_once("\nData:\n")?;
    let headers = head
        .split_once("\nHeaders:\n")
        .map(|(_, headers)| {
            headers
                .lines()
                .filter_map(|line| line.trim().split_once(": "))
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let body = rest
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with('{'))?
        .to_string();
    Some((headers, body))
}

// ---------------------------------------------------------------------------------------------
// The live run

/// The test's view of the stack while it runs the docs.
struct Run<'a> {
    js: jetstream::Context,
    kv: jetstream::kv::Store,
    runner: &'a mut Runner,
    /// Requests the documented commands published: `Nats-Msg-Id` → job id.
    published: BTreeMap<String, String>,
    /// Jobs whose completed record the kv watch showed.
    watched: BTreeSet<String>,
    /// Jobs whose completed event a documented command read.
    read: BTreeSet<String>,
}

impl Run<'_> {
    async fn step(&mut self, step: &Step) -> Result<()> {
        match step.kind {
            Kind::Env => Ok(()),
            Kind::ConsumerAdd => self.consumer_add(step).await,
            Kind::Publish => self.publish(step).await,
            Kind::KvWatch => self.kv_watch(step).await,
            Kind::ConsumerNext => self.consumer_next(step).await,
        }
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream> {
        self.js
            .get_stream(subjects::PUBLIC_STREAM)
            .await
            .context("the stages provision the public stream at start")
    }

    async fn consumer_names(&self) -> Result<BTreeSet<String>> {
        let names: Vec<String> = self.stream().await?.consumer_names().try_collect().await?;
        Ok(names.into_iter().collect())
    }

    async fn consumer_add(&mut self, step: &Step) -> Result<()> {
        let before = self.consumer_names().await?;
        let ran = self.runner.run_sh("consumer-add", &step.text)?;
        succeeded(step, &ran)?;
        let added: Vec<String> = self
            .consumer_names()
            .await?
            .difference(&before)
            .cloned()
            .collect();
        ensure!(
            added.len() == 1,
            "{}: expected one new consumer on {}, found {added:?}",
            step.place(),
            subjects::PUBLIC_STREAM
        );
        let info = self.stream().await?.consumer_info(&added[0]).await?;
        let config = &info.config;
        let mut filters: BTreeSet<&str> =
            config.filter_subjects.iter().map(String::as_str).collect();
        if !config.filter_subject.is_empty() {
            filters.insert(&config.filter_subject);
        }
        let outcomes = BTreeSet::from([subjects::COMPLETED, subjects::FAILED]);
        ensure!(
            config.durable_name.as_deref() == Some(added[0].as_str())
                && config.deliver_subject.is_none()
                && config.ack_policy == AckPolicy::Explicit
                && filters == outcomes,
            "{}: the consumer should be a durable pull consumer of the outcomes ({outcomes:?}) \
             with explicit acks; it is {config:#?}",
            step.place()
        );
        Ok(())
    }

    async fn publish(&mut self, step: &Step) -> Result<()> {
        let ran = self.runner.run_sh("pub", &step.text)?;
        succeeded(step, &ran)?;
        let (stream, sequence, duplicate) = pub_ack(&ran.output).with_context(|| {
            format!(
                "{}: no PubAck (`Stored in Stream: ...`) in what it printed:\n{}",
                step.place(),
                ran.output
            )
        })?;
        ensure!(
            stream == subjects::PUBLIC_STREAM,
            "{}: stored in {stream}, not {}",
            step.place(),
            subjects::PUBLIC_STREAM
        );
        let stored = self
            .stream()
            .await?
            .get_raw_message(sequence)
            .await
            .with_context(|| format!("{}: no message at sequence {sequence}", step.place()))?;
        ensure!(
            stored.subject.as_str() == subjects::REQUESTED,
            "{}: the message at {sequence} is on {}",
            step.place(),
            stored.subject
        );
        let msg_id = stored
            .headers
            .get("Nats-Msg-Id")
            .map(|value| value.as_str().to_string())
            .with_context(|| format!("{}: the request has no Nats-Msg-Id", step.place()))?;
        if duplicate {
            ensure!(
                self.published.contains_key(&msg_id),
                "{}: taken for a duplicate of {msg_id}, which no documented command published",
                step.place()
            );
            return Ok(());
        }
        ensure!(
            !self.published.contains_key(&msg_id),
            "{}: a second publish with Nats-Msg-Id {msg_id} was stored again instead of dropped",
            step.place()
        );
        let job = derive_job_id(&stored.payload, Some(&msg_id));
        eprintln!(
            "docs: {} published {msg_id} (job {job}) at sequence {sequence}",
            step.place()
        );
        self.published.insert(msg_id.clone(), job);
        // "Nats-Msg-Id makes a retry of the same publish a no-op": retry it.
        let retry = self.runner.run_sh("pub-again", &step.text)?;
        succeeded(step, &retry)?;
        ensure!(
            pub_ack(&retry.output) == Some((stream, sequence, true)),
            "{}: the same publish again should be acknowledged as a duplicate of sequence \
             {sequence}; it printed:\n{}",
            step.place(),
            retry.output
        );
        Ok(())
    }

    async fn kv_watch(&mut self, step: &Step) -> Result<()> {
        ensure!(
            !self.published.is_empty(),
            "{}: a watch before any request: it would show nothing of the docs' job",
            step.place()
        );
        let mut process = self.runner.spawn_sh("kv-watch", &step.text)?;
        let result = self.watch_until_done(step, &mut process).await;
        stop(&mut process);
        result
    }

    async fn watch_until_done(&mut self, step: &Step, process: &mut ChildProcess) -> Result<()> {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let records = watched_records(&process.logs());
            for job in self.published.values() {
                let Some(value) = records.get(job) else {
                    continue;
                };
                let record: JobStatus = serde_json::from_str(value).with_context(|| {
                    format!(
                        "{}: the record of {job} is not a job status: {value}",
                        step.place()
                    )
                })?;
                match record.state {
                    JobState::Completed => {
                        self.watched.insert(job.clone());
                    }
                    JobState::Failed => {
                        bail!("{}: job {job} failed: {:?}", step.place(), record.error)
                    }
                    JobState::Running => {}
                }
            }
            if self
                .published
                .values()
                .all(|job| self.watched.contains(job))
            {
                return Ok(());
            }
            if let Some(status) = process.try_wait()? {
                bail!(
                    "{}: `{}` ended ({status}) before showing every job completed; it printed:\n{}",
                    step.place(),
                    step.text,
                    process.logs()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: the watch showed no completed record for every job of {:?} within \
                     {JOB_TIMEOUT:?}; it printed:\n{}",
                    step.place(),
                    self.published,
                    process.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn consumer_next(&mut self, step: &Step) -> Result<()> {
        let ran = self.runner.run_sh("consumer-next", &step.text)?;
        succeeded(step, &ran)?;
        let (headers, body) = next_message(&ran.output).with_context(|| {
            format!(
                "{}: no message in what it printed:\n{}",
                step.place(),
                ran.output
            )
        })?;
        let received = AnalysisOutcome::from_slice(body.as_bytes())
            .with_context(|| format!("{}: not an outcome event: {body}", step.place()))?;
        let AnalysisOutcome::Completed(completed) = &received.outcome else {
            bail!("{}: expected a completed event, read {body}", step.place());
        };
        let msg_id = completed.request_msg_id.clone().unwrap_or_default();
        let job = self.published.get(&msg_id).with_context(|| {
            format!(
                "{}: the completed event answers {msg_id:?}, not a request of {:?}",
                step.place(),
                self.published
            )
        })?;
        ensure!(
            received.job_id.as_ref() == Some(job)
                && headers.get(subjects::HEADER_JOB_ID) == Some(job)
                && headers.get(subjects::HEADER_REQUEST_MSG_ID) == Some(&msg_id),
            "{}: the completed event of {msg_id} should name job {job} in its subject and \
             headers; headers {headers:?}, event {body}",
            step.place()
        );
        self.read.insert(job.clone());
        Ok(())
    }

    /// `Nats-Msg-Id` → how many requests with it the public stream holds.
    async fn requests(&self) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for message in security_support::all_messages(&self.js, subjects::PUBLIC_STREAM).await? {
            if message.subject == subjects::REQUESTED {
                let id = message.headers.get("Nats-Msg-Id").cloned();
                *counts.entry(id.unwrap_or_default()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    async fn job_record(&self, job: &str) -> Result<Option<JobStatus>> {
        match self.kv.get(job).await? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Runs a client example and checks it published one request, stopped by itself once the
    /// job completed, and printed the job, its `Nats-Msg-Id` and its OpenVEX URL.
    async fn example(&mut self, name: &str, command: Command, timeout: Duration) -> Result<()> {
        let before = self.requests().await?;
        let started = Instant::now();
        let ran = self.runner.run(name, command, timeout)?;
        ensure!(
            ran.status.success(),
            "the {name} example exited with {}; it printed:\n{}",
            ran.status,
            ran.output
        );
        let after = self.requests().await?;
        let new: Vec<&String> = after
            .keys()
            .filter(|id| !before.contains_key(*id))
            .collect();
        ensure!(
            new.len() == 1 && after[new[0]] == 1,
            "the {name} example should publish one request with a Nats-Msg-Id of its own; new \
             ones: {new:?}"
        );
        let msg_id = new[0];
        let job = derive_job_id(&[], Some(msg_id));
        let record = self
            .job_record(&job)
            .await?
            .with_context(|| format!("no record of job {job} ({name} example's {msg_id})"))?;
        ensure!(
            record.state == JobState::Completed,
            "the {name} example stopped, and its job {job} is {:?}: {:?}",
            record.state,
            record.error
        );
        let openvex = record.result.unwrap_or_default();
        for (what, value) in [
            ("job id", job.as_str()),
            ("Nats-Msg-Id", msg_id.as_str()),
            ("OpenVEX URL", openvex.as_str()),
        ] {
            ensure!(
                !value.is_empty() && ran.output.contains(value),
                "the {name} example should print the completed event's {what} {value:?}; it \
                 printed:\n{}",
                ran.output
            );
        }
        eprintln!(
            "docs: the {name} example ({msg_id}, job {job}) completed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_nats_command_and_client_example_runs_against_a_live_stack() -> Result<()>
{
    let started = Instant::now();
    let tools = Tools::find()?;
    let steps = nats_steps()?;
    let python_example = example(EVENTS_README, "python")?;
    let go_example = example(EVENTS_README, "go")?;
    let version = Command::new(&tools.nats).arg("--version").output()?;
    eprintln!(
        "docs: nats CLI {} ({}), {} commands, Python {}, go {}",
        String::from_utf8_lossy(&version.stdout).trim(),
        tools.nats.display(),
        steps.len(),
        tools.python.display(),
        tools.go.display()
    );

    let dir = tempfile::Builder::new()
        .prefix("vexxy-docs-")
        .tempdir()
        .context("cannot create the test directory")?;
    let python_script = dir.path().join("example.py");
    std::fs::write(&python_script, &python_example.body)?;
    let go_dir = dir.path().join("go");
    std::fs::create_dir_all(&go_dir)?;
    for file in ["go.mod", "go.sum"] {
        std::fs::copy(
            workspace_root().join(GO_MODULE).join(file),
            go_dir.join(file),
        )
        .with_context(|| format!("cannot copy {GO_MODULE}/{file}"))?;
    }
    std::fs::write(go_dir.join("main.go"), &go_example.body)?;

    let mut stack = TestStack::start(
        "vexxy-docs-stack-",
        StackOptions {
            stage_env: vec![(
                "VEXXY_MIN_ANALYSIS_DURATION".into(),
                LOCAL_MIN_ANALYSIS_SECONDS.to_string(),
            )],
            ..StackOptions::default()
        },
        async_nats::ConnectOptions::new(),
    )
    .await?;
    eprintln!(
        "docs: stack ready at {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut runner = Runner::new(dir.path(), &tools.nats, stack.nats.url())?;
    // The Go example is compiled while the commands run (a cold build of nats.go takes a
    // minute on 2 cores); `go run` then finds it in the build cache.
    let mut go_build = {
        let mut command = runner.command(Path::new("nice"), &go_dir);
        command
            .args(["-n", "10"])
            .arg(&tools.go)
            .args(["build", "-o", "example", "."])
            .env("GOFLAGS", "-mod=readonly");
        runner.spawn("go-build", command)?
    };

    let result = live(
        &mut stack,
        &mut runner,
        &tools,
        &steps,
        &python_script,
        &go_dir,
        &mut go_build,
    )
    .await;
    stop(&mut go_build);
    if let Err(error) = result {
        let diagnostics = stack.diagnostics();
        stack.keep_logs();
        eprintln!(
            "docs: the commands' output is kept in {}",
            dir.keep().display()
        );
        bail!("{error:#}\n\n{diagnostics}");
    }
    eprintln!(
        "docs: {} commands and both client examples passed; whole test {:.1}s",
        steps.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn live(
    stack: &mut TestStack,
    runner: &mut Runner,
    tools: &Tools,
    steps: &[Step],
    python_script: &Path,
    go_dir: &Path,
    go_build: &mut ChildProcess,
) -> Result<()> {
    let js = stack.js();
    let kv = js
        .get_key_value(subjects::STATUS_BUCKET)
        .await
        .context("the stages provision the job status bucket at start")?;
    let mut run = Run {
        js,
        kv,
        runner,
        published: BTreeMap::new(),
        watched: BTreeSet::new(),
        read: BTreeSet::new(),
    };
    let commands_started = Instant::now();
    for step in steps {
        run.step(step).await?;
    }
    ensure!(
        !run.read.is_empty(),
        "no documented command read a completed event"
    );
    // Every request the commands published completed, and each was stored once.
    let requests = run.requests().await?;
    for (msg_id, job) in &run.published {
        let record = run.job_record(job).await?;
        ensure!(
            record.as_ref().map(|record| record.state) == Some(JobState::Completed),
            "{msg_id} (job {job}): {record:?}"
        );
        ensure!(
            requests.get(msg_id) == Some(&1),
            "{msg_id}: the stream holds {:?} requests with it, expected one",
            requests.get(msg_id)
        );
    }
    eprintln!(
        "docs: the nats commands took {:.1}s",
        commands_started.elapsed().as_secs_f64()
    );

    let mut python = run
        .runner
        .command(&tools.python, python_script.parent().unwrap());
    python.arg(python_script);
    run.example("Python", python, JOB_TIMEOUT).await?;

    let built = tokio::task::block_in_place(|| go_build.wait_timeout(GO_BUILD_TIMEOUT))?;
    ensure!(
        built.is_some_and(|status| status.success()),
        "`go build` of the Go example ({GO_MODULE} with events/README.md's code as main.go) \
         failed or took over {GO_BUILD_TIMEOUT:?}: {built:?}\n{}",
        go_build.logs()
    );
    let mut go = run.runner.command(&tools.go, go_dir);
    go.args(["run", "."]).env("GOFLAGS", "-mod=readonly");
    run.example("Go", go, JOB_TIMEOUT).await?;
    Ok(())
}
