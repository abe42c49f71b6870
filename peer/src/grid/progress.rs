//! The live progress display of a grid job: one bar of work done (in the job's unit,
//! e.g. rows or frames) and one line per peer (chunks, speed, breaker). Drawn only on a
//! terminal; elsewhere it stays silent and the final report says it all.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use libp2p::PeerId;

use super::peer_book::PeerBook;
use super::report::{human, short_peer};
use super::{ChunkList, Job};
use idlegrid_scheduler::Scheduler;

pub struct Progress {
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    peer_lines: HashMap<PeerId, ProgressBar>,
    chunks: ChunkList,
}

impl Progress {
    /// A display for `job`, of which `done` units are already verified.
    pub fn new(job: &Job, done: u64, show: bool) -> Progress {
        let total = job.chunks.total_units();
        if !show || !std::io::stderr().is_terminal() {
            return Progress {
                multi: None,
                bar: None,
                peer_lines: HashMap::new(),
                chunks: job.chunks.clone(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bar = multi.add(ProgressBar::new(total));
        let template = format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} eta {{eta}}",
            unit = job.unit
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_position(done);
        Progress {
            multi: Some(multi),
            bar: Some(bar),
            peer_lines: HashMap::new(),
            chunks: job.chunks.clone(),
        }
    }

    pub fn verified(&mut self, chunk: usize) {
        if let Some(bar) = &self.bar {
            bar.inc(self.chunks.units(chunk));
        }
    }

    pub fn revoked(&mut self, chunk: usize) {
        if let Some(bar) = &self.bar {
            let units = self.chunks.units(chunk);
            bar.set_position(bar.position().saturating_sub(units));
        }
    }

    /// A message above the bars (or on stderr without a terminal).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Refreshes the per-peer lines from the scheduler's view.
    pub fn update(&mut self, sched: &Scheduler<PeerId>, book: &PeerBook) {
        let Some(multi) = &self.multi else { return };
        let progress = sched.progress();
        if let Some(bar) = &self.bar {
            let secs = bar.elapsed().as_secs_f64();
            let rate = if secs > 0.0 {
                bar.position() as f64 / secs
            } else {
                0.0
            };
            bar.set_message(format!(
                "{}/s, chunks {}/{}, {} out",
                human(rate),
                progress.verified,
                progress.total,
                progress.in_flight
            ));
        }
        for (peer, stats) in sched.peers() {
            let line = self.peer_lines.entry(peer).or_insert_with(|| {
                let line = multi.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("  {msg}") {
                    line.set_style(style);
                }
                line
            });
            let speed = stats
                .measured_speed
                .or(book.scores.get(&peer).copied())
                .unwrap_or(0.0);
            line.set_message(format!(
                "{}{} chunks {:>5}  in flight {:>3}  speed {:>5}/s  failures {}  breaker {}{}",
                short_peer(&peer.to_string()),
                if stats.trusted { " (local)" } else { "" },
                stats.chunks_done,
                stats.in_flight,
                human(speed),
                stats.failures,
                stats.breaker.label(),
                if stats.banned { "  BANNED" } else { "" },
            ));
        }
    }

    /// Clears the display (also when the job ends in an error).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        for (_, line) in self.peer_lines.drain() {
            line.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
