"""The Debian package `unified-mfa-pam` that packaging/build-deb makes, installed for real.

The package must put `pam_unified_mfa.so` where PAM looks for a bare module name (the multiarch
security directory), ship the daemon's systemd units and a sample PAM include, and change no
PAM configuration when installed. The proof is a login: the package is installed with `dpkg -i`
on this machine, a throwaway /etc/pam.d service names the bare `pam_unified_mfa.so` after
`pam_unix.so`, `unified-mfa pamd` runs on a temporary socket, and pamtester logs a throwaway
Linux user in with the password and a TOTP code. The package is purged afterwards, whatever
happens.

Needs root, the Debian packages dpkg-dev, build-essential, libpam0g-dev, pamtester and systemd
(for `systemd-analyze verify`); a missing one fails the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pam_unified_mfa.core import MFA
from pam_unified_mfa.settings import SETTINGS_FILE, load_settings
from tests.helpers import LinuxUser, now_code, throwaway_linux_user, wrong_code
from tests.test_pam_login import (
    options,
    pam_service,
    pamtester,
    running_pamd,
)

ROOT = Path(__file__).resolve().parent.parent
BUILD_DEB = ROOT / "packaging" / "build-deb"
PACKAGE = "unified-mfa-pam"
MODULE = "pam_unified_mfa.so"
UNITS = ("unified-mfa-pamd.socket", "unified-mfa-pamd.service", "unified-mfa.service",
         "unified-mfa-radius.service")
PAM_D = Path("/etc/pam.d")
LOCK = Path("/run/lock/unified-mfa-pam-tests.lock")

pytestmark = pytest.mark.e2e  # builds with make and dpkg-deb, installs with dpkg


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _checked(*command: str) -> str:
    result = _run(*command)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (Debian package {package}): run scripts/setup")


def _build(output: Path, *extra: str) -> Path:
    result = _run(str(BUILD_DEB), "--output", str(output), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    deb = Path(result.stdout.strip().splitlines()[-1])
    assert deb.parent == output and deb.is_file(), result.stdout
    return deb


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as packaging/build-deb makes it by default."""
    if sys.platform != "linux" or shutil.which("dpkg") is None:
        pytest.fail("the packaging tests need a Debian system (dpkg)")
    _require("dpkg-deb", "dpkg-dev")
    _require("make", "build-essential")
    return _build(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def multiarch() -> str:
    _require("dpkg-architecture", "dpkg-dev")
    return _checked("dpkg-architecture", "-qDEB_HOST_MULTIARCH").strip()


@pytest.fixture(scope="module")
def security_dir(multiarch: str) -> Path:
    return Path("/lib") / multiarch / "security"


def contents(deb: Path) -> dict[str, str]:
    """`dpkg-deb --contents`: each path (without the leading `.`) with its mode and owner."""
    listing: dict[str, str] = {}
    for line in _checked("dpkg-deb", "--contents", str(deb)).splitlines():
        mode, owner, _size, _date, _time, path = line.split(maxsplit=5)
        listing[path.removeprefix(".")] = f"{mode} {owner}"
    return listing


def control(deb: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in _checked("dpkg-deb", "--field", str(deb)).splitlines():
        if line and not line[0].isspace():
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def unit_settings(text: str) -> list[str]:
    """A unit file's `Key=value` lines, comments and section headers left out."""
    return [line.strip() for line in text.splitlines()
            if "=" in line and not line.lstrip().startswith(("#", ";", "["))]


def extracted(deb: Path, into: Path) -> Path:
    _checked("dpkg-deb", "-x", str(deb), str(into))
    return into


def pam_config() -> dict[str, bytes]:
    """/etc/pam.d, but for the throwaway services the login tests add and remove."""
    return {path.name: path.read_bytes() for path in sorted(PAM_D.iterdir())
            if path.is_file() and not path.name.startswith(("umfa-", "sshd-umfa-"))}


def package_status() -> str:
    result = _run("dpkg-query", "-W", "-f=${Status}", PACKAGE)
    return result.stdout if result.returncode == 0 else ""


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """dpkg's database is the machine's: two test runs on one host take turns."""
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def set_aside(module_path: Path) -> Iterator[None]:
    """A module installed by hand (`make install`) is moved away meanwhile, then put back."""
    saved = module_path.read_bytes() if module_path.exists() else None
    module_path.unlink(missing_ok=True)
    try:
        yield
    finally:
        if saved is not None:
            module_path.write_bytes(saved)
            module_path.chmod(0o644)


@contextlib.contextmanager
def installed_package(deb: Path, module_path: Path) -> Iterator[None]:
    """`dpkg -i`, then `dpkg --purge` whatever happens; call it under `machine_lock()`."""
    if package_status():
        pytest.fail(f"{PACKAGE} is already known to dpkg here: `dpkg --purge {PACKAGE}` first")
    with set_aside(module_path):
        try:
            _checked("dpkg", "-i", str(deb))
            yield
        finally:
            purge = _run("dpkg", "--purge", PACKAGE)
            assert purge.returncode == 0, purge.stdout + purge.stderr


# -- the package's contents ---------------------------------------------------------------------


def test_the_module_is_in_the_multiarch_security_directory(deb: Path, security_dir: Path) -> None:
    listing = contents(deb)
    assert listing[f"{security_dir}/{MODULE}"] == "-rw-r--r-- root/root"


def test_the_units_are_in_the_systemd_system_directory(deb: Path) -> None:
    listing = contents(deb)
    for unit in UNITS:
        assert listing[f"/lib/systemd/system/{unit}"] == "-rw-r--r-- root/root"


def test_the_pam_sample_is_shipped_outside_etc_and_nothing_goes_into_etc(deb: Path) -> None:
    listing = contents(deb)
    assert listing["/usr/share/unified-mfa/pam.d/unified-mfa"] == "-rw-r--r-- root/root"
    assert "/usr/share/doc/unified-mfa-pam/copyright" in listing
    assert "/usr/share/doc/unified-mfa-pam/README.md" in listing
    assert [path for path in listing if path.startswith("/etc")] == []


def test_every_file_and_directory_belongs_to_root_and_none_is_writable_by_others(
        deb: Path) -> None:
    for path, entry in contents(deb).items():
        mode, owner = entry.split()
        assert owner == "root/root", path
        assert mode[5] != "w" and mode[8] != "w", path


def test_the_pam_sample_stacks_the_bare_module_name(deb: Path, tmp_path: Path) -> None:
    sample = extracted(deb, tmp_path) / "usr/share/unified-mfa/pam.d/unified-mfa"
    rules = [line.split() for line in sample.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert rules == [["auth", "required", MODULE]]


def test_the_control_fields_name_the_package_version_and_architecture(deb: Path) -> None:
    fields = control(deb)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert fields["Package"] == PACKAGE
    assert fields["Version"] == pyproject["project"]["version"]
    assert fields["Architecture"] == _checked("dpkg", "--print-architecture").strip()
    assert "libpam0g" in [d.strip().split()[0] for d in fields["Depends"].split(",")]
    assert deb.name == f"{PACKAGE}_{fields['Version']}_{fields['Architecture']}.deb"


def test_the_socket_is_root_only_in_a_private_directory(deb: Path, tmp_path: Path) -> None:
    unit = extracted(deb, tmp_path) / "lib/systemd/system/unified-mfa-pamd.socket"
    settings = unit_settings(unit.read_text(encoding="utf-8"))
    for expected in ("ListenStream=/run/unified-mfa/pamd.sock", "SocketUser=root",
                     "SocketMode=0600", "DirectoryMode=0700"):
        assert expected in settings


def test_the_daemon_service_inherits_the_socket_and_is_hardened(deb: Path,
                                                                 tmp_path: Path) -> None:
    unit = extracted(deb, tmp_path) / "lib/systemd/system/unified-mfa-pamd.service"
    settings = unit_settings(unit.read_text(encoding="utf-8"))
    assert "ExecStart=/usr/bin/unified-mfa pamd" in settings  # no --socket: it is inherited
    assert "Requires=unified-mfa-pamd.socket" in settings
    for expected in ("NoNewPrivileges=yes", "ProtectSystem=strict",
                     "ReadWritePaths=/var/lib/unified-mfa", "PrivateTmp=yes",
                     "ProtectHome=read-only"):
        assert expected in settings


def test_the_http_service_runs_serve_on_the_same_home(deb: Path, tmp_path: Path) -> None:
    unit = extracted(deb, tmp_path) / "lib/systemd/system/unified-mfa.service"
    settings = unit_settings(unit.read_text(encoding="utf-8"))
    assert "ExecStart=/usr/bin/unified-mfa serve" in settings
    assert "Environment=UNIFIED_MFA_HOME=/var/lib/unified-mfa" in settings
    assert "ReadWritePaths=/var/lib/unified-mfa" in settings


def test_the_radius_service_runs_the_responder_on_the_same_home_with_only_the_bind_capability(
        deb: Path, tmp_path: Path) -> None:
    unit = extracted(deb, tmp_path) / "lib/systemd/system/unified-mfa-radius.service"
    settings = unit_settings(unit.read_text(encoding="utf-8"))
    assert "ExecStart=/usr/bin/unified-mfa radius" in settings
    for expected in ("Environment=UNIFIED_MFA_HOME=/var/lib/unified-mfa",
                     "ReadWritePaths=/var/lib/unified-mfa", "NoNewPrivileges=yes",
                     "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "ProtectSystem=strict"):
        assert expected in settings


def test_the_radius_samples_are_shipped_as_examples_outside_etc(deb: Path) -> None:
    listing = contents(deb)
    assert listing["/usr/share/unified-mfa/pam.d/unified-mfa-radius"] == "-rw-r--r-- root/root"
    examples = "/usr/share/doc/unified-mfa-pam/examples/radius"
    for sample in ("README.md", "unified-mfa.toml", "freeradius/proxy.conf",
                   "freeradius/unified-mfa", "pam_radius_auth/openvpn",
                   "openvpn/server.conf", "strongswan/eap-radius.conf"):
        assert listing[f"{examples}/{sample}"] == "-rw-r--r-- root/root", sample
    assert "/usr/share/doc/unified-mfa-pam/radius.md" in listing


def test_the_two_node_samples_are_shipped_as_examples(deb: Path) -> None:
    listing = contents(deb)
    examples = "/usr/share/doc/unified-mfa-pam/examples/multinode"
    for sample in ("README.md", "unified-mfa.toml", "haproxy.cfg", "freeradius-proxy.conf",
                   "setup.sh"):
        assert listing[f"{examples}/{sample}"] == "-rw-r--r-- root/root", sample


def test_the_two_node_settings_sample_is_valid_and_shares_radius_replies(
        tmp_path: Path) -> None:
    shutil.copy(ROOT / "packaging" / "multinode" / "unified-mfa.toml",
                tmp_path / SETTINGS_FILE)
    settings = load_settings(tmp_path)
    assert settings.store.startswith("postgresql://")
    assert settings.radius.shared_replies == "auto"


def test_the_units_run_the_unified_mfa_path_given_to_build_deb_and_pass_systemd_verify(
        tmp_path: Path) -> None:
    _require("systemd-analyze", "systemd")
    command = Path(sys.executable).parent / "unified-mfa"
    assert command.is_file(), f"{command}: the project's virtualenv has no unified-mfa command"
    deb = _build(tmp_path / "out", "--unified-mfa-path", str(command))
    units = extracted(deb, tmp_path / "root") / "lib/systemd/system"
    for name, verb in (("unified-mfa-pamd.service", "pamd"), ("unified-mfa.service", "serve"),
                       ("unified-mfa-radius.service", "radius")):
        assert f"ExecStart={command} {verb}" in unit_settings(
            (units / name).read_text(encoding="utf-8"))
    result = _run("systemd-analyze", "verify", *(str(units / unit) for unit in UNITS))
    assert result.returncode == 0, result.stdout + result.stderr
    # verify also loads the units ours refer to (targets, and what those pull in): warnings
    # about other packages' units on this machine (e.g. freeradius.service) are not ours.
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "unified-mfa" in line]
    assert ours == []


def test_build_deb_refuses_a_relative_unified_mfa_path(tmp_path: Path) -> None:
    result = _run(str(BUILD_DEB), "--output", str(tmp_path), "--unified-mfa-path", "unified-mfa")
    assert result.returncode != 0
    assert "absolute path" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- installed on this machine ------------------------------------------------------------------


@pytest.fixture(scope="module")
def linux_user() -> Iterator[LinuxUser]:
    with throwaway_linux_user() as user:
        yield user


@pytest.fixture
def module_path(security_dir: Path) -> Path:
    return security_dir / MODULE


@pytest.fixture
def installed(deb: Path, module_path: Path, linux_user: LinuxUser) -> Iterator[None]:
    with machine_lock(), installed_package(deb, module_path):
        yield


@pytest.fixture
def pamd_socket(home: Path, store_url: str) -> Iterator[Path]:
    """`unified-mfa pamd` on a socket in a short root-owned 0700 directory."""
    run_dir = Path(tempfile.mkdtemp(prefix="umfa-deb-"))
    try:
        with running_pamd(home, store_url, run_dir / "pamd.sock") as daemon:
            yield daemon.socket
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def service(pamd_socket: Path) -> Iterator[str]:
    """/etc/pam.d/umfa-deb-<random>: pam_unix, then the module by its bare name only, so PAM
    loads it from its security directory."""
    with pam_service(f"umfa-deb-{secrets.token_hex(4)}", Path(MODULE),
                     options(pamd_socket)) as name:
        assert f"required {MODULE} socket=" in (PAM_D / name).read_text(encoding="utf-8")
        yield name


def test_installing_puts_a_module_owned_by_the_package_where_pam_looks(
        deb: Path, module_path: Path, linux_user: LinuxUser) -> None:
    with machine_lock():
        before = pam_config()
        with installed_package(deb, module_path):
            assert package_status() == "install ok installed"
            owner = _checked("dpkg", "-S", str(module_path))
            assert owner.startswith(f"{PACKAGE}:")
            assert module_path.stat().st_mode & 0o777 == 0o644
            for unit in UNITS:
                assert (Path("/lib/systemd/system") / unit).is_file()
            assert pam_config() == before  # no PAM stack is touched by the install


def test_pamtester_logs_in_through_the_installed_module_with_password_and_totp(
        installed: None, service: str, linux_user: LinuxUser, core: MFA, secret: str) -> None:
    result = pamtester(service, linux_user, linux_user.password, now_code(core, secret, 1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "successfully authenticated" in result.stdout + result.stderr
    assert "Passcode: " in result.stdout + result.stderr


def test_pamtester_wrong_code_is_rejected_by_the_installed_module(
        installed: None, service: str, linux_user: LinuxUser, core: MFA, secret: str) -> None:
    wrong = wrong_code(core, secret)
    tries = core.settings.dialogue.max_attempts
    result = pamtester(service, linux_user, linux_user.password, *[wrong] * tries)
    assert result.returncode != 0
    assert "Authentication failure" in result.stdout + result.stderr
    assert "Access denied" in result.stdout + result.stderr


def test_purging_the_package_removes_the_module_and_the_login_fails_without_it(
        deb: Path, module_path: Path, service: str, linux_user: LinuxUser, core: MFA,
        secret: str) -> None:
    with machine_lock(), set_aside(module_path):
        with installed_package(deb, module_path):
            assert module_path.is_file()
        assert not module_path.exists()
        assert package_status() == ""
        for unit in UNITS:
            assert not (Path("/lib/systemd/system") / unit).exists()
        result = pamtester(service, linux_user, linux_user.password, now_code(core, secret, 1))
    assert result.returncode != 0
    assert "successfully authenticated" not in result.stdout + result.stderr
