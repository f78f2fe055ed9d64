//! The built-in workload: one thread, named like a JVM thread (`SyncThread:1`), appends to
//! a file and cycles through the requested sync syscalls, timing each call itself with
//! CLOCK_MONOTONIC. It prints one JSON line when ready, then one per call, so the demo and
//! the tests can compare zkstall's measurements with the workload's own. A line also has
//! the time the append before the call took (`write_before_ns`; 0 for write calls).

use std::{
    fs::OpenOptions,
    io::{BufRead as _, Write as _},
    os::fd::AsRawFd as _,
};

use anyhow::{Context as _, bail};
use zkstall_common::Syscall;

use crate::{cli::WorkloadArgs, clock::MonoNs};

const MAP_BYTES: usize = 4096;

pub fn run(args: &WorkloadArgs) -> anyhow::Result<()> {
    let syscalls: Vec<Syscall> = args
        .syscalls
        .split(',')
        .map(|name| {
            Syscall::ALL
                .into_iter()
                .find(|s| s.name() == name.trim())
                .with_context(|| format!("unknown syscall {name:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let path = dir.join("wal.log");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let fd = file.as_raw_fd();
    // A shared mapping of the file's first page, for msync; only when msync is asked for,
    // so that the file does not change before the first append otherwise (a test's
    // observer watching it for changes sees the appends alone).
    let map_addr = if syscalls.contains(&Syscall::Msync) {
        file.set_len(MAP_BYTES as u64)?;
        // SAFETY: a fresh shared mapping of an open file at least MAP_BYTES long.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            bail!(
                "mmap of {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        map as usize
    } else {
        0
    };
    println!(
        "{}",
        serde_json::json!({"ready": true, "pid": std::process::id(), "path": path, "fd": fd,
            "map_addr": map_addr})
    );
    if !args.no_wait {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
    }

    let (calls, interval, bytes) = (args.calls, args.interval, args.write_bytes);
    // The thread is created after the go signal, i.e. after tracing started: zkstall must
    // follow threads it did not see at start-up.
    let worker = std::thread::Builder::new()
        .name(args.thread_name.clone())
        .spawn(move || -> anyhow::Result<()> {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let buf = vec![b'z'; bytes];
            for i in 0..calls {
                let sc = syscalls[i as usize % syscalls.len()];
                // The append before a sync call is timed too: a stall can catch the thread
                // there instead (a journal handle waiting for space), and a test that finds
                // no slow call must be able to tell that from a call zkstall missed.
                let w0 = MonoNs::now();
                if !sc.is_write() {
                    file.write_all(&buf)?;
                }
                let write_ns = MonoNs::now().since(w0);
                if sc == Syscall::Msync {
                    // SAFETY: the mapping is MAP_BYTES long and lives until the process ends.
                    unsafe { (map_addr as *mut u8).write_volatile(i as u8) };
                }
                let t0 = MonoNs::now();
                // SAFETY: `fd` is the open file owned by this thread, the mapping is valid.
                let ret = unsafe {
                    match sc {
                        Syscall::Fsync => libc::fsync(fd),
                        Syscall::Fdatasync => libc::fdatasync(fd),
                        Syscall::SyncFileRange => libc::sync_file_range(
                            fd,
                            0,
                            0,
                            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                                | libc::SYNC_FILE_RANGE_WRITE
                                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                        ),
                        Syscall::Syncfs => libc::syncfs(fd),
                        Syscall::Msync => libc::msync(map_addr as *mut _, MAP_BYTES, libc::MS_SYNC),
                        Syscall::Sync => {
                            libc::sync();
                            0
                        }
                        Syscall::Write => libc::write(fd, buf.as_ptr().cast(), buf.len()) as i32,
                        Syscall::Pwrite64 => {
                            libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), 0) as i32
                        }
                        Syscall::Writev | Syscall::Pwritev | Syscall::Pwritev2 => {
                            let iov = libc::iovec {
                                iov_base: buf.as_ptr() as *mut _,
                                iov_len: buf.len(),
                            };
                            (match sc {
                                Syscall::Writev => libc::writev(fd, &iov, 1),
                                Syscall::Pwritev => libc::pwritev(fd, &iov, 1, 0),
                                _ => libc::pwritev2(fd, &iov, 1, 0, 0),
                            }) as i32
                        }
                    }
                };
                let t1 = MonoNs::now();
                println!(
                    "{}",
                    serde_json::json!({"syscall": sc.name(), "tid": tid, "fd": fd, "start_ns": t0.0,
                        "end_ns": t1.0, "duration_ns": t1.since(t0), "ret": ret,
                        "write_before_ns": write_ns})
                );
                std::thread::sleep(interval);
            }
            Ok(())
        })?;
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("workload thread panicked"))??;
    std::io::stdout().flush()?;
    Ok(())
}
