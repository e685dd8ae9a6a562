//! vexxy's VEX where it is used: the real Grype and Trivy (built from the Go module proxy by
//! `cargo xtask setup`) scan an analysed image's SBOM with vexxy's documents, against small real
//! vulnerability databases built here with each scanner's own database code; for an image in a
//! real registry, `trivy image` scans the image itself with the OpenVEX document; go-vex (what
//! vexctl is built on) reads and merges the OpenVEX document.
//!
//! For every finding a scanner reports, the document's statement for that (vulnerability,
//! package) decides: `not_affected` and `fixed` must suppress it, anything else (or no
//! statement) must leave it; every suppressing statement must have suppressed a finding; and
//! `vexxy apply` on the scanner's unfiltered report must suppress exactly what the scanner did.
//! A VEX for another digest of the same repository, or one whose statements say
//! `under_investigation`, suppresses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vexxy_harness::{find_binary, workspace_root};
use vexxy_runtime::Store;

/// The real tools, and databases holding the fixture images' vulnerabilities.
pub struct Scanners {
    grype: PathBuf,
    trivy: PathBuf,
    vexview: PathBuf,
    vexxy: PathBuf,
    grype_db: PathBuf,
    trivy_cache: PathBuf,
}

/// What one round trip saw, for the test's log (the issue asks for counts per fixture).
#[derive(Debug, Default)]
pub struct Counts {
    pub grype_findings: usize,
    pub grype_suppressed: usize,
    pub trivy_findings: usize,
    pub trivy_suppressed_openvex: usize,
    pub trivy_suppressed_cyclonedx: usize,
    /// `trivy image`, for an analysis of an image in a registry.
    pub trivy_image_findings: usize,
    pub trivy_image_suppressed_openvex: usize,
}

/// A finding: (vulnerability id, package purl without qualifiers).
type Finding = (String, String);

impl Scanners {
    /// Finds the tools (`cargo xtask setup` links them into `.tools/bin`) and builds the
    /// databases once per machine (cached by their content under `~/.cache/vexxy/scannerdb`).
    pub fn ensure() -> Result<Scanners> {
        let tool = |env: &str, name: &str| {
            find_binary(env, name).with_context(|| {
                format!("{name} is built from the Go module proxy by `cargo xtask setup`")
            })
        };
        let grype = tool("VEXXY_GRYPE", "grype")?;
        let trivy = tool("VEXXY_TRIVY", "trivy")?;
        let vexview = tool("VEXXY_VEXVIEW", "vexview")?;
        let grype_vulndb = tool("VEXXY_GRYPE_VULNDB", "grype-vulndb")?;
        let trivy_vulndb = tool("VEXXY_TRIVY_VULNDB", "trivy-vulndb")?;
        let vexxy = vexxy_harness::stack::binary("vexxy")?;

        let advisories =
            serde_json::to_vec_pretty(&json!({ "advisories": fixture_advisories()? }))?;
        let mut hasher = Sha256::new();
        hasher.update(&advisories);
        for builder in [&grype_vulndb, &trivy_vulndb] {
            // The cache entry a tool links to names its version and build hash.
            hasher.update(
                std::fs::canonicalize(builder)?
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        }
        let key = hex(&hasher.finalize()[..8]);
        let dir = cache_root()?.join(&key);
        if !dir.join("ready").is_file() {
            build_databases(&dir, &advisories, &grype_vulndb, &trivy_vulndb)?;
        }
        Ok(Scanners {
            grype,
            trivy,
            vexview,
            vexxy,
            grype_db: dir.join("grype"),
            trivy_cache: dir.join("trivy"),
        })
    }
}

fn cache_root() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("vexxy").join("scannerdb"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The advisories of every fixture image kubesim knows (their Grype matches): alpine, the
/// Debian 12 nginx images and nginx on Debian 9.
fn fixture_advisories() -> Result<Vec<Value>> {
    use kubesim::catalogue::{
        ALPINE_FIXTURE_DIGEST, NGINX_DEBIAN9_FIXTURE_DIGEST, NGINX_FIXTURE_DIGESTS, advisories,
    };
    let mut all = Vec::new();
    for digest in [ALPINE_FIXTURE_DIGEST, NGINX_DEBIAN9_FIXTURE_DIGEST]
        .into_iter()
        .chain(NGINX_FIXTURE_DIGESTS)
    {
        all.extend(advisories(digest));
    }
    let unique: BTreeMap<String, Value> = all
        .into_iter()
        .map(|a| {
            (
                format!(
                    "{}|{}|{}|{}",
                    a["id"], a["distro"], a["distro_version"], a["package"]
                ),
                a,
            )
        })
        .collect();
    Ok(unique.into_values().collect())
}

/// Both databases into `dir` (built beside it and renamed, so a concurrent test process
/// never sees half of one).
fn build_databases(
    dir: &Path,
    advisories: &[u8],
    grype_vulndb: &Path,
    trivy_vulndb: &Path,
) -> Result<()> {
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    let input = partial.join("advisories.json");
    std::fs::write(&input, advisories)?;
    run(Command::new(grype_vulndb)
        .arg("-advisories")
        .arg(&input)
        .arg("-out")
        .arg(partial.join("grype")))?;
    run(Command::new(trivy_vulndb)
        .arg("-advisories")
        .arg(&input)
        .arg("-out")
        .arg(partial.join("trivy")))?;
    std::fs::write(partial.join("ready"), b"")?;
    std::fs::create_dir_all(dir.parent().context("cache dir has a parent")?)?;
    match std::fs::rename(&partial, dir) {
        Ok(()) => Ok(()),
        // Another test process finished first: its databases are the same.
        Err(_) if dir.join("ready").is_file() => {
            std::fs::remove_dir_all(&partial).ok();
            Ok(())
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot move {} into place", partial.display()))
        }
    }
}

fn run(command: &mut Command) -> Result<Vec<u8>> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

/// The documents of one completed analysis, downloaded into a folder for the scanners.
pub struct Analysis {
    pub job_id: String,
    pub dir: PathBuf,
    pub openvex: PathBuf,
    pub cyclonedx: PathBuf,
    pub sbom_cyclonedx: PathBuf,
    /// The image's full Syft SBOM (Kubescape's SBOMSyft `spec.syft`, from the evidence).
    pub sbom_syft: PathBuf,
    /// `registry/repository@sha256:…` when the analysed image is in a registry the scanners
    /// can pull from.
    pub image: Option<String>,
}

impl Analysis {
    pub async fn download(
        store: &Store,
        job_id: &str,
        evidence_sbom_key: &str,
        dir: &Path,
    ) -> Result<Analysis> {
        // Laid out as the README's commands expect: `vexxy results "$JOB" --out ./vex` and the
        // image's SBOM beside it.
        std::fs::create_dir_all(dir.join("vex"))?;
        let fetch = async |key: String, file: &str| -> Result<PathBuf> {
            let bytes = store
                .get_bytes(&key)
                .await
                .with_context(|| format!("cannot read {key}"))?;
            let path = dir.join(file);
            std::fs::write(&path, &bytes)?;
            Ok(path)
        };
        let openvex = fetch(
            format!("analyses/{job_id}/vex.openvex.json"),
            "vex/vex.openvex.json",
        )
        .await?;
        let cyclonedx = fetch(
            format!("analyses/{job_id}/vex.cdx.json"),
            "vex/vex.cdx.json",
        )
        .await?;
        let sbom_cyclonedx = fetch(
            format!("analyses/{job_id}/sbom.cdx.json"),
            "vex/sbom.cdx.json",
        )
        .await?;
        let object = fetch(evidence_sbom_key.to_string(), "sbom.kubescape.json").await?;
        let object: Value = serde_json::from_slice(&std::fs::read(&object)?)?;
        let syft = object
            .pointer("/spec/syft")
            .context("the SBOMSyft evidence has no spec.syft")?;
        let sbom_syft = dir.join("image.syft.json");
        std::fs::write(&sbom_syft, serde_json::to_vec(syft)?)?;
        Ok(Analysis {
            job_id: job_id.to_string(),
            dir: dir.to_path_buf(),
            openvex,
            cyclonedx,
            sbom_cyclonedx,
            sbom_syft,
            image: None,
        })
    }

    /// The analysed image is `reference` (by digest), in a registry the scanners reach.
    pub fn in_registry(self, reference: String) -> Analysis {
        Analysis {
            image: Some(reference),
            ..self
        }
    }
}

/// What a VEX says of each (vulnerability, package): its status.
fn statuses(openvex: &Value) -> Result<BTreeMap<Finding, String>> {
    let mut out = BTreeMap::new();
    for statement in openvex["statements"].as_array().context("no statements")? {
        let id = statement["vulnerability"]["name"]
            .as_str()
            .context("statement without a vulnerability")?;
        let status = statement["status"]
            .as_str()
            .context("statement without a status")?;
        for product in statement["products"].as_array().into_iter().flatten() {
            for sub in product["subcomponents"].as_array().into_iter().flatten() {
                let purl = sub["@id"].as_str().context("subcomponent without @id")?;
                out.insert((id.to_string(), package_key(purl)), status.to_string());
            }
        }
    }
    Ok(out)
}

/// A purl without qualifiers or subpath, percent-decoded: scanners re-encode purls
/// (`%2B` / `+`, qualifier order), and within one image name and version identify a package.
/// An `epoch` qualifier (Trivy's spelling of a Debian epoch) goes back into the version, where
/// Syft keeps it.
fn package_key(purl: &str) -> String {
    let key = vexxy_enrich::purl::decode(purl.split(['?', '#']).next().unwrap_or(purl));
    match (
        vexxy_enrich::purl::qualifier(purl, "epoch"),
        key.rsplit_once('@'),
    ) {
        (Some(epoch), Some((path, version))) if purl.starts_with("pkg:deb/") => {
            format!("{path}@{epoch}:{version}")
        }
        _ => key,
    }
}

fn suppressing(status: &str) -> bool {
    matches!(status, "not_affected" | "fixed")
}

/// (reported, suppressed) findings of a Grype JSON report.
fn grype_findings(report: &Value) -> Result<(BTreeSet<Finding>, BTreeSet<Finding>)> {
    let read = |key: &str| -> Result<BTreeSet<Finding>> {
        report[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let id = m["vulnerability"]["id"]
                    .as_str()
                    .context("match without an id")?;
                let purl = m["artifact"]["purl"]
                    .as_str()
                    .context("match without a purl")?;
                Ok((id.to_string(), package_key(purl)))
            })
            .collect()
    };
    Ok((read("matches")?, read("ignoredMatches")?))
}

/// (reported, suppressed) findings of a Trivy JSON report (`--show-suppressed`).
fn trivy_findings(report: &Value) -> Result<(BTreeSet<Finding>, BTreeSet<Finding>)> {
    let finding = |v: &Value| -> Result<Finding> {
        let id = v["VulnerabilityID"]
            .as_str()
            .context("finding without an id")?;
        let purl = v["PkgIdentifier"]["PURL"]
            .as_str()
            .context("finding without a purl")?;
        Ok((id.to_string(), package_key(purl)))
    };
    let mut reported = BTreeSet::new();
    let mut suppressed = BTreeSet::new();
    for result in report["Results"].as_array().into_iter().flatten() {
        for v in result["Vulnerabilities"].as_array().into_iter().flatten() {
            reported.insert(finding(v)?);
        }
        for m in result["ExperimentalModifiedFindings"]
            .as_array()
            .into_iter()
            .flatten()
        {
            suppressed.insert(finding(&m["Finding"])?);
        }
    }
    Ok((reported, suppressed))
}

/// The findings a VEX must suppress among `all`: those its statements call not_affected or fixed.
fn expected_suppressed(
    all: &BTreeSet<Finding>,
    statuses: &BTreeMap<Finding, String>,
) -> BTreeSet<Finding> {
    all.iter()
        .filter(|f| statuses.get(*f).is_some_and(|s| suppressing(s)))
        .cloned()
        .collect()
}

/// A scanner's result against the VEX: exactly the suppressing statements' findings suppressed,
/// and every suppressing statement found.
fn check_exact(
    what: &str,
    all: &BTreeSet<Finding>,
    suppressed: &BTreeSet<Finding>,
    statuses: &BTreeMap<Finding, String>,
) -> Result<()> {
    let expected = expected_suppressed(all, statuses);
    ensure!(
        *suppressed == expected,
        "{what}: suppressed {} findings, the VEX's not_affected/fixed statements name {}.\n\
         suppressed but not named: {:?}\nnamed but not suppressed: {:?}",
        suppressed.len(),
        expected.len(),
        suppressed.difference(&expected).collect::<Vec<_>>(),
        expected.difference(suppressed).collect::<Vec<_>>()
    );
    let unmatched: Vec<&Finding> = statuses
        .iter()
        .filter(|(f, s)| suppressing(s) && !all.contains(*f))
        .map(|(f, _)| f)
        .collect();
    ensure!(
        unmatched.is_empty(),
        "{what}: {} not_affected/fixed statements name a finding the scanner did not report \
         (its database or the SBOM disagree with Kubescape's): {unmatched:?}",
        unmatched.len()
    );
    Ok(())
}

/// The scanner commands of README.md's "Use it with your scanner" section, as written.
pub struct ReadmeCommands {
    pub grype: String,
    pub trivy_sbom: String,
    pub trivy_image: String,
}

impl ReadmeCommands {
    pub fn read() -> Result<ReadmeCommands> {
        let path = workspace_root().join("README.md");
        let readme = std::fs::read_to_string(&path)?;
        let section = readme
            .split("### Use it with your scanner")
            .nth(1)
            .context("README.md has no \"Use it with your scanner\" section")?;
        let section = section.split("\n## ").next().unwrap_or(section);
        let command = |start: &str| -> Result<String> {
            let lines: Vec<&str> = section
                .lines()
                .filter(|line| line.starts_with(&format!("{start} ")))
                .collect();
            ensure!(
                lines.len() == 1,
                "README.md's scanner section must have one `{start} …` command, has {lines:?}"
            );
            Ok(lines[0].to_string())
        };
        Ok(ReadmeCommands {
            grype: command("grype")?,
            trivy_sbom: command("trivy sbom")?,
            trivy_image: command("trivy image")?,
        })
    }
}

impl Scanners {
    /// Settings a user's machine has and this one does not: where the databases are, and no
    /// network (the `GRYPE_*`/`TRIVY_*` variables are the scanners' own spellings of flags).
    fn scanner_env<'c>(&self, analysis: &Analysis, command: &'c mut Command) -> &'c mut Command {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let tools: Vec<PathBuf> = [&self.grype, &self.trivy]
            .iter()
            .filter_map(|tool| tool.parent().map(Path::to_path_buf))
            .chain(std::env::split_paths(&path))
            .collect();
        command
            .env("PATH", std::env::join_paths(tools).unwrap_or(path))
            .env("HOME", &analysis.dir)
            .env("GRYPE_DB_CACHE_DIR", &self.grype_db)
            .env("GRYPE_DB_AUTO_UPDATE", "false")
            .env("GRYPE_DB_VALIDATE_AGE", "false")
            .env("GRYPE_CHECK_FOR_APP_UPDATE", "false")
            .env("TRIVY_CACHE_DIR", &self.trivy_cache)
            .env("TRIVY_SKIP_DB_UPDATE", "true")
            .env("TRIVY_SKIP_JAVA_DB_UPDATE", "true")
            .env("TRIVY_OFFLINE_SCAN", "true")
            .env("TRIVY_SKIP_VERSION_CHECK", "true")
            .env("TRIVY_DISABLE_TELEMETRY", "true")
            .env("TRIVY_QUIET", "true")
            // The test registry speaks plain HTTP and there is no container engine to ask first.
            .env("TRIVY_INSECURE", "true")
            .env("TRIVY_IMAGE_SRC", "remote")
            .env("IMAGE", analysis.image.as_deref().unwrap_or_default())
            .current_dir(&analysis.dir)
    }

    /// A README command, run with `sh` in the analysis folder.
    fn readme(&self, analysis: &Analysis, command: &str) -> Result<Value> {
        let output = run(self.scanner_env(analysis, Command::new("sh").args(["-c", command])))
            .with_context(|| format!("the README's command `{command}` failed"))?;
        Ok(serde_json::from_slice(&output)?)
    }

    fn grype(&self, analysis: &Analysis, args: &[&str]) -> Result<Value> {
        let mut command = Command::new(&self.grype);
        command
            .arg(format!("sbom:{}", analysis.sbom_syft.display()))
            .args(["-o", "json"])
            .args(args);
        let output = run(self.scanner_env(analysis, &mut command))?;
        Ok(serde_json::from_slice(&output)?)
    }

    fn trivy(&self, analysis: &Analysis, args: &[&str]) -> Result<Value> {
        let mut command = Command::new(&self.trivy);
        command
            .args(["sbom", "--format", "json"])
            .args(args)
            .arg(&analysis.sbom_cyclonedx);
        let output = run(self.scanner_env(analysis, &mut command))?;
        Ok(serde_json::from_slice(&output)?)
    }

    /// `trivy image` of the analysed image, pulled from its registry.
    fn trivy_image(&self, analysis: &Analysis, image: &str, args: &[&str]) -> Result<Value> {
        let mut command = Command::new(&self.trivy);
        command
            .args(["image", "--format", "json"])
            .args(args)
            .arg(image);
        let output = run(self.scanner_env(analysis, &mut command))?;
        Ok(serde_json::from_slice(&output)?)
    }

    /// `vexxy apply` on a scanner's unfiltered report: what it suppresses.
    fn apply(&self, analysis: &Analysis, vex: &Path, report: &Value, name: &str) -> Result<Value> {
        let path = analysis.dir.join(name);
        std::fs::write(&path, serde_json::to_vec(report)?)?;
        let output = run(Command::new(&self.vexxy)
            .arg("apply")
            .arg("--vex")
            .arg(vex)
            .arg("--report")
            .arg(&path))?;
        Ok(serde_json::from_slice(&output)?)
    }

    fn vexview(&self, args: &[&Path], command: &str) -> Result<Value> {
        let output = run(Command::new(&self.vexview).arg(command).args(args))?;
        Ok(serde_json::from_slice(&output)?)
    }

    /// Every check of the module's description, for one analysis.
    pub fn round_trip(&self, analysis: &Analysis) -> Result<Counts> {
        let openvex: Value = serde_json::from_slice(&std::fs::read(&analysis.openvex)?)?;
        let statuses = statuses(&openvex)?;
        ensure!(
            statuses.values().any(|s| suppressing(s)) && statuses.values().any(|s| !suppressing(s)),
            "{}: the fixture's VEX must both suppress and keep findings for the round trip to mean anything",
            analysis.job_id
        );
        let mut counts = Counts::default();

        // Grype with the OpenVEX document.
        let plain = self.grype(analysis, &[])?;
        let (all, none) = grype_findings(&plain)?;
        ensure!(none.is_empty(), "grype without a VEX suppressed {none:?}");
        let vex = analysis.openvex.display().to_string();
        let readme = ReadmeCommands::read()?;
        let filtered = self.readme(analysis, &readme.grype)?;
        let (kept, suppressed) = grype_findings(&filtered)?;
        ensure!(
            kept.union(&suppressed).cloned().collect::<BTreeSet<_>>() == all,
            "grype with the VEX reports other findings than without it"
        );
        check_exact(&readme.grype, &all, &suppressed, &statuses)?;
        let applied = self.apply(analysis, &analysis.openvex, &plain, "grype.json")?;
        let (_, by_apply) = grype_findings(&applied)?;
        ensure!(
            by_apply == suppressed,
            "vexxy apply suppresses other findings than grype on the same report: apply only {:?}, grype only {:?}",
            by_apply.difference(&suppressed).collect::<Vec<_>>(),
            suppressed.difference(&by_apply).collect::<Vec<_>>()
        );
        counts.grype_findings = all.len();
        counts.grype_suppressed = suppressed.len();

        // A Grype policy can name the justification vexxy gives.
        let config = analysis.dir.join("grype-policy.yaml");
        std::fs::write(
            &config,
            "ignore:\n  - vex-status: not_affected\n    vex-justification: vulnerable_code_not_in_execute_path\n",
        )?;
        let policy = self.grype(
            analysis,
            &["--vex", &vex, "-c", &config.display().to_string()],
        )?;
        let by_rule = policy["ignoredMatches"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| {
                m["appliedIgnoreRules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r["vex-justification"] == "vulnerable_code_not_in_execute_path")
            })
            .count();
        let not_affected = suppressed
            .iter()
            .filter(|f| statuses.get(*f).map(String::as_str) == Some("not_affected"))
            .count();
        ensure!(
            by_rule == not_affected && not_affected > 0,
            "grype's rule on the justification vulnerable_code_not_in_execute_path applied to {by_rule} \
             matches; vexxy's not_affected statements suppress {not_affected}"
        );

        // Trivy with the CycloneDX VEX, over vexxy's CycloneDX SBOM.
        let plain = self.trivy(analysis, &[])?;
        let (all, none) = trivy_findings(&plain)?;
        ensure!(none.is_empty(), "trivy without a VEX suppressed {none:?}");
        let filtered = self.readme(analysis, &readme.trivy_sbom)?;
        let (kept, suppressed) = trivy_findings(&filtered)?;
        ensure!(
            kept.union(&suppressed).cloned().collect::<BTreeSet<_>>() == all,
            "trivy with the VEX reports other findings than without it"
        );
        check_exact(&readme.trivy_sbom, &all, &suppressed, &statuses)?;
        counts.trivy_findings = all.len();
        let sbom_findings = all;
        counts.trivy_suppressed_cyclonedx = suppressed.len();

        // Trivy with the OpenVEX document: in `trivy sbom` mode Trivy's root component is a
        // filesystem without a purl, so a statement about the image (a pkg:oci product) never
        // matches; `vexxy apply` must agree with it on that report.
        let filtered = self.trivy(analysis, &["--vex", &vex, "--show-suppressed"])?;
        let (_, suppressed) = trivy_findings(&filtered)?;
        let applied = self.apply(analysis, &analysis.openvex, &plain, "trivy.json")?;
        let (_, by_apply) = trivy_findings(&applied)?;
        ensure!(
            by_apply == suppressed,
            "vexxy apply suppresses other findings than trivy on the same report: apply only {:?}, trivy only {:?}",
            by_apply.difference(&suppressed).collect::<Vec<_>>(),
            suppressed.difference(&by_apply).collect::<Vec<_>>()
        );
        counts.trivy_suppressed_openvex = suppressed.len();

        if let Some(image) = &analysis.image {
            self.image_round_trip(
                analysis,
                image,
                &readme,
                &statuses,
                &sbom_findings,
                &mut counts,
            )?;
        }

        // A VEX for another digest of the same repository, or whose statements are all
        // under_investigation (affected findings were checked above), suppresses nothing.
        let other_digest = other_digest_documents(analysis, &openvex)?;
        self.suppresses_nothing(analysis, &other_digest, "a VEX for another digest")?;
        let investigating = investigating_documents(analysis, &openvex)?;
        self.suppresses_nothing(analysis, &investigating, "under_investigation / in_triage")?;

        self.check_go_vex(analysis, &openvex)?;
        Ok(counts)
    }

    /// `trivy image` over the image in its registry, with the OpenVEX document: the packages
    /// Trivy finds in the image itself, named its own way (`distro=debian-12.7`, the Debian
    /// epoch as a qualifier), must meet vexxy's statements exactly as Grype's do.
    fn image_round_trip(
        &self,
        analysis: &Analysis,
        image: &str,
        readme: &ReadmeCommands,
        statuses: &BTreeMap<Finding, String>,
        sbom_findings: &BTreeSet<Finding>,
        counts: &mut Counts,
    ) -> Result<()> {
        let plain = self.trivy_image(analysis, image, &[])?;
        ensure!(
            plain["ArtifactType"] == "container_image",
            "trivy image did not scan a container image: {}",
            plain["ArtifactType"]
        );
        let (all, none) = trivy_findings(&plain)?;
        ensure!(
            none.is_empty(),
            "trivy image without a VEX suppressed {none:?}"
        );
        ensure!(
            all == *sbom_findings,
            "trivy finds other vulnerabilities in the image than in vexxy's SBOM of it: image only \
             {:?}, SBOM only {:?}",
            all.difference(sbom_findings).collect::<Vec<_>>(),
            sbom_findings.difference(&all).collect::<Vec<_>>()
        );
        let filtered = self.readme(analysis, &readme.trivy_image)?;
        let (kept, suppressed) = trivy_findings(&filtered)?;
        ensure!(
            kept.union(&suppressed).cloned().collect::<BTreeSet<_>>() == all,
            "trivy image with the VEX reports other findings than without it"
        );
        check_exact(&readme.trivy_image, &all, &suppressed, statuses)?;
        let applied = self.apply(analysis, &analysis.openvex, &plain, "trivy-image.json")?;
        let (_, by_apply) = trivy_findings(&applied)?;
        ensure!(
            by_apply == suppressed,
            "vexxy apply suppresses other findings than trivy image on the same report: apply \
             only {:?}, trivy only {:?}",
            by_apply.difference(&suppressed).collect::<Vec<_>>(),
            suppressed.difference(&by_apply).collect::<Vec<_>>()
        );
        counts.trivy_image_findings = all.len();
        counts.trivy_image_suppressed_openvex = suppressed.len();
        Ok(())
    }

    /// Neither Grype with `documents.0` (OpenVEX) nor Trivy with `documents.1` (CycloneDX VEX)
    /// suppresses a finding, nor `trivy image` with `documents.0` for an image in a registry.
    fn suppresses_nothing(
        &self,
        analysis: &Analysis,
        documents: &(PathBuf, PathBuf),
        what: &str,
    ) -> Result<()> {
        let openvex = documents.0.display().to_string();
        let (_, suppressed) = grype_findings(&self.grype(analysis, &["--vex", &openvex])?)?;
        ensure!(
            suppressed.is_empty(),
            "grype: {what} suppressed {suppressed:?}"
        );
        let cyclonedx = documents.1.display().to_string();
        let (_, suppressed) =
            trivy_findings(&self.trivy(analysis, &["--vex", &cyclonedx, "--show-suppressed"])?)?;
        ensure!(
            suppressed.is_empty(),
            "trivy: {what} suppressed {suppressed:?}"
        );
        if let Some(image) = &analysis.image {
            let report =
                self.trivy_image(analysis, image, &["--vex", &openvex, "--show-suppressed"])?;
            let (_, suppressed) = trivy_findings(&report)?;
            ensure!(
                suppressed.is_empty(),
                "trivy image: {what} suppressed {suppressed:?}"
            );
        }
        Ok(())
    }

    /// go-vex (vexctl's library) reads every statement as vexxy wrote it, and merges the
    /// document with a second one.
    fn check_go_vex(&self, analysis: &Analysis, openvex: &Value) -> Result<()> {
        let view = self.vexview(&[&analysis.openvex], "show")?;
        ensure!(
            view["author"] == openvex["author"] && view["id"] == openvex["@id"],
            "go-vex reads another author or @id: {view}"
        );
        let ours: Vec<Value> = openvex["statements"]
            .as_array()
            .context("no statements")?
            .iter()
            .map(|s| {
                json!({
                    "vulnerability": s["vulnerability"]["name"],
                    "status": s["status"],
                    "justification": s.get("justification").cloned().unwrap_or(json!(null)),
                    "products": s["products"].as_array().into_iter().flatten().map(|p| p["@id"].clone()).collect::<Vec<_>>(),
                    "subcomponents": s["products"].as_array().into_iter().flatten()
                        .flat_map(|p| p["subcomponents"].as_array().into_iter().flatten().map(|c| c["@id"].clone()))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        let theirs: Vec<Value> = view["statements"]
            .as_array()
            .context("go-vex printed no statements")?
            .iter()
            .map(|s| {
                json!({
                    "vulnerability": s["vulnerability"],
                    "status": s["status"],
                    "justification": s.get("justification").cloned().unwrap_or(json!(null)),
                    "products": s["products"],
                    "subcomponents": s["subcomponents"],
                })
            })
            .collect();
        ensure!(
            ours == theirs,
            "go-vex reads the statements differently:\nvexxy: {ours:#?}\ngo-vex: {theirs:#?}"
        );

        let second = workspace_root()
            .join("../shared/fixtures/openvex/vexctl__examples_openvex_document2.vex.json");
        let merged = self.vexview(&[&analysis.openvex, &second], "merge")?;
        let second_count = self.vexview(&[&second], "show")?["statements"]
            .as_array()
            .map_or(0, Vec::len);
        let merged_statements = merged["statements"]
            .as_array()
            .context("the merged document has no statements")?;
        ensure!(
            merged_statements.len() == ours.len() + second_count,
            "go-vex merged {} statements from {} + {second_count}",
            merged_statements.len(),
            ours.len()
        );
        for statement in openvex["statements"].as_array().into_iter().flatten() {
            ensure!(
                merged_statements.iter().any(|m| m["vulnerability"]["name"]
                    == statement["vulnerability"]["name"]
                    && m["status"] == statement["status"]
                    && m["products"] == statement["products"]),
                "the merged document lost {}",
                statement["vulnerability"]["name"]
            );
        }
        Ok(())
    }
}

/// The documents rewritten as if made for another digest of the same image: (OpenVEX with the
/// product's digest changed, CycloneDX VEX pointing into another analysis's SBOM).
fn other_digest_documents(analysis: &Analysis, openvex: &Value) -> Result<(PathBuf, PathBuf)> {
    let text = serde_json::to_string(openvex)?;
    let product = openvex["statements"][0]["products"][0]["@id"]
        .as_str()
        .context("no product")?;
    let digest = product
        .split_once("sha256")
        .and_then(|(_, rest)| rest.get(3..67).or_else(|| rest.get(1..65)))
        .context("the product purl names no digest")?;
    let other: String = digest.chars().rev().collect();
    let openvex_path = analysis.dir.join("other-digest.openvex.json");
    std::fs::write(&openvex_path, text.replace(digest, &other))?;
    let cdx: Value = serde_json::from_slice(&std::fs::read(&analysis.cyclonedx)?)?;
    let sbom: Value = serde_json::from_slice(&std::fs::read(&analysis.sbom_cyclonedx)?)?;
    let serial = sbom["serialNumber"]
        .as_str()
        .context("the SBOM has no serial number")?;
    let uuid = serial.trim_start_matches("urn:uuid:");
    let other_uuid = format!("{}{}", &uuid[..uuid.len() - 4], "0000");
    let cdx_path = analysis.dir.join("other-digest.cdx.json");
    std::fs::write(
        &cdx_path,
        serde_json::to_string(&cdx)?
            .replace(uuid, &other_uuid)
            .replace(digest, &other),
    )?;
    Ok((openvex_path, cdx_path))
}

/// The documents with every statement `under_investigation` (`in_triage`).
fn investigating_documents(analysis: &Analysis, openvex: &Value) -> Result<(PathBuf, PathBuf)> {
    let mut openvex = openvex.clone();
    for statement in openvex["statements"]
        .as_array_mut()
        .context("no statements")?
    {
        let object = statement
            .as_object_mut()
            .context("statement is not an object")?;
        object.insert("status".into(), json!("under_investigation"));
        object.remove("justification");
        object.remove("impact_statement");
        object.remove("action_statement");
    }
    let openvex_path = analysis.dir.join("investigating.openvex.json");
    std::fs::write(&openvex_path, serde_json::to_vec(&openvex)?)?;
    let mut cdx: Value = serde_json::from_slice(&std::fs::read(&analysis.cyclonedx)?)?;
    for entry in cdx["vulnerabilities"]
        .as_array_mut()
        .context("no vulnerabilities")?
    {
        entry["analysis"] = json!({"state": "in_triage"});
    }
    let cdx_path = analysis.dir.join("investigating.cdx.json");
    std::fs::write(&cdx_path, serde_json::to_vec(&cdx)?)?;
    Ok((openvex_path, cdx_path))
}
