//! What vexxy knows about Kubescape, in one place, shared by the stages that talk to it and by
//! the kubesim emulator (so emulated and real objects go through the same parser).
//!
//! Source of truth: `shared/reference/kubescape-facts.md`.

pub mod cluster;
pub mod names;
