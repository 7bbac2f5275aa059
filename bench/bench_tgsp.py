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

* the **floor**: the work no TGSP implementation can skip on this machine, in a child
  process: read the same files once and, spread over all cores (pool threads, 16 MiB
  blocks), SHA-256 them, seal them with AES-256-GCM in 1 MiB chunks and SHA-256 the sealed
  bytes: the two hash passes (per-file plaintext digests and ciphertext segment digests)
  plus the encryption, with no writes and no ordering constraints. model-signing hashes
  once, so ``floor / model-signing`` says how close to a ratio goal this design can get.

Each phase runs ``--repeat`` times (default 3), model-signing and TGSP interleaved in the
same loop so load changes hit both; the best (lowest) wall and CPU times are reported.
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
    if args.phase == "floor":
        print(json.dumps(floor_main([Path(path) for path in args.source.split(os.pathsep)])))
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


FLOOR_BLOCK = 16 * MIB
FLOOR_CHUNK = MIB


def floor_main(files: list[Path]) -> dict[str, float]:
    """Read ``files`` once; hash, seal and hash again on all cores; return the timing."""
    import hashlib
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(os.urandom(32))
    blocks = [
        (path, offset, min(FLOOR_BLOCK, size - offset))
        for path in files
        for size in [path.stat().st_size]
        for offset in range(0, max(size, 1), FLOOR_BLOCK)
    ]
    sealed_chunk = FLOOR_CHUNK + 16
    buffers = threading.local()  # one pair per thread, reused: no page faults per block

    def work(block: tuple[Path, int, int]) -> int:
        path, offset, length = block
        if not hasattr(buffers, "plain"):
            buffers.plain = bytearray(FLOOR_BLOCK)
            buffers.sealed = bytearray(FLOOR_BLOCK // FLOOR_CHUNK * sealed_chunk)
        plain, sealed = memoryview(buffers.plain)[:length], memoryview(buffers.sealed)
        with path.open("rb", buffering=0) as handle:
            count = os.preadv(handle.fileno(), [plain], offset)
        plain_view, sealed_view = plain[:count], sealed
        hashlib.sha256(plain_view).digest()  # pass 1: the per-file plaintext digest
        produced = 0
        for start in range(0, count, FLOOR_CHUNK):
            piece = plain_view[start : start + FLOOR_CHUNK]
            nonce = (start // FLOOR_CHUNK).to_bytes(12, "big")
            end = produced + len(piece) + 16
            aead.encrypt_into(nonce, piece, b"", sealed_view[produced:end])
            produced = end
        hashlib.sha256(sealed_view[:produced]).digest()  # pass 2: the segment digests
        return count

    threads = os.cpu_count() or 1
    start, start_cpu = time.perf_counter(), own_cpu_seconds()
    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(work, blocks))
    return {
        "seconds": time.perf_counter() - start,
        "phase_cpu_seconds": own_cpu_seconds() - start_cpu,
        "bytes": done,
        "threads": threads,
        "peak_rss_mib": own_peak_rss_mib(),
    }


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


def _best(runs: list[dict[str, Any]], key: str) -> float:
    return min(float(run[key]) for run in runs)


def _best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the lowest in-process time, with the best CPU time of all runs added."""
    best = dict(min(runs, key=lambda run: float(run["seconds"])))
    best["best_phase_cpu_seconds"] = _best(runs, "phase_cpu_seconds")
    best["best_cpu_seconds"] = _best(runs, "cpu_seconds")
    best["all_seconds"] = [run["seconds"] for run in runs]
    best["all_phase_cpu_seconds"] = [run["phase_cpu_seconds"] for run in runs]
    return best


def bench_size(
    size_gib: float,
    work: Path,
    keys: Path,
    ms_python: str | None,
    ec_keys: tuple[Path, Path],
    threads: int | None = None,
    repeat: int = 3,
) -> dict[str, Any]:
    total = int(size_gib * GIB)
    env = tgsp_environment(threads)
    load_before = os.getloadavg()
    data = work / f"data-{size_gib}"
    package = work / f"package-{size_gib}.tgsp"
    extracted = work / f"opened-{size_gib}"
    generated = run_child(phase_command("generate", source=data, bytes=total))
    files = [Path(path) for path in generated["files"]]
    runs: dict[str, list[dict[str, Any]]] = {
        name: [] for name in ("openssl", "model_signing", "build", "verify", "open", "floor")
    }
    try:
        for attempt in range(repeat):
            print(f"  run {attempt + 1}/{repeat}", file=sys.stderr, flush=True)
            runs["openssl"].append(openssl_sha256(files))
            if ms_python is not None:
                signature = work / f"model-signing-{size_gib}.sig"
                runs["model_signing"].append(
                    run_child(
                        [
                            ms_python,
                            "-c",
                            MODEL_SIGNING_SCRIPT,
                            str(data),
                            str(signature),
                            str(ec_keys[0]),
                            str(ec_keys[1]),
                        ]
                    )
                )
                signature.unlink(missing_ok=True)
            runs["build"].append(
                run_child(phase_command("build", source=data, package=package, keys=keys), env)
            )
            runs["verify"].append(
                run_child(phase_command("verify", package=package, keys=keys), env)
            )
            runs["open"].append(
                run_child(
                    phase_command("open", package=package, destination=extracted, keys=keys),
                    env,
                )
            )
            runs["floor"].append(
                run_child(
                    [
                        sys.executable,
                        __file__,
                        "--phase",
                        "floor",
                        "--source",
                        os.pathsep.join(map(str, files)),
                    ]
                )
            )
            package.unlink()
            shutil.rmtree(extracted)
        openssl = _best(runs["openssl"], "seconds")
        openssl_cpu = _best(runs["openssl"], "cpu_seconds")
        build, verify, opened, floor = (
            _best_run(runs[name]) for name in ("build", "verify", "open", "floor")
        )
        result: dict[str, Any] = {
            "size_gib": size_gib,
            "tgsp_threads": threads,
            "repeat": repeat,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "bytes": total,
            "files": len(files),
            "package_bytes": build.get("package_bytes"),
            "openssl_sha256_seconds": openssl,
            "openssl_sha256_cpu_seconds": openssl_cpu,
            "build": build,
            "verify": verify,
            "open": opened,
            "floor": floor,
            "ratio_build_to_openssl": build["seconds"] / openssl,
            "ratio_verify_to_openssl": verify["seconds"] / openssl,
            "ratio_open_to_openssl": opened["seconds"] / openssl,
            "ratio_build_plus_open_to_openssl": (build["seconds"] + opened["seconds"]) / openssl,
            "cpu_ratio_build_to_openssl": build["best_cpu_seconds"] / openssl_cpu,
            "cpu_ratio_verify_to_openssl": verify["best_cpu_seconds"] / openssl_cpu,
            "cpu_ratio_open_to_openssl": opened["best_cpu_seconds"] / openssl_cpu,
            # The floor: two SHA-256 passes and AES-GCM on all cores, no writes.
            "ratio_build_to_floor": build["seconds"] / floor["seconds"],
            "ratio_verify_to_floor": verify["seconds"] / floor["seconds"],
            "ratio_open_to_floor": opened["seconds"] / floor["seconds"],
            "cpu_ratio_build_to_floor": build["best_phase_cpu_seconds"]
            / floor["best_phase_cpu_seconds"],
            "cpu_ratio_open_to_floor": opened["best_phase_cpu_seconds"]
            / floor["best_phase_cpu_seconds"],
            "throughput_mib_s": {
                "openssl_sha256": total / MIB / openssl,
                "build": total / MIB / build["seconds"],
                "verify": total / MIB / verify["seconds"],
                "open": total / MIB / opened["seconds"],
                "floor": total / MIB / floor["seconds"],
            },
        }
        if ms_python is not None:
            ms_runs = runs["model_signing"]
            ms: dict[str, Any] = {
                key: _best(ms_runs, key)
                for key in ("sign_seconds", "verify_seconds", "sign_cpu_seconds",
                            "verify_cpu_seconds", "peak_rss_mib")
            }  # fmt: skip
            ms["all_sign_seconds"] = [run["sign_seconds"] for run in ms_runs]
            ms["all_verify_seconds"] = [run["verify_seconds"] for run in ms_runs]
            result["model_signing"] = ms
            result["ratio_build_to_model_signing_sign"] = build["seconds"] / ms["sign_seconds"]
            result["ratio_verify_to_model_signing_verify"] = (
                verify["seconds"] / ms["verify_seconds"]
            )
            result["ratio_open_to_model_signing_verify"] = opened["seconds"] / ms["verify_seconds"]
            # CPU time is what a loaded machine distorts least (wall time includes waiting).
            result["cpu_ratio_build_to_model_signing_sign"] = (
                build["best_phase_cpu_seconds"] / ms["sign_cpu_seconds"]
            )
            result["cpu_ratio_verify_to_model_signing_verify"] = (
                verify["best_phase_cpu_seconds"] / ms["verify_cpu_seconds"]
            )
            result["cpu_ratio_open_to_model_signing_verify"] = (
                opened["best_phase_cpu_seconds"] / ms["verify_cpu_seconds"]
            )
            # What the goals would be at best on this design: the floor against model-signing.
            result["ratio_floor_to_model_signing_sign"] = floor["seconds"] / ms["sign_seconds"]
            result["ratio_floor_to_model_signing_verify"] = floor["seconds"] / ms["verify_seconds"]
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
    """TGSP / model-signing and TGSP / floor, wall (in-process) and CPU, against the goals."""
    for r in results:
        print(
            f"{r['size_gib']:>5} GiB floor (2x SHA-256 + AES-GCM, all cores, no writes) "
            f"{r['floor']['seconds']:.2f} s wall, {r['floor']['best_phase_cpu_seconds']:.2f} s CPU"
        )
        for phase in ("build", "verify", "open"):
            ratio = r[f"ratio_{phase}_to_floor"]
            print(f"{r['size_gib']:>5} GiB {phase:<6} / floor  wall {ratio:5.2f}x")
        if "model_signing" not in r:
            continue
        print(
            f"{r['size_gib']:>5} GiB floor / model-signing: sign "
            f"{r['ratio_floor_to_model_signing_sign']:.2f}x, verify "
            f"{r['ratio_floor_to_model_signing_verify']:.2f}x (the best this design can reach)"
        )
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
            results.append(
                bench_size(size, work, keys, ms_python, ec_keys, args.threads, args.repeat)
            )
    report = {
        "benchmark": "tgsp",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "tgsp_threads": args.threads,
            "repeat": args.repeat,
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
        "--repeat",
        type=int,
        default=3,
        help="runs of each phase, model-signing and TGSP interleaved; the best is reported",
    )
    parser.add_argument(
        "--phase",
        choices=["generate", "build", "verify", "open", "floor"],
        help=argparse.SUPPRESS,
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
