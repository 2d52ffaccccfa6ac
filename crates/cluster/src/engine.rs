//! The engine: the JetStream objects of one cluster and the few operations
//! the cluster needs on them.
//!
//! It creates (or opens) the streams, buckets and object store of
//! cluster.md §3 with the configured replicas, and offers: append an input
//! (deduplicated by message id), subscribe to a daemon's inputs as the
//! server republishes them, append an output only if the subject's last
//! sequence is the expected one, read a subject back, and get, create,
//! compare-and-set and delete records and snapshot objects. It never
//! interprets records or snapshots (that is `record`, `seal` and `node`),
//! and never writes without the guard the operation needs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, kv, object_store, stream};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::config::{ClusterConfig, NatsAuth};
use crate::error::ClusterError;
use crate::layout::{Layout, origin_key, parse_origin_key};
use crate::version;

/// The largest snapshot object read back (a bound on untrusted sizes).
pub(crate) const MAX_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;

/// A snapshot read reserves at most this much before its bytes arrive
/// (a record names the size, but the record is only trusted once the
/// bytes match it).
const PRESIZED_READ_BYTES: usize = 64 * 1024 * 1024;

/// Snapshot objects are stored in chunks this large: each chunk costs a
/// round trip, and the default 128 KiB made a 1 MiB move wait for eight;
/// it stays below the server's default 1 MiB message limit.
const SNAPSHOT_CHUNK_BYTES: usize = 896 * 1024;

/// The consumer limit set on every stream of the cluster. From 2.15 the
/// server caps each stream at 1,000 consumers unless the stream says
/// otherwise; reads of subjects, object reads and watches take
/// short-lived ones, and a node that catches up many daemons at once (a
/// failover) holds one per daemon while it reads, so the default could
/// refuse reads in a large cluster (measured when a node kept one
/// consumer per hosted daemon: the 1,001st never started).
const MAX_CONSUMERS: i32 = 1_000_000;

/// Republished inputs buffered per hosted daemon before further copies are
/// dropped (and read from the stream instead): bounds a lagging node's
/// memory at this many inputs per daemon.
const LIVE_BUFFER: usize = 256;
/// How long a round trip on the live connection may take (a daemon task
/// waits for it before reading its subject).
const LIVE_ROUND_TRIP: Duration = Duration::from_secs(2);

/// How long inputs sent with the same idempotency key are deduplicated.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// An output append refused: someone else appended first.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The subject's last sequence is not the one expected (fenced).
    WrongLastSequence,
    /// Anything else.
    Engine(ClusterError),
}

/// A message read back from a subject.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub(crate) sequence: u64,
    pub(crate) payload: Bytes,
    /// When the server stored it (milliseconds since the Unix epoch).
    pub(crate) stored_at_ms: u64,
}

/// An input as the server republished it to the owner's live subject:
/// the stored message and the stream sequence of the message before it
/// on the same input subject (0 when there is none left: every earlier
/// input was purged). Only a previous sequence equal to the owner's last
/// applied input lets the owner apply the copy as it came.
#[derive(Clone, Debug)]
pub(crate) struct LiveInput {
    pub(crate) input: Stored,
    pub(crate) previous: u64,
}

/// The open JetStream objects of one cluster.
pub(crate) struct Engine {
    pub(crate) layout: Layout,
    pub(crate) client: async_nats::Client,
    /// The connection republished inputs arrive on (see `open`).
    live_client: async_nats::Client,
    /// Runs the live connection; stops with the engine.
    _live_thread: LiveThread,
    /// Made once: every input and output append publishes through it.
    js: jetstream::Context,
    pub(crate) inputs: stream::Stream,
    pub(crate) outputs: stream::Stream,
    pub(crate) owners: kv::Store,
    pub(crate) nodes: kv::Store,
    pub(crate) snapshots: object_store::ObjectStore,
    /// Counts the live connection's reconnections: copies in flight were
    /// lost, perhaps without a later one to reveal the gap, so every
    /// daemon checks its input subject.
    resyncs: watch::Receiver<u64>,
    /// The lease in force: the node bucket's max age. The first node to
    /// create the bucket sets it; a node configured otherwise follows it
    /// (a node that believed a longer lease than its entry lives would
    /// keep writing after the others failed it over).
    pub(crate) lease: Duration,
}

impl Engine {
    /// Checks every server's version, connects, and opens or creates the
    /// cluster's objects.
    ///
    /// # Errors
    /// `Version` for a server older than 2.10 or without JetStream (checked
    /// before the client connects), `Connect`, `Engine`.
    pub(crate) async fn open(config: &ClusterConfig, layout: Layout) -> Result<Self, ClusterError> {
        let servers = config.servers.join(",");
        version::check_servers(&servers, config.request_timeout).await?;
        let connect_error = |error: &dyn std::fmt::Display| ClusterError::Connect {
            servers: servers.clone(),
            reason: error.to_string(),
        };
        let addresses: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|server| server.parse())
            .collect::<Result<_, _>>()
            .map_err(|error| connect_error(&error))?;
        let client = connect_options(config, format!("holdfast-{}", layout.name()))
            .await
            .map_err(|error| connect_error(&error))?
            .connect(addresses.clone())
            .await
            .map_err(|error| connect_error(&error))?;
        // Republished inputs arrive on a connection of their own, read on a
        // thread of its own. The server pushes them without flow control and
        // stalls the *publishers* while a subscriber's socket is not drained
        // (measured: acknowledgements of inputs took over 5 s while a busy
        // node's runtime polled the reader late). So the reader must never
        // wait for the daemons: it drops copies a lagging daemon has no room
        // for (the daemon reads the stream instead), and a slow-consumer
        // disconnect by the server cannot take the node's submits,
        // heartbeats and records with it.
        let (resync, resyncs) = watch::channel(0u64);
        let resync = Arc::new(resync);
        let live_options = connect_options(config, format!("holdfast-{}-live", layout.name()))
            .await
            .map_err(|error| connect_error(&error))?
            .subscription_capacity(LIVE_BUFFER)
            .event_callback(move |event| {
                let resync = Arc::clone(&resync);
                async move {
                    match event {
                        // Copies in flight while disconnected are lost, and
                        // a lost last copy leaves no gap to reveal it.
                        async_nats::Event::Connected => {
                            tracing::info!(
                                "the live connection is back; every daemon checks its input subject"
                            );
                            resync.send_modify(|count| *count += 1);
                        }
                        // A full buffer drops copies; the next copy to
                        // arrive names the gap, and the quiet check finds a
                        // lost last one.
                        async_nats::Event::SlowConsumer(_) => {
                            tracing::debug!(
                                "a daemon's live buffer is full; it reads the stream for what was dropped"
                            );
                        }
                        _ => {}
                    }
                }
            });
        let (live_client, live_thread) = connect_on_own_thread(live_options, addresses)
            .await
            .map_err(|error| connect_error(&error))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .build(client.clone());
        let replicas = config.replicas;
        let republish = stream::Republish {
            source: layout.all_inputs(),
            destination: layout.all_live_inputs(),
            headers_only: false,
        };
        let inputs = open_stream(
            &js,
            layout.inputs_stream(),
            layout.all_inputs(),
            replicas,
            Extra::Republish(republish),
        )
        .await?;
        let outputs = open_stream(
            &js,
            layout.outputs_stream(),
            layout.all_outputs(),
            replicas,
            Extra::KeepPerSubject(config.output_retention),
        )
        .await?;
        let owners = js
            .create_or_update_key_value(kv::Config {
                bucket: layout.owners_bucket(),
                history: 5,
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|error| ClusterError::engine("open the owners bucket", error))?;
        let (nodes, lease) = open_nodes_bucket(&js, &layout, config).await?;
        let snapshots = match js.get_object_store(layout.snapshots_bucket()).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: layout.snapshots_bucket(),
                    num_replicas: replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|error| ClusterError::engine("open the snapshot store", error))?,
        };
        for stream in [
            format!("KV_{}", layout.owners_bucket()),
            format!("KV_{}", layout.nodes_bucket()),
            format!("OBJ_{}", layout.snapshots_bucket()),
        ] {
            raise_consumer_limit(&js, &stream).await;
        }
        Ok(Self {
            live_client,
            _live_thread: live_thread,
            resyncs,
            layout,
            client,
            js,
            inputs,
            outputs,
            owners,
            nodes,
            snapshots,
            lease,
        })
    }

    /// Appends an input for `origin`; a repeat of `message_id` within the
    /// duplicate window returns the first sequence.
    pub(crate) async fn append_input(
        &self,
        origin: u64,
        payload: Bytes,
        message_id: Option<String>,
    ) -> Result<(u64, bool), ClusterError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = message_id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(self.layout.input_subject(origin), headers, payload)
            .await
            .map_err(|error| ClusterError::engine("append an input", error))?
            .await
            .map_err(|error| ClusterError::engine("append an input", error))?;
        Ok((ack.sequence, ack.duplicate))
    }

    /// Appends to `origin`'s output subject only if its last stream
    /// sequence is `expected_last` (0: the subject is empty).
    pub(crate) async fn append_output(
        &self,
        origin: u64,
        expected_last: u64,
        payload: Bytes,
    ) -> Result<u64, AppendError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected_last.to_string().as_str(),
        );
        let pending = self
            .js
            .publish_with_headers(self.layout.output_subject(origin), headers, payload)
            .await
            .map_err(|error| AppendError::Engine(ClusterError::engine("append an output", error)))?;
        match pending.await {
            Ok(ack) => Ok(ack.sequence),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                Err(AppendError::WrongLastSequence)
            }
            Err(error) => Err(AppendError::Engine(ClusterError::engine(
                "append an output",
                error,
            ))),
        }
    }

    /// The last message on `origin`'s output subject, if any.
    pub(crate) async fn last_output(&self, origin: u64) -> Result<Option<Stored>, ClusterError> {
        match self
            .outputs
            .direct_get_last_for_subject(self.layout.output_subject(origin))
            .await
        {
            Ok(message) => Ok(Some(Stored {
                sequence: message.sequence,
                stored_at_ms: millis_since_epoch(message.time),
                payload: message.payload,
            })),
            Err(error) if error.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(error) => Err(ClusterError::engine("read a subject's last message", error)),
        }
    }

    /// Every message on `origin`'s output subject after stream sequence
    /// `after`, up to the subject's last sequence when the call began, and
    /// that last sequence (0: the subject is empty).
    pub(crate) async fn read_outputs(
        &self,
        origin: u64,
        after: u64,
    ) -> Result<(Vec<Stored>, u64), ClusterError> {
        self.read_outputs_page(origin, after, usize::MAX).await
    }

    /// As [`read_outputs`](Self::read_outputs), but at most `max` messages.
    pub(crate) async fn read_outputs_page(
        &self,
        origin: u64,
        after: u64,
        max: usize,
    ) -> Result<(Vec<Stored>, u64), ClusterError> {
        let subject = self.layout.output_subject(origin);
        let last = last_sequence(&self.outputs, subject.clone()).await?;
        Ok((
            read_subject(&self.outputs, subject, after, last, max).await?,
            last,
        ))
    }

    /// The last stream sequence on `origin`'s input subject (0: none).
    ///
    /// Asked of the stream's leader, not answered by any replica as a
    /// direct get would be: a follower behind the leader would name an
    /// older input, and a daemon filling a gap, or the trimmer, must not
    /// act on a view older than the copies already republished.
    pub(crate) async fn last_input_sequence(&self, origin: u64) -> Result<u64, ClusterError> {
        Ok(self.last_input(origin).await?.map_or(0, |input| input.sequence))
    }

    /// `origin`'s last input in the stream, if any, read from the stream's
    /// leader.
    pub(crate) async fn last_input(&self, origin: u64) -> Result<Option<Stored>, ClusterError> {
        match self
            .inputs
            .raw_message_builder()
            .last_by_subject(self.layout.input_subject(origin))
            .send()
            .await
        {
            Ok(message) => Ok(Some(Stored {
                sequence: message.sequence,
                stored_at_ms: millis_since_epoch(message.time),
                payload: message.payload,
            })),
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(ClusterError::engine("read a daemon's last input", error)),
        }
    }

    /// `origin`'s inputs after stream sequence `after` up to `through`, at
    /// most `max` of them.
    ///
    /// # Errors
    /// `Engine`, also when the read stops before `through` (or `max`).
    pub(crate) async fn read_inputs(
        &self,
        origin: u64,
        after: u64,
        through: u64,
        max: usize,
    ) -> Result<Vec<Stored>, ClusterError> {
        read_subject(
            &self.inputs,
            self.layout.input_subject(origin),
            after,
            through,
            max,
        )
        .await
    }

    /// Subscribes to `origin`'s inputs as the server republishes them once
    /// stored. Returns after the server this client is connected to has the
    /// subscription; the caller reads the stream for what came before. In a
    /// cluster of servers the interest reaches the stream's leader a moment
    /// later, so a copy stored in between is missed without a gap to show
    /// it: the daemon task reads its subject again a quiet second after it
    /// starts.
    ///
    /// A subscription is a hint, not the record: a republished message can
    /// be lost (a reconnection, a slow consumer, a leader change), and
    /// anyone allowed to publish on the live subject can forge one, so
    /// deployments deny publishing on `hf.C.live.>` (docs/CLUSTER.md).
    pub(crate) async fn live_inputs(&self, origin: u64) -> Result<async_nats::Subscriber, ClusterError> {
        let failed =
            |error: &dyn std::fmt::Display| ClusterError::engine("subscribe to a daemon's inputs", error);
        let subscription = self
            .live_client
            .subscribe(self.layout.live_input_subject(origin))
            .await
            .map_err(|error| failed(&error))?;
        // Best effort: a copy stored before the server had the subscription
        // is found by the stream read that follows, or by the quiet check.
        if let Err(error) = self.live_round_trip().await {
            tracing::debug!(%error, "subscribed without a round trip on the live connection");
        }
        Ok(subscription)
    }

    /// Waits until the server has handled everything the live connection
    /// sent before (after a reconnection: its subscriptions, sent again).
    /// The client's `flush` only writes to the socket; a request to a
    /// subject nobody serves is answered "no responders" by the server,
    /// after the commands before it.
    pub(crate) async fn live_round_trip(&self) -> Result<(), ClusterError> {
        let failed = |error: &dyn std::fmt::Display| {
            ClusterError::engine("make a round trip on the live connection", error)
        };
        let nobody = self.live_client.new_inbox();
        match tokio::time::timeout(LIVE_ROUND_TRIP, self.live_client.request(nobody, Bytes::new())).await {
            Err(_) => Err(failed(&format!("no answer within {LIVE_ROUND_TRIP:?}"))),
            Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(error)) => Err(failed(&error)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Reads a message from a live subscription of `origin`.
    ///
    /// # Errors
    /// The reason, when it lacks the republish headers or names another
    /// subject (nothing is applied from it).
    pub(crate) fn parse_live_input(
        &self,
        origin: u64,
        message: async_nats::Message,
    ) -> Result<LiveInput, String> {
        let previous = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get_last(async_nats::header::NATS_LAST_SEQUENCE))
            .ok_or("no previous-sequence header")?
            .as_str()
            .parse::<u64>()
            .map_err(|error| format!("a malformed previous-sequence header: {error}"))?;
        let stored = StreamMessage::try_from(message).map_err(|error| error.to_string())?;
        let stream = stored.headers.get_last(async_nats::header::NATS_STREAM);
        if stream.map(|name| name.as_str()) != Some(self.layout.inputs_stream().as_str()) {
            return Err("not republished by the inputs stream".into());
        }
        if stored.subject.as_str() != self.layout.input_subject(origin) {
            return Err(format!(
                "republished from {}, not the daemon's subject",
                stored.subject
            ));
        }
        Ok(LiveInput {
            input: Stored {
                sequence: stored.sequence,
                stored_at_ms: millis_since_epoch(stored.time),
                payload: stored.payload,
            },
            previous,
        })
    }

    /// Changes when the live connection reconnected (see
    /// [`Engine::live_inputs`]).
    pub(crate) fn resyncs(&self) -> watch::Receiver<u64> {
        self.resyncs.clone()
    }

    /// How many of `origin`'s inputs lie after stream sequence `after`.
    pub(crate) async fn count_inputs_after(&self, origin: u64, after: u64) -> Result<u64, ClusterError> {
        let failed =
            |error: &dyn std::fmt::Display| ClusterError::engine("count a daemon's waiting inputs", error);
        let mut consumer = self
            .inputs
            .create_consumer(reader_config(self.layout.input_subject(origin), after))
            .await
            .map_err(|error| failed(&error))?;
        let info = consumer
            .info()
            .await
            .map_err(|error| failed(&error))
            .map(|info| info.num_pending);
        delete_reader(&self.inputs, &consumer.cached_info().name).await;
        info
    }

    /// The inputs stream's last sequence (0 when it is empty).
    pub(crate) async fn inputs_last_sequence(&self) -> Result<u64, ClusterError> {
        let info = self
            .inputs
            .get_info()
            .await
            .map_err(|error| ClusterError::engine("read the inputs stream's state", error))?;
        Ok(info.state.last_sequence)
    }

    /// The sequence of `origin`'s first input at or after `from`, if any,
    /// asked of the stream's leader (a follower behind it could miss an
    /// input the leader stored, and the trimmer would purge it).
    pub(crate) async fn first_input_from(&self, origin: u64, from: u64) -> Result<Option<u64>, ClusterError> {
        match self
            .inputs
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(self.layout.input_subject(origin))
            .send()
            .await
        {
            Ok(message) => Ok(Some(message.sequence)),
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(ClusterError::engine("read a daemon's next input", error)),
        }
    }

    /// The ownership bucket's last revision (its stream's last sequence).
    pub(crate) async fn owners_last_revision(&self) -> Result<u64, ClusterError> {
        // Asked of the server: `kv::Store::status` answers from the info
        // cached when the bucket was opened.
        let info = self
            .owners
            .stream
            .get_info()
            .await
            .map_err(|error| ClusterError::engine("read the ownership bucket's state", error))?;
        Ok(info.state.last_sequence)
    }

    /// Every origin that has an ownership record in the engine.
    pub(crate) async fn owner_origins(&self) -> Result<Vec<u64>, ClusterError> {
        let failed =
            |error: &dyn std::fmt::Display| ClusterError::engine("list the ownership records", error);
        let mut keys = self.owners.keys().await.map_err(|error| failed(&error))?;
        let mut origins = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|error| failed(&error))?;
            match parse_origin_key(&key) {
                Some(origin) => origins.push(origin),
                None => return Err(failed(&format!("a record key that is not an origin: {key:?}"))),
            }
        }
        Ok(origins)
    }

    /// Purges every input of every daemon below stream sequence `floor`
    /// (whole message blocks; the caller proved none is needed).
    pub(crate) async fn purge_inputs_below(&self, floor: u64) -> Result<(), ClusterError> {
        self.inputs
            .purge()
            .sequence(floor)
            .await
            .map_err(|error| ClusterError::engine("purge the inputs behind every snapshot", error))?;
        Ok(())
    }

    /// Removes everything `origin` has in the streams.
    pub(crate) async fn purge_daemon(&self, origin: u64) -> Result<(), ClusterError> {
        for (stream, subject) in [
            (&self.inputs, self.layout.input_subject(origin)),
            (&self.outputs, self.layout.output_subject(origin)),
        ] {
            stream
                .purge()
                .filter(subject)
                .await
                .map_err(|error| ClusterError::engine("purge a daemon's subjects", error))?;
        }
        Ok(())
    }

    // ---- snapshots ----

    /// Stores a sealed snapshot under `name` and returns its SHA-256, as
    /// the object store computed it while storing (the bytes are not
    /// hashed a second time).
    ///
    /// # Errors
    /// `Engine` when the store fails, or reports no digest in the object
    /// store's `SHA-256=<base64url>` form.
    pub(crate) async fn put_snapshot(&self, name: &str, sealed: &[u8]) -> Result<[u8; 32], ClusterError> {
        let mut reader = sealed;
        let meta = object_store::ObjectMetadata {
            name: name.to_owned(),
            chunk_size: Some(SNAPSHOT_CHUNK_BYTES),
            ..Default::default()
        };
        let info = self
            .snapshots
            .put(meta, &mut reader)
            .await
            .map_err(|error| ClusterError::engine("store a snapshot", error))?;
        info.digest
            .as_deref()
            .and_then(sha256_of_object_digest)
            .ok_or_else(|| {
                ClusterError::engine(
                    "store a snapshot",
                    format!(
                        "the object store reported digest {:?}, not SHA-256=<base64url>",
                        info.digest
                    ),
                )
            })
    }

    /// Reads the snapshot `name`, refusing more than `expected` bytes.
    pub(crate) async fn get_snapshot(
        &self,
        origin: u64,
        name: &str,
        expected: u64,
    ) -> Result<Vec<u8>, ClusterError> {
        let bad = |problem: String| ClusterError::BadSnapshot {
            origin,
            object: name.to_owned(),
            problem,
        };
        if expected > MAX_SNAPSHOT_BYTES {
            return Err(bad(format!(
                "is recorded as {expected} bytes, above the {MAX_SNAPSHOT_BYTES}-byte limit"
            )));
        }
        let object = self
            .snapshots
            .get(name)
            .await
            .map_err(|error| bad(format!("cannot be read: {error}")))?;
        // Sized once (the record's figure, bounded above): read_to_end
        // would otherwise grow the buffer by doubling, copying megabytes.
        let mut bytes = Vec::with_capacity(
            usize::try_from(expected + 1)
                .unwrap_or(usize::MAX)
                .min(PRESIZED_READ_BYTES),
        );
        object
            .take(expected + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|error| bad(format!("cannot be read: {error}")))?;
        Ok(bytes)
    }

    /// Deletes a snapshot object no record names any more.
    pub(crate) async fn delete_snapshot(&self, name: &str) {
        if let Err(error) = self.snapshots.delete(name).await {
            tracing::debug!(object = name, %error, "an old snapshot could not be deleted");
        }
    }

    // ---- ownership records ----

    /// The record of `origin` and its revision, if any.
    pub(crate) async fn owner_entry(&self, origin: u64) -> Result<Option<(Bytes, u64)>, ClusterError> {
        let entry = self
            .owners
            .entry(origin_key(origin))
            .await
            .map_err(|error| ClusterError::engine("read an ownership record", error))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| (entry.value, entry.revision)))
    }

    /// Creates `origin`'s record; fails if one exists.
    pub(crate) async fn create_owner(&self, origin: u64, bytes: Bytes) -> Result<u64, ClusterError> {
        self.owners
            .create(origin_key(origin), bytes)
            .await
            .map_err(|error| ClusterError::engine("create an ownership record", error))
    }

    /// Replaces `origin`'s record if its revision is still `revision`;
    /// `Ok(None)` when another writer changed it first.
    pub(crate) async fn update_owner(
        &self,
        origin: u64,
        bytes: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, ClusterError> {
        match self.owners.update(origin_key(origin), bytes, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(ClusterError::engine("update an ownership record", error)),
        }
    }

    /// Deletes `origin`'s record if its revision is still `revision`.
    pub(crate) async fn delete_owner(&self, origin: u64, revision: u64) -> Result<bool, ClusterError> {
        match self
            .owners
            .delete_expect_revision(origin_key(origin), Some(revision))
            .await
        {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(false),
            Err(error) => Err(ClusterError::engine("delete an ownership record", error)),
        }
    }

    // ---- live nodes ----

    /// Announces (or refreshes) this node.
    pub(crate) async fn put_node(&self, node: &str, bytes: Bytes) -> Result<(), ClusterError> {
        self.nodes
            .put(node, bytes)
            .await
            .map_err(|error| ClusterError::engine("refresh the node entry", error))?;
        Ok(())
    }

    /// Whether `node` has an entry (a refusal to answer counts as present:
    /// the caller must not fail a node over on a guess).
    pub(crate) async fn node_is_present(&self, node: &str) -> Result<bool, ClusterError> {
        let entry = self
            .nodes
            .entry(node)
            .await
            .map_err(|error| ClusterError::engine("read a node entry", error))?;
        Ok(entry.is_some_and(|entry| entry.operation == kv::Operation::Put))
    }

    /// Removes this node's entry (a clean exit).
    pub(crate) async fn delete_node(&self, node: &str) -> Result<(), ClusterError> {
        self.nodes
            .delete(node)
            .await
            .map_err(|error| ClusterError::engine("remove the node entry", error))
    }

    /// Every live node entry (key and raw value). Listed through the
    /// bucket stream's subjects, which needs no consumer: a node lists them
    /// every few hundred milliseconds, and ephemeral consumers would pile
    /// up for their 30-second inactivity window.
    pub(crate) async fn node_entries(&self) -> Result<Vec<(String, Bytes)>, ClusterError> {
        let prefix = format!("$KV.{}.", self.layout.nodes_bucket());
        let mut subjects = self
            .nodes
            .stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|error| ClusterError::engine("list live nodes", error))?;
        let mut names = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|error| ClusterError::engine("list live nodes", error))?;
            if let Some(name) = subject.strip_prefix(&prefix) {
                names.push(name.to_owned());
            }
        }
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            if let Some(entry) = self
                .nodes
                .entry(name.clone())
                .await
                .map_err(|error| ClusterError::engine("read a node entry", error))?
                .filter(|entry| entry.operation == kv::Operation::Put)
            {
                entries.push((name, entry.value));
            }
        }
        Ok(entries)
    }
}

/// Opens the live-nodes bucket, creating it with this node's lease if it
/// does not exist; returns it with the lease in force (its max age).
async fn open_nodes_bucket(
    js: &jetstream::Context,
    layout: &Layout,
    config: &ClusterConfig,
) -> Result<(kv::Store, Duration), ClusterError> {
    let failed = |error: &dyn std::fmt::Display| ClusterError::engine("open the nodes bucket", error);
    let nodes = match js.get_key_value(layout.nodes_bucket()).await {
        Ok(nodes) => nodes,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: layout.nodes_bucket(),
                history: 1,
                max_age: config.lease_ttl,
                num_replicas: config.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|error| failed(&error))?,
    };
    let mut stream = js
        .get_stream(format!("KV_{}", layout.nodes_bucket()))
        .await
        .map_err(|error| failed(&error))?;
    let lease = stream
        .info()
        .await
        .map_err(|error| failed(&error))?
        .config
        .max_age;
    if lease.is_zero() {
        return Err(ClusterError::engine(
            "open the nodes bucket",
            "the bucket keeps entries forever, so no node could ever be found dead; delete it or give it a max age",
        ));
    }
    if lease != config.lease_ttl {
        tracing::warn!(configured = ?config.lease_ttl, in_force = ?lease, "the cluster's lease was set by the node that created it; this node follows it");
    }
    Ok((nodes, lease))
}

/// What one of the two streams has beyond what they share.
enum Extra {
    /// The inputs stream republishes every input for its owner.
    Republish(stream::Republish),
    /// The outputs stream keeps this many entries per subject (daemon).
    KeepPerSubject(u64),
}

async fn open_stream(
    js: &jetstream::Context,
    name: String,
    subjects: String,
    replicas: usize,
    extra: Extra,
) -> Result<stream::Stream, ClusterError> {
    let mut config = stream::Config {
        name: name.clone(),
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        max_consumers: MAX_CONSUMERS,
        ..Default::default()
    };
    match &extra {
        Extra::Republish(republish) => config.republish = Some(republish.clone()),
        Extra::KeepPerSubject(kept) => {
            config.max_messages_per_subject = i64::try_from(*kept).unwrap_or(i64::MAX);
        }
    }
    let stream = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(|error| ClusterError::engine(format!("open stream {name}"), error))?;
    // The stream as found or made is in the answer already (`cached_info`):
    // no second round trip to check it.
    match extra {
        Extra::Republish(republish) => ensure_republish(js, &stream, republish).await?,
        Extra::KeepPerSubject(_) => report_retention_in_force(&stream, config.max_messages_per_subject),
    }
    raise_consumer_limit(js, &name).await;
    Ok(stream)
}

/// Logs when the outputs stream keeps another number of entries per
/// daemon than this node was configured with: the node that created the
/// stream chose it, and every node follows the stream.
fn report_retention_in_force(stream: &stream::Stream, configured: i64) {
    let in_force = stream.cached_info().config.max_messages_per_subject;
    if in_force != configured {
        let in_force = if in_force <= 0 {
            "every entry (a stream created before retention existed; set its max messages per subject to bound it)".to_owned()
        } else {
            format!("{in_force} entries")
        };
        tracing::warn!(configured, %in_force, "the outputs stream keeps per daemon what the node that created it chose; this node follows it");
    }
}

/// Keeps a live connection's thread running; dropping it ends the thread
/// and the connection.
struct LiveThread {
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Connects with `options` on a new thread running a runtime of its own,
/// so the connection's reader is scheduled by the operating system beside
/// the node's runtime instead of among its daemon tasks.
async fn connect_on_own_thread(
    options: async_nats::ConnectOptions,
    addresses: Vec<async_nats::ServerAddr>,
) -> Result<(async_nats::Client, LiveThread), String> {
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("holdfast-live".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = connected_tx.send(Err(format!(
                        "cannot start the live connection's runtime: {error}"
                    )));
                    return;
                }
            };
            runtime.block_on(async move {
                let client = options
                    .connect(addresses)
                    .await
                    .map_err(|error| error.to_string());
                let up = client.is_ok();
                if connected_tx.send(client).is_ok() && up {
                    // Runs the connection until the engine is dropped.
                    let _ = stopped.await;
                }
            });
        })
        .map_err(|error| format!("cannot start the live connection's thread: {error}"))?;
    let client = connected
        .await
        .map_err(|_| "the live connection's thread ended before connecting".to_owned())??;
    Ok((client, LiveThread { _stop: stop }))
}

/// The options of a connection to the cluster's servers, with its
/// credentials.
async fn connect_options(
    config: &ClusterConfig,
    name: String,
) -> std::io::Result<async_nats::ConnectOptions> {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(config.request_timeout)
        .name(name);
    Ok(match &config.auth {
        NatsAuth::Anonymous => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::CredentialsFile(path) => options.credentials_file(path).await?,
    })
}

/// Gives an existing stream the republish its owners subscribe to (a
/// stream made by an older binary has none).
///
/// # Errors
/// `Engine` when the server refuses: no daemon could be delivered inputs.
async fn ensure_republish(
    js: &jetstream::Context,
    stream: &stream::Stream,
    republish: stream::Republish,
) -> Result<(), ClusterError> {
    let failed = |error: &dyn std::fmt::Display| ClusterError::engine("republish the inputs stream", error);
    let mut config = stream.cached_info().config.clone();
    let current = config.republish.as_ref();
    if current.is_some_and(|current| {
        current.source == republish.source
            && current.destination == republish.destination
            && !current.headers_only
    }) {
        return Ok(());
    }
    config.republish = Some(republish);
    js.update_stream(&config).await.map_err(|error| failed(&error))?;
    Ok(())
}

/// Sets the stream's consumer limit to [`MAX_CONSUMERS`] if it is lower
/// (streams made by the client's bucket helpers, or by an older binary).
/// A server that refuses the change keeps its limit; the log says so.
async fn raise_consumer_limit(js: &jetstream::Context, name: &str) {
    let mut stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(stream = name, %error, "cannot read the stream to raise its consumer limit");
            return;
        }
    };
    let mut config = match stream.info().await {
        Ok(info) => info.config.clone(),
        Err(error) => {
            tracing::warn!(stream = name, %error, "cannot read the stream to raise its consumer limit");
            return;
        }
    };
    if config.max_consumers == MAX_CONSUMERS {
        return;
    }
    config.max_consumers = MAX_CONSUMERS;
    if let Err(error) = js.update_stream(&config).await {
        tracing::warn!(stream = name, %error, "the server keeps the stream's consumer limit; at most that many daemons can be hosted");
    }
}

/// A short-lived pull consumer of `subject` after stream sequence `after`:
/// nothing to acknowledge, and gone on its own 10 s after its last use if
/// [`delete_reader`] could not delete it.
fn reader_config(subject: String, after: u64) -> consumer::pull::Config {
    consumer::pull::Config {
        filter_subject: subject,
        deliver_policy: deliver_after(after),
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: Duration::from_secs(10),
        ..Default::default()
    }
}

/// Deletes a consumer made with [`reader_config`] (a failure leaves it to
/// expire).
async fn delete_reader(stream: &stream::Stream, name: &str) {
    if let Err(error) = stream.delete_consumer(name).await {
        tracing::debug!(consumer = name, %error, "a read consumer could not be deleted; it expires on its own");
    }
}

fn deliver_after(after: u64) -> consumer::DeliverPolicy {
    if after == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    }
}

async fn last_sequence(stream: &stream::Stream, subject: String) -> Result<u64, ClusterError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(message) => Ok(message.sequence),
        Err(error) if error.kind() == stream::DirectGetErrorKind::NotFound => Ok(0),
        Err(error) => Err(ClusterError::engine("read a subject's last sequence", error)),
    }
}

/// Reads `subject` after `after` up to `last` with a pull consumer that is
/// deleted once read (an ordered consumer would linger for 30 s, and
/// outputs are read on every API request).
async fn read_subject(
    stream: &stream::Stream,
    subject: String,
    after: u64,
    last: u64,
    max: usize,
) -> Result<Vec<Stored>, ClusterError> {
    if last <= after {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(reader_config(subject, after))
        .await
        .map_err(|error| ClusterError::engine("read a subject", error))?;
    let name = consumer.cached_info().name.clone();
    let outcome = read_through(&consumer, after, last, max).await;
    delete_reader(stream, &name).await;
    outcome
}

/// Reads what `consumer` (made with [`reader_config`] to start after
/// `after`) delivers, up to stream sequence `last` or `max` entries,
/// failing at the first delivery lost on the way.
async fn read_through(
    consumer: &consumer::Consumer<consumer::pull::Config>,
    after: u64,
    last: u64,
    max: usize,
) -> Result<Vec<Stored>, ClusterError> {
    let mut stored = Vec::new();
    let failed = |error: &dyn std::fmt::Display| ClusterError::engine("read a subject", error);
    'batches: loop {
        let mut batch = consumer
            .fetch()
            .max_messages(max.min(512))
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|error| failed(&error))?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|error| failed(&error))?;
            let info = message.info().map_err(|error| failed(&error))?;
            // Without acks the server counts a message delivered once
            // sent: a batch cut short (a reconnection, a slow-consumer
            // cut) ends quietly and the next fetch goes on after what
            // was lost. The consumer's own numbering shows the hole.
            let expected = stored.len() as u64 + 1;
            if info.consumer_sequence != expected {
                return Err(ClusterError::engine(
                    "read a subject",
                    format!(
                        "delivery {} arrived where {expected} was due: messages were lost on the way",
                        info.consumer_sequence
                    ),
                ));
            }
            let sequence = info.stream_sequence;
            let stored_at_ms = millis_since_epoch(info.published);
            got += 1;
            stored.push(Stored {
                sequence,
                stored_at_ms,
                payload: message.payload.clone(),
            });
            if sequence >= last || stored.len() >= max {
                break 'batches;
            }
        }
        if got == 0 {
            // Nothing came although `last` was not reached (a leader
            // change can do that): a short read must not pass for a
            // whole one, or a new owner would append over outputs it
            // never saw.
            let reached = stored.last().map_or(after, |entry| entry.sequence);
            return Err(ClusterError::engine(
                "read a subject",
                format!("the read stopped at sequence {reached}, before the last, {last}"),
            ));
        }
    }
    Ok(stored)
}

/// The SHA-256 in an object store digest (`SHA-256=` and the 32 bytes in
/// padded URL-safe base64, as the NATS object store writes it).
fn sha256_of_object_digest(digest: &str) -> Option<[u8; 32]> {
    let encoded = digest.strip_prefix("SHA-256=")?;
    URL_SAFE.decode(encoded).ok()?.try_into().ok()
}

/// Milliseconds since the Unix epoch (0 before it).
fn millis_since_epoch(time: time::OffsetDateTime) -> u64 {
    u64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::NatsServer;

    #[test]
    fn an_object_store_digest_gives_its_sha256_or_nothing() {
        use sha2::{Digest, Sha256};
        let expected: [u8; 32] = Sha256::digest(b"abc").into();
        let written = format!("SHA-256={}", URL_SAFE.encode(expected));
        assert_eq!(sha256_of_object_digest(&written), Some(expected));
        for bad in [
            "",
            "SHA-256=",
            &written[8..],
            &written.replace("SHA-256", "SHA-512"),
            &written[..written.len() - 4],
            "SHA-256=!!!!",
            &format!("SHA-256={}", URL_SAFE.encode([0u8; 31])),
        ] {
            assert_eq!(sha256_of_object_digest(bad), None, "{bad:?}");
        }
    }

    /// A message the server sent on a reader's consumer that never reached
    /// the reader (here taken by another fetch on the same consumer, as a
    /// batch cut short by a reconnection loses it) fails the read: the
    /// next delivery's number shows the hole, and nothing after it passes
    /// for the subject's inputs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_lost_on_the_way_fails_the_read_instead_of_being_skipped() {
        let server = NatsServer::start().await;
        let js = jetstream::new(async_nats::connect(server.url()).await.expect("connects"));
        let stream = js
            .create_stream(stream::Config {
                name: "READS".into(),
                subjects: vec!["reads.>".into()],
                ..Default::default()
            })
            .await
            .expect("a stream");
        for value in 1..=5u8 {
            js.publish("reads.a", Bytes::from(vec![value]))
                .await
                .expect("published")
                .await
                .expect("stored");
        }

        let whole = stream
            .create_consumer(reader_config("reads.a".into(), 0))
            .await
            .expect("a reader");
        let read = read_through(&whole, 0, 5, 100).await.expect("a whole read");
        let sequences: Vec<u64> = read.iter().map(|entry| entry.sequence).collect();
        assert_eq!(sequences, vec![1, 2, 3, 4, 5]);

        let cut = stream
            .create_consumer(reader_config("reads.a".into(), 0))
            .await
            .expect("a reader");
        let mut lost = cut.fetch().max_messages(1).messages().await.expect("a fetch");
        let taken = lost.next().await.expect("one message").expect("delivered");
        assert_eq!(taken.payload.as_ref(), &[1]);
        match read_through(&cut, 0, 5, 100).await {
            Err(ClusterError::Engine { reason, .. }) => {
                assert_eq!(
                    reason,
                    "delivery 2 arrived where 1 was due: messages were lost on the way"
                )
            }
            other => panic!("a read with a lost delivery passed: {other:?}"),
        }
    }
}
