//! What is inside an emulated image: packages, their files, Grype matches, and which packages
//! the running container loads. Deterministic from the image digest.
//!
//! Digest rules (the first hex characters after `sha256:`):
//! * `0000…` — no vulnerabilities (packages, but zero Grype matches).
//! * `ffff…` — huge: 400 npm packages × 25 CVEs = 10,000 matches; the VEX is several MB, over the
//!   storage 500,000-byte cap, so kubesim rejects the write (413) and the image ends with no VEX.
//! * `fffe…` — large but storable: 700 matches, VEX ≈ 0.3 MB in both generations.
//! * the alpine fixture digest (`ALPINE_FIXTURE_DIGEST`) — the real Syft SBOM and Grype report of
//!   `alpine@sha256:e2e1…2501` (15 packages, 20 matches); loaded: busybox, busybox-binsh, musl, libcrypto3.
//! * the nginx fixture digests (`NGINX_FIXTURE_DIGESTS`) — the 10 real debian-12 packages of the
//!   node-agent filtered SBOM fixture (all loaded) plus generated debian-12 packages (not loaded).
//! * the Debian 9 nginx fixture digest (`NGINX_DEBIAN9_FIXTURE_DIGEST`) — nginx 1.14.1 on
//!   Debian 9 (arm64) from the real relevancy-filtered Grype report in `../shared/fixtures`: its 61
//!   packages and 456 matches; loaded: nginx and the shared libraries (`lib*`, `zlib1g`), not
//!   the tools (apt, bash, coreutils, …).
//! * a digest declared with [`declare_same_content`] — the content of the digest it names (a
//!   test's real image built from a fixture's files, see [`super::files`]).
//! * anything else — a generated debian-12 or alpine-3.19 image with 0–2 language ecosystems,
//!   10–40 % of packages loaded, 5–10 % of matches only reported from the second scan on (a
//!   Grype DB update) and ~3 % reported twice by two matchers (as Grype does).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vexxy_kubescape::{
    GrypeMatch, SyftArtifact, read_grype_document, read_sbom, read_syft_document,
};

use crate::rng::Rng;

pub const ALPINE_FIXTURE_DIGEST: &str =
    "sha256:e2e16842c9b54d985bf1ef9242a313f36b856181f188de21313820e177002501";
/// The image-id annotation and the Syft source digest of the nginx filtered-SBOM fixture.
pub const NGINX_FIXTURE_DIGESTS: [&str; 2] = [
    "sha256:6a59f1cbb8d28ac484176d52c473494859a512ddba3ea62a547258cf16c9b3ae",
    "sha256:ed6d2c43c8fbcd3eaa44c9dab6d94cb346234476230dc1681227aa72d07181ee",
];
/// The manifest digest of the image of the Debian 9 nginx Grype report fixture.
pub const NGINX_DEBIAN9_FIXTURE_DIGEST: &str =
    "sha256:6db649d8a1f720b6c59469c1c61c95fc3d332e437d457106a66b975515e75128";
pub const ZERO_VULN_PREFIX: &str = "sha256:0000";
pub const HUGE_PREFIX: &str = "sha256:ffff";
pub const LARGE_FITTING_PREFIX: &str = "sha256:fffe";

const ALPINE_SBOM: &str =
    include_str!("../../../../../shared/fixtures/scanner-reports/kubevuln-alpine-sbom.json");
const ALPINE_CVE: &str =
    include_str!("../../../../../shared/fixtures/scanner-reports/kubevuln-alpine-cve.json");
const NGINX_DEBIAN9_REPORT: &str =
    include_str!("../../../../../shared/fixtures/scanner-reports/kubevuln-nginx-filtered-cve.json");
const NGINX_FILTERED_SBOM: &str = include_str!(
    "../../../../../shared/fixtures/kubescape/sbomsyftfiltered.node-agent-nginx-syft-filtered.json"
);

/// A package in the image, as a Syft artifact (JSON) plus the one file whose loading marks it used.
#[derive(Debug, Clone)]
pub struct Package {
    pub artifact: Value,
    pub purl: String,
    pub name: String,
    pub version: String,
    pub marker_file: String,
}

/// One Grype match, as JSON, and when it is reported.
#[derive(Debug, Clone)]
pub struct Match {
    pub grype: Value,
    pub package: usize,
    /// Reported only from the second scan on (simulated vulnerability-DB update).
    pub late: bool,
}

#[derive(Debug, Clone)]
pub struct ImageContent {
    pub packages: Vec<Package>,
    pub matches: Vec<Match>,
    pub loaded: BTreeSet<usize>,
    pub distro: Value,
    pub grype_distro: Value,
    pub schema: Value,
}

impl ImageContent {
    pub fn matches_for_scan(&self, rescan: bool) -> impl Iterator<Item = &Match> {
        self.matches.iter().filter(move |m| rescan || !m.late)
    }
}

/// Most images whose content is kept once built (a pure function of the digest): a scan and every
/// ContainerProfile write ask for it, and building or copying it each time cost more than the
/// rest of the emulator together.
const CONTENT_CACHE_IMAGES: usize = 256;

/// Digests declared to hold another digest's content.
fn same_content() -> &'static RwLock<HashMap<String, String>> {
    static SAME_CONTENT: OnceLock<RwLock<HashMap<String, String>>> = OnceLock::new();
    SAME_CONTENT.get_or_init(Default::default)
}

/// Declares that the image `digest` holds what the image `like` holds: a test pushes a real
/// image built from a fixture's files (its digest is not the fixture's), and Kubescape must
/// report the fixture's packages for it.
pub fn declare_same_content(digest: &str, like: &str) {
    same_content()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(digest.to_string(), like.to_string());
}

/// What the image with `digest` contains: always the same for the same digest.
pub fn content_for(digest: &str) -> Arc<ImageContent> {
    let declared = same_content()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(digest)
        .cloned();
    let digest = declared.as_deref().unwrap_or(digest);
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<ImageContent>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(content) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
        return content.clone();
    }
    let content = Arc::new(build_content(digest));
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CONTENT_CACHE_IMAGES {
        cache.clear();
    }
    cache.insert(digest.to_string(), content.clone());
    content
}

fn build_content(digest: &str) -> ImageContent {
    let mut rng = Rng::new(seed(digest));
    if digest == ALPINE_FIXTURE_DIGEST {
        return alpine_fixture();
    }
    if NGINX_FIXTURE_DIGESTS.contains(&digest) {
        return nginx_fixture(&mut rng);
    }
    if digest == NGINX_DEBIAN9_FIXTURE_DIGEST {
        return nginx_debian9_fixture();
    }
    if digest.starts_with(HUGE_PREFIX) {
        return synthetic_npm(&mut rng, 400, 25);
    }
    if digest.starts_with(LARGE_FITTING_PREFIX) {
        return synthetic_npm(&mut rng, 70, 10);
    }
    let mut content = generated(&mut rng);
    if digest.starts_with(ZERO_VULN_PREFIX) {
        content.matches.clear();
    }
    content
}

fn seed(digest: &str) -> u64 {
    let h = Sha256::digest(digest.as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

fn artifact_id(purl: &str) -> String {
    hex::encode(&Sha256::digest(purl.as_bytes())[..8])
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn alpine_fixture() -> ImageContent {
    let sbom: Value = serde_json::from_str(ALPINE_SBOM).expect("alpine SBOM fixture is JSON");
    let syft = read_syft_document(&sbom).expect("alpine SBOM fixture parses");
    let report: Value = serde_json::from_str(ALPINE_CVE).expect("alpine Grype fixture is JSON");
    let grype = read_grype_document(&report).expect("alpine Grype fixture parses");
    let packages: Vec<Package> = syft.artifacts.iter().map(package_from_artifact).collect();
    let matches = grype_matches(&grype.matches, &packages);
    let loaded = packages
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            ["busybox", "busybox-binsh", "musl", "libcrypto3"].contains(&p.name.as_str())
        })
        .map(|(i, _)| i)
        .collect();
    ImageContent {
        packages,
        matches,
        loaded,
        distro: syft.distro,
        grype_distro: grype.distro,
        schema: syft.schema,
    }
}

fn nginx_fixture(rng: &mut Rng) -> ImageContent {
    let object: Value =
        serde_json::from_str(NGINX_FILTERED_SBOM).expect("nginx SBOM fixture is JSON");
    let sbom = read_sbom(&object).expect("nginx SBOM fixture parses");
    let mut packages: Vec<Package> = sbom
        .syft
        .artifacts
        .iter()
        .map(package_from_artifact)
        .collect();
    let loaded: BTreeSet<usize> = (0..packages.len()).collect();
    let taken: BTreeSet<String> = packages.iter().map(|p| p.name.clone()).collect();
    for t in DEB.iter().filter(|t| !taken.contains(t.0)) {
        packages.push(os_package("deb", t, "debian-12"));
    }
    let matches = generated_matches(rng, &packages, "deb", false);
    ImageContent {
        packages,
        matches,
        loaded,
        distro: sbom.syft.distro,
        grype_distro: json!({"name": "debian", "version": "12", "idLike": []}),
        schema: sbom.syft.schema,
    }
}

/// The Grype report has no SBOM beside it: each matched package becomes the dpkg artifact Syft
/// would write for it (source package and version from the report's `upstreams`).
fn nginx_debian9_fixture() -> ImageContent {
    let report: Value =
        serde_json::from_str(NGINX_DEBIAN9_REPORT).expect("nginx Debian 9 report is JSON");
    let grype = read_grype_document(&report).expect("nginx Debian 9 report parses");
    let mut seen = BTreeSet::new();
    let packages: Vec<Package> = grype
        .matches
        .iter()
        .filter(|m| seen.insert(m.artifact.purl.clone()))
        .map(|m| deb_package_from_grype(&serde_json::to_value(&m.artifact).expect("artifact")))
        .collect();
    let matches = grype_matches(&grype.matches, &packages);
    let loaded = packages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name.starts_with("lib") || p.name == "zlib1g" || p.name == "nginx")
        .map(|(i, _)| i)
        .collect();
    let sbom: Value = serde_json::from_str(ALPINE_SBOM).expect("alpine SBOM fixture is JSON");
    ImageContent {
        packages,
        matches,
        loaded,
        distro: json!({"prettyName": "Debian GNU/Linux 9 (stretch)", "name": "Debian GNU/Linux",
                       "id": "debian", "version": "9 (stretch)", "versionID": "9",
                       "versionCodename": "stretch"}),
        grype_distro: grype.distro,
        // The Syft JSON schema the other fixture SBOMs declare.
        schema: sbom["schema"].clone(),
    }
}

/// A dpkg artifact as Syft writes it, from a Grype report's artifact.
fn deb_package_from_grype(artifact: &Value) -> Package {
    let name = artifact["name"].as_str().unwrap_or_default();
    let version = artifact["version"].as_str().unwrap_or_default();
    let upstream = &artifact["upstreams"][0];
    let source = upstream["name"].as_str().unwrap_or_default();
    let source_version = upstream["version"].as_str().unwrap_or_default();
    let purl_in_report = artifact["purl"].as_str().unwrap_or_default();
    let arch = purl_qualifier(purl_in_report, "arch").unwrap_or("amd64");
    let distro = purl_qualifier(purl_in_report, "distro").unwrap_or("");
    let upstream_qualifier = match (source, source_version) {
        ("", _) => String::new(),
        (source, "") => format!("&upstream={source}"),
        (source, source_version) => format!("&upstream={source}@{source_version}"),
    };
    let purl =
        format!("pkg:deb/debian/{name}@{version}?arch={arch}{upstream_qualifier}&distro={distro}");
    let marker_file = if name.starts_with("lib") || name == "zlib1g" {
        format!("/usr/lib/{arch}-linux-gnu/{name}.so")
    } else {
        format!("/usr/sbin/{name}")
    };
    let copyright = format!("/usr/share/doc/{name}/copyright");
    let artifact = json!({
        "id": artifact_id(&purl),
        "name": name,
        "version": version,
        "type": "deb",
        "foundBy": "dpkg-db-cataloger",
        "locations": [{"path": "/var/lib/dpkg/status", "accessPath": "/var/lib/dpkg/status",
                       "annotations": {"evidence": "primary"}}],
        "licenses": [],
        "language": "",
        "cpes": artifact["cpes"].as_array().map(|cpes| cpes.iter().map(|c| json!({"cpe": c, "source": "syft-generated"})).collect::<Vec<_>>()).unwrap_or_default(),
        "purl": purl,
        "metadataType": "dpkg-db-entry",
        "metadata": {"package": name, "source": source, "version": version,
                     "sourceVersion": source_version, "architecture": arch,
                     "files": [{"path": marker_file}, {"path": copyright}]},
    });
    Package {
        artifact,
        purl,
        name: name.to_string(),
        version: version.to_string(),
        marker_file,
    }
}

fn package_from_artifact(a: &SyftArtifact) -> Package {
    let artifact = serde_json::to_value(a).expect("artifact serialises");
    let purl = a.purl.clone().unwrap_or_default();
    let marker_file = a
        .file_paths()
        .into_iter()
        .find(|p| p.contains(".so") || p.contains("/bin/") || p.contains("/sbin/"))
        .or_else(|| {
            a.file_paths()
                .into_iter()
                .find(|p| !p.starts_with("/var/lib/") && !p.starts_with("/lib/apk/db"))
        })
        .unwrap_or("/")
        .to_string();
    Package {
        artifact,
        purl,
        name: a.name.clone(),
        version: a.version.clone(),
        marker_file,
    }
}

/// Real Grype matches, tied to the SBOM's packages by purl (name+version as a fallback).
fn grype_matches(real: &[GrypeMatch], packages: &[Package]) -> Vec<Match> {
    real.iter()
        .filter_map(|m| {
            let package = packages
                .iter()
                .position(|p| p.purl == m.artifact.purl)
                .or_else(|| {
                    packages
                        .iter()
                        .position(|p| p.name == m.artifact.name && p.version == m.artifact.version)
                })?;
            let mut grype = serde_json::to_value(m).expect("match serialises");
            grype["artifact"]["purl"] = json!(packages[package].purl);
            Some(Match {
                grype,
                package,
                late: false,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Generated content.

/// (name, version, upstream group, main file)
type Template = (&'static str, &'static str, &'static str, &'static str);

const DEB: &[Template] = &[
    (
        "libc6",
        "2.36-9+deb12u4",
        "glibc",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ),
    ("libc-bin", "2.36-9+deb12u4", "glibc", "/sbin/ldconfig"),
    (
        "libssl3",
        "3.0.11-1~deb12u2",
        "openssl",
        "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    ),
    ("openssl", "3.0.11-1~deb12u2", "openssl", "/usr/bin/openssl"),
    (
        "zlib1g",
        "1:1.2.13.dfsg-1",
        "zlib",
        "/lib/x86_64-linux-gnu/libz.so.1.2.13",
    ),
    (
        "libpcre2-8-0",
        "10.42-1",
        "pcre2",
        "/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2",
    ),
    (
        "libsystemd0",
        "252.22-1~deb12u1",
        "systemd",
        "/usr/lib/x86_64-linux-gnu/libsystemd.so.0.35.0",
    ),
    (
        "libudev1",
        "252.22-1~deb12u1",
        "systemd",
        "/usr/lib/x86_64-linux-gnu/libudev.so.1.7.5",
    ),
    (
        "libgnutls30",
        "3.7.9-2+deb12u2",
        "gnutls28",
        "/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3",
    ),
    (
        "libxml2",
        "2.9.14+dfsg-1.3~deb12u1",
        "libxml2",
        "/usr/lib/x86_64-linux-gnu/libxml2.so.2.9.14",
    ),
    (
        "libcurl4",
        "7.88.1-10+deb12u5",
        "curl",
        "/usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0",
    ),
    ("curl", "7.88.1-10+deb12u5", "curl", "/usr/bin/curl"),
    ("bash", "5.2.15-2+b2", "bash", "/bin/bash"),
    ("coreutils", "9.1-1", "coreutils", "/bin/ls"),
    ("tar", "1.34+dfsg-1.2+deb12u1", "tar", "/bin/tar"),
    ("perl-base", "5.36.0-7+deb12u1", "perl", "/usr/bin/perl"),
    (
        "libsqlite3-0",
        "3.40.1-2",
        "sqlite3",
        "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6",
    ),
    (
        "libexpat1",
        "2.5.0-1",
        "expat",
        "/usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10",
    ),
    (
        "libzstd1",
        "1.5.4+dfsg2-5",
        "libzstd",
        "/usr/lib/x86_64-linux-gnu/libzstd.so.1.5.4",
    ),
    (
        "liblzma5",
        "5.4.1-0.2",
        "xz-utils",
        "/lib/x86_64-linux-gnu/liblzma.so.5.4.1",
    ),
    (
        "libgcrypt20",
        "1.10.1-3",
        "libgcrypt20",
        "/usr/lib/x86_64-linux-gnu/libgcrypt.so.20.4.1",
    ),
    ("ncurses-base", "6.4-4", "ncurses", "/etc/terminfo/README"),
    (
        "libtinfo6",
        "6.4-4",
        "ncurses",
        "/lib/x86_64-linux-gnu/libtinfo.so.6.4",
    ),
    ("login", "1:4.13+dfsg1-1+b1", "shadow", "/bin/login"),
    ("passwd", "1:4.13+dfsg1-1+b1", "shadow", "/usr/sbin/useradd"),
    ("util-linux", "2.38.1-5+b1", "util-linux", "/bin/more"),
    ("gzip", "1.12-1", "gzip", "/bin/gzip"),
    ("apt", "2.6.1", "apt", "/usr/bin/apt"),
    ("dpkg", "1.21.22", "dpkg", "/usr/bin/dpkg"),
    (
        "libtiff6",
        "4.5.0-6+deb12u1",
        "tiff",
        "/usr/lib/x86_64-linux-gnu/libtiff.so.6.0.0",
    ),
    (
        "libpng16-16",
        "1.6.39-2",
        "libpng1.6",
        "/usr/lib/x86_64-linux-gnu/libpng16.so.16.39.0",
    ),
    (
        "libjpeg62-turbo",
        "1:2.1.5-2",
        "libjpeg-turbo",
        "/usr/lib/x86_64-linux-gnu/libjpeg.so.62.3.0",
    ),
    (
        "libfreetype6",
        "2.12.1+dfsg-5",
        "freetype",
        "/usr/lib/x86_64-linux-gnu/libfreetype.so.6.18.3",
    ),
    (
        "libkrb5-3",
        "1.20.1-2+deb12u1",
        "krb5",
        "/usr/lib/x86_64-linux-gnu/libkrb5.so.3.3",
    ),
    (
        "libldap-2.5-0",
        "2.5.13+dfsg-5",
        "openldap",
        "/usr/lib/x86_64-linux-gnu/libldap-2.5.so.0.1.8",
    ),
    (
        "libnghttp2-14",
        "1.52.0-1+deb12u1",
        "nghttp2",
        "/usr/lib/x86_64-linux-gnu/libnghttp2.so.14.24.1",
    ),
    (
        "libssh2-1",
        "1.10.0-3+b1",
        "libssh2",
        "/usr/lib/x86_64-linux-gnu/libssh2.so.1.0.1",
    ),
    (
        "libgssapi-krb5-2",
        "1.20.1-2+deb12u1",
        "krb5",
        "/usr/lib/x86_64-linux-gnu/libgssapi_krb5.so.2.2",
    ),
];

const APK: &[Template] = &[
    (
        "musl",
        "1.2.4_git20230717-r4",
        "musl",
        "/lib/ld-musl-x86_64.so.1",
    ),
    ("busybox", "1.36.1-r15", "busybox", "/bin/busybox"),
    ("busybox-binsh", "1.36.1-r15", "busybox", "/bin/sh"),
    ("libcrypto3", "3.1.4-r2", "openssl", "/lib/libcrypto.so.3"),
    ("libssl3", "3.1.4-r2", "openssl", "/lib/libssl.so.3"),
    ("zlib", "1.3-r2", "zlib", "/lib/libz.so.1.3"),
    ("apk-tools", "2.14.0-r5", "apk-tools", "/sbin/apk"),
    (
        "ca-certificates-bundle",
        "20230506-r0",
        "ca-certificates",
        "/etc/ssl/certs/ca-certificates.crt",
    ),
    ("libcurl", "8.5.0-r0", "curl", "/usr/lib/libcurl.so.4.8.0"),
    (
        "ncurses-libs",
        "6.4_p20231125-r0",
        "ncurses",
        "/usr/lib/libncursesw.so.6.4",
    ),
    (
        "libexpat",
        "2.5.0-r2",
        "expat",
        "/usr/lib/libexpat.so.1.8.10",
    ),
    (
        "sqlite-libs",
        "3.44.2-r0",
        "sqlite",
        "/usr/lib/libsqlite3.so.0.8.6",
    ),
    (
        "libxml2",
        "2.11.6-r0",
        "libxml2",
        "/usr/lib/libxml2.so.2.11.6",
    ),
    (
        "pcre2",
        "10.42-r2",
        "pcre2",
        "/usr/lib/libpcre2-8.so.0.11.2",
    ),
];

/// (ecosystem, purl type, name, version, main file)
const LANG: &[(&str, &str, &str, &str, &str)] = &[
    (
        "npm",
        "npm",
        "express",
        "4.17.1",
        "/app/node_modules/express/index.js",
    ),
    (
        "npm",
        "npm",
        "lodash",
        "4.17.20",
        "/app/node_modules/lodash/lodash.js",
    ),
    (
        "npm",
        "npm",
        "minimist",
        "1.2.5",
        "/app/node_modules/minimist/index.js",
    ),
    (
        "npm",
        "npm",
        "axios",
        "0.21.1",
        "/app/node_modules/axios/index.js",
    ),
    (
        "npm",
        "npm",
        "jsonwebtoken",
        "8.5.1",
        "/app/node_modules/jsonwebtoken/index.js",
    ),
    (
        "npm",
        "npm",
        "semver",
        "7.3.5",
        "/app/node_modules/semver/index.js",
    ),
    (
        "npm",
        "npm",
        "qs",
        "6.7.0",
        "/app/node_modules/qs/lib/index.js",
    ),
    ("npm", "npm", "ws", "7.4.5", "/app/node_modules/ws/index.js"),
    (
        "npm",
        "npm",
        "follow-redirects",
        "1.14.0",
        "/app/node_modules/follow-redirects/index.js",
    ),
    (
        "npm",
        "npm",
        "node-fetch",
        "2.6.1",
        "/app/node_modules/node-fetch/lib/index.js",
    ),
    (
        "python",
        "pypi",
        "requests",
        "2.25.1",
        "/usr/local/lib/python3.11/site-packages/requests/__init__.py",
    ),
    (
        "python",
        "pypi",
        "urllib3",
        "1.26.4",
        "/usr/local/lib/python3.11/site-packages/urllib3/__init__.py",
    ),
    (
        "python",
        "pypi",
        "jinja2",
        "2.11.2",
        "/usr/local/lib/python3.11/site-packages/jinja2/__init__.py",
    ),
    (
        "python",
        "pypi",
        "pyyaml",
        "5.3.1",
        "/usr/local/lib/python3.11/site-packages/yaml/__init__.py",
    ),
    (
        "python",
        "pypi",
        "flask",
        "1.1.2",
        "/usr/local/lib/python3.11/site-packages/flask/__init__.py",
    ),
    (
        "python",
        "pypi",
        "werkzeug",
        "1.0.1",
        "/usr/local/lib/python3.11/site-packages/werkzeug/__init__.py",
    ),
    (
        "python",
        "pypi",
        "cryptography",
        "3.3.1",
        "/usr/local/lib/python3.11/site-packages/cryptography/__init__.py",
    ),
    (
        "python",
        "pypi",
        "pillow",
        "8.1.0",
        "/usr/local/lib/python3.11/site-packages/PIL/__init__.py",
    ),
    ("go", "golang", "golang.org/x/net", "v0.7.0", "/app/server"),
    (
        "go",
        "golang",
        "golang.org/x/crypto",
        "v0.6.0",
        "/app/server",
    ),
    (
        "go",
        "golang",
        "google.golang.org/grpc",
        "v1.53.0",
        "/app/server",
    ),
    (
        "go",
        "golang",
        "github.com/gin-gonic/gin",
        "v1.8.1",
        "/app/server",
    ),
    ("go", "golang", "gopkg.in/yaml.v3", "v3.0.0", "/app/server"),
    ("go", "golang", "stdlib", "go1.20.1", "/app/server"),
];

fn os_package(kind: &str, t: &Template, distro: &str) -> Package {
    let (name, version, upstream, file) = *t;
    let (purl, found_by, metadata_type, locations, files) = if kind == "deb" {
        let up = if upstream != name {
            format!("&upstream={upstream}")
        } else {
            String::new()
        };
        (
            format!("pkg:deb/debian/{name}@{version}?arch=amd64{up}&distro={distro}"),
            "dpkg-db-cataloger",
            "dpkg-db-entry",
            vec![
                format!("/usr/share/doc/{name}/copyright"),
                format!("/var/lib/dpkg/info/{name}.md5sums"),
                "/var/lib/dpkg/status".to_string(),
            ],
            vec![file.to_string(), format!("/usr/share/doc/{name}/copyright")],
        )
    } else {
        let up = if upstream != name {
            format!("&upstream={upstream}")
        } else {
            String::new()
        };
        (
            format!("pkg:apk/alpine/{name}@{version}?arch=x86_64&distro={distro}{up}"),
            "apk-db-cataloger",
            "apk-db-entry",
            vec!["/lib/apk/db/installed".to_string()],
            vec![file.to_string()],
        )
    };
    let artifact = json!({
        "id": artifact_id(&purl),
        "name": name,
        "version": version,
        "type": kind,
        "foundBy": found_by,
        "locations": locations.iter().map(|p| json!({"path": p, "layerID": "sha256:52ec5a4316fadc09a4a51f82b8d7b66ead0d71bea4f75e81e25b4094c4219061", "accessPath": p, "annotations": {"evidence": if p.contains("dpkg/status") || p.contains("apk/db") {"primary"} else {"supporting"}}})).collect::<Vec<_>>(),
        "licenses": [],
        "language": "",
        "cpes": [{"cpe": format!("cpe:2.3:a:{name}:{name}:{version}:*:*:*:*:*:*:*"), "source": "syft-generated"}],
        "purl": purl,
        "metadataType": metadata_type,
        "metadata": {"package": name, "source": if upstream != name { upstream } else { "" }, "version": version,
                     "architecture": if kind == "deb" { "amd64" } else { "x86_64" },
                     "files": files.iter().map(|p| json!({"path": p})).collect::<Vec<_>>()},
    });
    Package {
        artifact,
        purl,
        name: name.to_string(),
        version: version.to_string(),
        marker_file: file.to_string(),
    }
}

fn lang_package(l: &(&str, &str, &str, &str, &str)) -> Package {
    let (language, purl_type, name, version, file) = *l;
    let purl = match purl_type {
        "npm" => format!("pkg:npm/{name}@{version}"),
        "pypi" => format!("pkg:pypi/{name}@{version}"),
        _ => format!("pkg:golang/{name}@{version}"),
    };
    let (syft_type, found_by, metadata_type) = match purl_type {
        "npm" => (
            "npm",
            "javascript-package-cataloger",
            "javascript-npm-package",
        ),
        "pypi" => (
            "python",
            "python-installed-package-cataloger",
            "python-package",
        ),
        _ => (
            "go-module",
            "go-module-binary-cataloger",
            "go-module-buildinfo-entry",
        ),
    };
    let location = if purl_type == "npm" {
        file.rsplit_once('/')
            .map(|(d, _)| format!("{d}/package.json"))
            .unwrap_or_default()
    } else {
        file.to_string()
    };
    let artifact = json!({
        "id": artifact_id(&purl), "name": name, "version": version, "type": syft_type, "foundBy": found_by,
        "locations": [{"path": location, "layerID": "sha256:bbde741e108b834eb4caf4f0e50b981f1d58f8cd5a6745e58883caf620760d42", "accessPath": location, "annotations": {"evidence": "primary"}}],
        "licenses": [], "language": language,
        "cpes": [{"cpe": format!("cpe:2.3:a:{0}:{0}:{version}:*:*:*:*:*:*:*", name.rsplit('/').next().unwrap_or(name)), "source": "syft-generated"}],
        "purl": purl, "metadataType": metadata_type,
        "metadata": {"files": [{"path": file}]},
    });
    Package {
        artifact,
        purl,
        name: name.to_string(),
        version: version.to_string(),
        marker_file: file.to_string(),
    }
}

fn generated(rng: &mut Rng) -> ImageContent {
    let debian = rng.below(3) != 0;
    let (kind, templates, distro, distro_json, grype_distro) = if debian {
        (
            "deb",
            DEB,
            "debian-12",
            json!({"prettyName": "Debian GNU/Linux 12 (bookworm)", "name": "Debian GNU/Linux", "id": "debian", "version": "12 (bookworm)", "versionID": "12", "versionCodename": "bookworm"}),
            json!({"name": "debian", "version": "12", "idLike": []}),
        )
    } else {
        (
            "apk",
            APK,
            "alpine-3.19.0",
            json!({"prettyName": "Alpine Linux v3.19", "name": "Alpine Linux", "id": "alpine", "versionID": "3.19.0"}),
            json!({"name": "alpine", "version": "3.19.0", "idLike": []}),
        )
    };
    let mut packages: Vec<Package> = templates
        .iter()
        .filter(|_| rng.unit() < 0.8)
        .map(|t| os_package(kind, t, distro))
        .collect();
    let ecosystems = ["npm", "python", "go"];
    let wanted = rng.below(3);
    let start = rng.below(3) as usize;
    for e in (0..wanted as usize).map(|k| ecosystems[(start + k) % 3]) {
        packages.extend(
            LANG.iter()
                .filter(|l| l.0 == e)
                .filter(|_| rng.unit() < 0.85)
                .map(lang_package),
        );
    }
    let share = 0.10 + 0.30 * rng.unit();
    let mut loaded: BTreeSet<usize> = (0..packages.len()).filter(|_| rng.unit() < share).collect();
    if loaded.is_empty() && !packages.is_empty() {
        loaded.insert(0);
    }
    let matches = generated_matches(rng, &packages, kind, true);
    ImageContent {
        packages,
        matches,
        loaded,
        distro: distro_json,
        grype_distro,
        schema: syft_schema(),
    }
}

fn synthetic_npm(rng: &mut Rng, packages: usize, cves_per_package: usize) -> ImageContent {
    const WORDS: &[&str] = &[
        "array", "buffer", "cache", "date", "event", "fetch", "glob", "hash", "json", "kv", "log",
        "mime", "node", "path", "queue", "retry", "stream", "tar", "url", "yaml",
    ];
    let pkgs: Vec<Package> = (0..packages)
        .map(|i| {
            let name = format!(
                "{}-{}-{i}",
                WORDS[i % WORDS.len()],
                WORDS[(i / WORDS.len()) % WORDS.len()]
            );
            let version = format!("{}.{}.{}", 1 + rng.below(4), rng.below(20), rng.below(10));
            let file = format!("/app/node_modules/{name}/index.js");
            lang_package(&("npm", "npm", name.as_str(), version.as_str(), file.as_str()))
        })
        .collect();
    let mut matches = Vec::with_capacity(packages * cves_per_package);
    for (i, p) in pkgs.iter().enumerate() {
        for _ in 0..cves_per_package {
            let cve = cve_id(rng);
            matches.push(Match {
                grype: grype_match(rng, p, "npm", &cve),
                package: i,
                late: false,
            });
        }
    }
    let loaded = (0..packages).filter(|_| rng.unit() < 0.2).collect();
    ImageContent {
        packages: pkgs,
        matches,
        loaded,
        distro: json!({"prettyName": "Debian GNU/Linux 12 (bookworm)", "name": "Debian GNU/Linux", "id": "debian", "versionID": "12"}),
        grype_distro: json!({"name": "debian", "version": "12", "idLike": []}),
        schema: syft_schema(),
    }
}

fn syft_schema() -> Value {
    json!({"version": "16.0.7", "url": "https://raw.githubusercontent.com/anchore/syft/main/schema/json/schema-16.0.7.json"})
}

fn cve_id(rng: &mut Rng) -> String {
    format!("CVE-{}-{}", 2018 + rng.below(7), 1000 + rng.below(49000))
}

/// CVEs per upstream group for OS packages (so libssl3 and openssl share theirs), per package otherwise.
fn generated_matches(
    rng: &mut Rng,
    packages: &[Package],
    os_kind: &str,
    with_quirks: bool,
) -> Vec<Match> {
    let mut by_group: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut out = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let group = p
            .artifact
            .pointer("/metadata/source")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&p.name)
            .to_string();
        let cves = by_group
            .entry(group)
            .or_insert_with(|| {
                let n = [0, 0, 1, 1, 2, 3, 4][rng.below(7) as usize];
                (0..n).map(|_| cve_id(rng)).collect()
            })
            .clone();
        let kind = p.artifact["type"].as_str().unwrap_or(os_kind).to_string();
        for cve in cves {
            let late = with_quirks && rng.unit() < 0.07;
            let grype = grype_match(rng, p, &kind, &cve);
            if with_quirks && rng.unit() < 0.03 {
                // A second matcher reporting the same CVE for the same package (CPE vs distro).
                let mut twin = grype.clone();
                twin["vulnerability"]["namespace"] = json!("nvd:cpe");
                twin["vulnerability"]["dataSource"] =
                    json!(format!("https://nvd.nist.gov/vuln/detail/{cve}"));
                twin["matchDetails"][0]["type"] = json!("cpe-match");
                out.push(Match {
                    grype: twin,
                    package: i,
                    late,
                });
            }
            out.push(Match {
                grype,
                package: i,
                late,
            });
        }
    }
    out
}

fn grype_match(rng: &mut Rng, p: &Package, kind: &str, cve: &str) -> Value {
    const SEVERITIES: &[(&str, f64)] = &[
        ("Critical", 0.08),
        ("High", 0.27),
        ("Medium", 0.40),
        ("Low", 0.15),
        ("Negligible", 0.05),
        ("Unknown", 0.05),
    ];
    let mut x = rng.unit();
    let mut severity = "Unknown";
    for (s, w) in SEVERITIES {
        if x < *w {
            severity = s;
            break;
        }
        x -= w;
    }
    let (namespace, data_source) = match kind {
        "deb" => (
            "debian:distro:debian:12".to_string(),
            format!("https://security-tracker.debian.org/tracker/{cve}"),
        ),
        "apk" => (
            "alpine:distro:alpine:3.19".to_string(),
            format!("https://nvd.nist.gov/vuln/detail/{cve}"),
        ),
        other => (
            format!("github:language:{other}"),
            format!("https://nvd.nist.gov/vuln/detail/{cve}"),
        ),
    };
    let fixed = rng.unit() < 0.55;
    let fix = if fixed {
        json!({"versions": [bump(&p.version, rng)], "state": "fixed"})
    } else {
        json!({"versions": [], "state": if kind == "deb" && rng.below(4) == 0 { "wont-fix" } else { "not-fixed" }})
    };
    const WHAT: &[&str] = &[
        "A heap buffer overflow",
        "An integer overflow",
        "A use-after-free",
        "Improper input validation",
        "A NULL pointer dereference",
        "An out-of-bounds read",
    ];
    const EFFECT: &[&str] = &[
        "allows remote attackers to cause a denial of service",
        "may allow arbitrary code execution",
        "can disclose sensitive memory",
        "allows bypassing a security check",
    ];
    let description = format!(
        "{} in {} {} {}.",
        WHAT[rng.below(WHAT.len() as u64) as usize],
        p.name,
        p.version,
        EFFECT[rng.below(EFFECT.len() as u64) as usize]
    );
    let syft_type = p.artifact["type"].clone();
    json!({
        "vulnerability": {"id": cve, "dataSource": data_source, "namespace": namespace, "severity": severity,
                          "urls": [data_source], "description": description, "cvss": [], "fix": fix, "advisories": []},
        "relatedVulnerabilities": [{"id": cve, "dataSource": format!("https://nvd.nist.gov/vuln/detail/{cve}"), "namespace": "nvd:cpe", "severity": severity}],
        "matchDetails": [{"type": "exact-direct-match", "matcher": format!("{kind}-matcher"), "searchedBy": {"package": {"name": p.name, "version": p.version}}, "found": {"vulnerabilityID": cve}}],
        "artifact": {"id": p.artifact["id"], "name": p.name, "version": p.version, "type": syft_type,
                     "locations": p.artifact["locations"], "language": p.artifact["language"], "licenses": [],
                     "cpes": [], "purl": p.purl, "upstreams": []},
    })
}

/// A plausible fixed version: the last number in the version, plus one or two.
fn bump(version: &str, rng: &mut Rng) -> String {
    let bytes = version.as_bytes();
    let end = bytes.iter().rposition(|b| b.is_ascii_digit());
    match end {
        Some(end) => {
            let start = bytes[..=end]
                .iter()
                .rposition(|b| !b.is_ascii_digit())
                .map(|i| i + 1)
                .unwrap_or(0);
            let n: u64 = version[start..=end].parse().unwrap_or(0);
            format!(
                "{}{}{}",
                &version[..start],
                n + 1 + rng.below(2),
                &version[end + 1..]
            )
        }
        None => format!("{version}.1"),
    }
}

/// The advisories behind an image's Grype matches, one per (vulnerability, distro release,
/// source package), in the schema of the scanner-database builders under `tests/gotools`
/// (`{"id", "distro", "distro_version", "package", "fixed_version", "severity", "description"}`):
/// what a vulnerability database must hold for Grype and Trivy to report this image's matches.
/// Only distro matches (`<distro>:distro:<distro>:<version>` namespaces) become advisories.
pub fn advisories(digest: &str) -> Vec<Value> {
    let content = content_for(digest);
    let mut out = std::collections::BTreeMap::new();
    for m in &content.matches {
        let package = &content.packages[m.package];
        if let Some(advisory) = advisory_of_match(&m.grype, Some(&package.artifact)) {
            merge_advisory(&mut out, advisory);
        }
    }
    out.into_values().collect()
}

type AdvisoryKey = (String, String, String, String);

fn merge_advisory(out: &mut std::collections::BTreeMap<AdvisoryKey, Value>, advisory: Value) {
    let key = (
        advisory["id"].as_str().unwrap_or_default().to_string(),
        advisory["distro"].as_str().unwrap_or_default().to_string(),
        advisory["distro_version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        advisory["package"].as_str().unwrap_or_default().to_string(),
    );
    // Binary packages of one source may carry different fix versions: any of them is above
    // every installed version, so the first is kept; a known fix wins over none.
    match out.get(&key) {
        Some(existing) if !existing["fixed_version"].is_null() => {}
        _ => {
            out.insert(key, advisory);
        }
    }
}

/// The advisory a Grype match was found in: distro databases key advisories by *source*
/// package (openssl, not libssl3), which Grype searched by for an indirect match.
fn advisory_of_match(grype: &Value, artifact: Option<&Value>) -> Option<Value> {
    let namespace = grype.pointer("/vulnerability/namespace")?.as_str()?;
    let mut parts = namespace.split(':');
    let (distro, kind, _, version) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if kind != "distro" {
        return None;
    }
    let details = grype["matchDetails"].as_array()?.first()?;
    let searched = details
        .pointer("/searchedBy/package/name")
        .and_then(Value::as_str);
    let source = artifact.and_then(source_package);
    let package = match details["type"].as_str() {
        Some("exact-indirect-match") => searched.or(source.as_deref()),
        _ => source.as_deref().or(searched),
    }?;
    let fixed = grype
        .pointer("/vulnerability/fix/state")
        .and_then(Value::as_str)
        == Some("fixed");
    let fixed_version = grype
        .pointer("/vulnerability/fix/versions/0")
        .filter(|_| fixed)
        .cloned()
        .unwrap_or(Value::Null);
    Some(json!({
        "id": grype.pointer("/vulnerability/id")?,
        "distro": distro,
        "distro_version": version,
        "package": package,
        "fixed_version": fixed_version,
        "severity": grype.pointer("/vulnerability/severity").cloned().unwrap_or(json!("Unknown")),
        "description": grype.pointer("/vulnerability/description").cloned().unwrap_or(json!("")),
    }))
}

/// A Syft artifact's source package: `metadata.source` (dpkg), `metadata.originPackage` (apk),
/// else the purl's `upstream` qualifier, else the package's own name (it is its own source).
pub(crate) fn source_package(artifact: &Value) -> Option<String> {
    let metadata = &artifact["metadata"];
    for key in ["source", "originPackage"] {
        if let Some(source) = metadata[key].as_str().filter(|s| !s.is_empty()) {
            // dpkg writes "glibc (2.36-9)" when the source version differs.
            return Some(source.split(' ').next().unwrap_or(source).to_string());
        }
    }
    let purl = artifact["purl"].as_str()?;
    purl_qualifier(purl, "upstream")
        .map(|u| u.split("%40").next().unwrap_or(u).to_string())
        .or_else(|| artifact["name"].as_str().map(str::to_string))
}

/// A purl qualifier's value as written (no percent-decoding: the fixtures' values need none).
fn purl_qualifier<'a>(purl: &'a str, key: &str) -> Option<&'a str> {
    let query = purl.split('#').next()?.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        pair.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}
