use fhirwall_policy::ContainerRuntime::{Containerd, Crio, Docker, Podman};

use super::*;

const ID: &str = "3f5e1b0c9a7d4e2f8b6a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f";
const ID2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const POD: &str = "7c6b3f4e-2a1d-4b8e-9f0a-1234567890ab";
const POD_: &str = "7c6b3f4e_2a1d_4b8e_9f0a_1234567890ab";

struct Case {
    name: &'static str,
    path: String,
    container: Option<&'static str>,
    runtime: Option<ContainerRuntime>,
    pod: Option<&'static str>,
    unit: Option<String>,
    in_user_manager: bool,
}

fn case(name: &'static str, path: String) -> Case {
    Case {
        name,
        path,
        container: None,
        runtime: None,
        pod: None,
        unit: None,
        in_user_manager: false,
    }
}

impl Case {
    fn container(mut self, id: &'static str, runtime: Option<ContainerRuntime>) -> Self {
        self.container = Some(id);
        self.runtime = runtime;
        self
    }
    fn pod(mut self) -> Self {
        self.pod = Some(POD);
        self
    }
    fn unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = Some(unit.into());
        self
    }
    /// Named by a user: below `user@UID.service`.
    fn users(mut self) -> Self {
        self.in_user_manager = true;
        self
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one table row per real-world layout reads best as one list"
)]
fn cases() -> Vec<Case> {
    vec![
        case(
            "containerd, systemd driver, burstable pod",
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/cri-containerd-{ID}.scope"),
        )
        .container(ID, Some(Containerd))
        .pod(),
        case(
            "containerd, systemd driver, guaranteed pod",
            format!("/kubepods.slice/kubepods-pod{POD_}.slice/cri-containerd-{ID}.scope"),
        )
        .container(ID, Some(Containerd))
        .pod(),
        case(
            "containerd or dockershim, cgroupfs driver, burstable pod",
            format!("/kubepods/burstable/pod{POD}/{ID}"),
        )
        .container(ID, None)
        .pod(),
        case(
            "cgroupfs driver, guaranteed pod (k3s)",
            format!("/kubepods/pod{POD}/{ID}"),
        )
        .container(ID, None)
        .pod(),
        case(
            "CRI-O, systemd driver, besteffort pod",
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/crio-{ID}.scope"),
        )
        .container(ID, Some(Crio))
        .pod(),
        case(
            "CRI-O conmon is a host process in the pod slice",
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_}.slice/crio-conmon-{ID}.scope"),
        )
        .pod()
        .unit(format!("crio-conmon-{ID}.scope")),
        case(
            "CRI-O, cgroupfs driver",
            format!("/kubepods/besteffort/pod{POD}/crio-{ID}"),
        )
        .container(ID, Some(Crio))
        .pod(),
        case(
            "dockershim, systemd driver",
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_}.slice/docker-{ID}.scope"),
        )
        .container(ID, Some(Docker))
        .pod(),
        case("docker, systemd driver", format!("/system.slice/docker-{ID}.scope"))
            .container(ID, Some(Docker)),
        case("docker, cgroupfs driver", format!("/docker/{ID}")).container(ID, Some(Docker)),
        case(
            "docker in docker: the innermost container",
            format!("/docker/{ID}/docker/{ID2}"),
        )
        .container(ID2, Some(Docker)),
        case("podman, rootful", format!("/machine.slice/libpod-{ID}.scope"))
            .container(ID, Some(Podman)),
        case(
            "podman, rootless inside the user manager",
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
        )
        .container(ID, Some(Podman))
        .users(),
        case(
            "podman conmon",
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
        )
        .unit(format!("libpod-conmon-{ID}.scope")),
        case("system service", "/system.slice/mirth-connect.service".into())
            .unit("mirth-connect.service"),
        case(
            "delegated subtree inside a service",
            "/system.slice/ehr-batch.service/worker/1".into(),
        )
        .unit("ehr-batch.service"),
        case(
            "template instance in its own slice",
            r"/system.slice/system-interface\x2dengine.slice/interface-engine@lab.service".into(),
        )
        .unit("interface-engine@lab.service"),
        case(
            "user manager unit in app.slice",
            r"/user.slice/user-1000.slice/user@1000.service/app.slice/app-report\x2dwriter-4711.scope".into(),
        )
        .unit(r"app-report\x2dwriter-4711.scope")
        .users(),
        case(
            "legacy user unit directly under the user manager",
            "/user.slice/user-1000.slice/user@1000.service/dbus.service".into(),
        )
        .unit("dbus.service")
        .users(),
        case(
            "the user manager itself",
            "/user.slice/user-1000.slice/user@1000.service/init.scope".into(),
        )
        .unit("user@1000.service")
        .users(),
        case(
            "a look-alike system unit a user started (`systemd-run --user --unit`)",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/mirth-connect.service".into(),
        )
        .unit("mirth-connect.service")
        .users(),
        case(
            "not a user manager: a template instance named like one",
            "/system.slice/user@x.service".into(),
        )
        .unit("user@x.service"),
        case(
            "login session",
            "/user.slice/user-1000.slice/session-4.scope".into(),
        )
        .unit("session-4.scope"),
        case("PID 1", "/init.scope".into()).unit("init.scope"),
        case(
            "nspawn container with its own manager below a delegated directory",
            "/machine.slice/systemd-nspawn@db.service/payload/system.slice/sshd.service".into(),
        )
        .unit("systemd-nspawn@db.service"),
        case("root", "/".into()),
        case("empty", String::new()),
        case("a test cgroup", "/fhirwall-test-7-0/work".into()),
        case("not 64 hex digits", "/docker/3f5e1b0c9a7d".into()),
        case("uppercase is not a runtime's id", format!("/docker/{}", ID.to_uppercase())),
        case(
            "a bare id outside any pod or docker tree is not guessed",
            format!("/default/{ID}"),
        ),
        case(
            "63 digits in a scope name is only a unit",
            format!("/system.slice/docker-{}.scope", &ID[1..]),
        )
        .unit(format!("docker-{}.scope", &ID[1..])),
        case(
            "a malformed pod slice gives no pod",
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podxyz.slice/cri-containerd-{ID}.scope"),
        )
        .container(ID, Some(Containerd)),
        case(
            "pod directory outside kubepods is not a pod",
            format!("/pod{POD}/x"),
        ),
    ]
}

#[test]
fn parses_real_world_cgroup_paths() {
    let cases = cases();
    assert!(cases.len() >= 15);
    for c in cases {
        let got = parse_cgroup_path(&c.path);
        let want = CgroupIdentity {
            container_id: c.container.map(str::to_owned),
            runtime: c.runtime,
            pod_uid: c.pod.map(str::to_owned),
            systemd_unit: c.unit,
            in_user_manager: c.in_user_manager,
        };
        assert_eq!(got, want, "{}: {}", c.name, c.path);
    }
}
