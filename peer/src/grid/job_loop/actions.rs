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
                    let Some(&job_index) = self.todo.get(chunk as usize) else {
                        continue;
                    };
                    tracing::trace!(
                        "{:.3} s: chunk {job_index} to {peer}",
                        self.started.elapsed().as_secs_f64()
                    );
                    if let Some(spec) = self.job.chunks.spec(job_index) {
                        self.runs.spawn(peer, chunk, spec);
                    }
                }
                Action::Cancel { peer, chunk } => self.runs.stop(peer, chunk),
                Action::Verified { chunk, result, how } => {
                    let Some(&job_index) = self.todo.get(chunk as usize) else {
                        continue;
                    };
                    let bytes = match self.results.verified(job_index, result, how) {
                        Ok(bytes) => Some(bytes),
                        Err(e) => {
                            // Without it the job cannot be assembled: it ends here.
                            self.lost.get_or_insert(format!(
                                "cannot keep chunk {job_index}'s result: {e}"
                            ));
                            None
                        }
                    };
                    self.progress.verified(job_index);
                    if let Some(watch) = &self.config.watch {
                        watch.result(ResultEvent::Verified {
                            chunk: job_index,
                            cid: result,
                            bytes,
                        });
                    }
                }
                Action::Revoked { chunk } => {
                    let Some(&job_index) = self.todo.get(chunk as usize) else {
                        continue;
                    };
                    // A resumed job must not reuse a withdrawn result.
                    if let Err(e) = self.results.revoked(job_index) {
                        tracing::warn!("cannot withdraw chunk {job_index}'s result: {e}");
                    }
                    self.progress.revoked(job_index);
                    if let Some(watch) = &self.config.watch {
                        watch.result(ResultEvent::Revoked { chunk: job_index });
                    }
                }
                Action::Confirmed { peer, .. } => self.trust.confirmed(&peer),
                Action::PeerBanned {
                    peer,
                    chunk,
                    claimed,
                    settled,
                } => {
                    let job_index = self.todo.get(chunk as usize).copied();
                    let id = job_index
                        .and_then(|i| self.job.chunks.spec(i))
                        .map(|s| s.id());
                    if let Some(id) = &id {
                        self.trust.ban(&peer, id, &claimed, &settled);
                    }
                    self.progress.println(&format!(
                        "peer {peer} returned {} for chunk {} where this machine computed {}: \
                         banned, and its results nobody else confirmed are computed again",
                        claimed.short(),
                        job_index.unwrap_or(chunk as usize),
                        settled.short()
                    ));
                }
                Action::JobComplete | Action::JobFailed { .. } => {}
            }
        }
        self.actions = actions;
    }
}
