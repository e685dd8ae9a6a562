//! The files a scanner reads from an emulated image: the OS release files and the package
//! database (apk's `lib/apk/db/installed`, dpkg's `var/lib/dpkg/status`), written from the same
//! packages kubesim's Kubescape reports for that digest. Pushed to a real registry as one layer,
//! they let `trivy image` scan the image vexxy analysed and find the packages Syft found.
//!
//! Only OS packages are written (the fixture images hold no others); files are the database
//! entries, not the packages' contents, which no scanner here needs.

use serde_json::Value;

use super::content::{content_for, source_package};

/// The Debian point release written to `etc/debian_version`. Real images carry one ("12.7"),
/// while Syft's purls say `distro=debian-12` (from `VERSION_ID`), and Trivy's say
/// `distro=debian-12.7`: the images must show that difference as real ones do.
const DEBIAN_POINT_RELEASE: &str = "7";

/// `(path inside the image, contents)` of the image with `digest`, sorted by path.
pub fn image_files(digest: &str) -> Vec<(String, Vec<u8>)> {
    let content = content_for(digest);
    let distro_id = content.distro["id"].as_str().unwrap_or_default();
    let version = content.distro["versionID"].as_str().unwrap_or_default();
    let artifacts: Vec<&Value> = content.packages.iter().map(|p| &p.artifact).collect();
    let mut files = match distro_id {
        "alpine" => vec![
            ("etc/alpine-release".to_string(), format!("{version}\n")),
            (
                "lib/apk/db/installed".to_string(),
                apk_installed(&artifacts),
            ),
        ],
        "debian" => vec![
            (
                "etc/debian_version".to_string(),
                format!("{version}.{DEBIAN_POINT_RELEASE}\n"),
            ),
            ("var/lib/dpkg/status".to_string(), dpkg_status(&artifacts)),
        ],
        _ => Vec::new(),
    };
    files.push(("etc/os-release".to_string(), os_release(&content.distro)));
    files.sort();
    files
        .into_iter()
        .map(|(path, text)| (path, text.into_bytes()))
        .collect()
}

fn os_release(distro: &Value) -> String {
    [
        ("PRETTY_NAME", "prettyName"),
        ("NAME", "name"),
        ("ID", "id"),
        ("VERSION", "version"),
        ("VERSION_ID", "versionID"),
        ("VERSION_CODENAME", "versionCodename"),
        ("HOME_URL", "homeURL"),
    ]
    .iter()
    .filter_map(|(key, field)| {
        let value = distro[*field].as_str().filter(|v| !v.is_empty())?;
        Some(format!("{key}=\"{value}\"\n"))
    })
    .collect()
}

fn field<'a>(artifact: &'a Value, name: &str) -> &'a str {
    artifact["metadata"][name].as_str().unwrap_or_default()
}

/// apk's database: one stanza per package, `P:` name, `V:` version, `A:` arch, `o:` origin
/// (the source package advisories are filed under).
fn apk_installed(artifacts: &[&Value]) -> String {
    let mut out = String::new();
    for artifact in artifacts.iter().filter(|a| a["type"] == "apk") {
        let name = field(artifact, "package");
        let origin = source_package(artifact).unwrap_or_else(|| name.to_string());
        let license = artifact["licenses"][0]["value"]
            .as_str()
            .unwrap_or_default();
        out.push_str(&format!(
            "P:{name}\nV:{}\nA:{}\no:{origin}\nL:{license}\n\n",
            field(artifact, "version"),
            field(artifact, "architecture"),
        ));
    }
    out
}

/// dpkg's status file: one paragraph per installed package, `Source:` with its version when
/// the binary's differs (as dpkg writes it).
fn dpkg_status(artifacts: &[&Value]) -> String {
    let mut out = String::new();
    for artifact in artifacts.iter().filter(|a| a["type"] == "deb") {
        let name = field(artifact, "package");
        let version = field(artifact, "version");
        out.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nArchitecture: {}\n",
            field(artifact, "architecture")
        ));
        let source = field(artifact, "source");
        let source_version = field(artifact, "sourceVersion");
        match (source, source_version) {
            ("", _) => {}
            (source, "") => out.push_str(&format!("Source: {source}\n")),
            (source, source_version) if source_version != version => {
                out.push_str(&format!("Source: {source} ({source_version})\n"))
            }
            (source, _) => out.push_str(&format!("Source: {source}\n")),
        }
        out.push_str(&format!("Version: {version}\nDescription: {name}\n\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{
        ALPINE_FIXTURE_DIGEST, NGINX_DEBIAN9_FIXTURE_DIGEST, NGINX_FIXTURE_DIGESTS,
    };

    fn text(files: &[(String, Vec<u8>)], path: &str) -> String {
        let (_, bytes) = files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no {path}"));
        String::from_utf8(bytes.clone()).expect("text")
    }

    #[test]
    fn the_alpine_fixture_lists_its_packages_with_their_origins() {
        let files = image_files(ALPINE_FIXTURE_DIGEST);
        assert_eq!(text(&files, "etc/alpine-release"), "3.17.2\n");
        let installed = text(&files, "lib/apk/db/installed");
        assert_eq!(installed.matches("\nP:").count() + 1, 15);
        assert!(installed.contains("P:libcrypto3\nV:3.0.8-r0\nA:x86_64\no:openssl\n"));
        assert!(text(&files, "etc/os-release").contains("VERSION_ID=\"3.17.2\""));
    }

    #[test]
    fn the_nginx_fixture_keeps_source_versions_and_epochs() {
        let files = image_files(NGINX_FIXTURE_DIGESTS[0]);
        assert_eq!(text(&files, "etc/debian_version"), "12.7\n");
        let status = text(&files, "var/lib/dpkg/status");
        assert!(status.contains(
            "Package: passwd\nStatus: install ok installed\nArchitecture: amd64\n\
             Source: shadow (1:4.13+dfsg1-1)\nVersion: 1:4.13+dfsg1-1+b1\n"
        ));
        assert!(status.contains("Source: glibc\nVersion: 2.36-9+deb12u6\n"));
        assert_eq!(
            status.matches("Package: ").count(),
            content_for(NGINX_FIXTURE_DIGESTS[0]).packages.len()
        );
    }

    #[test]
    fn the_debian9_fixture_is_the_report_s_packages_on_arm64() {
        let files = image_files(NGINX_DEBIAN9_FIXTURE_DIGEST);
        assert_eq!(text(&files, "etc/debian_version"), "9.7\n");
        let status = text(&files, "var/lib/dpkg/status");
        assert_eq!(status.matches("Package: ").count(), 61);
        assert!(status.contains(
            "Package: bsdutils\nStatus: install ok installed\nArchitecture: arm64\n\
             Source: util-linux (2.29.2-1+deb9u1)\n"
        ));
        let content = content_for(NGINX_DEBIAN9_FIXTURE_DIGEST);
        assert_eq!(content.matches.len(), 456);
        assert!(!content.loaded.is_empty() && content.loaded.len() < content.packages.len());
    }
}
