//! Real AWS emulators on loopback: dynalite (DynamoDB) and moto server (STS), installed into
//! `.local/` by `scripts/install-tools`. Each test binary shares one of each; fault tests
//! start private ones they can stop and restart.
//!
//! Ports: moto accepts `-p 0`, dynalite does not (`--port 0` falls back to 4567), and a
//! restarted emulator must come back on its old port anyway. So an emulator gets a random port
//! below the kernel's ephemeral range (outgoing connections never take those) and is
//! relaunched on a new one if it exits before saying it listens. Only the emulator's own
//! "listening" line counts as up: a connect could reach whoever else holds the port.

mod process;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use tokio::sync::OnceCell;

use process::{Process, watched};

/// Launches on fresh ports before giving up.
const START_ATTEMPTS: usize = 10;
/// Ports to choose from: below Linux's default ephemeral range (32768–60999).
const PORTS: std::ops::Range<u16> = 20_000..32_768;

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
    process: Option<Process>,
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
    pub async fn start(kind: Kind, persistent: bool) -> Self {
        let work_dir =
            std::env::temp_dir().join(format!("dynagate-emulator-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&work_dir).expect("create the emulator's directory");
        let mut emulator = Self {
            kind,
            port: 0,
            work_dir,
            persistent,
            process: None,
        };
        for _ in 0..START_ATTEMPTS {
            let port = rand::random_range(PORTS);
            if emulator.launch(port).await {
                emulator.port = port;
                return emulator;
            }
        }
        panic!(
            "{kind:?} exited before listening {START_ATTEMPTS} times: ports taken, or it \
             cannot start (TEST_LOG=1 shows its output)"
        );
    }

    /// The shared dynalite of this test binary.
    pub async fn shared_dynalite() -> &'static Self {
        static DYNALITE: OnceCell<Emulator> = OnceCell::const_new();
        DYNALITE
            .get_or_init(|| Self::start(Kind::Dynalite, false))
            .await
    }

    /// The shared moto server of this test binary.
    pub async fn shared_moto() -> &'static Self {
        static MOTO: OnceCell<Emulator> = OnceCell::const_new();
        MOTO.get_or_init(|| Self::start(Kind::Moto, false)).await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The address it listens on (kept across restarts).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process group its watchdog shell leads and the emulator runs in (`None` while
    /// stopped): for measuring programs that weigh or time the emulator's processes.
    pub fn process_group(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    /// Kills the emulator and waits until its port refuses connections: the outage fault
    /// tests need.
    pub async fn stop(&mut self) {
        let Some(process) = self.process.take() else {
            return;
        };
        assert!(
            process.kill_and_wait().await,
            "{:?} outlived SIGKILL for 10 s",
            self.kind
        );
        let addr = self.addr();
        let refused = crate::eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await;
        assert!(
            refused,
            "port {} still accepts after {:?} died",
            self.port, self.kind
        );
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
        if let Some(process) = &self.process {
            assert!(process.signal(signal), "kill {signal} failed");
        }
    }

    /// Starts it again on the same port (with the same data when persistent), so clients
    /// keep their endpoint. Only another listener could hold the port meanwhile: wait for it.
    pub async fn restart(&mut self) {
        self.stop().await;
        for _ in 0..START_ATTEMPTS {
            if self.launch(self.port).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "{:?} could not listen on port {} again (TEST_LOG=1 shows its output)",
            self.kind, self.port
        );
    }

    /// Runs the emulator on `port`: true once it says it listens there, false if it exited
    /// first (most likely the port was taken).
    async fn launch(&mut self, port: u16) -> bool {
        assert!(self.process.is_none(), "{:?} is already running", self.kind);
        let mut command = self.command(port);
        command.current_dir(&self.work_dir);
        self.process = Process::launch(command, &format!("{:?}", self.kind), port).await;
        if self.process.is_some() && self.kind == Kind::Moto {
            warm_up_sts(port).await;
        }
        self.process.is_some()
    }

    fn command(&self, port: u16) -> Command {
        let port = port.to_string();
        match self.kind {
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
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// Makes one AssumeRole, so moto loads its STS code now rather than during a test's first
/// calls (≈ 0.5 s, more on a loaded machine: past the services' test timeouts). Best effort:
/// a moto that cannot answer fails the test's own calls clearly enough.
async fn warm_up_sts(port: u16) {
    let _ = crate::sts_client(&format!("http://127.0.0.1:{port}"))
        .assume_role()
        .role_arn("arn:aws:iam::123456789012:role/dynagate-tests-warm-up")
        .role_session_name("dynagate-tests-warm-up")
        .send()
        .await;
}

/// An address where nothing listens: a socket bound but never listening, held for the whole
/// test run, so connections are refused and nobody else can take the port.
pub fn dead_addr() -> SocketAddr {
    static DEAD: OnceLock<Socket> = OnceLock::new();
    let socket = DEAD.get_or_init(|| {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind a loopback port");
        socket
    });
    socket
        .local_addr()
        .expect("bound address")
        .as_socket()
        .expect("an IP address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_dead_address_refuses_connections() {
        let refused = tokio::net::TcpStream::connect(dead_addr())
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn an_emulator_whose_port_is_taken_is_not_taken_for_up() {
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = other.local_addr().unwrap().port();
        let mut emulator = Emulator::start(Kind::Dynalite, false).await;
        emulator.stop().await;

        assert!(!emulator.launch(taken).await, "another listener's port");
        emulator.restart().await;
        assert!(emulator.process.is_some(), "its own port again");
    }
}
