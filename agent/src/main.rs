//! `fhirwall`: the agent and its command line.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("not wired yet")
}
