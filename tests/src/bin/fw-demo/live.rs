//! While the demo waits for Ctrl-C: what to try, and each new audit record as it arrives.

use std::{path::Path, sync::atomic::Ordering, time::Duration};

use fhirwall_tests::agent::AgentFiles;

use crate::{INTERRUPTED, report};

/// Keeps everything up, printing new audit records as they arrive, until Ctrl-C.
pub fn live(fhirwall: &Path, state: &Path, files: &AgentFiles, try_it: &str) -> anyhow::Result<()> {
    let db = state.join("audit.db");
    println!("\n===== fhirwall is running: try it while the demo waits =====");
    println!("   metrics:   curl http://{}/metrics", files.metrics);
    println!(
        "   workloads: {} workloads --socket {}",
        fhirwall.display(),
        files.socket.display()
    );
    println!(
        "   audit:     {} audit query --db {} --decision deny",
        fhirwall.display(),
        db.display()
    );
    println!(
        "   report:    {} audit report --db {} --integration payer-claims-batch --since 1h",
        fhirwall.display(),
        db.display()
    );
    println!(
        "   revoke:    {} revoke payer-claims-batch --reason 'credential leaked' --socket {}",
        fhirwall.display(),
        files.socket.display()
    );
    println!("   a request from the demo cgroup (only its processes are redirected):");
    println!("     {try_it}");
    println!("   new audit records appear below; press Ctrl-C to stop and clean up");
    let mut seen = report::audit_records(fhirwall, &db)?.len();
    while !INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        let records = report::audit_records(fhirwall, &db)?;
        for r in records.iter().skip(seen) {
            println!(
                "   {} {} {} {} -> {} ({})",
                r["decision"].as_str().unwrap_or("?"),
                r["workload"]["exe"].as_str().unwrap_or("?"),
                r["method"].as_str().unwrap_or("?"),
                r["resourceType"].as_str().unwrap_or("-"),
                r["integration"].as_str().unwrap_or("unregistered"),
                r["reason"].as_str().unwrap_or("allowed")
            );
        }
        seen = records.len();
    }
    Ok(())
}
