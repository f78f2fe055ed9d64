//! `cargo xtask demo`: the main job on a real ZooKeeper. Debian's zookeeper runs with its
//! data on a loop-mounted ext4 (itself a file on another loop-mounted ext4, so that its
//! device can be made to stop), under a write load; zkstall traces it (finding it by
//! itself) while two stalls are injected: a competing writer, then a device that stops
//! completing I/O. Then `zkstall report` reads the recording back. Everything is undone
//! at the end, even on failure: thaw, kill, unmount, detach, remove.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

const ZK_CLASSPATH: &str =
    "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar";

/// ZooKeeper's log to stdout in the format its fsync warnings are parsed with, from our
/// own log4j configuration: nothing depends on /etc/zookeeper/conf.
const ZK_LOG4J: &str = "log4j.rootLogger=INFO, CONSOLE\nlog4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\nlog4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\nlog4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n\n";

fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Undo steps, run in reverse order on drop.
#[derive(Default)]
struct Cleanup {
    steps: Vec<(String, Box<dyn FnOnce()>)>,
}

impl Cleanup {
    fn push(&mut self, what: impl Into<String>, f: impl FnOnce() + 'static) {
        self.steps.push((what.into(), Box::new(f)));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some((what, f)) = self.steps.pop() {
            eprintln!("demo: cleaning up: {what}");
            f();
        }
    }
}

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn loop_fs(image: &Path, mib: u64, mnt: &Path, clean: &mut Cleanup) -> Result<String> {
    let f = std::fs::File::create(image)?;
    f.set_len(mib << 20)?;
    drop(f);
    let dev = sh("losetup", &["-f", "--show", image.to_str().unwrap()])?;
    let d = dev.clone();
    clean.push(format!("detach {dev}"), move || {
        let _ = Command::new("losetup").args(["-d", &d]).status();
    });
    sh("mkfs.ext4", &["-q", "-F", &dev])?;
    std::fs::create_dir_all(mnt)?;
    sh("mount", &[&dev, mnt.to_str().unwrap()])?;
    let m = mnt.to_path_buf();
    clean.push(format!("unmount {}", mnt.display()), move || {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&m)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount").arg(&m).status();
    });
    Ok(dev)
}

fn ruok(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = String::new();
    s.write_all(b"ruok").is_ok() && s.read_to_string(&mut buf).is_ok() && buf == "imok"
}

pub fn run(zkstall: &Path, root: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the demo loads eBPF programs, mounts loop devices and freezes a filesystem: run it as root (sudo -E cargo xtask demo)"
        );
    }
    let mut clean = Cleanup::default();
    let work = PathBuf::from(format!("/var/tmp/zkstall-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let w = work.clone();
    clean.push(format!("remove {}", work.display()), move || {
        let _ = std::fs::remove_dir_all(&w);
    });

    // The disk under ZooKeeper's disk: freezing its filesystem stops the inner device.
    let outer = work.join("outer");
    loop_fs(&work.join("outer.img"), 4096, &outer, &mut clean)?; // sparse: costs what is written
    let inner = work.join("zk");
    let inner_dev = loop_fs(&outer.join("zk-disk.img"), 2048, &inner, &mut clean)?;
    println!(
        "demo: ZooKeeper's data and transaction log on {inner_dev} (ext4), a file on another loop-mounted ext4"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    for d in ["data", "log"] {
        std::fs::create_dir_all(inner.join(d))?;
    }
    let cfg = work.join("zoo.cfg");
    std::fs::write(
        &cfg,
        format!(
            "tickTime=2000\ndataDir={0}/data\ndataLogDir={0}/log\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nfsync.warningthresholdms=50\n4lw.commands.whitelist=ruok\n",
            inner.display()
        ),
    )?;
    let log4j = work.join("log4j.properties");
    std::fs::write(&log4j, ZK_LOG4J)?;
    let zk_log = work.join("zookeeper.out");
    let out = std::fs::File::create(&zk_log)?;
    let zk = Command::new("java")
        .env("TZ", "UTC")
        .arg(format!("-Dzookeeper.log.dir={}", work.display()))
        .args([
            &format!("-Dlog4j.configuration=file:{}", log4j.display()),
            "-Xmx256m",
            "-cp",
            ZK_CLASSPATH,
        ])
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(&cfg)
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting ZooKeeper (java)")?;
    let zk_pid = zk.id();
    clean.push("stop ZooKeeper", move || kill(zk));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ruok(port) {
        if Instant::now() > deadline {
            bail!("ZooKeeper did not start; see {}", zk_log.display());
        }
        sleep(Duration::from_millis(200));
    }
    println!("demo: ZooKeeper {zk_pid} serving on 127.0.0.1:{port}, logging fsyncs over 50 ms");

    // zkstall finds ZooKeeper by itself (no --pid) and keeps a recording.
    let recording = work.join("demo.zst");
    let tracer = Command::new(zkstall)
        .args(["trace", "--threshold", "50ms", "--output"])
        .arg(&recording)
        .spawn()
        .context("starting zkstall trace")?;
    let tracer_pid = tracer.id() as i32;
    clean.push("stop zkstall", move || kill(tracer));
    sleep(Duration::from_secs(2));

    let load_src = root.join("tests/java/ZkLoad.java");
    let load = Command::new("java")
        .args(["-cp", ZK_CLASSPATH])
        .arg(&load_src)
        .arg(format!("127.0.0.1:{port}"))
        .arg("22")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the write load")?;
    clean.push("stop the write load", move || kill(load));
    println!("demo: a client creates znodes for 22 s; watch the slow fsyncs below\n");
    sleep(Duration::from_secs(5));

    println!(
        "\ndemo: >>> injecting a competing writer: dd writes 600 MB with conv=fsync to ZooKeeper's filesystem\n"
    );
    let of = format!("of={}", inner.join("backup.tar").display());
    sh(
        "dd",
        &["if=/dev/zero", &of, "bs=1M", "count=600", "conv=fsync"],
    )?;
    sleep(Duration::from_secs(3));

    println!(
        "\ndemo: >>> injecting a device that stops: {inner_dev} completes no I/O for 4 s (its backing filesystem is frozen)\n"
    );
    sh("fsfreeze", &["-f", outer.to_str().unwrap()])?;
    sleep(Duration::from_secs(4));
    sh("fsfreeze", &["-u", outer.to_str().unwrap()])?;
    sleep(Duration::from_secs(5));

    // End the trace cleanly (it writes the recording's trailer).
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer_pid, libc::SIGINT) };
    sleep(Duration::from_secs(2));

    let log = std::fs::read_to_string(work.join("zookeeper.out")).unwrap_or_default();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fsync-ing the write ahead log"))
        .collect();
    println!(
        "\ndemo: ZooKeeper itself logged {} slow fsyncs; the longest:",
        warns.len()
    );
    let took = |l: &&str| {
        l.split(" took ")
            .nth(1)
            .and_then(|r| r.split("ms").next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut sorted = warns.clone();
    sorted.sort_by_key(|l| std::cmp::Reverse(took(l)));
    for l in sorted.iter().take(3) {
        println!("  {l}");
    }

    println!(
        "\ndemo: the recording read back with `zkstall report` (no root needed), stalls of 500 ms or more:\n"
    );
    let st = Command::new(zkstall)
        .arg("report")
        .arg(&recording)
        .args(["--threshold", "500ms"])
        .status()?;
    if !st.success() {
        bail!("zkstall report failed");
    }
    println!("\ndemo: done; cleaning up");
    Ok(())
}
