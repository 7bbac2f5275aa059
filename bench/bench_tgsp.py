"""Benchmark TGSP v3: build, then verify + open, against baselines measured in the same run.

For each dataset size (default 0.25, 1 and 2 GiB) the script generates a model-like
directory (a few large shards plus small files) in a temporary directory and measures:

* ``openssl dgst -sha256`` over the same files (the baseline: one SHA-256 pass; coreutils
  ``sha256sum`` lacks SHA extensions on some machines and would flatter TGSP);
* ``tgsp build`` (hash + encrypt + sign + write), ``verify`` (signature + payload digest)
  and ``open`` (verify + decrypt + per-file digests + extract), each in its own child
  process: wall and CPU time (``os.wait4`` rusage) and the child's own peak RSS (VmHWM;
  rusage ``ru_maxrss`` is also recorded but on Linux includes the parent's RSS at spawn);
* if an interpreter with OpenSSF ``model_signing`` is available (``--model-signing-python``,
  or the current one), its elliptic-key signing and verification of the same directory.

Ratios are TGSP time divided by the baseline time (lower is better), both as wall time
and as CPU time (wall time on a shared machine includes waiting for CPU and disk). Peak
RSS should stay flat as the dataset grows. ``--threads N`` sets ``TG_TGSP_THREADS`` for
the TGSP phases (default: the library's, one per CPU); the JSON records it and the load
average before and after each size (other work on the machine skews wall times).
Results are printed and written as JSON.

    python bench/bench_tgsp.py                      # writes bench/results/tgsp.json
    python bench/bench_tgsp.py --sizes 1 --model-signing-python /tmp/ms-venv/bin/python
    python bench/bench_tgsp.py --sizes 0.25,1 --threads 1   # the serial path
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GIB = 1024**3
MIB = 1024**2
SHARD_SIZE = 512 * MIB
SMALL_FILES = 32
SMALL_FILE_SIZE = 16 * 1024
WRITE_BLOCK = 16 * MIB

MODEL_SIGNING_SCRIPT = """
import json, resource, sys, time
from model_signing import signing, verifying
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
model, signature, private_key, public_key = sys.argv[1:5]
start, start_cpu = time.perf_counter(), cpu()
signing.Config().use_elliptic_key_signer(private_key=private_key).sign(model, signature)
signed, signed_cpu = time.perf_counter(), cpu()
verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(model, signature)
done, done_cpu = time.perf_counter(), cpu()
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"sign_seconds": signed - start, "verify_seconds": done - signed,
                  "sign_cpu_seconds": signed_cpu - start_cpu,
                  "verify_cpu_seconds": done_cpu - signed_cpu,
                  "peak_rss_mib": int(hwm) / 1024}))
"""
GOALS = {"build_to_model_signing_sign": 1.5, "verify_to_model_signing_verify": 1.0,
         "open_to_model_signing_verify": 2.0, "peak_rss_mib": 128}  # fmt: skip
"""Issue #19's goals: TGSP time / model-signing time at most these, and peak RSS (MiB)."""


# --- data generation ---------------------------------------------------------------------


def generate_dataset(root: Path, total: int) -> list[Path]:
    """Write ``total`` bytes of pseudo-random data as shards plus small files."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    keystream = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    zeros = bytes(WRITE_BLOCK)
    root.mkdir(parents=True)
    (root / "config").mkdir()
    files: list[Path] = []
    small_total = SMALL_FILES * SMALL_FILE_SIZE
    for index in range(SMALL_FILES):
        path = root / "config" / f"part-{index:03d}.json"
        path.write_bytes(keystream.update(bytes(SMALL_FILE_SIZE)))
        files.append(path)
    remaining = total - small_total
    shard = 0
    while remaining > 0:
        size = min(SHARD_SIZE, remaining)
        path = root / f"model-{shard:05d}.safetensors"
        with path.open("wb") as handle:
            left = size
            while left:
                block = min(left, WRITE_BLOCK)
                handle.write(keystream.update(zeros[:block]))
                left -= block
        files.append(path)
        remaining -= size
        shard += 1
    return files


# --- child processes ---------------------------------------------------------------------


def run_child(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command``; return its JSON stdout plus wall time and peak RSS (MiB)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    assert process.stderr is not None
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(
            f"{command[:4]} failed ({process.returncode}): {stderr.decode()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(stdout) if stdout.strip() else {}
    result["wall_seconds"] = wall
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    # Linux carries the parent's high-water RSS across fork+exec into ru_maxrss, so this
    # is an upper bound: max(driver at spawn time, child). The child's own peak is the
    # VmHWM it reports itself ("peak_rss_mib").
    result["rusage_maxrss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def phase_main(args: argparse.Namespace) -> None:
    """Child side: run one TGSP phase and print its in-process timing as JSON."""
    from tensorguard.tgsp import (
        ModelIdentity,
        ReleaseInfo,
        TrustStore,
        VerificationPolicy,
        build_package,
        load_recipient_private_key,
        load_recipient_public_key,
        load_signing_key,
        open_package,
        verify_package,
    )

    if args.phase == "generate":
        files = generate_dataset(Path(args.source), int(args.bytes))
        print(json.dumps({"files": [str(path) for path in files]}))
        return
    keys = Path(args.keys)
    signer = load_signing_key(keys / "producer.key")
    trust = TrustStore([signer.public_key()])
    start, start_cpu = time.perf_counter(), own_cpu_seconds()
    if args.phase == "build":
        now = int(time.time())
        build_package(
            Path(args.source),
            Path(args.package),
            signer=signer,
            recipients=[load_recipient_public_key(keys / "recipient.pub")],
            release=ReleaseInfo(
                channel="bench",
                version=1,
                created_at=now,
                expires_at=now + 86_400,
                model=ModelIdentity("bench-model", "00" * 32),
            ),
        )
    elif args.phase == "verify":
        verify_package(Path(args.package), trust, VerificationPolicy())
    elif args.phase == "open":
        open_package(
            Path(args.package),
            Path(args.destination),
            recipient_key=load_recipient_private_key(keys / "recipient.key"),
            trust_store=trust,
        )
    elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "phase_cpu_seconds": own_cpu_seconds() - start_cpu,
                "peak_rss_mib": own_peak_rss_mib(),
            }
        )
    )


def own_cpu_seconds() -> float:
    """User plus system CPU time of this process so far (all threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def own_peak_rss_mib() -> float:
    """This process's own peak resident set (VmHWM), excluding anything before exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line")


def phase_command(phase: str, **paths: Path | int) -> list[str]:
    command = [sys.executable, __file__, "--phase", phase]
    for name, value in paths.items():
        command += [f"--{name}", str(value)]
    return command


# --- baselines -----------------------------------------------------------------------------


def openssl_sha256(files: list[Path]) -> dict[str, Any]:
    """Time ``openssl dgst -sha256`` over ``files`` (wall and CPU seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        ["openssl", "dgst", "-sha256", *map(str, files)], stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("openssl dgst failed")
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def model_signing_python(requested: str | None) -> str | None:
    candidates = [requested] if requested else [sys.executable]
    for python in candidates:
        probe = subprocess.run(
            [python, "-c", "import model_signing"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return python
    return None


def write_ec_keys(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / "ms-private.pem"
    public = directory / "ms-public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


# --- driver ----------------------------------------------------------------------------------


def tgsp_environment(threads: int | None) -> dict[str, str]:
    """The environment of the TGSP phases: ``TG_TGSP_THREADS`` set when ``threads`` is."""
    env = dict(os.environ)
    if threads is not None:
        env["TG_TGSP_THREADS"] = str(threads)
    return env


def bench_size(
    size_gib: float,
    work: Path,
    keys: Path,
    ms_python: str | None,
    ec_keys: tuple[Path, Path],
    threads: int | None = None,
) -> dict[str, Any]:
    total = int(size_gib * GIB)
    env = tgsp_environment(threads)
    load_before = os.getloadavg()
    data = work / f"data-{size_gib}"
    package = work / f"package-{size_gib}.tgsp"
    extracted = work / f"opened-{size_gib}"
    generated = run_child(phase_command("generate", source=data, bytes=total))
    files = [Path(path) for path in generated["files"]]
    try:
        baseline = openssl_sha256(files)
        openssl = baseline["seconds"]
        build = run_child(phase_command("build", source=data, package=package, keys=keys), env)
        verify = run_child(phase_command("verify", package=package, keys=keys), env)
        opened = run_child(
            phase_command("open", package=package, destination=extracted, keys=keys), env
        )
        result: dict[str, Any] = {
            "size_gib": size_gib,
            "tgsp_threads": threads,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "bytes": total,
            "files": len(files),
            "package_bytes": package.stat().st_size,
            "openssl_sha256_seconds": openssl,
            "openssl_sha256_cpu_seconds": baseline["cpu_seconds"],
            "build": build,
            "verify": verify,
            "open": opened,
            "ratio_build_to_openssl": build["seconds"] / openssl,
            "ratio_verify_to_openssl": verify["seconds"] / openssl,
            "ratio_open_to_openssl": opened["seconds"] / openssl,
            "ratio_build_plus_open_to_openssl": (build["seconds"] + opened["seconds"]) / openssl,
            "cpu_ratio_build_to_openssl": build["cpu_seconds"] / baseline["cpu_seconds"],
            "cpu_ratio_verify_to_openssl": verify["cpu_seconds"] / baseline["cpu_seconds"],
            "cpu_ratio_open_to_openssl": opened["cpu_seconds"] / baseline["cpu_seconds"],
            "throughput_mib_s": {
                "openssl_sha256": total / MIB / openssl,
                "build": total / MIB / build["seconds"],
                "verify": total / MIB / verify["seconds"],
                "open": total / MIB / opened["seconds"],
            },
        }
        if ms_python is not None:
            signature = work / f"model-signing-{size_gib}.sig"
            ms = run_child(
                [ms_python, "-c", MODEL_SIGNING_SCRIPT, str(data), str(signature),
                 str(ec_keys[0]), str(ec_keys[1])]
            )  # fmt: skip
            result["model_signing"] = ms
            result["ratio_build_to_model_signing_sign"] = build["seconds"] / ms["sign_seconds"]
            result["ratio_verify_to_model_signing_verify"] = (
                verify["seconds"] / ms["verify_seconds"]
            )
            result["ratio_open_to_model_signing_verify"] = opened["seconds"] / ms["verify_seconds"]
            # CPU time is what a loaded machine distorts least (wall time includes waiting).
            result["cpu_ratio_build_to_model_signing_sign"] = (
                build["phase_cpu_seconds"] / ms["sign_cpu_seconds"]
            )
            result["cpu_ratio_verify_to_model_signing_verify"] = (
                verify["phase_cpu_seconds"] / ms["verify_cpu_seconds"]
            )
            result["cpu_ratio_open_to_model_signing_verify"] = (
                opened["phase_cpu_seconds"] / ms["verify_cpu_seconds"]
            )
            result["goals_met"] = {
                name: result[f"ratio_{name}"] <= goal
                for name, goal in GOALS.items()
                if name != "peak_rss_mib"
            } | {
                "peak_rss_mib": max(build["peak_rss_mib"], verify["peak_rss_mib"],
                                    opened["peak_rss_mib"]) <= GOALS["peak_rss_mib"]
            }  # fmt: skip
        return result
    finally:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(extracted, ignore_errors=True)
        package.unlink(missing_ok=True)


def print_ratios(results: list[dict[str, Any]]) -> None:
    """TGSP / model-signing, wall (in-process) and CPU, against the goals."""
    for r in results:
        if "model_signing" not in r:
            continue
        for name, goal in GOALS.items():
            if name == "peak_rss_mib":
                continue
            print(
                f"{r['size_gib']:>5} GiB {name:<32} wall {r[f'ratio_{name}']:5.2f}x "
                f"cpu {r[f'cpu_ratio_{name}']:5.2f}x  goal <= {goal}x"
            )


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"{'GiB':>5} {'openssl s':>9} {'build s':>8} {'verify s':>8} {'open s':>7} "
        f"{'build/ossl':>10} {'open/ossl':>9} {'cpu b/o':>7} {'cpu o/o':>7} "
        f"{'RSS build':>9} {'RSS open':>8} {'ms sign s':>9}"
    )
    for r in results:
        ms = r.get("model_signing", {}).get("sign_seconds")
        print(
            f"{r['size_gib']:>5} {r['openssl_sha256_seconds']:>9.2f} {r['build']['seconds']:>8.2f} "
            f"{r['verify']['seconds']:>8.2f} {r['open']['seconds']:>7.2f} "
            f"{r['ratio_build_to_openssl']:>10.2f} {r['ratio_open_to_openssl']:>9.2f} "
            f"{r['cpu_ratio_build_to_openssl']:>7.2f} {r['cpu_ratio_open_to_openssl']:>7.2f} "
            f"{r['build']['peak_rss_mib']:>8.0f}M {r['open']['peak_rss_mib']:>7.0f}M "
            f"{'-' if ms is None else f'{ms:.2f}':>9}"
        )


def driver_main(args: argparse.Namespace) -> None:
    from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
    from tensorguard.tgsp import write_key_file

    sizes = [float(size) for size in args.sizes.split(",")]
    uptime_before = subprocess.run(
        ["uptime"], capture_output=True, text=True, check=False
    ).stdout.strip()  # other work on the machine skews wall times: record the load
    ms_python = model_signing_python(args.model_signing_python)
    with tempfile.TemporaryDirectory(prefix="bench-tgsp-", dir=args.workdir) as temporary:
        work = Path(temporary)
        keys = work / "keys"
        keys.mkdir()
        recipient = XWingPrivateKey.generate()
        write_key_file(keys / "producer.key", CompositeSigningKey.generate())
        write_key_file(keys / "recipient.key", recipient)
        write_key_file(keys / "recipient.pub", recipient.public_key())
        ec_keys = write_ec_keys(keys)
        results = []
        for size in sizes:
            print(f"benchmarking {size} GiB ...", file=sys.stderr, flush=True)
            results.append(bench_size(size, work, keys, ms_python, ec_keys, args.threads))
    report = {
        "benchmark": "tgsp",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "tgsp_threads": args.threads,
            "openssl": subprocess.run(
                ["openssl", "version"], capture_output=True, text=True, check=True
            ).stdout.strip(),
        },
        "model_signing_available": ms_python is not None,
        "uptime_before": uptime_before,
        "uptime_after": subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "goals": GOALS,
        "results": results,
    }
    print_table(results)
    print_ratios(results)
    if ms_python is None:
        print("model_signing not available: pass --model-signing-python", file=sys.stderr)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.25,1,2", help="comma-separated GiB values")
    parser.add_argument("--workdir", default=None, help="where to generate data (temp dir)")
    parser.add_argument("--output", default="bench/results/tgsp.json")
    parser.add_argument("--model-signing-python", default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="TG_TGSP_THREADS for the TGSP phases"
    )
    parser.add_argument(
        "--phase", choices=["generate", "build", "verify", "open"], help=argparse.SUPPRESS
    )
    for name in ("source", "package", "destination", "keys", "bytes"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase_main(args)
    else:
        driver_main(args)


if __name__ == "__main__":
    main()
