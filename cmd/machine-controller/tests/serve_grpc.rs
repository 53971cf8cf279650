//! `machine-controller serve-grpc` as an operator starts it: on a unix socket, answering a
//! gRPC client, and stopping cleanly on SIGTERM as Kubernetes stops it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mcm_grpc_driver::proto::identity_client::IdentityClient;
use mcm_grpc_driver::proto::machine_client::MachineClient;
use mcm_grpc_driver::proto::{GetPluginInfoRequest, ListMachinesRequest};
use tonic::transport::{Endpoint, Uri};

fn binary() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("machine-controller")
}

/// Kills the server if the test ends early, so no process outlives it holding the socket.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server's stderr, line by line, read on a thread so waiting on it can time out and
/// the pipe never fills.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

#[tokio::test]
async fn serves_on_a_unix_socket_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("serve-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("driver.sock");
    let mut server = Server(
        Command::new(binary())
            .args(["serve-grpc", "--listen"])
            .arg(format!("unix:{}", socket.display()))
            .args(["--cluster", "shoot--dev--a", "--shutdown-grace", "2s"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = stderr_lines(&mut server.0);
    let line = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the server announces its address");
    assert!(line.starts_with("serving gRPC on unix:"), "{line}");

    let path = socket.clone();
    let channel = Endpoint::try_from("http://[::1]:1")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap();
    let info = IdentityClient::new(channel.clone())
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "kubevirt.provider.machine.sapcloud.io");
    // The real driver: without a kubeconfig, ListMachines is InvalidArgument naming it.
    let status = MachineClient::new(channel)
        .list_machines(ListMachinesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("secret.data.kubeconfig"),
        "{status:?}"
    );

    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = server.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stops after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(!socket.exists(), "the socket file is removed");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_cluster_must_be_named_and_remote_clients_allowed_explicitly() {
    let out = Command::new(binary())
        .args(["serve-grpc", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cluster"));

    let out = Command::new(binary())
        .args(["serve-grpc", "--listen", "0.0.0.0:0", "--cluster", "c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("no authentication") && err.contains("--allow-remote-clients"),
        "{err}"
    );
}

#[test]
fn a_bad_listen_address_is_a_usage_error() {
    let out = Command::new(binary())
        .args(["serve-grpc", "--listen", "localhost", "--cluster", "c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("neither <ip>:<port>"), "{err}");
}
