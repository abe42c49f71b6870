//! The loop that runs one job on the submitting peer. It owns the scheduler and all the
//! job knows, and takes one input at a time: a [`Report`] from a spawned task (a probe,
//! a benchmark, a chunk run), a [`PeerEvent`] from the network, or a tick. Each input
//! becomes scheduler events; the scheduler's actions are carried out at the top of the
//! loop (spawn a run, cancel one, keep or withdraw a verified result).
//!
//! A job is first [`Phase::Gathering`] (waiting for `--min-peers` remote peers; their
//! joins are held back), then [`Phase::Dispatching`], where the scheduler sees every
//! event. However the loop ends (done, failed, or its future dropped), dropping it stops
//! the chunk runs still going ([`Runs`]) and unpins the job's inputs ([`Pins`]).
//!
//! `inputs.rs` turns each input into scheduler events; `actions.rs` carries out the
//! scheduler's actions.

mod actions;
mod inputs;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use idlegrid_protocol::Cid;
use libp2p::PeerId;
use tokio::sync::{broadcast, mpsc};

use super::collected::Collecting;
use super::local::local_bench;
use super::peer_book::PeerBook;
use super::progress::Progress;
use super::report::{peer_reports, JobReport};
use super::runs::{Report, Runs};
use super::standing::strong_enough;
use super::watch::{self, ResultEvent, ViewSource};
use super::{GridConfig, GridError, Job, JobOutcome};
use crate::net::{kernel_key, PeerEvent, Route};
use crate::node::Node;
use crate::results::ResultLog;
use crate::store::Pins;
use crate::trust::TrustBook;
use idlegrid_scheduler::{
    Action, Costs, Event, JobFailure, Outcome, Scheduler, SchedulerConfig, Trust,
};

enum Phase {
    /// Waiting for `--min-peers` remote peers; the joins so far wait here to reach the
    /// scheduler together, so the first assignment sees them all.
    Gathering { joins: Vec<Event<PeerId>> },
    /// The scheduler hands out chunks; `since` is when it started.
    Dispatching {
        sched: Box<Scheduler<PeerId>>,
        since: Instant,
    },
}

pub(super) struct JobLoop<'a> {
    node: &'a Node,
    job: Job,
    config: GridConfig,
    me: PeerId,
    started: Instant,
    phase: Phase,
    /// The scheduler's settings for this job (replicas, spot checks and their seed).
    sched_config: SchedulerConfig,
    /// The chunks' costs, for the scheduler when dispatching starts (its chunk
    /// indices are the job's; the ones an earlier run verified are done from the start).
    costs: Option<Costs>,
    /// Work units of the chunks not reused.
    work_left: f64,
    /// What the progress bar counts of the chunks reused.
    units_reused: u64,
    reused: usize,
    book: PeerBook,
    /// What earlier jobs learnt of each peer's honesty; this job adds to it.
    trust: TrustBook,
    results: Collecting,
    progress: Progress,
    actions: Vec<Action<PeerId>>,
    /// Where probes and runs report back.
    reports: mpsc::UnboundedSender<Report>,
    runs: Runs,
    /// The last kernel error each chunk got: what a job that fails on a chunk says
    /// about it.
    kernel_errors: HashMap<u32, String>,
    /// Why a verified result could not be kept, if one could not: the job fails.
    lost: Option<String>,
    _pins: Pins,
}

impl<'a> JobLoop<'a> {
    /// Opens the job's result log (taking what an earlier run verified) and pins its
    /// inputs.
    pub fn new(
        node: &'a Node,
        job: Job,
        config: GridConfig,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Result<JobLoop<'a>, GridError> {
        // Which chunks are spot-checked depends on the job (the hash of its chunk ids),
        // so a re-run checks the same ones and a peer cannot tell which from one chunk;
        // the same hash names the job's result log. Each input is pinned once:
        // neighbouring chunks share theirs, and a made job of a million chunks may
        // name the same few. (One pass: a made job's specs are made as they are read.)
        let mut hasher = blake3::Hasher::new();
        let mut inputs = BTreeSet::new();
        for spec in job.chunks.specs() {
            hasher.update(&spec.id().0);
            inputs.extend(spec.inputs);
        }
        let job_id = Cid::from_hasher(&hasher);
        let enough = |how| strong_enough(how, config.trust, config.replicas);
        let log = ResultLog::open(
            node.data_dir(),
            &job_id,
            job.chunks.len(),
            &node.store,
            enough,
        )?;
        let results = Collecting::new(&node.store, log);
        let chunks = u32::try_from(job.chunks.len())
            .map_err(|_| GridError::Config(format!("{} chunks is too many", job.chunks.len())))?;
        let costs = match job.chunks.same_cost() {
            Some(cost) => Costs::Same { chunks, cost },
            None => Costs::Each((0..job.chunks.len()).map(|i| job.chunks.cost(i)).collect()),
        };
        // What is left to do and what was reused, in one pass over the chunks.
        let (mut work_left, mut units_reused, mut reused) = (0.0, 0u64, 0usize);
        for i in 0..job.chunks.len() {
            if results.is_set(i) {
                units_reused += job.chunks.units(i);
                reused += 1;
            } else {
                work_left += job.chunks.cost(i) as f64;
            }
        }
        let mut sched_config = config.scheduler.clone();
        sched_config.replicas = config.replicas;
        sched_config.spot_check = config.spot_check;
        sched_config.spot_check_seed =
            u64::from_le_bytes(job_id.0[..8].try_into().unwrap_or([0; 8]));
        sched_config.trust = config.trust;
        // Secret and fresh per run: a peer must not be able to tell which of its
        // results will be audited.
        sched_config.audit_seed = rand::random();
        sched_config.trusted_checks_only = !config.compute_locally;
        sched_config
            .validate()
            .map_err(|e| GridError::Config(e.to_string()))?;
        let pins = node.store.pin(inputs);
        if let Some(watch) = &config.watch {
            for chunk in results.set_chunks() {
                if let Some(cid) = results.result_of(chunk)? {
                    watch.result(ResultEvent::Verified {
                        chunk,
                        cid,
                        bytes: None,
                    });
                }
            }
        }
        let progress = Progress::new(&job, units_reused, config.show_progress);
        let me = node.peer_id();
        Ok(JobLoop {
            node,
            me,
            started: Instant::now(),
            phase: Phase::Gathering { joins: Vec::new() },
            sched_config,
            reused,
            costs: Some(costs),
            work_left,
            units_reused,
            book: PeerBook::default(),
            trust: TrustBook::open(node.data_dir()),
            results,
            progress,
            actions: Vec::new(),
            runs: Runs::new(node, reports.clone()),
            kernel_errors: HashMap::new(),
            lost: None,
            reports,
            _pins: pins,
            job,
            config,
        })
    }

    /// Everyone already known is a candidate: their probes and benchmarks start before
    /// this machine's own benchmark, so the two run at the same time.
    pub async fn probe_known_peers(&mut self) {
        let Ok(known) = self.node.client.peers().await else {
            return;
        };
        for entry in known {
            if let Some(peer) = entry.peer {
                self.book
                    .found_by
                    .entry(peer)
                    .or_default()
                    .extend(entry.sources);
                self.probe(peer);
            }
        }
    }

    /// This machine computes too: benchmarks it; it joins as the trusted worker when
    /// the job starts dispatching. With `--no-compute` under earned trust it joins
    /// only to check the results that need it (no benchmark: it gets no other work).
    pub async fn join_this_machine(&mut self) {
        let checks_only = !self.config.compute_locally;
        if checks_only && self.config.trust == Trust::All {
            return;
        }
        let score = if checks_only {
            1.0
        } else {
            tracing::debug!("benchmarking this machine");
            local_bench(self.node, &self.job).await
        };
        tracing::debug!("this machine scores {score:.0} units/s");
        self.book.scores.insert(self.me, score);
        self.book.local_score = Some(score);
        let join = Event::PeerJoined {
            peer: self.me,
            score,
            trusted: true,
            weight: self.book.weight_of(&self.config, self.me),
        };
        let slots = Event::PeerSlots {
            peer: self.me,
            slots: self.node.executor.cores() as u32,
        };
        self.join([join, slots]);
    }

    /// Runs the job to its end.
    pub async fn run(
        mut self,
        mut events: broadcast::Receiver<PeerEvent>,
        mut reports: mpsc::UnboundedReceiver<Report>,
    ) -> Result<JobOutcome, GridError> {
        tracing::debug!("looking for peers");
        let providers_key = kernel_key(&self.job.kernel, self.job.kernel_version);
        let mut dht_lookup = tokio::time::interval(Duration::from_secs(5));
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.start_dispatching_when_ready()?;
            self.carry_out_actions();
            if self.ended()? {
                break;
            }
            let wake = self.next_wakeup();
            tokio::select! {
                report = reports.recv() => {
                    let Some(report) = report else { return Err(GridError::Stopped) };
                    self.on_report(report).await;
                }
                event = events.recv() => match event {
                    Ok(event) => self.on_peer_event(event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(GridError::Stopped),
                },
                _ = dht_lookup.tick() => {
                    let client = self.node.client.clone();
                    let key = providers_key.clone();
                    // Found providers come back as Discovered events.
                    tokio::spawn(async move { let _ = client.find_providers(key).await; });
                }
                _ = tokio::time::sleep(wake) => self.handle(Event::Tick),
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.finish().await
    }

    /// Gathering ends once enough remote peers joined (at once without `--min-peers`):
    /// the scheduler starts, with every join so far.
    fn start_dispatching_when_ready(&mut self) -> Result<(), GridError> {
        let Phase::Gathering { joins } = &mut self.phase else {
            return Ok(());
        };
        if self.book.remote_joined(self.me) < self.config.min_peers {
            return Ok(());
        }
        let joins = std::mem::take(joins);
        let fastest = self.book.scores.values().copied().fold(0.0, f64::max);
        let mut config = self.sched_config.clone();
        config.pipeline = pipeline_for(self.work_left, fastest, self.sched_config.pipeline);
        let costs = self.costs.take().unwrap_or(Costs::Each(Vec::new()));
        let done = self.results.set_chunks().map(|i| i as u32);
        let mut sched = Scheduler::with_done(config, costs, done)
            .map_err(|e| GridError::Config(e.to_string()))?;
        let now = self.started.elapsed();
        for join in joins {
            sched.handle(now, join, &mut self.actions);
        }
        self.phase = Phase::Dispatching {
            sched: Box::new(sched),
            since: Instant::now(),
        };
        Ok(())
    }

    /// Feeds the scheduler one event (dropped while gathering: nothing is out yet).
    fn handle(&mut self, event: Event<PeerId>) {
        if let Phase::Dispatching { sched, .. } = &mut self.phase {
            sched.handle(self.started.elapsed(), event, &mut self.actions);
        }
    }

    /// A peer (or this machine) joins with these events: held back while gathering.
    fn join(&mut self, events: impl IntoIterator<Item = Event<PeerId>>) {
        for event in events {
            match &mut self.phase {
                Phase::Gathering { joins } => joins.push(event),
                Phase::Dispatching { .. } => self.handle(event),
            }
        }
    }

    /// Whether the job is done; an error if it failed, or if `--min-peers` were not
    /// found in time.
    fn ended(&self) -> Result<bool, GridError> {
        if let Some(why) = &self.lost {
            return Err(GridError::Failed(why.clone()));
        }
        match &self.phase {
            Phase::Dispatching { sched, .. } => match sched.outcome() {
                Some(Outcome::Complete) => Ok(true),
                Some(Outcome::Failed(JobFailure::PoisonChunk { chunk, peers })) => {
                    Err(GridError::ChunkFailed {
                        chunk: chunk as usize,
                        peers,
                        reason: self.kernel_errors.get(&chunk).cloned().unwrap_or_default(),
                    })
                }
                Some(Outcome::Failed(reason)) => Err(GridError::Failed(reason.to_string())),
                None => Ok(false),
            },
            Phase::Gathering { .. } if self.started.elapsed() >= self.config.discover_timeout => {
                Err(GridError::NotEnoughPeers {
                    found: self.book.remote_joined(self.me),
                    wanted: self.config.min_peers,
                    waited: self.config.discover_timeout,
                    why: self.book.why_not_enough(),
                })
            }
            Phase::Gathering { .. } => Ok(false),
        }
    }

    fn next_wakeup(&self) -> Duration {
        match &self.phase {
            Phase::Dispatching { sched, .. } => sched
                .next_wakeup()
                .map(|at| at.saturating_sub(self.started.elapsed()))
                .unwrap_or(Duration::from_secs(1)),
            Phase::Gathering { .. } => Duration::from_secs(1),
        }
    }

    /// Publishes the job's view to its watcher, if any, when one is due (`force`: now).
    fn publish(&self, force: bool) {
        let Some(watch) = &self.config.watch else {
            return;
        };
        if !watch.due(force) {
            return;
        }
        let (sched, since, phase) = match &self.phase {
            Phase::Dispatching { sched, since } => {
                (Some(&**sched), Some(*since), watch::Phase::Dispatching)
            }
            Phase::Gathering { .. } => (None, None, watch::Phase::Gathering),
        };
        watch.publish(
            ViewSource {
                job: &self.job,
                sched,
                book: &self.book,
                me: self.me,
                reused: &|i| self.results.is_set(i),
                elapsed: self.started.elapsed(),
                dispatching_for: since.map(|s| s.elapsed()).unwrap_or_default(),
                units_reused: self.units_reused,
            },
            phase,
        );
    }

    /// The job is complete: stops what still runs and builds the outcome.
    async fn finish(mut self) -> Result<JobOutcome, GridError> {
        self.publish(true);
        self.runs.stop_all();
        self.progress.finish();
        self.trust.save();
        let Phase::Dispatching { sched, since } = &self.phase else {
            return Err(GridError::Failed("the job ended before it started".into()));
        };
        let sent = self.node.traffic.snapshot();
        let routes: HashMap<PeerId, Route> = self
            .node
            .client
            .peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((e.peer?, e.route?)))
            .collect();
        let peers = peer_reports(sched, &self.book, self.me, &routes, &sent);
        let report = JobReport {
            kernel: self.job.kernel.clone(),
            output: None,
            output_blake3: None,
            chunks: self.job.chunks.len(),
            chunks_reused: self.reused,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            dispatch_seconds: since.elapsed().as_secs_f64(),
            replicas: self.config.replicas,
            spot_check: self.config.spot_check,
            trust: match self.config.trust {
                Trust::All => "all",
                Trust::Earned { .. } => "earned",
            },
            checks: sched.progress().checks,
            peers,
        };
        if let Some(watch) = &self.config.watch {
            watch.finished(&report);
        }
        let results = self.results.finish()?;
        Ok(JobOutcome { results, report })
    }
}

/// How much work a peer holds ahead: the configured pipeline, but at most an eighth of
/// the job's time on the fastest peer known at the start, so that on a short job the
/// first peer served does not take every chunk while the others wait (later peers
/// still pull; the floor keeps a round trip covered).
fn pipeline_for(total_work: f64, fastest_score: f64, configured: Duration) -> Duration {
    if !(fastest_score > 0.0 && total_work > 0.0) {
        return configured;
    }
    let eighth = Duration::from_secs_f64((total_work / fastest_score / 8.0).min(3600.0));
    eighth.clamp(
        Duration::from_millis(20),
        configured.max(Duration::from_millis(20)),
    )
}
