//! Creates (or brings up to date) the streams, the stage's durable consumer and the KV bucket.
//!
//! Any replica of any stage may start first, and a broker restart with memory storage loses
//! everything, so every stage provisions everything it touches, idempotently, at start and
//! whenever its consumer has to be rebuilt. Two replicas racing to create the same stream is
//! fine: the loser's create fails, and the retry finds the stream and updates it to the same
//! configuration.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use vexxy_events::{Stage, subjects};

use crate::config::{ConsumerTuning, StreamStorage};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Revisions of each job record kept in the KV bucket (enough to see the last transitions).
pub const STATUS_HISTORY: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot create or update stream {stream}: {source}")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    #[error("cannot create or update consumer {durable} on stream {stream}: {source}")]
    Consumer {
        stream: String,
        durable: String,
        #[source]
        source: async_nats::jetstream::stream::ConsumerError,
    },
    #[error("cannot create or update the KV bucket {bucket}: {source}")]
    KeyValue {
        bucket: String,
        #[source]
        source: async_nats::jetstream::context::CreateKeyValueError,
    },
}

/// What a stage needs after provisioning.
pub struct Provisioned {
    pub consumer: PullConsumer,
    pub status: kv::Store,
}

/// Provisions all three streams, the KV bucket and `stage`'s consumer.
///
/// The streams and the bucket do not depend on each other, so their requests go out together
/// (one round trip of waiting instead of five in a row); only the consumer waits for its stream.
pub async fn provision(
    js: &Context,
    stage: Stage,
    tuning: &ConsumerTuning,
) -> Result<Provisioned, ProvisionError> {
    let streams = futures::future::try_join_all(stream_configs(tuning).into_iter().map(
        |config| async move {
            let name = config.name.clone();
            js.create_or_update_stream(config)
                .await
                .map_err(|source| ProvisionError::Stream {
                    stream: name,
                    source,
                })
        },
    ));
    let bucket = async {
        js.create_or_update_key_value(kv::Config {
            bucket: subjects::STATUS_BUCKET.to_string(),
            description: "vexxy job status, one key per job id".to_string(),
            history: STATUS_HISTORY,
            max_age: 30 * DAY,
            storage: storage_type(tuning.stream_storage),
            num_replicas: tuning.stream_replicas,
            ..Default::default()
        })
        .await
        .map_err(|source| ProvisionError::KeyValue {
            bucket: subjects::STATUS_BUCKET.to_string(),
            source,
        })
    };
    let (_, status) = futures::future::try_join(streams, bucket).await?;
    let stream_name = subjects::input_stream_of(stage);
    let durable = subjects::durable_of(stage);
    let consumer = js
        .create_consumer_on_stream(consumer_config(stage, tuning), stream_name)
        .await
        .map_err(|source| ProvisionError::Consumer {
            stream: stream_name.to_string(),
            durable: durable.clone(),
            source,
        })?;
    Ok(Provisioned { consumer, status })
}

fn storage_type(storage: StreamStorage) -> StorageType {
    match storage {
        StreamStorage::File => StorageType::File,
        StreamStorage::Memory => StorageType::Memory,
    }
}

/// The three streams (see `vexxy_events::subjects` for why there are three).
pub fn stream_configs(tuning: &ConsumerTuning) -> Vec<stream::Config> {
    let common = stream::Config {
        storage: storage_type(tuning.stream_storage),
        num_replicas: tuning.stream_replicas,
        duplicate_window: tuning.duplicate_window,
        discard: DiscardPolicy::Old,
        ..Default::default()
    };
    vec![
        stream::Config {
            name: subjects::PUBLIC_STREAM.to_string(),
            description: Some("vexxy analysis requests, completed and failed events".to_string()),
            subjects: vec![subjects::PUBLIC_SUBJECTS.to_string()],
            retention: RetentionPolicy::Limits,
            max_age: 7 * DAY,
            ..common.clone()
        },
        stream::Config {
            name: subjects::PIPELINE_STREAM.to_string(),
            description: Some("vexxy hand-offs between stages (work queue)".to_string()),
            subjects: vec![subjects::PIPELINE_SUBJECTS.to_string()],
            retention: RetentionPolicy::WorkQueue,
            max_age: 7 * DAY,
            ..common.clone()
        },
        stream::Config {
            name: subjects::DEAD_LETTER_STREAM.to_string(),
            description: Some(
                "vexxy messages that could not be processed, kept for inspection and replay"
                    .to_string(),
            ),
            subjects: vec![subjects::DEAD_LETTER_SUBJECTS.to_string()],
            retention: RetentionPolicy::Limits,
            max_age: 30 * DAY,
            ..common
        },
    ]
}

/// The durable pull consumer shared by all replicas of `stage`.
pub fn consumer_config(stage: Stage, tuning: &ConsumerTuning) -> PullConfig {
    PullConfig {
        durable_name: Some(subjects::durable_of(stage)),
        description: Some(format!("vexxy {stage} stage")),
        filter_subject: subjects::input_of(stage),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: tuning.ack_wait,
        max_deliver: tuning.max_deliver,
        backoff: redelivery_backoff(tuning),
        // Never fewer outstanding messages than one replica may work on, and room for a few
        // replicas; the server's own default (1000) would let one replica hoard work.
        max_ack_pending: (tuning.max_in_flight as i64 * 8).max(64),
        num_replicas: 0,
        ..Default::default()
    }
}

/// Redelivery delays after an AckWait expiry (a crashed or stuck replica): the first equals
/// AckWait (the server takes AckWait from it), then doubling up to the retry cap. The server
/// requires fewer entries than MaxDeliver.
fn redelivery_backoff(tuning: &ConsumerTuning) -> Vec<Duration> {
    let entries = (tuning.max_deliver - 1).clamp(0, 10) as usize;
    let cap = tuning.retry_max_delay.max(tuning.ack_wait);
    let mut delay = tuning.ack_wait;
    let mut backoff = Vec::with_capacity(entries);
    for _ in 0..entries {
        backoff.push(delay);
        delay = (delay * 2).min(cap);
    }
    backoff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, RuntimeConfig};

    #[test]
    fn backoff_starts_at_ack_wait_and_is_shorter_than_max_deliver() {
        let config = RuntimeConfig::load(&Env::from_pairs(&[
            ("VEXXY_ACK_WAIT", "2s"),
            ("VEXXY_MAX_DELIVER", "4"),
            ("VEXXY_RETRY_MAX_DELAY", "5s"),
        ]))
        .unwrap();
        let backoff = redelivery_backoff(&config.consumer);
        assert_eq!(
            backoff,
            vec![
                Duration::from_secs(2),
                Duration::from_secs(4),
                Duration::from_secs(5)
            ]
        );
        let single = RuntimeConfig::load(&Env::from_pairs(&[("VEXXY_MAX_DELIVER", "1")])).unwrap();
        assert!(redelivery_backoff(&single.consumer).is_empty());
    }
}
