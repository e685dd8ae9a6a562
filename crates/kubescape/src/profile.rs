//! ContainerProfile (workload namespace, named by the instance slug): node-agent's record of what
//! a container executed and opened, and whether learning is over.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ParseError;
use crate::keys::{self, kinds};
use crate::metadata_only::has_content;
use crate::object::{ObjectInfo, null_as_default, read_envelope, typed};

const KIND: &str = kinds::CONTAINER_PROFILE;

/// `kubescape.io/status` of a profile (node-agent `monitoring.go`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ProfileStatus {
    Initializing,
    /// `ready`: still learning; profiles are saved periodically.
    Learning,
    /// `completed`: learning is over.
    Completed,
    Failed,
    TooLarge,
    MissingRuntime,
    /// A value this version of vexxy does not know; kept verbatim.
    Other(String),
}

impl ProfileStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "initializing" => ProfileStatus::Initializing,
            "ready" => ProfileStatus::Learning,
            "completed" => ProfileStatus::Completed,
            "failed" => ProfileStatus::Failed,
            "too-large" => ProfileStatus::TooLarge,
            "missing-runtime" => ProfileStatus::MissingRuntime,
            other => ProfileStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ProfileStatus::Initializing => "initializing",
            ProfileStatus::Learning => "ready",
            ProfileStatus::Completed => "completed",
            ProfileStatus::Failed => "failed",
            ProfileStatus::TooLarge => "too-large",
            ProfileStatus::MissingRuntime => "missing-runtime",
            ProfileStatus::Other(s) => s,
        }
    }

    /// Learning failed (`failed`, `too-large`, `missing-runtime`): kubevuln writes no relevancy
    /// VEX for the profile, and the profile will not recover.
    pub fn learning_failed(&self) -> bool {
        matches!(
            self,
            ProfileStatus::Failed | ProfileStatus::TooLarge | ProfileStatus::MissingRuntime
        )
    }
}

/// `kubescape.io/completion`: `partial` for containers that were running before node-agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Completion {
    Complete,
    Partial,
    Other(String),
}

impl Completion {
    pub fn parse(s: &str) -> Self {
        match s {
            "complete" => Completion::Complete,
            "partial" => Completion::Partial,
            other => Completion::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Completion::Complete => "complete",
            Completion::Partial => "partial",
            Completion::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileExec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileOpen {
    #[serde(default, deserialize_with = "null_as_default")]
    pub path: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ProfileSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    execs: Vec<ProfileExec>,
    #[serde(default, deserialize_with = "null_as_default")]
    opens: Vec<ProfileOpen>,
    #[serde(rename = "imageID", default)]
    image_id: Option<String>,
    #[serde(rename = "imageTag", default)]
    image_tag: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerProfileInfo {
    pub object: ObjectInfo,
    /// None when the annotation is absent or empty (the operator treats that like `ready`).
    pub status: Option<ProfileStatus>,
    pub completion: Option<Completion>,
    pub instance_id: Option<String>,
    pub wlid: Option<String>,
    /// `kubescape.io/learning-period` label, when node-agent set one.
    pub learning_period: Option<String>,
    pub image_id: Option<String>,
    pub image_tag: Option<String>,
    pub execs: Vec<ProfileExec>,
    pub opens: Vec<ProfileOpen>,
    /// False for a metadata-only view (LIST without fullSpec, GET with `resourceVersion=metadata`,
    /// a watch event): its spec is the zero value, so execs/opens are unknown.
    pub spec_present: bool,
}

impl ContainerProfileInfo {
    /// Learning is over (`completed`); with `complete` completion the profile covers the whole run.
    pub fn learning_finished(&self) -> bool {
        self.status == Some(ProfileStatus::Completed)
    }

    /// What kubevuln needs before it writes a relevancy VEX: completion `complete` and status
    /// `ready` or `completed` (facts §1).
    pub fn relevancy_scan_possible(&self) -> bool {
        self.completion == Some(Completion::Complete)
            && matches!(
                self.status,
                Some(ProfileStatus::Learning | ProfileStatus::Completed)
            )
    }

    /// Every path the container executed or opened.
    pub fn loaded_paths(&self) -> impl Iterator<Item = &str> {
        self.execs
            .iter()
            .map(|e| e.path.as_str())
            .chain(self.opens.iter().map(|o| o.path.as_str()))
    }
}

pub fn read_container_profile(object: &Value) -> Result<ContainerProfileInfo, ParseError> {
    let info = read_envelope(object, &[KIND])?;
    let (spec, spec_present) = match object.get("spec") {
        Some(spec @ Value::Object(_)) if has_content(Some(spec)) => {
            (typed(spec, KIND, &info.name, "spec")?, true)
        }
        _ => (ProfileSpec::default(), false),
    };
    let ann = |k: &str| info.annotation(k).map(str::to_string);
    Ok(ContainerProfileInfo {
        status: info.annotation(keys::STATUS).map(ProfileStatus::parse),
        completion: info.annotation(keys::COMPLETION).map(Completion::parse),
        instance_id: ann(keys::INSTANCE_ID),
        wlid: ann(keys::WLID),
        learning_period: info.label(keys::LEARNING_PERIOD).map(str::to_string),
        image_id: spec.image_id.filter(|s| !s.is_empty()),
        image_tag: spec.image_tag.filter(|s| !s.is_empty()),
        execs: spec.execs,
        opens: spec.opens,
        spec_present,
        object: info,
    })
}
