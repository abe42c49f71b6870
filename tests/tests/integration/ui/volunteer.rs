//! The volunteer's panel: whom it computes for, counted by its worker and shown in the
//! page's state document.

use std::time::Duration;

use idlegrid::grid;
use idlegrid::policy::Gate;
use idlegrid::ui::{Hub, Page, Volunteer};
use idlegrid::worker::WorkerConfig;

use super::{get_body, loopback_page};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_volunteer_page_lists_whom_it_computed_for() {
    let gate = Gate::open();
    let config = WorkerConfig {
        gate: gate.clone(),
        ..WorkerConfig::default()
    };
    let (workers, addrs) = workers(1, |_| config.clone()).await;
    let volunteer = &workers[0];
    let page = Page::start(
        loopback_page(),
        Hub::for_node(
            volunteer,
            Some(Volunteer {
                gate,
                settings: vec!["caps: test".into()],
            }),
        ),
    )
    .await
    .unwrap();
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let plan = change_plan(128, 16, 4);
    let (job, _resident) = prepare(&submitter, &plan).await;
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, remote_pool(1)))
        .await
        .expect("job timed out")
        .expect("job succeeds");
    let done_there = peer_line(&outcome.report, &volunteer.peer_id().to_string()).chunks_done;
    assert_eq!(
        done_there as usize,
        plan.chunks.len(),
        "only the volunteer computes"
    );

    // A chunk's run is counted as ended a moment after its result went out.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let me = submitter.peer_id().to_string();
    let row = loop {
        let (code, body) = get_body(page.addr, "/api/state").await;
        assert_eq!(code, 200);
        let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let rows = state["volunteer"]["requesters"].as_array().unwrap().clone();
        let row = rows.into_iter().find(|r| r["id"] == me.as_str());
        if let Some(row) = row.filter(|r| r["in_hand"] == 0) {
            break row;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the submitter is not listed with its chunks ended: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Its job's chunks, and the benchmark run before them.
    assert_eq!(row["done"].as_u64(), Some(done_there + 1), "{row}");
    assert_eq!(row["failed"].as_u64(), Some(0), "{row}");
    assert!(row["result_bytes"].as_u64().unwrap() > 0, "{row}");
    assert!(row["compute_ms"].is_u64(), "{row}");
}
