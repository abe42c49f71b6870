//! The web page (`--ui`) with a real browser (headless Chromium, see `browser.rs`)
//! during real grid jobs on loopback, and its access rules over plain HTTP.

mod browser;
mod starts;
mod volunteer;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use browser::Browser;
use idlegrid::grid::{self, GridConfig};
use idlegrid::policy::Gate;
use idlegrid::ui::{hub_with_submitter, Hub, Page, UiConfig, Volunteer};
use idlegrid::worker::{FaultInjection, WorkerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

fn loopback_page() -> UiConfig {
    UiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        open: false,
    }
}

/// Where the tests leave what a person may want to look at (screenshots).
fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Workers that benchmark at full speed and then take `delay` per chunk, so the job
/// lasts long enough to be watched.
fn slow(delay: Duration) -> impl Fn(usize) -> idlegrid::worker::FaultInjection {
    move |_| FaultInjection {
        delay,
        delay_from_chunk: 1,
        ..FaultInjection::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_a_grid_job_as_it_runs() {
    let plan = change_plan(256, 8, 6);
    let (_workers, addrs) = workers(2, |i| faulty(slow(Duration::from_millis(120))(i))).await;
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let page = Page::start(loopback_page(), Hub::for_node(&submitter, None))
        .await
        .unwrap();
    let (job, _resident) = prepare(&submitter, &plan).await;
    let (watch, _) = page.hub.add_job("change sample".into(), &job);
    let config = GridConfig {
        watch: Some(watch),
        ..remote_pool(2)
    };

    let url = page.url();
    let profile = temp_dir("chromium");
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let chunks = plan.chunks.len();
    let shot = artefacts().join("ui-mid-job.png");
    let shot_path = shot.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let Some(mut browser) = Browser::open(&url, profile) else {
            let _ = opened_tx.send(false);
            return None;
        };
        browser.wait_for(
            "document.querySelector('#live.on') !== null",
            "its live stream",
        );
        let _ = opened_tx.send(true);
        let _ = go_rx.recv_timeout(browser::WAIT);
        // Mid-job: some chunks verified, not all.
        browser.wait_for(
            "(() => { const c = document.querySelector('canvas.map'); \
             return c !== null && Number(c.dataset.verified) > 0; })()",
            "a verified chunk",
        );
        browser.screenshot(&shot_path);
        browser.wait_for(
            &format!(
                "(() => {{ const c = document.querySelector('canvas.map'); \
                 const h = document.querySelector('.job h3'); \
                 return c !== null && Number(c.dataset.verified) === {chunks} \
                 && h.textContent.includes('done'); }})()"
            ),
            "every chunk verified and the job done",
        );
        // The last picture: every band painted, loaded.
        browser.wait_for(
            &format!(
                "(() => {{ const i = document.querySelector('img.partial'); \
                 return i !== null && Number(i.dataset.version) === {chunks} && i.complete; }})()"
            ),
            "the whole mask painted",
        );
        let png = browser.fetch_bytes("document.querySelector('img.partial').src");
        let rows = browser.eval(
            "Array.from(document.querySelectorAll('#peers tbody tr')).map(r => \
             [r.dataset.peer, r.cells[7].textContent, Number(r.cells[8].textContent)])",
        );
        let map_peers = browser.eval("document.querySelector('canvas.map').dataset.peers");
        Some((png, rows, map_peers))
    });
    let opened = tokio::time::timeout(TIMEOUT, opened_rx)
        .await
        .expect("the browser did not open the page in time")
        .unwrap_or(false);
    if !opened {
        return;
    }
    let _ = go_tx.send(());
    let outcome = tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, config))
        .await
        .expect("job timed out")
        .expect("job succeeds");
    let (png, rows, map_peers) = seen.await.unwrap().expect("the browser looked");
    println!("screenshot of the page mid-job: {}", shot.display());

    // The peers the page lists for the job are the report's, with the same counts.
    let report = &outcome.report;
    let reported: BTreeSet<String> = report.peers.iter().map(|p| p.peer_id.clone()).collect();
    let listed: BTreeSet<String> = map_peers
        .as_str()
        .unwrap()
        .split(' ')
        .map(String::from)
        .collect();
    assert_eq!(listed, reported);
    for p in &report.peers {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == p.peer_id.as_str())
            .unwrap_or_else(|| panic!("{} is not in the page's table: {rows}", p.peer_id));
        assert_eq!(row[2].as_u64(), Some(p.chunks_done), "{row}");
        assert!(row[1].as_str().unwrap().starts_with(p.breaker), "{row}");
    }

    // The picture's last frame is the mask the job wrote, downscaled.
    let mask = assembled(&plan, &outcome);
    let (w, h, small) = idlegrid::ui::partial::downscale(&mask.pixels, mask.width, mask.height);
    let shown = image::load_from_memory(&png).unwrap().to_luma8();
    assert_eq!((shown.width(), shown.height()), (w, h));
    assert!(
        shown.as_raw() == &small,
        "the page's last picture differs from the mask"
    );
    assert!(small.contains(&255), "the sample has changes to show");
}

/// `idlegrid change --local` on `before`/`after`, as the command line runs it.
fn local_mask(before: &std::path::Path, after: &std::path::Path, out: &std::path::Path) -> Vec<u8> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: idlegrid::commands::change::ChangeArgs,
    }
    let cli = Cli::try_parse_from([
        "change".as_ref(),
        before.as_os_str(),
        after.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--local".as_ref(),
    ])
    .unwrap();
    idlegrid::commands::change::run(cli.args).unwrap();
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_started_from_the_page_equals_the_command_line() {
    let dir = temp_dir("page-job");
    std::fs::create_dir_all(&dir).unwrap();
    let (before, after) = (dir.join("before.png"), dir.join("after.png"));
    let pair = idlegrid_kernels::change::sample_pair(640, 480, 7);
    pair.before.save(&before).unwrap();
    pair.after.save(&after).unwrap();
    let expected = {
        let (b, a, o) = (before.clone(), after.clone(), dir.join("local.png"));
        tokio::task::spawn_blocking(move || local_mask(&b, &a, &o))
            .await
            .unwrap()
    };

    let (_workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let submitter = Arc::new(start("submitter", false, WorkerConfig::default(), addrs).await);
    let hub = hub_with_submitter(submitter.clone(), None, dir.join("ui"));
    let page = Page::start(loopback_page(), hub).await.unwrap();
    let url = page.url();
    let profile = temp_dir("chromium");
    let downloaded = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::open(&url, profile)?;
        browser.wait_for(
            "document.querySelector('#start-section').hidden === false",
            "the start form",
        );
        browser.set_files("#before", &[&before]);
        browser.set_files("#after", &[&after]);
        browser.eval("document.querySelector('#start-button').click()");
        browser.wait_for(
            "document.querySelector('a.output') !== null",
            "the finished job's download link",
        );
        let status = browser.eval("document.querySelector('#start-status').textContent");
        assert!(status.as_str().unwrap().contains("started"), "{status}");
        Some(browser.fetch_bytes("document.querySelector('a.output').href"))
    })
    .await
    .unwrap();
    let Some(downloaded) = downloaded else { return };
    assert!(
        downloaded == expected,
        "the mask downloaded from the page differs from `idlegrid change --local`"
    );
    let job = page.hub.job(1).expect("the page's job");
    let report = job.views.borrow().report.clone().expect("its report");
    assert_eq!(report.chunks, job.views.borrow().chunks);
}

/// A non-loopback address of this machine, to be another host to the page.
fn lan_address() -> IpAddr {
    let mut found = None;
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        assert_eq!(libc::getifaddrs(&mut list), 0);
        let mut at = list;
        while !at.is_null() {
            let addr = (*at).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let v4 = &*(addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                if !ip.is_loopback() {
                    found = Some(IpAddr::V4(ip));
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.expect("this test needs a non-loopback IPv4 address on this machine")
}

/// Sends `method path` from `from` to `to` (with the action header if `header`) and
/// returns the status code.
async fn request(from: IpAddr, to: SocketAddr, method: &str, path: &str, header: bool) -> u16 {
    request_for_host(from, to, &to.to_string(), method, path, header).await
}

async fn request_for_host(
    from: IpAddr,
    to: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    header: bool,
) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut stream = tokio::time::timeout(TIMEOUT, socket.connect(to))
        .await
        .expect("connect timed out")
        .expect("connects");
    let extra = if header { "X-Idlegrid: 1\r\n" } else { "" };
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("answer timed out")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

async fn volunteer_page(open: bool) -> (Page, Gate, idlegrid::node::Node) {
    let gate = Gate::open();
    let node = start("volunteer", true, WorkerConfig::default(), Vec::new()).await;
    let hub = Hub::for_node(
        &node,
        Some(Volunteer {
            gate: gate.clone(),
            settings: vec!["caps: test".into()],
        }),
    );
    let config = UiConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        open,
    };
    (Page::start(config, hub).await.unwrap(), gate, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_from_other_hosts_unless_opened() {
    let lan = lan_address();
    let me: IpAddr = "127.0.0.1".parse().unwrap();
    let (page, _gate, _node) = volunteer_page(false).await;
    let port = page.addr.port();
    let at = |ip| SocketAddr::new(ip, port);
    assert_eq!(request(lan, at(lan), "GET", "/api/state", false).await, 200);
    assert_eq!(request(lan, at(lan), "GET", "/", false).await, 200);
    // Anything else from another host is refused before it reaches a handler.
    assert_eq!(request(lan, at(lan), "POST", "/api/state", true).await, 403);
    assert_eq!(request(lan, at(lan), "DELETE", "/", true).await, 403);
    // From this machine it reaches the router (which has no POST there).
    assert_eq!(request(me, at(me), "POST", "/api/state", true).await, 405);
    // A foreign site's name pointed at 127.0.0.1 (DNS rebinding) gets nothing.
    let evil = format!("evil.example:{port}");
    assert_eq!(
        request_for_host(me, at(me), &evil, "GET", "/api/state", false).await,
        403
    );
    let local = format!("localhost:{port}");
    assert_eq!(
        request_for_host(me, at(me), &local, "GET", "/api/state", false).await,
        200
    );

    let (page, _gate, _node) = volunteer_page(true).await;
    let at = |ip| SocketAddr::new(ip, page.addr.port());
    assert_eq!(request(lan, at(lan), "POST", "/api/state", true).await, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_this_machine_pauses_lending() {
    let lan = lan_address();
    let me: IpAddr = "127.0.0.1".parse().unwrap();
    // Even opened to the network (--ui-listen), pausing is the owner's.
    let (page, gate, _node) = volunteer_page(true).await;
    let at = |ip| SocketAddr::new(ip, page.addr.port());
    assert_eq!(request(lan, at(lan), "POST", "/api/pause", true).await, 403);
    assert!(!gate.paused() && gate.decision().lend);
    // Without the action header (what a foreign web page in this machine's browser
    // could send), refused too.
    assert_eq!(request(me, at(me), "POST", "/api/pause", false).await, 403);
    assert!(!gate.paused());
    assert_eq!(request(me, at(me), "POST", "/api/pause", true).await, 200);
    assert!(gate.paused());
    assert!(!gate.decision().lend);
    assert!(gate.decision().summary().contains("paused by the owner"));
    // A worker of a paused volunteer refuses chunks like a policy stop does.
    assert!(gate.admit(libp2p::PeerId::random()).is_err());
    assert_eq!(
        request(lan, at(lan), "POST", "/api/resume", true).await,
        403
    );
    assert!(gate.paused());
    assert_eq!(request(me, at(me), "POST", "/api/resume", true).await, 200);
    assert!(!gate.paused() && gate.decision().lend);
}

/// GETs `path` from a loopback page and returns the body.
async fn get_body(to: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(to))
        .await
        .expect("connect timed out")
        .expect("connects");
    let text = format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("answer timed out")
        .unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, answer[end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_video_job_shows_its_newest_segment() {
    use idlegrid_kernels::video::{self, VideoSettings};

    let frames_dir = temp_dir("frames");
    let frames = video::write_sample_frames(&frames_dir, 24, 320, 180).unwrap();
    let first_frames: Vec<PathBuf> = frames.iter().step_by(6).cloned().collect();
    let settings = VideoSettings {
        segment_frames: 6,
        ..VideoSettings::default()
    };
    let plan = video::plan_frames(frames, settings).unwrap();
    let (_workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let submitter = start("submitter", false, WorkerConfig::default(), addrs).await;
    let page = Page::start(loopback_page(), Hub::for_node(&submitter, None))
        .await
        .unwrap();
    let (job, blobs) = idlegrid::jobs::video_job(&plan).unwrap();
    let _resident = idlegrid::commands::common::store_blobs(&submitter, blobs)
        .await
        .unwrap();
    let (watch, entry) = page.hub.add_job("video sample".into(), &job);
    let config = GridConfig {
        watch: Some(watch),
        ..remote_pool(1)
    };
    let (code, _) = get_body(page.addr, "/api/jobs/1/thumbnail.png").await;
    assert_eq!(code, 404, "no segment verified before the job runs");
    tokio::time::timeout(TIMEOUT, grid::run_job(&submitter, job, config))
        .await
        .expect("job timed out")
        .expect("job succeeds");
    // The results reach the page's task a moment after the job ends.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while entry.thumbnail.as_ref().unwrap().version() != Some(4) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every segment seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, png) = get_body(page.addr, "/api/jobs/1/thumbnail.png").await;
    assert_eq!(code, 200);
    let shown = image::load_from_memory(&png).unwrap().to_rgb8();
    // It is the first frame of one of the segments, scaled into 320x180.
    let matches = first_frames.iter().any(|path| {
        let frame = image::open(path).unwrap();
        frame.thumbnail(320, 180).to_rgb8() == shown
    });
    assert!(matches, "the thumbnail is no segment's first frame");
}

/// POSTs `json` to a loopback page (with the action header); returns the code and body.
async fn post_json(to: SocketAddr, path: &str, json: &str) -> (u16, String) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {to}\r\nX-Idlegrid: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    send(to, &head, json.as_bytes()).await
}

/// Sends one request (`head` and `body`) to a page; the answer's status code and body.
async fn send(to: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(to))
        .await
        .expect("connect timed out")
        .expect("connects");
    stream.write_all(head.as_bytes()).await.unwrap();
    // A refused upload may close the connection before all of it is sent.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("answer timed out")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let code = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_video_started_from_the_page_equals_the_command_line() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: idlegrid::commands::video::VideoArgs,
    }
    let frames_dir = temp_dir("frames");
    idlegrid_kernels::video::write_sample_frames(&frames_dir, 24, 160, 96).unwrap();
    let out = temp_dir("local-mp4");
    std::fs::create_dir_all(&out).unwrap();
    let local = out.join("local.mp4");
    let cli = Cli::try_parse_from([
        "video".as_ref(),
        frames_dir.as_os_str(),
        "-o".as_ref(),
        local.as_os_str(),
        "--fps".as_ref(),
        "25".as_ref(),
        "--local".as_ref(),
    ])
    .unwrap();
    tokio::task::spawn_blocking(move || idlegrid::commands::video::run(cli.args))
        .await
        .unwrap()
        .unwrap();
    let expected = std::fs::read(&local).unwrap();

    let (_workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let submitter = Arc::new(start("submitter", false, WorkerConfig::default(), addrs).await);
    let hub = hub_with_submitter(submitter.clone(), None, out.join("ui"));
    let page = Page::start(loopback_page(), hub).await.unwrap();
    // A folder that is not there: the command line's error, at once.
    let (code, body) = post_json(
        page.addr,
        "/api/jobs",
        r#"{"kernel":"video","frames":"/nonexistent/frames"}"#,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("/nonexistent/frames"), "{body}");
    // Two jobs at once: this one, and the same frames at another frame rate.
    let mut ids = Vec::new();
    for fps in ["25", "30"] {
        let request = serde_json::json!({
            "kernel": "video",
            "frames": frames_dir.display().to_string(),
            "fps": fps,
        });
        let (code, body) = post_json(page.addr, "/api/jobs", &request.to_string()).await;
        assert_eq!(code, 200, "{body}");
        ids.push(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
                .as_u64()
                .unwrap(),
        );
    }
    let mut outputs = Vec::new();
    for id in ids {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        outputs.push(loop {
            let (code, bytes) = get_body(page.addr, &format!("/api/jobs/{id}/output")).await;
            if code == 200 {
                break bytes;
            }
            assert!(tokio::time::Instant::now() < deadline, "no MP4 in time");
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
    }
    assert!(
        outputs[0] == expected,
        "the MP4 from the page differs from `idlegrid video --local`"
    );
    assert!(
        outputs[1] != expected && outputs[1].len() > 1000,
        "the second job's MP4"
    );
}
