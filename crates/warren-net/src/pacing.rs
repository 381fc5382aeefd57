//! Publisher pacing: how a publisher's read loop gives way between slices of
//! input. Every protocol adapter calls [`pace_publisher`], so the policy lives
//! in one place; the threshold that marks a queue as backlogged is the core's
//! [`warren_core::queue::FLOW_BACKLOG`].

use std::time::Duration;

/// Let other tasks run between slices of a publisher's input, pausing for
/// a millisecond when a publish hit a backlogged queue: publishers slow to
/// the rate their consumers keep up with (RabbitMQ's credit flow, simplified).
pub async fn pace_publisher(backlogged: bool) {
    if backlogged {
        tokio::time::sleep(Duration::from_millis(1)).await;
    } else {
        tokio::task::yield_now().await;
    }
}
