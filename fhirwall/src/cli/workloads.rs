//! `fhirwall workloads`: who is connected to protected FHIR endpoints right now.

use std::{path::PathBuf, process::ExitCode};

use clap::Args;

use crate::{admin::AdminClient, proxy::live::LiveConnection};

#[derive(Args)]
pub struct WorkloadsArgs {
    /// The agent's admin socket.
    #[arg(long, default_value = "/run/fhirwall/admin.sock")]
    pub socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &WorkloadsArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let live: Vec<LiveConnection> =
        runtime.block_on(AdminClient::new(&args.socket).get("/v1/workloads"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&live)?);
    } else {
        print!("{}", table(&live));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per connection; the command line is left out (it may carry PHI), `--json` has it.
fn table(live: &[LiveConnection]) -> String {
    let header = [
        "PID",
        "USER",
        "EXE",
        "UNIT/CONTAINER",
        "INTEGRATION",
        "DESTINATION",
        "SINCE",
    ];
    let rows: Vec<[String; 7]> = live
        .iter()
        .map(|c| {
            let w = &c.workload;
            [
                w.tgid.to_string(),
                w.user.clone().unwrap_or_else(|| w.uid.to_string()),
                w.exe
                    .as_ref()
                    .map_or_else(|| format!("[{}]", w.comm), |p| p.display().to_string()),
                w.systemd_unit
                    .clone()
                    .or_else(|| {
                        w.container_id
                            .as_ref()
                            .map(|c| c.chars().take(12).collect())
                    })
                    .unwrap_or_default(),
                c.integration.clone().unwrap_or_else(|| "-".into()),
                c.destination.to_string(),
                c.since.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let render = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = render(&header);
    for row in &rows {
        out.push_str(&render(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    if rows.is_empty() {
        out.push_str("(no live connections)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use fhirwall_policy::Workload;

    use super::*;

    #[test]
    fn table_aligns_and_omits_the_command_line() {
        let c = LiveConnection {
            id: 1,
            workload: Workload {
                tgid: 4242,
                user: Some("labsvc".into()),
                exe: Some("/opt/lab/bin/iface".into()),
                systemd_unit: Some("lab.service".into()),
                cmdline: vec!["--patient".into(), "Doe".into()],
                ..Workload::default()
            },
            integration: Some("lab-results".into()),
            destination: "10.1.2.3:443".parse().expect("literal"),
            since: "2026-11-28T10:00:00Z".into(),
        };
        let text = table(&[c]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PID   USER"), "{text}");
        assert!(
            lines[1].contains("4242  labsvc  /opt/lab/bin/iface  lab.service"),
            "{text}"
        );
        assert!(!text.contains("Doe"));
        assert_eq!(table(&[]).lines().nth(1), Some("(no live connections)"));
    }
}
