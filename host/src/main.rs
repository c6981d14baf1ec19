//! `faaskeeper`: run the service (`serve`) or talk to one like zkCli does.

use anyhow::Context;
use clap::{Parser, Subcommand};
use faaskeeper_client::{Client, Options};
use faaskeeper_core::{CreateMode, Stat};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "faaskeeper",
    version,
    about = "ZooKeeper-compatible coordination on WebAssembly components"
)]
struct Cli {
    /// Server to talk to (client commands).
    #[arg(
        long,
        global = true,
        env = "FAASKEEPER_SERVER",
        default_value = "http://127.0.0.1:8181"
    )]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The stage components this binary embeds (the bytes `serve` runs).
    Components {
        #[command(subcommand)]
        action: ComponentsCommand,
    },
    /// Measure this service and Apache ZooKeeper 3.8 side by side (both started here, on
    /// this machine, fsync on) and write docs/benchmarks.md, its plot and the JSON.
    Bench {
        /// A few seconds of each workload instead of the full run (a smoke check).
        #[arg(long)]
        quick: bool,
        /// The Markdown report (its generated part is replaced, the prose kept).
        #[arg(long, default_value = "docs/benchmarks.md")]
        report: PathBuf,
        /// Everything measured, as JSON.
        #[arg(long, default_value = "benches/results/compare.json")]
        json: PathBuf,
        /// The plot.
        #[arg(long, default_value = "docs/benchmarks.svg")]
        svg: PathBuf,
    },
    /// What a workload costs per month on AWS, from requests counted per operation, and the
    /// break-even against provisioned ZooKeeper VMs (see docs/cost.md).
    Cost {
        /// `get_data` per day.
        #[arg(long, default_value_t = 1_000_000.0)]
        reads_per_day: f64,
        /// Writes per day, split 1:2:1 into create, set_data and delete.
        #[arg(long, default_value_t = 100_000.0)]
        writes_per_day: f64,
        /// Bytes of data per create and set.
        #[arg(long, default_value_t = 100)]
        data_bytes: usize,
        /// A count table (JSON) instead of the one built in (docs/cost-counts.json).
        #[arg(long, conflicts_with = "measure")]
        counts: Option<PathBuf>,
        /// Count the requests now, on the AWS APIs at `--aws-endpoint` (a moto server is
        /// started here when none is given), instead of using a count table.
        #[arg(long)]
        measure: bool,
        /// With `--measure`: the AWS endpoint, e.g. `http://127.0.0.1:5000`.
        #[arg(long, env = "FAASKEEPER_AWS_ENDPOINT", requires = "measure")]
        aws_endpoint: Option<String>,
        /// With `--measure`: operations of each kind per data size and session.
        #[arg(long, default_value_t = 20, requires = "measure")]
        ops: usize,
        /// With `--measure`: sessions doing them at once (1 is the worst case: nothing is
        /// batched).
        #[arg(long, default_value_t = 1, requires = "measure")]
        sessions: usize,
        /// With `--measure`: the data sizes to count at.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "100,4096,65536",
            requires = "measure"
        )]
        sizes: Vec<usize>,
        /// With `--measure`: also write the counts here (e.g. docs/cost-counts.json).
        #[arg(long, requires = "measure")]
        write_counts: Option<PathBuf>,
        /// With `--measure`: the sessions take their results at listeners of their own
        /// (`serve --direct-results`), not on their queues.
        #[arg(long, requires = "measure")]
        direct_results: bool,
        /// With `--measure`: run the stages as the Lambda functions of `deploy/aws`, in this
        /// process behind Lambda's SQS event source mappings (done here), so that their
        /// invocations, billed durations and the mappings' SQS requests are counted too;
        /// without it, this host polls the writer queue.
        #[arg(long, requires = "measure")]
        lambda: bool,
        /// With `--lambda`: the functions' memory in MB, which their durations are billed at.
        #[arg(long, default_value_t = 512, requires = "lambda")]
        lambda_memory: u64,
        /// The user bucket's store: `s3` (one object per node) or `dynamodb` (one item per
        /// node, S3 only for nodes over 8 KiB). Picks the built-in count table of that
        /// deployment, or what `--measure` deploys.
        #[arg(long, default_value = "s3", value_parser = ["s3", "dynamodb"])]
        user_storage: String,
    },
    /// Run the service (on the embedded store, or on AWS with `--backend aws`).
    Serve {
        /// Directory of the store file (and of the compiled-component cache).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Where the `system` and `user` buckets live.
        #[arg(long, value_enum, default_value_t = Backend::Embedded)]
        backend: Backend,
        /// AWS endpoint override, e.g. a local moto (`http://127.0.0.1:5000`); default: AWS.
        #[arg(long, env = "FAASKEEPER_AWS_ENDPOINT")]
        aws_endpoint: Option<String>,
        /// AWS region.
        #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
        aws_region: String,
        /// Names the AWS resources: table `<prefix>-system`, bucket `<prefix>-user`, queues
        /// `<prefix>-writer.fifo`, `<prefix>-distributor`, `<prefix>-session-<id>.fifo`.
        #[arg(long, default_value = "faaskeeper")]
        aws_prefix: String,
        /// With `--backend aws`: the user bucket's store, `s3` (one object per node, bucket
        /// `<prefix>-user`) or `dynamodb` (one item per node in table `<prefix>-nodes`, S3
        /// for nodes over 8 KiB). Clients on the AWS transport must be told the same.
        #[arg(long, default_value = "s3", value_parser = ["s3", "dynamodb"])]
        user_storage: String,
        /// With `--backend aws`: also deliver results and events straight to clients' own
        /// listeners (sessions opened with a direct address; their queue is the fallback),
        /// which must be reachable from this host. Each result then costs no SQS request.
        #[arg(long)]
        direct_results: bool,
        /// HTTP API port.
        #[arg(long, default_value_t = 8181)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// ZooKeeper wire-protocol port (0: any free port).
        #[arg(long, default_value_t = 2181)]
        zk_port: u16,
        /// Do not serve the ZooKeeper wire protocol.
        #[arg(long)]
        no_zk: bool,
        /// Serve this tenant (repeatable): each has its own buckets (embedded:
        /// `<data-dir>/tenants/<name>`; AWS: resources named `<aws-prefix>-<name>`), its API
        /// under `/t/<name>/v1/...` and its own ZooKeeper port (`--zk-port` + its index).
        /// None: one tenant, API at `/v1/...`.
        #[arg(long = "tenant", value_name = "NAME")]
        tenants: Vec<String>,
        /// Wall-clock time one stage invocation may take before it is stopped.
        #[arg(long, default_value_t = 30_000)]
        time_limit_ms: u64,
        /// Linear memory one stage instance may use, in MiB.
        #[arg(long, default_value_t = 512)]
        memory_mib: usize,
    },
    /// Create a node.
    Create {
        /// Ephemeral (deleted when this command's session ends).
        #[arg(short = 'e')]
        ephemeral: bool,
        /// Sequential (a 10-digit suffix is appended).
        #[arg(short = 's')]
        sequential: bool,
        /// Time to live in ms: a persistent node the service deletes once it has gone this
        /// long without a change or a child (as zkCli's `create -t`).
        #[arg(short = 't', long = "ttl", conflicts_with = "ephemeral")]
        ttl: Option<i64>,
        /// Path.
        path: String,
        /// Data.
        #[arg(default_value = "")]
        data: String,
    },
    /// Print a node's data.
    Get {
        /// Path.
        path: String,
        /// Also print the stat.
        #[arg(short = 's')]
        stat: bool,
    },
    /// Set a node's data.
    Set {
        /// Path.
        path: String,
        /// Data.
        data: String,
        /// Expected version.
        #[arg(short = 'v', default_value_t = -1, allow_negative_numbers = true)]
        version: i32,
    },
    /// Delete a node.
    Delete {
        /// Path.
        path: String,
        /// Expected version.
        #[arg(short = 'v', default_value_t = -1, allow_negative_numbers = true)]
        version: i32,
    },
    /// List a node's children.
    Ls {
        /// Path.
        path: String,
    },
    /// Print a node's stat.
    Stat {
        /// Path.
        path: String,
    },
    /// Wait for the next change of a node (created, changed or deleted) and print it.
    Watch {
        /// Path.
        path: String,
        /// Watch the children instead of the data.
        #[arg(short = 'c')]
        children: bool,
    },
}

/// Where `serve` keeps its buckets.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Backend {
    /// One redb file under `--data-dir`.
    Embedded,
    /// `system` on DynamoDB, `user` on S3 (created if missing; credentials from the default
    /// AWS chain, e.g. `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`).
    Aws,
}

#[derive(Subcommand)]
enum ComponentsCommand {
    /// Write every stage as DIR/faaskeeper_<stage>.wasm (for Spin's `spin.toml`, any WASI 0.2
    /// runtime) and DIR/faaskeeper_<stage>.wasmcloud.wasm (composed with the wasmCloud
    /// key-value adapter), and print each file's size and sha256.
    Export {
        /// Directory to write to (created if missing).
        dir: PathBuf,
    },
}

/// Lowercase hex sha256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `components export DIR`: the embedded stage bytes, unchanged, one file per stage, and each
/// stage composed with the wasmCloud key-value adapter (`<stage>.wasmcloud.wasm`).
fn export_components(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let plain = faaskeeper_artifacts::STAGES
        .iter()
        .map(|(name, _, bytes)| (name.to_string(), format!("faaskeeper_{name}.wasm"), *bytes));
    let wasmcloud = faaskeeper_artifacts::WASMCLOUD_STAGES
        .iter()
        .map(|(name, _, bytes)| {
            (
                format!("{name}.wasmcloud"),
                format!("faaskeeper_{name}.wasmcloud.wasm"),
                *bytes,
            )
        });
    for (name, file_name, bytes) in plain.chain(wasmcloud) {
        let file = dir.join(file_name);
        std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
        println!(
            "{name:<22} {:>9} bytes  sha256:{}  {}",
            bytes.len(),
            sha256_hex(bytes),
            file.display()
        );
    }
    Ok(())
}

fn print_stat(s: &Stat) {
    println!("cZxid = {:#x}", s.czxid);
    println!("ctime = {}", s.ctime);
    println!("mZxid = {:#x}", s.mzxid);
    println!("mtime = {}", s.mtime);
    println!("pZxid = {:#x}", s.pzxid);
    println!("cversion = {}", s.cversion);
    println!("dataVersion = {}", s.version);
    println!("aclVersion = {}", s.aversion);
    println!("ephemeralOwner = {:#x}", s.ephemeral_owner);
    println!("dataLength = {}", s.data_length);
    println!("numChildren = {}", s.num_children);
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = if let Command::Components {
        action: ComponentsCommand::Export { dir },
    } = &cli.command
    {
        export_components(dir)
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run(cli)))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            data_dir,
            backend,
            aws_endpoint,
            aws_region,
            aws_prefix,
            user_storage,
            direct_results,
            port,
            host,
            zk_port,
            no_zk,
            tenants,
            time_limit_ms,
            memory_mib,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let mut tenant_options = Vec::new();
            for name in &tenants {
                let mut t = faaskeeper_host::TenantOptions::named(name);
                if let Backend::Aws = backend {
                    t.stores = Some(
                        aws_backend(
                            aws_endpoint.clone(),
                            aws_region.clone(),
                            format!("{aws_prefix}-{name}"),
                            &user_storage,
                        )
                        .await?
                        .stores,
                    );
                }
                tenant_options.push(t);
            }
            let aws = match backend {
                Backend::Aws if tenants.is_empty() => {
                    Some(aws_backend(aws_endpoint, aws_region, aws_prefix, &user_storage).await?)
                }
                _ => None,
            };
            let stores = aws.as_ref().map(|a| a.stores.clone());
            let mut opts = faaskeeper_host::ServeOptions {
                data_dir,
                listen: SocketAddr::new(host, port),
                zk_listen: (!no_zk).then(|| SocketAddr::new(host, zk_port)),
                stores,
                tenants: tenant_options,
                limits: faaskeeper_host::runtime::Limits {
                    time_limit: std::time::Duration::from_millis(time_limit_ms),
                    memory_bytes: memory_mib << 20,
                    ..Default::default()
                },
            };
            // Test-only: a spawned host takes a fault plan this way (`faaskeeper_host::faults`).
            if let Some(plan) = faaskeeper_host::faults::FaultPlan::from_env()
                .context("FAASKEEPER_TEST_FAULTS is not a fault plan")?
            {
                eprintln!(
                    "WARNING: FAASKEEPER_TEST_FAULTS is set: this host injects faults (test use only)"
                );
                opts.limits.faults = Some(std::sync::Arc::new(plan));
            }
            let host = faaskeeper_host::start(opts).await?;
            for line in host.summary() {
                println!("{line}");
            }
            // The writer queue is consumed for a single-tenant host only (tenants on AWS are
            // served over HTTP).
            let _pollers = match &aws {
                Some(aws) => aws.serve_queues(&host, direct_results),
                None => Vec::new(),
            };
            if tenants.is_empty() {
                if let Some(zk) = host.zk_addr() {
                    println!("zookeeper protocol on {zk}");
                }
            } else {
                for t in host.tenants() {
                    match t.zk_addr() {
                        Some(zk) => println!(
                            "tenant {} at {} (zookeeper protocol on {zk})",
                            t.name(),
                            t.url()
                        ),
                        None => println!("tenant {} at {}", t.name(), t.url()),
                    }
                }
            }
            println!("faaskeeper listening on {}", host.url());
            tokio::signal::ctrl_c().await?;
            println!("shutting down");
            Ok(())
        }
        Command::Bench {
            quick,
            report,
            json,
            svg,
        } => {
            bench(
                quick,
                faaskeeper_bench::report::Outputs {
                    markdown: report,
                    json,
                    svg,
                },
            )
            .await
        }
        Command::Cost {
            reads_per_day,
            writes_per_day,
            data_bytes,
            counts,
            measure,
            aws_endpoint,
            ops,
            sessions,
            sizes,
            write_counts,
            direct_results,
            lambda,
            lambda_memory,
            user_storage,
        } => {
            use faaskeeper_host::cost::{self, CountTable, Workload, prices};
            for (name, v) in [("reads", reads_per_day), ("writes", writes_per_day)] {
                anyhow::ensure!(
                    v.is_finite() && v >= 0.0,
                    "--{name}-per-day must be a number ≥ 0"
                );
            }
            let table = if measure {
                tracing_subscriber::fmt()
                    .with_env_filter(
                        tracing_subscriber::EnvFilter::try_from_default_env()
                            .unwrap_or_else(|_| "warn".into()),
                    )
                    .with_writer(std::io::stderr)
                    .init();
                let table = measure_counts(
                    aws_endpoint,
                    &sizes,
                    ops,
                    sessions,
                    direct_results,
                    lambda.then_some(lambda_memory),
                    &user_storage,
                )
                .await?;
                if let Some(path) = write_counts {
                    std::fs::write(&path, serde_json::to_string_pretty(&table)? + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                table
            } else {
                let json = match counts {
                    Some(path) => std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                    None if user_storage == "dynamodb" => {
                        cost::COMMITTED_COUNTS_DYNAMODB.to_string()
                    }
                    None => cost::COMMITTED_COUNTS.to_string(),
                };
                CountTable::from_json(&json)?
            };
            let p = prices::AWS_US_EAST_1_2025;
            let w = Workload::mixed(reads_per_day, writes_per_day, data_bytes);
            let e = cost::estimate(&table, &p, &w);
            print!("{}", cost::render(&table, &p, &w, &e));
            Ok(())
        }
        cmd => client_command(&cli.server, cmd).await,
    }
}

/// `cost --measure`: count on `endpoint`, or on a moto server started for the purpose.
#[cfg(feature = "aws")]
async fn measure_counts(
    endpoint: Option<String>,
    sizes: &[usize],
    ops: usize,
    sessions: usize,
    direct_results: bool,
    lambda_memory: Option<u64>,
    user_storage: &str,
) -> anyhow::Result<faaskeeper_host::cost::CountTable> {
    use faaskeeper_backend_aws::{AwsOptions, moto::MotoServer};
    use faaskeeper_host::cost::measure::Deployment;
    let deployment = match lambda_memory {
        Some(memory_mb) => {
            anyhow::ensure!(
                (128..=10_240).contains(&memory_mb),
                "--lambda-memory must be 128–10240 (MB), as Lambda allows"
            );
            Deployment::Lambda { memory_mb }
        }
        None => Deployment::Poller,
    };
    let user_storage = user_storage
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        !sizes.is_empty() && sizes.windows(2).all(|w| w[0] < w[1]),
        "--sizes must be increasing"
    );
    let prefix = format!("fk-cost-{}", std::process::id());
    let date = faaskeeper_host::cost::today();
    // The moto started here lives until the count is done.
    let (opts, what, _moto) = match endpoint {
        Some(endpoint) => {
            let opts = AwsOptions {
                endpoint: Some(endpoint.clone()),
                prefix,
                user_storage,
                ..AwsOptions::default()
            };
            let what = format!("counted {date} by `faaskeeper cost --measure` on {endpoint}");
            (opts, what, None)
        }
        None => {
            let moto = MotoServer::start().context("starting moto (pip install 'moto[server]')")?;
            let flags = format!(
                "{}{}",
                if direct_results {
                    " --direct-results"
                } else {
                    ""
                },
                match deployment {
                    Deployment::Lambda { memory_mb } =>
                        format!(" --lambda --lambda-memory {memory_mb}"),
                    Deployment::Poller => String::new(),
                }
            );
            let stages = match deployment {
                Deployment::Lambda { .. } => {
                    "stages as Lambda functions behind event source mappings run here"
                }
                Deployment::Poller => "host as a poller",
            };
            let what = format!(
                "counted {date} by `faaskeeper cost --measure --user-storage {user_storage}{flags}` \
                 on moto (DynamoDB system bucket, {stages}, client on the AWS transport)"
            );
            let opts = AwsOptions {
                user_storage,
                ..moto.options(&prefix)
            };
            (opts, what, Some(moto))
        }
    };
    faaskeeper_host::cost::measure::measure(
        &opts,
        deployment,
        sizes,
        ops,
        sessions,
        direct_results,
        &what,
    )
    .await
}

#[cfg(not(feature = "aws"))]
async fn measure_counts(
    _endpoint: Option<String>,
    _sizes: &[usize],
    _ops: usize,
    _sessions: usize,
    _direct_results: bool,
    _lambda_memory: Option<u64>,
    _user_storage: &str,
) -> anyhow::Result<faaskeeper_host::cost::CountTable> {
    anyhow::bail!("this binary was built without the `aws` feature")
}

/// `bench`: our service in this process on a fresh store (fsync on, as `serve`), Apache
/// ZooKeeper as a child process, then the same workloads against both.
async fn bench(quick: bool, out: faaskeeper_bench::report::Outputs) -> anyhow::Result<()> {
    use faaskeeper_bench::{Config, Target, zookeeper::RealZooKeeper};
    let dir = tempfile::tempdir()?;
    let ours = faaskeeper_host::start(faaskeeper_host::ServeOptions {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        zk_listen: Some("127.0.0.1:0".parse()?),
        ..Default::default()
    })
    .await?;
    let ours_addr = ours
        .zk_addr()
        .context("the gateway is not listening")?
        .to_string();
    let zk = tokio::task::spawn_blocking(RealZooKeeper::try_start).await??;
    let targets = [
        Target {
            name: "ZooKeeper".into(),
            addr: zk.addr.clone(),
        },
        Target {
            name: "FaaSKeeper".into(),
            addr: ours_addr,
        },
    ];
    let cfg = if quick {
        Config::quick()
    } else {
        Config::full()
    };
    let report = faaskeeper_bench::run(&targets, &cfg, &out).await?;
    println!("{}", faaskeeper_bench::report::markdown(&report));
    println!(
        "wrote {}, {} and {}",
        out.markdown.display(),
        out.json.display(),
        out.svg.display()
    );
    Ok(())
}

/// What `serve --backend aws` runs on.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
struct AwsServe {
    stores: faaskeeper_storage::StoreManager,
    #[cfg(feature = "aws")]
    backend: faaskeeper_backend_aws::AwsBackend,
}

impl AwsServe {
    /// Consume the writer queue (4 pollers) and deliver to session queues.
    #[cfg(feature = "aws")]
    fn serve_queues(
        &self,
        host: &faaskeeper_host::RunningHost,
        direct_results: bool,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let queues = self.backend.queues();
        println!("writer queue {}", queues.names().writer());
        faaskeeper_host::aws::start_pollers(host.runtime(), queues, 4, direct_results)
    }

    #[cfg(not(feature = "aws"))]
    fn serve_queues(
        &self,
        _host: &faaskeeper_host::RunningHost,
        _direct_results: bool,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        Vec::new()
    }
}

/// The buckets and queues of `serve --backend aws`: connect, creating the table, bucket and
/// stage queues if missing.
#[cfg(feature = "aws")]
async fn aws_backend(
    endpoint: Option<String>,
    region: String,
    prefix: String,
    user_storage: &str,
) -> anyhow::Result<AwsServe> {
    use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
    let opts = faaskeeper_backend_aws::AwsOptions {
        endpoint,
        region,
        prefix,
        credentials: None,
        user_storage: user_storage
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?,
    };
    let backend = faaskeeper_backend_aws::AwsBackend::connect(&opts)
        .await
        .with_context(|| {
            format!(
                "setting up DynamoDB table {}, S3 bucket {} and the SQS queues",
                opts.table_name(),
                opts.bucket_name()
            )
        })?;
    Ok(AwsServe {
        stores: backend.store_manager(SYSTEM_BUCKET, USER_BUCKET),
        backend,
    })
}

#[cfg(not(feature = "aws"))]
async fn aws_backend(
    _endpoint: Option<String>,
    _region: String,
    _prefix: String,
    _user_storage: &str,
) -> anyhow::Result<AwsServe> {
    anyhow::bail!("this faaskeeper was built without the `aws` feature")
}

async fn client_command(server: &str, cmd: Command) -> anyhow::Result<()> {
    let client = Client::connect(server, Options::default())
        .await
        .with_context(|| format!("connecting to {server}"))?;
    let result = run_client(&client, cmd).await;
    client.close().await.ok();
    result
}

async fn run_client(client: &Client, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve { .. }
        | Command::Components { .. }
        | Command::Bench { .. }
        | Command::Cost { .. } => {
            unreachable!("handled by run and main")
        }
        Command::Create {
            ephemeral,
            sequential,
            ttl,
            path,
            data,
        } => {
            let mode = match ttl {
                Some(ttl_ms) if sequential => CreateMode::PersistentSequentialWithTtl { ttl_ms },
                Some(ttl_ms) => CreateMode::PersistentWithTtl { ttl_ms },
                None => CreateMode::from_flags(ephemeral, sequential),
            };
            let created = client.create(&path, data.as_bytes(), mode).await?;
            println!("Created {created}");
        }
        Command::Get { path, stat } => {
            let (data, s) = client.get_data(&path).await?;
            println!("{}", String::from_utf8_lossy(&data));
            if stat {
                print_stat(&s);
            }
        }
        Command::Set {
            path,
            data,
            version,
        } => {
            let s = client.set_data(&path, data.as_bytes(), version).await?;
            print_stat(&s);
        }
        Command::Delete { path, version } => {
            client.delete(&path, version).await?;
        }
        Command::Ls { path } => {
            let children = client.get_children(&path).await?;
            println!("[{}]", children.join(", "));
        }
        Command::Stat { path } => match client.exists(&path).await? {
            Some(s) => print_stat(&s),
            None => anyhow::bail!("Node does not exist: {path}"),
        },
        Command::Watch { path, children } => {
            let watch = if children {
                client.get_children_w(&path).await?.2
            } else {
                client.exists_w(&path).await?.1
            };
            let event = watch.wait().await?;
            println!(
                "WatchedEvent type:{:?} path:{} zxid:{}",
                event.kind, event.path, event.zxid
            );
        }
    }
    Ok(())
}
