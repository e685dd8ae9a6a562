//! kubesim: a local Kubernetes API server with controllers and a Kubescape emulator, for tests
//! and the demo. Never a dependency of production code.
//!
//! Start one in-process with [`Server::start`], or run the `kubesim` binary.

// ApiError carries a full metav1.Status; boxing it everywhere would only add noise in a test server.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod app;
pub mod catalogue;
pub mod change_feed;
pub mod config;
pub mod controller_loop;
pub mod controllers;
pub mod discovery;
pub mod errors;
pub mod faults;
pub mod godur;
pub mod images;
pub mod kubescape;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod rng;
pub mod selectors;
pub mod serialized;
pub mod storage_queue;
pub mod store;
pub mod table;
pub mod upstream;
pub mod watch;

pub use app::{ControlError, Handle, Server, StartError, kubeconfig_yaml, write_kubeconfig};
pub use config::{
    Capabilities, Config, FailurePatterns, FaultRule, Faults, Generation, GenerationOverride,
    KubescapeConfig, Timings,
};
pub use errors::ApiError;
pub use faults::Counters;
