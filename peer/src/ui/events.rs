//! `GET /api/events`: the page's one stream of server-sent events. Every
//! [`EVERY`] the state document is built again and sent if it changed, so updates
//! are coalesced however fast the jobs move; while a stream is open its jobs publish
//! their views at the quick pace ([`crate::grid::watch::WATCHED_EVERY`]). The
//! browser reconnects by itself if the stream drops.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::{state, Hub};
use crate::grid::watch::Watching;

/// How often the state is looked at while a page is open.
pub const EVERY: Duration = Duration::from_millis(250);

struct Open {
    hub: Arc<Hub>,
    last: String,
    watching: HashMap<u64, Watching>,
    tick: tokio::time::Interval,
}

pub async fn stream(
    State(hub): State<Arc<Hub>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let open = Open {
        hub,
        last: String::new(),
        watching: HashMap::new(),
        tick,
    };
    let events = futures::stream::unfold(open, |mut open| async move {
        loop {
            open.tick.tick().await;
            for job in open.hub.jobs() {
                open.watching
                    .entry(job.id)
                    .or_insert_with(|| job.watch.watching());
            }
            let now = state::build(&open.hub).await;
            if now != open.last {
                let event = Event::default().event("state").data(&now);
                open.last = now;
                return Some((Ok(event), open));
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
