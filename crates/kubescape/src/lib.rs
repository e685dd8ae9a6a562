//! What vexxy knows about Kubescape, in one place, shared by the stages that talk to it and by
//! the kubesim emulator (so emulated and real objects go through the same parser).
//!
//! Source of truth: `shared/reference/kubescape-facts.md`.

pub mod error;
pub mod from_bytes;
pub mod keys;
pub mod manifest;
pub mod metadata_only;
pub mod names;
pub mod object;
pub mod profile;
pub mod sbom;
pub mod summary;
pub mod vex;
mod vex_stream;

pub use error::ParseError;
pub use manifest::{
    GrypeDocument, GrypeMatch, KubescapeManifest, read_grype_document, read_manifest,
};
pub use object::ObjectInfo;
pub use profile::{Completion, ContainerProfileInfo, ProfileStatus, read_container_profile};
pub use sbom::{
    KubescapeSbom, SbomKind, SyftArtifact, SyftDocument, read_sbom, read_syft_document,
};
pub use summary::{KubescapeSummary, read_summary};
pub use vex::{Finding, Justification, KubescapeVex, KubevulnShape, VexStatus, read_vex};
