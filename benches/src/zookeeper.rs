//! A real Apache ZooKeeper 3.8 (Debian package `zookeeper`), started by the benchmarks and
//! by the differential test suites: `ZooKeeperServerMain` with a `zoo.cfg` in a temp dir, on
//! 127.0.0.1, admin server off, every four-letter word allowed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the Debian package puts the server's classpath.
const CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";

/// A running ZooKeeper; killed on drop.
pub struct RealZooKeeper {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Send a four-letter word and read the whole answer.
pub fn four_letter_word(addr: &str, word: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(word.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

impl RealZooKeeper {
    /// Start one and wait until it answers `ruok`. Panics with a clear message when the
    /// package is missing (CI installs it; see `.ci/run`).
    pub fn start() -> RealZooKeeper {
        RealZooKeeper::try_start().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Start one (standalone, `forceSync=yes` as by default: every txn fsynced before it is
    /// acknowledged) and wait until it answers `ruok`.
    pub fn try_start() -> anyhow::Result<RealZooKeeper> {
        anyhow::ensure!(
            std::path::Path::new("/usr/share/java/zookeeper.jar").exists(),
            "Apache ZooKeeper is not installed: apt-get install zookeeper (done by .ci/run)"
        );
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n\
                 forceSync=yes\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("java")
            .args([
                "-Xmx256m",
                // TTL nodes (`createTTL`) are only served with extended types on; the
                // `ContainerManager` that deletes expired ones runs every second instead of
                // every minute, so TTL tests finish quickly. Containers are deleted by that
                // same timer; the suites never observe an emptied container's timing.
                "-Dzookeeper.extendedTypesEnabled=true",
                "-Dznode.container.checkIntervalMs=1000",
                "-cp",
                CLASSPATH,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut zk = RealZooKeeper {
            child,
            addr: format!("127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !four_letter_word(&zk.addr, "ruok")
            .map(|a| a == "imok")
            .unwrap_or(false)
        {
            if Instant::now() > deadline || zk.child.try_wait()?.is_some() {
                anyhow::bail!("ZooKeeper did not start on {}", zk.addr);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(zk)
    }
}

impl Drop for RealZooKeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
