"""Helpers for the backend-TLS tests: a throwaway PKI made with the openssl CLI
and thaw config files with a `backend_tls:` section."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (v3, CA:TRUE, keyCertSign): returns (cert, key)."""
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
             "-keyout", key.name, "-out", cert.name, "-subj", f"/CN=thaw test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return cert, key


def make_server_cert(d: Path, name: str, ca: tuple[Path, Path], cn: str, san: str) -> tuple[Path, Path]:
    """A server certificate signed by `ca` with the given CN and subjectAltName."""
    cert, key, csr, ext = d / f"{name}.pem", d / f"{name}.key", d / f"{name}.csr", d / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", key.name, "-out", csr.name,
             "-subj", f"/CN={cn}", cwd=d)
    _openssl("x509", "-req", "-in", csr.name, "-CA", ca[0].name, "-CAkey", ca[1].name, "-CAcreateserial",
             "-sha256", "-days", "30", "-out", cert.name, "-extfile", ext.name, cwd=d)
    return cert, key


@dataclass
class PKI:
    dir: Path
    ca: Path            # trusted CA
    server_cert: Path   # CN=127.0.0.1, SAN IP:127.0.0.1, signed by ca
    server_key: Path
    other_ca: Path      # an unrelated CA: verifying with it must fail
    wrong_name_cert: Path  # signed by ca, but for DNS:db.example only
    wrong_name_key: Path


def make_pki(d: Path) -> PKI:
    d.mkdir(parents=True, exist_ok=True)
    ca = make_ca(d, "ca")
    other = make_ca(d, "other-ca")
    srv = make_server_cert(d, "server", ca, "127.0.0.1", "IP:127.0.0.1")
    wrong = make_server_cert(d, "wrong-name", ca, "db.example", "DNS:db.example")
    return PKI(d, ca[0], srv[0], srv[1], other[0], wrong[0], wrong[1])


def server_args(cert: Path, key: Path, ca: Path) -> list[str]:
    return [f"--ssl-cert={cert}", f"--ssl-key={key}", f"--ssl-ca={ca}"]


def tls_config(path: Path, mode: str, ca_file: Path | None = None, verify_identity: bool | None = None,
               server_name: str | None = None) -> Path:
    lines = ["backend_tls:", f"  mode: {mode}"]
    if ca_file is not None:
        lines.append(f"  ca_file: {ca_file}")
    if verify_identity is not None:
        lines.append(f"  verify_identity: {'true' if verify_identity else 'false'}")
    if server_name is not None:
        lines.append(f"  server_name: {server_name}")
    path.write_text("\n".join(lines) + "\n")
    return path
