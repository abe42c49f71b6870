//! A running job seen from outside (the web page, `crate::ui`): the job loop publishes
//! a [`JobView`] built from its scheduler and peer book, a few times a second at most,
//! and sends each verified (or withdrawn) result as it happens so the page can paint
//! the output growing. Nothing here keeps a copy of the scheduler's state: a view is
//! made from the scheduler when it is published and replaced by the next one.
//!
//! The chunk map is one character per chunk, run-length encoded ([`encode_map`]):
//! `.` waiting, `!` waiting again after a failure, `#` verified, `+` running in more
//! than one copy (speculated or replicated), a letter `A`–`Z`, `a`–`z` running on the
//! peer of that index in [`JobView::peers`], `*` running on a later peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use idlegrid_protocol::Cid;
use idlegrid_scheduler::{ChunkView, Scheduler};
use libp2p::PeerId;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::peer_book::PeerBook;
use super::report::{peer_reports, JobReport, PeerReport};
use super::Job;

/// How often a job's view is published at most while someone watches.
pub const WATCHED_EVERY: Duration = Duration::from_millis(250);
/// How often it is published while nobody watches (so a one-off read is not stale).
pub const UNWATCHED_EVERY: Duration = Duration::from_secs(2);

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for `--min-peers`, benchmarking.
    Gathering,
    Dispatching,
    Done,
    Failed,
}

/// One peer as the job sees it: its report line so far, plus what is going on now.
#[derive(Clone, Debug, Serialize)]
pub struct JobPeer {
    #[serde(flatten)]
    pub report: PeerReport,
    pub in_flight: u32,
    /// Measured from its answers, work units per second (the benchmark before that).
    pub speed: f64,
}

/// A job at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    pub kernel: String,
    pub phase: Phase,
    /// What the progress counts (`rows`, `frames`) and how many are done.
    pub unit: &'static str,
    pub units_total: u64,
    pub units_done: u64,
    pub chunks: usize,
    pub verified: usize,
    pub in_flight: u32,
    pub elapsed_seconds: f64,
    /// Smoothed, so it does not jump about (None until there is a rate).
    pub eta_seconds: Option<f64>,
    /// Run-length encoded chunk map (see the module header).
    pub map: String,
    pub peers: Vec<JobPeer>,
    pub assignments: u64,
    pub speculative: u64,
    pub requeued: u64,
    pub checks: u64,
    /// The job's report, once it ended.
    pub report: Option<JobReport>,
    /// Why it failed.
    pub error: Option<String>,
}

impl JobView {
    fn empty(job: &Job) -> JobView {
        JobView {
            kernel: job.kernel.clone(),
            phase: Phase::Gathering,
            unit: job.unit,
            units_total: job.chunks.total_units(),
            units_done: 0,
            chunks: job.chunks.len(),
            verified: 0,
            in_flight: 0,
            elapsed_seconds: 0.0,
            eta_seconds: None,
            map: encode_map(&vec![b'.'; job.chunks.len()]),
            peers: Vec::new(),
            assignments: 0,
            speculative: 0,
            requeued: 0,
            checks: 0,
            report: None,
            error: None,
        }
    }
}

/// A result as it settles or is withdrawn, for painting the output so far.
#[derive(Clone, Debug)]
pub enum ResultEvent {
    /// Chunk `chunk` (job index) verified as `cid`; `bytes` when still in memory
    /// (otherwise read it from the blob store).
    Verified {
        chunk: usize,
        cid: Cid,
        bytes: Option<Bytes>,
    },
    Revoked {
        chunk: usize,
    },
}

struct Inner {
    views: watch::Sender<Arc<JobView>>,
    results: mpsc::UnboundedSender<ResultEvent>,
    /// Pages watching now (their streams hold a [`Watching`]).
    viewers: AtomicUsize,
    pacing: Mutex<Pacing>,
}

struct Pacing {
    last: Option<Instant>,
    /// The ETA shown last, and when.
    eta: Option<(f64, Instant)>,
}

/// The job loop's side: give it to [`super::GridConfig::watch`]. Cloning shares it.
#[derive(Clone)]
pub struct JobWatch(Arc<Inner>);

impl std::fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobWatch")
    }
}

/// The watcher's side: the latest view and the stream of results.
pub struct JobFeed {
    pub views: watch::Receiver<Arc<JobView>>,
    pub results: mpsc::UnboundedReceiver<ResultEvent>,
}

/// A page watching a job (see [`JobFeed::watching`]).
pub struct Watching(JobWatch);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0 .0.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl JobWatch {
    /// A watch for `job` and the feed its watcher reads.
    pub fn new(job: &Job) -> (JobWatch, JobFeed) {
        let (views, rx) = watch::channel(Arc::new(JobView::empty(job)));
        let (results, results_rx) = mpsc::unbounded_channel();
        let watch = JobWatch(Arc::new(Inner {
            views,
            results,
            viewers: AtomicUsize::new(0),
            pacing: Mutex::new(Pacing {
                last: None,
                eta: None,
            }),
        }));
        let feed = JobFeed {
            views: rx,
            results: results_rx,
        };
        (watch, feed)
    }

    /// Counts a page as watching while the guard lives: views come at the quick pace.
    pub fn watching(&self) -> Watching {
        self.0.viewers.fetch_add(1, Ordering::Relaxed);
        Watching(self.clone())
    }

    pub(super) fn result(&self, event: ResultEvent) {
        let _ = self.0.results.send(event);
    }

    /// Whether a view is due now (`force`: the job's last one).
    pub(super) fn due(&self, force: bool) -> bool {
        let pacing = self.0.pacing.lock().unwrap_or_else(|e| e.into_inner());
        let every = if self.0.viewers.load(Ordering::Relaxed) > 0 {
            WATCHED_EVERY
        } else {
            UNWATCHED_EVERY
        };
        force || pacing.last.is_none_or(|last| last.elapsed() >= every)
    }

    /// Publishes a view made from the scheduler (None while gathering).
    pub(super) fn publish(&self, from: ViewSource<'_>, phase: Phase) {
        let now = Instant::now();
        let mut view = from.build(phase);
        {
            let mut pacing = self.0.pacing.lock().unwrap_or_else(|e| e.into_inner());
            pacing.last = Some(now);
            view.eta_seconds = steady_eta(&mut pacing.eta, from.raw_eta(&view), now);
            if phase != Phase::Dispatching {
                view.eta_seconds = None;
            }
        }
        self.0.views.send_replace(Arc::new(view));
    }

    /// The job ended: its report goes into the last view.
    pub(super) fn finished(&self, report: &JobReport) {
        self.0.views.send_modify(|view| {
            let mut done = JobView::clone(view);
            done.phase = Phase::Done;
            done.eta_seconds = None;
            done.report = Some(report.clone());
            *view = Arc::new(done);
        });
    }

    /// The job failed with `why`.
    pub fn failed(&self, why: &str) {
        self.0.views.send_modify(|view| {
            let mut failed = JobView::clone(view);
            failed.phase = Phase::Failed;
            failed.eta_seconds = None;
            failed.error = Some(why.to_string());
            *view = Arc::new(failed);
        });
    }
}

/// An ETA that moves smoothly: the raw estimate (remaining work over the average
/// rate since dispatch began) blended into the last one shown, counted down.
fn steady_eta(last: &mut Option<(f64, Instant)>, raw: Option<f64>, now: Instant) -> Option<f64> {
    let raw = raw?;
    let shown = match *last {
        Some((eta, at)) => {
            let counted = (eta - now.duration_since(at).as_secs_f64()).max(0.0);
            0.8 * counted + 0.2 * raw
        }
        None => raw,
    };
    *last = Some((shown, now));
    Some(shown)
}

/// What a view is made from: the job loop's parts, borrowed for the moment.
pub(super) struct ViewSource<'a> {
    pub job: &'a Job,
    pub sched: Option<&'a Scheduler<PeerId>>,
    pub book: &'a PeerBook,
    pub me: PeerId,
    /// Whether a chunk has a verified result (before dispatching: from an earlier run).
    pub reused: &'a dyn Fn(usize) -> bool,
    pub elapsed: Duration,
    pub dispatching_for: Duration,
    /// Units already done when dispatching began (reused results).
    pub units_reused: u64,
}

impl ViewSource<'_> {
    fn build(&self, phase: Phase) -> JobView {
        let mut view = JobView::empty(self.job);
        view.phase = phase;
        view.elapsed_seconds = self.elapsed.as_secs_f64();
        let mut cells: Vec<u8> = (0..self.job.chunks.len())
            .map(|i| if (self.reused)(i) { b'#' } else { b'.' })
            .collect();
        if let Some(sched) = self.sched {
            let reports = peer_reports(
                sched,
                self.book,
                self.me,
                &Default::default(),
                &Default::default(),
            );
            let index: std::collections::HashMap<String, usize> = reports
                .iter()
                .enumerate()
                .map(|(i, p)| (p.peer_id.clone(), i))
                .collect();
            let mut letters = std::collections::HashMap::new();
            view.peers = reports
                .into_iter()
                .map(|report| {
                    let stats = report
                        .peer_id
                        .parse::<PeerId>()
                        .ok()
                        .and_then(|p| sched.peer_stats(&p).map(|s| (p, s)));
                    let (in_flight, speed) = match stats {
                        Some((peer, s)) => {
                            if let Some(&i) = index.get(&report.peer_id) {
                                letters.insert(peer, letter(i));
                            }
                            (s.in_flight, s.measured_speed.unwrap_or(report.bench_score))
                        }
                        None => (0, report.bench_score),
                    };
                    JobPeer {
                        report,
                        in_flight,
                        speed,
                    }
                })
                .collect();
            for (i, c) in cells.iter_mut().enumerate() {
                *c = match sched.chunk_view(i as u32) {
                    Some(ChunkView::Verified) => b'#',
                    Some(ChunkView::Waiting { retried: false }) | None => b'.',
                    Some(ChunkView::Waiting { retried: true }) => b'!',
                    Some(ChunkView::Running { copies, .. }) if copies > 1 => b'+',
                    Some(ChunkView::Running { peer, .. }) => {
                        letters.get(&peer).copied().unwrap_or(b'*')
                    }
                };
            }
            let progress = sched.progress();
            view.in_flight = progress.in_flight;
            view.assignments = progress.assignments;
            view.speculative = progress.speculative;
            view.requeued = progress.requeued;
            view.checks = progress.checks;
        }
        view.verified = cells.iter().filter(|&&c| c == b'#').count();
        view.units_done = cells
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == b'#')
            .map(|(i, _)| self.job.chunks.units(i))
            .sum();
        view.map = encode_map(&cells);
        view
    }

    /// Remaining units over the average rate since dispatch began.
    fn raw_eta(&self, view: &JobView) -> Option<f64> {
        let done = view.units_done.saturating_sub(self.units_reused) as f64;
        let secs = self.dispatching_for.as_secs_f64();
        if done <= 0.0 || secs <= 0.0 {
            return None;
        }
        let remaining = view.units_total.saturating_sub(view.units_done) as f64;
        Some(remaining / (done / secs))
    }
}

/// The map letter of the peer at `index` in the view's list.
fn letter(index: usize) -> u8 {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    LETTERS.get(index).copied().unwrap_or(b'*')
}

/// Run-length encodes a map of state characters: a character, then its run length in
/// decimal when longer than one (state characters are never digits).
pub fn encode_map(cells: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&c) = cells.get(i) {
        let run = cells[i..].iter().take_while(|&&d| d == c).count();
        out.push(c as char);
        if run > 1 {
            out.push_str(&run.to_string());
        }
        i += run;
    }
    out
}

/// The inverse of [`encode_map`] (tests; the page has its own in JavaScript).
pub fn decode_map(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        i += 1;
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let run = std::str::from_utf8(&bytes[i..i + digits])
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(1);
        i += digits;
        out.extend(std::iter::repeat_n(c, run));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trips() {
        let cells = b"....##A!!+*#".to_vec();
        let text = encode_map(&cells);
        assert_eq!(text, ".4#2A!2+*#");
        assert_eq!(decode_map(&text), cells);
        assert_eq!(encode_map(&[]), "");
        let big = vec![b'#'; 100_000];
        assert_eq!(encode_map(&big), "#100000");
    }

    #[test]
    fn eta_counts_down_smoothly() {
        let start = Instant::now();
        let mut last = None;
        assert_eq!(steady_eta(&mut last, Some(100.0), start), Some(100.0));
        // A raw estimate that jumps to 10 moves the shown one by a fifth of the way.
        let shown = steady_eta(&mut last, Some(10.0), start + Duration::from_secs(1));
        assert!((shown.unwrap_or(0.0) - (0.8 * 99.0 + 2.0)).abs() < 1e-9);
    }
}
