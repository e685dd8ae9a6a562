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
}
