//! The WASI preview 1 host a module sees: its arguments, its declared environment,
//! stdin (the chunk's input), stdout (the result, capped) and stderr (kept, capped, for
//! error messages), a fixed clock and random numbers drawn from the chunk's id. Nothing
//! else of the host: no preopened directory (so no path resolves), no socket, no
//! process, no real time.
//!
//! Written here rather than taken from `wasmtime-wasi`: that crate brings an async
//! runtime, capability-based file system and network stack (a large dependency tree)
//! only to have all of it switched off again, while this module defines every one of
//! preview 1's 45 imports in one place, each returning either the fixed answer above
//! or an error code (`EBADF` for any descriptor but 0–2, `ENOSYS`/`ENOTSUP` otherwise),
//! so "nothing from the host" can be read off a single file.

use std::collections::VecDeque;

use wasmtime::{Caller, Extern, Linker};

/// Module name of WASI preview 1's imports.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// What `clock_time_get` answers for every clock: 2000-01-01T00:00:00Z, in ns. Any
/// constant would do; a real time would make outputs depend on when they ran.
pub const FIXED_TIME_NS: u64 = 946_684_800_000_000_000;

/// Bytes of stderr kept for error messages (the end of it).
pub const STDERR_TAIL: usize = 4096;

// errno values of preview 1.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
const ESPIPE: i32 = 70;

// File types and rights of fdstat.
const FILETYPE_UNKNOWN: u8 = 0;
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;

/// How a run ended early from inside the host: raised as a trap-like error through the
/// module's call, then told apart by the caller.
#[derive(Debug, thiserror::Error)]
pub enum HostExit {
    /// `proc_exit(code)`.
    #[error("exited with code {0}")]
    Exit(i32),
    /// Stdout went past the chunk's cap.
    #[error("wrote more than {0} bytes to stdout (the chunk's output cap)")]
    OutputCap(u64),
}

/// One run's view of the world: the store's data.
pub struct Host {
    /// argv, program name first, without terminating NULs.
    args: Vec<Vec<u8>>,
    /// `NAME=value` strings, without terminating NULs.
    env: Vec<Vec<u8>>,
    stdin: Vec<u8>,
    stdin_pos: usize,
    stdout: Vec<u8>,
    stdout_cap: u64,
    stderr: VecDeque<u8>,
    random: blake3::OutputReader,
    pub limits: wasmtime::StoreLimits,
}

impl Host {
    /// A run with `args` (argv[0] first), `env`, `stdin`, a stdout cap, random numbers
    /// keyed by `seed` (the chunk's id and the run's index) and memory `limits`.
    pub fn new(
        args: Vec<String>,
        env: &[(String, String)],
        stdin: Vec<u8>,
        stdout_cap: u64,
        seed: &[u8],
        limits: wasmtime::StoreLimits,
    ) -> Host {
        Host {
            args: args.into_iter().map(String::into_bytes).collect(),
            env: env
                .iter()
                .map(|(k, v)| format!("{k}={v}").into_bytes())
                .collect(),
            stdin,
            stdin_pos: 0,
            stdout: Vec::new(),
            stdout_cap,
            stderr: VecDeque::new(),
            random: blake3::Hasher::new_derive_key("idlegrid wasm random_get v1")
                .update(seed)
                .finalize_xof(),
            limits,
        }
    }

    /// Everything written to stdout.
    pub fn take_stdout(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.stdout)
    }

    /// The last [`STDERR_TAIL`] bytes written to stderr, as text.
    pub fn stderr_tail(&self) -> String {
        let bytes: Vec<u8> = self.stderr.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

type Ctx<'a> = Caller<'a, Host>;

/// The module's exported memory and the host, or `EFAULT` when it has none.
fn memory<'a>(caller: &'a mut Ctx<'_>) -> Result<(&'a mut [u8], &'a mut Host), i32> {
    match caller.get_export("memory") {
        Some(Extern::Memory(mem)) => Ok(mem.data_and_store_mut(caller)),
        _ => Err(EFAULT),
    }
}

fn range(mem: &[u8], ptr: i32, len: usize) -> Result<std::ops::Range<usize>, i32> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len).ok_or(EFAULT)?;
    if end > mem.len() {
        return Err(EFAULT);
    }
    Ok(start..end)
}

fn put(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let r = range(mem, ptr, bytes.len())?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

fn put_u32(mem: &mut [u8], ptr: i32, value: u32) -> Result<(), i32> {
    put(mem, ptr, &value.to_le_bytes())
}

fn get_u32(mem: &[u8], ptr: i32) -> Result<u32, i32> {
    let r = range(mem, ptr, 4)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(&mem[r]);
    Ok(u32::from_le_bytes(b))
}

/// Most iovecs in one read or write (POSIX's usual `IOV_MAX`): a module cannot make
/// the host allocate for more.
const IOV_MAX: usize = 1024;

/// The (pointer, length) pairs of an iovec array.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Result<Vec<(i32, usize)>, i32> {
    let count = count as u32 as usize;
    if count > IOV_MAX {
        return Err(EINVAL);
    }
    range(mem, iovs, count.checked_mul(8).ok_or(EFAULT)?)?;
    (0..count)
        .map(|i| {
            let at = iovs.wrapping_add((i * 8) as i32);
            Ok((
                get_u32(mem, at)? as i32,
                get_u32(mem, at.wrapping_add(4))? as usize,
            ))
        })
        .collect()
}

fn errno(result: Result<(), i32>) -> i32 {
    match result {
        Ok(()) => SUCCESS,
        Err(e) => e,
    }
}

/// `args_sizes_get` / `environ_sizes_get`: count and total bytes with NULs.
fn sizes(caller: &mut Ctx<'_>, env: bool, count_ptr: i32, size_ptr: i32) -> i32 {
    errno((|| {
        let (mem, host) = memory(caller)?;
        let list = if env { &host.env } else { &host.args };
        let bytes: usize = list.iter().map(|a| a.len() + 1).sum();
        put_u32(mem, count_ptr, list.len() as u32)?;
        put_u32(mem, size_ptr, bytes as u32)
    })())
}

/// `args_get` / `environ_get`: the pointer array and the NUL-terminated strings.
fn strings(caller: &mut Ctx<'_>, env: bool, ptrs: i32, buf: i32) -> i32 {
    errno((|| {
        let (mem, host) = memory(caller)?;
        let list = if env { &host.env } else { &host.args };
        let mut at = buf;
        for (i, item) in list.iter().enumerate() {
            put_u32(mem, ptrs.wrapping_add((i * 4) as i32), at as u32)?;
            put(mem, at, item)?;
            put(mem, at.wrapping_add(item.len() as i32), &[0])?;
            at = at.wrapping_add(item.len() as i32 + 1);
        }
        Ok(())
    })())
}

fn fd_write(
    caller: &mut Ctx<'_>,
    fd: i32,
    iovs: i32,
    count: i32,
    written: i32,
) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    let (mem, host) = match memory(caller) {
        Ok(pair) => pair,
        Err(e) => return Ok(e),
    };
    let vecs = match iovecs(mem, iovs, count) {
        Ok(v) => v,
        Err(e) => return Ok(e),
    };
    let mut total = 0usize;
    for (ptr, len) in vecs {
        let r = match range(mem, ptr, len) {
            Ok(r) => r,
            Err(e) => return Ok(e),
        };
        if fd == 1 {
            if (host.stdout.len() + len) as u64 > host.stdout_cap {
                return Err(wasmtime::Error::new(HostExit::OutputCap(host.stdout_cap)));
            }
            host.stdout.extend_from_slice(&mem[r]);
        } else {
            // Only the tail is kept: never more than that is copied.
            let r = r.start.max(r.end.saturating_sub(STDERR_TAIL))..r.end;
            host.stderr.extend(&mem[r]);
            let over = host.stderr.len().saturating_sub(STDERR_TAIL);
            host.stderr.drain(..over);
        }
        total += len;
    }
    Ok(errno(put_u32(mem, written, total as u32)))
}

fn fd_read(caller: &mut Ctx<'_>, fd: i32, iovs: i32, count: i32, read: i32) -> i32 {
    if fd != 0 {
        return EBADF;
    }
    errno((|| {
        let (mem, host) = memory(caller)?;
        let mut total = 0usize;
        for (ptr, len) in iovecs(mem, iovs, count)? {
            let r = range(mem, ptr, len)?;
            let rest = &host.stdin[host.stdin_pos..];
            let n = rest.len().min(len);
            mem[r.start..r.start + n].copy_from_slice(&rest[..n]);
            host.stdin_pos += n;
            total += n;
            if n < len {
                break;
            }
        }
        put_u32(mem, read, total as u32)
    })())
}

/// fdstat of stdin/stdout/stderr: a stream that is not a terminal (so C's stdio
/// buffers fully), readable or writable.
fn fd_fdstat_get(caller: &mut Ctx<'_>, fd: i32, buf: i32) -> i32 {
    let rights = match fd {
        0 => RIGHT_FD_READ,
        1 | 2 => RIGHT_FD_WRITE,
        _ => return EBADF,
    };
    errno((|| {
        let (mem, _) = memory(caller)?;
        let mut stat = [0u8; 24];
        stat[0] = FILETYPE_UNKNOWN;
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
        put(mem, buf, &stat)
    })())
}

/// filestat of stdin/stdout/stderr: all zero (no device, inode, size or times).
fn fd_filestat_get(caller: &mut Ctx<'_>, fd: i32, buf: i32) -> i32 {
    if !(0..=2).contains(&fd) {
        return EBADF;
    }
    errno((|| {
        let (mem, _) = memory(caller)?;
        put(mem, buf, &[0u8; 64])
    })())
}

fn random_get(caller: &mut Ctx<'_>, buf: i32, len: i32) -> i32 {
    errno((|| {
        let (mem, host) = memory(caller)?;
        let r = range(mem, buf, len as u32 as usize)?;
        host.random.fill(&mut mem[r]);
        Ok(())
    })())
}

fn clock_time_get(caller: &mut Ctx<'_>, id: i32, ptr: i32) -> i32 {
    if !(0..=3).contains(&id) {
        return EINVAL;
    }
    errno((|| {
        let (mem, _) = memory(caller)?;
        put(mem, ptr, &FIXED_TIME_NS.to_le_bytes())
    })())
}

fn clock_res_get(caller: &mut Ctx<'_>, id: i32, ptr: i32) -> i32 {
    if !(0..=3).contains(&id) {
        return EINVAL;
    }
    errno((|| {
        let (mem, _) = memory(caller)?;
        put(mem, ptr, &1u64.to_le_bytes())
    })())
}

/// A descriptor's errno for calls that only make sense on files: stdio is a stream
/// (`ESPIPE` for seeks), anything else does not exist.
fn no_file(fd: i32, on_stdio: i32) -> i32 {
    if (0..=2).contains(&fd) {
        on_stdio
    } else {
        EBADF
    }
}

/// Defines every preview 1 import on `linker`.
pub fn define(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    let m = MODULE;
    linker.func_wrap(m, "args_sizes_get", |mut c: Ctx<'_>, n: i32, s: i32| {
        sizes(&mut c, false, n, s)
    })?;
    linker.func_wrap(m, "args_get", |mut c: Ctx<'_>, p: i32, b: i32| {
        strings(&mut c, false, p, b)
    })?;
    linker.func_wrap(m, "environ_sizes_get", |mut c: Ctx<'_>, n: i32, s: i32| {
        sizes(&mut c, true, n, s)
    })?;
    linker.func_wrap(m, "environ_get", |mut c: Ctx<'_>, p: i32, b: i32| {
        strings(&mut c, true, p, b)
    })?;
    linker.func_wrap(m, "clock_res_get", |mut c: Ctx<'_>, id: i32, p: i32| {
        clock_res_get(&mut c, id, p)
    })?;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut c: Ctx<'_>, id: i32, _precision: i64, p: i32| clock_time_get(&mut c, id, p),
    )?;
    linker.func_wrap(
        m,
        "fd_advise",
        |_: Ctx<'_>, fd: i32, _: i64, _: i64, _: i32| no_file(fd, ESPIPE),
    )?;
    linker.func_wrap(m, "fd_allocate", |_: Ctx<'_>, fd: i32, _: i64, _: i64| {
        no_file(fd, ENOTSUP)
    })?;
    linker.func_wrap(m, "fd_close", |_: Ctx<'_>, fd: i32| no_file(fd, SUCCESS))?;
    linker.func_wrap(m, "fd_datasync", |_: Ctx<'_>, fd: i32| no_file(fd, EINVAL))?;
    linker.func_wrap(m, "fd_fdstat_get", |mut c: Ctx<'_>, fd: i32, b: i32| {
        fd_fdstat_get(&mut c, fd, b)
    })?;
    linker.func_wrap(m, "fd_fdstat_set_flags", |_: Ctx<'_>, fd: i32, _: i32| {
        no_file(fd, ENOTSUP)
    })?;
    linker.func_wrap(
        m,
        "fd_fdstat_set_rights",
        |_: Ctx<'_>, fd: i32, _: i64, _: i64| no_file(fd, ENOTSUP),
    )?;
    linker.func_wrap(m, "fd_filestat_get", |mut c: Ctx<'_>, fd: i32, b: i32| {
        fd_filestat_get(&mut c, fd, b)
    })?;
    linker.func_wrap(m, "fd_filestat_set_size", |_: Ctx<'_>, fd: i32, _: i64| {
        no_file(fd, EINVAL)
    })?;
    linker.func_wrap(
        m,
        "fd_filestat_set_times",
        |_: Ctx<'_>, fd: i32, _: i64, _: i64, _: i32| no_file(fd, ENOTSUP),
    )?;
    linker.func_wrap(
        m,
        "fd_pread",
        |_: Ctx<'_>, fd: i32, _: i32, _: i32, _: i64, _: i32| no_file(fd, ESPIPE),
    )?;
    linker.func_wrap(m, "fd_prestat_get", |_: Ctx<'_>, _: i32, _: i32| EBADF)?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "fd_pwrite",
        |_: Ctx<'_>, fd: i32, _: i32, _: i32, _: i64, _: i32| no_file(fd, ESPIPE),
    )?;
    linker.func_wrap(
        m,
        "fd_read",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, read: i32| fd_read(&mut c, fd, iovs, n, read),
    )?;
    linker.func_wrap(
        m,
        "fd_readdir",
        |_: Ctx<'_>, fd: i32, _: i32, _: i32, _: i64, _: i32| no_file(fd, ENOTSUP),
    )?;
    linker.func_wrap(m, "fd_renumber", |_: Ctx<'_>, _: i32, _: i32| ENOTSUP)?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_: Ctx<'_>, fd: i32, _: i64, _: i32, _: i32| no_file(fd, ESPIPE),
    )?;
    linker.func_wrap(m, "fd_sync", |_: Ctx<'_>, fd: i32| no_file(fd, EINVAL))?;
    linker.func_wrap(m, "fd_tell", |_: Ctx<'_>, fd: i32, _: i32| {
        no_file(fd, ESPIPE)
    })?;
    linker.func_wrap(
        m,
        "fd_write",
        |mut c: Ctx<'_>, fd: i32, iovs: i32, n: i32, written: i32| {
            fd_write(&mut c, fd, iovs, n, written)
        },
    )?;
    // No descriptor is a directory, so every path call fails on its descriptor.
    linker.func_wrap(
        m,
        "path_create_directory",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_filestat_get",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_filestat_set_times",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_link",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_open",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_readlink",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_remove_directory",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_rename",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_symlink",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "path_unlink_file",
        |_: Ctx<'_>, _: i32, _: i32, _: i32| EBADF,
    )?;
    // Waiting on a clock would need real time: refused.
    linker.func_wrap(
        m,
        "poll_oneoff",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
    )?;
    linker.func_wrap(
        m,
        "proc_exit",
        |_: Ctx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(HostExit::Exit(code)))
        },
    )?;
    linker.func_wrap(m, "proc_raise", |_: Ctx<'_>, _: i32| ENOSYS)?;
    linker.func_wrap(m, "sched_yield", |_: Ctx<'_>| SUCCESS)?;
    linker.func_wrap(m, "random_get", |mut c: Ctx<'_>, b: i32, n: i32| {
        random_get(&mut c, b, n)
    })?;
    linker.func_wrap(m, "sock_accept", |_: Ctx<'_>, _: i32, _: i32, _: i32| EBADF)?;
    linker.func_wrap(
        m,
        "sock_recv",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        m,
        "sock_send",
        |_: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(m, "sock_shutdown", |_: Ctx<'_>, _: i32, _: i32| EBADF)?;
    Ok(())
}
