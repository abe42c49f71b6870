//! Carrying out what the scheduler decided: spawn and stop chunk runs, keep or
//! withdraw verified results (in the job's result log), and record what the job
//! learnt of each peer's honesty.

use idlegrid_scheduler::Action;

use super::JobLoop;
use crate::grid::watch::ResultEvent;

impl JobLoop<'_> {
    /// Carries out what the scheduler decided.
    pub(super) fn carry_out_actions(&mut self) {
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            match action {
                Action::Assign { peer, chunk, .. } => {
                    tracing::trace!(
                        "{:.3} s: chunk {chunk} to {peer}",
                        self.started.elapsed().as_secs_f64()
                    );
                    if let Some(spec) = self.job.chunks.spec(chunk as usize) {
                        self.runs.spawn(peer, chunk, spec);
                    }
                }
                Action::Cancel { peer, chunk } => self.runs.stop(peer, chunk),
                Action::Verified { chunk, result, how } => {
                    let chunk = chunk as usize;
                    let bytes = match self.results.verified(chunk, result, how) {
                        Ok(bytes) => Some(bytes),
                        Err(e) => {
                            // Without it the job cannot be assembled: it ends here.
                            self.lost
                                .get_or_insert(format!("cannot keep chunk {chunk}'s result: {e}"));
                            None
                        }
                    };
                    self.progress.verified(chunk);
                    if let Some(watch) = &self.config.watch {
                        watch.result(ResultEvent::Verified {
                            chunk,
                            cid: result,
                            bytes,
                        });
                    }
                }
                Action::Revoked { chunk } => {
                    let chunk = chunk as usize;
                    // A resumed job must not reuse a withdrawn result: if the log
                    // cannot say so, the job ends here.
                    if let Err(e) = self.results.revoked(chunk) {
                        self.lost
                            .get_or_insert(format!("cannot withdraw chunk {chunk}'s result: {e}"));
                    }
                    self.progress.revoked(chunk);
                    if let Some(watch) = &self.config.watch {
                        watch.result(ResultEvent::Revoked { chunk });
                    }
                }
                Action::Confirmed { peer, .. } => self.trust.confirmed(&peer),
                Action::PeerBanned {
                    peer,
                    chunk,
                    claimed,
                    settled,
                } => {
                    if let Some(spec) = self.job.chunks.spec(chunk as usize) {
                        self.trust.ban(&peer, &spec.id(), &claimed, &settled);
                    }
                    self.progress.println(&format!(
                        "peer {peer} returned {} for chunk {chunk} where this machine computed {}: \
                         banned, and its results nobody else confirmed are computed again",
                        claimed.short(),
                        settled.short()
                    ));
                }
                Action::JobComplete | Action::JobFailed { .. } => {}
            }
        }
        self.actions = actions;
    }
}
