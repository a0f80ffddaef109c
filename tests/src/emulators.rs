//! Real AWS emulators on loopback: dynalite (DynamoDB) and moto server (STS), installed into
//! `.local/` by `scripts/install-tools`. Each test binary shares one of each; fault tests
//! start private ones they can stop and restart.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Which emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// dynalite: DynamoDB, correct under concurrent conditional writes.
    Dynalite,
    /// moto server: STS (AssumeRole) and a second DynamoDB.
    Moto,
}

/// A running emulator process. Killed when dropped, and also when the test process dies
/// (it watches its stdin, a pipe from us), so no run leaves emulators behind.
#[derive(Debug)]
pub struct Emulator {
    kind: Kind,
    port: u16,
    /// Its working directory (moto writes its request recording there) and, when
    /// persistent, dynalite's data under `data/`.
    work_dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

/// The directory holding `.local/bin`, overridable with `DYNAGATE_TOOLS_DIR`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("DYNAGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".local/bin"))
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

/// A tool from `.local/bin`, or a panic that says how to install it.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: run scripts/install-tools (the README's test command does)",
        path.display()
    );
    path
}

impl Emulator {
    /// Starts an emulator on a free loopback port. A dynalite started `persistent` keeps its
    /// data on disk, so it survives `stop` + `start` like a real outage would.
    pub fn start(kind: Kind, persistent: bool) -> Self {
        let work_dir =
            std::env::temp_dir().join(format!("dynagate-emulator-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&work_dir).expect("create the emulator's directory");
        let mut emulator = Self {
            kind,
            port: free_port(),
            work_dir,
            persistent,
            child: None,
        };
        emulator.restart();
        emulator
    }

    /// The shared dynalite of this test binary.
    pub fn shared_dynalite() -> &'static Self {
        static DYNALITE: OnceLock<Emulator> = OnceLock::new();
        DYNALITE.get_or_init(|| Self::start(Kind::Dynalite, false))
    }

    /// The shared moto server of this test binary.
    pub fn shared_moto() -> &'static Self {
        static MOTO: OnceLock<Emulator> = OnceLock::new();
        MOTO.get_or_init(|| Self::start(Kind::Moto, false))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the emulator: the outage fault tests need.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The wrapper shell leads its own process group: kill the emulator with it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
    }

    /// Freezes the emulator (SIGSTOP): connections open but nothing answers, the way a hung
    /// dependency behaves. [`Emulator::resume`] thaws it.
    pub fn pause(&self) {
        self.signal_group("-STOP");
    }

    /// Thaws a paused emulator (SIGCONT).
    pub fn resume(&self) {
        self.signal_group("-CONT");
    }

    fn signal_group(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, "--", &format!("-{}", child.id())])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Starts it again on the same port (with the same data when persistent).
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut command = match self.kind {
            Kind::Dynalite => {
                let mut command = watched(tool("dynalite"));
                command.args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--createTableMs",
                    "0",
                    "--deleteTableMs",
                    "0",
                    "--updateTableMs",
                    "0",
                ]);
                if self.persistent {
                    command.arg("--path").arg(self.work_dir.join("data"));
                }
                command
            }
            Kind::Moto => {
                let mut command = watched(tool("moto_server"));
                command.args(["-H", "127.0.0.1", "-p", &port]);
                command
            }
        };
        let child = command
            .current_dir(&self.work_dir)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.kind));
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(
            up,
            "{:?} did not listen on port {} within 30 s",
            self.kind, self.port
        );
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// A command run under a tiny shell watchdog: it starts the program, then blocks reading its
/// stdin (a pipe from this process) and kills the program when that pipe closes, i.e. when
/// the test process exits, however it exits.
fn watched(program: PathBuf) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#""$@" </dev/null & child=$!; read -r _ignored; kill -9 "$child" 2>/dev/null"#)
        .arg("sh")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(log_target())
        .stderr(log_target())
        .process_group(0);
    command
}

fn log_target() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// An address where nothing listens (connections are refused).
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
