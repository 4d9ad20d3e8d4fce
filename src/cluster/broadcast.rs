//! A broadcast channel across the cluster, on Redis pub/sub. Every node, the
//! publishing one included, delivers only what comes back from its
//! subscription, so every receiver sees the one order Redis gives.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::directory::broadcast_channel;
use super::{Attempt, Cluster, Unavailable, REDIS_TIMEOUT};

/// How long a new member waits for the subscription (at start, or while it
/// is being restored) before it is refused.
const READY_WAIT: Duration = Duration::from_secs(2);
/// Pause between attempts to subscribe again after losing the subscription.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);
/// How often a subscription pings Redis over its own connection: one that
/// hangs (Redis stalled, a silent network failure) would otherwise wait for
/// messages forever while others' messages are lost.
const SUBSCRIPTION_CHECK: Duration = Duration::from_secs(3);
/// Longer than a command's bound: a busy node must not drop a healthy
/// subscription (which closes every member).
const SUBSCRIPTION_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// One service's channel: [`Fanout::publish`] reaches the `deliver` of every
/// node's [`Cluster::fanout`] for the same prefix.
#[derive(Clone)]
pub struct Fanout {
    cluster: Cluster,
    channel: String,
    subscribed: watch::Receiver<bool>,
}

impl Cluster {
    /// Subscribes to the channel of the service at `prefix`, calling `deliver`
    /// with each message in the channel's order, and `lost` whenever the
    /// subscription breaks (messages published meanwhile are not seen here,
    /// so whoever relies on them must know). It subscribes again on its own.
    /// Call it from within the actix runtime.
    pub fn fanout(
        &self,
        prefix: &str,
        deliver: impl Fn(String) + 'static,
        lost: impl Fn() + 'static,
    ) -> Fanout {
        let channel = broadcast_channel(prefix);
        let (subscribed_tx, subscribed) = watch::channel(false);
        self.inner.subscriptions.lock().push(subscribed.clone());
        let cluster = self.clone();
        let task_channel = channel.clone();
        actix_rt::spawn(async move {
            loop {
                cluster
                    .subscription(&task_channel, &subscribed_tx, &deliver)
                    .await;
                if subscribed_tx.send_replace(false) {
                    lost();
                }
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
            }
        });
        Fanout {
            cluster: self.clone(),
            channel,
            subscribed,
        }
    }

    /// One subscription, until its connection ends.
    async fn subscription(
        &self,
        channel: &str,
        subscribed: &watch::Sender<bool>,
        deliver: &impl Fn(String),
    ) {
        // Through the primary in use (Sentinel's, asked again after a failure).
        let primary = match self.inner.backplane.primary().await {
            Ok(primary) => primary,
            Err(error) => {
                let _ = self.observe::<()>(Attempt::Lost(error, None));
                return;
            }
        };
        let connect = async {
            let mut pubsub = primary.client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let outcome = match tokio::time::timeout(REDIS_TIMEOUT, connect).await {
            Ok(Ok(pubsub)) => Attempt::Done(pubsub),
            Ok(Err(error)) => Attempt::Lost(error.to_string(), Some(primary.generation)),
            Err(_) => Attempt::TimedOut(Some(primary.generation)),
        };
        if let Attempt::Lost(_, generation) | Attempt::TimedOut(generation) = &outcome {
            self.rediscover(*generation).await;
        }
        let Ok(pubsub) = self.observe(outcome) else {
            return;
        };
        subscribed.send_replace(true);
        let (mut sink, mut messages) = pubsub.split();
        let mut check = tokio::time::interval(SUBSCRIPTION_CHECK);
        check.reset();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { break };
                    match message.get_payload::<String>() {
                        Ok(text) => deliver(text),
                        Err(error) => log::error!("cluster: {channel}: unreadable message: {error}"),
                    }
                }
                _ = check.tick() => {
                    let ping = sink.ping::<redis::Value>();
                    if !matches!(tokio::time::timeout(SUBSCRIPTION_PING_TIMEOUT, ping).await, Ok(Ok(_))) {
                        log::warn!("cluster: subscription to {channel} does not answer its ping");
                        break;
                    }
                }
            }
        }
        log::warn!("cluster: subscription to {channel} lost");
        self.rediscover(Some(primary.generation)).await;
    }
}

impl Fanout {
    /// Waits (briefly) until the subscription is up; false if it is not.
    pub async fn ready(&self) -> bool {
        let mut subscribed = self.subscribed.clone();
        let ready = tokio::time::timeout(READY_WAIT, subscribed.wait_for(|up| *up))
            .await
            .is_ok_and(|result| result.is_ok());
        ready
    }

    /// Whether this node receives the channel now.
    pub fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    /// Publishes `message` to every node; `Err` if Redis did not take it.
    pub async fn publish(&self, message: &str) -> Result<(), Unavailable> {
        self.cluster
            .run::<i64>(redis::cmd("PUBLISH").arg(&self.channel).arg(message))
            .await
            .map(drop)
    }
}
