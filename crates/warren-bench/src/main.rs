//! warren-bench: a load generator for AMQP brokers (Warren, RabbitMQ, any
//! other). Reports msg/s, latency percentiles, broker CPU and RSS (given its
//! pid) and the generator's own CPU, so a run says who the bottleneck was.

mod amqp;
mod amqp_load;
mod args;
mod common;
mod deep;
mod fill;
mod mqtt;
mod mqtt_qos2;
mod mqtt_transport;
mod proc_stats;
mod report;
mod retained;
mod scenarios;
mod tls;

use anyhow::Result;
use clap::Parser;

use args::Args;
use mqtt_transport::Target;

/// Which scenarios `--scenarios` asks for.
struct Wanted<'a>(Vec<&'a str>);

impl<'a> Wanted<'a> {
    fn new(list: &'a str) -> Wanted<'a> {
        Wanted(list.split(',').collect())
    }

    fn all(&self) -> bool {
        self.0.contains(&"all")
    }

    fn has(&self, name: &str) -> bool {
        self.all() || self.0.contains(&name)
    }
}

async fn run_amqp(args: &Args) -> Result<()> {
    let wanted = Wanted::new(&args.scenarios);
    report::amqp_header();
    for spec in scenarios::SCENARIOS {
        if !wanted.has(spec.name) {
            continue;
        }
        match amqp_load::run_scenario(args, spec).await {
            Ok(o) => report::amqp_row(args, spec, &o),
            Err(e) => report::failed(args, spec.name, &e),
        }
    }
    if wanted.has("idle-connections") {
        report::amqp_idle(args, amqp_load::run_idle(args).await?);
    }
    // Only when named, and only over TLS: new TLS connections per second.
    if tls::on() && wanted.0.contains(&"tls-handshake") {
        let rate = tls::handshake_rate(&args.addr, args.seconds, 4).await?;
        println!(
            "{:<10} tls-handshake: {rate:.0} new TLS connections/s (4 loops)",
            args.label
        );
    }
    Ok(())
}

async fn run_mqtt(args: &Args) -> Result<()> {
    let wanted = Wanted::new(&args.scenarios);
    report::mqtt_header();
    // With --ws-addr every scenario runs over TCP, then over WebSocket.
    let mut targets = vec![Target {
        addr: args.addr.clone(),
        ws: false,
    }];
    targets.extend(args.ws_addr.iter().map(|a| Target {
        addr: a.clone(),
        ws: true,
    }));
    let (user, pass) = (&args.user, &args.password);
    for spec in mqtt::scenarios() {
        if !wanted.has(spec.name) {
            continue;
        }
        for target in &targets {
            let label = report::label(args, target);
            match mqtt::run(target, user, pass, args.pid, args.seconds, &spec).await {
                Ok(o) => report::mqtt_row(&label, &spec, &o),
                Err(e) => report::failed_labelled(&label, spec.name, &e),
            }
        }
    }
    for (name, persistent) in [("mqtt-qos2-clean", false), ("mqtt-qos2-persistent", true)] {
        if !wanted.0.contains(&name) {
            continue;
        }
        let label = report::label(args, &targets[0]);
        let shape = (args.seconds, args.publishers, persistent);
        match mqtt_qos2::run(&targets[0], (user, pass), args.pid, shape).await {
            Ok(o) => report::mqtt_qos2(&label, name, args.publishers, &o),
            Err(e) => report::failed_labelled(&label, name, &e),
        }
    }
    // Only when named: it leaves a million retained topics behind.
    if wanted.0.contains(&"retained") {
        let creds = (args.user.as_str(), args.password.as_str());
        let run = retained::run(&args.addr, creds, args.pid, args.retained, args.subscribes);
        match run.await {
            Ok(o) => report::retained(args, &o),
            Err(e) => report::failed(args, "retained", &e),
        }
    }
    if wanted.has("mqtt-idle") {
        for target in &targets {
            let kib = mqtt::idle(target, user, pass, args.pid, args.idle_connections).await?;
            report::mqtt_idle(&report::label(args, target), args, kib);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(ca) = &args.tls_ca {
        tls::enable(ca)?;
    }
    rt.block_on(async {
        if let Some(n) = args.fill {
            fill::run_fill(&args, n).await
        } else if let Some(n) = args.deep {
            deep::run_deep(&args, n).await
        } else if args.mqtt {
            run_mqtt(&args).await
        } else {
            run_amqp(&args).await
        }
    })
}
