//! The stage runtime against a real nats-server (and s3s-fs for the store).
//!
//! Each test starts its own server(s) and runs stages in this process through `run_with`.

mod support;

mod background;
mod delivery;
mod failures;
mod intake;
mod process;
mod recovery;
mod status;
mod store;
