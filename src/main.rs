//! The `wasmorch` binary: parses flags and calls into the crates. One file per subcommand
//! under `cmd/`; the client side (`client`, `kubeconfig`, `printer`) speaks the Kubernetes API.

mod client;
mod cmd;
mod examples;
mod kubeconfig;
mod printer;

use clap::{Parser, Subcommand};

/// Counts the host memory wasm instances cause against their containers' limits.
#[global_allocator]
static ALLOCATOR: wasmorch_host::runtime::alloc::Counting = wasmorch_host::runtime::alloc::Counting;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wasmorch",
    version,
    about = "A WebAssembly-native orchestrator with a Kubernetes API",
    propagate_version = true
)]
struct Cli {
    /// Kubeconfig context to use (client commands).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local cluster in the foreground: control plane and store, on loopback.
    Up(cmd::up::UpArgs),
    /// Run the control plane only (API server, store, controllers).
    Server(cmd::up::ServerArgs),
    /// Run a node (agent and wasm runtime) that joins a control plane.
    Node(cmd::up::NodeArgs),
    /// Create or update objects from files (multi-document YAML or JSON), a directory, or '-'.
    Apply(cmd::apply::FileArgs),
    /// Create objects from files; fails for objects that exist.
    Create(cmd::apply::FileArgs),
    /// List or show objects.
    Get(cmd::get::GetArgs),
    /// Print a container's output.
    Logs(cmd::logs::LogsArgs),
    /// Show an object in detail, with its events.
    Describe(cmd::describe::DescribeArgs),
    /// Delete objects by file or by kind and name.
    Delete(cmd::apply::DeleteArgs),
    /// Show and switch kubeconfig contexts.
    #[command(subcommand)]
    Config(cmd::config::ConfigCmd),
    /// Write a consistent snapshot of the running server's store to FILE.
    Backup(cmd::backup::BackupArgs),
    /// Mark a node unschedulable: new pods are not placed on it.
    Cordon(cmd::nodes::NodeArgs),
    /// Mark a node schedulable again.
    Uncordon(cmd::nodes::NodeArgs),
    /// Cordon a node and evict its pods (through the eviction API) so they run elsewhere.
    Drain(cmd::nodes::DrainArgs),
    /// Re-seal every Secret stored at rest with a new key (the server must be stopped).
    RotateSecretsKey(cmd::secrets::RotateArgs),
    /// Manage join tokens: create (with a TTL), list, delete.
    #[command(subcommand)]
    Token(cmd::token::TokenCmd),
    /// Set the number of replicas of a Deployment or ReplicaSet.
    Scale(cmd::rollout::ScaleArgs),
    /// Manage a Deployment's rollout.
    #[command(subcommand)]
    Rollout(cmd::rollout::RolloutCmd),
    /// Make kubeconfigs: `kubeconfig user NAME [--group G] [--clusterrole R | --role R] [-n NS]`.
    #[command(subcommand)]
    Kubeconfig(cmd::users::KubeconfigCmd),
    /// Show CPU and memory use of nodes or pods (from the metrics API).
    Top(cmd::top::TopArgs),
    /// Open the web dashboard, signed in with a short-lived token (or print its link).
    Dashboard(cmd::dashboard::DashboardArgs),
    /// Publish a component to an OCI registry as a wasm artifact.
    Push(cmd::push::PushArgs),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print client and server versions.
    Version,
}

/// Warnings and errors, less kube-rs' note on the one unverified connection a join makes on
/// purpose (fetching the CA to check it against the token's pin), and less its ERROR line for
/// every non-2xx answer (the CLI prints the Status itself; the node handles its errors).
const DEFAULT_LOG: &str = "warn,kube_client::client::tls=error,kube_client::client::builder=off";

fn main() -> ExitCode {
    wasmorch_host::runtime::alloc::tune();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `wasmorch get … | head` must end quietly, as kubectl does, when the reader goes away.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMORCH_LOG").unwrap_or_else(|_| DEFAULT_LOG.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, Command::Up(_) | Command::Server(_) | Command::Node(_)) {
        // Every HTTP pod holds a listening socket; the API server holds every watch.
        let limit = wasmorch_host::sys::raise_open_files_limit();
        tracing::debug!(?limit, "open files");
    }
    let ctx = cli.context.clone();
    let result = rt.block_on(async move {
        match cli.command {
            Command::Up(a) => cmd::up::up(a).await,
            Command::Server(a) => cmd::up::server(a).await,
            Command::Node(a) => cmd::up::node(a).await,
            Command::Apply(a) => cmd::apply::apply(ctx, a, false).await,
            Command::Create(a) => cmd::apply::apply(ctx, a, true).await,
            Command::Get(a) => cmd::get::get(ctx, a).await,
            Command::Logs(a) => match cmd::logs::logs(ctx, a).await {
                Err(e) if e.downcast_ref::<client::ApiFailure>().is_some() => {
                    cmd::get::report(&e);
                    Err(client::Failed.into())
                }
                r => r,
            },
            Command::Describe(a) => cmd::describe::describe(ctx, a).await,
            Command::Delete(a) => cmd::apply::delete(ctx, a).await,
            Command::Config(c) => cmd::config::run(c),
            Command::Backup(a) => cmd::backup::backup(ctx, a).await,
            Command::Cordon(a) => cmd::nodes::cordon(ctx, a, true).await,
            Command::Uncordon(a) => cmd::nodes::cordon(ctx, a, false).await,
            Command::Drain(a) => cmd::nodes::drain(ctx, a).await,
            Command::RotateSecretsKey(a) => cmd::secrets::rotate(a),
            Command::Push(a) => cmd::push::push(ctx, a).await,
            Command::Top(a) => cmd::top::top(ctx, a).await,
            Command::Dashboard(a) => cmd::dashboard::run(ctx, a).await,
            Command::Kubeconfig(c) => cmd::users::run(ctx, c).await,
            Command::Token(c) => cmd::token::run(ctx, c).await,
            Command::Scale(a) => cmd::rollout::scale(ctx, a).await,
            Command::Rollout(c) => cmd::rollout::rollout(ctx, c).await,
            Command::Completion { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(shell, &mut Cli::command(), "wasmorch", &mut std::io::stdout());
                Ok(())
            }
            Command::Version => cmd::version(ctx).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<client::Failed>() {
                Some(_) => {}
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
