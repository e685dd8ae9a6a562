//! The parts of a package URL enrich reads, taken from the text as written: the `packageurl`
//! crate normalises names per type (pypi `PyYAML` → `pyyaml`) and refuses purls its type rules
//! reject, where a component keeps the name the SBOM gives.

/// The purl's name and version, percent-decoded.
pub fn name_version(purl: &str) -> (String, Option<String>) {
    let without_extras = purl.split(['?', '#']).next().unwrap_or(purl);
    let (path, version) = match without_extras.rsplit_once('@') {
        Some((path, version)) if !path.ends_with(':') => (path, Some(decode(version))),
        _ => (without_extras, None),
    };
    let name = path.rsplit('/').next().unwrap_or(path);
    let name = if name.is_empty() { purl } else { name };
    (decode(name), version)
}

/// A qualifier's value, percent-decoded.
pub fn qualifier(purl: &str, key: &str) -> Option<String> {
    let query = purl.split('#').next()?.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

/// Qualifiers each scanner spells its own way for the same package: Syft writes
/// `distro=debian-12` (os-release's `VERSION_ID`) and `upstream=<source package>`, Trivy
/// `distro=debian-12.7` (`/etc/debian_version`) and no `upstream`. Grype and Trivy match a VEX
/// purl (go-vex `PurlMatches`) only when each of its qualifiers is in the scanned package's purl,
/// so a subcomponent carrying them matches only the scanner whose spelling it copied.
const SCANNER_SPECIFIC_QUALIFIERS: [&str; 2] = ["distro", "upstream"];

/// `purl` without the [`SCANNER_SPECIFIC_QUALIFIERS`]: what identifies the package to every
/// scanner. The statement's product is the image by digest, so within it type, namespace, name,
/// version and the remaining qualifiers (`arch`, rpm's `epoch`) still name one package.
pub fn scanner_neutral(purl: &str) -> String {
    ScannerNeutral(purl).to_string()
}

/// [`scanner_neutral`] as it is written, without building a string: one per statement of a
/// document with tens of thousands.
pub struct ScannerNeutral<'a>(pub &'a str);

impl std::fmt::Display for ScannerNeutral<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (before_subpath, subpath) = match self.0.split_once('#') {
            Some((head, subpath)) => (head, Some(subpath)),
            None => (self.0, None),
        };
        let Some((base, query)) = before_subpath.split_once('?') else {
            return f.write_str(self.0);
        };
        f.write_str(base)?;
        let kept = query.split('&').filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !pair.is_empty() && !SCANNER_SPECIFIC_QUALIFIERS.contains(&key)
        });
        for (i, pair) in kept.enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            f.write_str(pair)?;
        }
        if let Some(subpath) = subpath {
            f.write_str("#")?;
            f.write_str(subpath)?;
        }
        Ok(())
    }
}

/// A Debian purl whose version carries an epoch, spelled Trivy's way: Syft keeps the epoch in
/// the version (`passwd@1:4.13+dfsg1-1+b1`), Trivy moves it to a qualifier
/// (`passwd@4.13+dfsg1-1+b1?epoch=1`), and go-vex compares versions as text. `None` for any
/// other purl.
pub fn epoch_as_qualifier(purl: &str) -> Option<String> {
    if !purl.starts_with("pkg:deb/") || purl.contains('#') {
        return None;
    }
    let (base, query) = match purl.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (purl, None),
    };
    let (path, version) = base.rsplit_once('@')?;
    let (epoch, rest) = version
        .split_once("%3A")
        .or_else(|| version.split_once("%3a"))
        .or_else(|| version.split_once(':'))?;
    if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    let qualifiers = match query {
        Some(query) if !query.is_empty() => format!("{query}&epoch={epoch}"),
        _ => format!("epoch={epoch}"),
    };
    Some(format!("{path}@{rest}?{qualifiers}"))
}

pub fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(byte) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_versions_and_qualifiers() {
        let purl = "pkg:deb/debian/login@1:4.13%2Bdfsg1-1%2Bb1?arch=amd64&upstream=shadow%401:4.13%2Bdfsg1-1&distro=debian-12";
        assert_eq!(
            name_version(purl),
            ("login".into(), Some("1:4.13+dfsg1-1+b1".into()))
        );
        assert_eq!(
            qualifier(purl, "upstream").as_deref(),
            Some("shadow@1:4.13+dfsg1-1")
        );
        assert_eq!(qualifier(purl, "distro").as_deref(), Some("debian-12"));
        assert_eq!(qualifier(purl, "missing"), None);
    }

    #[test]
    fn scanner_specific_qualifiers_are_dropped_and_epochs_spelled_both_ways() {
        let syft = "pkg:deb/debian/login@1:4.13%2Bdfsg1-1%2Bb1?arch=amd64&upstream=shadow%401:4.13%2Bdfsg1-1&distro=debian-12";
        let neutral = scanner_neutral(syft);
        assert_eq!(
            neutral,
            "pkg:deb/debian/login@1:4.13%2Bdfsg1-1%2Bb1?arch=amd64"
        );
        assert_eq!(
            epoch_as_qualifier(&neutral).as_deref(),
            Some("pkg:deb/debian/login@4.13%2Bdfsg1-1%2Bb1?arch=amd64&epoch=1")
        );
        assert_eq!(
            epoch_as_qualifier("pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1").as_deref(),
            Some("pkg:deb/debian/zlib1g@1.2.13.dfsg-1?epoch=1")
        );
        assert_eq!(
            scanner_neutral(
                "pkg:apk/alpine/libcrypto3@3.0.8-r0?arch=x86_64&distro=alpine-3.17.2&upstream=openssl"
            ),
            "pkg:apk/alpine/libcrypto3@3.0.8-r0?arch=x86_64"
        );
        assert_eq!(
            scanner_neutral("pkg:golang/a/b@v1?distro=x#sub/path"),
            "pkg:golang/a/b@v1#sub/path"
        );
        assert_eq!(
            scanner_neutral("pkg:npm/left-pad@1.3.0"),
            "pkg:npm/left-pad@1.3.0"
        );
        assert_eq!(
            epoch_as_qualifier("pkg:deb/debian/libc6@2.36-9?arch=amd64"),
            None
        );
        assert_eq!(epoch_as_qualifier("pkg:rpm/redhat/openssl@1:3.0.7"), None);
    }
}
