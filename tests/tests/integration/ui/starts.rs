//! Jobs started from the page, over HTTP as the page's forms send them and from the
//! wasm form in a browser: a change detection with its overlay, and wasm jobs, each
//! output downloaded and compared with what the command line writes for the same job
//! with `--local`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use idlegrid::ui::{hub_with_submitter, Page};
use idlegrid::worker::WorkerConfig;

use super::{get_body, loopback_page, post_json, send};
use crate::common::*;

/// Writes argv[1] then its stdin to stdout; exits with code 3 when argv[1] is "bad".
/// (The `run` command's test module, peer/tests/integration/run_cli.rs.)
pub const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 900) "no good\n")
  (func $out (param $fd i32) (param $p i32) (param $l i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $l))
    (drop (call $w (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (local $a i32) (local $n i32)
    (drop (call $sizes (i32.const 100) (i32.const 104)))
    (drop (call $args (i32.const 200) (i32.const 1024)))
    (if (i32.ge_u (i32.load (i32.const 100)) (i32.const 2)) (then
      (local.set $a (i32.load (i32.const 204)))
      (if (i32.eq (i32.load (local.get $a)) (i32.const 0x00646162)) (then ;; "bad\0"
        (call $out (i32.const 2) (i32.const 900) (i32.const 8))
        (call $exit (i32.const 3))))
      (call $out (i32.const 1) (local.get $a)
        (i32.sub (i32.sub (i32.add (i32.const 1024) (i32.load (i32.const 104))) (local.get $a)) (i32.const 1)))))
    (block $done (loop $more
      (i32.store (i32.const 16) (i32.const 4096))
      (i32.store (i32.const 20) (i32.const 4096))
      (drop (call $r (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
      (local.set $n (i32.load (i32.const 24)))
      (br_if $done (i32.eqz (local.get $n)))
      (call $out (i32.const 1) (i32.const 4096) (local.get $n))
      (br $more)))))"#;

/// PUTs `body` to a loopback page (with the action header); returns the code and text.
async fn put(to: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {to}\r\nX-Idlegrid: 1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    send(to, &head, body).await
}

/// Starts a job through `POST /api/jobs`; its id.
async fn start_job(page: SocketAddr, request: serde_json::Value) -> u64 {
    let (code, body) = post_json(page, "/api/jobs", &request.to_string()).await;
    assert_eq!(code, 200, "{request}: {body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_u64()
        .unwrap()
}

/// The job `id` of the page's state once it has ended, with `outputs` outputs listed.
async fn ended(page: SocketAddr, id: u64, outputs: usize) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (code, body) = get_body(page, "/api/state").await;
        assert_eq!(code, 200);
        let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let job = state["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .cloned()
            .expect("the job is on the page");
        assert_ne!(job["phase"], "failed", "{job}");
        if job["phase"] == "done" && job["outputs_total"] == outputs {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not end with {outputs} outputs: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Output `n` of job `id`, downloaded.
async fn download(page: SocketAddr, id: u64, n: usize) -> Vec<u8> {
    let (code, bytes) = get_body(page, &format!("/api/jobs/{id}/outputs/{n}")).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&bytes));
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_started_from_the_page_downloads_its_mask_and_overlay() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: idlegrid::commands::change::ChangeArgs,
    }
    let dir = temp_dir("page-overlay");
    std::fs::create_dir_all(&dir).unwrap();
    let (before, after) = (dir.join("before.png"), dir.join("after.png"));
    let pair = idlegrid_kernels::change::sample_pair(320, 240, 5);
    pair.before.save(&before).unwrap();
    pair.after.save(&after).unwrap();
    let (mask, overlay) = (dir.join("mask.png"), dir.join("overlay.png"));
    let cli = Cli::try_parse_from([
        "change".as_ref(),
        before.as_os_str(),
        after.as_os_str(),
        "-o".as_ref(),
        mask.as_os_str(),
        "--overlay".as_ref(),
        overlay.as_os_str(),
        "--local".as_ref(),
    ])
    .unwrap();
    tokio::task::spawn_blocking(move || idlegrid::commands::change::run(cli.args))
        .await
        .unwrap()
        .unwrap();

    let submitter = Arc::new(start("submitter", false, WorkerConfig::default(), Vec::new()).await);
    let hub = hub_with_submitter(submitter.clone(), None, dir.join("ui"));
    let page = Page::start(loopback_page(), hub).await.unwrap();
    for (slot, path) in [("before", &before), ("after", &after)] {
        let bytes = std::fs::read(path).unwrap();
        let (code, text) = put(
            page.addr,
            &format!("/api/uploads/{slot}?name={slot}.png"),
            &bytes,
        )
        .await;
        assert_eq!(code, 200, "{text}");
    }
    let id = start_job(
        page.addr,
        serde_json::json!({"kernel": "change", "method": "sa", "overlay": true}),
    )
    .await;
    let job = ended(page.addr, id, 2).await;
    assert_eq!(
        job["outputs"][1][1],
        format!("job-{id}-overlay.png"),
        "{job}"
    );
    assert!(
        download(page.addr, id, 0).await == std::fs::read(&mask).unwrap(),
        "the mask from the page differs from `idlegrid change --local`"
    );
    assert!(
        download(page.addr, id, 1).await == std::fs::read(&overlay).unwrap(),
        "the overlay from the page differs from `idlegrid change --local --overlay`"
    );
}

/// `idlegrid run MODULE --range R --args A -o OUT [--join concat] --local` in `dir`.
fn run_local(module: &Path, range: &str, args: &str, out: &Path, join: bool) {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: idlegrid::commands::run::RunArgs,
    }
    let mut argv: Vec<String> = vec![
        "run".into(),
        module.display().to_string(),
        format!("--range={range}"),
        format!("--args={args}"),
        format!("--output={}", out.display()),
        "--local".into(),
    ];
    if join {
        argv.push("--join=concat".into());
    }
    let cli = Cli::try_parse_from(&argv).unwrap();
    idlegrid::commands::run::run(cli.args).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wasm_job_started_from_the_page_equals_the_command_line() {
    let dir = temp_dir("page-wasm");
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("echo.wasm");
    let wasm = wat::parse_str(ECHO).unwrap();
    std::fs::write(&module, &wasm).unwrap();
    let (m, local) = (module.clone(), dir.join("local"));
    tokio::task::spawn_blocking(move || {
        run_local(&m, "3..9", "{i}:", &local.join("r/{i:02}.txt"), false);
        run_local(&m, "0..5", "{i},", &local.join("all.txt"), true);
    })
    .await
    .unwrap();

    let (_workers, addrs) = workers(1, |_| WorkerConfig::default()).await;
    let submitter = Arc::new(start("submitter", false, WorkerConfig::default(), addrs).await);
    let hub = hub_with_submitter(submitter.clone(), None, dir.join("ui"));
    let page = Page::start(loopback_page(), hub).await.unwrap();

    // Bad input gets the command line's own error, before anything runs.
    let (code, text) = put(page.addr, "/api/uploads/module?name=echo.wasm", b"not wasm").await;
    assert_eq!(code, 200, "{text}");
    let (code, text) = post_json(
        page.addr,
        "/api/jobs",
        r#"{"kernel":"wasm","range":"0..2","output":"o_{i}"}"#,
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(
        text.starts_with("echo.wasm"),
        "the module named as uploaded: {text}"
    );
    let (code, text) = put(page.addr, "/api/uploads/module?name=echo.wasm", &wasm).await;
    assert_eq!(code, 200, "{text}");
    for (request, says) in [
        (
            r#"{"kernel":"wasm","range":"5..2","output":"o_{i}"}"#,
            "the range is empty",
        ),
        (r#"{"kernel":"wasm","range":"0..2","output":"o_{j}"}"#, "-o"),
        (
            r#"{"kernel":"wasm","range":"0..2","output":"o"}"#,
            "more than one run",
        ),
        (
            r#"{"kernel":"wasm","range":"0..2","output":"../o_{i}"}"#,
            "stay in its folder",
        ),
        (
            r#"{"kernel":"wasm","range":"0..2","output":"/tmp/o_{i}"}"#,
            "stay in its folder",
        ),
        (
            r#"{"kernel":"wasm","range":"0..2","output":"o_{i}","memory":"lots"}"#,
            "--memory",
        ),
    ] {
        let (code, text) = post_json(page.addr, "/api/jobs", request).await;
        assert_eq!(code, 400, "{request}: {text}");
        assert!(text.contains(says), "{request}: {text}");
    }

    // One output per run, listed and downloadable; and the runs joined into one file.
    let each = start_job(
        page.addr,
        serde_json::json!({"kernel": "wasm", "range": "3..9", "args": "{i}:", "output": "r/{i:02}.txt"}),
    )
    .await;
    let joined = start_job(
        page.addr,
        serde_json::json!({"kernel": "wasm", "range": "0..5", "args": "{i},", "output": "all.txt",
            "join": true, "fuel": "1000000", "memory": "1MiB"}),
    )
    .await;
    let job = ended(page.addr, each, 6).await;
    let mut names: Vec<String> = job["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o[1].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let expected: Vec<String> = (3..9).map(|i| format!("r/{i:02}.txt")).collect();
    assert_eq!(names, expected, "{job}");
    for (n, output) in job["outputs"].as_array().unwrap().iter().enumerate() {
        let name = output[1].as_str().unwrap();
        let bytes = download(page.addr, each, n).await;
        assert_eq!(
            bytes,
            std::fs::read(dir.join("local").join(name)).unwrap(),
            "{name} from the page differs from `idlegrid run --local`'s"
        );
    }
    ended(page.addr, joined, 1).await;
    let bytes = download(page.addr, joined, 0).await;
    assert_eq!(String::from_utf8_lossy(&bytes), "0,1,2,3,4,");
    assert_eq!(bytes, std::fs::read(dir.join("local/all.txt")).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wasm_job_started_from_the_form_lists_and_serves_its_outputs() {
    let dir = temp_dir("page-wasm-form");
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("echo.wasm");
    std::fs::write(&module, wat::parse_str(ECHO).unwrap()).unwrap();
    let (m, local) = (module.clone(), dir.join("local"));
    tokio::task::spawn_blocking(move || {
        run_local(&m, "0..4", "run{i}", &local.join("out_{i:03}.txt"), false)
    })
    .await
    .unwrap();

    let submitter = Arc::new(start("submitter", false, WorkerConfig::default(), Vec::new()).await);
    let hub = hub_with_submitter(submitter.clone(), None, dir.join("ui"));
    let page = Page::start(loopback_page(), hub).await.unwrap();
    let url = page.url();
    let profile = temp_dir("chromium");
    let shown = tokio::task::spawn_blocking(move || {
        let mut browser = super::browser::Browser::open(&url, profile)?;
        browser.wait_for(
            "document.querySelector('#start-section').hidden === false",
            "the start forms",
        );
        browser.set_files("#module", &[&module]);
        browser.eval("document.querySelector('#range').value = '0..4'");
        browser.eval("document.querySelector('#wasm-args').value = 'run{i}'");
        browser.eval("document.querySelector('#wasm-button').click()");
        browser.wait_for(
            "document.querySelectorAll('#job-1 ul.outputs a.output').length === 4 \
             && document.querySelector('#job-1 h3').textContent.includes('done')",
            "the job's four outputs",
        );
        let names = browser.eval(
            "Array.from(document.querySelectorAll('#job-1 ul.outputs a.output')).map(a => a.dataset.name)",
        );
        let mut files = Vec::new();
        for (n, name) in names.as_array().unwrap().iter().enumerate() {
            let bytes = browser.fetch_bytes(&format!(
                "document.querySelectorAll('#job-1 ul.outputs a.output')[{n}].href"
            ));
            files.push((name.as_str().unwrap().to_string(), bytes));
        }
        Some(files)
    })
    .await
    .unwrap();
    let Some(files) = shown else { return };
    assert_eq!(files.len(), 4);
    for (name, bytes) in files {
        assert_eq!(
            bytes,
            std::fs::read(dir.join("local").join(&name)).unwrap(),
            "{name} from the page differs from `idlegrid run --local`'s"
        );
    }
}
