"""A throw-away ACME server for the tests: Debian's Pebble, with pebble-challtestsrv as
its DNS server (every name resolves to 127.0.0.1; TXT records settable for DNS-01).

Everything listens on 127.0.0.1 and free ports, in a temp dir with its own config.
Pebble's API certificate comes from a throw-away test CA (``api_ca_file``, trusted only
by the tests that pass it to the ACME client); Pebble's issuing root is read from its
management interface (``issuing_roots``). HTTP-01 validation requests go to
``http01_port`` on 127.0.0.1, where a test runs the project's responder.
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services.process import ServiceProcess, find_binary, free_port, port_is_open
from tests.services.tls import CertificateAuthority


@dataclass(frozen=True)
class PebbleServer:
    """Connection facts for a running Pebble."""

    directory_url: str
    management_url: str
    api_ca_file: Path
    http01_port: int
    dns_management_url: str
    log_path: Path

    def issuing_roots(self) -> bytes:
        """Pebble's current issuing root (PEM), generated at its start."""
        context = ssl.create_default_context(cafile=str(self.api_ca_file))
        with urllib.request.urlopen(f"{self.management_url}/roots/0", context=context) as reply:
            return bytes(reply.read())


@contextmanager
def running_pebble() -> Iterator[PebbleServer]:
    """Start pebble-challtestsrv (DNS) and Pebble; stop both by PID and remove the dir."""
    pebble_bin = find_binary("pebble")
    dns_bin = find_binary("pebble-challtestsrv")
    work_dir = Path(tempfile.mkdtemp(prefix="tg-pebble-"))
    api = CertificateAuthority(work_dir).issue("pebble", server=True)
    ports = {name: free_port() for name in ("acme", "mgmt", "http01", "tls", "dns", "dnsmgmt")}
    config = work_dir / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{ports['acme']}",
                    "managementListenAddress": f"127.0.0.1:{ports['mgmt']}",
                    "certificate": str(api.cert_file),
                    "privateKey": str(api.key_file),
                    "httpPort": ports["http01"],
                    "tlsPort": ports["tls"],
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        ),
        encoding="utf-8",
    )
    dns = ServiceProcess(
        name="pebble-challtestsrv",
        argv=[
            dns_bin,
            "-dns01",
            f"127.0.0.1:{ports['dns']}",
            "-management",
            f"127.0.0.1:{ports['dnsmgmt']}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-defaultIPv6",
            "",
        ],
        log_path=work_dir / "challtestsrv.log",
    )
    pebble = ServiceProcess(
        name="pebble",
        argv=[pebble_bin, "-config", str(config), "-dnsserver", f"127.0.0.1:{ports['dns']}"],
        log_path=work_dir / "pebble.log",
        env={
            "PATH": "/usr/bin:/bin",
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        },
    )
    try:
        dns.start()
        dns.wait_until(lambda: port_is_open(ports["dnsmgmt"]), timeout=20)
        pebble.start()
        pebble.wait_until(lambda: port_is_open(ports["acme"]) and port_is_open(ports["mgmt"]))
        yield PebbleServer(
            directory_url=f"https://127.0.0.1:{ports['acme']}/dir",
            management_url=f"https://127.0.0.1:{ports['mgmt']}",
            api_ca_file=work_dir / "ca.pem",
            http01_port=ports["http01"],
            dns_management_url=f"http://127.0.0.1:{ports['dnsmgmt']}",
            log_path=pebble.log_path,
        )
    finally:
        pebble.stop()
        dns.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
