//! Parsing of container image references (`[registry/]path[:tag][@sha256:...]`).
//!
//! The grammar is the Docker/OCI distribution reference grammar, restricted to what vexxy can
//! pin: only `sha256` digests. Docker Hub short names are normalised the way `docker pull` does
//! (`nginx` -> `docker.io/library/nginx`), so the allowlist and the job record always see the
//! fully qualified repository.

use super::text::{describe_char, shorten};

/// The registry Docker Hub images resolve to, after normalisation.
pub const DOCKER_HUB: &str = "docker.io";
/// Hostnames that mean Docker Hub and are normalised to [`DOCKER_HUB`].
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];
/// Longest repository name (registry included) registries accept.
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// Registry host[:port], lowercase, Docker Hub aliases normalised to `docker.io`.
    pub registry: String,
    /// Repository path inside the registry (`library/nginx`, `owner/repo`).
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>` when the reference was pinned with `@`.
    pub digest: Option<String>,
    /// The reference as written, without its `@digest` part.
    pub without_digest: String,
}

impl ImageReference {
    /// `registry/path`, e.g. `docker.io/library/nginx`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.path)
    }
}

/// Why an image reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// The reference itself is malformed; the message says which part and why.
    #[error("{0}")]
    Reference(String),
    /// The `@...` part is not a `sha256:` digest of 64 lowercase hex digits.
    #[error("{0}")]
    Digest(String),
}

/// True for `sha256:` followed by exactly 64 lowercase hex digits.
pub fn is_valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What to tell a user whose digest is malformed.
pub fn digest_problem(digest: &str) -> String {
    let shown = shorten(digest, 80);
    match digest.split_once(':') {
        None => format!(
            "`{shown}` is not a digest: expected `sha256:` followed by 64 lowercase hex digits"
        ),
        Some((algorithm, _)) if algorithm != "sha256" => format!(
            "digest algorithm `{}` is not supported: vexxy pins images by `sha256:` followed by 64 \
             lowercase hex digits",
            shorten(algorithm, 20)
        ),
        Some((_, hex)) if hex.bytes().any(|b| b.is_ascii_uppercase()) => format!(
            "digest `{shown}` contains uppercase hex digits: write it in lowercase, as registries \
             report it"
        ),
        Some((_, hex)) => format!(
            "digest `{shown}` has {} characters after `sha256:` but needs exactly 64 lowercase \
             hex digits (0-9, a-f)",
            hex.chars().count()
        ),
    }
}

/// Parses and normalises `reference`.
pub fn parse_image_reference(reference: &str) -> Result<ImageReference, ImageRefError> {
    let bad = |why: String| Err(ImageRefError::Reference(why));
    if reference.is_empty() {
        return bad("image_ref is empty: give a repository such as `ghcr.io/owner/repo`".into());
    }
    if let Some(c) = reference
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return bad(format!(
            "image_ref `{}` contains {}: image references have no spaces or control characters",
            shorten(reference, 80),
            describe_char(c)
        ));
    }

    let parts = split_image_reference(reference);
    let digest = match parts.digest {
        Some(digest) if digest.contains('@') => {
            return bad(format!(
                "image_ref `{}` contains more than one `@`: use `repository[:tag]@sha256:<hex>`",
                shorten(reference, 80)
            ));
        }
        Some(digest) if !is_valid_digest(digest) => {
            return Err(ImageRefError::Digest(format!(
                "the digest in image_ref is invalid: {}",
                digest_problem(digest)
            )));
        }
        digest => digest.map(str::to_string),
    };
    let (name, tag) = (parts.name, parts.tag);
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    if name.is_empty() {
        return bad(format!(
            "image_ref `{}` has no repository name",
            shorten(reference, 80)
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return bad(format!(
            "image_ref repository name is {} characters long; registries accept at most {MAX_NAME_LEN}",
            name.len()
        ));
    }

    let path_components: Vec<&str> = parts.path.split('/').collect();
    let registry = match parts.registry {
        Some(registry) => {
            check_registry(registry)?;
            registry.to_ascii_lowercase()
        }
        None => DOCKER_HUB.to_string(),
    };
    let registry = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    for component in &path_components {
        check_path_component(component, name)?;
    }
    let mut path = parts.path.to_string();
    if registry == DOCKER_HUB && path_components.len() == 1 {
        path = format!("library/{path}");
    }

    Ok(ImageReference {
        registry,
        path,
        tag: tag.map(str::to_string),
        digest,
        without_digest: parts.without_digest.to_string(),
    })
}

/// The parts of `[registry/]path[:tag][@digest]`, split as written: nothing is checked or
/// normalised. The one place that knows where a reference's parts begin and end, for the
/// request's strict parser and for references written by others (scanner reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceParts<'a> {
    /// The first path component, when it names a host: it contains `.` or `:` or is
    /// `localhost`, and more follows (`localhost:5000/app`; `nginx` is a Docker Hub path).
    pub registry: Option<&'a str>,
    /// The repository path after the registry (`library/nginx`, `nginx`).
    pub path: &'a str,
    /// `registry/path` as written.
    pub name: &'a str,
    pub tag: Option<&'a str>,
    /// Everything after the first `@`.
    pub digest: Option<&'a str>,
    /// The reference without its `@digest` part.
    pub without_digest: &'a str,
}

/// Splits `reference` into its parts (see [`ReferenceParts`]).
pub fn split_image_reference(reference: &str) -> ReferenceParts<'_> {
    let (without_digest, digest) = match reference.split_once('@') {
        Some((before, digest)) => (before, Some(digest)),
        None => (reference, None),
    };
    // The tag separator is the last ':' after the last '/', so `localhost:5000/app` has no tag.
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match without_digest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&without_digest[..at], Some(&without_digest[at + 1..]))
        }
        None => (without_digest, None),
    };
    let (registry, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    };
    ReferenceParts {
        registry,
        path,
        name,
        tag,
        digest,
        without_digest,
    }
}

fn check_tag(tag: &str) -> Result<(), ImageRefError> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= MAX_TAG_LEN {
        Ok(())
    } else {
        Err(ImageRefError::Reference(format!(
            "image_ref tag `{}` is invalid: a tag is 1-{MAX_TAG_LEN} characters of letters, digits, \
             `_`, `.` and `-`, not starting with `.` or `-`",
            shorten(tag, 80)
        )))
    }
}

fn check_registry(registry: &str) -> Result<(), ImageRefError> {
    let bad = || {
        Err(ImageRefError::Reference(format!(
            "image_ref registry `{}` is not a valid host[:port] (e.g. `ghcr.io`, `localhost:5000`)",
            shorten(registry, 80)
        )))
    };
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return bad();
    }
    let labels_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if labels_ok { Ok(()) } else { bad() }
}

/// A path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn check_path_component(component: &str, name: &str) -> Result<(), ImageRefError> {
    if component.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ImageRefError::Reference(format!(
            "image_ref repository `{}` contains uppercase letters: repository names must be \
             lowercase (registries reject `{}`; write `{}`)",
            shorten(name, 80),
            shorten(component, 40),
            shorten(&component.to_ascii_lowercase(), 40)
        )));
    }
    if component.is_empty() {
        Err(ImageRefError::Reference(format!(
            "image_ref repository `{}` has an empty path component (`//` or a trailing `/`): \
             remove the extra `/`",
            shorten(name, 80)
        )))
    } else if is_valid_path_component(component) {
        Ok(())
    } else {
        Err(ImageRefError::Reference(format!(
            "image_ref repository `{}` has an invalid path component `{}`: components are \
             lowercase letters and digits, separated by `.`, `_`, `__` or dashes, and may not be \
             empty or start or end with a separator",
            shorten(name, 80),
            shorten(component, 40)
        )))
    }
}

fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // An alphanumeric run is required here.
        let start = i;
        while i < bytes.len() && is_alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // A separator: `.`, `_`, `__` or one or more `-`.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_component_grammar() {
        for good in [
            "a", "nginx", "my.app", "my_app", "my__app", "my---app", "a1-b2.c3",
        ] {
            assert!(is_valid_path_component(good), "{good} should be valid");
        }
        for bad in [
            "", "-a", "a-", "a..b", "a___b", "_a", "a.", "a b", "a/b", "é",
        ] {
            assert!(!is_valid_path_component(bad), "{bad} should be invalid");
        }
    }

    #[test]
    fn registry_port_and_tag_are_told_apart() {
        let r = parse_image_reference("localhost:5000/team/app:1.2").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.path, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let r = parse_image_reference("localhost:5000/app").unwrap();
        assert_eq!(r.tag, None);
    }

    #[test]
    fn docker_hub_aliases_normalise() {
        for (input, repo) in [
            ("nginx", "docker.io/library/nginx"),
            ("bitnami/redis", "docker.io/bitnami/redis"),
            ("index.docker.io/nginx", "docker.io/library/nginx"),
            ("registry-1.docker.io/owner/app", "docker.io/owner/app"),
            ("docker.io/library/nginx:1.25", "docker.io/library/nginx"),
        ] {
            assert_eq!(parse_image_reference(input).unwrap().repository(), repo);
        }
    }

    #[test]
    fn digest_grammar() {
        let hex = "a".repeat(64);
        assert!(is_valid_digest(&format!("sha256:{hex}")));
        assert!(!is_valid_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(!is_valid_digest(&format!("sha512:{hex}")));
        assert!(!is_valid_digest(&format!("sha256:{}", &hex[1..])));
        assert!(!is_valid_digest(&hex));
    }
}
