//! A headless Chromium driven over the DevTools protocol through a pipe
//! (`--remote-debugging-pipe`: commands on fd 3, answers on fd 4, each a JSON message
//! ended by a NUL byte), so the tests need no WebDriver and no websocket crate.
//!
//! Chromium is Debian's `chromium` (scripts/test.sh installs it), or the binary named
//! by `IDLEGRID_CHROMIUM`. Without one, [`Browser::open`] returns None and the test
//! says so and passes, except under `CI=true`, where it fails: CI installs it.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Every wait on the browser ends by this.
pub const WAIT: Duration = Duration::from_secs(45);

pub struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: PathBuf,
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("IDLEGRID_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser", "google-chrome"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // Both ends close on exec: the child gets its own copies as fds 3 and 4.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    /// A headless Chromium showing `url`, or None (with the reason printed) if this
    /// machine has none, which fails the test under `CI=true`.
    pub fn open(url: &str, profile: PathBuf) -> Option<Browser> {
        let Some(binary) = find_chromium() else {
            let why = "no chromium found (install Debian's `chromium`, e.g. with \
                       `sudo scripts/test.sh --packages`, or set IDLEGRID_CHROMIUM)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}: the browser tests cannot run, and CI must run them");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let (cmd_read, cmd_write) = pipe();
        let (ans_read, ans_write) = pipe();
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
                "--window-size=1280,1100",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(cmd_read, 3) < 0 || libc::dup2(ans_write, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        unsafe {
            libc::close(cmd_read);
            libc::close(ans_write);
        }
        let to = unsafe { File::from_raw_fd(cmd_write) };
        let from = unsafe { File::from_raw_fd(ans_read) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        message.pop();
                        if let Ok(value) = serde_json::from_slice(&message) {
                            if tx.send(value).is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        browser.attach();
        Some(browser)
    }

    /// Attaches to the page target (flat session).
    fn attach(&mut self) {
        let deadline = Instant::now() + WAIT;
        let target = loop {
            let targets = self.call_browser("Target.getTargets", json!({}));
            let page = targets["targetInfos"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == "page"))
                .map(|t| t["targetId"].clone());
            if let Some(page) = page {
                break page;
            }
            assert!(Instant::now() < deadline, "chromium opened no page");
            std::thread::sleep(Duration::from_millis(100));
        };
        let attached = self.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        self.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method} within {WAIT:?}"));
            if answer["id"] == json!(id) {
                if let Some(error) = answer.get("error") {
                    panic!("{method} failed: {error}");
                }
                return answer["result"].clone();
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A DevTools command on the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `condition` until it is true; panics with `what` after [`WAIT`].
    pub fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        // Before the page has loaded, the elements asked about are not there yet.
        let guarded = format!(
            "(() => {{ try {{ return ({condition}); }} catch (e) {{ return false; }} }})()"
        );
        while self.eval(&guarded) != json!(true) {
            assert!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets the files of the `<input type=file>` that `selector` finds.
    pub fn set_files(&mut self, selector: &str, files: &[&Path]) {
        let found = self.call(
            "Runtime.evaluate",
            json!({ "expression": format!("document.querySelector({selector:?})") }),
        );
        let object = found["result"]["objectId"].clone();
        assert!(object.is_string(), "no element {selector}");
        let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        self.call(
            "DOM.setFileInputFiles",
            json!({ "files": files, "objectId": object }),
        );
    }

    /// Fetches `url` from inside the page and returns the bytes.
    pub fn fetch_bytes(&mut self, url_expression: &str) -> Vec<u8> {
        let value = self.eval(&format!(
            "fetch({url_expression}).then(r => r.arrayBuffer()).then(b => Array.from(new Uint8Array(b)))"
        ));
        value
            .as_array()
            .expect("bytes")
            .iter()
            .map(|v| v.as_u64().expect("a byte") as u8)
            .collect()
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = shot["data"].as_str().expect("screenshot data");
        std::fs::write(path, base64_decode(data)).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Standard base64 (DevTools sends screenshots so).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for group in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= u32::from(value(c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    out
}

#[test]
fn base64() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
