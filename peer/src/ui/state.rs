//! The page's state as one JSON document (`GET /api/state`, and each server-sent
//! event): this machine, the peers the network knows, the jobs with their latest
//! views, the volunteer's policy, the log tail. Built on demand from the owners of
//! each figure; the jobs' views are the ones their loops published last.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::hub::JobEntry;
use super::logtail::{self, LogLine};
use super::Hub;
use crate::grid::watch::JobView;

#[derive(Serialize)]
struct PageState<'a> {
    me: String,
    agent: String,
    uptime_seconds: f64,
    cores: usize,
    /// Bytes in the blob store, and reserved by blobs still arriving.
    store_used: u64,
    store_reserved: u64,
    /// Chunk runs this peer's jobs have going, here or elsewhere.
    chunk_runs: usize,
    network: Vec<NetPeer>,
    jobs: Vec<JobState<'a>>,
    volunteer: Option<VolunteerState>,
    log: Vec<LogLine>,
    /// Jobs may be started from this page (on loopback).
    can_start: bool,
}

/// A peer as the network task knows it.
#[derive(Serialize)]
struct NetPeer {
    id: String,
    agent: Option<String>,
    found_by: Vec<String>,
    route: Option<crate::net::Route>,
    rtt_ms: Option<f64>,
    connected: bool,
    /// Blob bytes this machine served it.
    bytes_sent: u64,
}

#[derive(Serialize)]
struct JobState<'a> {
    id: u64,
    title: &'a str,
    #[serde(flatten)]
    view: &'a JobView,
    /// Bumped when the partial picture changed (none: no picture for this kernel).
    partial_version: Option<u64>,
    /// Bumped when a video job's thumbnail changed (none: no thumbnail yet).
    thumbnail_version: Option<u64>,
    /// The first output's file name, once it can be downloaded from the page
    /// (`GET /api/jobs/{id}/output`).
    output: Option<String>,
    /// Every output written so far (`GET /api/jobs/{id}/outputs/{n}`): how many, and
    /// the newest ones with their numbers.
    outputs_total: usize,
    outputs: Vec<(usize, String)>,
}

#[derive(Serialize)]
struct VolunteerState {
    lending: bool,
    paused: bool,
    /// `lending` or `not lending: why`, as `idlegrid status` says it.
    summary: String,
    notes: Vec<String>,
    settings: Vec<String>,
    /// Chunks accepted and not yet ended.
    working: usize,
    refusals: Vec<(String, String)>,
    /// Whom this peer computes for, most recently active first.
    requesters: Vec<Requester>,
}

/// A peer this volunteer ran chunks for, with how they went.
#[derive(Serialize)]
struct Requester {
    id: String,
    #[serde(flatten)]
    tally: crate::worker::Tally,
    /// Blob bytes this machine served it (its results, fetched).
    bytes_sent: u64,
    /// Since its last chunk started or ended.
    seconds_ago: f64,
}

/// The state document, as JSON text.
pub async fn build(hub: &Hub) -> String {
    let sent = hub.traffic.snapshot();
    let network = hub
        .client
        .peers()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let peer = e.peer?;
            Some(NetPeer {
                id: peer.to_string(),
                agent: e.agent,
                found_by: e.sources.iter().map(|s| s.to_string()).collect(),
                route: e.route,
                rtt_ms: e.rtt.map(|d| d.as_secs_f64() * 1e3),
                connected: e.connected,
                bytes_sent: sent.get(&peer).copied().unwrap_or(0),
            })
        })
        .collect();
    let entries: Vec<Arc<JobEntry>> = hub.jobs();
    let views: Vec<Arc<JobView>> = entries.iter().map(|j| j.views.borrow().clone()).collect();
    let jobs = entries
        .iter()
        .zip(&views)
        .map(|(entry, view)| {
            let (outputs_total, outputs) = entry.listed_outputs();
            JobState {
                id: entry.id,
                title: &entry.title,
                view,
                partial_version: entry.partial.as_ref().map(|p| p.version()),
                thumbnail_version: entry.thumbnail.as_ref().and_then(|t| t.version()),
                output: entry.output(0).map(|o| o.file_name),
                outputs_total,
                outputs,
            }
        })
        .collect();
    let volunteer = hub.volunteer.as_ref().map(|v| {
        let decision = v.gate.decision();
        VolunteerState {
            lending: decision.lend,
            paused: v.gate.paused(),
            summary: decision.summary(),
            notes: decision.notes.clone(),
            settings: v.settings.clone(),
            working: v.gate.working(),
            refusals: v
                .gate
                .refusals()
                .into_iter()
                .map(|r| (r.peer.to_string(), r.reason))
                .collect(),
            requesters: hub
                .requesters
                .snapshot()
                .into_iter()
                .map(|(peer, tally, ago)| Requester {
                    id: peer.to_string(),
                    tally,
                    bytes_sent: sent.get(&peer).copied().unwrap_or(0),
                    seconds_ago: ago.as_secs_f64(),
                })
                .collect(),
        }
    });
    let (store_used, store_reserved) = hub.store.usage();
    let state = PageState {
        me: hub.me.to_string(),
        agent: crate::net::agent_version(),
        uptime_seconds: hub.started.elapsed().as_secs_f64(),
        cores: hub.cores,
        store_used,
        store_reserved,
        chunk_runs: hub.chunk_runs(),
        network,
        jobs,
        volunteer,
        log: logtail::lines(),
        can_start: hub.submit.is_some(),
    };
    serde_json::to_string(&state).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `GET /api/state`.
pub async fn get_state(State(hub): State<Arc<Hub>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        build(&hub).await,
    )
        .into_response()
}

/// `GET /api/jobs/{id}/report.json`: the job's report, as `--report` writes it.
pub async fn get_report(State(hub): State<Arc<Hub>>, Path(id): Path<u64>) -> Response {
    let report = hub.job(id).and_then(|j| j.views.borrow().report.clone());
    let Some(report) = report else {
        return (StatusCode::NOT_FOUND, "no report: the job has not ended").into_response();
    };
    match serde_json::to_vec_pretty(&report) {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"idlegrid-job-{id}-report.json\""),
                ),
            ],
            json,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn set_paused(hub: &Hub, paused: bool) -> Response {
    let Some(volunteer) = &hub.volunteer else {
        return (
            StatusCode::CONFLICT,
            "this peer does not lend (start it with `idlegrid serve --ui`)",
        )
            .into_response();
    };
    volunteer.gate.set_paused(paused);
    tracing::info!(
        "web page: lending {} by the owner",
        if paused { "paused" } else { "resumed" }
    );
    (StatusCode::OK, volunteer.gate.decision().summary()).into_response()
}

/// `POST /api/pause` (loopback only, see `super::access`).
pub async fn pause(State(hub): State<Arc<Hub>>) -> Response {
    set_paused(&hub, true)
}

/// `POST /api/resume` (loopback only).
pub async fn resume(State(hub): State<Arc<Hub>>) -> Response {
    set_paused(&hub, false)
}
