//! Real AWS emulators on loopback: dynalite (DynamoDB) and moto server (STS), installed into
//! `.local/` by `scripts/install-tools`. Each test binary shares one of each; fault tests
//! start private ones they can stop and restart.
//!
//! Ports: moto accepts `-p 0`, dynalite does not (`--port 0` falls back to 4567), and a
//! restarted emulator must come back on its old port anyway. So an emulator gets a random port
//! below the kernel's ephemeral range (outgoing connections never take those) and is
//! relaunched on a new one if it exits before saying it listens. Only the emulator's own
//! "listening" line counts as up: a connect could reach whoever else holds the port.

use std::{
    io::{BufRead, BufReader, Read},
    net::{Ipv4Addr, SocketAddr},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use tokio::sync::{OnceCell, mpsc};

/// Longest an emulator may take to listen (moto needs ~1.5 s idle, more on a loaded machine).
const START_LIMIT: Duration = Duration::from_secs(30);
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

/// One launch of an emulator: the watchdog shell and what its output says.
#[derive(Debug)]
struct Process {
    child: Child,
    /// Fed by the threads draining its stdout and stderr; closed when both pipes are.
    events: mpsc::UnboundedReceiver<Event>,
}

/// What the output-draining threads report.
#[derive(Debug)]
enum Event {
    /// The emulator printed that it listens on this port.
    Listening(u16),
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

    /// Kills the emulator and waits until its port refuses connections: the outage fault
    /// tests need.
    pub async fn stop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        process.kill();
        // The emulator holds the output pipes: they close when it is gone, not just the shell.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while process.events.recv().await.is_some() {}
        })
        .await;
        assert!(drained.is_ok(), "{:?} outlived SIGKILL for 10 s", self.kind);
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
        let mut child = self
            .command(port)
            .current_dir(&self.work_dir)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.kind));
        let (sender, events) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        drain(stdout, self.kind, sender.clone());
        drain(stderr, self.kind, sender);
        let mut process = Process { child, events };
        let listening = tokio::time::timeout(START_LIMIT, process.events.recv()).await;
        match listening {
            Ok(Some(Event::Listening(listening))) => {
                assert_eq!(listening, port, "{:?} listens elsewhere", self.kind);
                self.process = Some(process);
                true
            }
            // Both pipes closed: it exited without listening.
            Ok(None) => {
                process.kill();
                false
            }
            Err(_) => {
                process.kill();
                panic!(
                    "{:?} did not listen on port {port} within {START_LIMIT:?}",
                    self.kind
                );
            }
        }
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

impl Process {
    /// Kills the watchdog shell's whole process group (the emulator with it) and reaps the
    /// shell, which a SIGKILL makes immediate.
    fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Signals the process group the watchdog shell leads.
    fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
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

/// A command run under a tiny shell watchdog: it starts the program, then blocks reading its
/// stdin (a pipe from this process) and kills the program when that pipe closes, i.e. when
/// the test process exits, however it exits. The shell exits with the program, so its
/// output pipes close when the program dies.
fn watched(program: PathBuf) -> Command {
    let script = r#"
        exec 3<&0
        "$@" </dev/null 3<&- & child=$!
        ( read -r _ignored <&3; kill -9 "$child" ) >/dev/null 2>&1 & watcher=$!
        wait "$child"; status=$?
        kill "$watcher" 2>/dev/null
        exit "$status"
    "#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Reads an emulator's output on its own thread until the pipe closes (so the emulator never
/// blocks on a full pipe), reporting the line that says it listens; echoed with `TEST_LOG`.
fn drain(stream: impl Read + Send + 'static, kind: Kind, events: mpsc::UnboundedSender<Event>) {
    let echo = std::env::var_os("TEST_LOG").is_some();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            let text = String::from_utf8_lossy(&line);
            if echo {
                eprint!("[{kind:?}] {text}");
            }
            if let Some(port) = listening_port(&text) {
                let _ = events.send(Event::Listening(port));
            }
            line.clear();
        }
    });
}

/// The port in dynalite's "Dynalite listening at: http://127.0.0.1:PORT" or werkzeug's
/// (moto's) " * Running on http://127.0.0.1:PORT".
fn listening_port(line: &str) -> Option<u16> {
    if !(line.contains("listening at") || line.contains("Running on")) {
        return None;
    }
    let (_, rest) = line.split_once("http://127.0.0.1:")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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

    #[test]
    fn the_listening_lines_of_both_emulators_give_their_port() {
        assert_eq!(
            listening_port("Dynalite listening at: http://127.0.0.1:21234\n"),
            Some(21234)
        );
        assert_eq!(
            listening_port(" * Running on http://127.0.0.1:38913\n"),
            Some(38913)
        );
        assert_eq!(
            listening_port("127.0.0.1 - - \"GET / HTTP/1.1\" 200 -"),
            None
        );
    }

    #[tokio::test]
    async fn the_dead_address_refuses_connections() {
        let refused = tokio::net::TcpStream::connect(dead_addr())
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
